//! Byte counts as people read them. Sizes on disk and on the wire (images, exports) use powers
//! of 1000 ("1.5 MB"), as docker shows image sizes; memory uses powers of 1024 with IEC names
//! ("512 MiB"), because memory limits are given in those (`--memory 512m` is 512 MiB, as in
//! docker) and a limit shown in decimal units ("536.9 MB") matches nothing the operator typed.

/// A size in powers of 1000: `999 B`, `1.5 MB`.
pub(super) fn human_size(n: u64) -> String {
    scaled(n, 1000.0, &["B", "kB", "MB", "GB", "TB"])
}

/// An amount of memory in powers of 1024: `512 MiB`, `1.5 GiB`.
pub(super) fn human_memory(n: u64) -> String {
    scaled(n, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
}

/// Whole numbers of a unit without decimals, anything else with one.
fn scaled(n: u64, step: f64, units: &[&str]) -> String {
    let mut v = n as f64;
    let mut u = 0;
    while v >= step && u < units.len() - 1 {
        v /= step;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v} {}", units[u])
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::{human_memory, human_size};

    #[test]
    fn sizes_are_decimal() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500_000), "1.5 MB");
        assert_eq!(human_size(2_000_000_000), "2 GB");
    }

    #[test]
    fn memory_is_binary() {
        // `--memory 512m` (docker: 512 * 1024 * 1024 bytes) reads back as typed.
        assert_eq!(human_memory(512 * 1024 * 1024), "512 MiB");
        assert_eq!(human_memory(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(human_memory(64 * 1024), "64 KiB");
        assert_eq!(human_memory(1000), "1000 B");
    }
}

//! Layer extraction on arbitrary bytes, as the importer runs it on a hostile layer: the bytes
//! (decompressed if they are gzip or zstd) are extracted into a fresh directory, once as an
//! upper layer and once as a bottom layer, then the lower layers' metadata is applied to the
//! directories the layer implied. Nothing may panic, and nothing may appear outside the
//! directory given: the jail around it must hold that directory only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Read;
use tpcm::archive::extract::{Whiteouts, extract_layer};
use tpcm::archive::{decompress, detect_compression, parents};

fuzz_target!(|data: &[u8]| {
    let jail = tempfile::tempdir().expect("tempdir");
    let lower = jail.path().join("lower");
    std::fs::create_dir_all(lower.join("home/u")).unwrap();
    std::fs::create_dir_all(lower.join("usr/lib")).unwrap();
    let _ = std::os::unix::fs::symlink("usr/lib", lower.join("lib"));
    let _ = std::os::unix::fs::symlink("/etc", lower.join("etc"));
    for (i, mode) in [Whiteouts::Overlay, Whiteouts::Remove].into_iter().enumerate() {
        let dest = jail.path().join(format!("layer{i}"));
        std::fs::create_dir(&dest).unwrap();
        let Ok(input) = decompress(detect_compression(data), data) else { continue };
        // Bounded: a small input must not decompress into gigabytes here.
        if let Ok(summary) = extract_layer(input.take(64 << 20), &dest, mode) {
            let _ = parents::inherit(&dest, std::slice::from_ref(&lower), &summary.implied);
        }
    }
    let mut names: Vec<_> = std::fs::read_dir(jail.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["layer0", "layer1", "lower"], "a layer wrote outside its directory");
});

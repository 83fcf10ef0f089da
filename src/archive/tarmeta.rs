//! What a layer tar entry's headers say, read the way containerd's reader (Go's `archive/tar`)
//! reads them: PAX records (last one wins, empty ones kept for xattrs), times with nanoseconds
//! from PAX `mtime`/`atime` (or the GNU header's atime field), and GNU sparse files written in PAX
//! form (versions 0.0, 0.1 and 1.0). The tar crate applies only PAX `path`, `linkpath`, `size`,
//! `uid` and `gid`; everything else a layer may carry is decoded here, so the files extracted are
//! the ones containerd would make from the same bytes.

use std::io::{self, Read};

/// One header field (or record) that containerd's reader would refuse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHeader(pub String);

fn bad(reason: impl Into<String>) -> BadHeader {
    BadHeader(reason.into())
}

/// The PAX records of one entry, in archive order.
#[derive(Debug, Default, Clone)]
pub struct Pax(Vec<(Vec<u8>, Vec<u8>)>);

impl Pax {
    /// Reads the local PAX records that precede `entry` (none: empty).
    pub fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Pax> {
        let mut out = Vec::new();
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                out.push((ext.key_bytes().to_vec(), ext.value_bytes().to_vec()));
            }
        }
        Ok(Pax(out))
    }

    /// The value of `key`; when a key repeats, the last record wins (Go keeps a map).
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Extended attributes (`SCHILY.xattr.<name>`), each name once with its last value, in the
    /// order of first appearance. Empty values are kept: they set an empty attribute.
    pub fn xattrs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (k, v) in &self.0 {
            let Some(name) = k.strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            match out.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = v.clone(),
                None => out.push((name.to_vec(), v.clone())),
            }
        }
        out
    }
}

/// Nanoseconds since the epoch (negative before it).
pub type Nanos = i128;

const NANOS: i128 = 1_000_000_000;

/// A time as `(seconds, nanoseconds)` for `utimensat`.
pub fn split(t: Nanos) -> (i64, i64) {
    (t.div_euclid(NANOS) as i64, t.rem_euclid(NANOS) as i64)
}

/// containerd's `boundTime`: times before the epoch or after the largest `time.Time` that fits
/// 64-bit nanoseconds (2262-04-11) become the epoch.
pub fn bound(t: Nanos) -> Nanos {
    if t < 0 || t > i64::MAX as i128 { 0 } else { t }
}

/// Go's `parseNumeric`: base-256 (GNU binary, signed) when the top bit is set, else octal
/// padded with NULs or spaces.
pub fn parse_numeric(b: &[u8]) -> Result<i64, BadHeader> {
    if let Some(&first) = b.first()
        && first & 0x80 != 0
    {
        let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in b.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 > 0 {
                return Err(bad("numeric field overflows"));
            }
            x = (x << 8) | c as u64;
        }
        if x >> 63 > 0 {
            return Err(bad("numeric field overflows"));
        }
        return Ok(if inv == 0xff { !(x as i64) } else { x as i64 });
    }
    let trimmed = trim(b, b" \0");
    if trimmed.is_empty() {
        return Ok(0);
    }
    // Go's parseString stops at the first NUL.
    let s = match trimmed.iter().position(|c| *c == 0) {
        Some(n) => &trimmed[..n],
        None => trimmed,
    };
    let s = std::str::from_utf8(s).map_err(|_| bad("numeric field is not octal"))?;
    u64::from_str_radix(s, 8)
        .map(|v| v as i64)
        .map_err(|_| bad(format!("numeric field {s:?} is not octal")))
}

fn trim<'a>(mut b: &'a [u8], set: &[u8]) -> &'a [u8] {
    while let Some((f, rest)) = b.split_first() {
        if !set.contains(f) {
            break;
        }
        b = rest;
    }
    while let Some((l, rest)) = b.split_last() {
        if !set.contains(l) {
            break;
        }
        b = rest;
    }
    b
}

/// Go's `parsePAXTime`: `[-]seconds[.fraction]`, at most nine fraction digits kept.
pub fn parse_pax_time(v: &[u8]) -> Result<Nanos, BadHeader> {
    let s = std::str::from_utf8(v).map_err(|_| bad("PAX time is not text"))?;
    let (secs, frac) = match s.find('.') {
        Some(p) => (&s[..p], &s[p + 1..]),
        None => (s, ""),
    };
    let whole: i64 = secs
        .parse()
        .map_err(|_| bad(format!("PAX time {s:?} is not a number")))?;
    if frac.is_empty() {
        return Ok(whole as i128 * NANOS);
    }
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad(format!("PAX time {s:?} is not a number")));
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i128 = digits.parse().expect("nine digits");
    if secs.starts_with('-') {
        Ok(whole as i128 * NANOS - nanos)
    } else {
        Ok(whole as i128 * NANOS + nanos)
    }
}

/// The (atime, mtime) containerd gives an entry: mtime from PAX `mtime` or the header field;
/// atime the later of PAX `atime` (or the GNU header's atime) and mtime; both bounded.
pub fn entry_times(header: &tar::Header, pax: &Pax) -> Result<(Nanos, Nanos), BadHeader> {
    let mut mtime = parse_numeric(&header.as_old().mtime)? as i128 * NANOS;
    let mut atime: Option<Nanos> = None;
    if let Some(gnu) = header.as_gnu()
        && gnu.atime[0] != 0
    {
        atime = Some(parse_numeric(&gnu.atime)? as i128 * NANOS);
    }
    // Go skips empty PAX values for these fields.
    if let Some(v) = pax.get(b"mtime").filter(|v| !v.is_empty()) {
        mtime = parse_pax_time(v)?;
    }
    if let Some(v) = pax.get(b"atime").filter(|v| !v.is_empty()) {
        atime = Some(parse_pax_time(v)?);
    }
    let latest = atime.map_or(mtime, |a| a.max(mtime));
    Ok((bound(latest), bound(mtime)))
}

/// A GNU sparse file in PAX form: its real name and size, and where its map is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparse {
    /// `GNU.sparse.name`, when given (it replaces the `GNUSparseFile.<pid>/` name).
    pub name: Option<Vec<u8>>,
    /// The expanded size.
    pub size: u64,
    /// The data regions, or `None` for format 1.0, whose map opens the entry's data.
    pub map: Option<Vec<(u64, u64)>>,
}

fn parse_i64(v: &[u8]) -> Result<i64, BadHeader> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            bad(format!(
                "sparse field {:?} is not a number",
                String::from_utf8_lossy(v)
            ))
        })
}

/// Go's `readGNUSparsePAXHeaders`: `None` when the records do not describe a sparse file (also
/// for an unknown major/minor version, which Go extracts as a plain file).
pub fn sparse(pax: &Pax) -> Result<Option<Sparse>, BadHeader> {
    // Format 0.0 repeats GNU.sparse.offset / GNU.sparse.numbytes, strictly alternating; they
    // become the map (and replace any GNU.sparse.map).
    let mut pairs: Vec<&[u8]> = Vec::new();
    for (k, v) in &pax.0 {
        let offset = k.as_slice() == b"GNU.sparse.offset";
        let numbytes = k.as_slice() == b"GNU.sparse.numbytes";
        if !(offset || numbytes) {
            continue;
        }
        if (pairs.len().is_multiple_of(2) && !offset)
            || (!pairs.len().is_multiple_of(2) && !numbytes)
            || v.contains(&b',')
        {
            return Err(bad("GNU sparse 0.0 records out of order"));
        }
        pairs.push(v);
    }
    let joined;
    let map_text: Option<&[u8]> = if pairs.is_empty() {
        pax.get(b"GNU.sparse.map")
    } else {
        joined = pairs.join(&b","[..]);
        Some(joined.as_slice())
    };
    let major = pax.get(b"GNU.sparse.major").unwrap_or_default();
    let minor = pax.get(b"GNU.sparse.minor").unwrap_or_default();
    let is_1x0 = match (major, minor) {
        (b"0", b"0") | (b"0", b"1") => false,
        (b"1", b"0") => true,
        (m, n) if !m.is_empty() || !n.is_empty() => return Ok(None),
        _ if map_text.is_some_and(|m| !m.is_empty()) => false,
        _ => return Ok(None),
    };
    let name = pax
        .get(b"GNU.sparse.name")
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec);
    let size_field = pax
        .get(b"GNU.sparse.size")
        .filter(|v| !v.is_empty())
        .or_else(|| pax.get(b"GNU.sparse.realsize").filter(|v| !v.is_empty()));
    let size = match size_field {
        Some(v) => parse_i64(v)?,
        None => return Err(bad("GNU sparse file without a size")),
    };
    if size < 0 {
        return Err(bad("GNU sparse file with a negative size"));
    }
    let map = if is_1x0 {
        None
    } else {
        let count = parse_i64(pax.get(b"GNU.sparse.numblocks").unwrap_or_default())?;
        if !(0..=(i64::MAX / 2)).contains(&count) {
            return Err(bad("GNU sparse block count is invalid"));
        }
        let fields: Vec<&[u8]> = match map_text.unwrap_or_default() {
            b"" => Vec::new(),
            text => text.split(|c| *c == b',').collect(),
        };
        if fields.len() as i64 != 2 * count {
            return Err(bad("GNU sparse map does not match its block count"));
        }
        Some(pairs_of(&fields)?)
    };
    Ok(Some(Sparse {
        name,
        size: size as u64,
        map,
    }))
}

fn pairs_of(fields: &[&[u8]]) -> Result<Vec<(u64, u64)>, BadHeader> {
    fields
        .chunks(2)
        .map(|p| {
            let (o, l) = (parse_i64(p[0])?, parse_i64(p[1])?);
            if o < 0 || l < 0 {
                return Err(bad("GNU sparse map has a negative region"));
            }
            Ok((o as u64, l as u64))
        })
        .collect()
}

/// Go's `readGNUSparseMap1x0`: newline-separated decimals at the start of the data, read in
/// whole 512-byte blocks. Returns the regions and the bytes consumed.
pub fn read_sparse_map_1x0(r: &mut dyn Read) -> Result<(Vec<(u64, u64)>, u64), io::Error> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("GNU sparse 1.0 map: {m}"));
    let mut map = MapReader {
        r,
        buf: Vec::new(),
        pos: 0,
        newlines: 0,
        consumed: 0,
    };
    map.feed(1)?;
    let count = parse_i64(&map.token()).map_err(|e| invalid(&e.0))?;
    if !(0..=1 << 20).contains(&count) {
        return Err(invalid("bad region count"));
    }
    let count = count as usize;
    map.feed(2 * count)?;
    let fields: Vec<Vec<u8>> = (0..2 * count).map(|_| map.token()).collect();
    let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
    let regions = pairs_of(&refs).map_err(|e| invalid(&e.0))?;
    Ok((regions, map.consumed))
}

/// The block reader behind [`read_sparse_map_1x0`] (Go's `feedTokens` / `nextToken`).
struct MapReader<'a> {
    r: &'a mut dyn Read,
    buf: Vec<u8>,
    pos: usize,
    /// Newlines in `buf[pos..]`.
    newlines: usize,
    consumed: u64,
}

impl MapReader<'_> {
    /// Reads whole blocks until at least `want` newlines are buffered.
    fn feed(&mut self, want: usize) -> io::Result<()> {
        while self.newlines < want {
            let mut blk = [0u8; 512];
            self.r.read_exact(&mut blk)?;
            self.consumed += 512;
            self.newlines += blk.iter().filter(|c| **c == b'\n').count();
            self.buf.extend_from_slice(&blk);
            // Bounded: the region count is capped, so is the text that lists them.
            if self.buf.len() > 64 << 20 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "GNU sparse 1.0 map too large",
                ));
            }
        }
        Ok(())
    }

    /// The next newline-terminated token (one is buffered).
    fn token(&mut self) -> Vec<u8> {
        let end = self.buf[self.pos..]
            .iter()
            .position(|c| *c == b'\n')
            .map(|n| self.pos + n)
            .expect("a newline was counted");
        let t = self.buf[self.pos..end].to_vec();
        self.pos = end + 1;
        self.newlines -= 1;
        t
    }
}

/// Go's `validateSparseEntries`: regions in order, not overlapping, inside the file.
pub fn valid_sparse_map(map: &[(u64, u64)], size: u64) -> bool {
    let mut prev_end = 0u64;
    for &(offset, len) in map {
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        if end > i64::MAX as u64 || end > size || prev_end > offset {
            return false;
        }
        prev_end = end;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_nanoseconds_and_sign() {
        assert_eq!(
            parse_pax_time(b"1700000000.123456789").unwrap(),
            1_700_000_000_123_456_789
        );
        assert_eq!(
            parse_pax_time(b"1800000000.5").unwrap(),
            1_800_000_000_500_000_000
        );
        assert_eq!(parse_pax_time(b"1.1234567891").unwrap(), 1_123_456_789);
        assert_eq!(parse_pax_time(b"-100.25").unwrap(), -100_250_000_000);
        assert_eq!(parse_pax_time(b"-0.5").unwrap(), -500_000_000);
        assert!(parse_pax_time(b"").is_err());
        assert!(parse_pax_time(b"1.x").is_err());
        assert!(parse_pax_time(b".5").is_err());
    }

    #[test]
    fn times_outside_what_go_can_hold_become_the_epoch() {
        assert_eq!(bound(-1), 0);
        assert_eq!(bound(i64::MAX as i128), i64::MAX as i128);
        assert_eq!(bound(9_999_999_999_500_000_000), 0);
        assert_eq!(bound(8_800_000_000 * NANOS), 8_800_000_000 * NANOS);
        assert_eq!(split(-500_000_000), (-1, 500_000_000));
    }

    #[test]
    fn atime_is_the_later_of_atime_and_mtime() {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        let pax = Pax(vec![
            (b"mtime".to_vec(), b"1700000000.5".to_vec()),
            (b"atime".to_vec(), b"1600000000".to_vec()),
        ]);
        let t = 1_700_000_000_500_000_000;
        assert_eq!(entry_times(&h, &pax).unwrap(), (t, t));
        let pax = Pax(vec![(b"atime".to_vec(), b"1800000000.5".to_vec())]);
        assert_eq!(
            entry_times(&h, &pax).unwrap(),
            (1_800_000_000_500_000_000, 1_700_000_000 * NANOS)
        );
        // Empty values are ignored, as Go does.
        let pax = Pax(vec![(b"mtime".to_vec(), Vec::new())]);
        assert_eq!(entry_times(&h, &pax).unwrap().1, 1_700_000_000 * NANOS);
    }

    #[test]
    fn numeric_fields_read_octal_and_signed_base256() {
        assert_eq!(parse_numeric(b"00000000017\0").unwrap(), 15);
        assert_eq!(parse_numeric(b"  17 \0").unwrap(), 15);
        assert_eq!(parse_numeric(b"\0\0\0").unwrap(), 0);
        let mut neg = [0xffu8; 12];
        neg[11] = 0x9c; // -100
        assert_eq!(parse_numeric(&neg).unwrap(), -100);
        let mut pos = [0u8; 12];
        pos[0] = 0x80;
        pos[11] = 5;
        assert_eq!(parse_numeric(&pos).unwrap(), 5);
        assert!(parse_numeric(b"9").is_err());
    }

    #[test]
    fn sparse_versions_are_recognised_like_go() {
        let rec = |v: &[(&str, &str)]| {
            Pax(v
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect())
        };
        let s = sparse(&rec(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "sp"),
            ("GNU.sparse.realsize", "3145731"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.name.as_deref(), s.size, s.map),
            (Some(&b"sp"[..]), 3145731, None)
        );
        let s = sparse(&rec(&[
            ("GNU.sparse.size", "100"),
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.offset", "0"),
            ("GNU.sparse.numbytes", "10"),
            ("GNU.sparse.offset", "50"),
            ("GNU.sparse.numbytes", "5"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.map, Some(vec![(0, 10), (50, 5)]));
        assert!(
            sparse(&rec(&[
                ("GNU.sparse.size", "100"),
                ("GNU.sparse.numblocks", "1"),
                ("GNU.sparse.numbytes", "10"),
            ]))
            .is_err()
        );
        // Unknown version: a plain file.
        assert_eq!(sparse(&rec(&[("GNU.sparse.major", "2")])).unwrap(), None);
        assert_eq!(sparse(&rec(&[("path", "x")])).unwrap(), None);
        assert!(valid_sparse_map(&[(0, 10), (10, 5)], 15));
        assert!(!valid_sparse_map(&[(0, 10), (9, 5)], 15));
        assert!(!valid_sparse_map(&[(0, 16)], 15));
    }

    #[test]
    fn a_1x0_map_is_read_in_blocks() {
        let mut data = b"2\n0\n10\n50\n5\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"payload");
        let mut r = &data[..];
        let (map, used) = read_sparse_map_1x0(&mut r).unwrap();
        assert_eq!((map, used), (vec![(0, 10), (50, 5)], 512));
        assert_eq!(r, b"payload");
    }
}

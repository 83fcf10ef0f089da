//! The archive scanner and resolver on arbitrary bytes: an image archive (tar or compressed
//! tar) is read as the importer reads it, every blob hashed and, when it looks like a layer,
//! decompressed and hashed as the importer does for its diff ID; then the metadata is resolved
//! into import plans. Nothing may panic, hang or allocate without bound; errors are fine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::io::Read;
use tpcm::archive::digest::{HashingReader, Hasher};
use tpcm::archive::resolve::{BlobFacts, resolve};
use tpcm::archive::scan::{BlobEntry, BlobKind, BlobSink, scan};
use tpcm::archive::{Compression, Error, decompress};

#[derive(Default)]
struct Facts(HashMap<String, BlobFacts>);

impl BlobSink for Facts {
    fn blob(&mut self, blob: BlobEntry, data: &mut dyn Read) -> Result<(), Error> {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut h = Hasher::new();
        h.update(&bytes);
        let layer = match blob.kind {
            BlobKind::Layer(Compression::None) => Some((Compression::None, h.clone().finish())),
            BlobKind::Layer(c) => {
                // Bounded: a small input must not decompress into gigabytes here.
                let dec = decompress(c, &bytes[..]).map_err(|e| Error::Corrupt(e.to_string()))?;
                let mut r = HashingReader::new(dec.take(64 << 20));
                std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| Error::Corrupt(e.to_string()))?;
                Some((c, r.finish().map_err(|e| Error::Corrupt(e.to_string()))?.0))
            }
            BlobKind::Opaque => None,
        };
        self.0.insert(
            blob.path,
            BlobFacts {
                digest: h.finish(),
                size: bytes.len() as u64,
                layer,
            },
        );
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut facts = Facts::default();
    if let Ok(scanned) = scan(data, &mut facts) {
        let _ = resolve(&scanned, &facts.0, "import-fuzz");
    }
});

//! The `--args` parser (docker-run flags → container settings) on arbitrary text: what
//! `tpcm install --args` and every record written before typed settings go through. Nothing may
//! panic; a parsed result must pass the settings' own checks again unchanged (the parser never
//! hands out settings it would refuse).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Both entry points: with tpcm's environment and env files, and the kept-record form.
    let _ = tpcm::manager::args::parse_args(text);
    if let Ok(settings) = tpcm::manager::args::parse_kept_args(text) {
        assert!(settings.check().is_ok(), "parsed settings fail their own check: {text:?}");
    }
});

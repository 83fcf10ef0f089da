//! Crash points for the recovery tests: with `TPCM_CRASH_AT=<point>`, tpcm aborts (SIGABRT, no
//! cleanup, as `kill -9` would) when it reaches that point. The points are listed in
//! `docs/upgrade.md`. Unset (always, in production) this is one environment lookup.

/// Aborts the process if `TPCM_CRASH_AT` names `point`.
pub fn point(point: &str) {
    if std::env::var("TPCM_CRASH_AT").is_ok_and(|s| s == point) {
        eprintln!("tpcm: TPCM_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

//! tpcm's own events: what happened to each TPC (installs, starts, stops, restarts, exits seen by
//! whoever waits on the container, health changes, upgrades, rollbacks, updates, repairs),
//! appended as JSON lines to `<store>/events.jsonl` by the manager, whichever front end asked
//! (the CLI, the gNOI server, a TPC's unit, the supervisor). `tpcm events` reads them back and,
//! while it follows, adds containerd's own task exits (`cli::observe`).
//!
//! The file is bounded: past [`MAX_BYTES`] it becomes `events.jsonl.1` (the previous one is
//! dropped), so at most twice that is kept. Each event is one `write` of one line to a file
//! opened for appending, so concurrent writers never interleave within a line.

use super::store::{FILE_MODE, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// Size at which the event file is rotated.
pub const MAX_BYTES: u64 = 1 << 20;
/// The name of the lock taken while rotating (not a TPC name: those start with a letter or digit).
const ROTATE_LOCK: &str = "_events";

/// One thing that happened to a TPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, in nanoseconds since the epoch.
    pub time_nano: u64,
    /// The TPC.
    pub tpc: String,
    /// What: `install`, `start`, `stop`, `restart`, `die`, `upgrade`, `rollback`, `uninstall`,
    /// `update`, `repair`, `health_status`.
    pub action: String,
    /// Details (`exitCode`, `image`, `health`, `restartCount`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// An event of `tpc` happening now.
    pub fn now(tpc: &str, action: &str, attributes: &[(&str, String)]) -> Event {
        Event {
            time_nano: now_nanos(),
            tpc: tpc.to_string(),
            action: action.to_string(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// docker's one-line form: `<RFC 3339 time> tpc <action> <name> (k=v, ...)`.
    pub fn line(&self) -> String {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(self.time_nano);
        let mut line = format!(
            "{} tpc {} {}",
            humantime::format_rfc3339_nanos(time),
            self.action,
            self.tpc
        );
        if !self.attributes.is_empty() {
            let attrs: Vec<String> = self.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.push_str(&format!(" ({})", attrs.join(", ")));
        }
        line
    }
}

/// Nanoseconds since the epoch.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The current event file.
pub fn path(store: &Store) -> PathBuf {
    store.root().join("events.jsonl")
}

fn rotated(store: &Store) -> PathBuf {
    store.root().join("events.jsonl.1")
}

/// Appends `event`. Recording is best effort: a full disk must not fail the operation that
/// happened (it is logged instead).
pub fn record(store: &Store, event: Event) {
    if let Err(e) = append(store, &event) {
        tracing::warn!("cannot record event {} of {}: {e}", event.action, event.tpc);
    }
}

/// Records `action` of `tpc` now, with `attributes`.
pub fn emit(store: &Store, tpc: &str, action: &str, attributes: &[(&str, String)]) {
    record(store, Event::now(tpc, action, attributes));
}

fn append(store: &Store, event: &Event) -> std::io::Result<()> {
    let path = path(store);
    if let Some(dir) = path.parent() {
        super::store::create_private_dir(dir).map_err(std::io::Error::other)?;
    }
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_BYTES)
        && let Ok(_lock) = store.lock(ROTATE_LOCK)
        && std::fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_BYTES)
    {
        std::fs::rename(&path, rotated(store))?;
    }
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(&path)?;
    f.write_all(&line)
}

/// Every recorded event from `since` to `until` (nanoseconds, inclusive), oldest first.
pub fn read(store: &Store, since: u64, until: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for p in [rotated(store), path(store)] {
        if let Ok(f) = File::open(&p) {
            out.extend(parse_lines(BufReader::new(f)));
        }
    }
    out.retain(|e| e.time_nano >= since && e.time_nano <= until);
    out.sort_by_key(|e| e.time_nano);
    out
}

fn parse_lines(r: impl BufRead) -> Vec<Event> {
    r.lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// Follows the event file from its current end: each call of [`Follower::poll`] returns the
/// events appended since, across rotations.
pub struct Follower {
    path: PathBuf,
    file: Option<(File, u64)>,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the end of the current file.
    pub fn new(store: &Store) -> Follower {
        let path = path(store);
        let file = File::open(&path).ok().map(|mut f| {
            let _ = f.seek(SeekFrom::End(0));
            let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
            (f, ino)
        });
        Follower {
            path,
            file,
            partial: Vec::new(),
        }
    }

    /// The events appended since the last call.
    pub fn poll(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some((f, _)) = &mut self.file {
            out.extend(drain(f, &mut self.partial));
        }
        // Rotated (or created): the old file was read to its end above; go on with the new one.
        let now = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if now.is_some() && now != self.file.as_ref().map(|(_, ino)| *ino) {
            self.partial.clear();
            self.file = File::open(&self.path).ok().map(|f| (f, now.unwrap_or(0)));
            if let Some((f, _)) = &mut self.file {
                out.extend(drain(f, &mut self.partial));
            }
        }
        out
    }
}

fn drain(f: &mut File, partial: &mut Vec<u8>) -> Vec<Event> {
    let _ = f.read_to_end(partial);
    let Some(end) = partial.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    let complete: Vec<u8> = partial.drain(..=end).collect();
    parse_lines(complete.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_back_in_a_window_and_followed_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut follower = Follower::new(&store);
        let e = |t: u64, action: &str| Event {
            time_nano: t,
            tpc: "a".into(),
            action: action.into(),
            attributes: BTreeMap::from([("exitCode".to_string(), "3".to_string())]),
        };
        record(&store, e(10, "start"));
        record(&store, e(20, "die"));
        assert_eq!(read(&store, 15, u64::MAX), vec![e(20, "die")]);
        assert_eq!(follower.poll(), vec![e(10, "start"), e(20, "die")]);
        assert_eq!(follower.poll(), vec![]);
        // Grow past the bound: the next append rotates.
        let f = OpenOptions::new().append(true).open(path(&store)).unwrap();
        f.set_len(MAX_BYTES).unwrap();
        assert_eq!(follower.poll(), vec![], "padding is no event");
        record(&store, e(30, "restart"));
        assert!(rotated(&store).exists());
        assert_eq!(follower.poll(), vec![e(30, "restart")]);
        assert_eq!(
            read(&store, 0, u64::MAX)
                .iter()
                .map(|e| e.time_nano)
                .collect::<Vec<_>>(),
            vec![10, 20, 30]
        );
        assert!(e(20, "die").line().ends_with(" tpc die a (exitCode=3)"));
    }
}

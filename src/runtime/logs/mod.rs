//! TPC output: a size-rotated log file per TPC, written by tpcm itself acting as containerd's
//! logging binary, and read back for `tpcm logs` and gNOI Log (`read.rs`).
//!
//! containerd's shim starts the logging binary given as a `binary://` URI with the container's
//! stdout and stderr as file descriptors 3 and 4 (the `containerd-shim-logging` crate does that
//! hand-over). tpcm writes both to `<file>` as timed, stream-tagged records (`record.rs`, CRI's
//! log format) and, when the file passes `max_bytes`, renames it to `<file>.1` (older ones shift
//! up, at most `files` kept), so a chatty TPC cannot fill the disk. The URI's query becomes argv
//! as key/value pairs in no fixed order, so they are parsed as pairs.

mod read;
pub mod record;

pub use read::{LogOutput, MAX_LINE, Merged, Position, ReadOptions, follow, parse_time, read_tail};
pub use record::Stream;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Key in the logging URI that marks a tpcm log-driver invocation; its value is the log file.
pub const DRIVER_KEY: &str = "tpcm-log-file";
const MAX_BYTES_KEY: &str = "max-bytes";
const FILES_KEY: &str = "files";

/// Where a container's output goes and how much of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    /// The current log file.
    pub file: PathBuf,
    /// Size at which it is rotated.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub files: u32,
}

impl LogTarget {
    /// The `binary://` URI that makes the shim run `exe` as this target's log driver.
    pub fn driver_uri(&self, exe: &Path) -> String {
        format!(
            "binary://{}?{DRIVER_KEY}={}&{MAX_BYTES_KEY}={}&{FILES_KEY}={}",
            encode(&exe.display().to_string()),
            encode(&self.file.display().to_string()),
            self.max_bytes,
            self.files
        )
    }

    /// Recognises a log-driver invocation from its arguments (after argv[0]).
    pub fn from_driver_args(args: &[String]) -> Option<LogTarget> {
        if !args.len().is_multiple_of(2) || !args.iter().step_by(2).any(|k| k == DRIVER_KEY) {
            return None;
        }
        let get = |key: &str| args.chunks(2).find(|kv| kv[0] == key).map(|kv| kv[1].clone());
        Some(LogTarget {
            file: PathBuf::from(get(DRIVER_KEY)?),
            max_bytes: get(MAX_BYTES_KEY)?.parse().ok()?,
            files: get(FILES_KEY)?.parse().ok()?,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.file.clone().into_os_string();
        s.push(format!(".{n}"));
        s.into()
    }

    /// The files holding output, oldest first.
    pub fn files_oldest_first(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = (1..=self.files)
            .rev()
            .map(|n| self.rotated(n))
            .filter(|p| p.exists())
            .collect();
        if self.file.exists() {
            out.push(self.file.clone());
        }
        out
    }
}

/// Percent-encodes everything but unreserved characters and `/` (Go's URL parser decodes it).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The rotating writer shared by the stdout and stderr copiers.
struct Rotating {
    target: LogTarget,
    file: File,
    size: u64,
}

/// Opens (creating) a log file for appending, readable by root only: a TPC's output may carry
/// its secrets. A file an older tpcm created world-readable is made private too.
fn open_log(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_MODE)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(LOG_MODE))?;
    }
    Ok(file)
}

/// Mode of log files.
const LOG_MODE: u32 = 0o600;

impl Rotating {
    fn open(target: LogTarget) -> io::Result<Rotating> {
        let file = open_log(&target.file)?;
        let size = file.metadata()?.len();
        Ok(Rotating { target, file, size })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + data.len() as u64 > self.target.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if !self.target.file.exists() {
            // Removed behind our back: start a new file rather than shifting the old ones.
            self.file = open_log(&self.target.file)?;
            self.size = 0;
            return Ok(());
        }
        if self.target.files == 0 {
            self.file.set_len(0)?;
        } else {
            for n in (1..self.target.files).rev() {
                let _ = std::fs::rename(self.target.rotated(n), self.target.rotated(n + 1));
            }
            std::fs::rename(&self.target.file, self.target.rotated(1))?;
            self.file = open_log(&self.target.file)?;
        }
        self.size = 0;
        Ok(())
    }
}

struct Driver {
    config: containerd_shim_logging::Config,
    writer: Arc<Mutex<Rotating>>,
}

/// Set by [`run_driver`] before handing over to the logging crate, which builds the driver
/// from the shim's environment alone.
static TARGET: Mutex<Option<LogTarget>> = Mutex::new(None);

impl containerd_shim_logging::Driver for Driver {
    type Error = io::Error;

    fn new(config: containerd_shim_logging::Config) -> Result<Self, io::Error> {
        let target = TARGET
            .lock()
            .expect("lock is never poisoned")
            .clone()
            .ok_or_else(|| io::Error::other("no log target"))?;
        if let Some(dir) = target.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Driver {
            config,
            writer: Arc::new(Mutex::new(Rotating::open(target)?)),
        })
    }

    fn run(self) -> Result<(), io::Error> {
        let out = {
            let writer = self.writer.clone();
            std::thread::spawn(move || copy_stream(self.config.stdout, Stream::Stdout, writer))
        };
        let err = std::thread::spawn(move || copy_stream(self.config.stderr, Stream::Stderr, self.writer));
        let _ = out.join();
        let _ = err.join();
        Ok(())
    }
}

/// Most content bytes in a record: with its newline, a record's content is one reader's line.
const MAX_CONTENT: usize = MAX_LINE - 1;

/// How long an unfinished line (a prompt, a progress bar) waits for its end before what there
/// is of it is written as a `P` record, so it shows in `tpcm logs -f`.
const PARTIAL_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Appends `content` of `stream` to `batch` as records of at most [`MAX_CONTENT`] bytes, the
/// last one ending the line when `ends`.
fn add_records(batch: &mut Vec<u8>, stamp: &str, stream: Stream, content: &[u8], ends: bool) {
    if content.is_empty() && !ends {
        return;
    }
    let pieces: Vec<&[u8]> = if content.is_empty() {
        vec![content]
    } else {
        content.chunks(MAX_CONTENT).collect()
    };
    let last = pieces.len() - 1;
    let mut header = String::with_capacity(48);
    for (i, piece) in pieces.into_iter().enumerate() {
        header.clear();
        record::push_header(&mut header, stamp, stream, i < last || !ends);
        batch.extend_from_slice(header.as_bytes());
        batch.extend_from_slice(piece);
        batch.push(b'\n');
    }
}

/// Writes a batch of records at once (one write per read of the TPC's output, not one per
/// line). A failed write (full disk) drops them: the container keeps running rather than
/// blocking on a pipe nobody drains.
fn write_batch(writer: &Mutex<Rotating>, batch: &mut Vec<u8>) {
    if !batch.is_empty() {
        let _ = writer.lock().expect("lock is never poisoned").write(batch);
        batch.clear();
    }
}

/// Copies one of the TPC's outputs into records, a line each: bytes without their newline yet
/// are held (a longer line is written in pieces of [`MAX_CONTENT`]) until the newline comes, or
/// for [`PARTIAL_AFTER`] when nothing more arrives.
fn copy_stream(mut from: File, stream: Stream, writer: Arc<Mutex<Rotating>>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut pending: Vec<u8> = Vec::new();
    let mut batch: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let timeout = if pending.is_empty() {
            PollTimeout::NONE
        } else {
            PollTimeout::try_from(PARTIAL_AFTER).unwrap_or(PollTimeout::NONE)
        };
        let ready = {
            let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, timeout)
        };
        match ready {
            Ok(0) => {
                let stamp = record::stamp(std::time::SystemTime::now());
                add_records(&mut batch, &stamp, stream, &pending, false);
                write_batch(&writer, &mut batch);
                pending.clear();
                continue;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        let mut data = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => &buf[..n],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let now = record::stamp(std::time::SystemTime::now());
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            if pending.is_empty() {
                add_records(&mut batch, &now, stream, &data[..i], true);
            } else {
                pending.extend_from_slice(&data[..i]);
                add_records(&mut batch, &now, stream, &pending, true);
                pending.clear();
            }
            data = &data[i + 1..];
        }
        pending.extend_from_slice(data);
        if pending.len() >= MAX_CONTENT {
            let whole = pending.len() / MAX_CONTENT * MAX_CONTENT;
            add_records(&mut batch, &now, stream, &pending[..whole], false);
            pending.drain(..whole);
        }
        write_batch(&writer, &mut batch);
    }
    // The stream ended: what is left is its last line.
    let stamp = record::stamp(std::time::SystemTime::now());
    add_records(&mut batch, &stamp, stream, &pending, !pending.is_empty());
    write_batch(&writer, &mut batch);
}

/// Runs as the shim's logging binary for `target`; never returns.
pub fn run_driver(target: LogTarget) -> ! {
    *TARGET.lock().expect("lock is never poisoned") = Some(target);
    containerd_shim_logging::run::<Driver>();
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_round_trips_through_argv_pairs_in_any_order() {
        let t = LogTarget {
            file: "/host/tpcm/logs/a b.log".into(),
            max_bytes: 10,
            files: 2,
        };
        let uri = t.driver_uri(Path::new("/usr/bin/tpcm"));
        assert!(
            uri.starts_with("binary:///usr/bin/tpcm?tpcm-log-file=/host/tpcm/logs/a%20b.log&"),
            "{uri}"
        );
        let args: Vec<String> = [
            "files",
            "2",
            "tpcm-log-file",
            "/host/tpcm/logs/a b.log",
            "max-bytes",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(LogTarget::from_driver_args(&args), Some(t));
        assert_eq!(LogTarget::from_driver_args(&["list".to_string()]), None);
        assert_eq!(
            LogTarget::from_driver_args(&["image".into(), "list".into()]),
            None
        );
    }

    #[test]
    fn output_becomes_records_a_line_each_and_an_unfinished_line_shows_after_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        let t = LogTarget {
            file: dir.path().join("app.log"),
            max_bytes: 1 << 20,
            files: 1,
        };
        let writer = Arc::new(Mutex::new(Rotating::open(t.clone()).unwrap()));
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let copier = {
            let writer = writer.clone();
            std::thread::spawn(move || copy_stream(File::from(read_end), Stream::Stderr, writer))
        };
        let mut input = File::from(write_end);
        input.write_all(b"line one\nprompt: ").unwrap();
        // The prompt is written as a P record once nothing more came for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&t.file)
            .unwrap()
            .contains("stderr P prompt: ")
        {
            assert!(std::time::Instant::now() < deadline, "no P record");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        input.write_all(b"yes\n").unwrap();
        input.write_all(&vec![b'x'; 40_000]).unwrap();
        drop(input);
        copier.join().unwrap();
        let file = std::fs::read_to_string(&t.file).unwrap();
        let records: Vec<&str> = file.lines().collect();
        assert_eq!(records.len(), 6, "{file}");
        let flags: Vec<&str> = records.iter().map(|r| r.split(' ').nth(2).unwrap()).collect();
        assert_eq!(flags, ["F", "P", "F", "P", "P", "F"]);
        assert!(records.iter().all(|r| r.split(' ').nth(1) == Some("stderr")));
        assert!(records.iter().all(|r| r.len() <= 64 + MAX_LINE));
        let mut out = Merged(Vec::new());
        read_tail(&t, &ReadOptions::default(), &mut out).unwrap();
        let text = String::from_utf8(out.0).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["line one", "prompt: yes"]);
        // The stream ended inside the long line: it ends there, cut as readers cut lines.
        assert_eq!(lines[2..].concat(), "x".repeat(40_000));
    }
}

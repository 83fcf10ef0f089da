//! TPC output: a size-rotated log file per TPC, written by tpcm itself acting as containerd's
//! logging binary, and read back for `tpcm logs`.
//!
//! containerd's shim starts the logging binary given as a `binary://` URI with the container's
//! stdout and stderr as file descriptors 3 and 4 (the `containerd-shim-logging` crate does that
//! hand-over). tpcm appends both to `<file>` and, when it passes `max_bytes`, renames it to
//! `<file>.1` (older ones shift up, at most `files` kept), so a chatty TPC cannot fill the disk.
//! The URI's query becomes argv as key/value pairs in no fixed order, so they are parsed as pairs.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
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
        let copy = |mut from: File, writer: Arc<Mutex<Rotating>>| {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) => return,
                        // A failed write (full disk) drops this chunk; the container keeps
                        // running rather than blocking on a pipe nobody drains.
                        Ok(n) => {
                            let _ = writer.lock().expect("lock is never poisoned").write(&buf[..n]);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            })
        };
        let out = copy(self.config.stdout, self.writer.clone());
        let err = copy(self.config.stderr, self.writer);
        let _ = out.join();
        let _ = err.join();
        Ok(())
    }
}

/// Runs as the shim's logging binary for `target`; never returns.
pub fn run_driver(target: LogTarget) -> ! {
    *TARGET.lock().expect("lock is never poisoned") = Some(target);
    containerd_shim_logging::run::<Driver>();
    std::process::exit(0)
}

/// The last `tail` lines (all with `None`) of a TPC's output, across rotated files. Returns how
/// many bytes of the current file it read: where [`follow`] goes on without repeating a line.
pub fn read_tail(target: &LogTarget, tail: Option<usize>, out: &mut dyn Write) -> io::Result<u64> {
    let mut lines: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    let mut current = 0;
    for path in target.files_oldest_first() {
        let mut r = BufReader::new(File::open(&path)?);
        loop {
            let mut line = Vec::new();
            let n = r.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            if path == target.file {
                current += n as u64;
            }
            match tail {
                None => out.write_all(&line)?,
                Some(n) => {
                    lines.push_back(line);
                    if lines.len() > n {
                        lines.pop_front();
                    }
                }
            }
        }
    }
    for l in lines {
        out.write_all(&l)?;
    }
    Ok(current)
}

/// Follows the current log file from `from` bytes on, writing what appears, until `stop`
/// says so; a rotation (the file got shorter, or was replaced) restarts from its beginning.
pub fn follow(
    target: &LogTarget,
    mut from: u64,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut ino = std::fs::metadata(&target.file).map(|m| m.ino()).unwrap_or(0);
    let mut buf = vec![0u8; 64 << 10];
    while !stop() {
        let Ok(md) = std::fs::metadata(&target.file) else {
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        };
        if md.ino() != ino || md.len() < from {
            ino = md.ino();
            from = 0;
        }
        if md.len() > from {
            let mut f = File::open(&target.file)?;
            f.seek(SeekFrom::Start(from))?;
            let n = f.read(&mut buf)?;
            out.write_all(&buf[..n])?;
            out.flush()?;
            from += n as u64;
            continue;
        }
        // Polling keeps this free of inotify plumbing; a fifth of a second is prompt enough
        // for a person watching.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(dir: &Path, max: u64, files: u32) -> LogTarget {
        LogTarget {
            file: dir.join("app.log"),
            max_bytes: max,
            files,
        }
    }

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
    fn rotation_bounds_the_files_and_tail_reads_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path(), 20, 2);
        let mut w = Rotating::open(t.clone()).unwrap();
        for i in 0..10 {
            w.write(format!("line {i}\n").as_bytes()).unwrap();
        }
        // 7 bytes a line, 20 bytes a file: 2 lines a file; current + 2 rotated = last 6 lines.
        assert_eq!(t.files_oldest_first().len(), 3);
        assert!(!dir.path().join("app.log.3").exists());
        let mut all = Vec::new();
        read_tail(&t, None, &mut all).unwrap();
        assert_eq!(
            String::from_utf8(all).unwrap(),
            "line 4\nline 5\nline 6\nline 7\nline 8\nline 9\n"
        );
        let mut last = Vec::new();
        read_tail(&t, Some(3), &mut last).unwrap();
        assert_eq!(String::from_utf8(last).unwrap(), "line 7\nline 8\nline 9\n");
    }
}

//! TPC output: a size-rotated log file per TPC, written by tpcm itself acting as containerd's
//! logging binary, and read back for `tpcm logs`.
//!
//! containerd's shim starts the logging binary given as a `binary://` URI with the container's
//! stdout and stderr as file descriptors 3 and 4 (the `containerd-shim-logging` crate does that
//! hand-over). tpcm appends both to `<file>` and, when it passes `max_bytes`, renames it to
//! `<file>.1` (older ones shift up, at most `files` kept), so a chatty TPC cannot fill the disk.
//! The URI's query becomes argv as key/value pairs in no fixed order, so they are parsed as pairs.
//!
//! Reading gives lines of at most [`MAX_LINE`] bytes: a longer line (a TPC printing megabytes
//! without a newline) is cut into pieces of that size, each ended with an added newline, as
//! docker's log drivers cut lines into 16 KiB messages. `tpcm logs` prints the pieces and gNOI
//! Log sends one message per piece, so neither holds a whole line in memory and no message
//! outgrows gRPC's limits; `--tail` counts pieces.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
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

/// Longest line a reader gets, its newline included: 16 KiB.
pub const MAX_LINE: usize = 16 << 10;

/// Size of the reads from log files.
const READ_BLOCK: usize = 64 << 10;

/// Where a reader of a TPC's output is: bytes of the current file read, and how long the line
/// being read is so far (a line may go on in the next read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    offset: u64,
    line: usize,
}

/// Passes output on to `out`, adding a newline wherever a line would pass [`MAX_LINE`]. A cut
/// falls before a UTF-8 character rather than inside it when the bytes at hand show one.
struct Pieces<'a> {
    out: &'a mut dyn Write,
    line: usize,
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

impl Pieces<'_> {
    fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        // Bytes of a piece, its newline aside.
        const ROOM: usize = MAX_LINE - 1;
        while !data.is_empty() {
            let room = ROOM - self.line;
            let window = &data[..data.len().min(room + 1)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                self.out.write_all(&data[..=i])?;
                self.line = 0;
                data = &data[i + 1..];
                continue;
            }
            if data.len() <= room {
                self.out.write_all(data)?;
                self.line += data.len();
                return Ok(());
            }
            // No newline in reach: cut at `room`, or up to 3 bytes earlier at a character's start.
            let mut cut = room;
            while cut > 0 && room - cut < 3 && is_continuation(data[cut]) {
                cut -= 1;
            }
            if is_continuation(data[cut]) {
                cut = room;
            }
            self.out.write_all(&data[..cut])?;
            self.out.write_all(b"\n")?;
            self.line = 0;
            data = &data[cut..];
        }
        Ok(())
    }
}

impl Write for Pieces<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.feed(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Keeps the last `keep` lines written to it (each at most [`MAX_LINE`], as [`Pieces`] makes
/// them), and the unfinished one.
struct LastLines {
    keep: usize,
    lines: std::collections::VecDeque<Vec<u8>>,
    current: Vec<u8>,
}

impl Write for LastLines {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            self.current.extend_from_slice(&buf[..=i]);
            self.lines.push_back(std::mem::take(&mut self.current));
            if self.lines.len() > self.keep {
                self.lines.pop_front();
            }
            buf = &buf[i + 1..];
        }
        self.current.extend_from_slice(buf);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The last `tail` lines (all with `None`) of a TPC's output, across rotated files, in lines
/// of at most [`MAX_LINE`]. Returns where [`follow`] goes on without repeating a byte.
pub fn read_tail(target: &LogTarget, tail: Option<usize>, out: &mut dyn Write) -> io::Result<Position> {
    let mut last = tail.map(|keep| LastLines {
        keep,
        lines: Default::default(),
        current: Vec::new(),
    });
    let mut offset = 0;
    let line = {
        let sink: &mut dyn Write = match &mut last {
            Some(l) => l,
            None => &mut *out,
        };
        let mut pieces = Pieces { out: sink, line: 0 };
        let mut buf = vec![0u8; READ_BLOCK];
        for path in target.files_oldest_first() {
            let mut file = File::open(&path)?;
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                pieces.feed(&buf[..n])?;
                if path == target.file {
                    offset += n as u64;
                }
            }
        }
        pieces.line
    };
    if let Some(mut last) = last {
        // An unfinished last line counts as a line.
        if !last.current.is_empty() {
            last.lines.push_back(std::mem::take(&mut last.current));
            if last.lines.len() > last.keep {
                last.lines.pop_front();
            }
        }
        for l in last.lines {
            out.write_all(&l)?;
        }
    }
    Ok(Position { offset, line })
}

/// Follows the current log file from `from` on, writing what appears (in lines of at most
/// [`MAX_LINE`]), until `stop` says so; a rotation (the file got shorter, or was replaced)
/// restarts from its beginning. Returns where it stopped.
pub fn follow(
    target: &LogTarget,
    from: Position,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> io::Result<Position> {
    use std::os::unix::fs::MetadataExt;
    let mut offset = from.offset;
    let mut pieces = Pieces { out, line: from.line };
    let mut ino = std::fs::metadata(&target.file).map(|m| m.ino()).unwrap_or(0);
    let mut buf = vec![0u8; READ_BLOCK];
    while !stop() {
        let Ok(md) = std::fs::metadata(&target.file) else {
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        };
        if md.ino() != ino || md.len() < offset {
            ino = md.ino();
            offset = 0;
        }
        if md.len() > offset {
            let mut f = File::open(&target.file)?;
            f.seek(SeekFrom::Start(offset))?;
            let n = f.read(&mut buf)?;
            pieces.feed(&buf[..n])?;
            pieces.flush()?;
            offset += n as u64;
            continue;
        }
        // Polling keeps this free of inotify plumbing; a fifth of a second is prompt enough
        // for a person watching.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(Position {
        offset,
        line: pieces.line,
    })
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

    /// Feeds `input` in blocks of `block` bytes and returns the lines that come out.
    fn pieces_of(input: &[u8], block: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut p = Pieces {
            out: &mut out,
            line: 0,
        };
        for chunk in input.chunks(block) {
            p.feed(chunk).unwrap();
        }
        out.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn long_lines_are_cut_into_pieces_of_at_most_16_kib() {
        let mut input = vec![b'a'; 40_000];
        input.push(b'\n');
        input.extend_from_slice(b"short\n");
        input.extend(std::iter::repeat_n(b'b', MAX_LINE - 1));
        input.extend_from_slice(b"\nend");
        for block in [1, 7, 4096, READ_BLOCK] {
            let lines = pieces_of(&input, block);
            assert!(lines.iter().all(|l| l.len() <= MAX_LINE), "block {block}");
            let sizes: Vec<usize> = lines.iter().map(Vec::len).collect();
            // 40 000 = 16 383 + 16 383 + 7 234; a line of exactly 16 KiB with its newline stays whole.
            assert_eq!(
                sizes,
                [MAX_LINE, MAX_LINE, 7_235, 6, MAX_LINE, 3],
                "block {block}"
            );
            let joined: Vec<u8> = lines
                .iter()
                .flat_map(|l| {
                    if l.len() == MAX_LINE && l[..MAX_LINE - 1].iter().all(|&b| b == b'a') {
                        &l[..MAX_LINE - 1]
                    } else {
                        &l[..]
                    }
                })
                .copied()
                .collect();
            assert_eq!(joined, input, "block {block}: only newlines were added");
        }
    }

    #[test]
    fn a_cut_falls_before_a_character_not_inside_it() {
        // "é" is 2 bytes, "😀" 4: a cut at 16 383 bytes would split one of them.
        for ch in ["é", "😀"] {
            let text = ch.repeat(2 * MAX_LINE / ch.len());
            let lines = pieces_of(text.as_bytes(), READ_BLOCK);
            assert!(lines.len() > 2);
            for l in &lines {
                assert!(l.len() <= MAX_LINE);
                let s = std::str::from_utf8(l).expect("every piece is whole characters");
                assert!(s.trim_end_matches('\n').chars().all(|c| c.to_string() == ch));
            }
        }
    }

    #[test]
    fn tail_and_follow_cut_a_long_line_the_same_way_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path(), 40_000, 3);
        let mut w = Rotating::open(t.clone()).unwrap();
        let long = vec![b'x'; 50_000];
        for chunk in long.chunks(10_000) {
            w.write(chunk).unwrap();
        }
        let mut all = Vec::new();
        let position = read_tail(&t, None, &mut all).unwrap();
        let sizes: Vec<usize> = all.split_inclusive(|&b| b == b'\n').map(<[u8]>::len).collect();
        assert_eq!(sizes, [MAX_LINE, MAX_LINE, MAX_LINE, 50_000 - 3 * (MAX_LINE - 1)]);
        let mut tail = Vec::new();
        read_tail(&t, Some(2), &mut tail).unwrap();
        assert_eq!(tail.len(), MAX_LINE + 50_000 - 3 * (MAX_LINE - 1));
        assert_eq!(t.files_oldest_first().len(), 2, "the line spans a rotation");
        // Following on from there: the line goes on where reading stopped.
        w.write(&vec![b'x'; 20_000]).unwrap();
        w.write(b"\n").unwrap();
        let mut more = Vec::new();
        let read = std::cell::Cell::new(0);
        follow(&t, position, &mut more, &|| {
            read.set(read.get() + 1);
            read.get() > 3
        })
        .unwrap();
        let sizes: Vec<usize> = more.split_inclusive(|&b| b == b'\n').map(<[u8]>::len).collect();
        let first = MAX_LINE - 1 - (50_000 - 3 * (MAX_LINE - 1));
        assert_eq!(sizes[0], first + 1, "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 20_000 + sizes.len());
        assert!(sizes.iter().all(|&n| n <= MAX_LINE));
    }
}

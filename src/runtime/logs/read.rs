//! Reading a TPC's output back, for `tpcm logs` and gNOI Log: the records of its log files
//! (`record.rs`) as lines of output, each tagged with its stream, in lines of at most
//! [`MAX_LINE`] bytes (a longer line is cut into pieces of that size, each ended with an added
//! newline, as docker's log drivers cut lines into 16 KiB messages; neither reader holds a
//! whole line in memory, and no gNOI message outgrows gRPC's limits), optionally prefixed
//! with their time and limited to a time window; `--tail` counts the pieces.

use super::LogTarget;
use super::record::{Origin, Parser, Segments, Stream};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::SystemTime;

/// Longest line a reader gets, its newline included: 16 KiB.
pub const MAX_LINE: usize = 16 << 10;

/// Size of the reads from log files.
const READ_BLOCK: usize = 64 << 10;

/// What a reader wants of the output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Only the last this many lines (pieces) of what is there.
    pub tail: Option<usize>,
    /// Each line starts with its time (RFC 3339, nanoseconds, UTC) and a space.
    pub timestamps: bool,
    /// Only lines written at or after this time. Lines of an older tpcm's files have no time
    /// and are left out when a window is asked for.
    pub since: Option<SystemTime>,
    /// Only lines written before this time.
    pub until: Option<SystemTime>,
}

/// A time as `--since`/`--until` take it (docker's forms): an RFC 3339 time
/// (`2026-12-06T02:16:07Z`, `2026-12-06 02:16:07`, taken as UTC), seconds since the epoch
/// (`1796000000`, fractions allowed), or a duration before `now` (`10m`, `1h30m`).
pub fn parse_time(value: &str, now: SystemTime) -> Result<SystemTime, String> {
    let value = value.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return Ok(t);
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs));
    }
    if let Ok(ago) = humantime::parse_duration(value) {
        return now
            .checked_sub(ago)
            .ok_or_else(|| format!("{value:?} reaches back before the epoch"));
    }
    Err(format!(
        "{value:?} is not a time: give an RFC 3339 time (2026-12-06T02:16:07Z), seconds since the epoch, or a duration ago (10m, 1h30m)"
    ))
}

/// Where the lines go, each write tagged with the stream it came from (`None`: a line of an
/// older tpcm's file). A write holds at most one newline, at its end.
pub trait LogOutput {
    fn write(&mut self, stream: Option<Stream>, bytes: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// Every stream to one writer.
pub struct Merged<W>(pub W);

impl<W: Write> LogOutput for Merged<W> {
    fn write(&mut self, _: Option<Stream>, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A stream's line being written out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OpenLine {
    /// Bytes of it written (its time prefix aside).
    len: usize,
    /// Whether its start (and its time prefix) was written.
    started: bool,
}

/// Slot of a stream's open line: stdout, stderr, and the raw lines of older files.
fn slot(stream: Option<Stream>) -> usize {
    match stream {
        Some(Stream::Stdout) => 0,
        Some(Stream::Stderr) => 1,
        None => 2,
    }
}

/// Where a reader is: the bytes of the current file read, the record parser's state, and each
/// stream's unfinished line (a line may go on in the next read, or the next file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    offset: u64,
    parser: Parser,
    lines: [OpenLine; 3],
}

/// Turns the parser's segments into output lines: the window applied, lines cut at
/// [`MAX_LINE`] (before a UTF-8 character rather than inside it when the bytes at hand show
/// one), the time prefix written at each line's start.
struct Lines<'a> {
    options: &'a ReadOptions,
    open: [OpenLine; 3],
    out: &'a mut dyn LogOutput,
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

impl Lines<'_> {
    fn outside_window(&self, origin: Origin) -> bool {
        if self.options.since.is_none() && self.options.until.is_none() {
            return false;
        }
        match origin.time {
            None => true,
            Some(t) => {
                self.options.since.is_some_and(|s| t < s) || self.options.until.is_some_and(|u| t >= u)
            }
        }
    }

    fn start_line(&mut self, origin: Origin) -> io::Result<()> {
        let open = &mut self.open[slot(origin.stream)];
        if open.started {
            return Ok(());
        }
        open.started = true;
        if self.options.timestamps
            && let Some(t) = origin.time
        {
            let prefix = format!("{} ", humantime::format_rfc3339_nanos(t));
            self.out.write(origin.stream, prefix.as_bytes())?;
        }
        Ok(())
    }

    fn end_line(&mut self, stream: Option<Stream>) {
        self.open[slot(stream)] = OpenLine::default();
    }
}

impl Segments for Lines<'_> {
    fn segment(&mut self, origin: Origin, mut data: &[u8], _ends_line: bool) -> io::Result<()> {
        if self.outside_window(origin) {
            return Ok(());
        }
        // Bytes of a piece, its newline aside.
        const ROOM: usize = MAX_LINE - 1;
        let stream = origin.stream;
        while !data.is_empty() {
            self.start_line(origin)?;
            let room = ROOM - self.open[slot(stream)].len;
            let window = &data[..data.len().min(room + 1)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                self.out.write(stream, &data[..=i])?;
                self.end_line(stream);
                data = &data[i + 1..];
                continue;
            }
            if data.len() <= room {
                self.out.write(stream, data)?;
                self.open[slot(stream)].len += data.len();
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
            self.out.write(stream, &data[..cut])?;
            self.out.write(stream, b"\n")?;
            self.end_line(stream);
            data = &data[cut..];
        }
        Ok(())
    }
}

/// Keeps the last `keep` lines written to it, in the order they ended, and each stream's
/// unfinished one.
struct LastLines {
    keep: usize,
    lines: std::collections::VecDeque<(Option<Stream>, Vec<u8>)>,
    open: [Vec<u8>; 3],
}

impl LastLines {
    fn push(&mut self, stream: Option<Stream>, line: Vec<u8>) {
        self.lines.push_back((stream, line));
        if self.lines.len() > self.keep {
            self.lines.pop_front();
        }
    }

    /// Writes what it kept to `out`; unfinished lines count as lines.
    fn write_to(mut self, out: &mut dyn LogOutput) -> io::Result<()> {
        for (i, stream) in [Some(Stream::Stdout), Some(Stream::Stderr), None]
            .into_iter()
            .enumerate()
        {
            let open = std::mem::take(&mut self.open[i]);
            if !open.is_empty() {
                self.push(stream, open);
            }
        }
        for (stream, line) in self.lines {
            out.write(stream, &line)?;
        }
        Ok(())
    }
}

impl LogOutput for LastLines {
    fn write(&mut self, stream: Option<Stream>, mut bytes: &[u8]) -> io::Result<()> {
        while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.open[slot(stream)]);
            line.extend_from_slice(&bytes[..=i]);
            self.push(stream, line);
            bytes = &bytes[i + 1..];
        }
        self.open[slot(stream)].extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TPC's output so far, across rotated files, as `options` asks. Returns where [`follow`]
/// goes on without repeating or losing a byte.
pub fn read_tail(target: &LogTarget, options: &ReadOptions, out: &mut dyn LogOutput) -> io::Result<Position> {
    let mut last = options.tail.map(|keep| LastLines {
        keep,
        lines: Default::default(),
        open: Default::default(),
    });
    let mut position = Position::default();
    {
        let sink: &mut dyn LogOutput = match &mut last {
            Some(l) => l,
            None => &mut *out,
        };
        let mut lines = Lines {
            options,
            open: position.lines,
            out: sink,
        };
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
                position.parser.feed(&buf[..n], &mut lines)?;
                if path == target.file {
                    position.offset += n as u64;
                }
            }
        }
        position.lines = lines.open;
    }
    if let Some(last) = last {
        last.write_to(out)?;
    }
    out.flush()?;
    Ok(position)
}

/// Follows the current log file from `from` on, writing what appears as `options` asks (its
/// `tail` aside), until `stop` says so; a rotation (the file got shorter, or was replaced)
/// restarts from its beginning. Returns where it stopped.
pub fn follow(
    target: &LogTarget,
    from: Position,
    options: &ReadOptions,
    out: &mut dyn LogOutput,
    stop: &dyn Fn() -> bool,
) -> io::Result<Position> {
    use std::os::unix::fs::MetadataExt;
    let Position {
        mut offset,
        mut parser,
        lines,
    } = from;
    let mut lines = Lines {
        options,
        open: lines,
        out,
    };
    let mut ino = std::fs::metadata(&target.file).map(|m| m.ino()).unwrap_or(0);
    let mut buf = vec![0u8; READ_BLOCK];
    // Once `stop` says so, what the file held at that moment is still read to its end (a
    // follow ended by the writer's exit loses none of its last lines), and no more: a writer
    // that never pauses cannot keep a stopping follow going.
    let mut drain_to: Option<u64> = None;
    loop {
        let stopping = stop();
        if let Ok(md) = std::fs::metadata(&target.file) {
            if md.ino() != ino || md.len() < offset {
                ino = md.ino();
                offset = 0;
            }
            if stopping && drain_to.is_none() {
                drain_to = Some(md.len());
            }
            if md.len() > offset && drain_to.is_none_or(|end| offset < end) {
                let mut f = File::open(&target.file)?;
                f.seek(SeekFrom::Start(offset))?;
                let n = f.read(&mut buf)?;
                parser.feed(&buf[..n], &mut lines)?;
                lines.out.flush()?;
                offset += n as u64;
                if n > 0 {
                    continue;
                }
            }
        }
        if stopping {
            break;
        }
        // Polling keeps this free of inotify plumbing; a fifth of a second is prompt enough
        // for a person watching.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(Position {
        offset,
        parser,
        lines: lines.open,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Rotating;
    use super::super::record::header;
    use super::*;
    use std::path::Path;
    use std::time::{Duration, UNIX_EPOCH};

    fn target(dir: &Path, max: u64, files: u32) -> LogTarget {
        LogTarget {
            file: dir.join("app.log"),
            max_bytes: max,
            files,
        }
    }

    fn all(t: &LogTarget, options: &ReadOptions) -> String {
        let mut out = Merged(Vec::new());
        read_tail(t, options, &mut out).unwrap();
        String::from_utf8(out.0).unwrap()
    }

    /// Writes `content` as one line of `stream` at second `at`.
    fn line(w: &mut Rotating, at: u64, stream: Stream, content: &str) {
        let t = UNIX_EPOCH + Duration::from_secs(at);
        let mut record = header(t, stream, false).into_bytes();
        record.extend_from_slice(content.as_bytes());
        record.push(b'\n');
        w.write(&record).unwrap();
    }

    #[test]
    fn times_are_read_in_dockers_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(parse_time("2027-01-15T08:00:00Z", now), Ok(now));
        assert_eq!(parse_time("2027-01-15 08:00:00", now), Ok(now));
        assert_eq!(parse_time("1800000000", now), Ok(now));
        assert_eq!(
            parse_time("1800000000.5", now),
            Ok(now + Duration::from_millis(500))
        );
        assert_eq!(parse_time("10m", now), Ok(at(1_800_000_000 - 600)));
        assert_eq!(parse_time("1h30m", now), Ok(at(1_800_000_000 - 5400)));
        let e = parse_time("yesterday", now).unwrap_err();
        assert!(e.contains("\"yesterday\" is not a time"), "{e}");
    }

    #[test]
    fn rotation_bounds_the_files_and_tail_reads_across_them() {
        let dir = tempfile::tempdir().unwrap();
        // A record of "line N" is 47 bytes: 2 records a file.
        let t = target(dir.path(), 100, 2);
        let mut w = Rotating::open(t.clone()).unwrap();
        for i in 0..10 {
            line(&mut w, 1_800_000_000 + i, Stream::Stdout, &format!("line {i}"));
        }
        assert_eq!(t.files_oldest_first().len(), 3);
        assert!(!dir.path().join("app.log.3").exists());
        assert_eq!(
            all(&t, &ReadOptions::default()),
            "line 4\nline 5\nline 6\nline 7\nline 8\nline 9\n"
        );
        let tail = ReadOptions {
            tail: Some(3),
            ..Default::default()
        };
        assert_eq!(all(&t, &tail), "line 7\nline 8\nline 9\n");
    }

    #[test]
    fn timestamps_windows_and_streams_follow_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path(), 1 << 20, 1);
        // An older tpcm's raw output first, then records.
        std::fs::write(&t.file, "from before\n").unwrap();
        let mut w = Rotating::open(t.clone()).unwrap();
        line(&mut w, 1_800_000_000, Stream::Stdout, "one");
        line(&mut w, 1_800_000_010, Stream::Stderr, "two");
        line(&mut w, 1_800_000_020, Stream::Stdout, "three");
        assert_eq!(all(&t, &ReadOptions::default()), "from before\none\ntwo\nthree\n");
        let stamped = ReadOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            all(&t, &stamped),
            "from before\n2027-01-15T08:00:00.000000000Z one\n\
             2027-01-15T08:00:10.000000000Z two\n2027-01-15T08:00:20.000000000Z three\n"
        );
        let window = ReadOptions {
            since: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_005)),
            until: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_020)),
            ..Default::default()
        };
        assert_eq!(all(&t, &window), "two\n");
        // The streams reach the output apart.
        struct Split(Vec<u8>, Vec<u8>);
        impl LogOutput for Split {
            fn write(&mut self, stream: Option<Stream>, bytes: &[u8]) -> io::Result<()> {
                match stream {
                    Some(Stream::Stderr) => self.1.extend_from_slice(bytes),
                    _ => self.0.extend_from_slice(bytes),
                }
                Ok(())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut split = Split(Vec::new(), Vec::new());
        read_tail(&t, &stamped, &mut split).unwrap();
        assert_eq!(
            String::from_utf8(split.1).unwrap(),
            "2027-01-15T08:00:10.000000000Z two\n"
        );
        // A line in pieces (P records) reads as one, with its first piece's time.
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let mut r = header(at(1_800_000_030), Stream::Stdout, true).into_bytes();
        r.extend_from_slice(b"a prompt: \n");
        w.write(&r).unwrap();
        let mut r = header(at(1_800_000_031), Stream::Stdout, false).into_bytes();
        r.extend_from_slice(b"answered\n");
        w.write(&r).unwrap();
        let tail = ReadOptions {
            tail: Some(1),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            all(&t, &tail),
            "2027-01-15T08:00:30.000000000Z a prompt: answered\n"
        );
    }

    /// Feeds `content` written as records of at most 16 383 bytes in blocks of `block` bytes,
    /// and returns the lines that come out.
    fn pieces_of(input: &[u8], block: usize) -> Vec<Vec<u8>> {
        let mut out = Merged(Vec::new());
        let options = ReadOptions::default();
        let mut lines = Lines {
            options: &options,
            open: Default::default(),
            out: &mut out,
        };
        let mut parser = Parser::default();
        for chunk in input.chunks(block) {
            parser.feed(chunk, &mut lines).unwrap();
        }
        out.0
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn long_lines_are_cut_into_pieces_of_at_most_16_kib() {
        // An older tpcm's raw file: lines of any length.
        let mut input = vec![b'a'; 40_000];
        input.push(b'\n');
        input.extend_from_slice(b"short\n");
        input.extend(std::iter::repeat_n(b'b', MAX_LINE - 1));
        input.extend_from_slice(b"\nend\n");
        for block in [1, 7, 4096, READ_BLOCK] {
            let lines = pieces_of(&input, block);
            assert!(lines.iter().all(|l| l.len() <= MAX_LINE), "block {block}");
            let sizes: Vec<usize> = lines.iter().map(Vec::len).collect();
            // 40 000 = 16 383 + 16 383 + 7 234; a line of exactly 16 KiB with its newline stays whole.
            assert_eq!(
                sizes,
                [MAX_LINE, MAX_LINE, 7_235, 6, MAX_LINE, 4],
                "block {block}"
            );
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
    fn tail_and_follow_go_on_where_reading_stopped_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path(), 200, 3);
        let mut w = Rotating::open(t.clone()).unwrap();
        for i in 0..6 {
            line(&mut w, 1_800_000_000 + i, Stream::Stdout, &format!("early {i}"));
        }
        let mut seen = Merged(Vec::new());
        let position = read_tail(&t, &ReadOptions::default(), &mut seen).unwrap();
        assert_eq!(String::from_utf8(seen.0).unwrap().lines().count(), 6);
        // More, past a rotation; following on from there gives each new line once.
        let mut r = header(
            UNIX_EPOCH + Duration::from_secs(1_800_000_010),
            Stream::Stderr,
            true,
        )
        .into_bytes();
        r.extend_from_slice(b"half, \n");
        w.write(&r).unwrap();
        for i in 0..5 {
            line(&mut w, 1_800_000_011 + i, Stream::Stderr, &format!("late {i}"));
        }
        let mut more = Merged(Vec::new());
        let reads = std::cell::Cell::new(0);
        follow(&t, position, &ReadOptions::default(), &mut more, &|| {
            reads.set(reads.get() + 1);
            reads.get() > 8
        })
        .unwrap();
        let more = String::from_utf8(more.0).unwrap();
        assert!(more.ends_with("late 4\n"), "{more}");
        assert!(!more.contains("early"), "{more}");

        // Told to stop at once, a follow still reads what was written before it was told.
        let position = read_tail(&t, &ReadOptions::default(), &mut Merged(Vec::new())).unwrap();
        for i in 0..3 {
            line(&mut w, 1_800_000_100 + i, Stream::Stdout, &format!("last {i}"));
        }
        let mut last = Merged(Vec::new());
        follow(&t, position, &ReadOptions::default(), &mut last, &|| true).unwrap();
        assert_eq!(String::from_utf8(last.0).unwrap(), "last 0\nlast 1\nlast 2\n");
    }
}

//! The on-disk form of a TPC's output: one record per line, in the container log format of
//! CRI (what kubelet and containerd's CRI plugin write, so common tools read it):
//!
//! ```text
//! 2026-12-06T02:16:07.123456789Z stdout F a whole line of output
//! 2026-12-06T02:16:07.200000000Z stderr P the start of a line that goes on in the next
//! 2026-12-06T02:16:08.000000000Z stderr F stderr record, which ends it
//! ```
//!
//! The time is when tpcm read the bytes (UTC, nanoseconds); `F` ends a line of the TPC's
//! output, `P` is a piece of a line that goes on in the next record of the same stream (a line
//! longer than [`super::MAX_LINE`], or one the TPC left unfinished for a while, e.g. a prompt).
//!
//! Log files written before tpcm kept records hold the raw output. A line that does not start
//! like a record is read as such a raw line: no time, no stream. So one file may hold both, an
//! older tpcm's raw lines followed by records.

use std::io;
use std::time::SystemTime;

/// Which of a TPC's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What is known of a line: its time and stream (neither, for a raw line of an older file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin {
    pub time: Option<SystemTime>,
    pub stream: Option<Stream>,
}

/// The header of a record: `<time> <stream> <F|P> `.
pub fn header(time: SystemTime, stream: Stream, partial: bool) -> String {
    let mut out = String::with_capacity(48);
    push_header(&mut out, &stamp(time), stream, partial);
    out
}

/// A record's time as written (formatted once for the many lines of one read).
pub fn stamp(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

/// Appends the header of a record with time `stamp` (from [`stamp`]).
pub fn push_header(out: &mut String, stamp: &str, stream: Stream, partial: bool) {
    out.push_str(stamp);
    out.push(' ');
    out.push_str(stream.as_str());
    out.push_str(if partial { " P " } else { " F " });
}

/// Longest header: a time of up to 35 characters (`…T…:…:…,9 digits…+hh:mm`), `stderr`, a
/// flag and three spaces, with room to spare. A line start that is not a header within this
/// many bytes is a raw line.
const MAX_HEADER: usize = 64;

/// How a line's start reads.
#[derive(Debug, PartialEq, Eq)]
enum HeaderRead {
    /// A record header of this many bytes.
    Record(Origin, bool, usize),
    /// Not a record.
    Raw,
    /// Could still become a header with more bytes.
    Undecided,
}

fn read_header(start: &[u8]) -> HeaderRead {
    // Every space-separated field must be complete (followed by a space) to be judged.
    let mut fields = start.splitn(4, |&b| b == b' ');
    let (Some(time), Some(stream), Some(flag)) = (fields.next(), fields.next(), fields.next()) else {
        return undecided_or_raw(start);
    };
    let Some(_rest) = fields.next() else {
        return undecided_or_raw(start);
    };
    let time = std::str::from_utf8(time)
        .ok()
        .and_then(|t| humantime::parse_rfc3339(t).ok());
    let stream = match stream {
        b"stdout" => Some(Stream::Stdout),
        b"stderr" => Some(Stream::Stderr),
        _ => None,
    };
    let partial = match flag {
        b"F" => Some(false),
        b"P" => Some(true),
        _ => None,
    };
    match (time, stream, partial) {
        (Some(time), Some(stream), Some(partial)) => {
            let len = time_len(start) + 1 + stream.as_str().len() + 1 + 1 + 1;
            HeaderRead::Record(
                Origin {
                    time: Some(time),
                    stream: Some(stream),
                },
                partial,
                len,
            )
        }
        _ => HeaderRead::Raw,
    }
}

fn time_len(start: &[u8]) -> usize {
    start.iter().position(|&b| b == b' ').unwrap_or(start.len())
}

fn undecided_or_raw(start: &[u8]) -> HeaderRead {
    if start.len() >= MAX_HEADER || start.contains(&b'\n') {
        HeaderRead::Raw
    } else {
        HeaderRead::Undecided
    }
}

/// Where the parser is in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// At a line's start, with the bytes seen of it so far (fewer than [`MAX_HEADER`]).
    LineStart(Vec<u8>),
    /// In a record's content.
    Record { origin: Origin, partial: bool },
    /// In a raw line.
    Raw,
}

/// Reads log bytes as they come (any split), handing on the content with its origin: the
/// bytes of a line never include the record's header, and the newline that ends a `P` record
/// is not content (its line goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parser {
    state: State,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            state: State::LineStart(Vec::new()),
        }
    }
}

/// Receives what a [`Parser`] reads: `content` of a line from `origin`; `ends_line` when the
/// line of output ends after it (the content then ends with its newline).
pub trait Segments {
    fn segment(&mut self, origin: Origin, content: &[u8], ends_line: bool) -> io::Result<()>;
}

impl Parser {
    /// Reads `data`, the next bytes of the log.
    pub fn feed(&mut self, mut data: &[u8], out: &mut dyn Segments) -> io::Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                State::LineStart(seen) => {
                    let take = data.len().min(MAX_HEADER - seen.len());
                    let mut start = std::mem::take(seen);
                    start.extend_from_slice(&data[..take]);
                    match read_header(&start) {
                        HeaderRead::Undecided => {
                            self.state = State::LineStart(start);
                            data = &data[take..];
                        }
                        HeaderRead::Record(origin, partial, len) => {
                            // What of `data` the header did not use goes on as content.
                            let used_of_data = len - (start.len() - take);
                            self.state = State::Record { origin, partial };
                            data = &data[used_of_data..];
                        }
                        HeaderRead::Raw => {
                            // The bytes held back are the line's first; the rest of `data`
                            // is read from where they end.
                            let held = start.len() - take;
                            self.state = State::Raw;
                            self.raw(&start[..held], out)?;
                        }
                    }
                }
                State::Record { origin, partial } => {
                    let (origin, partial) = (*origin, *partial);
                    match data.iter().position(|&b| b == b'\n') {
                        Some(i) => {
                            if partial {
                                out.segment(origin, &data[..i], false)?;
                            } else {
                                out.segment(origin, &data[..=i], true)?;
                            }
                            self.state = State::LineStart(Vec::new());
                            data = &data[i + 1..];
                        }
                        None => {
                            out.segment(origin, data, false)?;
                            return Ok(());
                        }
                    }
                }
                State::Raw => match data.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        out.segment(Origin::default(), &data[..=i], true)?;
                        self.state = State::LineStart(Vec::new());
                        data = &data[i + 1..];
                    }
                    None => {
                        out.segment(Origin::default(), data, false)?;
                        return Ok(());
                    }
                },
            }
        }
        Ok(())
    }

    /// Hands on raw bytes held at a line's start (in [`State::Raw`]), ending the line where
    /// they hold a newline and reading what follows it as the next line.
    fn raw(&mut self, held: &[u8], out: &mut dyn Segments) -> io::Result<()> {
        match held.iter().position(|&b| b == b'\n') {
            Some(i) => {
                out.segment(Origin::default(), &held[..=i], true)?;
                self.state = State::LineStart(Vec::new());
                self.feed(&held[i + 1..], out)
            }
            None if held.is_empty() => Ok(()),
            None => out.segment(Origin::default(), held, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[derive(Default)]
    struct Collected(Vec<(Origin, Vec<u8>, bool)>);

    impl Segments for Collected {
        fn segment(&mut self, origin: Origin, content: &[u8], ends_line: bool) -> io::Result<()> {
            // Adjacent pieces of one line with one origin are joined, so splits do not matter.
            match self.0.last_mut() {
                Some((o, c, false)) if *o == origin => {
                    c.extend_from_slice(content);
                    self.0.last_mut().unwrap().2 = ends_line;
                }
                _ => self.0.push((origin, content.to_vec(), ends_line)),
            }
            Ok(())
        }
    }

    fn parse(input: &[u8], block: usize) -> Vec<(Origin, Vec<u8>, bool)> {
        let mut p = Parser::default();
        let mut out = Collected::default();
        for chunk in input.chunks(block) {
            p.feed(chunk, &mut out).unwrap();
        }
        out.0
    }

    #[test]
    fn records_and_raw_lines_read_the_same_whatever_the_split() {
        let t1 = UNIX_EPOCH + Duration::new(1_796_000_000, 123_456_789);
        let t2 = UNIX_EPOCH + Duration::new(1_796_000_001, 0);
        let mut input = b"an older tpcm's raw line\n".to_vec();
        input.extend_from_slice(header(t1, Stream::Stdout, false).as_bytes());
        input.extend_from_slice(b"hello\n");
        input.extend_from_slice(header(t1, Stream::Stderr, true).as_bytes());
        input.extend_from_slice(b"part one, \n");
        input.extend_from_slice(header(t2, Stream::Stderr, false).as_bytes());
        input.extend_from_slice(b"part two\n");
        input.extend_from_slice(b"2026-12-06T02:16:07Z stdout X not a record\n");
        input.extend_from_slice(header(t2, Stream::Stdout, false).as_bytes());
        input.extend_from_slice(b"\n");
        // A line start that could still be a record's header is held until it is decided.
        input.extend_from_slice(b"2026-12-06T02:16:07Z std");
        let out = Origin {
            time: Some(t1),
            stream: Some(Stream::Stdout),
        };
        let err = |t| Origin {
            time: Some(t),
            stream: Some(Stream::Stderr),
        };
        for block in [1, 2, 7, 63, 64, 65, 4096] {
            let got = parse(&input, block);
            assert_eq!(
                got,
                vec![
                    (Origin::default(), b"an older tpcm's raw line\n".to_vec(), true),
                    (out, b"hello\n".to_vec(), true),
                    (err(t1), b"part one, ".to_vec(), false),
                    (err(t2), b"part two\n".to_vec(), true),
                    (
                        Origin::default(),
                        b"2026-12-06T02:16:07Z stdout X not a record\n".to_vec(),
                        true
                    ),
                    (
                        Origin {
                            time: Some(t2),
                            stream: Some(Stream::Stdout)
                        },
                        b"\n".to_vec(),
                        true
                    ),
                ],
                "block {block}"
            );
        }
    }

    #[test]
    fn a_header_round_trips_and_a_long_raw_line_is_not_held() {
        let t = UNIX_EPOCH + Duration::new(1_796_000_000, 5);
        let h = header(t, Stream::Stderr, true);
        assert_eq!(h, "2026-11-30T00:53:20.000000005Z stderr P ");
        assert_eq!(
            read_header(h.as_bytes()),
            HeaderRead::Record(
                Origin {
                    time: Some(t),
                    stream: Some(Stream::Stderr)
                },
                true,
                h.len()
            )
        );
        assert_eq!(read_header(b"2026-11-30T00:53:20Z std"), HeaderRead::Undecided);
        assert_eq!(read_header(b"2026-11-30T00:53:20Z\n"), HeaderRead::Raw);
        // A megabyte without a space or newline is handed on as it comes, not buffered.
        let mut p = Parser::default();
        let mut out = Collected::default();
        p.feed(&vec![b'x'; 1 << 20], &mut out).unwrap();
        assert_eq!(out.0.len(), 1);
        assert_eq!(out.0[0].1.len(), 1 << 20);
    }
}

//! Splits an agent's output file into lines as it grows. The file is read in chunks of a
//! fixed size, a bounded number per call, and every byte is looked at once: reading is
//! linear in the output's size, the work per call is bounded (a flood cannot hold a runtime
//! thread), and the memory held is one chunk plus at most one cut line, whatever the agent
//! prints (a flood, a line that never ends). Lines longer than the cap are cut, and say so.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How much is read from the file at once.
pub const CHUNK: usize = 64 * 1024;

/// One line of output, without its newline.
#[derive(Debug, PartialEq)]
pub struct Line {
    /// The line as text (invalid UTF-8 replaced), at most the cap's bytes of it.
    pub text: String,
    /// The line's full length in bytes when it was cut to the cap.
    pub cut_from: Option<u64>,
}

#[derive(Debug)]
pub struct OutputReader {
    file: Option<File>,
    /// The end of the last line handed out: where a reader taking over starts.
    consumed: u64,
    /// The next byte to read.
    read_to: u64,
    /// The current unfinished line's bytes so far, at most `max_line`.
    partial: Vec<u8>,
    /// Its length in the file, kept or not.
    partial_len: u64,
    chunk: Vec<u8>,
    max_line: usize,
    /// Nothing at or past this offset is read.
    limit: u64,
}

impl OutputReader {
    /// Reads from `offset` (a line's start) on; lines are cut to `max_line` bytes and
    /// nothing past `limit` is read.
    pub fn new(offset: u64, max_line: usize, limit: u64) -> Self {
        Self {
            file: None,
            consumed: offset,
            read_to: offset,
            partial: Vec::new(),
            partial_len: 0,
            chunk: Vec::new(),
            max_line: max_line.max(1),
            limit,
        }
    }

    /// The end of the last line handed out.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Whether reading stopped at the limit.
    pub fn at_limit(&self) -> bool {
        self.read_to >= self.limit
    }

    /// Reads up to `budget` more bytes of `path` (which may not exist yet) and appends the
    /// lines they complete to `lines`; returns how many bytes were read.
    pub fn read(&mut self, path: &Path, budget: usize, lines: &mut Vec<Line>) -> io::Result<usize> {
        if self.file.is_none() {
            match File::open(path) {
                Ok(file) => self.file = Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        if self.chunk.is_empty() {
            self.chunk = vec![0; CHUNK];
        }
        let mut total = 0;
        while total < budget && self.read_to < self.limit {
            let want = CHUNK
                .min(budget - total)
                .min((self.limit - self.read_to).try_into().unwrap_or(usize::MAX));
            let file = self.file.as_ref().expect("opened above");
            let n = file.read_at(&mut self.chunk[..want], self.read_to)?;
            if n == 0 {
                break;
            }
            let chunk = std::mem::take(&mut self.chunk);
            self.split(&chunk[..n], lines);
            self.chunk = chunk;
            self.read_to += n as u64;
            total += n;
            if n < want {
                break;
            }
        }
        Ok(total)
    }

    /// The last line when it has no newline (at the end of the output).
    pub fn finish(&mut self) -> Option<Line> {
        if self.partial_len == 0 {
            return None;
        }
        let line = self.take_partial();
        self.consumed = self.read_to;
        Some(line)
    }

    fn split(&mut self, bytes: &[u8], lines: &mut Vec<Line>) {
        let mut start = 0;
        while let Some(pos) = bytes[start..].iter().position(|b| *b == b'\n') {
            let piece = &bytes[start..start + pos];
            let line = if self.partial_len == 0 {
                self.consumed += piece.len() as u64;
                line_of(piece, piece.len() as u64, self.max_line)
            } else {
                self.keep(piece);
                self.take_partial()
            };
            // The newline.
            self.consumed += 1;
            lines.push(line);
            start += pos + 1;
        }
        self.keep(&bytes[start..]);
    }

    /// Adds to the unfinished line what fits under the cap; counts the rest.
    fn keep(&mut self, piece: &[u8]) {
        let room = self.max_line - self.partial.len();
        self.partial
            .extend_from_slice(&piece[..piece.len().min(room)]);
        self.partial_len += piece.len() as u64;
    }

    fn take_partial(&mut self) -> Line {
        let line = line_of(&self.partial, self.partial_len, self.max_line);
        self.consumed += self.partial_len;
        self.partial_len = 0;
        self.partial.clear();
        // A long line's buffer is given back rather than kept for the agent's lifetime.
        if self.partial.capacity() > CHUNK {
            self.partial = Vec::new();
        }
        line
    }
}

fn line_of(kept: &[u8], full_len: u64, max_line: usize) -> Line {
    let kept = &kept[..kept.len().min(max_line)];
    Line {
        text: String::from_utf8_lossy(kept).into_owned(),
        cut_from: (full_len > kept.len() as u64).then_some(full_len),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn lines_across_chunks_and_reads_come_out_whole_and_offsets_stay_on_line_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut file = File::create(&path).unwrap();
        let long = "x".repeat(CHUNK + 10);
        write!(file, "a\n{long}\nb").unwrap();
        let mut reader = OutputReader::new(0, 1 << 20, u64::MAX);
        let mut lines = Vec::new();
        // A budget below the file's size: two calls.
        let first = reader.read(&path, CHUNK, &mut lines).unwrap();
        assert_eq!(first, CHUNK);
        assert_eq!(texts(&lines), ["a"]);
        assert_eq!(reader.consumed(), 2);
        reader.read(&path, CHUNK, &mut lines).unwrap();
        assert_eq!(texts(&lines), ["a", long.as_str()]);
        assert_eq!(reader.consumed(), 2 + long.len() as u64 + 1);
        writeln!(file, "c").unwrap();
        reader.read(&path, CHUNK, &mut lines).unwrap();
        assert_eq!(texts(&lines), ["a", long.as_str(), "bc"]);
        assert!(reader.finish().is_none());
        // A second reader from the first one's offset continues at the next line.
        write!(file, "d").unwrap();
        let mut again = OutputReader::new(reader.consumed(), 1 << 20, u64::MAX);
        let mut rest = Vec::new();
        again.read(&path, usize::MAX, &mut rest).unwrap();
        assert!(rest.is_empty());
        assert_eq!(again.finish().unwrap().text, "d");
    }

    #[test]
    fn a_long_line_is_cut_and_says_how_long_it_was_and_the_limit_stops_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut bytes = vec![b'y'; 3 * CHUNK];
        bytes.extend_from_slice(b"\nshort\xff\x00\n");
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = OutputReader::new(0, 100, u64::MAX);
        let mut lines = Vec::new();
        reader.read(&path, usize::MAX, &mut lines).unwrap();
        assert_eq!(lines[0].text, "y".repeat(100));
        assert_eq!(lines[0].cut_from, Some(3 * CHUNK as u64));
        assert_eq!(lines[1].text, "short\u{fffd}\0");
        assert_eq!(lines[1].cut_from, None);
        assert!(reader.partial.capacity() <= CHUNK);
        let mut limited = OutputReader::new(0, 100, 10);
        let mut lines = Vec::new();
        assert_eq!(limited.read(&path, usize::MAX, &mut lines).unwrap(), 10);
        assert!(limited.at_limit() && lines.is_empty());
        let cut = limited.finish().unwrap();
        assert_eq!((cut.text.len(), cut.cut_from), (10, None));
    }
}

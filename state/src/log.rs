//! A container's output log: JSON lines like docker's json-file driver
//! (`{"stream":"stdout","time":"...","log":"text\n"}`), bounded in size by
//! rotation so a chatty container cannot fill the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{StateError, Timestamp};

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub stream: Stream,
    pub time: Timestamp,
    /// The text, with its newline if it had one. Output that is not UTF-8
    /// is stored with replacement characters, as docker does.
    pub log: String,
}

/// How much log to keep: the live file is rotated when it would pass
/// `max_size` bytes, and at most `max_files` files (live one included)
/// are kept. docker's defaults for json-file with rotation: 10 MB x 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    pub max_size: u64,
    pub max_files: u32,
}

impl LogLimits {
    /// The most files kept: each rotation renames every kept file, and
    /// reading the log opens them all, so the count is bounded (a record
    /// asking for more is held to this).
    pub const MAX_FILES: u32 = 100;
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_size: 10 * 1000 * 1000,
            max_files: 1,
        }
    }
}

/// A line longer than this is cut into several entries, so a program that
/// never prints a newline still gets logged (and bounded).
const MAX_LINE: usize = 16 * 1024;

/// Appends output to a log file, line by line, rotating it at its limit.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    limits: LogLimits,
    /// Incomplete last line of each stream, waiting for its newline.
    pending: [Vec<u8>; 2],
}

fn open_append(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| StateError::io(path, e))
}

/// Path of rotated file number `n` (1 = newest rotated).
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl LogWriter {
    pub fn open(path: impl Into<PathBuf>, limits: LogLimits) -> Result<Self, StateError> {
        let path = path.into();
        let file = open_append(&path)?;
        let size = file.metadata().map_err(|e| StateError::io(&path, e))?.len();
        Ok(LogWriter {
            path,
            file,
            size,
            limits: LogLimits {
                max_size: limits.max_size.max(1),
                max_files: limits.max_files.clamp(1, LogLimits::MAX_FILES),
            },
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Add output from `stream`; complete lines are written at once.
    pub fn write(&mut self, stream: Stream, mut bytes: &[u8]) -> Result<(), StateError> {
        let index = stream as usize;
        while !bytes.is_empty() {
            let room = MAX_LINE - self.pending[index].len();
            let take = match bytes.iter().take(room).position(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None => room.min(bytes.len()),
            };
            self.pending[index].extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending[index].ends_with(b"\n") || self.pending[index].len() >= MAX_LINE {
                let line = std::mem::take(&mut self.pending[index]);
                self.append(stream, &line)?;
            }
        }
        Ok(())
    }

    /// Write out incomplete lines (at the end of the container's life).
    pub fn flush(&mut self) -> Result<(), StateError> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.pending[stream as usize]);
            if !line.is_empty() {
                self.append(stream, &line)?;
            }
        }
        Ok(())
    }

    fn append(&mut self, stream: Stream, line: &[u8]) -> Result<(), StateError> {
        let entry = LogEntry {
            stream,
            time: Timestamp::now(),
            log: String::from_utf8_lossy(line).into_owned(),
        };
        let mut json = serde_json::to_vec(&entry).expect("log entries always serialize");
        json.push(b'\n');
        if self.size > 0 && self.size + json.len() as u64 > self.limits.max_size {
            self.rotate()?;
        }
        self.file
            .write_all(&json)
            .map_err(|e| StateError::io(&self.path, e))?;
        self.size += json.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), StateError> {
        let keep = self.limits.max_files - 1;
        if keep == 0 {
            self.file
                .set_len(0)
                .map_err(|e| StateError::io(&self.path, e))?;
        } else {
            for n in (1..keep).rev() {
                let _ = fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            let first = rotated(&self.path, 1);
            fs::rename(&self.path, &first).map_err(|e| StateError::io(&first, e))?;
            self.file = open_append(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Read a log file from byte `offset` on; returns the complete entries and
/// the offset just past the last complete line (for following a growing
/// log). A missing file reads as empty.
pub fn read_log_from(path: &Path, offset: u64) -> Result<(Vec<LogEntry>, u64), StateError> {
    use std::io::{Seek, SeekFrom};
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(StateError::io(path, e)),
    };
    let mut reader = BufReader::new(file);
    reader
        .seek(SeekFrom::Start(offset))
        .map_err(|e| StateError::io(path, e))?;
    let mut entries = Vec::new();
    let mut position = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| StateError::io(path, e))?;
        if n == 0 || !line.ends_with(b"\n") {
            break;
        }
        position += n as u64;
        // A line cut by a crash mid-write is skipped, not fatal.
        if let Ok(entry) = serde_json::from_slice(&line) {
            entries.push(entry);
        }
    }
    Ok((entries, position))
}

/// Every entry still kept, oldest first (rotated files, then the live one).
pub fn read_log(path: &Path, limits: LogLimits) -> Result<Vec<LogEntry>, StateError> {
    let mut entries = Vec::new();
    for n in (1..limits.max_files.max(1)).rev() {
        entries.extend(read_log_from(&rotated(path, n), 0)?.0);
    }
    entries.extend(read_log_from(path, 0)?.0);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(entries: &[LogEntry]) -> Vec<(Stream, &str)> {
        entries.iter().map(|e| (e.stream, e.log.as_str())).collect()
    }

    #[test]
    fn lines_are_split_per_stream_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let mut log = LogWriter::open(&path, LogLimits::default()).unwrap();
        log.write(Stream::Stdout, b"one\ntw").unwrap();
        log.write(Stream::Stderr, b"err\n").unwrap();
        log.write(Stream::Stdout, b"o\nthree").unwrap();
        assert_eq!(
            texts(&read_log(&path, LogLimits::default()).unwrap()),
            [
                (Stream::Stdout, "one\n"),
                (Stream::Stderr, "err\n"),
                (Stream::Stdout, "two\n")
            ]
        );
        log.flush().unwrap();
        let all = read_log(&path, LogLimits::default()).unwrap();
        assert_eq!(all.last().unwrap().log, "three");
    }

    #[test]
    fn size_stays_bounded_with_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let limits = LogLimits {
            max_size: 4096,
            max_files: 1,
        };
        let mut log = LogWriter::open(&path, limits).unwrap();
        for i in 0..1000 {
            log.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(fs::metadata(&path).unwrap().len() <= 4096);
        let entries = read_log(&path, limits).unwrap();
        assert_eq!(entries.last().unwrap().log, "line 999\n");
        assert!(entries.len() < 1000);
    }

    #[test]
    fn rotation_keeps_the_newest_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let limits = LogLimits {
            max_size: 1000,
            max_files: 3,
        };
        let mut log = LogWriter::open(&path, limits).unwrap();
        for i in 0..200 {
            log.write(Stream::Stdout, format!("{i}\n").as_bytes())
                .unwrap();
        }
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        let entries = read_log(&path, limits).unwrap();
        let numbers: Vec<u32> = entries
            .iter()
            .map(|e| e.log.trim().parse().unwrap())
            .collect();
        assert_eq!(*numbers.last().unwrap(), 199);
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, no gap"
        );
    }

    #[test]
    fn endless_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let mut log = LogWriter::open(&path, LogLimits::default()).unwrap();
        log.write(Stream::Stdout, &vec![b'x'; MAX_LINE * 2 + 5])
            .unwrap();
        assert_eq!(read_log(&path, LogLimits::default()).unwrap().len(), 2);
    }

    #[test]
    fn following_reads_only_new_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let (none, offset) = read_log_from(&path, 0).unwrap();
        assert!(none.is_empty());
        let mut log = LogWriter::open(&path, LogLimits::default()).unwrap();
        log.write(Stream::Stdout, b"a\n").unwrap();
        let (first, offset) = read_log_from(&path, offset).unwrap();
        assert_eq!(texts(&first), [(Stream::Stdout, "a\n")]);
        log.write(Stream::Stdout, b"b\n").unwrap();
        let (second, _) = read_log_from(&path, offset).unwrap();
        assert_eq!(texts(&second), [(Stream::Stdout, "b\n")]);
    }

    #[test]
    fn a_huge_max_files_is_held_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let limits = LogLimits {
            max_size: 64,
            max_files: 100_000_000,
        };
        let start = std::time::Instant::now();
        let mut writer = LogWriter::open(&path, limits).unwrap();
        for i in 0..500 {
            writer
                .write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(writer);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(files <= LogLimits::MAX_FILES as usize, "{files} files");
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }
}

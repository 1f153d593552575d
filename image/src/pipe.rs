//! An in-process pipe: one thread writes an archive while another reads
//! it, so a tar that is generated (a commit's diff, a migrated layer) is
//! hashed and extracted without being staged on disk twice.

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};

use crate::ImageError;

/// Bytes per message between `commit`'s archive writer and its import.
const CHUNK: usize = 256 * 1024;
/// Messages in flight: bounds `commit`'s memory to a few MiB.
const PIPE_CHUNKS: usize = 8;

enum Chunk {
    Data(Vec<u8>),
    /// The archive was written completely.
    End,
}

/// The writing end of an in-process pipe. A channel rather than pipe(2):
/// no descriptors, and no SIGPIPE when the reading side gives up.
struct ChunkWriter {
    tx: SyncSender<Chunk>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(Chunk::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader stopped reading"))
    }

    /// Flush and mark the end: only then does the reader see end of file.
    fn end(mut self) -> Result<(), ImageError> {
        let archive_err = |source: io::Error| ImageError::Archive {
            origin: "<archive being generated>".to_owned(),
            source,
        };
        self.send().map_err(archive_err)?;
        self.tx.send(Chunk::End).map_err(|_| {
            archive_err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the reader stopped reading",
            ))
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The reading end: end of file only after [`Chunk::End`], an error if the
/// writer went away without it (so a failed archive is never imported as a
/// truncated one).
struct ChunkReader {
    rx: Receiver<Chunk>,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Data(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Chunk::End) => self.ended = true,
                Err(_) => {
                    return Err(io::Error::other(
                        "writing the archive of the container's layers failed",
                    ))
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Run `write` in a thread, feeding what it writes to `read` in this one.
///
/// The reader sees end of file only after `write` succeeded, and an error
/// if it failed, so a failed archive is never taken for a short one. When
/// `read` gives up first, the writer stops with a broken pipe and the
/// reader's error is returned.
pub(crate) fn pipe_through<T>(
    write: impl FnOnce(&mut dyn Write) -> Result<(), ImageError> + Send,
    read: impl FnOnce(&mut dyn Read) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    let (tx, rx) = mpsc::sync_channel(PIPE_CHUNKS);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut out = ChunkWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            write(&mut out).and_then(|()| out.end())
        });
        let mut reader = ChunkReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
            ended: false,
        };
        let result = read(&mut reader);
        // Dropping the reader stops a writer that is still going.
        drop(reader);
        let written = match writer.join() {
            Ok(written) => written,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (result, written) {
            (Ok(value), Ok(())) => Ok(value),
            // The end marker is sent last, after which nothing fails.
            (Ok(_), Err(error)) => Err(error),
            (Err(error), Ok(())) => Err(error),
            // The writer stopped because the reader had given up.
            (Err(error), Err(ImageError::Archive { source, .. }))
                if source.kind() == io::ErrorKind::BrokenPipe =>
            {
                Err(error)
            }
            // The reader failed because the writer did: its error says why.
            (Err(_), Err(error)) => Err(error),
        }
    })
}

//! Recording a layer's tar-split metadata while it is extracted.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{FILE, REPLACED_DIR, SEGMENT, SEGMENT_LIMIT, TAR_SPLIT_FILE, ZSTD_LEVEL};
use crate::ImageError;

/// The content of the regular file being read.
struct CurrentFile {
    path: Vec<u8>,
    length: u64,
}

struct Recording {
    out: Option<zstd::stream::write::Encoder<'static, BufWriter<File>>>,
    /// The metadata file, for errors.
    path: PathBuf,
    /// The layer's `diff/` directory.
    layer: PathBuf,
    /// Where replaced files are linked to (made when first needed).
    replaced: PathBuf,
    /// Verbatim bytes not written out yet.
    segment: Vec<u8>,
    current: Option<CurrentFile>,
    /// How many `F` records were written.
    files: u64,
    /// Path in the layer -> number of the file whose content is there now.
    on_disk: BTreeMap<Vec<u8>, u64>,
    /// The first error writing the metadata.
    error: Option<io::Error>,
}

impl Recording {
    fn write_record(&mut self, tag: u8, length: u64, path: &[u8]) -> io::Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("tar-split metadata already finished"))?;
        out.write_all(&[tag])?;
        out.write_all(&length.to_le_bytes())?;
        if tag == FILE {
            let n = u32::try_from(path.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path too long"))?;
            out.write_all(&n.to_le_bytes())?;
            out.write_all(path)?;
        }
        Ok(())
    }

    fn flush_segment(&mut self) -> io::Result<()> {
        if self.segment.is_empty() {
            return Ok(());
        }
        let segment = std::mem::take(&mut self.segment);
        self.write_record(SEGMENT, segment.len() as u64, &[])?;
        if let Some(out) = self.out.as_mut() {
            out.write_all(&segment)?;
        }
        self.segment = segment;
        self.segment.clear();
        Ok(())
    }

    fn keep_error(&mut self, e: io::Error) -> io::Error {
        let kind = e.kind();
        if self.error.is_none() {
            self.error = Some(e);
        }
        io::Error::new(kind, "writing the tar-split metadata failed")
    }

    /// Hard-link the file numbered `number` (at `path` in the layer) into
    /// `replaced/` before it is removed from the layer.
    fn keep_replaced(&mut self, path: &[u8], number: u64) -> Result<(), ImageError> {
        crate::store::mkdir_private(&self.replaced)?;
        let from = self.layer.join(OsStr::from_bytes(path));
        let to = self.replaced.join(number.to_string());
        // link(2) does not follow a symlink in the last component; the
        // parents are directories of this extraction's private tree.
        fs::hard_link(&from, &to).map_err(|e| ImageError::io("keep replaced file", &from, e))
    }
}

/// `a/b/c` of the components `[a, b, c]`.
fn joined(comps: &[OsString]) -> Vec<u8> {
    let mut path = Vec::new();
    for (i, comp) in comps.iter().enumerate() {
        if i > 0 {
            path.push(b'/');
        }
        path.extend_from_slice(comp.as_bytes());
    }
    path
}

/// Records the tar-split metadata of one layer while it is extracted.
///
/// Cloning gives another handle to the same recording: the extractor tells
/// it where file contents start and end and what it removes, while
/// [`TarSplitRecorder::reader`] sees the bytes.
#[derive(Clone)]
pub(crate) struct TarSplitRecorder(Rc<RefCell<Recording>>);

impl TarSplitRecorder {
    /// Record into `dir/`[`TAR_SPLIT_FILE`], for a layer extracted into
    /// `layer` (replaced files go to `dir/`[`REPLACED_DIR`]).
    pub(crate) fn create(dir: &Path, layer: &Path) -> Result<Self, ImageError> {
        let path = dir.join(TAR_SPLIT_FILE);
        let file = crate::ingest::create_file(&path)?;
        let out =
            zstd::stream::write::Encoder::new(BufWriter::with_capacity(64 << 10, file), ZSTD_LEVEL)
                .map_err(|e| ImageError::io("write", &path, e))?;
        Ok(TarSplitRecorder(Rc::new(RefCell::new(Recording {
            out: Some(out),
            path,
            layer: layer.to_owned(),
            replaced: dir.join(REPLACED_DIR),
            segment: Vec::with_capacity(SEGMENT_LIMIT),
            current: None,
            files: 0,
            on_disk: BTreeMap::new(),
            error: None,
        }))))
    }

    /// A reader of `inner` that records what passes through it.
    pub(crate) fn reader<'a>(&self, inner: &'a mut dyn Read) -> RecordingReader<'a> {
        RecordingReader {
            inner,
            recording: self.0.clone(),
        }
    }

    /// The next bytes read are the content of the regular file `comps`
    /// (relative to the layer root), until [`TarSplitRecorder::end_file`].
    pub(crate) fn begin_file(&self, comps: &[OsString]) {
        self.0.borrow_mut().current = Some(CurrentFile {
            path: joined(comps),
            length: 0,
        });
    }

    /// The file's content has been read to its end.
    pub(crate) fn end_file(&self) -> Result<(), ImageError> {
        let mut recording = self.0.borrow_mut();
        let Some(file) = recording.current.take() else {
            return Ok(());
        };
        if file.length == 0 {
            // Nothing to give back: the headers say it all.
            return Ok(());
        }
        let written = recording
            .flush_segment()
            .and_then(|()| recording.write_record(FILE, file.length, &file.path));
        if let Err(e) = written {
            let path = recording.path.clone();
            return Err(ImageError::io("write", &path, e));
        }
        let number = recording.files;
        recording.files += 1;
        recording.on_disk.insert(file.path, number);
        Ok(())
    }

    /// The extractor is about to remove the entry `comps` (a directory
    /// with everything below it when `is_dir`): keep the content of the
    /// recorded files there.
    pub(crate) fn removing(&self, comps: &[OsString], is_dir: bool) -> Result<(), ImageError> {
        let mut recording = self.0.borrow_mut();
        if recording.on_disk.is_empty() {
            return Ok(());
        }
        let mut path = joined(comps);
        let mut affected: Vec<(Vec<u8>, u64)> = Vec::new();
        if let Some(number) = recording.on_disk.remove(&path) {
            affected.push((path.clone(), number));
        }
        if is_dir {
            path.push(b'/');
            // The paths below it are one run of the sorted map.
            let below: Vec<Vec<u8>> = recording
                .on_disk
                .range(path.clone()..)
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(&path))
                .cloned()
                .collect();
            for key in below {
                if let Some(number) = recording.on_disk.remove(&key) {
                    affected.push((key, number));
                }
            }
        }
        for (path, number) in affected {
            recording.keep_replaced(&path, number)?;
        }
        Ok(())
    }

    /// Write out what is left and close the metadata file (made durable by
    /// the caller's syncfs).
    pub(crate) fn finish(&self) -> Result<(), ImageError> {
        let mut recording = self.0.borrow_mut();
        if let Some(e) = recording.error.take() {
            let path = recording.path.clone();
            return Err(ImageError::io("write", &path, e));
        }
        let path = recording.path.clone();
        recording
            .flush_segment()
            .map_err(|e| ImageError::io("write", &path, e))?;
        if let Some(out) = recording.out.take() {
            out.finish()
                .and_then(|buffered| buffered.into_inner().map_err(|e| e.into_error()))
                .map_err(|e| ImageError::io("write", &path, e))?;
        }
        Ok(())
    }

    /// The error that made a read fail, if writing the metadata did.
    pub(crate) fn take_error(&self) -> Option<ImageError> {
        let mut recording = self.0.borrow_mut();
        let path = recording.path.clone();
        recording
            .error
            .take()
            .map(|e| ImageError::io("write", &path, e))
    }
}

/// The stream being extracted, recorded on its way to the tar reader.
pub(crate) struct RecordingReader<'a> {
    inner: &'a mut dyn Read,
    recording: Rc<RefCell<Recording>>,
}

impl Read for RecordingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut recording = self.recording.borrow_mut();
        if let Some(file) = recording.current.as_mut() {
            file.length += n as u64;
            return Ok(n);
        }
        recording.segment.extend_from_slice(&buf[..n]);
        if recording.segment.len() >= SEGMENT_LIMIT {
            if let Err(e) = recording.flush_segment() {
                return Err(recording.keep_error(e));
            }
        }
        Ok(n)
    }
}

//! An image of the store as an [`ImageSource`]: what saving to an archive
//! (or pushing) reads.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use oci_spec::image::{Descriptor, ImageManifest};

use crate::digest::{sha256_hex_of, HashingReader};
use crate::pipe::pipe_through;
use crate::store::{unique_suffix, LayerRecord};
use crate::tar_split::TarSplitReader;
use crate::{write_diff_tar, Image, ImageError, ImageSource, ImageStore};

/// An image of an [`ImageStore`], readable blob by blob.
#[derive(Debug)]
pub struct StoreSource {
    store: ImageStore,
    image: Image,
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
    layers: Vec<LayerRecord>,
}

impl StoreSource {
    /// The image it reads.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The record of the layer whose blob is `digest`.
    pub(crate) fn layer_of_blob(&self, digest: &str) -> Option<&LayerRecord> {
        self.layers.iter().find(|l| l.blob_digest == digest)
    }

    pub(crate) fn layer_records(&self) -> &[LayerRecord] {
        &self.layers
    }

    pub(crate) fn manifest_digest(&self) -> &str {
        &self.image.manifest_digest
    }
}

impl ImageStore {
    /// The image `image` as a source, reading the store's own blobs.
    pub fn source(&self, image: &Image) -> Result<StoreSource, ImageError> {
        let (manifest, manifest_bytes) = self.read_manifest(image)?;
        let layers = image
            .layers
            .iter()
            .map(|l| self.read_layer_record(&l.chain_id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StoreSource {
            store: self.clone(),
            image: image.clone(),
            manifest,
            manifest_bytes,
            layers,
        })
    }

    /// Make the missing blob of `layer` again from its directory: layers
    /// the store generated itself (busybox, commits, migrated images) give
    /// the same bytes again. Anything else is [`ImageError::BlobMissing`].
    fn regenerate_blob(&self, layer: &LayerRecord, image: &Image) -> Result<(), ImageError> {
        let missing = || ImageError::BlobMissing {
            digest: layer.blob_digest.clone(),
            image: image.id.to_string(),
        };
        if layer.blob_digest != layer.diff_id {
            // Compressed as received: the compressed bytes are gone.
            return Err(missing());
        }
        let dir = self.layer_dir(&layer.chain_id)?.join("diff");
        let tmp = self.tmp_dir().join(unique_suffix());
        let written = self.write_generated_blob(&dir, &tmp);
        let result = match written {
            Ok((hex, _)) if format!("sha256:{hex}") == layer.blob_digest => {
                let target = self.blob_path(&layer.blob_digest)?;
                fs::rename(&tmp, &target).map_err(|e| ImageError::io("rename", &tmp, e))
            }
            Ok(_) => Err(missing()),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

impl ImageStore {
    /// Write the layer tar of the directory `dir` (see [`write_diff_tar`])
    /// to the new file `tmp`; returns its sha256 hex and size.
    pub(crate) fn write_generated_blob(
        &self,
        dir: &Path,
        tmp: &Path,
    ) -> Result<(String, u64), ImageError> {
        pipe_through(
            |out| write_diff_tar(dir, out),
            |reader| {
                let file = File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(tmp)
                    .map_err(|e| ImageError::io("create", tmp, e))?;
                let mut out = BufWriter::new(file);
                let mut hashing = HashingReader::new(reader);
                io::copy(&mut hashing, &mut out).map_err(|e| ImageError::io("write", tmp, e))?;
                let file = out
                    .into_inner()
                    .map_err(|e| ImageError::io("write", tmp, e.into_error()))?;
                file.sync_all()
                    .map_err(|e| ImageError::io("fsync", tmp, e))?;
                Ok(hashing.finish())
            },
        )
    }
}

impl ImageSource for StoreSource {
    fn describe(&self) -> String {
        match self.image.tags.first() {
            Some(tag) => format!("{} ({})", tag.familiar(), self.image.id.short()),
            None => self.image.id.to_string(),
        }
    }

    fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }

    fn manifest_bytes(&self) -> Option<&[u8]> {
        Some(&self.manifest_bytes)
    }

    /// A layer's uncompressed blob is made again from its unpacked files
    /// and tar-split metadata, and checked against its diff_id as it is
    /// read (a changed layer is an error at the end of the stream). A
    /// store written by an older berth may still have the blob itself,
    /// which is read then.
    fn open_blob(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send + '_>, ImageError> {
        let digest = descriptor.digest().to_string();
        sha256_hex_of(&digest, &self.describe())?;
        let path = self.store.blob_path(&digest)?;
        match File::open(&path) {
            Ok(file) => return Ok(Box::new(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("open", &path, e)),
        }
        let layer = self
            .layer_of_blob(&digest)
            .ok_or_else(|| ImageError::BlobMissing {
                digest: digest.clone(),
                image: self.image.id.to_string(),
            })?;
        if layer.blob_digest == layer.diff_id {
            let dir = self.store.layer_dir(&layer.chain_id)?;
            if let Some(reader) = TarSplitReader::open(&dir, &layer.diff_id)? {
                return Ok(Box::new(reader));
            }
        }
        {
            let _lock = self.store.lock()?;
            if !path.exists() {
                self.store.regenerate_blob(layer, &self.image)?;
            }
        }
        let file = File::open(&path).map_err(|e| ImageError::io("open", &path, e))?;
        Ok(Box::new(file))
    }
}

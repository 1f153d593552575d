//! Where an image comes from: the one interface between the store and the
//! places images are read from (a registry, a docker or OCI archive, an OCI
//! layout directory, the store itself when saving).
//!
//! A source is already resolved to one platform: it has exactly one
//! manifest, whose config and layers it can open by descriptor. The store
//! verifies every digest and size itself while it reads, so a source does
//! not have to be trusted.

use std::io::Read;

use oci_spec::image::{Descriptor, ImageManifest};

use crate::ImageError;

/// One single-platform image that can be read blob by blob.
///
/// `open_blob` may be called from several threads at once (the store reads
/// layers in parallel), and more than once for the same blob.
pub trait ImageSource: Sync {
    /// A short description for errors and progress lines, e.g. the archive
    /// path or `registry.example:5000/app:1.0`.
    fn describe(&self) -> String;

    /// The image manifest. Docker schema 2 manifests are accepted as they
    /// are: their JSON has the OCI manifest's shape; only media types
    /// differ. For a docker archive, which has no manifest, the source
    /// makes one whose layer descriptors carry the uncompressed layer
    /// digests (the config's `diff_ids`) and tar media types.
    fn manifest(&self) -> &ImageManifest;

    /// The manifest's bytes exactly as the source has them, when it has
    /// them (a registry or an OCI layout); `None` when the source made the
    /// manifest up. The store keeps these bytes so the image's digest stays
    /// the same when it is saved or pushed again.
    fn manifest_bytes(&self) -> Option<&[u8]>;

    /// A reader of the blob that `descriptor` (the manifest's config or one
    /// of its layers) names, as stored (possibly compressed). The caller
    /// checks digest and size; a source may still stop early when the
    /// stream is longer than `descriptor.size()`.
    fn open_blob(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send + '_>, ImageError>;
}

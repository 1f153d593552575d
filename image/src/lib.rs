//! berth's image store: layered, content-addressed images, read from
//! registries and archives and written back out, with safe extraction.
//!
//! An [`ImageStore`] lives in one directory (by default
//! `/var/lib/berth/images`). Images come in through one door,
//! [`ImageStore::add_image`], which reads an [`ImageSource`] (a registry,
//! a docker or OCI archive from [`open_archive`], the store itself),
//! verifies every digest and size, and unpacks each layer once into a
//! directory shared by all images that have it; an [`Image`]'s
//! [`lower_dirs`](Image::lower_dirs) are its overlay lowerdirs. Layer tars
//! are extracted by [`extract`]'s rules (no `..`, no writing through links,
//! hard links only inside the layer), with whiteouts turned into overlayfs
//! whiteouts. Images are named by [`Reference`]s in docker's grammar and
//! found with [`ImageStore::resolve`]. [`ImageStore::commit`] adds a
//! container's upper dir as a new layer; [`ImageStore::save_docker_archive`]
//! and [`ImageStore::save_oci_archive`] write images out;
//! [`ImageStore::gc`] removes what no tag or container keeps.
//!
//! ```
//! use berth_image::{ImageStore, Reference};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = ImageStore::open(dir.path().join("images"))?;
//!
//! // A tiny root filesystem with one file.
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut header = tar::Header::new_gnu();
//! header.set_size(6);
//! header.set_mode(0o644);
//! tar.append_data(&mut header, "etc/motd", &b"hello\n"[..])?;
//! let archive = tar.into_inner()?;
//!
//! let name = Reference::parse("hello:1.0")?;
//! assert_eq!(name.to_string(), "docker.io/library/hello:1.0");
//! let image = store.import_reader(&mut &archive[..], "motd.tar", Some(&name), None)?;
//! let top = &image.lower_dirs()[0];
//! assert_eq!(std::fs::read(top.join("etc/motd"))?, b"hello\n");
//! assert_eq!(store.resolve("hello:1.0")?.id, image.id);
//!
//! // Saved as a docker archive and loaded into another store.
//! let mut saved = Vec::new();
//! store.save_docker_archive(&[(&image, &[name.clone()])], &mut saved)?;
//! let other = ImageStore::open(dir.path().join("other"))?;
//! let loaded = other.load(&mut &saved[..], &berth_image::TargetPlatform::host(), &|_| {})?;
//! assert_eq!(loaded[0].0.id, image.id);
//!
//! store.untag(&name)?;
//! let removed = store.gc(&|_| false)?;
//! assert_eq!(removed.images, vec![image.id]);
//! # Ok(())
//! # }
//! ```

mod archive;
pub mod auth;
mod busybox;
mod compression;
mod config_change;
mod digest;
mod error;
mod extract;
mod formats;
mod ingest;
mod migrate;
mod pipe;
mod reference;
pub mod registry;
mod source;
mod store;
mod store_source;
mod tar_split;

pub use archive::{
    write_diff_tar, write_diff_tar_as, write_layer_tar, write_merged_tar, write_merged_tar_as,
};
pub use auth::{Credentials, CredentialsError, Login};
pub use busybox::{find_static_busybox, write_busybox_tar};
pub use compression::Compression;
pub use config_change::ConfigChange;
pub use digest::ImageId;
pub use error::ImageError;
pub use extract::{extract, extract_diff};
pub use formats::{open_archive, ArchiveImage, ArchiveImages, ANNOTATION_REF_NAME};
pub use ingest::{CommitOptions, Progress};
pub use reference::{Reference, DEFAULT_REGISTRY, DEFAULT_TAG};
pub use registry::{PullOptions, RegistryError, RegistryReference, RegistrySource, TargetPlatform};
pub use source::ImageSource;
pub use store::{Image, ImageStore, Layer, Removed};
pub use store_source::StoreSource;

#[cfg(test)]
mod archive_tests;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tar_split_tests;
#[cfg(test)]
mod tests;

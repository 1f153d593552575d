//! berth's image store: named, read-only root filesystem layers imported
//! from tar archives, with safe extraction.
//!
//! An [`ImageStore`] lives in one directory (by default
//! `/var/lib/berth/images`). [`ImageStore::import`] extracts a `.tar` or
//! `.tar.gz` archive with [`extract`], which refuses entries that would land
//! outside the layer (`..`, writes through symlinks, hard links out of the
//! layer) and never follows a link the archive created. Each [`Image`]'s
//! [`rootfs`](Image::rootfs) is meant to be an overlay lowerdir.
//! [`ImageStore::ensure_busybox`] builds the default image from the host's
//! static busybox. [`ImageStore::commit`] turns a container's overlay
//! layers into a new image and [`ImageStore::save`] writes an image back out
//! as a tar ([`write_merged_tar`], [`write_layer_tar`]), both walking the
//! trees by file descriptor without following any symlink.
//!
//! ```
//! use berth_image::{ImageError, ImageStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = ImageStore::open(dir.path().join("images"))?;
//!
//! // A tiny archive with one file.
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut header = tar::Header::new_gnu();
//! header.set_size(6);
//! header.set_mode(0o644);
//! tar.append_data(&mut header, "etc/motd", &b"hello\n"[..])?;
//! let archive = tar.into_inner()?;
//!
//! let image = store.import_reader(&archive[..], "hello:1.0")?;
//! assert_eq!(std::fs::read(image.rootfs.join("etc/motd"))?, b"hello\n");
//! assert_eq!(store.list()?.len(), 1);
//!
//! store.remove("hello:1.0")?;
//! assert!(matches!(store.get("hello:1.0"), Err(ImageError::NotFound { .. })));
//! # Ok(())
//! # }
//! ```

mod archive;
pub mod auth;
mod busybox;
mod error;
mod extract;
mod name;
pub mod registry;
mod source;
mod store;

pub use archive::{write_layer_tar, write_merged_tar};
pub use auth::{Credentials, CredentialsError, Login};
pub use busybox::{find_static_busybox, write_busybox_tar};
pub use error::ImageError;
pub use extract::extract;
pub use name::validate_image_name;
pub use registry::{PullOptions, RegistryError, RegistryReference, RegistrySource};
pub use source::ImageSource;
pub use store::{Image, ImageConfig, ImageStore};

#[cfg(test)]
mod archive_tests;
#[cfg(test)]
mod tests;

//! Converting a store of the previous format, in place, when it is opened.
//!
//! The previous format kept one flattened layer per name:
//! `names/<name>.json` (`{"name", "id", "size", "created", "config":
//! {"cmd", "env", "workdir"}}`) and `layers/<id>/rootfs/`. Each name
//! becomes a one-layer image tagged with that name. The layer's files are
//! moved, not copied, and `layers/<id>/rootfs` is left as a symlink to the
//! new layer directory, so containers created before (whose overlay
//! lowerdir names that path) keep working; the old id is kept as a
//! previous id of the image, so lookups by it still find the image.
//!
//! Every step is idempotent and ordered so that a process killed anywhere
//! leaves a store that the next open finishes converting:
//!
//! 1. the layer tar is generated from `rootfs/` and kept as a blob (its
//!    digest is the layer's diff_id);
//! 2. `layers/<diff hex>.migrating/` gets the layer record, then `rootfs/`
//!    is renamed into it as `diff/`, then it is renamed to
//!    `layers/<diff hex>`; then the `rootfs` symlink is made;
//! 3. config, manifest and image record are written, the name is tagged,
//!    and `names/<name>.json` is removed last.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    ConfigBuilder, Descriptor, HistoryBuilder, ImageConfiguration, ImageManifestBuilder, MediaType,
    RootFs,
};
use serde::Deserialize;

use crate::digest::sha256_hex;
use crate::extract::remove_tree;
use crate::ingest::{host_architecture, oci_digest};
use crate::reference::is_full_hex_id;
use crate::store::{
    fsync_dir, link_name, read_json, to_json, tree_bytes, unique_suffix, write_atomic, LayerRecord,
};
use crate::{ImageError, ImageId, ImageStore, Reference};

const MIGRATING_SUFFIX: &str = ".migrating";

#[derive(Debug, Deserialize)]
struct OldNameRecord {
    name: String,
    id: String,
    #[serde(default)]
    created: u64,
    #[serde(default)]
    config: OldConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OldConfig {
    cmd: Vec<String>,
    env: Vec<String>,
    workdir: Option<String>,
}

/// A `layers/<old id>` directory left as an alias: its `rootfs` is a
/// symlink into a converted layer.
pub(crate) fn is_legacy_alias(path: &Path) -> bool {
    fs::symlink_metadata(path.join("rootfs")).is_ok_and(|m| m.file_type().is_symlink())
}

/// A `layers/` entry of the previous format not converted yet, or one
/// being converted.
pub(crate) fn is_legacy_layer(path: &Path) -> bool {
    path.to_string_lossy().ends_with(MIGRATING_SUFFIX)
        || fs::symlink_metadata(path.join("rootfs")).is_ok_and(|m| m.is_dir())
}

impl ImageStore {
    fn names_dir(&self) -> PathBuf {
        self.root().join("names")
    }

    /// Convert what the previous format left, if anything.
    pub(crate) fn migrate(&self) -> Result<(), ImageError> {
        let names_dir = self.names_dir();
        if !names_dir.is_dir() {
            return Ok(());
        }
        let _lock = self.lock()?;
        self.finish_migrating_dirs()?;
        let entries = fs::read_dir(&names_dir)
            .map_err(|e| ImageError::io("read directory", &names_dir, e))?;
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::io("read directory", &names_dir, e))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json")
                && !entry.file_name().to_string_lossy().starts_with('.')
            {
                records.push(path);
            }
        }
        records.sort();
        for path in records {
            let record: OldNameRecord = read_json(&path)?;
            self.migrate_name(&record)?;
            fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e))?;
            fsync_dir(&names_dir)?;
        }
        // Only temp files of killed writers can be left; then the directory
        // goes, and with it the reason to look again.
        remove_tree(&names_dir)?;
        Ok(())
    }

    /// Step 2 interrupted: a `.migrating` directory with its `diff/` is
    /// complete; one without it never got the files (they are still in
    /// `rootfs/`).
    fn finish_migrating_dirs(&self) -> Result<(), ImageError> {
        let layers_dir = self.layers_dir();
        let entries = fs::read_dir(&layers_dir)
            .map_err(|e| ImageError::io("read directory", &layers_dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(MIGRATING_SUFFIX) else {
                continue;
            };
            let path = entry.path();
            let target = layers_dir.join(hex);
            if path.join("diff").is_dir() && !target.exists() {
                fs::rename(&path, &target).map_err(|e| ImageError::io("rename", &path, e))?;
            } else {
                remove_tree(&path)?;
            }
        }
        fsync_dir(&layers_dir)
    }

    fn migrate_name(&self, old: &OldNameRecord) -> Result<(), ImageError> {
        if !is_full_hex_id(&old.id) {
            return Err(ImageError::InvalidImage {
                origin: format!("image {:?} of the previous store format", old.name),
                reason: format!("bad layer id {:?}", old.id),
            });
        }
        let old_dir = self.layers_dir().join(&old.id);
        let rootfs = old_dir.join("rootfs");
        let meta = match fs::symlink_metadata(&rootfs) {
            Ok(meta) => meta,
            // Its layer was lost before: there is nothing to keep.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io("stat", &rootfs, e)),
        };
        let diff_id = if meta.file_type().is_symlink() {
            // Converted already: `rootfs -> ../<hex>/diff`.
            let target =
                fs::read_link(&rootfs).map_err(|e| ImageError::io("read link", &rootfs, e))?;
            let hex = target
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|hex| is_full_hex_id(hex))
                .ok_or_else(|| ImageError::InvalidImage {
                    origin: rootfs.display().to_string(),
                    reason: format!("unexpected link target {}", target.display()),
                })?;
            format!("sha256:{hex}")
        } else {
            self.move_old_layer(&old_dir)?
        };
        let record = self.read_layer_record(&diff_id)?;
        self.ensure_link(&record)?;
        self.write_migrated_image(old, &record)
    }

    /// Steps 1 and 2 for one old layer directory; returns the diff_id.
    fn move_old_layer(&self, old_dir: &Path) -> Result<String, ImageError> {
        let rootfs = old_dir.join("rootfs");
        let tmp = self.tmp_dir().join(unique_suffix());
        let (hex, diff_size) = match self.write_generated_blob(&rootfs, &tmp) {
            Ok(written) => written,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let blob = self.blobs_dir().join(&hex);
        fs::rename(&tmp, &blob).map_err(|e| ImageError::io("rename", &tmp, e))?;
        fsync_dir(&self.blobs_dir())?;
        let diff_id = format!("sha256:{hex}");
        let layer_dir = self.layers_dir().join(&hex);
        if self.has_layer(&diff_id)? {
            // The same content was converted from another old layer.
            let trash = self.tmp_dir().join(unique_suffix());
            fs::rename(&rootfs, &trash).map_err(|e| ImageError::io("rename", &rootfs, e))?;
            remove_tree(&trash)?;
        } else {
            let staging = self.layers_dir().join(format!("{hex}{MIGRATING_SUFFIX}"));
            remove_tree(&staging)?;
            crate::store::mkdir_private(&staging)?;
            let record = LayerRecord {
                chain_id: diff_id.clone(),
                diff_id: diff_id.clone(),
                parent: None,
                blob_digest: diff_id.clone(),
                blob_size: diff_size,
                blob_media_type: MediaType::ImageLayer.to_string(),
                diff_size,
                size: tree_bytes(&rootfs),
                link: link_name(&hex),
            };
            let record_path = staging.join("layer.json");
            write_atomic(&record_path, &to_json(&record, &record_path)?)?;
            fs::rename(&rootfs, staging.join("diff"))
                .map_err(|e| ImageError::io("rename", &rootfs, e))?;
            fs::rename(&staging, &layer_dir).map_err(|e| ImageError::io("rename", &staging, e))?;
            fsync_dir(&self.layers_dir())?;
        }
        std::os::unix::fs::symlink(PathBuf::from("..").join(&hex).join("diff"), &rootfs)
            .map_err(|e| ImageError::io("create link", &rootfs, e))?;
        let old_record = old_dir.join("layer.json");
        match fs::remove_file(&old_record) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("remove", &old_record, e)),
        }
        Ok(diff_id)
    }

    /// Step 3: the image of one old name.
    fn write_migrated_image(
        &self,
        old: &OldNameRecord,
        layer: &LayerRecord,
    ) -> Result<(), ImageError> {
        let origin = format!("image {:?} of the previous store format", old.name);
        let invalid = |e: oci_spec::OciSpecError| ImageError::InvalidImage {
            origin: origin.clone(),
            reason: e.to_string(),
        };
        let created = berth_state::Timestamp::from_unix(old.created, 0).to_string();
        let mut run = ConfigBuilder::default();
        if !old.config.cmd.is_empty() {
            run = run.cmd(old.config.cmd.clone());
        }
        if !old.config.env.is_empty() {
            run = run.env(old.config.env.clone());
        }
        if let Some(workdir) = &old.config.workdir {
            run = run.working_dir(workdir.clone());
        }
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(vec![layer.diff_id.clone()]);
        let history = HistoryBuilder::default()
            .created(created.clone())
            .comment(format!("converted from the flattened image {}", old.id))
            .build()
            .map_err(invalid)?;
        let mut config = ImageConfiguration::default();
        config.set_created(Some(created));
        config.set_architecture(host_architecture().into());
        config.set_os(oci_spec::image::Os::Linux);
        config.set_config(Some(run.build().map_err(invalid)?));
        config.set_rootfs(rootfs);
        config.set_history(Some(vec![history]));
        let config_bytes = serde_json::to_vec(&config).map_err(|e| ImageError::InvalidImage {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        let config_hex = sha256_hex(&config_bytes);
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_bytes.len() as u64,
                oci_digest(&config_hex)?,
            ))
            .layers(vec![Descriptor::new(
                MediaType::ImageLayer,
                layer.blob_size,
                oci_digest(layer.blob_digest.trim_start_matches("sha256:"))?,
            )])
            .build()
            .map_err(invalid)?;
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| ImageError::InvalidImage {
                origin: origin.clone(),
                reason: e.to_string(),
            })?;
        let manifest_hex = sha256_hex(&manifest_bytes);
        for (hex, bytes) in [
            (&config_hex, &config_bytes),
            (&manifest_hex, &manifest_bytes),
        ] {
            let path = self.blobs_dir().join(hex);
            if !path.exists() {
                write_atomic(&path, bytes)?;
            }
        }
        let id = ImageId::parse(&config_hex).ok_or_else(|| ImageError::InvalidImage {
            origin: origin.clone(),
            reason: "bad config digest".to_owned(),
        })?;
        self.record_image(
            &id,
            &format!("sha256:{manifest_hex}"),
            std::slice::from_ref(&layer.chain_id),
            vec![old.id.clone()],
        )?;
        // A name the new grammar refuses still gets a name, so that the
        // image is neither lost nor collected as untagged.
        let reference = Reference::parse(&old.name)
            .or_else(|_| Reference::parse(&format!("localhost/converted-{}", &old.id[..12])))?;
        self.tag_locked(&id, &[reference])
    }
}

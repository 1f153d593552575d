//! `cargo xtask rootfs`: the default busybox image as a tar file, built by
//! the same code berth uses when `busybox` is not in its store yet.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};

pub fn run(output: &Path) -> Result<()> {
    let busybox = berth_image::find_static_busybox()
        .context("no static busybox found: apt-get install busybox-static")?;
    // Written next to the destination and renamed, so a failure leaves no
    // half-written tar behind.
    let temporary = output.with_extension("tar.partial");
    let file =
        File::create(&temporary).with_context(|| format!("creating {}", temporary.display()))?;
    let mut writer = BufWriter::new(file);
    let written = berth_image::write_busybox_tar(&busybox, &mut writer)
        .with_context(|| format!("writing the busybox image from {}", busybox.display()))
        .and_then(|()| {
            writer
                .into_inner()
                .map_err(|err| err.into_error())
                .and_then(|file| file.sync_all())
                .with_context(|| format!("writing {}", temporary.display()))
        });
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(err);
    }
    std::fs::rename(&temporary, output)
        .with_context(|| format!("renaming {} to {}", temporary.display(), output.display()))?;
    println!(
        "xtask: wrote {} (busybox from {})",
        output.display(),
        busybox.display()
    );
    Ok(())
}

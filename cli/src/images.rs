//! `berth images`, `berth image import`, `berth image rm`.

use std::path::Path;

use anyhow::{bail, Context};

use crate::paths::Paths;
use crate::table::{human_duration, human_size, render};

pub fn list(paths: &Paths) -> anyhow::Result<()> {
    let images = paths.images()?.list()?;
    let now = berth_state::Timestamp::now();
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|image| {
            let created = berth_state::Timestamp::from_unix(image.created, 0);
            vec![
                image.name.clone(),
                image.id[..image.id.len().min(12)].to_owned(),
                format!("{} ago", human_duration(created.until(now))),
                human_size(image.size),
            ]
        })
        .collect();
    print!("{}", render(&["NAME", "ID", "CREATED", "SIZE"], &rows));
    Ok(())
}

pub fn import(paths: &Paths, file: &Path, name: &str) -> anyhow::Result<()> {
    berth_image::validate_image_name(name)?;
    let image = paths
        .images()?
        .import(file, name)
        .with_context(|| format!("cannot import {} as {name}", file.display()))?;
    println!("{}", image.id);
    Ok(())
}

pub fn remove(paths: &Paths, names: &[String]) -> anyhow::Result<i32> {
    if names.is_empty() {
        bail!("name at least one image to remove");
    }
    let images = paths.images()?;
    let containers = crate::container::list(&paths.containers()?)?;
    let mut failed = false;
    for name in names {
        let result = (|| -> anyhow::Result<()> {
            let image = images.get(name)?;
            if let Some(user) = containers.iter().find(|c| c.image == image.name) {
                bail!(
                    "cannot remove image {name}: container {} ({}) uses it; remove the container first",
                    user.name,
                    user.short_id()
                );
            }
            images.remove(name)?;
            Ok(())
        })();
        match result {
            Ok(()) => println!("Deleted: {name}"),
            Err(e) => {
                eprintln!("berth: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

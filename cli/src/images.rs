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
            let created = berth_state::Timestamp::from_unix(image.added, 0);
            vec![
                image
                    .tags
                    .first()
                    .map_or_else(|| "<none>".to_owned(), |t| t.familiar()),
                image.id.short().to_owned(),
                format!("{} ago", human_duration(created.until(now))),
                human_size(image.size()),
            ]
        })
        .collect();
    print!("{}", render(&["NAME", "ID", "CREATED", "SIZE"], &rows));
    Ok(())
}

pub fn import(paths: &Paths, file: &Path, name: &str) -> anyhow::Result<()> {
    let reference = berth_image::Reference::parse(name)?;
    let image = paths
        .images()?
        .import(file, Some(&reference))
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
            let image = images.resolve(name)?;
            let reference = berth_image::Reference::parse(name)
                .ok()
                .filter(|r| image.tags.contains(r));
            if let Some(reference) = &reference {
                if image.tags.len() > 1 {
                    // Other names keep the image: only this one goes.
                    images.untag(reference)?;
                    return Ok(());
                }
            }
            if let Some(user) = containers.iter().find(|c| c.image_id == image.id.hex()) {
                bail!(
                    "cannot remove image {name}: container {} ({}) uses it; remove the container first",
                    user.name,
                    user.short_id()
                );
            }
            images.remove_image(&image.id, true)?;
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

/// `berth commit`: the container's merged filesystem (image layer plus its
/// write layer; volumes are bind mounts and so not part of it) becomes a new
/// image with the container's command and environment as its defaults.
pub fn commit(paths: &Paths, args: &crate::args::CommitArgs) -> anyhow::Result<i32> {
    let reference = berth_image::Reference::parse(&args.image)?;
    let containers = paths.containers()?;
    let record = crate::container::find(&containers, &args.container)?;
    let images = paths.images()?;
    let base = images
        .resolve(&record.image_id)
        .or_else(|_| images.resolve(&record.image))
        .with_context(|| format!("the image of container {} is gone", record.name))?;
    let upper = containers.container_dir(&record.id).join("upper");
    let mut config = base.run_config();
    config.set_entrypoint(None);
    config.set_cmd(Some(record.command.clone()));
    config.set_env(Some(
        record
            .env
            .iter()
            .filter(|e| !e.starts_with("HOSTNAME="))
            .cloned()
            .collect(),
    ));
    config.set_working_dir(record.workdir.clone());
    let options = berth_image::CommitOptions {
        config: Some(config),
        created_by: Some(record.command.join(" ")),
        tag: Some(reference),
        ..Default::default()
    };
    // Like docker commit's default --pause: a consistent snapshot of a
    // running container, thawed on every way out (see FreezeGuard).
    let frozen = crate::pause::FreezeGuard::freeze(&containers, &record)?;
    let committed = images
        .commit(&base, &upper, &options)
        .with_context(|| format!("cannot commit container {} as {}", record.name, args.image));
    drop(frozen);
    let image = committed?;
    println!("{}", image.id);
    Ok(0)
}

/// `berth image save NAME -o FILE`: a docker archive, written to a temp
/// file beside FILE and renamed, so a failure never leaves a truncated
/// archive behind.
pub fn save(paths: &Paths, name: &str, output: &Path) -> anyhow::Result<i32> {
    let images = paths.images()?;
    let image = images.resolve(name)?;
    let names: Vec<berth_image::Reference> = berth_image::Reference::parse(name)
        .ok()
        .filter(|r| image.tags.contains(r))
        .into_iter()
        .collect();
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile_in(dir, output)?;
    let result = (|| -> anyhow::Result<()> {
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut writer = std::io::BufWriter::new(file);
        images.save_docker_archive(&[(&image, names.as_slice())], &mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| 0)
}

fn tempfile_in(dir: &Path, output: &Path) -> anyhow::Result<std::path::PathBuf> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image.tar".into());
    Ok(dir.join(format!(".{name}.{}.tmp", std::process::id())))
}

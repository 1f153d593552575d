//! `berth diff CONTAINER`: what the container changed, from its write
//! layer (whiteouts are deletions), docker's `A`/`C`/`D` lines.

use anyhow::Context;

use crate::paths::Paths;

pub fn diff(paths: &Paths, query: &str) -> anyhow::Result<i32> {
    let containers = paths.containers()?;
    let record = crate::container::find(&containers, query)?;
    let image = paths
        .images()?
        .resolve(&record.image_id)
        .with_context(|| format!("the image of container {} is gone", record.name))?;
    let dir = containers.container_dir(&record.id);
    // The mount points of the /etc files berth provides are its own.
    let hidden: Vec<std::path::PathBuf> = crate::network::EtcFiles::new(&dir)
        .volumes()
        .into_iter()
        .map(|v| v.target.into())
        .collect();
    let changes = berth_fs::layer_changes(
        &containers.layer_dir(&record.id).join("upper"),
        &image.lower_dirs(),
        &hidden,
    )
    .with_context(|| format!("cannot read the changes of container {}", record.name))?;
    let mut out = String::new();
    for change in changes {
        out.push(change.kind.letter());
        out.push(' ');
        out.push_str(&change.path.to_string_lossy());
        out.push('\n');
    }
    crate::exit::write_stdout(&out).map(|()| 0)
}

//! The image commands: `images`, `tag`, `rmi`, `load`, `save`, `history`,
//! `image inspect`, `image import`, `image prune`, `export`, `commit`.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_image::{Image, ImageId, ImageStore, Reference};

use crate::args::{CommitArgs, ExportArgs, HistoryArgs, ImagesArgs, LoadArgs, RmiArgs, SaveArgs};
use crate::paths::Paths;
use crate::table::{human_duration, human_size, render};

/// Seconds since the epoch of an RFC 3339 time with its zone (the
/// config's `created`).
pub(crate) fn unix_seconds(rfc3339: &str) -> Option<i64> {
    let has_zone = rfc3339
        .get(19..)
        .is_some_and(|rest| rest.contains(['Z', 'z', '+', '-']));
    has_zone
        .then(|| crate::time_text::rfc3339(rfc3339).map(|(secs, _)| secs))
        .flatten()
}

/// docker's CREATED column: "N units ago", from the config's time (the
/// time the image was stored when the config has none).
pub(crate) fn created_ago(created: Option<&str>, fallback: u64) -> String {
    let seconds = created
        .and_then(unix_seconds)
        .unwrap_or(i64::try_from(fallback).unwrap_or(0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let elapsed = u64::try_from(now.saturating_sub(seconds)).unwrap_or(0);
    format!(
        "{} ago",
        human_duration(std::time::Duration::from_secs(elapsed))
    )
}

/// The image ids that containers record (their images cannot go).
fn pinned_ids(paths: &Paths) -> anyhow::Result<BTreeSet<String>> {
    let containers = crate::container::list(&paths.containers()?)?;
    Ok(containers.into_iter().map(|c| c.image_id).collect())
}

/// A container that uses `id`, as "NAME (SHORT ID)".
fn user_of(paths: &Paths, id: &ImageId) -> anyhow::Result<Option<String>> {
    let containers = crate::container::list(&paths.containers()?)?;
    Ok(containers
        .iter()
        .find(|c| c.image_id == id.hex())
        .map(|c| format!("{} ({})", c.name, c.short_id())))
}

/// Write `text` to stdout; a closed pipe is not an error worth a panic.
fn print_out(text: &str) -> anyhow::Result<()> {
    crate::exit::write_stdout(text)
}

/// docker's default `images` table.
const IMAGES_TABLE: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";

/// The column titles of docker's `images` placeholders.
const IMAGES_HEADER: &[(&str, &str)] = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("VirtualSize", "SIZE"),
    ("Containers", "CONTAINERS"),
];

/// `berth images [-q] [-a] [--no-trunc] [--format F] [--filter K=V]
/// [REPO[:TAG]]`: one row per tag (an untagged image is one `<none>`
/// row), newest first.
pub fn list(paths: &Paths, args: &ImagesArgs) -> anyhow::Result<i32> {
    let filters = ImageFilters::parse(&args.filter)?;
    let format = if args.quiet {
        None
    } else {
        let text = args.format.as_deref().unwrap_or(IMAGES_TABLE);
        Some(crate::format::Format::parse(
            text,
            IMAGES_TABLE,
            crate::format::Fields::Fixed,
        )?)
    };
    let store = paths.images()?;
    let mut images = store.list()?;
    images.sort_by_key(|image| std::cmp::Reverse(created_seconds(image)));
    let wanted = args
        .reference
        .as_deref()
        .map(|text| {
            // `busybox` matches every tag of busybox; `busybox:1` one tag.
            let has_tag = text
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
            Reference::parse(text).map(|r| (r, has_tag))
        })
        .transpose()?;
    let resolve = |name: &str| -> anyhow::Result<i64> {
        let image = store
            .resolve(name)
            .with_context(|| format!("invalid filter value {name:?}"))?;
        Ok(created_seconds(&image))
    };
    let mut items = Vec::new();
    let mut ids = Vec::new();
    for image in &images {
        if !filters.matches_image(image, &resolve)? {
            continue;
        }
        let id = if args.no_trunc {
            image.id.to_string()
        } else {
            image.id.short().to_owned()
        };
        let mut names: Vec<(String, String)> = image
            .tags
            .iter()
            .filter(|t| match &wanted {
                Some((wanted, has_tag)) => {
                    t.name() == wanted.name() && (!has_tag || t.tag() == wanted.tag())
                }
                None => true,
            })
            .filter(|t| filters.matches_reference(t))
            .map(|t| (t.familiar_name(), t.tag().unwrap_or("<none>").to_owned()))
            .collect();
        if names.is_empty() {
            if wanted.is_some() || !image.tags.is_empty() || filters.has_reference() {
                continue;
            }
            names.push(("<none>".to_owned(), "<none>".to_owned()));
        }
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        let created = created_ago(image.created(), image.added);
        let created_at = u64::try_from(created_seconds(image))
            .map(|secs| crate::ps::docker_date(berth_state::Timestamp::from_unix(secs, 0)))
            .unwrap_or_default();
        let size = human_size(image.size());
        for (repository, tag) in names {
            items.push(crate::format::to_value(&serde_json::json!({
                "Repository": repository,
                "Tag": tag,
                "ID": id,
                "Digest": if image.manifest_digest.is_empty() { "<none>" } else { image.manifest_digest.as_str() },
                "CreatedSince": created,
                "CreatedAt": created_at,
                "Size": size,
                "VirtualSize": size,
                "Containers": "N/A",
                "SharedSize": "N/A",
                "UniqueSize": "N/A",
            })));
        }
    }
    let text = match format {
        None => ids.iter().map(|id| format!("{id}\n")).collect(),
        Some(format) => format.render(IMAGES_HEADER, &items)?,
    };
    print_out(&text).map(|()| 0)
}

/// When an image was made (its config's time, else when it was stored).
fn created_seconds(image: &Image) -> i64 {
    image
        .created()
        .and_then(unix_seconds)
        .unwrap_or(i64::try_from(image.added).unwrap_or(0))
}

/// `images --filter`: dangling=, reference=, label=, before=, since=.
#[derive(Debug, Default)]
struct ImageFilters {
    dangling: Option<bool>,
    references: Vec<String>,
    labels: Vec<String>,
    before: Vec<String>,
    since: Vec<String>,
}

impl ImageFilters {
    fn parse(given: &[String]) -> anyhow::Result<Self> {
        let mut filters = ImageFilters::default();
        for text in given {
            let Some((key, value)) = text.split_once('=') else {
                bail!("bad format of filter {text:?} (expected name=value)");
            };
            match key.trim().to_lowercase().as_str() {
                "dangling" => {
                    filters.dangling = Some(match value.to_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => bail!("invalid filter 'dangling={value}': use true or false"),
                    })
                }
                "reference" => filters.references.push(value.to_owned()),
                "label" => filters.labels.push(value.to_owned()),
                "before" => filters.before.push(value.to_owned()),
                "since" => filters.since.push(value.to_owned()),
                other => bail!("invalid filter '{other}'"),
            }
        }
        Ok(filters)
    }

    fn has_reference(&self) -> bool {
        !self.references.is_empty()
    }

    /// The filters about the image as a whole.
    fn matches_image(
        &self,
        image: &Image,
        created_of: &dyn Fn(&str) -> anyhow::Result<i64>,
    ) -> anyhow::Result<bool> {
        if let Some(dangling) = self.dangling {
            if image.tags.is_empty() != dangling {
                return Ok(false);
            }
        }
        let labels = image.run_config().labels().clone().unwrap_or_default();
        let label_ok = self
            .labels
            .iter()
            .all(|wanted| match wanted.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|l| l == v),
                None => labels.contains_key(wanted.as_str()),
            });
        if !label_ok {
            return Ok(false);
        }
        let created = created_seconds(image);
        for name in &self.before {
            if created >= created_of(name)? {
                return Ok(false);
            }
        }
        for name in &self.since {
            if created <= created_of(name)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `reference=PATTERN`: a glob over `name` or `name:tag`, as docker
    /// matches it (any one pattern suffices).
    fn matches_reference(&self, reference: &Reference) -> bool {
        if self.references.is_empty() {
            return true;
        }
        let name = reference.familiar_name();
        let full = format!("{name}:{}", reference.tag().unwrap_or("latest"));
        self.references
            .iter()
            .any(|pattern| glob_matches(pattern, &name) || glob_matches(pattern, &full))
    }
}

/// Go's `path.Match`, without character classes: `*` is any run of
/// characters but `/`, `?` one such character.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != '/')
                .any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => t.first().is_some_and(|&c| c != '/') && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(&p, &t)
}

/// `berth tag SOURCE TARGET`.
pub fn tag(paths: &Paths, source: &str, target: &str) -> anyhow::Result<i32> {
    let images = paths.images()?;
    let image = images.resolve(source)?;
    let reference = Reference::parse(target)?;
    if reference.digest().is_some() {
        bail!("invalid tag {target:?}: a tag cannot name a digest");
    }
    images.tag(&image.id, &reference)?;
    Ok(0)
}

/// `berth image import FILE NAME`: a root filesystem tar as an image.
pub fn import(paths: &Paths, file: &Path, name: &str) -> anyhow::Result<i32> {
    let reference = Reference::parse(name)?;
    let image = match paths.images()?.import(file, Some(&reference)) {
        Ok(image) => image,
        Err(e @ berth_image::ImageError::IsImageArchive { .. }) => {
            bail!("{e}: use `berth load -i {}`", file.display())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot import {} as {name}", file.display()))
        }
    };
    print_out(&format!("{}\n", image.id)).map(|()| 0)
}

/// `berth rmi [-f] IMAGE...`, docker's semantics: a reference is untagged;
/// the image goes when no tag is left and no container uses it.
pub fn remove(paths: &Paths, args: &RmiArgs) -> anyhow::Result<i32> {
    if args.images.is_empty() {
        bail!("name at least one image to remove");
    }
    let images = paths.images()?;
    let mut failed = false;
    for name in &args.images {
        let mut lines = String::new();
        let result = remove_one(paths, &images, name, args.force, &mut lines);
        print_out(&lines)?;
        if let Err(e) = result {
            eprintln!("berth: {}", crate::exit::one_line(&e));
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn remove_one(
    paths: &Paths,
    images: &ImageStore,
    name: &str,
    force: bool,
    lines: &mut String,
) -> anyhow::Result<()> {
    let image = images.resolve(name)?;
    let user = user_of(paths, &image.id)?;
    let by_reference = Reference::parse(name)
        .ok()
        .filter(|r| image.tags.contains(r));
    let untag = |reference: &Reference, lines: &mut String| -> anyhow::Result<()> {
        images.untag(reference)?;
        lines.push_str(&format!("Untagged: {}\n", reference.familiar()));
        Ok(())
    };
    if let Some(reference) = by_reference.filter(|_| image.tags.len() > 1) {
        // Other names keep the image: only this one goes.
        return untag(&reference, lines);
    }
    if !force && image.tags.len() > 1 {
        bail!(
            "unable to delete {} (must be forced): the image is referenced in repositories {}",
            image.id.short(),
            image
                .tags
                .iter()
                .map(|t| t.familiar())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let (Some(user), false) = (&user, force) {
        bail!(
            "cannot remove image {name}: container {user} uses it; remove the container first (or -f to only untag it)"
        );
    }
    for reference in &image.tags {
        untag(reference, lines)?;
    }
    if user.is_some() {
        // Forced: the container keeps its image, untagged.
        return Ok(());
    }
    let removed = images.remove_image(&image.id, true)?;
    for id in &removed.images {
        lines.push_str(&format!("Deleted: {id}\n"));
    }
    Ok(())
}

/// `image prune`'s work (also `system prune`'s): untag (with `all`) the
/// images no container uses that `filter` selects, then remove every
/// untagged one of them. The "Deleted Images:" report and the bytes freed.
pub(crate) fn prune_images(
    paths: &Paths,
    all: bool,
    filter: &crate::prune::PruneFilter,
) -> anyhow::Result<(String, u64)> {
    let images = paths.images()?;
    let pinned = pinned_ids(paths)?;
    // Images the filter leaves alone are kept like those in use.
    let mut spared = BTreeSet::new();
    let mut text = String::new();
    for image in images.list()? {
        let created = image
            .created()
            .and_then(unix_seconds)
            .or(i64::try_from(image.added).ok());
        let labels = image
            .run_config()
            .labels()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if !filter.matches(created, &labels) {
            spared.insert(image.id.hex().to_owned());
            continue;
        }
        if all && !pinned.contains(image.id.hex()) {
            for reference in &image.tags {
                images.untag(reference)?;
                text.push_str(&format!("untagged: {}\n", reference.familiar()));
            }
        }
    }
    let removed = images.gc(&|id| pinned.contains(id.hex()) || spared.contains(id.hex()))?;
    let mut out = String::new();
    if !removed.images.is_empty() {
        out.push_str("Deleted Images:\n");
        out.push_str(&text);
        for id in &removed.images {
            out.push_str(&format!("deleted: {id}\n"));
        }
        out.push('\n');
    }
    Ok((out, removed.bytes))
}

/// `berth load [-i FILE] [-q]`.
pub fn load(paths: &Paths, args: &LoadArgs) -> anyhow::Result<i32> {
    let images = paths.images()?;
    let platform = berth_image::TargetPlatform::host();
    let progress = |_: berth_image::Progress| {};
    let loaded = match &args.input {
        Some(path) => images
            .load_path(path, &platform, &progress)
            .with_context(|| format!("cannot load {}", path.display()))?,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is empty: use -i FILE or redirect");
            }
            match images.load(&mut stdin.lock(), &platform, &progress) {
                Ok(loaded) => loaded,
                Err(e) => {
                    // The store reads stdin from a spooled copy, which its
                    // errors name: the user gave stdin.
                    let spool_dir = format!("{}/", images.root().join("tmp").display());
                    bail!(
                        "cannot load from stdin: {}",
                        without_paths_below(&e.to_string(), &spool_dir, "stdin")
                    )
                }
            }
        }
    };
    let mut text = String::new();
    for (image, names) in &loaded {
        if names.is_empty() {
            text.push_str(&format!("Loaded image ID: {}\n", image.id));
        }
        for name in names {
            text.push_str(&format!("Loaded image: {}\n", name.familiar()));
        }
    }
    // docker's -q (`args.quiet`) only hides progress, which berth does
    // not draw: the names are printed either way.
    print_out(&text).map(|()| 0)
}

/// `text` with every path that starts with `dir` replaced by `name`.
fn without_paths_below(text: &str, dir: &str, name: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(dir) {
        out.push_str(&rest[..at]);
        out.push_str(name);
        let path = &rest[at..];
        let end = path
            .find(|c: char| c.is_whitespace() || c == ':' || c == ',')
            .unwrap_or(path.len());
        rest = &path[end..];
    }
    out.push_str(rest);
    out
}

/// `berth save [-o FILE] [--format docker-archive|oci-archive] IMAGE...`.
pub fn save(paths: &Paths, args: &SaveArgs) -> anyhow::Result<i32> {
    let oci = match args.format.as_str() {
        "docker-archive" => false,
        "oci-archive" => true,
        other => bail!("unknown archive format {other:?}: use docker-archive or oci-archive"),
    };
    let images = paths.images()?;
    let mut chosen: Vec<(Image, Vec<Reference>)> = Vec::new();
    for name in &args.images {
        let image = images.resolve(name)?;
        let reference = Reference::parse(name)
            .ok()
            .filter(|r| image.tags.contains(r));
        match chosen.iter_mut().find(|(i, _)| i.id == image.id) {
            Some((_, names)) => names.extend(reference),
            None => chosen.push((image, reference.into_iter().collect())),
        }
    }
    let list: Vec<(&Image, &[Reference])> = chosen.iter().map(|(i, n)| (i, n.as_slice())).collect();
    let write = |out: &mut dyn Write| -> anyhow::Result<()> {
        if oci {
            images.save_oci_archive(&list, out)?;
        } else {
            images.save_docker_archive(&list, out)?;
        }
        Ok(())
    };
    write_archive(args.output.as_deref(), write)
}

/// An archive to `output` (a temp file renamed into place), or to
/// standard output when there is none, never to a terminal. A reader that
/// went away ends berth as `exit::write_stdout` does.
fn write_archive(
    output: Option<&Path>,
    write: impl Fn(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    if let Some(output) = output {
        return write_atomically(output, write).map(|()| 0);
    }
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        bail!("cowardly refusing to save to a terminal: use the -o flag or redirect");
    }
    let mut writer = std::io::BufWriter::new(stdout.lock());
    let written = write(&mut writer).and_then(|()| Ok(writer.flush()?));
    if let Err(e) = &written {
        let closed = e.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if closed {
            std::process::exit(crate::exit::CLOSED_PIPE);
        }
    }
    written.context("cannot write the output").map(|()| 0)
}

/// Write a file through a temp file beside it, renamed at the end, so a
/// failure never leaves a truncated file behind.
fn write_atomically(
    output: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = temp_path_in(dir, output);
    let result = (|| -> anyhow::Result<()> {
        let file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut writer = std::io::BufWriter::new(file);
        write(&mut writer)?;
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path_in(dir: &Path, output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive.tar".into());
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// `berth history [--no-trunc] [-q] IMAGE`: the config's history, newest
/// first; a step that made a layer shows that layer's size.
pub fn history(paths: &Paths, args: &HistoryArgs) -> anyhow::Result<i32> {
    let image = paths.images()?.resolve(&args.image)?;
    let steps = image.config.history().clone().unwrap_or_default();
    let mut layers = image.layers.iter();
    let mut rows = Vec::new();
    for step in &steps {
        let empty = step.empty_layer().unwrap_or(false);
        let size = if empty {
            0
        } else {
            layers.next().map_or(0, |l| l.size)
        };
        rows.push((step, size));
    }
    rows.reverse();
    let id = |first: bool| {
        if !first {
            "<missing>".to_owned()
        } else if args.no_trunc {
            image.id.to_string()
        } else {
            image.id.short().to_owned()
        }
    };
    if args.quiet {
        return print_out(&format!("{}\n", id(true))).map(|()| 0);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, (step, size))| {
            let mut created_by = step.created_by().clone().unwrap_or_default();
            if !args.no_trunc && created_by.chars().count() > 45 {
                created_by = created_by.chars().take(44).collect::<String>() + "…";
            }
            vec![
                id(i == 0),
                created_ago(step.created().as_deref(), image.added),
                created_by,
                human_size(*size),
                step.comment().clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_out(&render(
        &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &table,
    ))
    .map(|()| 0)
}

/// docker's `image inspect` shape of an image.
pub fn inspect_json(image: &Image) -> serde_json::Value {
    let config = image.run_config();
    let set = |items: &Option<Vec<String>>| {
        items.as_ref().map(|items| {
            items
                .iter()
                .map(|i| (i.clone(), serde_json::json!({})))
                .collect::<serde_json::Map<_, _>>()
        })
    };
    let mut repositories = BTreeSet::new();
    for tag in &image.tags {
        repositories.insert(format!("{}@{}", tag.familiar_name(), image.manifest_digest));
    }
    serde_json::json!({
        "Id": image.id.to_string(),
        "RepoTags": image
            .tags
            .iter()
            .filter(|t| t.tag().is_some())
            .map(|t| t.familiar())
            .collect::<Vec<_>>(),
        "RepoDigests": repositories,
        "Created": image.created(),
        "Author": image.config.author().clone().unwrap_or_default(),
        "Config": {
            "User": config.user().clone().unwrap_or_default(),
            "ExposedPorts": set(config.exposed_ports()),
            "Env": config.env(),
            "Cmd": config.cmd(),
            "Volumes": set(config.volumes()),
            "WorkingDir": config.working_dir().clone().unwrap_or_default(),
            "Entrypoint": config.entrypoint(),
            "Labels": config.labels(),
            "StopSignal": config.stop_signal(),
        },
        "Architecture": image.config.architecture().to_string(),
        "Os": image.config.os().to_string(),
        "Size": image.size(),
        "RootFS": {
            "Type": image.config.rootfs().typ(),
            "Layers": image.config.rootfs().diff_ids(),
        },
    })
}

/// `berth image inspect IMAGE...`.
pub fn inspect(paths: &Paths, names: &[String]) -> anyhow::Result<i32> {
    let images = paths.images()?;
    let mut out = Vec::new();
    for name in names {
        out.push(inspect_json(&images.resolve(name)?));
    }
    print_out(&(serde_json::to_string_pretty(&out)? + "\n")).map(|()| 0)
}

/// `berth export [-o FILE] CONTAINER`: the container's filesystem as one
/// tar, its write layer over the image's layers, whiteouts applied.
pub fn export(paths: &Paths, args: &ExportArgs) -> anyhow::Result<i32> {
    let containers = paths.containers()?;
    let record = crate::container::find(&containers, &args.container)?;
    let images = paths.images()?;
    let image = images
        .resolve(&record.image_id)
        .with_context(|| format!("the image of container {} is gone", record.name))?;
    let [upper, ..] = crate::container_spec::layer_dirs(&containers, &record.id);
    let mut layers = vec![upper];
    layers.extend(image.lower_dirs());
    let layer_refs: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    let write = |out: &mut dyn Write| -> anyhow::Result<()> {
        berth_image::write_merged_tar_as(&layer_refs, record.id_maps.as_ref(), out)
            .with_context(|| format!("cannot export container {}", record.name))
    };
    write_archive(args.output.as_deref(), write)
}

/// `berth commit`: the container's write layer becomes one new layer over
/// its image's, with a config from the image's plus the container's
/// command, environment and working directory and the `--change`s.
pub fn commit(paths: &Paths, args: &CommitArgs) -> anyhow::Result<i32> {
    let reference = args.image.as_deref().map(Reference::parse).transpose()?;
    let changes = args
        .change
        .iter()
        .map(|c| berth_image::ConfigChange::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    let containers = paths.containers()?;
    let record = crate::container::find(&containers, &args.container)?;
    let images = paths.images()?;
    let base = images
        .resolve(&record.image_id)
        .or_else(|_| images.resolve(&record.image))
        .with_context(|| format!("the image of container {} is gone", record.name))?;
    let [upper, ..] = crate::container_spec::layer_dirs(&containers, &record.id);
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
    for change in &changes {
        change.apply(&mut config);
    }
    let options = berth_image::CommitOptions {
        config: Some(config),
        author: args.author.clone(),
        comment: args.message.clone(),
        created_by: Some(record.command.join(" ")),
        tag: reference,
        owners: record.id_maps.clone(),
    };
    // Like docker commit's default --pause: a consistent snapshot of a
    // running container, thawed on every way out (see FreezeGuard).
    let frozen = crate::pause::FreezeGuard::freeze(&containers, &record)?;
    let committed = images
        .commit(&base, &upper, &options)
        .with_context(|| format!("cannot commit container {}", record.name));
    drop(frozen);
    let image = committed?;
    print_out(&format!("{}\n", image.id)).map(|()| 0)
}

#[cfg(test)]
mod tests {
    use super::{glob_matches, unix_seconds, ImageFilters, IMAGES_HEADER, IMAGES_TABLE};

    #[test]
    fn spooled_paths_are_named_for_what_the_user_gave() {
        assert_eq!(
            super::without_paths_below(
                "/r/tmp/1-2-0 is neither a docker archive: /r/tmp/1-2-0, x",
                "/r/tmp/",
                "the archive"
            ),
            "the archive is neither a docker archive: the archive, x"
        );
        assert_eq!(super::without_paths_below("plain", "/r/tmp/", "x"), "plain");
    }

    #[test]
    fn reference_patterns_match_as_docker_globs() {
        assert!(glob_matches("busy*", "busybox"));
        assert!(glob_matches("busybox:*", "busybox:latest"));
        assert!(glob_matches("b?sybox", "busybox"));
        assert!(!glob_matches("busy*", "localhost/busybox"));
        assert!(glob_matches("*/busybox", "localhost/busybox"));
        assert!(!glob_matches("alpine", "busybox"));
    }

    /// docker's default `images` table.
    #[test]
    fn table_output() {
        let row = |repository: &str, tag: &str, id: &str, created: &str, size: &str| {
            crate::format::to_value(&serde_json::json!({
                "Repository": repository, "Tag": tag, "ID": id, "Digest": "<none>",
                "CreatedSince": created, "CreatedAt": "", "Size": size,
                "VirtualSize": size, "Containers": "N/A",
            }))
        };
        let items = [
            row(
                "localhost/web",
                "1.2",
                "0123456789ab",
                "2 hours ago",
                "4.26MB",
            ),
            row("busybox", "latest", "ba5eba11ba5e", "3 weeks ago", "1.98MB"),
            row("<none>", "<none>", "feedfacefeed", "5 months ago", "12MB"),
        ];
        let format =
            crate::format::Format::parse(IMAGES_TABLE, IMAGES_TABLE, crate::format::Fields::Fixed)
                .unwrap();
        insta::assert_snapshot!(format.render(IMAGES_HEADER, &items).unwrap());
    }

    #[test]
    fn image_filters_refuse_unknown_keys() {
        assert!(ImageFilters::parse(&["dangling=true".into()]).is_ok());
        for bad in ["colour=red", "dangling=maybe", "nokey"] {
            assert!(ImageFilters::parse(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_times_read_as_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_seconds("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096)
        );
        assert_eq!(
            unix_seconds("2024-02-29T14:34:56+02:00"),
            Some(1_709_210_096)
        );
        assert_eq!(unix_seconds("not a time"), None);
        assert_eq!(unix_seconds("2024-02-29T12:34:56"), None);
    }
}

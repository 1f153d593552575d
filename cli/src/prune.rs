//! The prune family (`container prune`, `network prune`, `image prune`,
//! `system prune`) and `system df`: what is unused, removed on request,
//! with docker's prompts, filters and reports.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, IsTerminal};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context};
use berth_state::{ContainerRecord, Timestamp};

use crate::args::{DfArgs, FilteredPruneArgs, PruneArgs, SystemPruneArgs};
use crate::paths::Paths;
use crate::table::{human_size, render};

/// `--filter` of the prune commands: `until=` and `label=`/`label!=`.
#[derive(Debug, Default, PartialEq)]
pub struct PruneFilter {
    /// Only what was created before this (unix seconds).
    until: Option<i64>,
    /// `(key, value, wanted)`: the label (with that value, if given) must
    /// be there (`label=`) or must not (`label!=`).
    labels: Vec<(String, Option<String>, bool)>,
}

/// docker's `until`: a duration before now, unix seconds (`1700000000`,
/// `1700000000.5`), an RFC 3339 time, or a date (`2026-01-02`,
/// `2026-01-02T15:04:05`, taken as UTC).
fn parse_until(text: &str, now: i64) -> Option<i64> {
    let now = Timestamp::from_unix(u64::try_from(now).ok()?, 0);
    let then = crate::time_text::point_in_time(text, now)?;
    i64::try_from(then.unix_secs()).ok()
}

impl PruneFilter {
    pub fn parse(filters: &[String], now: i64) -> anyhow::Result<Self> {
        let mut filter = PruneFilter::default();
        for text in filters {
            let Some((key, value)) = text.split_once('=') else {
                bail!("bad format of filter (expected name=value): {text}");
            };
            match key {
                "until" => {
                    let Some(until) = parse_until(value, now) else {
                        bail!("invalid filter 'until={value}': not a duration, timestamp or date");
                    };
                    filter.until = Some(until);
                }
                "label" | "label!" => {
                    let (name, wanted_value) = match value.split_once('=') {
                        Some((n, v)) => (n, Some(v.to_owned())),
                        None => (value, None),
                    };
                    if name.is_empty() {
                        bail!("invalid filter '{text}': the label name is empty");
                    }
                    filter
                        .labels
                        .push((name.to_owned(), wanted_value, key == "label"));
                }
                _ => bail!("invalid filter '{key}' (berth knows until, label and label!)"),
            }
        }
        Ok(filter)
    }

    /// Whether an object created at `created` (unix seconds, if known)
    /// with `labels` is to be pruned.
    pub fn matches(&self, created: Option<i64>, labels: &BTreeMap<String, String>) -> bool {
        if let Some(until) = self.until {
            match created {
                Some(created) if created < until => {}
                _ => return false,
            }
        }
        self.labels.iter().all(|(name, value, wanted)| {
            let has = match (labels.get(name), value) {
                (Some(actual), Some(value)) => actual == value,
                (Some(_), None) => true,
                (None, _) => false,
            };
            has == *wanted
        })
    }
}

fn now_secs() -> i64 {
    i64::try_from(Timestamp::now().unix_secs()).unwrap_or(i64::MAX)
}

/// docker's confirmation: the warning, then a line from standard input;
/// only `y`/`yes` goes on (end of input, or anything else, is no). `-f`
/// skips it.
fn confirm(force: bool, warning: &str) -> anyhow::Result<bool> {
    if force {
        return Ok(true);
    }
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !std::io::stdin().is_terminal() {
        // The answer did not echo: end the prompt's line.
        eprintln!();
    }
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Bytes of the files in a tree (each inode once), as docker counts a
/// container's write layer.
pub fn tree_bytes(path: &Path) -> u64 {
    fn walk(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return 0;
        };
        if meta.is_dir() {
            let Ok(entries) = std::fs::read_dir(path) else {
                return 0;
            };
            return entries
                .filter_map(Result::ok)
                .map(|e| walk(&e.path(), seen))
                .sum();
        }
        if seen.insert((meta.dev(), meta.ino())) {
            meta.len()
        } else {
            0
        }
    }
    walk(path, &mut HashSet::new())
}

fn container_created(record: &ContainerRecord) -> Option<i64> {
    i64::try_from(record.created.unix_secs()).ok()
}

/// Remove the stopped containers the filter selects; their ids and the
/// bytes of their write layers.
fn prune_containers(paths: &Paths, filter: &PruneFilter) -> anyhow::Result<(Vec<String>, u64)> {
    let store = paths.containers()?;
    let mut removed = Vec::new();
    let mut bytes = 0;
    for record in crate::container::list(&store)? {
        if record.is_active() || !filter.matches(container_created(&record), &record.labels) {
            continue;
        }
        let size = tree_bytes(&store.layer_dir(&record.id).join("upper"));
        let id = record.id.clone();
        crate::container::remove_one(paths, &store, record, false)?;
        removed.push(id);
        bytes += size;
    }
    Ok((removed, bytes))
}

fn section(out: &mut String, title: &str, names: &[String]) {
    if names.is_empty() {
        return;
    }
    out.push_str(title);
    out.push('\n');
    for name in names {
        out.push_str(name);
        out.push('\n');
    }
    out.push('\n');
}

/// `berth container prune [-f] [--filter]`.
pub fn container_prune(paths: &Paths, args: &FilteredPruneArgs) -> anyhow::Result<i32> {
    let filter = PruneFilter::parse(&args.filter, now_secs())?;
    if !confirm(
        args.force,
        "WARNING! This will remove all stopped containers.",
    )? {
        return Ok(0);
    }
    let (removed, bytes) = prune_containers(paths, &filter)?;
    let mut out = String::new();
    section(&mut out, "Deleted Containers:", &removed);
    out.push_str(&format!("Total reclaimed space: {}\n", human_size(bytes)));
    crate::exit::write_stdout(&out).map(|()| 0)
}

/// Remove the user networks that no container names; their names.
fn prune_networks(paths: &Paths, filter: &PruneFilter) -> anyhow::Result<Vec<String>> {
    let containers = crate::container::list(&paths.containers()?)?;
    let used: BTreeSet<String> = containers
        .iter()
        .flat_map(|r| {
            let endpoint = crate::network::endpoint_of(r).map(|e| e.network);
            [Some(r.network_mode.clone()), endpoint]
        })
        .flatten()
        .chain(
            containers
                .iter()
                .flat_map(crate::network::connections_of)
                .map(|c| c.network),
        )
        .collect();
    // The record's time stands for creation.
    crate::network::remove_unused(paths, |network, record_file| {
        let created = std::fs::metadata(record_file).ok().map(|m| m.mtime());
        network.name != crate::network::DEFAULT_NETWORK
            && !used.contains(&network.name)
            && filter.matches(created, &network.labels)
    })
}

/// `berth network prune [-f] [--filter]`.
pub fn network_prune(paths: &Paths, args: &FilteredPruneArgs) -> anyhow::Result<i32> {
    let filter = PruneFilter::parse(&args.filter, now_secs())?;
    if !confirm(
        args.force,
        "WARNING! This will remove all custom networks not used by at least one container.",
    )? {
        return Ok(0);
    }
    let removed = prune_networks(paths, &filter)?;
    let mut out = String::new();
    section(&mut out, "Deleted Networks:", &removed);
    crate::exit::write_stdout(&out).map(|()| 0)
}

/// `berth image prune [-a] [-f] [--filter]`.
pub fn image_prune(paths: &Paths, args: &PruneArgs) -> anyhow::Result<i32> {
    let filter = PruneFilter::parse(&args.filter, now_secs())?;
    let what = if args.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    };
    if !confirm(args.force, &format!("WARNING! This will remove {what}."))? {
        return Ok(0);
    }
    let (text, bytes) = crate::images::prune_images(paths, args.all, &filter)?;
    let mut out = text;
    out.push_str(&format!("Total reclaimed space: {}\n", human_size(bytes)));
    crate::exit::write_stdout(&out).map(|()| 0)
}

/// `berth system prune [-a] [-f] [--filter]`: stopped containers, then
/// unused networks, then dangling (or, with -a, unused) images.
pub fn system_prune(paths: &Paths, args: &SystemPruneArgs) -> anyhow::Result<i32> {
    let filter = PruneFilter::parse(&args.filter, now_secs())?;
    let images = if args.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    };
    let volumes = if args.volumes {
        "  - all anonymous volumes not used by at least one container\n"
    } else {
        ""
    };
    let warning = format!(
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n{volumes}  - {images}\n"
    );
    if !confirm(args.force, &warning)? {
        return Ok(0);
    }
    let (containers, container_bytes) = prune_containers(paths, &filter)?;
    // The shared `berth` parent cgroups stay while containers come and go
    // (as docker's /docker); with no container left in them they go here.
    // Only a tidy-up: a host without cgroups, or one still in use by another
    // root's containers, is no reason for prune to fail.
    if let Ok(hierarchies) = berth_cgroup::Hierarchies::from_host() {
        let _ = berth_cgroup::Cgroup::remove_empty_parent(&hierarchies);
    }
    let networks = prune_networks(paths, &filter)?;
    // After the containers, so that the volumes of the ones just removed
    // count as unused; volumes have no creation filter (docker's neither).
    let (volumes, volume_bytes) = if args.volumes {
        let label_filters: Vec<String> = args
            .filter
            .iter()
            .filter(|f| f.starts_with("label"))
            .cloned()
            .collect();
        crate::volume::prune_volumes(paths, false, &label_filters)?
    } else {
        (Vec::new(), 0)
    };
    let (image_text, image_bytes) = crate::images::prune_images(paths, args.all, &filter)?;
    let mut out = String::new();
    section(&mut out, "Deleted Containers:", &containers);
    section(&mut out, "Deleted Networks:", &networks);
    section(&mut out, "Deleted Volumes:", &volumes);
    out.push_str(&image_text);
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(container_bytes + volume_bytes + image_bytes)
    ));
    crate::exit::write_stdout(&out).map(|()| 0)
}

/// docker's COMMAND cell: quoted, cut to 20 characters with an ellipsis.
fn command_text(command: &[String]) -> String {
    let full = command.join(" ");
    if full.chars().count() > 20 {
        let cut: String = full.chars().take(19).collect();
        format!("\"{cut}…\"")
    } else {
        format!("\"{full}\"")
    }
}

/// docker's RECLAIMABLE cell: the size, with its share of the total.
fn reclaimable(bytes: u64, total: u64) -> String {
    match (bytes * 100).checked_div(total) {
        Some(percent) => format!("{} ({percent}%)", human_size(bytes)),
        None => human_size(bytes),
    }
}

/// `berth system df [-v]`.
pub fn system_df(paths: &Paths, args: &DfArgs) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let containers = crate::container::list(&store)?;
    let images = paths.images()?.list()?;
    let used_images: BTreeSet<&str> = containers.iter().map(|c| c.image_id.as_str()).collect();
    let is_used = |image: &berth_image::Image| {
        used_images.contains(image.id.to_string().as_str()) || used_images.contains(image.id.hex())
    };

    // Layers shared between images count once.
    let mut layer_users: BTreeMap<&str, (u64, usize, usize)> = BTreeMap::new();
    for image in &images {
        for layer in &image.layers {
            let entry = layer_users
                .entry(layer.chain_id.as_str())
                .or_insert((layer.size, 0, 0));
            entry.1 += 1;
            if is_used(image) {
                entry.2 += 1;
            }
        }
    }
    let images_size: u64 = layer_users.values().map(|(size, _, _)| size).sum();
    let images_reclaimable: u64 = layer_users
        .values()
        .filter(|(_, _, used)| *used == 0)
        .map(|(size, _, _)| size)
        .sum();
    let active_images = images.iter().filter(|i| is_used(i)).count();

    let sizes: Vec<u64> = containers
        .iter()
        .map(|c| tree_bytes(&store.layer_dir(&c.id).join("upper")))
        .collect();
    let containers_size: u64 = sizes.iter().sum();
    let containers_reclaimable: u64 = containers
        .iter()
        .zip(&sizes)
        .filter(|(c, _)| !c.is_active())
        .map(|(_, size)| size)
        .sum();
    let active_containers = containers.iter().filter(|c| c.is_active()).count();

    let volume_store = crate::volume::store(paths)?;
    let volume_users = crate::volume::volume_users(&store)?;
    let volumes: Vec<(String, u64, bool)> = volume_store
        .list()?
        .into_iter()
        .map(|v| {
            let size = volume_store.disk_usage(&v.name).unwrap_or(0);
            let used = volume_users.contains_key(&v.name);
            (v.name, size, used)
        })
        .collect();
    let volumes_size: u64 = volumes.iter().map(|(_, size, _)| size).sum();
    let volumes_reclaimable: u64 = volumes
        .iter()
        .filter(|(_, _, used)| !used)
        .map(|(_, size, _)| size)
        .sum();
    let active_volumes = volumes.iter().filter(|(_, _, used)| *used).count();

    if !args.verbose {
        let rows = vec![
            vec![
                "Images".to_owned(),
                images.len().to_string(),
                active_images.to_string(),
                human_size(images_size),
                reclaimable(images_reclaimable, images_size),
            ],
            vec![
                "Containers".to_owned(),
                containers.len().to_string(),
                active_containers.to_string(),
                human_size(containers_size),
                reclaimable(containers_reclaimable, containers_size),
            ],
            vec![
                "Local Volumes".to_owned(),
                volumes.len().to_string(),
                active_volumes.to_string(),
                human_size(volumes_size),
                reclaimable(volumes_reclaimable, volumes_size),
            ],
            vec![
                "Build Cache".into(),
                "0".into(),
                "0".into(),
                "0B".into(),
                "0B".into(),
            ],
        ];
        let text = render(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows);
        return crate::exit::write_stdout(&text).map(|()| 0);
    }

    let mut out = String::from("Images space usage:\n\n");
    let mut rows = Vec::new();
    for image in &images {
        let mut shared = 0;
        let mut unique = 0;
        for layer in &image.layers {
            match layer_users.get(layer.chain_id.as_str()) {
                Some((size, users, _)) if *users > 1 => shared += size,
                Some((size, _, _)) => unique += size,
                None => {}
            }
        }
        let users = containers
            .iter()
            .filter(|c| c.image_id == image.id.to_string() || c.image_id == image.id.hex())
            .count();
        let created = crate::images::created_ago(image.created(), image.added);
        let names: Vec<(String, String)> = if image.tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            image
                .tags
                .iter()
                .map(|t| (t.familiar_name(), t.tag().unwrap_or("<none>").to_owned()))
                .collect()
        };
        for (repository, tag) in names {
            rows.push(vec![
                repository,
                tag,
                image.id.short().to_owned(),
                created.clone(),
                human_size(image.size()),
                human_size(shared),
                human_size(unique),
                users.to_string(),
            ]);
        }
    }
    out.push_str(&render(
        &[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ],
        &rows,
    ));
    out.push_str("\nContainers space usage:\n\n");
    let now = Timestamp::now();
    let rows: Vec<Vec<String>> = containers
        .iter()
        .zip(&sizes)
        .map(|(c, size)| {
            vec![
                c.short_id().to_owned(),
                c.image.clone(),
                command_text(&c.command),
                "0".to_owned(),
                human_size(*size),
                format!("{} ago", crate::table::human_duration(c.created.until(now))),
                crate::container::status_text(c, now),
                c.name.clone(),
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "LOCAL VOLUMES",
            "SIZE",
            "CREATED",
            "STATUS",
            "NAMES",
        ],
        &rows,
    ));
    out.push_str("\nLocal Volumes space usage:\n\n");
    let volume_rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|(name, size, _)| {
            let links = volume_users.get(name).map_or(0, Vec::len);
            vec![name.clone(), links.to_string(), human_size(*size)]
        })
        .collect();
    out.push_str(&render(&["VOLUME NAME", "LINKS", "SIZE"], &volume_rows));
    out.push_str("\nBuild cache usage: 0B\n\n");
    out.push_str(&render(
        &[
            "CACHE ID",
            "CACHE TYPE",
            "SIZE",
            "CREATED",
            "LAST USED",
            "USAGE",
            "SHARED",
        ],
        &[],
    ));
    crate::exit::write_stdout(&out)
        .context("cannot write the output")
        .map(|()| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn until_reads_durations_timestamps_and_dates() {
        assert_eq!(parse_until("10m", NOW), Some(NOW - 600));
        assert_eq!(parse_until("1h30m", NOW), Some(NOW - 5400));
        assert_eq!(parse_until("1.5h", NOW), Some(NOW - 5400));
        assert_eq!(parse_until("1700000000", NOW), Some(1_700_000_000));
        assert_eq!(parse_until("2026-01-02", NOW), Some(1_767_312_000));
        assert_eq!(
            parse_until("2026-01-02T00:00:10Z", NOW),
            Some(1_767_312_010)
        );
        assert_eq!(parse_until("soon", NOW), None);
        assert_eq!(parse_until("10x", NOW), None);
    }

    #[test]
    fn filters_select_by_age_and_labels() {
        let filter = PruneFilter::parse(
            &[
                "until=1h".into(),
                "label=tier=web".into(),
                "label!=keep".into(),
            ],
            NOW,
        )
        .unwrap();
        let web = labels(&[("tier", "web")]);
        assert!(filter.matches(Some(NOW - 7200), &web));
        assert!(!filter.matches(Some(NOW - 60), &web), "too young");
        assert!(!filter.matches(None, &web), "unknown age is kept");
        assert!(!filter.matches(Some(NOW - 7200), &labels(&[("tier", "db")])));
        assert!(!filter.matches(Some(NOW - 7200), &labels(&[("tier", "web"), ("keep", "")])));
        assert!(PruneFilter::default().matches(None, &BTreeMap::new()));
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in ["dangling", "color=red", "until=later", "label="] {
            assert!(PruneFilter::parse(&[bad.into()], NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn reclaimable_shows_a_share_of_a_nonzero_total() {
        assert_eq!(reclaimable(0, 0), "0B");
        assert_eq!(reclaimable(500, 1000), "500B (50%)");
    }
}

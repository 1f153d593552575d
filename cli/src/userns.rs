//! User namespaces for containers: `--userns=host|auto[:size=N]`,
//! `--uidmap`/`--gidmap` (podman's syntax) and the engine-wide remap of
//! every container (docker's userns-remap: `BERTH_USERNS_REMAP=default`),
//! with host ranges from /etc/subuid and /etc/subgid.
//!
//! The container's root is an unprivileged host user. The image layers
//! stay as they are on disk, shared with every container: the runtime
//! sees them through ID-mapped mounts. What the container writes (its
//! write layer, a volume it creates) belongs to its mapped ids.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_state::{ContainerStore, IdMaps, IdRange};

use crate::paths::Paths;

/// The user whose subordinate ids `auto` and the remap's `default` use.
pub const DEFAULT_USER: &str = "berth";
/// `--userns=auto` without `size=`: the ids of a typical distribution.
pub const AUTO_SIZE: u32 = 65536;

/// Held while an `auto` block is chosen and the container's record made.
pub type AllocationLock = nix::fcntl::Flock<File>;

/// Where the subordinate id ranges are read.
#[derive(Debug, Clone)]
pub struct SubIdFiles {
    pub uid: PathBuf,
    pub gid: PathBuf,
}

impl SubIdFiles {
    /// /etc/subuid and /etc/subgid, unless `BERTH_SUBUID_FILE` /
    /// `BERTH_SUBGID_FILE` name others.
    pub fn from_env() -> Self {
        let path = |var: &str, default: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        SubIdFiles {
            uid: path("BERTH_SUBUID_FILE", "/etc/subuid"),
            gid: path("BERTH_SUBGID_FILE", "/etc/subgid"),
        }
    }
}

/// What the flags and the engine setting ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The host's user namespace.
    Host,
    /// A block of `size` ids of `user`'s ranges no other container of
    /// this root uses.
    Auto { user: String, size: u32 },
    /// All of `user`'s ranges, the same for every container (docker's
    /// userns-remap).
    Remap { user: String },
    /// `--uidmap`/`--gidmap` as given.
    Explicit {
        uid: Vec<IdRange>,
        gid: Vec<IdRange>,
    },
}

/// The engine's remap setting: `BERTH_USERNS_REMAP` (`default` or a user
/// name; unset or empty: off).
pub fn remap_setting() -> Option<String> {
    std::env::var("BERTH_USERNS_REMAP")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Work out the request from `--userns`, `--uidmap`, `--gidmap` and the
/// engine's remap setting (`None`: off).
pub fn request(
    userns: Option<&str>,
    uidmap: &[String],
    gidmap: &[String],
    remap: Option<&str>,
) -> anyhow::Result<Request> {
    let remap_user = remap.filter(|r| !r.is_empty()).map(|r| match r {
        "default" => DEFAULT_USER.to_owned(),
        user => user.to_owned(),
    });
    if !uidmap.is_empty() || !gidmap.is_empty() {
        if let Some(mode) = userns {
            bail!("conflicting options: --userns={mode} and --uidmap/--gidmap");
        }
        let parse = |list: &[String], flag: &str| -> anyhow::Result<Vec<IdRange>> {
            list.iter()
                .flat_map(|text| text.split(','))
                .map(|one| parse_id_range(one).with_context(|| format!("invalid {flag} {one:?}")))
                .collect()
        };
        let uid = parse(uidmap, "--uidmap")?;
        let gid = parse(gidmap, "--gidmap")?;
        // podman: one map given, the other is the same.
        let (uid, gid) = match (uid.is_empty(), gid.is_empty()) {
            (true, _) => (gid.clone(), gid),
            (_, true) => (uid.clone(), uid),
            _ => (uid, gid),
        };
        for (kind, ranges) in [("uid", &uid), ("gid", &gid)] {
            if IdMaps::to_host(ranges, 0).is_none() {
                bail!("the {kind} map leaves out the container's root (id 0): map it, e.g. 0:100000:65536");
            }
        }
        return Ok(Request::Explicit { uid, gid });
    }
    let user = || {
        remap_user
            .clone()
            .unwrap_or_else(|| DEFAULT_USER.to_owned())
    };
    match userns {
        None | Some("") => Ok(match remap_user {
            Some(user) => Request::Remap { user },
            None => Request::Host,
        }),
        Some("host") => Ok(Request::Host),
        Some("auto") => Ok(Request::Auto {
            user: user(),
            size: AUTO_SIZE,
        }),
        Some(mode) => {
            let size = mode
                .strip_prefix("auto:size=")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|&n| n > 0);
            match size {
                Some(size) => Ok(Request::Auto { user: user(), size }),
                None => bail!("invalid --userns {mode:?}: use host, auto or auto:size=N"),
            }
        }
    }
}

/// `CONTAINER_ID:HOST_ID:SIZE`.
fn parse_id_range(text: &str) -> anyhow::Result<IdRange> {
    let fields: Vec<&str> = text.split(':').collect();
    let [container_id, host_id, size] = fields[..] else {
        bail!("use CONTAINER_ID:HOST_ID:SIZE");
    };
    let number = |field: &str| {
        field
            .parse::<u32>()
            .ok()
            .with_context(|| format!("{field:?} is not an id"))
    };
    let range = IdRange {
        container_id: number(container_id)?,
        host_id: number(host_id)?,
        size: number(size)?,
    };
    if range.size == 0 {
        bail!("the size is 0");
    }
    if u64::from(range.container_id) + u64::from(range.size) > 1 << 32
        || u64::from(range.host_id) + u64::from(range.size) > 1 << 32
    {
        bail!("the range goes past the last id");
    }
    Ok(range)
}

/// The ranges `user` owns in a subuid/subgid file's `text` (lines
/// `NAME_OR_UID:START:COUNT`).
pub fn subordinate_ranges(text: &str, user: &str, uid: Option<u32>) -> Vec<(u32, u32)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
            let owner_matches =
                owner == user || uid.is_some_and(|uid| owner.parse::<u32>() == Ok(uid));
            let start: u32 = start.parse().ok()?;
            let count: u32 = count.parse().ok()?;
            (owner_matches && count > 0 && start.checked_add(count - 1).is_some())
                .then_some((start, count))
        })
        .collect()
}

/// The user namespace a new container gets: `None` for the host's. The
/// returned lock (for `auto`) must be held until the container's record
/// is in the store, so that two containers never get the same block.
pub fn resolve(
    paths: &Paths,
    containers: &ContainerStore,
    request: &Request,
    files: &SubIdFiles,
) -> anyhow::Result<(Option<IdMaps>, Option<AllocationLock>)> {
    match request {
        Request::Host => Ok((None, None)),
        Request::Explicit { uid, gid } => Ok((
            Some(IdMaps {
                uid: uid.clone(),
                gid: gid.clone(),
            }),
            None,
        )),
        Request::Remap { user } => {
            let uid = whole_ranges(&read_ranges(&files.uid, user)?);
            let gid = whole_ranges(&read_ranges(&files.gid, user)?);
            Ok((Some(IdMaps { uid, gid }), None))
        }
        Request::Auto { user, size } => {
            let lock = lock_allocation(paths)?;
            let taken: Vec<IdMaps> = containers
                .list()?
                .into_iter()
                .filter_map(|r| r.id_maps)
                .collect();
            let block = |file: &Path, kind: &str, used: &dyn Fn(&IdMaps) -> &[IdRange]| {
                let ranges = read_ranges(file, user)?;
                let used: Vec<IdRange> = taken.iter().flat_map(|m| used(m).to_vec()).collect();
                free_block(&ranges, &used, *size).with_context(|| {
                    format!(
                        "no free block of {size} {kind}s left in {}'s ranges in {} (other containers use the rest)",
                        user,
                        file.display()
                    )
                })
            };
            let uid = block(&files.uid, "uid", &|m| &m.uid)?;
            let gid = block(&files.gid, "gid", &|m| &m.gid)?;
            Ok((
                Some(IdMaps {
                    uid: vec![uid],
                    gid: vec![gid],
                }),
                Some(lock),
            ))
        }
    }
}

fn read_ranges(file: &Path, user: &str) -> anyhow::Result<Vec<(u32, u32)>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the subordinate ids in {}", file.display()))?;
    let uid = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw());
    let ranges = subordinate_ranges(&text, user, uid);
    if ranges.is_empty() {
        bail!(
            "user {user:?} has no subordinate ids in {}: add a line like {user}:100000:65536",
            file.display()
        );
    }
    Ok(ranges)
}

/// Every range, one after another from container id 0.
fn whole_ranges(ranges: &[(u32, u32)]) -> Vec<IdRange> {
    let mut next = 0u32;
    ranges
        .iter()
        .map_while(|&(start, count)| {
            let range = IdRange {
                container_id: next,
                host_id: start,
                size: count,
            };
            next = next.checked_add(count)?;
            Some(range)
        })
        .collect()
}

/// The first block of `size` host ids inside `ranges` that overlaps none
/// of `used`, mapped from container id 0.
fn free_block(ranges: &[(u32, u32)], used: &[IdRange], size: u32) -> Option<IdRange> {
    for &(start, count) in ranges {
        let end = u64::from(start) + u64::from(count);
        let mut candidate = u64::from(start);
        while candidate + u64::from(size) <= end {
            let overlapping = used.iter().find(|u| {
                let (u_start, u_end) = (
                    u64::from(u.host_id),
                    u64::from(u.host_id) + u64::from(u.size),
                );
                candidate < u_end && u_start < candidate + u64::from(size)
            });
            match overlapping {
                None => {
                    return Some(IdRange {
                        container_id: 0,
                        host_id: candidate as u32,
                        size,
                    })
                }
                Some(u) => candidate = u64::from(u.host_id) + u64::from(u.size),
            }
        }
    }
    None
}

/// Serialises `auto` allocations of this root.
fn lock_allocation(paths: &Paths) -> anyhow::Result<AllocationLock> {
    let path = paths.root().join("userns.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", path.display()))
}

/// Give the container's root (host `uid`:`gid`) what it must own or reach
/// before its init runs: berth's directories on the way to its files
/// become searchable (0711, never listable), its root filesystem's write
/// layer and mount point and its /etc files become its own.
pub fn prepare_container_dir(
    paths: &Paths,
    container_dir: &Path,
    owned: &[PathBuf],
    (uid, gid): (u32, u32),
) -> anyhow::Result<()> {
    // Above berth's root nothing is changed: it must already let the
    // container's root pass.
    check_reachable(paths.root(), "berth's root", (uid, gid))?;
    let containers_dir = container_dir.parent().unwrap_or(container_dir);
    for dir in [paths.root(), containers_dir, container_dir] {
        berth_state::make_searchable(dir)?;
    }
    for path in owned {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to the container's root", path.display()))?;
    }
    Ok(())
}

/// Fail with one line unless the container's root (host `uid`:`gid`)
/// may search every directory above `path` (what it mounts or enters runs
/// as that user: bind sources must be reachable, as with docker's
/// userns-remap).
pub fn check_reachable(path: &Path, what: &str, (uid, gid): (u32, u32)) -> anyhow::Result<()> {
    for dir in path.ancestors().skip(1) {
        let meta =
            std::fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
        let mode = meta.permissions().mode();
        let searchable = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            bail!(
                "a container in a user namespace cannot reach {what} {}: {} is closed to its root (host uid {uid}); chmod o+x it, or use --userns=host",
                path.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(container_id: u32, host_id: u32, size: u32) -> IdRange {
        IdRange {
            container_id,
            host_id,
            size,
        }
    }

    #[test]
    fn flags_and_the_remap_setting_become_a_request() {
        assert_eq!(request(None, &[], &[], None).unwrap(), Request::Host);
        assert_eq!(
            request(None, &[], &[], Some("default")).unwrap(),
            Request::Remap {
                user: "berth".into()
            }
        );
        assert_eq!(
            request(Some("host"), &[], &[], Some("default")).unwrap(),
            Request::Host
        );
        assert_eq!(
            request(Some("auto:size=1000"), &[], &[], Some("alice")).unwrap(),
            Request::Auto {
                user: "alice".into(),
                size: 1000
            }
        );
        let explicit = request(None, &["0:100000:1000,1000:5000:10".into()], &[], None).unwrap();
        let uid = vec![range(0, 100000, 1000), range(1000, 5000, 10)];
        assert_eq!(
            explicit,
            Request::Explicit {
                uid: uid.clone(),
                gid: uid
            }
        );
        for bad in ["auto:size=0", "private", "auto:size=x"] {
            assert!(request(Some(bad), &[], &[], None).is_err(), "{bad}");
        }
        for bad in ["0:1", "0:1:0", "a:1:2", "0:4294967295:2", "1:100000:10"] {
            let err = request(None, &[bad.into()], &[], None).unwrap_err();
            assert!(!format!("{err:#}").is_empty(), "{bad}");
        }
        assert!(request(Some("auto"), &["0:1:1".into()], &[], None).is_err());
    }

    #[test]
    fn subordinate_ranges_are_read_by_name_or_uid() {
        let text =
            "alice:100000:65536\nberth:200000:65536\n1001:300000:1000\nberth:bad:1\nberth:5:0\n";
        assert_eq!(
            subordinate_ranges(text, "berth", None),
            vec![(200000, 65536)]
        );
        assert_eq!(
            subordinate_ranges(text, "bob", Some(1001)),
            vec![(300000, 1000)]
        );
        assert!(subordinate_ranges(text, "carol", None).is_empty());
        assert_eq!(
            whole_ranges(&[(100000, 10), (500000, 5)]),
            vec![range(0, 100000, 10), range(10, 500000, 5)]
        );
    }

    #[test]
    fn auto_blocks_skip_what_other_containers_use() {
        let ranges = [(100000, 65536 * 3)];
        assert_eq!(
            free_block(&ranges, &[], 65536),
            Some(range(0, 100000, 65536))
        );
        let used = [range(0, 100000, 65536), range(0, 165536 + 10, 5)];
        assert_eq!(
            free_block(&ranges, &used, 65536),
            Some(range(0, 165536 + 15, 65536))
        );
        let full = [range(0, 100000, 65536 * 3)];
        assert_eq!(free_block(&ranges, &full, 1), None);
        // Ranges are tried in order; a later one may have room.
        assert_eq!(
            free_block(&[(1000, 10), (5000, 100)], &[], 50),
            Some(range(0, 5000, 50))
        );
    }

    #[test]
    fn a_closed_directory_on_the_way_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let inner = tmp.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(tmp.path(), 0o711).unwrap();
        mode(&tmp.path().join("a"), 0o700).unwrap();
        let file = inner.join("f");
        let err = check_reachable(&file, "the bind source", (4_000_000, 4_000_000)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("{} is closed", tmp.path().join("a").display())),
            "{text}"
        );
        mode(&tmp.path().join("a"), 0o711).unwrap();
        check_reachable(&file, "the bind source", (4_000_000, 4_000_000)).unwrap();
    }

    #[test]
    fn ids_map_both_ways() {
        let ranges = [range(0, 100000, 1000), range(1000, 5000, 10)];
        assert_eq!(IdMaps::to_host(&ranges, 0), Some(100000));
        assert_eq!(IdMaps::to_host(&ranges, 1005), Some(5005));
        assert_eq!(IdMaps::to_host(&ranges, 1010), None);
        assert_eq!(IdMaps::to_container(&ranges, 100999), Some(999));
        assert_eq!(IdMaps::to_container(&ranges, 0), None);
    }
}

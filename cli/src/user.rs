//! `-u/--user name|uid[:group|gid]` resolved as docker and runc do: in the
//! image's /etc/passwd and /etc/group (read from its layers, topmost
//! first, never through a symlink), with the user's supplementary groups.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The ids a container's process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolve `spec` against the files of `layers` (topmost first).
pub fn resolve(spec: &str, layers: &[PathBuf]) -> anyhow::Result<ResolvedUser> {
    let passwd = read_image_file(layers, "etc/passwd")?;
    let group = read_image_file(layers, "etc/group")?;
    resolve_in(
        spec,
        passwd.as_deref().unwrap_or(""),
        group.as_deref().unwrap_or(""),
    )
}

fn resolve_in(spec: &str, passwd: &str, group: &str) -> anyhow::Result<ResolvedUser> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() || group_part == Some("") {
        bail!("invalid --user {spec:?}: use name|uid[:group|gid]");
    }
    let users: Vec<(&str, u32, u32)> = passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some((
                *fields.first()?,
                fields.get(2)?.parse().ok()?,
                fields.get(3)?.parse().ok()?,
            ))
        })
        .collect();
    let groups: Vec<(&str, u32, Vec<&str>)> = group
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some((
                *fields.first()?,
                fields.get(2)?.parse().ok()?,
                fields
                    .get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                    .unwrap_or_default(),
            ))
        })
        .collect();
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => users
            .iter()
            .find(|(_, u, _)| *u == uid)
            .copied()
            .map(|(name, _, gid)| (Some(name), uid, gid))
            .unwrap_or((None, uid, 0)),
        Err(_) => match users.iter().find(|(name, _, _)| *name == user_part) {
            Some(&(name, uid, gid)) => (Some(name), uid, gid),
            None => bail!("unable to find user {user_part}: no matching entries in passwd file"),
        },
    };
    let (name, uid, mut gid) = entry;
    if let Some(group_part) = group_part {
        gid = match group_part.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match groups.iter().find(|(g, _, _)| *g == group_part) {
                Some((_, gid, _)) => *gid,
                None => {
                    bail!("unable to find group {group_part}: no matching entries in group file")
                }
            },
        };
    }
    // Supplementary groups: those that list the user as a member (only
    // when no group was given, as runc does).
    let mut additional_gids = Vec::new();
    if let (Some(name), None) = (name, group_part) {
        for (_, group_gid, members) in &groups {
            if members.contains(&name) && !additional_gids.contains(group_gid) {
                additional_gids.push(*group_gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// A file of the image, from the topmost layer that has it; `None` when no
/// layer has it. A symlink on the way is refused (a hostile image must not
/// make berth read a host file).
fn read_image_file(layers: &[PathBuf], relative: &str) -> anyhow::Result<Option<String>> {
    for layer in layers {
        let mut path = layer.clone();
        let mut found = true;
        for component in Path::new(relative).components() {
            path.push(component);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    bail!(
                        "the image's /{relative} is reached through a symlink; refusing to read it"
                    )
                }
                Ok(_) => {}
                Err(_) => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            const MAX: u64 = 4 << 20;
            let meta = std::fs::metadata(&path)?;
            if meta.len() > MAX {
                bail!("the image's /{relative} is larger than {MAX} bytes");
            }
            return std::fs::read_to_string(&path)
                .map(Some)
                .with_context(|| format!("cannot read the image's /{relative}"));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\napp:x:1000:\nwheel:x:10:app,root\naudio:x:29:app\n";

    fn user(spec: &str) -> anyhow::Result<ResolvedUser> {
        resolve_in(spec, PASSWD, GROUP)
    }

    #[test]
    fn names_and_numbers_resolve_like_docker() {
        let app = user("app").unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.additional_gids, vec![10, 29]);
        assert_eq!(user("1000").unwrap(), app);
        let www = user("www:audio").unwrap();
        assert_eq!((www.uid, www.gid), (33, 29));
        assert!(www.additional_gids.is_empty());
        let unknown = user("4242").unwrap();
        assert_eq!((unknown.uid, unknown.gid), (4242, 0));
        assert_eq!(user("4242:99").unwrap().gid, 99);
    }

    #[test]
    fn unknown_names_and_malformed_specs_are_refused() {
        for bad in ["nobody-here", "app:nogroup", "", ":1", "app:"] {
            assert!(user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_come_from_the_topmost_layer_and_never_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, base) = (tmp.path().join("top"), tmp.path().join("base"));
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::write(base.join("etc/passwd"), "old:x:1:1::/:/bin/sh\n").unwrap();
        std::fs::write(top.join("etc/passwd"), PASSWD).unwrap();
        let layers = vec![top.clone(), base.clone()];
        assert_eq!(resolve("app", &layers).unwrap().uid, 1000);
        assert!(resolve("old", &layers).is_err());

        std::fs::remove_file(top.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", top.join("etc/passwd")).unwrap();
        let err = resolve("root", &layers).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }
}

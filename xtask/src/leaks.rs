//! Leak check: what the e2e suite may leave behind on the machine it ran on.
//!
//! A snapshot is taken before and after the suite; anything present after
//! but not before is a leak and fails the run. Each kind of resource is a
//! set of stable text keys, so the diff is a plain set difference and the
//! report can name every leaked thing.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::mounts::mount_table;

/// What to look for: everything berth creates is named after it, and the
/// tests keep their state roots under `test_tmp_dir`.
#[derive(Debug, Clone)]
pub struct LeakProbe {
    pub berth_bin: PathBuf,
    pub test_tmp_dir: PathBuf,
    pub cgroup_root: PathBuf,
}

/// One kind of resource and the keys of the instances seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    kinds: Vec<(&'static str, BTreeSet<String>)>,
}

impl LeakProbe {
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut kinds = vec![
            ("mount", self.mounts()?),
            ("cgroup", self.cgroups()),
            ("network link", network_links()),
            ("network namespace", network_namespaces()),
            ("process", self.processes()),
            ("file left in the tests' TMPDIR", self.tmp_dir_entries()),
            ("runtime state dir", runtime_state_dirs()),
        ];
        // Without iptables berth cannot have added rules, so nothing to check.
        if let Some(rules) = iptables_rules("iptables-save") {
            kinds.push(("iptables rule", rules));
        }
        // IPv6 networks' rules of the iptables backend.
        if let Some(rules) = iptables_rules("ip6tables-save") {
            kinds.push(("ip6tables rule", rules));
        }
        // berth's nftables tables (`ip berth`, and `ip6 berth` of IPv6
        // networks), chains and rules (its netlink backend); read with the
        // `nft` program when there is one.
        if let Some(objects) = nftables_objects() {
            kinds.push(("nftables object", objects));
        }
        Ok(Snapshot { kinds })
    }

    /// The leaks since `before`, as "kind: what" lines. Tear-down that is
    /// still finishing (a container monitor exiting, a lazy unmount) gets a
    /// few seconds to settle before it counts as a leak.
    pub fn leaks_since(&self, before: &Snapshot) -> Result<Vec<String>> {
        const SETTLE: Duration = Duration::from_secs(5);
        let deadline = Instant::now() + SETTLE;
        loop {
            let leaks = self.snapshot()?.new_since(before);
            if leaks.is_empty() || Instant::now() >= deadline {
                return Ok(leaks);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Mounts mentioning berth or lying under the tests' temp dir, keyed by
    /// mount point, type and source (mount ids change on every mount).
    fn mounts(&self) -> Result<BTreeSet<String>> {
        let tmp_dir = self.test_tmp_dir.to_string_lossy();
        Ok(mount_table()?
            .iter()
            .filter(|mount| {
                let root = mount.root.to_string_lossy();
                let mount_point = mount.mount_point.to_string_lossy();
                [
                    &*root,
                    &*mount_point,
                    &mount.source,
                    &mount.mount_options,
                    &mount.super_options,
                ]
                .iter()
                .any(|field| field.contains("berth") || field.contains(tmp_dir.as_ref()))
            })
            .map(|mount| {
                format!(
                    "{} ({} from {})",
                    mount.mount_point.display(),
                    mount.fs_type,
                    mount.source
                )
            })
            .collect())
    }

    /// cgroup directories on any hierarchy whose path has a `berth`
    /// component (berth creates `<own cgroup>/berth/<id>`).
    fn cgroups(&self) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        collect_berth_cgroups(&self.cgroup_root, &self.cgroup_root, false, &mut found);
        found
    }

    /// Live processes running the berth binary (zombies have no cmdline, and
    /// are the reaper's business, not a leak of berth's).
    fn processes(&self) -> BTreeSet<String> {
        let berth_bin = self.berth_bin.to_string_lossy();
        let own_pid = std::process::id().to_string();
        let Ok(entries) = fs::read_dir("/proc") else {
            return BTreeSet::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid = entry.file_name().into_string().ok()?;
                if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == own_pid {
                    return None;
                }
                let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                cmdline
                    .contains(berth_bin.as_ref())
                    .then(|| format!("pid {pid}: {}", cmdline.trim_end()))
            })
            .collect()
    }

    fn tmp_dir_entries(&self) -> BTreeSet<String> {
        let Ok(entries) = fs::read_dir(&self.test_tmp_dir) else {
            return BTreeSet::new();
        };
        entries
            .flatten()
            .map(|entry| entry.path().display().to_string())
            .collect()
    }
}

fn collect_berth_cgroups(
    root: &Path,
    dir: &Path,
    inside_berth: bool,
    found: &mut BTreeSet<String>,
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // Only real directories: v1 layouts have `cpu -> cpu,cpuacct`
        // symlinks that would show each cgroup twice.
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let path = entry.path();
        let is_berth = inside_berth || entry.file_name().to_string_lossy().contains("berth");
        if is_berth && !is_shared_berth_parent(&path) {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            found.insert(format!("{}", relative.display()));
        }
        collect_berth_cgroups(root, &path, is_berth, found);
    }
}

/// berth keeps one `berth` cgroup per hierarchy as the parent of all its
/// containers (like docker's `/docker`); once empty it is not a leak.
fn is_shared_berth_parent(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == "berth")
        && fs::read_dir(path).is_ok_and(|entries| {
            !entries
                .flatten()
                .any(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        })
        && fs::read_to_string(path.join("cgroup.procs")).is_ok_and(|procs| procs.trim().is_empty())
}

/// Lines of a command's stdout, or None when the command is missing or fails.
fn command_lines(program: &str, args: &[&str]) -> Option<Vec<String>> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
}

/// Link names from `ip -o link` ("3: veth1@if2: <...>" -> "veth1").
fn network_links() -> BTreeSet<String> {
    command_lines("ip", &["-o", "link", "show"])
        .unwrap_or_default()
        .iter()
        .filter_map(|line| {
            let name = line.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name).to_owned())
        })
        .collect()
}

fn network_namespaces() -> BTreeSet<String> {
    command_lines("ip", &["netns", "list"])
        .unwrap_or_default()
        .iter()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// `program`'s (`iptables-save`, `ip6tables-save`) lines mentioning
/// berth, packet counters removed so that traffic during the run does not
/// look like a new rule.
fn iptables_rules(program: &str) -> Option<BTreeSet<String>> {
    let lines = command_lines(program, &[])?;
    Some(
        lines
            .iter()
            .filter(|line| line.to_ascii_lowercase().contains("berth"))
            .map(|line| match line.rfind(" [") {
                Some(counters) if line.starts_with(':') => line[..counters].to_owned(),
                _ => line.clone(),
            })
            .collect(),
    )
}

/// `nft list ruleset` lines of berth: every line of a table named after
/// berth (its header, chains, rules, sets), and any other line that
/// mentions berth (a rule tagged `berth:...` in a foreign table), each
/// keyed by its table, with packet counters removed.
fn nftables_objects() -> Option<BTreeSet<String>> {
    let lines = command_lines("nft", &["list", "ruleset"])?;
    Some(berth_nft_lines(&lines))
}

fn berth_nft_lines(lines: &[String]) -> BTreeSet<String> {
    let mut table = String::new();
    let mut chain = String::new();
    let mut keys = BTreeSet::new();
    for line in lines {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix("table ") {
            table = header.trim_end_matches('{').trim().to_owned();
            chain.clear();
        } else if let Some(header) = trimmed.strip_prefix("chain ") {
            chain = header.trim_end_matches('{').trim().to_owned();
        }
        let ours = table.to_ascii_lowercase().contains("berth");
        if trimmed.is_empty() || trimmed == "}" || !(ours || trimmed.contains("berth")) {
            continue;
        }
        let without_counters = match trimmed.find(" counter packets ") {
            Some(at) => {
                let rest = &trimmed[at + " counter packets ".len()..];
                let after = rest
                    .splitn(4, ' ')
                    .nth(3)
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default();
                format!("{}{after}", &trimmed[..at])
            }
            None => trimmed.to_owned(),
        };
        keys.insert(format!("table {table} / {chain}: {without_counters}"));
    }
    keys
}

impl Snapshot {
    fn new_since(&self, before: &Snapshot) -> Vec<String> {
        let empty = BTreeSet::new();
        self.kinds
            .iter()
            .flat_map(|(kind, now)| {
                let then = before
                    .kinds
                    .iter()
                    .find(|(before_kind, _)| before_kind == kind)
                    .map_or(&empty, |(_, keys)| keys);
                now.difference(then)
                    .map(move |key| format!("{kind}: {key}"))
            })
            .collect()
    }
}

/// Each berth root's runtime-state directory (below /run/berth/runtime,
/// linked from `<root>/runtime`): it goes with its root.
fn runtime_state_dirs() -> BTreeSet<String> {
    let Ok(entries) = fs::read_dir("/run/berth/runtime") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path().display().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_keys_are_leaks() {
        let before = Snapshot {
            kinds: vec![("mount", BTreeSet::from(["/a".to_owned()]))],
        };
        let after = Snapshot {
            kinds: vec![("mount", BTreeSet::from(["/a".to_owned(), "/b".to_owned()]))],
        };
        assert_eq!(after.new_since(&before), vec!["mount: /b".to_owned()]);
        assert!(before.new_since(&after).is_empty());
    }

    #[test]
    fn berth_nftables_lines_are_keyed_by_table_and_chain() {
        let ruleset = "table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
		iifname \"br-x\" counter packets 3 bytes 180 accept comment \"berth:x\"
		counter packets 1 bytes 2 accept
	}
}
table ip berth {
	chain published {
		tcp dport 8080 dnat to 10.0.0.2:80 comment \"berth:c0ffee 0.0.0.0:8080/tcp\"
	}
}
table ip6 berth {
	chain forward {
		type filter hook forward priority filter; policy accept;
	}
}";
        let lines: Vec<String> = ruleset.lines().map(str::to_owned).collect();
        let keys: Vec<String> = berth_nft_lines(&lines).into_iter().collect();
        assert_eq!(
            keys,
            [
                "table ip berth / : table ip berth {",
                "table ip berth / published: chain published {",
                "table ip berth / published: tcp dport 8080 dnat to 10.0.0.2:80 comment \"berth:c0ffee 0.0.0.0:8080/tcp\"",
                "table ip filter / FORWARD: iifname \"br-x\" accept comment \"berth:x\"",
                "table ip6 berth / : table ip6 berth {",
                "table ip6 berth / forward: chain forward {",
                "table ip6 berth / forward: type filter hook forward priority filter; policy accept;",
            ]
        );
    }

    #[test]
    fn berth_cgroups_are_found_below_any_berth_component() {
        let root = std::env::temp_dir().join(format!("xtask-leaks-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("memory/user.slice/berth/abc123")).unwrap();
        fs::create_dir_all(root.join("memory/other")).unwrap();
        let mut found = BTreeSet::new();
        collect_berth_cgroups(&root, &root, false, &mut found);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            found,
            BTreeSet::from([
                "memory/user.slice/berth".to_owned(),
                "memory/user.slice/berth/abc123".to_owned()
            ])
        );
    }
}

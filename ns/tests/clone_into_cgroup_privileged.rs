//! Children born in a cgroup2 directory (clone3 with CLONE_INTO_CGROUP),
//! and the fallback when clone3 is refused. Needs root and a cgroup2 mount;
//! skips otherwise.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use berth_ns::seccomp::{Action, Profile, SyscallRule};
use berth_ns::{spawn_with_channel_in, Birthplace, Channel, Namespace};
use common::{in_child, skip_unless_root};
use nix::sys::wait::{waitpid, WaitStatus};

/// The cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let fs_type = after.split_whitespace().next()?;
        let mut fields = before.split_whitespace().skip(3);
        let (root, mount_point) = (fields.next()?, fields.next()?);
        (fs_type == "cgroup2" && root == "/").then(|| PathBuf::from(mount_point))
    })
}

/// A fresh cgroup directly below the cgroup2 root (no processes, no
/// controllers enabled below it), removed on drop.
struct TestCgroup {
    dir: PathBuf,
    /// Its path as /proc/PID/cgroup shows it (`0::/name`).
    name: String,
}

impl TestCgroup {
    fn new(tag: &str) -> Option<Self> {
        let Some(mount) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 mount");
            return None;
        };
        let name = format!("berth-ns-test-{tag}-{}", std::process::id());
        let dir = mount.join(&name);
        std::fs::create_dir(&dir).unwrap();
        Some(TestCgroup {
            dir,
            name: format!("/{name}"),
        })
    }

    fn open(&self) -> OwnedFd {
        let flags = nix::fcntl::OFlag::O_PATH
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_CLOEXEC;
        nix::fcntl::open(&self.dir, flags, nix::sys::stat::Mode::empty()).unwrap()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The child's cgroup2 path as it sees it first thing (`0::` line of
/// /proc/self/cgroup), sent to the parent.
fn report_own_cgroup(channel: Channel<String, ()>) -> i32 {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("none")
        .to_owned();
    i32::from(channel.send(&line).is_err())
}

fn own_cgroup2() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_owned()
}

/// Spawn into `cgroup` with `namespaces`; returns where the child says it
/// was and the birthplace reported.
fn spawn_and_ask(
    namespaces: &[Namespace],
    cgroup: &OwnedFd,
) -> Result<(String, Birthplace), String> {
    let (pid, channel, birthplace) =
        spawn_with_channel_in(namespaces, Some(cgroup.as_fd()), report_own_cgroup)
            .map_err(|e| e.to_string())?;
    let seen = channel.recv().map_err(|e| e.to_string())?;
    match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, 0)) => {}
        other => return Err(format!("the child ended with {other:?}")),
    }
    Ok((seen.ok_or("no report from the child")?, birthplace))
}

#[test]
fn the_child_is_born_in_the_given_cgroup() {
    if skip_unless_root() {
        return;
    }
    let Some(cgroup) = TestCgroup::new("born") else {
        return;
    };
    let fd = cgroup.open();
    let name = cgroup.name.clone();
    in_child(|| {
        let before = own_cgroup2();
        // A new user namespace too, as a container with one: the child,
        // unmapped and so unable to write any cgroup file, is still placed.
        for namespaces in [&[][..], &[Namespace::User, Namespace::Uts][..]] {
            let (seen, birthplace) = spawn_and_ask(namespaces, &fd)?;
            if birthplace != Birthplace::GivenCgroup || seen != name {
                return Err(format!(
                    "with {namespaces:?}: born in {seen} ({birthplace:?}), expected {name}"
                ));
            }
        }
        // The parent did not move.
        if own_cgroup2() != before {
            return Err(format!(
                "the parent moved from {before} to {}",
                own_cgroup2()
            ));
        }
        Ok(())
    });
}

#[test]
fn without_clone3_the_child_starts_in_the_parents_cgroup() {
    if skip_unless_root() {
        return;
    }
    let Some(cgroup) = TestCgroup::new("fallback") else {
        return;
    };
    let fd = cgroup.open();
    in_child(|| {
        // What a container engine's default seccomp profile does to clone3.
        let profile = Profile {
            default_action: Action::Allow,
            rules: vec![SyscallRule::new(
                ["clone3"],
                Action::Errno(libc::ENOSYS as u32),
            )],
            ..Profile::default()
        };
        profile
            .compile()
            .and_then(|filter| filter.load())
            .map_err(|e| e.to_string())?;
        let (seen, birthplace) = spawn_and_ask(&[], &fd)?;
        if birthplace != Birthplace::ParentsCgroups || seen != own_cgroup2() {
            return Err(format!(
                "born in {seen} ({birthplace:?}), expected the parent's {}",
                own_cgroup2()
            ));
        }
        Ok(())
    });
}

#[test]
fn a_descriptor_that_is_no_cgroup2_directory_is_an_error() {
    if skip_unless_root() {
        return;
    }
    let not_a_cgroup = nix::fcntl::open(
        "/",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    in_child(
        || match spawn_with_channel_in(&[], Some(not_a_cgroup.as_fd()), report_own_cgroup) {
            Err(berth_ns::NsError::CloneIntoCgroup { .. }) => Ok(()),
            Err(e) => Err(format!("unexpected error {e}")),
            Ok((pid, _, birthplace)) => {
                let _ = waitpid(pid, None);
                Err(format!("spawned, {birthplace:?}"))
            }
        },
    );
}

//! What every privileged fs test needs: run a closure in a forked child
//! inside a new private mount namespace, and prove afterwards that no mount
//! leaked into the test's own namespace.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use berth_fs::make_mounts_private;
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult};

/// Mount points listed in a /proc/PID/mountinfo text.
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

/// Run `f` in a forked child in a new private mount namespace, fail the
/// test with its message if it fails, and check that no mount under `base`
/// is left in the test's mount namespace.
pub fn in_mount_namespace(base: &Path, f: impl FnOnce() -> Result<(), String>) {
    let (read_end, write_end) = pipe().unwrap();
    // SAFETY: the child only runs `f` and then `_exit`s, never returning
    // into the test harness; glibc makes malloc usable after fork even
    // though the harness is multi-threaded.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(read_end);
            let body = || -> Result<(), String> {
                unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
                make_mounts_private().map_err(|e| e.to_string())?;
                f()
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
                .unwrap_or_else(|_| Err("panicked".into()));
            let code = match result {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = File::from(write_end).write_all(msg.as_bytes());
                    1
                }
            };
            // SAFETY: _exit skips the destructors (e.g. the TempDir) that
            // belong to the parent.
            unsafe { libc::_exit(code) };
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut msg = String::new();
            File::from(read_end).read_to_string(&mut msg).unwrap();
            let status = waitpid(child, None).unwrap();
            assert_eq!(status, WaitStatus::Exited(child, 0), "child failed: {msg}");
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = base.to_str().unwrap();
    for mp in mount_points(&mountinfo) {
        assert!(!mp.starts_with(prefix), "leaked mount {mp}");
    }
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
#[allow(dead_code)] // Not every test binary reads every field.
pub struct MountLine {
    /// The root of the mount within its filesystem.
    pub root: String,
    /// Where it is mounted.
    pub mount_point: String,
    /// Per-mount options (`ro,nosuid,nodev,...`).
    pub mount_options: Vec<String>,
    /// Optional fields (`shared:N`, `master:N`, `unbindable`).
    pub optional: Vec<String>,
    /// Filesystem type.
    pub fstype: String,
    /// Per-superblock options (`rw,size=64k,mode=755`).
    pub super_options: Vec<String>,
}

#[allow(dead_code)]
impl MountLine {
    /// `true` if the per-mount options include `option`.
    pub fn has(&self, option: &str) -> bool {
        self.mount_options.iter().any(|o| o == option)
    }

    /// The optional field starting with `prefix` (`shared:`, `master:`).
    pub fn tag(&self, prefix: &str) -> Option<&str> {
        self.optional.iter().find_map(|o| o.strip_prefix(prefix))
    }
}

/// The calling process's mounts, in mountinfo order.
#[allow(dead_code)]
pub fn mount_lines() -> Vec<MountLine> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .map(|line| {
            let (fields, rest) = line.split_once(" - ").unwrap();
            let fields: Vec<&str> = fields.split(' ').collect();
            let rest: Vec<&str> = rest.split(' ').collect();
            MountLine {
                root: fields[3].to_owned(),
                mount_point: fields[4].to_owned(),
                mount_options: fields[5].split(',').map(str::to_owned).collect(),
                optional: fields[6..].iter().map(|s| (*s).to_owned()).collect(),
                fstype: rest[0].to_owned(),
                super_options: rest
                    .get(2)
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// The topmost mount at `path`, as an error message if there is none.
#[allow(dead_code)]
pub fn mount_at(path: &Path) -> Result<MountLine, String> {
    let wanted = path.to_str().unwrap();
    mount_lines()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == wanted)
        .ok_or_else(|| format!("nothing is mounted on {wanted}"))
}

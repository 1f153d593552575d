//! The device cgroup on the running host: a forked child (root, every
//! capability) in a cgroup with docker's default device rules may use
//! /dev/null but neither open a block device nor mknod one. Both forms are
//! tested where the host has them: cgroup v1 `devices.allow`/`deny`, and
//! the cgroup v2 BPF program (on a hybrid host, by leaving the v1 devices
//! hierarchy out of the discovered mounts). Needs root; skips otherwise.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_cgroup::{Cgroup, Controller, DeviceRule, Hierarchies, Resources, Version};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, geteuid, pipe, ForkResult};

/// The tests share the `berth` parent cgroups: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Removes the cgroup (and the shared `berth` parent when empty).
struct Guard(Cgroup);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.remove();
        for dir in self.0.dirs() {
            let _ = fs::remove_dir(dir.path());
            let _ = fs::remove_dir(dir.path().parent().unwrap());
        }
    }
}

/// The host's mount table without the lines `drop` matches.
fn hierarchies_without(drop: impl Fn(&str) -> bool) -> Hierarchies {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let kept: String = mountinfo
        .lines()
        .filter(|l| !drop(l))
        .map(|l| format!("{l}\n"))
        .collect();
    Hierarchies::discover(&kept, &own, Path::new("/")).unwrap()
}

/// A block device of this host (e.g. /dev/vda).
fn some_block_device() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir("/dev")
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_block_device()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// What the child tries; `restricted` says whether the default rules
/// apply (else everything must work: the control run).
fn probe(block: &Path, scratch: &Path, restricted: bool) -> Result<(), String> {
    let expect = |what: &str, result: std::io::Result<()>, allowed: bool| match (result, allowed) {
        (Ok(()), true) => Ok(()),
        (Err(e), false) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        (result, _) => Err(format!(
            "{what}: {result:?}, expected {}",
            if allowed { "success" } else { "EPERM" }
        )),
    };
    let open = |path: &Path, write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map(drop)
    };
    let make = |name: &str, kind: SFlag, major: u64, minor: u64| {
        mknod(
            &scratch.join(name),
            kind,
            Mode::from_bits_truncate(0o600),
            makedev(major, minor),
        )
        .map_err(std::io::Error::from)
    };
    expect(
        "open /dev/null rw",
        open(Path::new("/dev/null"), true),
        true,
    )?;
    expect(
        "open /dev/urandom",
        open(Path::new("/dev/urandom"), false),
        true,
    )?;
    expect(
        &format!("open {}", block.display()),
        open(block, false),
        !restricted,
    )?;
    expect(
        "open /dev/kmsg",
        open(Path::new("/dev/kmsg"), false),
        !restricted,
    )?;
    expect(
        "mknod b 8 0",
        make("sda", SFlag::S_IFBLK, 8, 0),
        !restricted,
    )?;
    expect(
        "mknod c 1 1",
        make("mem", SFlag::S_IFCHR, 1, 1),
        !restricted,
    )?;
    expect("mknod c 1 3", make("null", SFlag::S_IFCHR, 1, 3), true)?;
    Ok(())
}

/// Fork a child, put it in `cgroup` (as berth does: the parent adds the
/// task before the child goes on), and run [`probe`] there.
fn run_in(cgroup: &Cgroup, block: &Path, restricted: bool) {
    let scratch = tempfile::tempdir().unwrap();
    let (go_read, go_write) = pipe().unwrap();
    let (report_read, report_write) = pipe().unwrap();
    // SAFETY: the child only waits, runs `probe` and `_exit`s, never
    // returning into the test harness; glibc makes malloc usable after
    // fork even though the harness is multi-threaded.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(go_write);
            drop(report_read);
            let mut byte = [0u8; 1];
            let result = match File::from(go_read).read_exact(&mut byte) {
                Ok(()) => std::panic::catch_unwind(|| probe(block, scratch.path(), restricted))
                    .unwrap_or_else(|_| Err("panicked".into())),
                Err(e) => Err(format!("waiting for the parent: {e}")),
            };
            let code = match result {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = File::from(report_write).write_all(msg.as_bytes());
                    1
                }
            };
            // SAFETY: _exit skips the destructors that belong to the parent.
            unsafe { libc::_exit(code) };
        }
        ForkResult::Parent { child } => {
            drop(go_read);
            drop(report_write);
            let added = cgroup.add_task(child.as_raw());
            let mut go = File::from(go_write);
            if added.is_ok() {
                go.write_all(b"g").unwrap();
            }
            drop(go);
            let mut msg = String::new();
            File::from(report_read).read_to_string(&mut msg).unwrap();
            let status = waitpid(child, None).unwrap();
            added.unwrap();
            assert_eq!(status, WaitStatus::Exited(child, 0), "child: {msg}");
        }
    }
}

fn skip() -> Option<PathBuf> {
    if !geteuid().is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    let block = some_block_device();
    if block.is_none() {
        eprintln!("skipped: no block device in /dev");
    }
    block
}

fn defaults() -> Resources {
    Resources {
        devices: Some(DeviceRule::docker_defaults()),
        ..Resources::default()
    }
}

#[test]
fn v1_device_rules_deny_block_devices_and_mknod() {
    let Some(block) = skip() else { return };
    let hierarchies = hierarchies_without(|_| false);
    if hierarchies.placement(Controller::Devices) != Some(Version::V1) {
        eprintln!("skipped: the devices controller is not on cgroup v1 here");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let id = format!("devices-v1-{}", std::process::id());

    // Control: without rules, the probe's forbidden operations work, so
    // their EPERM below comes from the rules.
    let open = Guard(Cgroup::create(&hierarchies, &format!("{id}-open"), None).unwrap());
    open.0.apply(&Resources::default()).unwrap();
    run_in(&open.0, &block, false);
    drop(open);

    let guard = Guard(Cgroup::create(&hierarchies, &id, None).unwrap());
    guard.0.apply(&defaults()).unwrap();
    run_in(&guard.0, &block, true);
    let list = fs::read_to_string(
        guard
            .0
            .path_of(Controller::Devices)
            .unwrap()
            .join("devices.list"),
    )
    .unwrap();
    let mut got: Vec<&str> = list.lines().collect();
    got.sort();
    let mut want: Vec<String> = DeviceRule::docker_defaults()
        .iter()
        .map(ToString::to_string)
        .collect();
    want.sort();
    assert_eq!(got, want, "devices.list");
}

#[test]
fn v2_device_program_denies_block_devices_and_mknod() {
    let Some(block) = skip() else { return };
    // On a hybrid host, leave the v1 devices hierarchy out so that the
    // devices rules go to the cgroup2 side (the child stays in the root of
    // the v1 devices hierarchy, which allows everything).
    let hierarchies = hierarchies_without(|l| {
        l.contains(" - cgroup ") && l.split(',').any(|o| o.trim() == "devices")
    });
    if hierarchies.placement(Controller::Devices) != Some(Version::V2) {
        eprintln!("skipped: no cgroup2 mount");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let id = format!("devices-v2-{}", std::process::id());

    let open = Guard(Cgroup::create(&hierarchies, &format!("{id}-open"), None).unwrap());
    run_in(&open.0, &block, false);
    drop(open);

    let guard = Guard(Cgroup::create(&hierarchies, &id, None).unwrap());
    guard.0.apply(&defaults()).unwrap();
    run_in(&guard.0, &block, true);
    // The program goes away with the cgroup.
    let path = guard.0.path_of(Controller::Devices).unwrap().to_owned();
    drop(guard);
    assert!(!path.exists(), "{} left behind", path.display());
}

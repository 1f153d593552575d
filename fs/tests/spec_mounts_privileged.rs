//! Spec mounts, devices and root options for real, each in a forked child
//! with its own mount namespace, checked in /proc/self/mountinfo. Needs
//! root; skips otherwise.

mod common;

use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_fs::{
    bind_onto_itself, create_default_devices, create_dev_symlinks, create_devices,
    default_cgroup_mount, default_mounts, finish_rootfs_propagation, mount_entry, move_root,
    pivot_root, propagation_flags, remount_root_readonly, set_mount_propagation,
    set_rootfs_propagation, DeviceKind, DeviceNode, FsError, MountEntry,
};
use common::{in_mount_namespace, mount_at, MountLine};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{major, minor};
use nix::unistd::geteuid;

fn is_root() -> bool {
    if geteuid().is_root() {
        true
    } else {
        eprintln!("skipped: needs root");
        false
    }
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

fn entry(destination: &str, fstype: &str, source: Option<&Path>, options: &[&str]) -> MountEntry {
    MountEntry {
        destination: destination.into(),
        fstype: Some(fstype.into()),
        source: source.map(Path::to_path_buf),
        options: options.iter().map(|&o| o.into()).collect(),
    }
}

fn mount_it(rootfs: &Path, e: &MountEntry) -> Result<(), String> {
    mount_entry(rootfs, e).map_err(|err| format!("{}: {err}", e.destination))
}

/// Mount a tmpfs with `flags` at `path` directly (test fixtures).
fn tmpfs(path: &Path, flags: MsFlags) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
    mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some("size=1m"))
        .map_err(|e| format!("tmpfs on {}: {e}", path.display()))
}

fn has_all(m: &MountLine, options: &[&str]) -> Result<(), String> {
    for o in options {
        ensure(m.has(o), || format!("{} lacks {o}: {m:?}", m.mount_point))?;
    }
    Ok(())
}

fn write_fails_with(path: &Path, errno: i32) -> Result<(), String> {
    match std::fs::write(path, b"x") {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        other => Err(format!("writing {}: {other:?}", path.display())),
    }
}

fn kernel_has(fs: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fs))
}

#[test]
fn filesystems_get_their_flags_and_data() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    // Not tmpfs's default 1777, so that the inherited mode shows.
    std::fs::create_dir_all(rootfs.join("var/cache")).unwrap();
    std::fs::set_permissions(
        rootfs.join("var/cache"),
        std::fs::Permissions::from_mode(0o710),
    )
    .unwrap();

    in_mount_namespace(tmp.path(), || {
        for e in default_mounts() {
            mount_it(&rootfs, &e)?;
        }
        let proc = mount_at(&rootfs.join("proc"))?;
        ensure(proc.fstype == "proc" && proc.has("rw"), || {
            format!("{proc:?}")
        })?;
        has_all(&proc, &["nosuid", "nodev", "noexec"])?;
        let sys = mount_at(&rootfs.join("sys"))?;
        ensure(sys.fstype == "sysfs", || format!("{sys:?}"))?;
        has_all(&sys, &["ro", "nosuid", "nodev", "noexec"])?;
        let dev = mount_at(&rootfs.join("dev"))?;
        ensure(dev.fstype == "tmpfs" && dev.has("rw"), || {
            format!("{dev:?}")
        })?;
        has_all(&dev, &["nosuid"])?;
        // strictatime: neither relatime nor noatime.
        ensure(!dev.has("relatime") && !dev.has("noatime"), || {
            format!("/dev is not strictatime: {dev:?}")
        })?;
        ensure(
            dev.super_options.iter().any(|o| o == "size=65536k")
                && dev.super_options.iter().any(|o| o == "mode=755"),
            || format!("/dev data: {dev:?}"),
        )?;
        let pts = mount_at(&rootfs.join("dev/pts"))?;
        ensure(
            pts.fstype == "devpts" && pts.super_options.iter().any(|o| o == "ptmxmode=666"),
            || format!("{pts:?}"),
        )?;
        has_all(&pts, &["nosuid", "noexec"])?;
        let shm = mount_at(&rootfs.join("dev/shm"))?;
        has_all(&shm, &["nosuid", "nodev", "noexec"])?;
        let mode = std::fs::metadata(rootfs.join("dev/shm")).unwrap().mode() & 0o7777;
        ensure(mode == 0o1777, || format!("/dev/shm mode {mode:o}"))?;
        let mqueue = mount_at(&rootfs.join("dev/mqueue"))?;
        ensure(mqueue.fstype == "mqueue", || format!("{mqueue:?}"))?;

        // A tmpfs over an existing directory keeps its mode; a missing one
        // is created; a mode= option wins.
        mount_it(
            &rootfs,
            &entry("/var/cache", "tmpfs", None, &["nosuid", "nodev"]),
        )?;
        let mode = std::fs::metadata(rootfs.join("var/cache")).unwrap().mode() & 0o7777;
        ensure(mode == 0o710, || format!("/var/cache tmpfs mode {mode:o}"))?;
        mount_it(
            &rootfs,
            &entry(
                "/run/lock",
                "tmpfs",
                None,
                &["noexec", "mode=700", "size=1m"],
            ),
        )?;
        let run = mount_at(&rootfs.join("run/lock"))?;
        has_all(&run, &["noexec"])?;
        let mode = std::fs::metadata(rootfs.join("run/lock")).unwrap().mode() & 0o7777;
        ensure(mode == 0o700, || format!("/run/lock tmpfs mode {mode:o}"))?;

        // A tmpfs on a missing directory (even /dev) has tmpfs's own mode.
        let bare = tmp.path().join("bare");
        std::fs::create_dir(&bare).map_err(|e| e.to_string())?;
        for destination in ["/dev", "/scratch"] {
            mount_it(&bare, &entry(destination, "tmpfs", None, &["nosuid"]))?;
            let path = bare.join(&destination[1..]);
            let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
            ensure(mode == 0o1777, || {
                format!("{destination} tmpfs mode {mode:o}")
            })?;
        }

        // `cgroup` is cgroup2 here.
        if kernel_has("cgroup2") {
            mount_it(&rootfs, &default_cgroup_mount())?;
            let cg = mount_at(&rootfs.join("sys/fs/cgroup"))?;
            ensure(cg.fstype == "cgroup2", || format!("{cg:?}"))?;
            has_all(&cg, &["ro", "nosuid", "nodev", "noexec"])?;
        } else {
            eprintln!("cgroup part skipped: no cgroup2 in /proc/filesystems");
        }
        Ok(())
    });
}

#[test]
fn bind_mounts_get_their_flags() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = base.join("rootfs");
    let vol = base.join("vol");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    std::fs::write(vol.join("data"), b"volume").unwrap();
    let file = base.join("app.conf");
    std::fs::write(&file, b"conf").unwrap();

    in_mount_namespace(base, || {
        // A submount in the source, to tell bind from rbind and ro from rro.
        tmpfs(&vol.join("sub"), MsFlags::empty())?;

        // What podman and containerd write.
        mount_it(&rootfs, &entry("/ro", "bind", Some(&vol), &["rbind", "ro"]))?;
        let ro = mount_at(&rootfs.join("ro"))?;
        has_all(&ro, &["ro"])?;
        write_fails_with(&rootfs.join("ro/new"), libc::EROFS)?;
        let data = std::fs::read(rootfs.join("ro/data")).map_err(|e| e.to_string())?;
        ensure(data == b"volume", || "volume content".into())?;
        // rbind brought the submount; plain ro left it writable.
        let sub = mount_at(&rootfs.join("ro/sub"))?;
        ensure(sub.has("rw"), || format!("ro/sub: {sub:?}"))?;

        // Type bind alone is a (non-recursive) bind too.
        mount_it(&rootfs, &entry("/typed", "bind", Some(&vol), &["ro"]))?;
        let typed = mount_at(&rootfs.join("typed"))?;
        ensure(typed.root.ends_with("/vol") && typed.has("ro"), || {
            format!("typed: {typed:?}")
        })?;
        ensure(mount_at(&rootfs.join("typed/sub")).is_err(), || {
            "type bind without rbind carried the submount".into()
        })?;

        // rro: the submount too.
        mount_it(
            &rootfs,
            &entry("/rro", "bind", Some(&vol), &["rbind", "rro"]),
        )?;
        has_all(&mount_at(&rootfs.join("rro"))?, &["ro"])?;
        has_all(&mount_at(&rootfs.join("rro/sub"))?, &["ro"])?;
        write_fails_with(&rootfs.join("rro/sub/new"), libc::EROFS)?;

        // Any type with a bind option is a bind; bind without rbind leaves
        // the submount behind; nosuid/nodev/noexec apply.
        mount_it(
            &rootfs,
            &entry(
                "/hardened",
                "none",
                Some(&vol),
                &["bind", "nosuid", "nodev", "noexec"],
            ),
        )?;
        has_all(
            &mount_at(&rootfs.join("hardened"))?,
            &["rw", "nosuid", "nodev", "noexec"],
        )?;
        ensure(mount_at(&rootfs.join("hardened/sub")).is_err(), || {
            "bind (not rbind) carried the submount".into()
        })?;

        // rw on a read-only source clears it (runc: `mount --bind -o`).
        let ro_src = base.join("ro-src");
        tmpfs(&ro_src, MsFlags::empty())?;
        mount(
            None::<&str>,
            &ro_src,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("ro-src: {e}"))?;
        write_fails_with(&ro_src.join("x"), libc::EROFS)?;
        mount_it(
            &rootfs,
            &entry("/made-rw", "bind", Some(&ro_src), &["rbind", "rw"]),
        )?;
        has_all(&mount_at(&rootfs.join("made-rw"))?, &["rw"])?;
        std::fs::write(rootfs.join("made-rw/x"), b"x").map_err(|e| format!("made-rw: {e}"))?;

        // A file source gets an empty file as its mount point.
        mount_it(
            &rootfs,
            &entry("/etc/app/app.conf", "bind", Some(&file), &["bind", "ro"]),
        )?;
        let conf = std::fs::read(rootfs.join("etc/app/app.conf")).map_err(|e| e.to_string())?;
        ensure(conf == b"conf", || "file bind content".into())?;
        has_all(&mount_at(&rootfs.join("etc/app/app.conf"))?, &["ro"])?;
        Ok(())
    });
    // The host side was never written through the read-only mounts.
    assert!(!vol.join("new").exists());
    assert_eq!(
        std::fs::read_dir(base.join("rootfs/etc/app"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn propagation_options_reach_the_new_mount() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = base.join("rootfs");
    let src = base.join("src");
    std::fs::create_dir_all(&rootfs).unwrap();

    in_mount_namespace(base, || {
        tmpfs(&src, MsFlags::empty())?;
        set_mount_propagation(&src, MsFlags::MS_SHARED).map_err(|e| e.to_string())?;
        let group = mount_at(&src)?
            .tag("shared:")
            .ok_or("the source is not shared")?
            .to_owned();

        mount_it(
            &rootfs,
            &entry("/shared", "bind", Some(&src), &["bind", "shared"]),
        )?;
        mount_it(
            &rootfs,
            &entry("/slave", "bind", Some(&src), &["bind", "slave"]),
        )?;
        mount_it(
            &rootfs,
            &entry("/private", "bind", Some(&src), &["bind", "private"]),
        )?;
        mount_it(
            &rootfs,
            &entry("/unbindable", "bind", Some(&src), &["bind", "runbindable"]),
        )?;
        mount_it(&rootfs, &entry("/fresh", "tmpfs", None, &["shared"]))?;

        let shared = mount_at(&rootfs.join("shared"))?;
        ensure(shared.tag("shared:") == Some(group.as_str()), || {
            format!("shared: {shared:?}")
        })?;
        let slave = mount_at(&rootfs.join("slave"))?;
        ensure(
            slave.tag("master:") == Some(group.as_str()) && slave.tag("shared:").is_none(),
            || format!("slave: {slave:?}"),
        )?;
        let private = mount_at(&rootfs.join("private"))?;
        ensure(private.optional.is_empty(), || {
            format!("private: {private:?}")
        })?;
        let unbindable = mount_at(&rootfs.join("unbindable"))?;
        ensure(unbindable.optional == ["unbindable"], || {
            format!("unbindable: {unbindable:?}")
        })?;
        let fresh = mount_at(&rootfs.join("fresh"))?;
        ensure(fresh.tag("shared:").is_some(), || {
            format!("fresh: {fresh:?}")
        })?;

        // Propagation works: a mount under the source reaches the shared
        // and the slave binds, not the private one.
        std::fs::create_dir(src.join("late")).map_err(|e| e.to_string())?;
        tmpfs(&src.join("late"), MsFlags::empty())?;
        for (name, expected) in [("shared", true), ("slave", true), ("private", false)] {
            let got = mount_at(&rootfs.join(name).join("late")).is_ok();
            ensure(got == expected, || format!("{name}/late mounted: {got}"))?;
        }
        Ok(())
    });
}

#[test]
fn a_symlinked_destination_stays_inside_the_rootfs() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = base.join("rootfs");
    let host_dir = base.join("host");
    let vol = base.join("vol");
    for d in [&rootfs, &host_dir, &vol] {
        std::fs::create_dir_all(d).unwrap();
    }
    // The image points /data at a host path, and /up above its root.
    symlink(&host_dir, rootfs.join("data")).unwrap();
    symlink("../../../../../..", rootfs.join("up")).unwrap();
    let inside = rootfs.join(host_dir.strip_prefix("/").unwrap());

    in_mount_namespace(base, || {
        mount_it(&rootfs, &entry("/data", "tmpfs", None, &["size=1m"]))?;
        mount_at(&inside)?;
        ensure(mount_at(&host_dir).is_err(), || {
            "tmpfs landed on the host dir".into()
        })?;

        mount_it(&rootfs, &entry("/data/x", "bind", Some(&vol), &["rbind"]))?;
        mount_at(&inside.join("x"))?;
        mount_it(
            &rootfs,
            &entry(&format!("/up{}", vol.display()), "tmpfs", None, &[]),
        )?;
        ensure(mount_at(&vol).is_err(), || {
            "/up/.. climbed out of the rootfs".into()
        })?;
        mount_at(&rootfs.join(vol.strip_prefix("/").unwrap()))?;

        let fifo = DeviceNode {
            path: "/data/fifo".into(),
            kind: DeviceKind::Fifo,
            major: 0,
            minor: 0,
            file_mode: 0o600,
            uid: 0,
            gid: 0,
        };
        // Created in the tmpfs mounted at <rootfs>/<host_dir>.
        create_devices(&rootfs, &[fifo], false).map_err(|e| e.to_string())?;
        ensure(inside.join("fifo").exists(), || {
            "fifo not in the rootfs".into()
        })?;
        Ok(())
    });
    assert_eq!(std::fs::read_dir(&host_dir).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&vol).unwrap().count(), 0);
}

fn stat_of(path: &Path) -> Result<std::fs::Metadata, String> {
    std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))
}

#[test]
fn device_nodes_get_their_mode_and_owner() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = base.join("rootfs");
    let plain = base.join("plain");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::create_dir_all(plain.join("dev")).unwrap();
    std::fs::write(plain.join("dev/null"), b"").unwrap();

    in_mount_namespace(base, || {
        // The mode must come from the node, not the umask.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        for e in default_mounts() {
            mount_it(&rootfs, &e)?;
        }
        create_default_devices(&rootfs, false).map_err(|e| e.to_string())?;
        create_dev_symlinks(&rootfs).map_err(|e| e.to_string())?;
        let dev = rootfs.join("dev");
        for (name, ma, mi) in [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("tty", 5, 0),
            ("urandom", 1, 9),
        ] {
            let m = stat_of(&dev.join(name))?;
            ensure(
                m.file_type().is_char_device()
                    && (major(m.rdev()), minor(m.rdev())) == (ma, mi)
                    && m.mode() & 0o7777 == 0o666
                    && (m.uid(), m.gid()) == (0, 0),
                || format!("/dev/{name}: {m:?}"),
            )?;
        }
        let link = |n: &str| std::fs::read_link(dev.join(n)).unwrap_or_default();
        ensure(link("ptmx") == Path::new("pts/ptmx"), || "ptmx".into())?;
        ensure(link("fd") == Path::new("/proc/self/fd"), || "fd".into())?;
        let kcore = Path::new("/proc/kcore").exists();
        ensure((link("core") == Path::new("/proc/kcore")) == kcore, || {
            format!("/dev/core with /proc/kcore present: {kcore}")
        })?;

        let nodes = [
            DeviceNode {
                path: "/dev/custom/zero2".into(),
                kind: DeviceKind::Char,
                major: 1,
                minor: 5,
                file_mode: 0o620,
                uid: 1000,
                gid: 2000,
            },
            DeviceNode {
                path: "/dev/loop-test".into(),
                kind: DeviceKind::Block,
                major: 7,
                minor: 0,
                file_mode: 0o660,
                uid: 0,
                gid: 6,
            },
            DeviceNode {
                path: "/dev/pipe".into(),
                kind: DeviceKind::Fifo,
                major: 0,
                minor: 0,
                file_mode: 0o644,
                uid: 5,
                gid: 5,
            },
            // The spec's own /dev/null wins over the default's mode.
            DeviceNode {
                path: "/dev/null".into(),
                kind: DeviceKind::Char,
                major: 1,
                minor: 3,
                file_mode: 0o600,
                uid: 0,
                gid: 0,
            },
        ];
        create_devices(&rootfs, &nodes, false).map_err(|e| e.to_string())?;
        let m = stat_of(&dev.join("custom/zero2"))?;
        ensure(
            m.file_type().is_char_device()
                && m.rdev() == nix::sys::stat::makedev(1, 5)
                && m.mode() & 0o7777 == 0o620
                && (m.uid(), m.gid()) == (1000, 2000),
            || format!("zero2: {m:?}"),
        )?;
        let m = stat_of(&dev.join("loop-test"))?;
        ensure(
            m.file_type().is_block_device()
                && m.rdev() == nix::sys::stat::makedev(7, 0)
                && m.mode() & 0o7777 == 0o660
                && m.gid() == 6,
            || format!("loop-test: {m:?}"),
        )?;
        let m = stat_of(&dev.join("pipe"))?;
        ensure(
            m.file_type().is_fifo() && m.mode() & 0o7777 == 0o644 && m.uid() == 5,
            || format!("pipe: {m:?}"),
        )?;
        ensure(stat_of(&dev.join("null"))?.mode() & 0o7777 == 0o600, || {
            "the spec's /dev/null mode".into()
        })?;

        // From the host: an empty file with the host's node mounted on it.
        let zero = DeviceNode {
            path: "/dev/zero".into(),
            kind: DeviceKind::Char,
            major: 1,
            minor: 5,
            file_mode: 0o666,
            uid: 0,
            gid: 0,
        };
        let bound = base.join("bound");
        std::fs::create_dir_all(&bound).map_err(|e| e.to_string())?;
        create_devices(&bound, std::slice::from_ref(&zero), true).map_err(|e| e.to_string())?;
        mount_at(&bound.join("dev/zero"))?;
        let m = stat_of(&bound.join("dev/zero"))?;
        ensure(m.rdev() == nix::sys::stat::makedev(1, 5), || {
            format!("{m:?}")
        })?;
        // The host's node must be the device asked for.
        let wrong = DeviceNode {
            path: "/dev/null".into(),
            ..zero
        };
        match create_devices(&bound, &[wrong], true) {
            Err(FsError::DeviceMismatch { .. }) => {}
            other => return Err(format!("host /dev/null as 1:5: {other:?}")),
        }

        // An image's /dev/null that is not the device is refused.
        match create_default_devices(&plain, false) {
            Err(FsError::DeviceMismatch { found, .. }) if found == "a regular file" => {}
            other => return Err(format!("regular /dev/null: {other:?}")),
        }
        Ok(())
    });
}

/// Enter a new user namespace mapping root to root, then a new mount
/// namespace it owns: the mounts copied into it are locked.
fn enter_user_namespace() -> Result<(), String> {
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare user: {e}"))?;
    for (file, text) in [
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", "0 0 1"),
        ("/proc/self/gid_map", "0 0 1"),
    ] {
        std::fs::write(file, text).map_err(|e| format!("{file}: {e}"))?;
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare mount: {e}"))
}

#[test]
fn locked_flags_are_kept_and_devices_are_bound_in_a_user_namespace() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = base.join("rootfs");
    let src = base.join("src");
    std::fs::create_dir_all(rootfs.join("dev")).unwrap();

    in_mount_namespace(base, || {
        tmpfs(
            &src,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
        enter_user_namespace()?;

        // ro alone would clear nosuid/nodev/noexec, which the kernel
        // refuses; they are kept instead.
        mount_it(&rootfs, &entry("/ro", "bind", Some(&src), &["rbind", "ro"]))?;
        has_all(
            &mount_at(&rootfs.join("ro"))?,
            &["ro", "nosuid", "nodev", "noexec"],
        )?;
        // Asking to clear a locked flag is an error, not a silent keep.
        for clearing in ["suid", "exec", "dev"] {
            match mount_entry(
                &rootfs,
                &entry("/bad", "bind", Some(&src), &["bind", clearing]),
            ) {
                Err(FsError::LockedMountFlags { .. }) => {}
                other => return Err(format!("{clearing}: {other:?}")),
            }
        }

        // mknod is not permitted here: the host's node is bound instead.
        create_default_devices(&rootfs, false).map_err(|e| e.to_string())?;
        let null = stat_of(&rootfs.join("dev/null"))?;
        ensure(
            null.file_type().is_char_device() && null.rdev() == nix::sys::stat::makedev(1, 3),
            || format!("{null:?}"),
        )?;
        mount_at(&rootfs.join("dev/null"))?;
        Ok(())
    });
}

/// A rootfs with busybox as /bin/sh.
fn busybox_rootfs(rootfs: &Path) {
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    symlink("busybox", rootfs.join("bin/sh")).unwrap();
}

#[test]
fn move_root_enters_the_rootfs_without_pivot_root() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = base.join("rootfs");
    busybox_rootfs(&rootfs);

    in_mount_namespace(base, || {
        mount_it(
            &rootfs,
            &entry("/proc", "proc", None, &["nosuid", "nodev", "noexec"]),
        )?;
        let old_root = nix::fcntl::open(
            "/",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| e.to_string())?;

        move_root(&rootfs).map_err(|e| e.to_string())?;

        let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
        ensure(cwd == Path::new("/"), || format!("cwd {cwd:?}"))?;
        ensure(Path::new("/bin/busybox").exists(), || {
            "no /bin/busybox".into()
        })?;
        ensure(!base.exists(), || "the host's tmp is still visible".into())?;
        ensure(Path::new("/proc/self/fd").is_dir(), || {
            "no /proc/self".into()
        })?;
        // The host's own procfs and sysfs were detached under the new root.
        for host_only in ["proc/self", "sys/kernel"] {
            let found = nix::fcntl::openat(
                &old_root,
                host_only,
                nix::fcntl::OFlag::O_PATH,
                nix::sys::stat::Mode::empty(),
            );
            ensure(matches!(found, Err(nix::errno::Errno::ENOENT)), || {
                format!("host {host_only} still mounted: {found:?}")
            })?;
        }
        std::fs::write("/hello", b"moved").map_err(|e| format!("/hello: {e}"))?;
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", "test -d /proc/1 && echo ok > /from-sh"])
            .status()
            .map_err(|e| format!("/bin/sh: {e}"))?;
        ensure(status.success(), || format!("/bin/sh: {status}"))
    });
    assert_eq!(std::fs::read(rootfs.join("hello")).unwrap(), b"moved");
    assert_eq!(std::fs::read(rootfs.join("from-sh")).unwrap(), b"ok\n");
}

#[test]
fn shared_rootfs_propagation_is_applied_after_the_pivot() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();

    in_mount_namespace(base, || {
        // A host whose "/" is shared, and a rootfs on a mount of its own
        // below it (which becomes shared too).
        set_mount_propagation(Path::new("/"), MsFlags::MS_SHARED | MsFlags::MS_REC)
            .map_err(|e| e.to_string())?;
        tmpfs(base, MsFlags::empty())?;
        ensure(mount_at(base)?.tag("shared:").is_some(), || {
            "fixture".into()
        })?;
        let rootfs = base.join("rootfs");
        std::fs::create_dir(&rootfs).map_err(|e| e.to_string())?;

        let rshared = propagation_flags("rshared");
        set_rootfs_propagation(&rootfs, rshared).map_err(|e| e.to_string())?;
        ensure(mount_at(Path::new("/"))?.tag("shared:").is_some(), || {
            "/ is not shared".into()
        })?;
        // The mount holding the rootfs is private, or pivot_root would fail.
        let holder = mount_at(base)?;
        ensure(holder.optional.is_empty(), || {
            format!("rootfs parent: {holder:?}")
        })?;

        bind_onto_itself(&rootfs).map_err(|e| e.to_string())?;
        pivot_root(&rootfs).map_err(|e| e.to_string())?;
        // /proc for mountinfo.
        std::fs::create_dir("/proc").map_err(|e| e.to_string())?;
        mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| e.to_string())?;
        ensure(mount_at(Path::new("/"))?.tag("shared:").is_none(), || {
            "shared before finish_rootfs_propagation".into()
        })?;
        finish_rootfs_propagation(rshared).map_err(|e| e.to_string())?;
        ensure(mount_at(Path::new("/"))?.tag("shared:").is_some(), || {
            "/ is not shared after finish_rootfs_propagation".into()
        })
    });
}

#[test]
fn read_only_root_keeps_its_flags_and_leaves_other_mounts_alone() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs: PathBuf = base.join("rootfs");

    in_mount_namespace(base, || {
        tmpfs(&rootfs, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
        for e in default_mounts() {
            mount_it(&rootfs, &e)?;
        }
        pivot_root(&rootfs).map_err(|e| e.to_string())?;
        remount_root_readonly().map_err(|e| e.to_string())?;

        has_all(&mount_at(Path::new("/"))?, &["ro", "nosuid", "nodev"])?;
        write_fails_with(Path::new("/x"), libc::EROFS)?;
        // Only the root mount changed.
        std::fs::write("/dev/shm/x", b"x").map_err(|e| format!("/dev/shm: {e}"))?;
        has_all(&mount_at(Path::new("/dev"))?, &["rw"])?;
        ensure(Path::new("/proc/self/fd").is_dir(), || {
            "/proc is gone".into()
        })
    });
}

#[test]
fn tmpcopyup_fills_the_new_tmpfs_with_what_it_covers() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = base.join("rootfs");
    let run = rootfs.join("run");
    std::fs::create_dir_all(run.join("sub")).unwrap();
    std::fs::write(run.join("pid"), "42").unwrap();
    std::fs::set_permissions(run.join("pid"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(run.join("pid"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
    symlink("../pid", run.join("sub/link")).unwrap();

    in_mount_namespace(base, || {
        let e = entry("/run", "tmpfs", None, &["nosuid", "tmpcopyup", "ro"]);
        mount_it(&rootfs, &e)?;
        let m = mount_at(&run)?;
        ensure(m.fstype == "tmpfs", || format!("not a tmpfs: {m:?}"))?;
        has_all(&m, &["ro", "nosuid"])?;
        let text = std::fs::read_to_string(run.join("pid")).map_err(|e| e.to_string())?;
        ensure(text == "42", || format!("copied file reads {text:?}"))?;
        let meta = stat_of(&run.join("pid"))?;
        ensure(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777) == (1234, 5678, 0o640),
            || format!("owner/mode not kept: {meta:?}"),
        )?;
        ensure(stat_of(&run)?.mode() & 0o7777 == 0o750, || {
            "the tmpfs root lost the directory's mode".into()
        })?;
        let link = std::fs::read_link(run.join("sub/link")).map_err(|e| e.to_string())?;
        ensure(link == Path::new("../pid"), || format!("link -> {link:?}"))?;
        // A copy, not the original, and read-only as asked.
        write_fails_with(&run.join("new"), libc::EROFS)?;
        Ok(())
    });
    // The image's directory is untouched.
    assert_eq!(std::fs::read_to_string(run.join("pid")).unwrap(), "42");
    assert!(!run.join("new").exists());
}

#[test]
fn a_cgroup_view_binds_each_hierarchy_read_only_into_a_tmpfs() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = base.join("rootfs");
    std::fs::create_dir_all(rootfs.join("sys/fs/cgroup")).unwrap();
    let memory = base.join("host-memory");
    let pids = base.join("host-pids");
    for (dir, file) in [(&memory, "memory.limit_in_bytes"), (&pids, "pids.max")] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), "42\n").unwrap();
    }
    let views = vec![
        ("memory".to_owned(), memory.clone()),
        ("pids".to_owned(), pids.clone()),
    ];
    let bad = vec![("../escape".to_owned(), memory.clone())];
    in_mount_namespace(base, || {
        let e = entry(
            "/sys/fs/cgroup",
            "cgroup",
            None,
            &["nosuid", "nodev", "noexec", "ro"],
        );
        ensure(
            berth_fs::mount_cgroup_view(&rootfs, &e, &bad).is_err(),
            || "a view name with '/' was taken".into(),
        )?;
        berth_fs::mount_cgroup_view(&rootfs, &e, &views).map_err(|e| e.to_string())?;
        let cgroup = rootfs.join("sys/fs/cgroup");
        let top = mount_at(&cgroup)?;
        ensure(top.fstype == "tmpfs", || format!("{top:?}"))?;
        has_all(&top, &["ro", "nosuid", "nodev", "noexec"])?;
        for (name, file) in [("memory", "memory.limit_in_bytes"), ("pids", "pids.max")] {
            let m = mount_at(&cgroup.join(name))?;
            has_all(&m, &["ro", "nosuid", "nodev", "noexec"])?;
            let text =
                std::fs::read_to_string(cgroup.join(name).join(file)).map_err(|e| e.to_string())?;
            ensure(text == "42\n", || format!("{name}/{file}: {text:?}"))?;
            write_fails_with(&cgroup.join(name).join(file), libc::EROFS)?;
        }
        write_fails_with(&cgroup.join("new"), libc::EROFS)?;
        Ok(())
    });
}

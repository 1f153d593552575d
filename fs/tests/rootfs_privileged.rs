//! The whole rootfs sequence for real, in a forked child with its own mount
//! namespace. Needs root; skips otherwise.

mod common;

use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
use std::path::Path;

use berth_fs::{
    ensure_dir_in_root, enter_workdir, make_mounts_private, mount_kernel_filesystems, pivot_root,
    settle_volatile_layer, OverlayRootfs,
};
use common::{in_mount_namespace, mount_lines, mount_points};
use nix::sys::stat::{major, minor};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::geteuid;

/// Runs in the forked child: everything that needs the new mount namespace.
fn in_container(rootfs: &OverlayRootfs, host_tmp: &Path) -> Result<(), String> {
    make_mounts_private().map_err(|e| e.to_string())?;
    rootfs.mount().map_err(|e| e.to_string())?;
    mount_kernel_filesystems(&rootfs.target).map_err(|e| e.to_string())?;
    pivot_root(&rootfs.target).map_err(|e| e.to_string())?;

    let cwd = std::env::current_dir().map_err(|e| format!("cwd: {e}"))?;
    if cwd != Path::new("/") {
        return Err(format!("cwd after pivot_root is {cwd:?}"));
    }
    if !Path::new("/proc/self").exists() {
        return Err("/proc/self is missing".into());
    }

    let null = std::fs::symlink_metadata("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    use std::os::unix::fs::MetadataExt;
    if !null.file_type().is_char_device()
        || major(null.rdev()) != 1
        || minor(null.rdev()) != 3
        || null.permissions().mode() & 0o777 != 0o666
    {
        return Err(format!("/dev/null is not char 1:3 0666: {null:?}"));
    }
    for dev in ["zero", "full", "random", "urandom", "tty"] {
        let m = std::fs::symlink_metadata(format!("/dev/{dev}"))
            .map_err(|e| format!("/dev/{dev}: {e}"))?;
        if !m.file_type().is_char_device() {
            return Err(format!("/dev/{dev} is not a char device"));
        }
    }
    let ptmx = std::fs::read_link("/dev/ptmx").map_err(|e| format!("/dev/ptmx: {e}"))?;
    if ptmx != Path::new("pts/ptmx") || !Path::new("/dev/pts/ptmx").exists() {
        return Err(format!("/dev/ptmx -> {ptmx:?}"));
    }
    let stdout = std::fs::read_link("/dev/stdout").map_err(|e| format!("/dev/stdout: {e}"))?;
    if stdout != Path::new("/proc/self/fd/1") {
        return Err(format!("/dev/stdout -> {stdout:?}"));
    }
    let shm = std::fs::metadata("/dev/shm").map_err(|e| format!("/dev/shm: {e}"))?;
    if shm.permissions().mode() & 0o7777 != 0o1777 {
        return Err(format!("/dev/shm mode {:o}", shm.permissions().mode()));
    }

    let sys = statvfs("/sys").map_err(|e| format!("statvfs /sys: {e}"))?;
    if !sys.flags().contains(FsFlags::ST_RDONLY) {
        return Err("/sys is writable".into());
    }
    if std::fs::write("/sys/kernel/berth-test", b"x").is_ok() {
        return Err("wrote into /sys".into());
    }

    // The old root is gone.
    if host_tmp.exists() {
        return Err(format!(
            "{} still visible after pivot_root",
            host_tmp.display()
        ));
    }
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("mountinfo: {e}"))?;
    let allowed = [
        "/",
        "/proc",
        "/sys",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
    ];
    for mp in mount_points(&mountinfo) {
        if !allowed.contains(&mp.as_str()) {
            return Err(format!("unexpected mount {mp} in:\n{mountinfo}"));
        }
    }

    // Writes land in the upper layer (checked by the parent).
    std::fs::write("/hello", b"from the container").map_err(|e| format!("/hello: {e}"))?;
    let wd = ensure_dir_in_root(Path::new("/"), "/work/dir").map_err(|e| e.to_string())?;
    if wd != Path::new("/work/dir") || !wd.is_dir() {
        return Err(format!("workdir {wd:?}"));
    }
    let cwd = enter_workdir("/work/dir/sub").map_err(|e| e.to_string())?;
    if cwd != Path::new("/work/dir/sub") || std::env::current_dir().ok() != Some(cwd.clone()) {
        return Err(format!("enter_workdir gave {cwd:?}"));
    }

    // The rootfs is usable: run the shell from the image.
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", "test -c /dev/null && echo ok > /from-sh"])
        .status()
        .map_err(|e| format!("/bin/sh: {e}"))?;
    if !status.success() {
        return Err(format!("/bin/sh: {status}"));
    }
    Ok(())
}

#[test]
fn full_rootfs_sequence_in_a_mount_namespace() {
    if !geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let lower = base.join("lower");
    std::fs::create_dir_all(lower.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", lower.join("bin/busybox")).unwrap();
    symlink("busybox", lower.join("bin/sh")).unwrap();
    let rootfs = OverlayRootfs {
        lower: vec![lower.clone()],
        upper: base.join("upper"),
        work: base.join("work"),
        target: base.join("merged"),
        volatile: false,
    };

    in_mount_namespace(base, || in_container(&rootfs, base));

    // Writes went to the upper layer, never to the image layer.
    let upper = &rootfs.upper;
    assert_eq!(
        std::fs::read(upper.join("hello")).unwrap(),
        b"from the container"
    );
    assert!(upper.join("work/dir").is_dir());
    assert_eq!(std::fs::read(upper.join("from-sh")).unwrap(), b"ok\n");
    assert!(!lower.join("hello").exists());
    assert!(!lower.join("work").exists());
    // pivot_root(".", ".") left no put_old directory behind, and the mount
    // points created in the rootfs are the only other entries.
    let mut entries: Vec<String> = std::fs::read_dir(upper)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["dev", "from-sh", "hello", "proc", "sys", "work"],
        "upper layer content"
    );
}

/// An image with more layers than one page of absolute lowerdir paths
/// holds (120 layers behind 26-character links, as the image store keeps
/// them): mounted with the layers relative to their common parent; every
/// layer is visible, upper layers win, and the caller's working directory
/// is unchanged.
#[test]
fn many_layers_mount_relative_to_their_common_parent() {
    if !geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let layers_dir = base.join("a-long-directory-name-like-var-lib-berth-images/l");
    // Topmost first, as overlay wants them.
    let lower: Vec<std::path::PathBuf> = (0..120)
        .rev()
        .map(|i| {
            let dir = layers_dir.join(format!("{i:026}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("file{i}")), i.to_string()).unwrap();
            std::fs::write(dir.join("top"), i.to_string()).unwrap();
            dir
        })
        .collect();
    let rootfs = OverlayRootfs {
        lower,
        upper: base.join("upper"),
        work: base.join("work"),
        target: base.join("merged"),
        volatile: false,
    };
    assert!(
        rootfs.mount_data(berth_fs::UnionFs::Overlay).is_err(),
        "the absolute form must be too long for this test to mean anything"
    );
    let target = rootfs.target.clone();
    in_mount_namespace(&base, move || {
        let before = std::env::current_dir().map_err(|e| e.to_string())?;
        rootfs.mount().map_err(|e| e.to_string())?;
        if std::env::current_dir().map_err(|e| e.to_string())? != before {
            return Err("the working directory moved".into());
        }
        for i in [0, 80, 119] {
            let content = std::fs::read_to_string(target.join(format!("file{i}")))
                .map_err(|e| format!("file{i}: {e}"))?;
            if content != i.to_string() {
                return Err(format!("file{i} has {content:?}"));
            }
        }
        let top = std::fs::read_to_string(target.join("top")).map_err(|e| e.to_string())?;
        if top != "119" {
            return Err(format!("the topmost layer does not win: {top}"));
        }
        Ok(())
    });
}

/// A volatile overlay (a `--rm` container's): mounted with the option, its
/// writes reach the upper layer, and once unmounted it can be mounted
/// again only after `settle_volatile_layer` (overlay refuses a work dir
/// that a volatile mount used, since a crash may have lost its writes).
#[test]
fn a_volatile_layer_mounts_again_only_once_settled() {
    if !geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let lower = base.join("lower");
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::write(lower.join("image-file"), "image").unwrap();
    let rootfs = OverlayRootfs {
        lower: vec![lower],
        upper: base.join("upper"),
        work: base.join("work"),
        target: base.join("merged"),
        volatile: true,
    };
    let target = rootfs.target.clone();
    let (upper, work) = (rootfs.upper.clone(), rootfs.work.clone());
    let never_volatile = base.join("lower");
    in_mount_namespace(&base, move || {
        let unmount = |target: &Path| {
            nix::mount::umount2(target, nix::mount::MntFlags::empty())
                .map_err(|e| format!("umount: {e}"))
        };
        rootfs.mount().map_err(|e| e.to_string())?;
        let options = mount_lines()
            .into_iter()
            .find(|m| Path::new(&m.mount_point) == target)
            .map(|m| m.super_options)
            .ok_or("the overlay is not mounted")?;
        // Linux 6.8 and later show it as `fsync=volatile`.
        if !options
            .iter()
            .any(|o| o == "volatile" || o == "fsync=volatile")
        {
            return Err(format!("not volatile: {options:?}"));
        }
        std::fs::write(target.join("written"), "by the container").map_err(|e| e.to_string())?;
        unmount(&target)?;
        if std::fs::read_to_string(upper.join("written"))
            .ok()
            .as_deref()
            != Some("by the container")
        {
            return Err("the write did not reach the upper layer".into());
        }
        if rootfs.mount().is_ok() {
            return Err("overlay mounted a used volatile layer again unsettled".into());
        }
        settle_volatile_layer(&upper, &work).map_err(|e| e.to_string())?;
        rootfs.mount().map_err(|e| format!("after settling: {e}"))?;
        unmount(&target)?;
        // A layer that was never volatile has nothing to settle.
        settle_volatile_layer(&never_volatile, &never_volatile).map_err(|e| e.to_string())
    });
}

//! Volumes and the working directory for real, in forked children with
//! their own mount namespace. Needs root; skips otherwise.

mod common;

use std::fs::File;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use berth_fs::{
    ensure_dir_in_root, enter_workdir, mount_kernel_filesystems, mount_volumes, parse_volume,
    pivot_root, prepare_volume_sources, FsError, Volume,
};
use common::in_mount_namespace;
use nix::mount::{mount, MsFlags};
use nix::unistd::geteuid;

fn id(p: &Path) -> (u64, u64) {
    let m = std::fs::metadata(p).unwrap();
    (m.dev(), m.ino())
}

fn listing(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn expect_erofs(path: &Path) -> Result<(), String> {
    match std::fs::write(path, b"x") {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(()),
        other => Err(format!(
            "write {}: expected EROFS, got {other:?}",
            path.display()
        )),
    }
}

#[test]
fn volumes_bind_inside_the_rootfs_and_ro_is_read_only() {
    if !geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let rootfs = base.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/image-file"), b"image").unwrap();
    std::fs::write(rootfs.join("plain-file"), b"image").unwrap();
    // The image's /data points at /etc: the volume must land on the
    // image's /etc, never the host's.
    symlink("/etc", rootfs.join("data")).unwrap();
    // A dangling link for a file volume.
    symlink("/opt/app/app.conf", rootfs.join("app.conf")).unwrap();

    let src = base.join("src"); // created by prepare_volume_sources
    let ro_src = base.join("ro");
    std::fs::create_dir_all(ro_src.join("sub")).unwrap();
    std::fs::write(ro_src.join("keep"), b"keep").unwrap();
    let file_src = base.join("file.conf");
    std::fs::write(&file_src, b"conf").unwrap();

    let volumes: Vec<Volume> = [
        format!("{}:/data", src.display()),
        format!("{}:/ro:ro", ro_src.display()),
        format!("{}:/app.conf:ro", file_src.display()),
    ]
    .iter()
    .map(|s| parse_volume(s).unwrap())
    .collect();
    prepare_volume_sources(&volumes).unwrap();
    assert!(src.is_dir());
    std::fs::write(src.join("from-host"), b"host").unwrap();

    let host_etc_before = (id(Path::new("/etc")), listing(Path::new("/etc")));
    let ro_before = listing(&ro_src);

    in_mount_namespace(&base, || {
        // A submount inside the ro source: :ro must cover it too.
        mount(
            Some("tmpfs"),
            &ro_src.join("sub"),
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("tmpfs: {e}"))?;
        mount_kernel_filesystems(&rootfs).map_err(|e| e.to_string())?;
        mount_volumes(&rootfs, &volumes).map_err(|e| e.to_string())?;

        // rw volume on <rootfs>/etc through the symlink.
        if id(&rootfs.join("etc")) != id(&src) {
            return Err("<rootfs>/etc is not the volume".into());
        }
        // (From here, outside the container, <rootfs>/data -> /etc is the
        // host's /etc: go through <rootfs>/etc.)
        if std::fs::read(rootfs.join("etc/from-host")).ok().as_deref() != Some(&b"host"[..]) {
            return Err("volume content not visible at <rootfs>/etc".into());
        }
        std::fs::write(rootfs.join("etc/written"), b"ctr").map_err(|e| format!("rw: {e}"))?;
        if Path::new("/etc/written").exists() || id(Path::new("/etc")) != host_etc_before.0 {
            return Err("host /etc was touched".into());
        }

        // ro volume, its submount, and the file volume.
        expect_erofs(&rootfs.join("ro/new"))?;
        expect_erofs(&rootfs.join("ro/keep"))?;
        expect_erofs(&rootfs.join("ro/sub/new"))?;
        if std::fs::read(rootfs.join("opt/app/app.conf"))
            .ok()
            .as_deref()
            != Some(&b"conf"[..])
        {
            return Err("file volume not at <rootfs>/opt/app/app.conf".into());
        }
        expect_erofs(&rootfs.join("opt/app/app.conf"))?;

        // Targets inside the container's /proc or /sys are refused.
        let bad = parse_volume(&format!("{}:/proc/sys", src.display())).unwrap();
        match mount_volumes(&rootfs, &[bad]) {
            Err(FsError::VolumeTargetForbidden { fs: "procfs", .. }) => {}
            other => return Err(format!("volume on /proc/sys: {other:?}")),
        }
        // A directory on a file and the reverse.
        let bad = parse_volume(&format!("{}:/plain-file", src.display())).unwrap();
        match mount_volumes(&rootfs, &[bad]) {
            Err(FsError::VolumeKindMismatch { .. }) => {}
            other => return Err(format!("dir on file: {other:?}")),
        }
        let bad = parse_volume(&format!("{}:/srv", file_src.display())).unwrap();
        std::fs::create_dir(rootfs.join("srv")).map_err(|e| e.to_string())?;
        match mount_volumes(&rootfs, &[bad]) {
            Err(FsError::VolumeKindMismatch { .. }) => {}
            other => return Err(format!("file on dir: {other:?}")),
        }
        Ok(())
    });

    // After the container: data written through the rw volume is in the
    // source, the ro source and the host's /etc are unchanged, and the
    // image's own /etc was only hidden.
    assert_eq!(std::fs::read(src.join("written")).unwrap(), b"ctr");
    assert_eq!(listing(&ro_src), ro_before);
    assert_eq!(std::fs::read(ro_src.join("keep")).unwrap(), b"keep");
    assert_eq!(
        (id(Path::new("/etc")), listing(Path::new("/etc"))),
        host_etc_before
    );
    assert_eq!(listing(&rootfs.join("etc")), ["image-file"]);
    assert_eq!(listing(&src), ["from-host", "written"]);
    // The file volume's mount point was created as an empty file, through
    // the dangling symlink, inside the rootfs.
    assert_eq!(std::fs::read(rootfs.join("opt/app/app.conf")).unwrap(), b"");
}

#[test]
fn workdir_is_entered_through_the_handle_and_magic_links_are_refused() {
    if !geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let rootfs = base.join("rootfs");
    std::fs::create_dir_all(rootfs.join("srv")).unwrap();
    symlink("/srv", rootfs.join("w")).unwrap();
    symlink("../../../../..", rootfs.join("up")).unwrap();
    let host_dir = base.join("host-only");
    std::fs::create_dir(&host_dir).unwrap();

    in_mount_namespace(&base, || {
        mount_kernel_filesystems(&rootfs).map_err(|e| e.to_string())?;
        // A host directory descriptor leaked into the container, as in
        // CVE-2024-21626 (deliberately not close-on-exec).
        let leaked = File::open(&host_dir).map_err(|e| format!("open: {e}"))?;
        let leaked_fd = leaked.as_raw_fd();
        pivot_root(&rootfs).map_err(|e| e.to_string())?;

        for n in 3..20 {
            let path = format!("/proc/self/fd/{n}");
            if let Ok(cwd) = enter_workdir(&path) {
                return Err(format!("enter_workdir({path}) succeeded: {cwd:?}"));
            }
            if let Ok(p) = ensure_dir_in_root(Path::new("/"), &path) {
                return Err(format!("ensure_dir_in_root({path}) succeeded: {p:?}"));
            }
            let cwd = std::env::current_dir().map_err(|e| format!("cwd: {e}"))?;
            if cwd != Path::new("/") {
                return Err(format!("cwd moved to {cwd:?} after refusing {path}"));
            }
        }
        match enter_workdir(&format!("/proc/self/fd/{leaked_fd}/x")) {
            Err(FsError::UnsafeLink { .. }) => {}
            other => return Err(format!("leaked fd: {other:?}")),
        }
        match enter_workdir("/proc/self/cwd") {
            Err(FsError::UnsafeLink { .. }) => {}
            other => return Err(format!("/proc/self/cwd: {other:?}")),
        }

        // In-image symlinks are followed inside the root.
        let cwd = enter_workdir("/w/app").map_err(|e| e.to_string())?;
        let expected = PathBuf::from("/srv/app");
        if cwd != expected || std::env::current_dir().ok() != Some(expected.clone()) {
            return Err(format!("enter_workdir(/w/app) gave {cwd:?}"));
        }
        let cwd = enter_workdir("/up/up/tmp").map_err(|e| e.to_string())?;
        if cwd != Path::new("/tmp") {
            return Err(format!("enter_workdir(/up/up/tmp) gave {cwd:?}"));
        }
        match std::fs::metadata("/srv/app") {
            Ok(m) if m.is_dir() => {}
            other => return Err(format!("/srv/app: {other:?}")),
        }
        let _ = leaked.into_raw_fd();
        Ok(())
    });

    assert!(rootfs.join("srv/app").is_dir());
    assert!(rootfs.join("tmp").is_dir());
    assert_eq!(listing(&host_dir), Vec::<String>::new());
}

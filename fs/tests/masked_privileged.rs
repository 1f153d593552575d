//! Masked and read-only paths for real, in forked children with their own
//! mount namespace, before and after pivot_root. Needs root; skips
//! otherwise.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::Path;

use berth_fs::{
    mask_paths, mount_kernel_filesystems, pivot_root, readonly_paths, FsError,
    DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS,
};
use common::in_mount_namespace;
use nix::sys::statfs::{statfs, TMPFS_MAGIC};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::geteuid;

fn skip() -> bool {
    if !geteuid().is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    false
}

/// The image: an empty rootfs with `/etc/hostname` and `/evil -> /etc`.
fn make_rootfs(base: &Path) -> std::path::PathBuf {
    let rootfs = base.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hostname"), b"image\n").unwrap();
    std::fs::write(rootfs.join("etc/motd"), b"welcome\n").unwrap();
    symlink("/etc", rootfs.join("evil")).unwrap();
    rootfs
}

fn read_all(path: &str) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|f| f.take(1 << 16).read_to_end(&mut buf))
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(buf)
}

/// Opening `path` for writing must fail with EROFS. (Nothing is ever
/// written: without the defence, a write to /proc/sysrq-trigger would act
/// on the host.)
fn expect_erofs(path: &str) -> Result<(), String> {
    match OpenOptions::new().write(true).open(path) {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(()),
        Err(e) => Err(format!("{path}: expected EROFS, got {e}")),
        Ok(_) => Err(format!("{path} could be opened for writing")),
    }
}

fn expect_null(path: &str) -> Result<(), String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    if !m.file_type().is_char_device() || m.rdev() != nix::sys::stat::makedev(1, 3) {
        return Err(format!("{path} is not /dev/null: {m:?}"));
    }
    let content = read_all(path)?;
    if !content.is_empty() {
        return Err(format!("{path} gave {} bytes", content.len()));
    }
    Ok(())
}

fn expect_empty_ro_tmpfs(path: &str) -> Result<(), String> {
    let entries = std::fs::read_dir(path)
        .map_err(|e| format!("{path}: {e}"))?
        .count();
    if entries != 0 {
        return Err(format!("{path} has {entries} entries"));
    }
    let fs = statfs(path).map_err(|e| format!("statfs {path}: {e}"))?;
    if fs.filesystem_type() != TMPFS_MAGIC {
        return Err(format!("{path} is not a tmpfs"));
    }
    match std::fs::write(Path::new(path).join("x"), b"x") {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(()),
        other => Err(format!("writing into {path}: {other:?}")),
    }
}

/// What the container sees, with / its root and the defaults applied.
/// Kernels differ in what they have (this one may lack /proc/kcore or
/// /proc/sysrq-trigger): every default path that exists is checked.
fn check_container_view() -> Result<(), String> {
    let mut masked = 0;
    for path in DEFAULT_MASKED_PATHS {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => expect_empty_ro_tmpfs(path)?,
            // Files: /dev/null, whatever the kernel has behind them.
            Ok(_) => expect_null(path)?,
            Err(_) => {
                eprintln!("{path}: not on this kernel");
                continue;
            }
        }
        masked += 1;
    }
    // /proc/keys, /proc/timer_list, /sys/firmware at least, on any kernel
    // berth supports.
    if masked < 3 {
        return Err(format!("only {masked} default masked paths exist"));
    }
    for path in DEFAULT_READONLY_PATHS {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                let flags = statvfs(*path)
                    .map_err(|e| format!("statvfs {path}: {e}"))?
                    .flags();
                let want = FsFlags::ST_RDONLY
                    | FsFlags::ST_NOSUID
                    | FsFlags::ST_NODEV
                    | FsFlags::ST_NOEXEC;
                if !flags.contains(want) {
                    return Err(format!("{path} flags {flags:?}"));
                }
            }
            Ok(_) => expect_erofs(path)?,
            Err(_) => eprintln!("{path}: not on this kernel"),
        }
    }
    expect_erofs("/proc/sys/kernel/hostname")?;
    expect_erofs("/proc/sys/vm/drop_caches")?;
    if Path::new("/proc/irq/default_smp_affinity").exists() {
        expect_erofs("/proc/irq/default_smp_affinity")?;
    }
    // ... but still readable, and the rest of /proc still works.
    if read_all("/proc/sys/kernel/ostype")? != b"Linux\n" {
        return Err("/proc/sys/kernel/ostype unreadable".into());
    }
    if read_all("/proc/self/status")?.is_empty() {
        return Err("/proc/self/status is empty".into());
    }
    // /sys as a whole is read-only (mount_kernel_filesystems).
    let sys = statvfs("/sys").map_err(|e| format!("statvfs /sys: {e}"))?;
    if !sys.flags().contains(FsFlags::ST_RDONLY) {
        return Err("/sys is writable".into());
    }
    // The image's own file, masked through the image's /evil -> /etc.
    expect_null("/etc/hostname")?;
    Ok(())
}

fn all_masked() -> Vec<&'static str> {
    let mut v = DEFAULT_MASKED_PATHS.to_vec();
    // Through an image symlink to /etc: must hit the image's /etc.
    v.push("/evil/hostname");
    v
}

#[test]
fn defaults_before_pivot_root() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = make_rootfs(base);
    let host_hostname = std::fs::read("/etc/hostname").ok();
    in_mount_namespace(base, || {
        mount_kernel_filesystems(&rootfs).map_err(|e| e.to_string())?;
        readonly_paths(&rootfs, DEFAULT_READONLY_PATHS).map_err(|e| e.to_string())?;
        mask_paths(&rootfs, &all_masked()).map_err(|e| e.to_string())?;
        // Idempotent (e.g. a later exec-time call, or overlapping lists).
        mask_paths(&rootfs, &["/proc/kcore"]).map_err(|e| e.to_string())?;
        readonly_paths(&rootfs, &["/proc/sys"]).map_err(|e| e.to_string())?;
        // Still on the host side of the pivot: the host's own files, as
        // this mount namespace sees them, are untouched.
        if std::fs::read("/etc/hostname").ok() != host_hostname {
            return Err("the host's /etc/hostname was masked".into());
        }
        if std::fs::read_dir("/sys/firmware").map_or(0, |d| d.count()) == 0 {
            return Err("the host's /sys/firmware was masked".into());
        }
        expect_null(rootfs.join("etc/hostname").to_str().unwrap())?;
        pivot_root(&rootfs).map_err(|e| e.to_string())?;
        check_container_view()
    });
    assert_eq!(std::fs::read("/etc/hostname").ok(), host_hostname);
    assert_eq!(
        std::fs::read(rootfs.join("etc/hostname")).unwrap(),
        b"image\n"
    );
}

#[test]
fn defaults_after_pivot_root() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = make_rootfs(base);
    in_mount_namespace(base, || {
        mount_kernel_filesystems(&rootfs).map_err(|e| e.to_string())?;
        pivot_root(&rootfs).map_err(|e| e.to_string())?;
        let root = Path::new("/");
        readonly_paths(root, DEFAULT_READONLY_PATHS).map_err(|e| e.to_string())?;
        mask_paths(root, &all_masked()).map_err(|e| e.to_string())?;
        check_container_view()?;
        // A read-only file (this kernel may have no /proc/sysrq-trigger to
        // exercise that case), reached through the image's /evil -> /etc.
        readonly_paths(root, &["/evil/motd"]).map_err(|e| e.to_string())?;
        expect_erofs("/etc/motd")?;
        if read_all("/etc/motd")? != b"welcome\n" {
            return Err("/etc/motd unreadable".into());
        }
        Ok(())
    });
}

#[test]
fn a_dev_null_swapped_for_a_host_file_is_refused() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let rootfs = make_rootfs(base);
    let secret = base.join("host-secret");
    std::fs::write(&secret, b"host data").unwrap();
    in_mount_namespace(base, || {
        mount_kernel_filesystems(&rootfs).map_err(|e| e.to_string())?;
        // CVE-2025-31133: /dev/null replaced by a link to a host file.
        let null = rootfs.join("dev/null");
        std::fs::remove_file(&null).map_err(|e| e.to_string())?;
        symlink(&secret, &null).map_err(|e| e.to_string())?;
        match mask_paths(&rootfs, DEFAULT_MASKED_PATHS) {
            Err(FsError::NotNullDevice { .. }) => {}
            other => return Err(format!("expected NotNullDevice, got {other:?}")),
        }
        // The host file was not mounted anywhere.
        let host = std::fs::metadata(&secret).map_err(|e| e.to_string())?;
        for path in DEFAULT_MASKED_PATHS {
            let Ok(m) = std::fs::metadata(rootfs.join(&path[1..])) else {
                continue;
            };
            if (m.dev(), m.ino()) == (host.dev(), host.ino()) {
                return Err(format!("host file mounted over {path}"));
            }
        }
        Ok(())
    });
    assert_eq!(std::fs::read(&secret).unwrap(), b"host data");
}

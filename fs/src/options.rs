//! Mount options as an OCI runtime spec lists them (`"options": ["nosuid",
//! "ro", "rprivate", "rro", "mode=755"]`), split the way runc splits them:
//! mount(2) flags, propagation changes, recursive mount_setattr(2)
//! attributes, and the filesystem-specific data string.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::statvfs::FsFlags;

use crate::FsError;

/// What one mount's option list asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// mount(2) flags to set (`ro` -> `MS_RDONLY`, `rbind` -> `MS_BIND |
    /// MS_REC`, ...).
    pub flags: MsFlags,
    /// Flags explicitly turned off (`rw`, `suid`, `dev`, `exec`, `atime`,
    /// ...). Only a bind mount's remount looks at them: a fresh mount starts
    /// with none set anyway.
    pub cleared: MsFlags,
    /// Propagation changes, in order (`MS_PRIVATE`, `MS_SHARED | MS_REC`,
    /// ...), applied to the new mount after it is made.
    pub propagation: Vec<MsFlags>,
    /// Attributes applied with mount_setattr(2) `AT_RECURSIVE` to the new
    /// mount and every mount below it (`rro`, `rnosuid`, ...).
    pub recursive: RecursiveAttrs,
    /// Everything else, comma-joined, for the filesystem (`mode=755,
    /// size=65536k`); empty if nothing.
    pub data: String,
    /// `tmpcopyup`: a new tmpfs starts with a copy of what the directory it
    /// covers held.
    pub copy_up: bool,
    /// `copyup` (berth's, for volumes): before a bind mount of an empty
    /// host directory over a directory of the rootfs, that directory's
    /// content is copied into the host directory (docker's volume
    /// copy-up).
    pub copy_into_source: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            recursive: RecursiveAttrs::default(),
            copy_up: false,
            copy_into_source: false,
            data: String::new(),
        }
    }
}

impl MountOptions {
    /// `true` if the options ask for a bind mount (`bind` or `rbind`).
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// `attr_set` / `attr_clr` of a `struct mount_attr` (MOUNT_ATTR_* bits of
/// linux/mount.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecursiveAttrs {
    /// Attributes to set.
    pub set: u64,
    /// Attributes to clear.
    pub clear: u64,
}

impl RecursiveAttrs {
    /// Read-only.
    pub const RDONLY: u64 = 0x1;
    /// Ignore set-user-ID and set-group-ID bits.
    pub const NOSUID: u64 = 0x2;
    /// No device files.
    pub const NODEV: u64 = 0x4;
    /// No program execution.
    pub const NOEXEC: u64 = 0x8;
    /// The access-time field (to clear whenever an atime mode is set).
    pub const ATIME_MASK: u64 = 0x70;
    /// Update atime relative to mtime/ctime (the kernel's default mode).
    pub const RELATIME: u64 = 0x00;
    /// Never update atime.
    pub const NOATIME: u64 = 0x10;
    /// Always update atime.
    pub const STRICTATIME: u64 = 0x20;
    /// Never update directory atime.
    pub const NODIRATIME: u64 = 0x80;
    /// Do not follow symlinks.
    pub const NOSYMFOLLOW: u64 = 0x0020_0000;

    /// `true` if there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clear == 0
    }
}

/// Option -> (clears the flag?, the flag): runc's table.
const FLAG_OPTIONS: &[(&str, bool, MsFlags)] = &[
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("atime", true, MsFlags::MS_NOATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("dev", true, MsFlags::MS_NODEV),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("iversion", false, MsFlags::MS_I_VERSION),
    ("lazytime", false, MsFlags::MS_LAZYTIME),
    ("loud", true, MsFlags::MS_SILENT),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("nodev", false, MsFlags::MS_NODEV),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("noiversion", true, MsFlags::MS_I_VERSION),
    ("nolazytime", true, MsFlags::MS_LAZYTIME),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("nosymfollow", false, MS_NOSYMFOLLOW),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("silent", false, MsFlags::MS_SILENT),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("suid", true, MsFlags::MS_NOSUID),
    ("symfollow", true, MS_NOSYMFOLLOW),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
];

/// MS_NOSYMFOLLOW (Linux 5.10), which nix does not name.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);

/// Propagation options and their mount(2) flags.
const PROPAGATION_OPTIONS: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// Recursive attribute options: (option, clears it?, MOUNT_ATTR_* bit).
const RECURSIVE_OPTIONS: &[(&str, bool, u64)] = &[
    ("rro", false, RecursiveAttrs::RDONLY),
    ("rrw", true, RecursiveAttrs::RDONLY),
    ("rnosuid", false, RecursiveAttrs::NOSUID),
    ("rsuid", true, RecursiveAttrs::NOSUID),
    ("rnodev", false, RecursiveAttrs::NODEV),
    ("rdev", true, RecursiveAttrs::NODEV),
    ("rnoexec", false, RecursiveAttrs::NOEXEC),
    ("rexec", true, RecursiveAttrs::NOEXEC),
    ("rnodiratime", false, RecursiveAttrs::NODIRATIME),
    ("rdiratime", true, RecursiveAttrs::NODIRATIME),
    ("rrelatime", false, RecursiveAttrs::RELATIME),
    ("rnorelatime", true, RecursiveAttrs::RELATIME),
    ("rnoatime", false, RecursiveAttrs::NOATIME),
    ("ratime", true, RecursiveAttrs::NOATIME),
    ("rstrictatime", false, RecursiveAttrs::STRICTATIME),
    ("rnostrictatime", true, RecursiveAttrs::STRICTATIME),
    ("rnosymfollow", false, RecursiveAttrs::NOSYMFOLLOW),
    ("rsymfollow", true, RecursiveAttrs::NOSYMFOLLOW),
];

/// Options this crate knows but does not implement, and why.
const REFUSED_OPTIONS: &[(&str, &str)] = &[
    ("idmap", "ID-mapped mounts are not supported"),
    ("ridmap", "ID-mapped mounts are not supported"),
];

/// The propagation flags of a propagation option (`rprivate` ->
/// `MS_PRIVATE | MS_REC`), or `None` if `name` is not one. This is also
/// the mapping of the spec's `linux.rootfsPropagation`.
pub fn propagation_flags(name: &str) -> Option<MsFlags> {
    PROPAGATION_OPTIONS
        .iter()
        .find(|(option, _)| *option == name)
        .map(|&(_, flags)| flags)
}

/// Split an OCI mount's option list the way runc does:
///
/// - the mount(2) flag options (`ro`/`rw`, `nosuid`/`suid`, `nodev`/`dev`,
///   `noexec`/`exec`, `sync`/`async`, `dirsync`, `remount`, `mand`/`nomand`,
///   the atime family, `bind`, `rbind`, `silent`/`loud`, `iversion`,
///   `lazytime`, `nosymfollow`) go to [`MountOptions::flags`], or to
///   [`MountOptions::cleared`] for the options that turn one off; a later
///   option overrides an earlier one;
/// - `private`, `rprivate`, `shared`, `rshared`, `slave`, `rslave`,
///   `unbindable`, `runbindable` go to [`MountOptions::propagation`], in
///   order;
/// - `rro`, `rrw`, `rnosuid`, `rsuid`, `rnodev`, `rdev`, `rnoexec`, `rexec`,
///   `rnoatime`, `ratime`, `rrelatime`, `rnorelatime`, `rstrictatime`,
///   `rnostrictatime`, `rnodiratime`, `rdiratime`, `rnosymfollow`,
///   `rsymfollow` go to [`MountOptions::recursive`] (an atime mode also
///   clears the atime field, as mount_setattr(2) requires);
/// - `defaults` is ignored;
/// - `tmpcopyup` sets [`MountOptions::copy_up`], `copyup`
///   [`MountOptions::copy_into_source`]; `idmap` and `ridmap` are refused
///   ([`FsError::InvalidMountOption`]), as is an option with a NUL byte;
/// - everything else (`mode=755`, `size=65536k`, `newinstance`, ...) is
///   passed to the filesystem in [`MountOptions::data`], comma-joined in
///   order.
pub fn parse_mount_options(options: &[String]) -> Result<MountOptions, FsError> {
    let mut parsed = MountOptions::default();
    let mut data: Vec<&str> = Vec::new();
    for option in options {
        let refuse = |reason: &str| FsError::InvalidMountOption {
            option: option.clone(),
            reason: reason.to_owned(),
        };
        let name = option.as_str();
        if name.contains('\0') {
            return Err(refuse("it contains a NUL byte"));
        }
        if let Some(&(_, clear, flag)) = FLAG_OPTIONS.iter().find(|(o, _, _)| *o == name) {
            if clear {
                parsed.flags.remove(flag);
                parsed.cleared.insert(flag);
            } else {
                parsed.flags.insert(flag);
                parsed.cleared.remove(flag);
            }
        } else if let Some(flags) = propagation_flags(name) {
            parsed.propagation.push(flags);
        } else if let Some(&(_, clear, attr)) =
            RECURSIVE_OPTIONS.iter().find(|(o, _, _)| *o == name)
        {
            let r = &mut parsed.recursive;
            if clear {
                r.clear |= attr;
                r.set &= !attr;
            } else {
                r.set |= attr;
                r.clear &= !attr;
            }
            // mount_setattr(2): an atime mode can only be set together with
            // clearing the whole atime field.
            if attr & RecursiveAttrs::ATIME_MASK == attr {
                r.clear |= RecursiveAttrs::ATIME_MASK;
            }
        } else if name == "tmpcopyup" {
            parsed.copy_up = true;
        } else if name == "copyup" {
            parsed.copy_into_source = true;
        } else if let Some((_, reason)) = REFUSED_OPTIONS.iter().find(|(o, _)| *o == name) {
            return Err(refuse(reason));
        } else if name != "defaults" {
            data.push(name);
        }
    }
    parsed.data = data.join(",");
    Ok(parsed)
}

/// The atime mode flags (one of them is in effect on every mount).
const ATIME_MODE_FLAGS: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// Every atime flag.
pub(crate) const ATIME_FLAGS: MsFlags = ATIME_MODE_FLAGS.union(MsFlags::MS_NODIRATIME);

/// The per-mount flags the kernel locks on a mount that came from a more
/// privileged mount namespace: a remount must keep them.
pub(crate) const LOCKED_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOSUID)
    .union(ATIME_FLAGS);

/// ST_NOSYMFOLLOW of linux/statfs.h, which nix does not name.
const ST_NOSYMFOLLOW: libc::c_ulong = 0x2000;

/// The mount(2) flags of a mount, from its statvfs(3) flags. No atime
/// mode flag means strictatime: MS_STRICTATIME is not stored, and a remount
/// without any atime flag would silently turn the mount relatime.
pub(crate) fn current_mount_flags(st: FsFlags) -> MsFlags {
    let map = [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_MANDLOCK, MsFlags::MS_MANDLOCK),
        (FsFlags::ST_SYNCHRONOUS, MsFlags::MS_SYNCHRONOUS),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    let mut flags = map
        .iter()
        .filter(|(st_flag, _)| st.contains(*st_flag))
        .fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms);
    if st.bits() & ST_NOSYMFOLLOW != 0 {
        flags |= MS_NOSYMFOLLOW;
    }
    if !flags.intersects(ATIME_MODE_FLAGS) {
        flags |= MsFlags::MS_STRICTATIME;
    }
    flags
}

/// `flags` as the option names that set them (`ro,nosuid`), for messages.
pub(crate) fn describe_flags(flags: MsFlags) -> String {
    let mut names: Vec<&str> = FLAG_OPTIONS
        .iter()
        .filter(|&&(name, clear, flag)| !clear && name != "rbind" && flags.contains(flag))
        .map(|&(name, _, _)| name)
        .collect();
    if flags.contains(MsFlags::MS_REC) && flags.contains(MsFlags::MS_BIND) {
        names.retain(|n| *n != "bind");
        names.push("rbind");
    }
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(",")
    }
}

/// A propagation change as its option name (`rslave`), for messages.
pub(crate) fn describe_propagation(flags: MsFlags) -> String {
    PROPAGATION_OPTIONS
        .iter()
        .find(|&&(_, f)| f == flags)
        .map_or_else(|| format!("{flags:?}"), |&(name, _)| name.to_owned())
}

/// `struct mount_attr` of linux/mount.h (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(mnt, "", AT_EMPTY_PATH | AT_RECURSIVE, attrs): change the
/// attributes of the mount `mnt` is the root of and of every mount below it.
pub(crate) fn set_attrs_recursive(mnt: &OwnedFd, attrs: RecursiveAttrs) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: attrs.set,
        attr_clr: attrs.clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a NUL-terminated static string and `attr` a
    // properly laid out mount_attr whose size we pass; the kernel keeps no
    // pointer to either. `mnt` is an open descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(ret).map(drop)
}

/// Put an ID-mapped copy of the mount at `dir` over `dir` itself:
/// open_tree(2) clones it, mount_setattr(2) maps its ids through the user
/// namespace `userns` (a file owned by id N on disk shows as the host id
/// that N maps to there) and move_mount(2) attaches the copy on `dir`, in
/// the caller's mount namespace.
pub(crate) fn overmount_idmapped(dir: &Path, userns: BorrowedFd<'_>) -> Result<(), Errno> {
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `path` is NUL-terminated and outlives the call; the flags
    // ask for a new detached mount returned as a close-on-exec descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    let raw = Errno::result(ret)?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: as in set_attrs_recursive; `tree` and `userns` are open.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(ret)?;
    // SAFETY: both paths are NUL-terminated and outlive the call; `tree`
    // is the detached mount made above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    Errno::result(ret).map(drop)
}

/// linux/mount.h: open_tree's "clone the mount, detached".
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// linux/mount.h: mount_setattr's ID-mapping attribute.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// linux/mount.h: move_mount's "the source is the descriptor itself".
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(options: &[&str]) -> MountOptions {
        let owned: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        parse_mount_options(&owned).unwrap()
    }

    fn refused(option: &str) -> String {
        match parse_mount_options(&[option.to_owned()]) {
            Err(FsError::InvalidMountOption { option: o, reason }) => {
                assert_eq!(o, option);
                reason
            }
            other => panic!("{option:?}: {other:?}"),
        }
    }

    #[test]
    fn docker_default_mounts_split_into_flags_and_data() {
        let dev = parse(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(dev.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(dev.data, "mode=755,size=65536k");
        assert!(dev.cleared.is_empty() && dev.propagation.is_empty());
        assert!(dev.recursive.is_empty() && !dev.is_bind());

        let pts = parse(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]);
        assert_eq!(pts.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(pts.data, "newinstance,ptmxmode=0666,mode=0620,gid=5");

        let sys = parse(&["nosuid", "noexec", "nodev", "ro"]);
        assert_eq!(
            sys.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        );
        assert_eq!(sys.data, "");
    }

    #[test]
    fn every_flag_option_maps_to_its_flag() {
        for &(name, clear, flag) in FLAG_OPTIONS {
            let o = parse(&[name]);
            if clear {
                assert_eq!(o.cleared, flag, "{name}");
                assert!(o.flags.is_empty(), "{name}");
            } else {
                assert_eq!(o.flags, flag, "{name}");
                assert!(o.cleared.is_empty(), "{name}");
            }
            assert_eq!(o.data, "", "{name}");
        }
        assert_eq!(parse(&["sync"]).flags, MsFlags::MS_SYNCHRONOUS);
        assert_eq!(parse(&["dirsync"]).flags, MsFlags::MS_DIRSYNC);
        assert_eq!(parse(&["iversion"]).flags, MsFlags::MS_I_VERSION);
        assert_eq!(parse(&["silent"]).flags, MsFlags::MS_SILENT);
        assert_eq!(parse(&["mand"]).flags, MsFlags::MS_MANDLOCK);
        assert_eq!(parse(&["remount"]).flags, MsFlags::MS_REMOUNT);
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let o = parse(&["ro", "nosuid", "rw", "suid", "nosuid"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID);
        assert_eq!(o.cleared, MsFlags::MS_RDONLY);
        let o = parse(&["rw", "ro"]);
        assert_eq!(o.flags, MsFlags::MS_RDONLY);
        assert!(o.cleared.is_empty());
        let o = parse(&["noexec", "exec", "dev"]);
        assert!(o.flags.is_empty());
        assert_eq!(o.cleared, MsFlags::MS_NOEXEC | MsFlags::MS_NODEV);
    }

    #[test]
    fn bind_and_rbind() {
        let o = parse(&["rbind", "ro"]);
        assert!(o.is_bind());
        assert_eq!(
            o.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        let o = parse(&["bind"]);
        assert!(o.is_bind() && !o.flags.contains(MsFlags::MS_REC));
    }

    #[test]
    fn propagation_options_keep_their_order() {
        let o = parse(&["rbind", "rslave", "private", "runbindable", "shared"]);
        assert_eq!(
            o.propagation,
            vec![
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                MsFlags::MS_PRIVATE,
                MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
                MsFlags::MS_SHARED,
            ]
        );
        for &(name, flags) in PROPAGATION_OPTIONS {
            assert_eq!(parse(&[name]).propagation, vec![flags], "{name}");
            assert_eq!(propagation_flags(name), Some(flags));
        }
        assert_eq!(
            propagation_flags("rshared"),
            Some(MsFlags::MS_SHARED | MsFlags::MS_REC)
        );
        assert_eq!(propagation_flags("slaves"), None);
    }

    #[test]
    fn recursive_attributes() {
        let o = parse(&["rbind", "rro", "rnosuid", "rnodev", "rnoexec"]);
        assert_eq!(
            o.recursive,
            RecursiveAttrs {
                set: RecursiveAttrs::RDONLY
                    | RecursiveAttrs::NOSUID
                    | RecursiveAttrs::NODEV
                    | RecursiveAttrs::NOEXEC,
                clear: 0
            }
        );
        // Recursive options are not mount(2) flags.
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        let o = parse(&["rro", "rrw"]);
        assert_eq!(o.recursive.set, 0);
        assert_eq!(o.recursive.clear, RecursiveAttrs::RDONLY);
        let o = parse(&["rrw", "rro", "rsuid", "rexec", "rdev"]);
        assert_eq!(o.recursive.set, RecursiveAttrs::RDONLY);
        assert_eq!(
            o.recursive.clear,
            RecursiveAttrs::NOSUID | RecursiveAttrs::NOEXEC | RecursiveAttrs::NODEV
        );
        // An atime mode clears the whole atime field.
        let o = parse(&["rnoatime"]);
        assert_eq!(o.recursive.set, RecursiveAttrs::NOATIME);
        assert_eq!(o.recursive.clear, RecursiveAttrs::ATIME_MASK);
        let o = parse(&["rrelatime"]);
        assert_eq!(o.recursive.set, 0);
        assert_eq!(o.recursive.clear, RecursiveAttrs::ATIME_MASK);
        assert!(!o.recursive.is_empty());
        let o = parse(&["rstrictatime", "rnodiratime"]);
        assert_eq!(
            o.recursive.set,
            RecursiveAttrs::STRICTATIME | RecursiveAttrs::NODIRATIME
        );
        assert_eq!(o.recursive.clear, RecursiveAttrs::ATIME_MASK);
        for &(name, _, _) in RECURSIVE_OPTIONS {
            let o = parse(&[name]);
            assert!(!o.recursive.is_empty(), "{name}");
            assert!(o.flags.is_empty() && o.data.is_empty(), "{name}");
        }
    }

    #[test]
    fn everything_else_is_data() {
        let o = parse(&["nosuid", "mode=1777", "defaults", "size=65536k", "uid=1000"]);
        assert_eq!(o.data, "mode=1777,size=65536k,uid=1000");
        assert_eq!(o.flags, MsFlags::MS_NOSUID);
        assert_eq!(parse(&["acl", "user_xattr"]).data, "acl,user_xattr");
        assert_eq!(parse(&[]), MountOptions::default());
    }

    #[test]
    fn unsupported_options_are_refused_clearly() {
        assert!(parse(&["tmpcopyup"]).copy_up);
        assert!(parse(&["rbind", "copyup"]).copy_into_source);
        assert_eq!(parse(&["rbind", "copyup"]).data, "");
        assert!(refused("idmap").contains("ID-mapped"));
        assert!(refused("ridmap").contains("ID-mapped"));
        assert!(refused("mode=7\0").contains("NUL"));
        let err = parse_mount_options(&["nosuid".into(), "idmap".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid mount option \"idmap\": ID-mapped mounts are not supported"
        );
    }

    #[test]
    fn current_flags_from_statvfs() {
        let f = current_mount_flags(FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_RDONLY);
        assert_eq!(
            f,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY | MsFlags::MS_STRICTATIME
        );
        let f = current_mount_flags(FsFlags::ST_RELATIME | FsFlags::ST_NOEXEC);
        assert_eq!(f, MsFlags::MS_RELATIME | MsFlags::MS_NOEXEC);
        let f = current_mount_flags(FsFlags::ST_NOATIME | FsFlags::ST_NODIRATIME);
        assert_eq!(f, MsFlags::MS_NOATIME | MsFlags::MS_NODIRATIME);
        assert!(LOCKED_FLAGS.contains(f));
    }

    #[test]
    fn flags_are_described_by_option_name() {
        assert_eq!(
            describe_flags(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID),
            "nosuid,ro"
        );
        assert_eq!(describe_flags(MsFlags::MS_BIND | MsFlags::MS_REC), "rbind");
        assert_eq!(describe_flags(MsFlags::empty()), "(none)");
        assert_eq!(
            describe_propagation(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "rslave"
        );
        assert_eq!(describe_propagation(MsFlags::MS_SHARED), "shared");
    }
}

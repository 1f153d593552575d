//! Tests of extraction and of the store, driven by archives crafted in
//! memory. None needs root; ownership and device checks run only as root.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tar::{EntryType, Header};

use crate::{extract, find_static_busybox, write_busybox_tar, ImageError, ImageStore, Reference};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Append an entry whose name and link name are written into the header
/// bytes as-is (`Header::set_path` refuses `..`, which these tests need).
fn raw(builder: &mut tar::Builder<Vec<u8>>, kind: EntryType, name: &str, link: &str, data: &[u8]) {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(match kind {
        EntryType::Directory => 0o755,
        EntryType::Symlink => 0o777,
        _ => 0o644,
    });
    header.set_mtime(1_000_000_000);
    header.set_uid(0);
    header.set_gid(0);
    let old = header.as_old_mut();
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname = [0; 100];
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    raw(b, EntryType::Regular, name, "", data);
}

fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

/// Extract into `<tmp>/dest`; on failure check that `dest` is gone.
fn try_extract(bytes: &[u8], tmp: &Path) -> Result<(), ImageError> {
    let dest = tmp.join("dest");
    let result = extract(bytes, &dest);
    if result.is_err() {
        assert!(!dest.exists(), "partial extraction left behind");
    }
    result
}

fn expect_refused(bytes: &[u8], entry: &str) {
    let tmp = tempfile::tempdir().unwrap();
    match try_extract(bytes, tmp.path()) {
        Err(ImageError::UnsafeEntry { entry: e, reason }) => {
            assert_eq!(e, entry, "{reason}");
        }
        other => panic!("expected {entry:?} to be refused, got {other:?}"),
    }
    let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left {left:?}");
}

#[test]
fn dotdot_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    expect_refused(&archive(|b| file(b, "../x", b"evil")), "../x");
    expect_refused(
        &archive(|b| {
            file(b, "ok", b"fine");
            file(b, "a/../../x", b"evil");
        }),
        "a/../../x",
    );
    expect_refused(&archive(|b| file(b, "./..", b"evil")), "./..");
    assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
}

#[test]
fn absolute_names_land_inside() {
    let tmp = tempfile::tempdir().unwrap();
    try_extract(&archive(|b| file(b, "/etc/x", b"inside")), tmp.path()).unwrap();
    assert_eq!(fs::read(tmp.path().join("dest/etc/x")).unwrap(), b"inside");
    // The implicitly created parent gets 0755.
    let mode = fs::metadata(tmp.path().join("dest/etc")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o755);
}

#[test]
fn write_through_symlink_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("passwd"), "original").unwrap();
    let target = outside.path().to_str().unwrap();
    expect_refused(
        &archive(|b| {
            raw(b, EntryType::Symlink, "a", target, b"");
            file(b, "a/passwd", b"pwned");
        }),
        "a/passwd",
    );
    assert_eq!(
        fs::read_to_string(outside.path().join("passwd")).unwrap(),
        "original"
    );
    // A relative link climbing out, then a nested write through it.
    expect_refused(
        &archive(|b| {
            raw(b, EntryType::Symlink, "a", "../../..", b"");
            file(b, "a/x", b"pwned");
        }),
        "a/x",
    );
    // A directory entry through a link, too.
    expect_refused(
        &archive(|b| {
            raw(b, EntryType::Symlink, "d", target, b"");
            raw(b, EntryType::Directory, "d/sub/", "", b"");
        }),
        "d/sub/",
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
}

#[test]
fn a_file_replacing_a_symlink_does_not_follow_it() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "original").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    try_extract(
        &archive(|b| {
            raw(b, EntryType::Symlink, "a", victim.to_str().unwrap(), b"");
            file(b, "a", b"replaced");
        }),
        tmp.path(),
    )
    .unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "original");
    let a = tmp.path().join("dest/a");
    assert!(fs::symlink_metadata(&a).unwrap().is_file());
    assert_eq!(fs::read(&a).unwrap(), b"replaced");
}

#[test]
fn hardlinks_must_stay_inside() {
    expect_refused(
        &archive(|b| raw(b, EntryType::Link, "shadow", "/etc/shadow", b"")),
        "shadow",
    );
    expect_refused(&archive(|b| raw(b, EntryType::Link, "x", "../x", b"")), "x");
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "s").unwrap();
    expect_refused(
        &archive(|b| {
            raw(
                b,
                EntryType::Symlink,
                "d",
                outside.path().to_str().unwrap(),
                b"",
            );
            raw(b, EntryType::Link, "h", "d/secret", b"");
        }),
        "h",
    );
    assert_eq!(
        fs::metadata(outside.path().join("secret")).unwrap().nlink(),
        1
    );
}

#[test]
fn hardlink_inside_the_layer_shares_the_inode() {
    let tmp = tempfile::tempdir().unwrap();
    try_extract(
        &archive(|b| {
            file(b, "bin/a", b"data");
            raw(b, EntryType::Link, "usr/b", "/bin/a", b"");
        }),
        tmp.path(),
    )
    .unwrap();
    let a = fs::metadata(tmp.path().join("dest/bin/a")).unwrap();
    let b = fs::metadata(tmp.path().join("dest/usr/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
}

#[test]
fn metadata_is_preserved() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = archive(|b| {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o4755);
        h.set_size(2);
        h.set_mtime(1_234_567_890);
        h.set_uid(1234);
        h.set_gid(5678);
        b.append_data(&mut h, "bin/suid", &b"#!"[..]).unwrap();

        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_mode(0o1777);
        h.set_mtime(1_111_111_111);
        h.set_size(0);
        b.append_data(&mut h, "tmp", &b""[..]).unwrap();

        // A read-only directory that still gets children after it.
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_mode(0o555);
        h.set_size(0);
        b.append_data(&mut h, "ro", &b""[..]).unwrap();
        file(b, "ro/child", b"c");

        raw(b, EntryType::Symlink, "link", "/does/not/exist", b"");
        raw(b, EntryType::Fifo, "fifo", "", b"");
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Char);
        h.set_mode(0o666);
        h.set_size(0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "dev/null", &b""[..]).unwrap();
    });
    try_extract(&bytes, tmp.path()).unwrap();
    let dest = tmp.path().join("dest");

    let suid = fs::metadata(dest.join("bin/suid")).unwrap();
    assert_eq!(suid.mode() & 0o7777, 0o4755);
    assert_eq!(suid.mtime(), 1_234_567_890);
    let tmpdir = fs::metadata(dest.join("tmp")).unwrap();
    assert_eq!(tmpdir.mode() & 0o7777, 0o1777);
    assert_eq!(tmpdir.mtime(), 1_111_111_111);
    assert_eq!(
        fs::metadata(dest.join("ro")).unwrap().mode() & 0o7777,
        0o555
    );
    assert_eq!(fs::read(dest.join("ro/child")).unwrap(), b"c");
    assert_eq!(
        fs::read_link(dest.join("link")).unwrap(),
        Path::new("/does/not/exist")
    );
    assert!(fs::symlink_metadata(dest.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o755);

    if is_root() {
        assert_eq!((suid.uid(), suid.gid()), (1234, 5678));
        let null = fs::symlink_metadata(dest.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
    } else {
        assert!(!dest.join("dev/null").exists());
    }
    // The store's removal copes with read-only directories.
    crate::extract::remove_tree(&dest).unwrap();
    assert!(!dest.exists());
}

#[test]
fn whiteouts_naming_dot_or_dotdot_are_refused() {
    for name in ["d/.wh..", "d/.wh.", ".wh.."] {
        expect_refused(&archive(|b| file(b, name, b"")), name);
    }
}

#[test]
fn whiteouts_are_not_created() {
    let tmp = tempfile::tempdir().unwrap();
    try_extract(
        &archive(|b| {
            file(b, "d/gone", b"x");
            file(b, "d/kept", b"x");
            file(b, "d/.wh.gone", b"");
            file(b, "d/.wh..wh..opq", b"");
        }),
        tmp.path(),
    )
    .unwrap();
    let names: Vec<_> = fs::read_dir(tmp.path().join("dest/d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["kept"]);
}

#[test]
fn long_names_work() {
    let tmp = tempfile::tempdir().unwrap();
    let long = format!("{}/file", "d".repeat(150));
    let pax_long = format!("{}/pax", "p".repeat(200));
    let bytes = archive(|b| {
        // GNU long name.
        let mut h = Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"g"[..]).unwrap();
        // PAX path record.
        b.append_pax_extensions([("path", pax_long.as_bytes())])
            .unwrap();
        file(b, "placeholder", b"p");
    });
    try_extract(&bytes, tmp.path()).unwrap();
    assert_eq!(fs::read(tmp.path().join("dest").join(&long)).unwrap(), b"g");
    assert_eq!(
        fs::read(tmp.path().join("dest").join(&pax_long)).unwrap(),
        b"p"
    );
}

#[test]
fn garbage_is_an_archive_error() {
    let tmp = tempfile::tempdir().unwrap();
    for bytes in [vec![0x42u8; 4096], vec![7u8; 10], Vec::new()] {
        match try_extract(&bytes, tmp.path()) {
            Err(ImageError::Archive { .. }) => {}
            other => panic!("expected an archive error, got {other:?}"),
        }
    }
}

#[test]
fn busybox_image() {
    let Some(busybox) = find_static_busybox() else {
        eprintln!("skipped: no static busybox (apt-get install busybox-static)");
        return;
    };
    let mut first = Vec::new();
    write_busybox_tar(&busybox, &mut first).unwrap();
    let mut second = Vec::new();
    write_busybox_tar(&busybox, &mut second).unwrap();
    assert!(first == second, "busybox archive is not reproducible");

    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("a")).unwrap();
    let name = Reference::parse("busybox").unwrap();
    let image = store.ensure_busybox(&name).unwrap();
    let config = image.run_config();
    assert_eq!(config.cmd().as_deref().unwrap(), ["sh"]);
    assert!(config.env().as_ref().unwrap()[0].starts_with("PATH=/usr/local/sbin:"));
    assert_eq!(image.tags, std::slice::from_ref(&name));
    assert_eq!(image.layers.len(), 1);
    assert_eq!(store.ensure_busybox(&name).unwrap(), image);
    // Reproducible: another store makes the same image from the same binary.
    let other = ImageStore::open(tmp.path().join("b")).unwrap();
    assert_eq!(other.ensure_busybox(&name).unwrap().id, image.id);
    let rootfs = &image.lower_dirs()[0];
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let env = rootfs.join("usr/bin/env");
    if fs::symlink_metadata(&env).is_ok() {
        assert_eq!(fs::read_link(&env).unwrap(), Path::new("../../bin/busybox"));
        assert!(env.is_file(), "relative link resolves");
    }
    let bin = fs::metadata(rootfs.join("bin/busybox")).unwrap();
    assert_eq!(bin.mode() & 0o7777, 0o755);
    assert_eq!(
        fs::metadata(rootfs.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(rootfs.join("root")).unwrap().mode() & 0o7777,
        0o700
    );
    for dir in [
        "proc", "sys", "dev", "etc", "var", "home", "sbin", "usr/sbin",
    ] {
        assert!(rootfs.join(dir).is_dir(), "{dir}");
    }
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"));
    assert!(fs::read_to_string(rootfs.join("etc/hosts"))
        .unwrap()
        .contains("127.0.0.1\tlocalhost"));

    let status = std::process::Command::new(rootfs.join("bin/busybox"))
        .arg("true")
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn static_elf_detection() {
    if let Some(busybox) = find_static_busybox() {
        assert!(crate::busybox::is_static_elf(&busybox));
    }
    // The test binary itself is dynamically linked (it has PT_INTERP).
    let me = std::env::current_exe().unwrap();
    assert!(!crate::busybox::is_static_elf(&me));
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("busybox");
    fs::write(&script, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(!crate::busybox::is_static_elf(&script));
}

#[test]
fn missing_busybox_error_says_how_to_install() {
    let msg = ImageError::NoStaticBusybox.to_string();
    assert!(msg.contains("install it with `apt-get install busybox-static` (Debian/Ubuntu)"));
}

#[test]
fn refusals_name_the_entry_and_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let err = try_extract(
        &archive(|b| {
            raw(b, EntryType::Symlink, "a", "/etc", b"");
            file(b, "a/passwd", b"x");
        }),
        tmp.path(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "refused archive entry \"a/passwd\": \"a\" is a symlink; writing through links is not allowed"
    );
    let err = try_extract(&archive(|b| file(b, "a/../../x", b"x")), tmp.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "refused archive entry \"a/../../x\": name \"a/../../x\" has a \"..\" component"
    );
}

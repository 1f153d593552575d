//! Tests of archiving trees and merged overlay layers, of `commit` and of
//! `save`. Ownership, devices, whiteouts, `trusted.*` xattrs and real
//! overlay mounts need root; those parts are skipped (with a message)
//! otherwise.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::{
    extract, write_layer_tar, write_merged_tar, CommitOptions, ImageError, ImageStore, Reference,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// What a listing records of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    /// File content, symlink target, or device number.
    data: Vec<u8>,
    /// For files with several links: the first path (in sorted order) of
    /// the same inode.
    link_group: Option<String>,
}

/// Every path below `root` (and `""` for root itself) with its metadata.
/// Test trees are trusted, so std's path-based calls are fine here.
fn listing(root: &Path) -> BTreeMap<String, Node> {
    fn walk(
        root: &Path,
        rel: &str,
        out: &mut BTreeMap<String, Node>,
        inodes: &mut HashMap<(u64, u64), String>,
    ) {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let (kind, data) = if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_file() {
            ("file", fs::read(&path).unwrap())
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else if ft.is_char_device() {
            ("char", meta.rdev().to_string().into_bytes())
        } else if ft.is_block_device() {
            ("block", meta.rdev().to_string().into_bytes())
        } else {
            ("other", Vec::new())
        };
        let link_group = (!ft.is_dir() && meta.nlink() > 1).then(|| {
            inodes
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| rel.to_owned())
                .clone()
        });
        out.insert(
            rel.to_owned(),
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                data,
                link_group,
            },
        );
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                walk(root, &child, out, inodes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out, &mut HashMap::new());
    out
}

fn set_mtime(path: &Path, secs: i64) {
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Entry names of an archive, in order.
fn tar_names(bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn whiteout(path: &Path) {
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).unwrap();
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and outlive the call; value
    // is a readable buffer of the length passed.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A tree with everything a layer can hold.
fn odd_tree(root: &Path) {
    fs::create_dir(root).unwrap();
    let p = |rel: &str| root.join(rel);
    fs::create_dir_all(p("d/sub")).unwrap();
    fs::create_dir(p("ro")).unwrap();
    fs::write(p("ro/inside"), b"read-only dir content").unwrap();
    fs::write(p("f"), b"hello\n").unwrap();
    fs::write(p("empty"), b"").unwrap();
    fs::write(p("suid"), b"#!/bin/sh\n").unwrap();
    fs::write(p("sgid"), b"binary").unwrap();
    fs::write(p("big"), vec![0xa5u8; 300_000]).unwrap();
    fs::hard_link(p("f"), p("d/f-link")).unwrap();
    fs::hard_link(p("f"), p("d/sub/f-link2")).unwrap();
    symlink("/etc/passwd", p("abs")).unwrap();
    symlink("../x/./y//z", p("d/rel")).unwrap();
    let long_target = format!("/{}", "t".repeat(150));
    symlink(&long_target, p("long-link")).unwrap();
    let long_dir = p(&"n".repeat(120));
    fs::create_dir(&long_dir).unwrap();
    fs::write(long_dir.join("m".repeat(120)), b"deep").unwrap();
    nix::unistd::mkfifo(&p("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    if is_root() {
        mknod(
            &p("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 3),
        )
        .unwrap();
        mknod(
            &p("loop9"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            makedev(7, 9),
        )
        .unwrap();
        std::os::unix::fs::lchown(p("f"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(p("abs"), Some(42), Some(43)).unwrap();
        std::os::unix::fs::lchown(p("d"), Some(7), Some(8)).unwrap();
    } else {
        eprintln!("not root: devices and ownership are not part of the round trip");
    }
    chmod(&p("suid"), 0o4755);
    chmod(&p("sgid"), 0o2711);
    chmod(&p("f"), 0o640);
    chmod(&p("d/sub"), 0o1777);
    chmod(&p("d"), 0o750);
    // Times last, directories after their contents.
    for (i, rel) in [
        "f",
        "empty",
        "suid",
        "sgid",
        "big",
        "abs",
        "d/rel",
        "long-link",
        "fifo",
        "ro/inside",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&p(rel), 1_000_000_000 + i as i64 * 1000);
    }
    for (i, rel) in ["d/sub", "d", "ro", ""].iter().enumerate() {
        set_mtime(&p(rel), 1_100_000_000 + i as i64);
    }
    chmod(&p("ro"), 0o555);
}

#[test]
fn layer_tar_round_trips_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    odd_tree(&src);
    let mut bytes = Vec::new();
    write_layer_tar(&src, &mut bytes).unwrap();

    let names = tar_names(&bytes);
    assert_eq!(names[0], "./");
    assert!(names.iter().all(|n| !n.starts_with('/')), "{names:?}");
    assert!(names.contains(&"d/".to_owned()) && names.contains(&"d/rel".to_owned()));
    // Symlinks are not followed: no host file content.
    let passwd = fs::read("/etc/passwd").unwrap();
    assert!(!contains(&bytes, &passwd));
    // Deterministic.
    let mut again = Vec::new();
    write_layer_tar(&src, &mut again).unwrap();
    assert_eq!(bytes, again);

    let dest = tmp.path().join("dest");
    extract(&bytes[..], &dest).unwrap();
    let (want, got) = (listing(&src), listing(&dest));
    assert_eq!(got, want);
    assert_eq!(got["abs"].data, b"/etc/passwd");
    assert_eq!(got["d/rel"].data, b"../x/./y//z", "symlink target verbatim");
    assert_eq!(got["suid"].mode, 0o4755);
    assert_eq!(got["d/sub"].mode, 0o1777);
    assert_eq!(got["d/sub/f-link2"].link_group.as_deref(), Some("d/f-link"));
    assert_eq!(fs::metadata(dest.join("f")).unwrap().nlink(), 3);
    if is_root() {
        assert_eq!(got["loop9"].kind, "block");
        assert_eq!((got["f"].uid, got["f"].gid), (1234, 5678));
    }
    chmod(&src.join("ro"), 0o755);
    chmod(&dest.join("ro"), 0o755);
}

#[test]
fn missing_root_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    match write_layer_tar(&missing, Vec::new()) {
        Err(ImageError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    // The root itself must not be a symlink either.
    let link = tmp.path().join("link");
    symlink("/etc", &link).unwrap();
    assert!(
        matches!(write_layer_tar(&link, Vec::new()), Err(ImageError::Io { path, .. }) if path == link)
    );
    assert!(write_merged_tar(&[], Vec::new()).is_err());
}

/// lower: a, b, d/x, d/y, e/k, f/ (with f/in), g, h
/// upper: a (modified), b whiteout (root), new c, d opaque with z (root),
///        e/n (merged with e/k), f a file over the lower dir, g a dir over
///        the lower file, h -> /etc/passwd
fn overlay_pair(tmp: &Path) -> (PathBuf, PathBuf) {
    let lower = tmp.join("lower");
    let upper = tmp.join("upper");
    for (rel, content) in [
        ("a", "lower a"),
        ("b", "lower b"),
        ("d/x", "lower d/x"),
        ("d/y", "lower d/y"),
        ("e/k", "lower e/k"),
        ("f/in", "lower f/in"),
        ("g", "lower g"),
        ("h", "lower h"),
    ] {
        let path = lower.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    fs::create_dir_all(upper.join("e")).unwrap();
    fs::write(upper.join("a"), "upper a").unwrap();
    fs::write(upper.join("c"), "upper c").unwrap();
    fs::write(upper.join("e/n"), "upper e/n").unwrap();
    fs::write(upper.join("f"), "upper f").unwrap();
    fs::create_dir(upper.join("g")).unwrap();
    fs::write(upper.join("g/in"), "upper g/in").unwrap();
    symlink("/etc/passwd", upper.join("h")).unwrap();
    if is_root() {
        whiteout(&upper.join("b"));
        fs::create_dir(upper.join("d")).unwrap();
        fs::write(upper.join("d/z"), "upper d/z").unwrap();
        set_xattr(&upper.join("d"), "trusted.overlay.opaque", b"y").unwrap();
    }
    (upper, lower)
}

fn files_of(tree: &BTreeMap<String, Node>) -> Vec<(String, String)> {
    tree.iter()
        .filter(|(_, n)| n.kind != "dir")
        .map(|(p, n)| (p.clone(), String::from_utf8_lossy(&n.data).into_owned()))
        .collect()
}

fn expected_merge() -> Vec<(String, String)> {
    let mut want: Vec<(&str, &str)> = vec![
        ("a", "upper a"),
        ("c", "upper c"),
        ("e/k", "lower e/k"),
        ("e/n", "upper e/n"),
        ("f", "upper f"),
        ("g/in", "upper g/in"),
        ("h", "/etc/passwd"),
    ];
    if is_root() {
        want.push(("d/z", "upper d/z"));
    } else {
        eprintln!("not root: whiteout and trusted.overlay.opaque cases skipped");
        want.extend([("b", "lower b"), ("d/x", "lower d/x"), ("d/y", "lower d/y")]);
    }
    want.sort();
    want.into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

#[test]
fn merged_tar_applies_whiteouts_and_opaque_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let (upper, lower) = overlay_pair(tmp.path());
    let mut bytes = Vec::new();
    write_merged_tar(&[&upper, &lower], &mut bytes).unwrap();
    let names = tar_names(&bytes);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted");
    assert!(!names.contains(&"f/in".to_owned()), "{names:?}");
    let dest = tmp.path().join("merged");
    extract(&bytes[..], &dest).unwrap();
    let got = listing(&dest);
    assert_eq!(files_of(&got), expected_merge());
    assert_eq!(got["h"].kind, "symlink");
    assert_eq!(got["f"].kind, "file");
    assert!(!contains(&bytes, &fs::read("/etc/passwd").unwrap()));
    assert!(!contains(&bytes, b"lower f/in") && !contains(&bytes, b"lower g"));
    if is_root() {
        assert!(!names
            .iter()
            .any(|n| n == "b" || n.starts_with("d/x") || n.starts_with("d/y")));
    }
}

#[test]
fn user_overlay_opaque_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper) = (tmp.path().join("l"), tmp.path().join("u"));
    fs::create_dir_all(lower.join("d")).unwrap();
    fs::write(lower.join("d/old"), "old").unwrap();
    fs::create_dir_all(upper.join("d")).unwrap();
    fs::write(upper.join("d/new"), "new").unwrap();
    // "x" (newer kernels: "has xwhiteouts") is not opaque.
    if let Err(e) = set_xattr(&upper.join("d"), "user.overlay.opaque", b"x") {
        eprintln!("skipped: user xattrs unsupported here: {e}");
        return;
    }
    let mut bytes = Vec::new();
    write_merged_tar(&[&upper, &lower], &mut bytes).unwrap();
    assert!(tar_names(&bytes).contains(&"d/old".to_owned()));
    set_xattr(&upper.join("d"), "user.overlay.opaque", b"y").unwrap();
    let mut bytes = Vec::new();
    write_merged_tar(&[&upper, &lower], &mut bytes).unwrap();
    assert_eq!(tar_names(&bytes), ["./", "d/", "d/new"]);
}

/// Only in a merged tar: overlay semantics. In a plain layer tar, a char
/// device 0:0 is just a device.
#[test]
fn layer_tar_keeps_char_0_0() {
    if !is_root() {
        eprintln!("skipped: mknod needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    whiteout(&tmp.path().join("w"));
    let mut bytes = Vec::new();
    write_layer_tar(tmp.path(), &mut bytes).unwrap();
    assert_eq!(tar_names(&bytes), ["./", "w"]);
}

/// The kernel's own merge, as the reference: changes made through a real
/// overlay mount, then its upper dir merged in userspace must list the
/// same as the mount did.
#[test]
fn merge_matches_a_real_overlay_mount() {
    if !is_root() {
        eprintln!("skipped: mounting overlayfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    odd_tree(&lower);
    chmod(&lower.join("ro"), 0o755);
    fs::create_dir_all(lower.join("gone/deeper")).unwrap();
    fs::write(lower.join("gone/deeper/file"), "x").unwrap();
    fs::create_dir_all(lower.join("replaced/sub")).unwrap();
    fs::write(lower.join("replaced/sub/file"), "old").unwrap();
    let (upper, work, merged) = (
        tmp.path().join("upper"),
        tmp.path().join("work"),
        tmp.path().join("merged"),
    );
    for dir in [&upper, &work, &merged] {
        fs::create_dir(dir).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    if let Err(e) = nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    ) {
        eprintln!("skipped: cannot mount overlayfs here: {e}");
        return;
    }
    let m = |rel: &str| merged.join(rel);
    let changes = std::panic::catch_unwind(|| {
        fs::write(m("f"), "changed through the mount").unwrap();
        fs::remove_file(m("empty")).unwrap();
        fs::remove_dir_all(m("gone")).unwrap();
        fs::remove_dir_all(m("replaced")).unwrap();
        fs::create_dir(m("replaced")).unwrap();
        fs::write(m("replaced/new"), "new").unwrap();
        fs::write(m("d/sub/added"), "added").unwrap();
        fs::remove_file(m("d/rel")).unwrap();
        symlink("/etc/shadow", m("d/rel")).unwrap();
        fs::hard_link(m("big"), m("big-link")).unwrap();
        chmod(&m("suid"), 0o4700);
        listing(&merged)
    });
    nix::mount::umount(&merged).unwrap();
    let want = changes.unwrap();

    let mut bytes = Vec::new();
    write_merged_tar(&[&upper, &lower], &mut bytes).unwrap();
    let dest = tmp.path().join("dest");
    extract(&bytes[..], &dest).unwrap();
    let mut got = listing(&dest);
    let mut want = want;
    // Hard links of the lower layer that a copy-up split keep their
    // grouping only among the paths that were not copied up.
    for tree in [&mut got, &mut want] {
        for node in tree.values_mut() {
            node.link_group = None;
        }
    }
    assert_eq!(got, want);
    assert!(!dest.join("gone").exists() && !dest.join("empty").exists());
    assert_eq!(dir_names(&dest.join("replaced")), ["new"]);
}

fn dir_names(path: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Atomically exchange two names (renameat2 RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) {
    let a = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

/// SECURITY.md commit row: archive while a loop swaps names between a
/// file and a symlink to a host file, and between a directory and a
/// symlink to a host directory; the host files never appear in the
/// archive and nothing is archived through a symlink.
#[test]
fn symlink_swaps_never_leak_host_files() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("secret"), "HOST-SECRET-7f3a9c").unwrap();
    let upper = tmp.path().join("upper");
    let lower = tmp.path().join("lower");
    let dir = upper.join("dir");
    fs::create_dir_all(dir.join("p")).unwrap();
    fs::write(dir.join("p/q"), "benign q").unwrap();
    symlink(&host, dir.join("s")).unwrap();
    fs::write(dir.join("x"), "benign").unwrap();
    symlink(host.join("secret"), dir.join("y")).unwrap();
    // A symlink in upper hides the lower directory of the same name.
    fs::create_dir_all(lower.join("h")).unwrap();
    fs::write(lower.join("h/secret"), "lower").unwrap();
    symlink(&host, upper.join("h")).unwrap();

    /// Stops the swapper however the archiving loop ends (a failed
    /// assertion included), so the scope can join it.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = AtomicBool::new(false);
    let mut archives = 0;
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                exchange(&dir.join("x"), &dir.join("y"));
                exchange(&dir.join("p"), &dir.join("s"));
            }
        });
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(2) {
            let mut bytes = Vec::new();
            write_merged_tar(&[&upper, &lower], &mut bytes).unwrap();
            assert!(!contains(&bytes, b"HOST-SECRET"));
            for name in tar_names(&bytes) {
                let parts: Vec<&str> = name.trim_end_matches('/').split('/').collect();
                assert!(
                    parts.len() < 3 || parts[2] == "q",
                    "archived through a symlink: {name}"
                );
                assert_ne!(name, "h/secret");
            }
            archives += 1;
        }
    });
    assert!(archives > 10, "only {archives} archives");
}

/// The merged view of an image's layers, as a directory listing.
fn merged_listing(image: &crate::Image, tmp: &Path) -> BTreeMap<String, Node> {
    let lowers = image.lower_dirs();
    let lowers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    let mut tar = Vec::new();
    write_merged_tar(&lowers, &mut tar).unwrap();
    let dest = tmp.join(format!("merged-{}", image.id.short()));
    let _ = crate::extract::remove_tree(&dest);
    extract(&tar[..], &dest).unwrap();
    listing(&dest)
}

fn commit_options(tag: &str, cmd: &[&str]) -> CommitOptions {
    let mut config = oci_spec::image::Config::default();
    config.set_cmd(Some(cmd.iter().map(|s| s.to_string()).collect()));
    config.set_env(Some(vec!["A=1".into()]));
    config.set_working_dir(Some("/d".into()));
    CommitOptions {
        config: Some(config),
        author: Some("tester".into()),
        comment: Some("a change".into()),
        created_by: Some("sh -c edit".into()),
        tag: Some(Reference::parse(tag).unwrap()),
        owners: None,
    }
}

#[test]
fn commit_adds_one_layer_with_whiteouts_and_saves_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("images")).unwrap();
    let base_dir = tmp.path().join("base");
    odd_tree(&base_dir);
    chmod(&base_dir.join("ro"), 0o755);
    fs::create_dir(base_dir.join("opq")).unwrap();
    fs::write(base_dir.join("opq/hidden"), "below").unwrap();
    let mut base_tar = Vec::new();
    write_layer_tar(&base_dir, &mut base_tar).unwrap();
    let base = store
        .import_reader(
            &mut &base_tar[..],
            "base.tar",
            Some(&Reference::parse("base").unwrap()),
            None,
        )
        .unwrap();
    assert_eq!(
        listing(&base.lower_dirs()[0]),
        listing(&base_dir),
        "import of a layer tar is exact"
    );

    // A container's upper dir over the image.
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    fs::write(upper.join("f"), "modified").unwrap();
    fs::write(upper.join("added"), "added").unwrap();
    fs::create_dir(upper.join("d")).unwrap();
    fs::write(upper.join("d/new"), "new").unwrap();
    symlink("/etc/passwd", upper.join("evil")).unwrap();
    fs::create_dir(upper.join("opq")).unwrap();
    fs::write(upper.join("opq/fresh"), "fresh").unwrap();
    if is_root() {
        whiteout(&upper.join("big"));
        set_xattr(&upper.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
    }

    let options = commit_options("committed:v1", &["sh", "-c", "cat /added"]);
    let image = store.commit(&base, &upper, &options).unwrap();
    assert_ne!(image.id, base.id);
    assert_eq!(store.resolve("committed:v1").unwrap(), image);
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.layers[0], base.layers[0], "the base layer is shared");
    let run = image.run_config();
    assert_eq!(run.cmd().as_deref().unwrap(), ["sh", "-c", "cat /added"]);
    assert_eq!(run.working_dir().as_deref(), Some("/d"));
    assert_eq!(image.config.author().as_deref(), Some("tester"));
    let history = image.config.history().clone().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].comment().as_deref(), Some("a change"));
    assert_eq!(history[1].created_by().as_deref(), Some("sh -c edit"));
    assert_eq!(image.config.rootfs().diff_ids().len(), 2);

    // The new layer holds only the upper dir, whiteouts as overlay has them.
    let top = listing(&image.lower_dirs()[0]);
    assert_eq!(top["f"].data, b"modified");
    assert!(!top.contains_key("d/rel"));
    if is_root() {
        assert_eq!(top["big"].kind, "char");
        assert_eq!(top["big"].data, b"0");
    }
    let tree = merged_listing(&image, tmp.path());
    assert_eq!(tree["f"].data, b"modified");
    assert_eq!(tree["added"].data, b"added");
    assert_eq!(tree["d/new"].data, b"new");
    assert_eq!(
        tree["d/rel"].data, b"../x/./y//z",
        "lower content shows through"
    );
    assert_eq!(tree["evil"].kind, "symlink");
    assert_eq!(tree["evil"].data, b"/etc/passwd");
    assert_eq!(tree["d/sub"].mode, 0o1777);
    assert_eq!(tree.contains_key("big"), !is_root());
    assert_eq!(tree.contains_key("opq/hidden"), !is_root(), "opaque dir");
    assert_eq!(tree["opq/fresh"].data, b"fresh");
    // The base image is untouched.
    assert_eq!(listing(&base.lower_dirs()[0]), listing(&base_dir));

    // The layer tar has the whiteouts as .wh. entries.
    let source = store.source(&image).unwrap();
    let layer = crate::ImageSource::manifest(&source).layers()[1].clone();
    let mut blob = Vec::new();
    std::io::Read::read_to_end(
        &mut crate::ImageSource::open_blob(&source, &layer).unwrap(),
        &mut blob,
    )
    .unwrap();
    let names = tar_names(&blob);
    assert_eq!(names.contains(&".wh.big".to_owned()), is_root());
    assert_eq!(names.contains(&"opq/.wh..wh..opq".to_owned()), is_root());

    // Saved as a docker archive and loaded into a fresh store: same id,
    // same content.
    let mut saved = Vec::new();
    store
        .save_docker_archive(
            &[(&image, &options.tag.clone().into_iter().collect::<Vec<_>>())],
            &mut saved,
        )
        .unwrap();
    let other = ImageStore::open(tmp.path().join("other")).unwrap();
    let loaded = other
        .load(&mut &saved[..], &crate::TargetPlatform::host(), &|_| {})
        .unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].0.id, image.id);
    assert_eq!(
        loaded[0].1,
        options.tag.clone().into_iter().collect::<Vec<_>>()
    );
    assert_eq!(merged_listing(&loaded[0].0, tmp.path()), tree);
    assert!(dir_names(&store.root().join("tmp")).is_empty());
    assert!(dir_names(&other.root().join("tmp")).is_empty());
}

#[test]
fn failed_commit_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("images")).unwrap();
    let base = store
        .import_reader(&mut &archive_of(&[("a", "a")])[..], "base.tar", None, None)
        .unwrap();
    let layers_before = dir_names(&store.root().join("layers"));
    let missing = tmp.path().join("no-upper");
    match store.commit(&base, &missing, &commit_options("broken", &["true"])) {
        Err(ImageError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.resolve("broken"),
        Err(ImageError::NotFound { .. })
    ));
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(dir_names(&store.root().join("tmp")).is_empty());
    assert_eq!(dir_names(&store.root().join("layers")), layers_before);
}

fn archive_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, content.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn commit_of_a_large_tree_streams() {
    // More than the pipe holds, so the writer must block and resume.
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("images")).unwrap();
    let base = store
        .import_reader(&mut &archive_of(&[("a", "a")])[..], "base.tar", None, None)
        .unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    for i in 0..8 {
        fs::write(upper.join(format!("blob{i}")), vec![i as u8; 1 << 20]).unwrap();
    }
    let image = store
        .commit(&base, &upper, &commit_options("big", &["true"]))
        .unwrap();
    assert_eq!(image.layers[1].size, 8 << 20);
    assert_eq!(
        fs::read(image.lower_dirs()[0].join("blob7")).unwrap(),
        vec![7u8; 1 << 20]
    );
}

/// Owners of (path, uid, gid) entries in a tar.
fn tar_owners(bytes: &[u8]) -> BTreeMap<String, (u64, u64)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let header = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                (header.uid().unwrap(), header.gid().unwrap()),
            )
        })
        .collect()
}

#[test]
fn a_user_namespace_write_layer_is_archived_with_the_containers_ids() {
    use std::os::unix::fs::lchown;
    let tmp = tempfile::tempdir().unwrap();
    let (upper, lower) = (tmp.path().join("upper"), tmp.path().join("lower"));
    fs::create_dir_all(&upper).unwrap();
    fs::create_dir_all(&lower).unwrap();
    fs::write(upper.join("made"), "m").unwrap();
    fs::write(upper.join("stray"), "s").unwrap();
    fs::write(lower.join("image-file"), "i").unwrap();
    let owners = berth_state::IdMaps {
        uid: vec![berth_state::IdRange {
            container_id: 0,
            host_id: 100_000,
            size: 65536,
        }],
        gid: vec![berth_state::IdRange {
            container_id: 0,
            host_id: 200_000,
            size: 65536,
        }],
    };
    let chown = |path: &Path, uid, gid| {
        if is_root() {
            lchown(path, Some(uid), Some(gid)).unwrap();
        }
    };
    chown(&upper, 100_000, 200_000);
    chown(&upper.join("made"), 100_005, 200_007);
    // Owned by a host id the container does not map (root here).
    chown(&upper.join("stray"), 0, 0);
    let me = (
        u64::from(nix::unistd::geteuid().as_raw()),
        u64::from(nix::unistd::getegid().as_raw()),
    );
    let expect = |mapped: (u64, u64)| if is_root() { mapped } else { (65534, 65534) };

    let mut diff = Vec::new();
    crate::write_diff_tar_as(&upper, Some(&owners), &mut diff).unwrap();
    let owned = tar_owners(&diff);
    assert_eq!(owned["./"], expect((0, 0)));
    assert_eq!(owned["made"], expect((5, 7)));
    assert_eq!(owned["stray"], (65534, 65534));

    // Merged: only the write layer is mapped; image layers keep their ids.
    let mut merged = Vec::new();
    crate::write_merged_tar_as(&[&upper, &lower], Some(&owners), &mut merged).unwrap();
    let owned = tar_owners(&merged);
    assert_eq!(owned["made"], expect((5, 7)));
    assert_eq!(owned["image-file"], me);

    // Without owners nothing is mapped.
    let mut plain = Vec::new();
    crate::write_diff_tar(&upper, &mut plain).unwrap();
    if is_root() {
        assert_eq!(tar_owners(&plain)["made"], (100_005, 200_007));
    }
}

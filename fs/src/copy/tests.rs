//! Copies between temporary trees, as an ordinary user.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;

fn me() -> Ownership {
    Ownership::Fixed {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
    }
}

/// A tree with a nested directory, an executable, a setgid file, a
/// read-only directory, symlinks (relative, absolute, dangling), a hard
/// link pair, an empty file and a fifo.
fn sample_tree(dir: &Path) {
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    fs::write(
        dir.join("sub/deeper/data.bin"),
        (0..200_000u32).map(|i| i as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    fs::write(dir.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::write(dir.join("sgid"), "x").unwrap();
    fs::set_permissions(dir.join("sgid"), fs::Permissions::from_mode(0o2640)).unwrap();
    fs::write(dir.join("empty"), "").unwrap();
    symlink("sub/deeper/data.bin", dir.join("rel-link")).unwrap();
    symlink("/etc/passwd", dir.join("abs-link")).unwrap();
    symlink("nowhere", dir.join("dangling")).unwrap();
    fs::write(dir.join("sub/first"), "linked").unwrap();
    fs::hard_link(dir.join("sub/first"), dir.join("second")).unwrap();
    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o620),
    )
    .unwrap();
    fs::create_dir(dir.join("locked")).unwrap();
    fs::write(dir.join("locked/inside"), "in").unwrap();
    fs::set_permissions(dir.join("locked"), fs::Permissions::from_mode(0o555)).unwrap();
    // Extended attributes that travel, on a file and a directory (where
    // the temp filesystem keeps them).
    for path in [dir.join("run.sh"), dir.join("sub")] {
        let file = fs::File::open(&path).unwrap();
        let attrs = vec![(b"user.note".to_vec(), b"kept".to_vec())];
        super::xattr::write(std::os::fd::AsFd::as_fd(&file), &attrs).unwrap();
    }
}

/// Path -> (type, mode, content or link target, mtime, extended
/// attributes) for every entry.
#[allow(clippy::type_complexity)]
fn describe(dir: &Path) -> BTreeMap<PathBuf, (String, u32, Vec<u8>, i64, super::xattr::Xattrs)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let (kind, content) = if ft.is_symlink() {
                (
                    "link",
                    fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_dir() {
                todo.push(path.clone());
                ("dir", Vec::new())
            } else if ft.is_file() {
                ("file", fs::read(&path).unwrap())
            } else {
                ("other", Vec::new())
            };
            let mtime = if ft.is_dir() { 0 } else { meta.mtime() };
            let xattrs = if ft.is_dir() || ft.is_file() {
                let file = fs::File::open(&path).unwrap();
                super::xattr::read(std::os::fd::AsFd::as_fd(&file)).unwrap()
            } else {
                Vec::new()
            };
            out.insert(
                path.strip_prefix(dir).unwrap().to_path_buf(),
                (
                    kind.to_owned(),
                    meta.mode() & 0o7777,
                    content,
                    mtime,
                    xattrs,
                ),
            );
        }
    }
    out
}

fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

#[test]
fn a_tree_is_copied_with_links_modes_and_times() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();

    let root = TreeRoot::open(tmp.path(), "").unwrap();
    let source = root.source("/src", false).unwrap();
    assert!(source.is_dir());
    let into = root.directory("/dst").unwrap();
    let bytes = copy_tree(&source, Some(OsStr::new("copy")), &into, me()).unwrap();
    assert_eq!(bytes, 200_000 + 18 + 1 + 6 + 2);

    let described = describe(&src);
    assert_eq!(described, describe(&dst.join("copy")));
    // The xattrs were there to be copied (or the filesystem keeps none).
    let run_sh = &described[Path::new("run.sh")].4;
    assert!(run_sh.is_empty() || run_sh[0].1 == b"kept");
    assert_eq!(
        ino(&dst.join("copy/sub/first")),
        ino(&dst.join("copy/second")),
        "the hard link pair is one file again"
    );
    assert_ne!(
        ino(&dst.join("copy/sub/first")),
        ino(&src.join("sub/first"))
    );
    // Restore write permission so the tempdir can be removed.
    for d in [&src, &dst.join("copy")] {
        fs::set_permissions(d.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn directory_contents_go_straight_into_the_destination() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("src/a")).unwrap();
    fs::write(tmp.path().join("src/a/f"), "f").unwrap();
    fs::create_dir(tmp.path().join("dst")).unwrap();
    fs::write(tmp.path().join("dst/kept"), "kept").unwrap();
    let root = TreeRoot::open(tmp.path(), "").unwrap();
    let source = root.source("/src/.", false).unwrap();
    copy_tree(&source, None, &root.directory("/dst").unwrap(), me()).unwrap();
    assert_eq!(fs::read_to_string(tmp.path().join("dst/a/f")).unwrap(), "f");
    assert_eq!(
        fs::read_to_string(tmp.path().join("dst/kept")).unwrap(),
        "kept"
    );
}

#[test]
fn a_tar_stream_round_trips_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    fs::create_dir(tmp.path().join("dst")).unwrap();
    let root = TreeRoot::open(tmp.path(), "").unwrap();
    let source = root.source("/src", false).unwrap();
    let mut archive = Vec::new();
    archive_tree(
        &source,
        Some(OsStr::new("src")),
        &mut archive,
        Ownership::FromSource,
    )
    .unwrap();
    extract_archive(archive.as_slice(), &root.directory("/dst").unwrap(), me()).unwrap();
    assert_eq!(describe(&src), describe(&tmp.path().join("dst/src")));
    assert_eq!(
        ino(&tmp.path().join("dst/src/sub/first")),
        ino(&tmp.path().join("dst/src/second"))
    );
    for d in [&src, &tmp.path().join("dst/src")] {
        fs::set_permissions(d.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn mapped_ownership_moves_ids_between_a_user_namespace_and_the_host() {
    let to_host = Ownership::Mapped {
        uid: vec![[0, 100_000, 1000], [1000, 5000, 10]],
        gid: vec![[0, 200_000, 65536]],
    };
    assert_eq!(to_host.owner_of(0, 0), (100_000, 200_000));
    assert_eq!(to_host.owner_of(1005, 7), (5005, 200_007));
    // Ids the map leaves out: the kernel's overflow id.
    assert_eq!(to_host.owner_of(1010, 65536), (65534, 65534));

    // Through a tar stream: the header carries the mapped ids.
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("src")).unwrap();
    fs::write(tmp.path().join("src/f"), "f").unwrap();
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let root = TreeRoot::open(tmp.path(), "").unwrap();
    let source = root.source("/src", false).unwrap();
    let shift = Ownership::Mapped {
        uid: vec![[uid, 7, 1]],
        gid: vec![[gid, 9, 1]],
    };
    let mut archive = Vec::new();
    archive_tree(&source, None, &mut archive, shift).unwrap();
    let mut tar = tar::Archive::new(archive.as_slice());
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            (entry.header().uid().unwrap(), entry.header().gid().unwrap()),
            (7, 9)
        );
    }
}

#[test]
fn a_symlink_source_is_copied_as_a_link_unless_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c");
    fs::create_dir_all(c.join("etc")).unwrap();
    fs::write(c.join("etc/conf"), "inside").unwrap();
    symlink("/etc/conf", c.join("link")).unwrap();
    fs::create_dir(tmp.path().join("out")).unwrap();
    let container = TreeRoot::open(&c, "c:").unwrap();
    let host = TreeRoot::open(tmp.path(), "").unwrap();
    let out = host.directory("/out").unwrap();

    let plain = container.source("/link", false).unwrap();
    copy_tree(&plain, Some(OsStr::new("plain")), &out, me()).unwrap();
    assert_eq!(
        fs::read_link(tmp.path().join("out/plain")).unwrap(),
        Path::new("/etc/conf")
    );

    // -L: followed, inside the container's root (not the host's /etc).
    let followed = container.source("/link", true).unwrap();
    copy_tree(&followed, Some(OsStr::new("followed")), &out, me()).unwrap();
    assert_eq!(
        fs::read_to_string(tmp.path().join("out/followed")).unwrap(),
        "inside"
    );
}

/// A "container" whose /data is a symlink to `/` and whose /up is
/// `../../..`: writes through either land inside it.
#[test]
fn container_symlinks_never_lead_writes_out_of_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c");
    fs::create_dir(&c).unwrap();
    symlink("/", c.join("data")).unwrap();
    symlink("../../..", c.join("up")).unwrap();
    let host_src = tmp.path().join("payload");
    fs::write(&host_src, "payload").unwrap();
    let host = TreeRoot::open(tmp.path(), "").unwrap();
    let container = TreeRoot::open(&c, "c:").unwrap();
    let source = host.source("/payload", false).unwrap();

    for (dest, lands) in [
        ("/data", "payload"),
        ("/up", "payload"),
        ("/data/../../../x", "x"),
    ] {
        let plan = plan_copy("/payload", false, dest, container.existing(dest).unwrap()).unwrap();
        let into = container.directory(&plan.into).unwrap();
        copy_tree(&source, plan.name.as_deref(), &into, me()).unwrap();
        assert_eq!(
            fs::read_to_string(c.join(lands)).unwrap(),
            "payload",
            "{dest}"
        );
    }
    assert!(!tmp.path().join("x").exists(), "a write escaped through ..");
}

#[test]
fn an_archive_cannot_write_through_its_own_symlinks_or_dotdot() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("canary");
    fs::create_dir(&canary).unwrap();
    fs::create_dir(tmp.path().join("dst")).unwrap();
    let root = TreeRoot::open(tmp.path(), "").unwrap();
    let into = root.directory("/dst").unwrap();

    let header_for = |kind, size| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header
    };
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = header_for(tar::EntryType::Symlink, 0);
    builder.append_link(&mut header, "escape", &canary).unwrap();
    let mut header = header_for(tar::EntryType::Regular, 3);
    builder
        .append_data(&mut header, "escape/owned", &b"bad"[..])
        .unwrap();
    let archive = builder.into_inner().unwrap();
    extract_archive(archive.as_slice(), &into, me()).unwrap();
    assert_eq!(
        fs::read_dir(&canary).unwrap().count(),
        0,
        "wrote through the archive's symlink"
    );
    // The symlink resolved inside the destination instead.
    let inside = tmp
        .path()
        .join("dst")
        .join(canary.strip_prefix("/").unwrap())
        .join("owned");
    assert_eq!(fs::read_to_string(inside).unwrap(), "bad");

    // A name with .. is refused outright.
    let mut raw = header_for(tar::EntryType::Regular, 0);
    raw.as_gnu_mut().unwrap().name[..10].copy_from_slice(b"../escaped");
    raw.set_cksum();
    let mut bytes = raw.as_bytes().to_vec();
    bytes.extend_from_slice(&[0; 1024]);
    let err = extract_archive(bytes.as_slice(), &into, me()).unwrap_err();
    assert!(matches!(err, CopyError::UnsafeArchivePath { .. }), "{err}");
    assert!(!tmp.path().join("escaped").exists());
}

#[test]
fn a_directory_is_never_replaced_by_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("src/x")).unwrap();
    fs::write(tmp.path().join("src/x/y"), "file").unwrap();
    fs::create_dir_all(tmp.path().join("dst/x/y")).unwrap();
    let root = TreeRoot::open(tmp.path(), "").unwrap();
    let source = root.source("/src/.", false).unwrap();
    let err = copy_tree(&source, None, &root.directory("/dst").unwrap(), me()).unwrap_err();
    assert!(
        matches!(err, CopyError::NonDirectoryOntoDirectory { .. }),
        "{err}"
    );
}

#[test]
fn missing_sources_and_file_parents_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("file"), "").unwrap();
    let root = TreeRoot::open(tmp.path(), "c:").unwrap();
    let err = root.source("/nope", false).unwrap_err();
    assert!(matches!(err, CopyError::NotFound { .. }), "{err}");
    assert_eq!(err.to_string(), "no such file or directory: c:/nope");
    let err = root.directory("/file").unwrap_err();
    assert!(matches!(err, CopyError::NotADirectory { .. }), "{err}");
    assert_eq!(root.existing("/nope").unwrap(), Existing::Missing);
    assert_eq!(root.existing("/file").unwrap(), Existing::Other);
    assert_eq!(root.existing("/").unwrap(), Existing::Directory);
}

/// Swaps `dir` between a real directory and a symlink to `target` until
/// told to stop.
fn swapper(dir: PathBuf, target: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let parked = dir.with_extension("parked");
        while !stop.load(Ordering::Relaxed) {
            let _ = fs::rename(&dir, &parked);
            let _ = symlink(&target, &dir);
            std::thread::yield_now();
            let _ = fs::remove_file(&dir);
            let _ = fs::rename(&parked, &dir);
        }
    })
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_copy_is_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("canary");
    fs::create_dir(&canary).unwrap();
    fs::write(canary.join("secret"), "host secret").unwrap();
    let c = tmp.path().join("c");
    fs::create_dir_all(c.join("d")).unwrap();
    for i in 0..50 {
        fs::write(c.join("d").join(format!("f{i}")), "container").unwrap();
    }
    fs::create_dir(c.join("in")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let read_swapper = swapper(c.join("d"), canary.clone(), stop.clone());
    let write_swapper = swapper(c.join("in"), canary.clone(), stop.clone());

    let container = TreeRoot::open(&c, "c:").unwrap();
    let host = TreeRoot::open(tmp.path(), "").unwrap();
    let (mut reads, mut writes) = (0, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut round = 0;
    // At least 200 rounds, and on until copies went through both ways
    // (how often the swapper lets one through depends on the scheduler).
    while round < 200 || ((reads == 0 || writes == 0) && std::time::Instant::now() < deadline) {
        round += 1;
        // Out of the container: never the host's secret.
        let out = tmp.path().join(format!("out{round}"));
        fs::create_dir(&out).unwrap();
        if let Ok(source) = container.source("/d/.", false) {
            let into = host.directory(&format!("/out{round}")).unwrap();
            reads += usize::from(copy_tree(&source, None, &into, me()).is_ok());
        }
        for entry in fs::read_dir(&out).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                assert_ne!(fs::read_to_string(&path).unwrap(), "host secret");
            }
        }
        fs::remove_dir_all(&out).unwrap();
        // Into the container: never into the canary.
        let source = host.source("/c/d.parked", false);
        if let (Ok(source), Ok(into)) = (source, container.directory("/in")) {
            let copied = copy_tree(&source, Some(OsStr::new("x")), &into, me());
            writes += usize::from(copied.is_ok());
        }
    }
    stop.store(true, Ordering::Relaxed);
    read_swapper.join().unwrap();
    write_swapper.join().unwrap();
    assert!(
        reads > 0 && writes > 0,
        "{reads} reads, {writes} writes went through"
    );
    let names: Vec<_> = fs::read_dir(&canary)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("secret")],
        "the canary was written to"
    );
}

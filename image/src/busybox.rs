//! The default image: a static busybox with its applet links and a minimal
//! `/etc`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ImageError;

/// Fixed mtime of every entry (2000-01-01), so the archive is reproducible.
pub(crate) const MTIME: u64 = 946_684_800;

const CANDIDATES: &[&str] = &[
    "/bin/busybox",
    "/usr/bin/busybox",
    "/sbin/busybox",
    "/usr/sbin/busybox",
    "/usr/local/bin/busybox",
];

/// Find a statically linked busybox on the host: the usual locations, then
/// `$PATH`. A dynamically linked one (an ELF with a `PT_INTERP` program
/// header) is skipped: it could not run inside a container.
pub fn find_static_busybox() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|dir| dir.join("busybox"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .chain(from_path)
        .find(|path| is_static_elf(path))
}

/// Whether `path` is an executable ELF file without a program interpreter.
pub(crate) fn is_static_elf(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {}
        _ => return false,
    }
    elf_has_no_interp(file).unwrap_or(false)
}

fn elf_has_no_interp(mut file: File) -> io::Result<bool> {
    const PT_INTERP: u32 = 3;
    let mut ident = [0u8; 64];
    file.read_exact(&mut ident)?;
    if ident[..4] != *b"\x7fELF" {
        return Ok(false);
    }
    let little = match ident[5] {
        1 => true,
        2 => false,
        _ => return Ok(false),
    };
    let u16_at = |b: &[u8]| {
        let b = [b[0], b[1]];
        if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let u32_at = |b: &[u8]| {
        let b = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let u64_at = |b: &[u8]| {
        let b: [u8; 8] = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        }
    };
    let (phoff, phentsize, phnum) = match ident[4] {
        1 => (
            u64::from(u32_at(&ident[0x1c..])),
            u16_at(&ident[0x2a..]),
            u16_at(&ident[0x2c..]),
        ),
        2 => (
            u64_at(&ident[0x20..]),
            u16_at(&ident[0x36..]),
            u16_at(&ident[0x38..]),
        ),
        _ => return Ok(false),
    };
    if phnum == 0 || phentsize < 4 {
        return Ok(false);
    }
    for i in 0..u64::from(phnum) {
        file.seek(SeekFrom::Start(phoff + i * u64::from(phentsize)))?;
        let mut p_type = [0u8; 4];
        file.read_exact(&mut p_type)?;
        if u32_at(&p_type) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The applets' install paths (`bin/sh`, `usr/bin/env`, ...), from
/// `busybox --list-full`, or `busybox --list` (all in `bin/`) for builds
/// without it.
fn applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let run = |arg: &str| -> Result<Option<String>, ImageError> {
        let output = Command::new(busybox)
            .arg(arg)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| ImageError::BusyboxApplets {
                path: busybox.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
            .filter(|out| !out.trim().is_empty()))
    };
    let lines: Vec<String> = if let Some(out) = run("--list-full")? {
        out.lines().map(str::to_owned).collect()
    } else if let Some(out) = run("--list")? {
        out.lines().map(|name| format!("bin/{name}")).collect()
    } else {
        return Err(ImageError::BusyboxApplets {
            path: busybox.to_owned(),
            reason: "neither --list-full nor --list printed any applet".to_owned(),
        });
    };
    // Keep only plain relative paths; never trust a line to be a safe path.
    Ok(lines
        .into_iter()
        .map(|l| l.trim().trim_start_matches('/').to_owned())
        .filter(|l| {
            !l.is_empty()
                && l != "bin/busybox"
                && Path::new(l)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
        })
        .collect())
}

enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
}

/// Write the default image as a tar archive to `out`: `bin/busybox` (the
/// static binary at `busybox`), a relative symlink to it for every applet,
/// the usual top-level directories (`tmp` 1777, `root` 0700), and
/// `etc/passwd`, `etc/group`, `etc/hostname`, `etc/hosts`.
///
/// The archive is reproducible (sorted entries, fixed mtime, owned by 0:0),
/// so the image id depends only on the busybox binary.
pub fn write_busybox_tar(busybox: &Path, out: impl Write) -> Result<(), ImageError> {
    let binary = std::fs::read(busybox).map_err(|e| ImageError::io("read", busybox, e))?;
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "var", "home",
    ] {
        nodes.insert(dir.to_owned(), Node::Dir(0o755));
    }
    nodes.insert("tmp".to_owned(), Node::Dir(0o1777));
    nodes.insert("root".to_owned(), Node::Dir(0o700));
    for applet in applets(busybox)? {
        let depth = Path::new(&applet).components().count();
        for parent in Path::new(&applet).ancestors().skip(1) {
            let parent = parent.to_string_lossy();
            if !parent.is_empty() {
                nodes.entry(parent.into_owned()).or_insert(Node::Dir(0o755));
            }
        }
        // Relative, so the link also resolves when the layer is looked at
        // from the host: bin/sh -> busybox, usr/bin/env -> ../../bin/busybox.
        let target = if depth == 2 && applet.starts_with("bin/") {
            "busybox".to_owned()
        } else {
            format!("{}bin/busybox", "../".repeat(depth - 1))
        };
        nodes.insert(applet, Node::Symlink(target));
    }
    nodes.insert("bin/busybox".to_owned(), Node::File(0o755, binary));
    let etc: [(&str, &str); 4] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hostname", "localhost\n"),
        (
            "etc/hosts",
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
    ];
    for (path, content) in etc {
        nodes.insert(
            path.to_owned(),
            Node::File(0o644, content.as_bytes().to_vec()),
        );
    }

    let write_err = |source: io::Error| ImageError::Archive {
        origin: "<busybox image being written>".to_owned(),
        source,
    };
    let mut builder = tar::Builder::new(out);
    for (path, node) in &nodes {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        header.set_username("root").map_err(write_err)?;
        header.set_groupname("root").map_err(write_err)?;
        let data: &[u8] = match node {
            Node::Dir(mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                &[]
            }
            Node::File(mode, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                data
            }
            Node::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_link_name(target).map_err(write_err)?;
                &[]
            }
        };
        header.set_size(data.len() as u64);
        let name = match node {
            Node::Dir(_) => format!("{path}/"),
            _ => path.clone(),
        };
        builder
            .append_data(&mut header, name, data)
            .map_err(write_err)?;
    }
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(write_err)
}

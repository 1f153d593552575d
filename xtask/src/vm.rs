//! The e2e VM: a stock Debian kernel in QEMU whose root is the host's own
//! root filesystem, shared read-only over 9p.
//!
//! Boot sequence (the recipe of issue 3):
//! 1. A tiny initramfs (static busybox, the virtio-pci / 9p / overlay modules)
//!    mounts the host root read-only over 9p, puts tmpfs on /run and /tmp and
//!    copy-on-write overlays on /etc /var /root, mounts the workspace and the
//!    run's shared directory read-write at their host paths, and switch_roots.
//!    Modules are insmod-ed by hand: autoload needs the host's modprobe,
//!    which only exists after switch_root.
//! 2. PID 1 is then `run.sh` from the shared directory (the kernel command
//!    line is too short for it): it mounts cgroups the way the run asks, loads
//!    the networking modules, and calls `xtask run-suite`, which writes the
//!    report and the exit code back into the shared directory.
//!
//! No exit-code file after QEMU ends (panic, hang, timeout) is a failure.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::cargo::Workspace;
use crate::suite::{self, SuiteReport, FIRST_TEST_MARKER};

/// The cgroup layout the guest sets up before the tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CgroupVersion {
    V2,
    V1,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V2 => "v2",
            CgroupVersion::V1 => "v1",
        })
    }
}

/// Everything one VM run needs.
#[derive(Debug)]
pub struct VmRun<'a> {
    pub workspace: &'a Workspace,
    pub berth_bin: &'a Path,
    pub executables: &'a [PathBuf],
    pub cgroup: CgroupVersion,
    pub filter: &'a [String],
    pub timeout: Duration,
    /// Run this shell command line (words, quoted here) in the guest
    /// instead of the test suite; its exit code comes back.
    pub command: Option<&'a [String]>,
}

/// What came back from the guest.
#[derive(Debug)]
pub struct VmOutcome {
    /// None when the guest never wrote its report (crash, hang, timeout).
    pub report: Option<SuiteReport>,
    pub exit_code: Option<i32>,
    pub boot_to_first_test: Option<Duration>,
    pub wall_time: Duration,
}

impl VmOutcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.report.as_ref().is_some_and(SuiteReport::succeeded)
    }
}

/// Modules the initramfs loads itself (their dependencies are resolved
/// from the kernel's own module metadata).
const INITRAMFS_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// 9p mount tags.
const TAG_HOST_ROOT: &str = "hostroot";
const TAG_WORKSPACE: &str = "workspace";
const TAG_SHARE: &str = "share";

pub fn run(vm: &VmRun<'_>) -> Result<VmOutcome> {
    let started = Instant::now();
    let xtask_dir = vm.workspace.xtask_dir();
    fs::create_dir_all(&xtask_dir).with_context(|| format!("creating {}", xtask_dir.display()))?;
    let kernel = Kernel::newest_installed()?;
    let boot_image = kernel.boot_image(&xtask_dir)?;
    let initramfs = build_initramfs(&kernel, &xtask_dir)?;

    // A fresh shared directory per layout, so a stale exit code can never
    // be mistaken for this run's.
    let share = xtask_dir.join(format!("vm-{}", vm.cgroup));
    if share.exists() {
        fs::remove_dir_all(&share).with_context(|| format!("removing {}", share.display()))?;
    }
    fs::create_dir_all(&share).with_context(|| format!("creating {}", share.display()))?;
    let exit_file = share.join("exit-code");
    let report_file = share.join("report.json");
    let run_script = share.join("run.sh");
    let xtask_bin = std::env::current_exe().context("finding the xtask executable")?;
    fs::write(
        &run_script,
        guest_run_script(vm, &xtask_bin, &exit_file, &report_file),
    )
    .with_context(|| format!("writing {}", run_script.display()))?;
    fs::set_permissions(&run_script, fs::Permissions::from_mode(0o755))?;

    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        "stdio",
    ])
    .args(["-m", "2G", "-smp", "2"])
    .args(accelerator_args())
    .arg("-kernel")
    .arg(&boot_image)
    .arg("-initrd")
    .arg(&initramfs)
    .arg("-append")
    .arg(format!(
        "console=ttyS0 panic=-1 quiet xtask_workspace={} xtask_share={}",
        vm.workspace.root.display(),
        share.display()
    ))
    .args(share_9p_args(TAG_HOST_ROOT, Path::new("/"), true))
    .args(share_9p_args(TAG_WORKSPACE, &vm.workspace.root, false))
    .args(share_9p_args(TAG_SHARE, &share, false))
    // The console is the guest's serial port; our stdin stays ours.
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    println!(
        "xtask: booting {} (kernel {}) with cgroup {}, timeout {} s",
        boot_image.display(),
        kernel.version,
        vm.cgroup,
        vm.timeout.as_secs()
    );
    let boot_started = Instant::now();
    let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
    let console = child.stdout.take().context("qemu stdout was not piped")?;
    let first_test_seen = Arc::new(Mutex::new(None));
    let console_thread = {
        let first_test_seen = Arc::clone(&first_test_seen);
        std::thread::spawn(move || stream_console(console, &first_test_seen))
    };
    let status = suite::wait_until(&mut child, boot_started + vm.timeout)?;
    let _ = console_thread.join();
    match status {
        None => println!(
            "xtask: the VM did not finish within {} s; killed QEMU (pid {})",
            vm.timeout.as_secs(),
            child.id()
        ),
        Some(status) if !status.success() => println!("xtask: QEMU exited with {status}"),
        Some(_) => {}
    }

    let exit_code = fs::read_to_string(&exit_file)
        .ok()
        .and_then(|code| code.trim().parse().ok());
    if exit_code.is_none() {
        println!(
            "xtask: the guest wrote no exit code ({} missing): it crashed, hung or timed out",
            exit_file.display()
        );
    }
    let report = fs::read(&report_file)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok());
    let boot_to_first_test = first_test_seen
        .lock()
        .ok()
        .and_then(|seen| *seen)
        .map(|seen: Instant| seen - boot_started);
    Ok(VmOutcome {
        report,
        exit_code,
        boot_to_first_test,
        wall_time: started.elapsed(),
    })
}

/// Copies the guest console to our stdout as it comes (minus the serial
/// line's carriage returns), noting when the first test starts.
fn stream_console(mut console: impl Read, first_test_seen: &Mutex<Option<Instant>>) {
    let mut stdout = std::io::stdout();
    let mut chunk = [0u8; 4096];
    let mut recent = Vec::new();
    while let Ok(read @ 1..) = console.read(&mut chunk) {
        let text: Vec<u8> = chunk[..read]
            .iter()
            .copied()
            .filter(|&b| b != b'\r')
            .collect();
        let _ = stdout.write_all(&text);
        let _ = stdout.flush();
        if let Ok(mut seen) = first_test_seen.lock() {
            if seen.is_none() {
                recent.extend_from_slice(&text);
                if String::from_utf8_lossy(&recent).contains(FIRST_TEST_MARKER) {
                    *seen = Some(Instant::now());
                }
                // Keep only what a marker split across reads could need.
                let keep_from = recent.len().saturating_sub(FIRST_TEST_MARKER.len());
                recent.drain(..keep_from);
            }
        }
    }
}

/// KVM only when a real KVM module is loaded: this machine's /dev/kvm is a
/// paravirtual backend (kvm_pvm) that cannot boot a stock kernel.
fn accelerator_args() -> Vec<&'static str> {
    let real_kvm = ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
        .iter()
        .any(|module| Path::new(module).exists());
    if real_kvm {
        vec!["-accel", "kvm", "-cpu", "host"]
    } else {
        vec!["-accel", "tcg", "-cpu", "max"]
    }
}

/// `-fsdev` + `-device` for one 9p share. multidevs=remap keeps inode
/// numbers unique across the host mounts below the shared path.
fn share_9p_args(tag: &str, path: &Path, read_only: bool) -> [String; 4] {
    // QEMU option values escape a comma by doubling it.
    let path = path.display().to_string().replace(',', ",,");
    // passthrough stores the guest's uids as-is, which needs root on the
    // host; without root the files simply belong to the invoking user.
    let security_model = if nix::unistd::geteuid().is_root() {
        "passthrough"
    } else {
        "none"
    };
    let read_only = if read_only { ",readonly=on" } else { "" };
    [
        "-fsdev".to_owned(),
        format!(
            "local,id={tag},path={path},security_model={security_model},multidevs=remap{read_only}"
        ),
        "-device".to_owned(),
        format!("virtio-9p-pci,fsdev={tag},mount_tag={tag}"),
    ]
}

/// The guest's PID 1 after switch_root.
fn guest_run_script(
    vm: &VmRun<'_>,
    xtask_bin: &Path,
    exit_file: &Path,
    report_file: &Path,
) -> String {
    let cgroup_setup = match vm.cgroup {
        CgroupVersion::V2 => "mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
             echo '+memory +pids +cpu +cpuset' > /sys/fs/cgroup/cgroup.subtree_control\n"
            .to_owned(),
        CgroupVersion::V1 => {
            // What systemd does on a legacy host, minus name=systemd: one
            // hierarchy per controller group, plus the usual cpu/cpuacct links.
            let mut setup = "mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup\n".to_owned();
            for controllers in [
                "cpu,cpuacct",
                "cpuset",
                "memory",
                "pids",
                "freezer",
                "devices",
                "blkio",
            ] {
                setup += &format!(
                    "mkdir /sys/fs/cgroup/{controllers} && \
                     mount -t cgroup -o {controllers} cgroup /sys/fs/cgroup/{controllers}\n"
                );
            }
            setup +=
                "ln -s cpu,cpuacct /sys/fs/cgroup/cpu\nln -s cpu,cpuacct /sys/fs/cgroup/cpuacct\n";
            setup
        }
    };
    let mut suite_command = vec![
        shell_quote(&xtask_bin.display().to_string()),
        "run-suite".to_owned(),
        "--serial".to_owned(),
        format!(
            "--berth-bin {}",
            shell_quote(&vm.berth_bin.display().to_string())
        ),
        format!("--timeout {}", guest_suite_timeout(vm.timeout).as_secs()),
        format!(
            "--report {}",
            shell_quote(&report_file.display().to_string())
        ),
        format!(
            "--exit-file {}",
            shell_quote(&exit_file.display().to_string())
        ),
    ];
    for filter in vm.filter {
        suite_command.push(format!("--filter {}", shell_quote(filter)));
    }
    suite_command.push("--".to_owned());
    suite_command.extend(
        vm.executables
            .iter()
            .map(|exe| shell_quote(&exe.display().to_string())),
    );
    if let Some(command) = vm.command {
        suite_command = command.iter().map(|word| shell_quote(word)).collect();
        // `NAME=value` words stay assignments for the shell.
        for (word, quoted) in command.iter().zip(suite_command.iter_mut()) {
            if word.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            }) {
                *quoted = word.clone();
            }
        }
        // From the workspace, as `cargo xtask` runs.
        suite_command.insert(
            0,
            format!(
                "cd {} &&",
                shell_quote(&vm.workspace.root.display().to_string())
            ),
        );
        suite_command.push(format!(
            "; echo $? > {}",
            shell_quote(&exit_file.display().to_string())
        ));
    }
    format!(
        r#"#!/bin/sh
# PID 1 of the e2e VM after switch_root (written by `cargo xtask e2e`).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp
echo "xtask-guest: up after $(cut -d' ' -f1 /proc/uptime) s"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
{cgroup_setup}
# Autoload would find most of these, but br_netfilter never autoloads.
# One modprobe: each run reads the module index over 9p.
modprobe -a br_netfilter overlay veth bridge || echo "xtask-guest: some modules failed to load"
ip link set lo up
hostname berth-e2e-vm
# The tests' state roots on a disk filesystem (ext4 in a loop file), as on
# a real host: tmpfs takes ID-mapped mounts (user namespaces) only from
# Linux 6.3, ext4 from 5.12. discard: what is deleted gives the guest's
# memory (the loop file is on tmpfs) back.
if modprobe -a loop ext4 && truncate -s 4G /tmp/e2e-disk.img \
    && mkfs.ext4 -q -F /tmp/e2e-disk.img && mkdir -p /tmp/d \
    && mount -o loop,discard /tmp/e2e-disk.img /tmp/d && chmod 1777 /tmp/d; then
    # A short path: podman refuses a runroot longer than 50 characters.
    export TMPDIR=/tmp/d
else
    echo "xtask-guest: no ext4 disk for the tests, TMPDIR stays on tmpfs"
fi
echo "xtask-guest: set up after $(cut -d' ' -f1 /proc/uptime) s"
{suite_command}
sync
# Power off now: PID 1 exiting would panic the kernel (that also ends QEMU,
# but with a misleading trace on the console).
echo o > /proc/sysrq-trigger
sleep 60
"#,
        suite_command = suite_command.join(" \\\n    "),
    )
}

/// The guest stops its suite early enough to kill the stuck test, run the
/// leak check (slow under TCG) and write its report before QEMU is killed.
fn guest_suite_timeout(vm_timeout: Duration) -> Duration {
    let margin = Duration::from_secs(120).max(vm_timeout / 10);
    vm_timeout.saturating_sub(margin).max(vm_timeout / 2)
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// An installed kernel: /boot/vmlinuz-VERSION with /lib/modules/VERSION.
#[derive(Debug)]
struct Kernel {
    version: String,
    vmlinuz: PathBuf,
}

impl Kernel {
    /// The newest kernel in /boot that has its modules installed.
    fn newest_installed() -> Result<Self> {
        let entries = fs::read_dir("/boot").context("reading /boot")?;
        let mut versions: Vec<String> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.strip_prefix("vmlinuz-").map(str::to_owned)
            })
            .filter(|version| Path::new("/lib/modules").join(version).is_dir())
            .collect();
        versions.sort_by_key(|version| version_sort_key(version));
        let version = versions.pop().context(
            "no kernel in /boot with modules in /lib/modules: install one \
             (apt-get install linux-image-amd64)",
        )?;
        Ok(Self {
            vmlinuz: PathBuf::from(format!("/boot/vmlinuz-{version}")),
            version,
        })
    }

    /// The decompressed kernel (vmlinux) when QEMU can boot it directly (PVH
    /// entry point), which skips the in-guest decompression (~2-3 s under
    /// TCG); vmlinuz otherwise.
    fn boot_image(&self, cache_dir: &Path) -> Result<PathBuf> {
        let config =
            fs::read_to_string(format!("/boot/config-{}", self.version)).unwrap_or_default();
        if !config.lines().any(|line| line == "CONFIG_PVH=y") {
            return Ok(self.vmlinuz.clone());
        }
        // A package update can keep the version string: key by the file too.
        let mut hasher = DefaultHasher::new();
        let metadata = fs::metadata(&self.vmlinuz)
            .with_context(|| format!("reading {}", self.vmlinuz.display()))?;
        (metadata.len(), metadata.modified().ok()).hash(&mut hasher);
        let vmlinux = cache_dir.join(format!("vmlinux-{}-{:016x}", self.version, hasher.finish()));
        if vmlinux.exists() {
            return Ok(vmlinux);
        }
        match extract_vmlinux(&self.vmlinuz) {
            Ok(elf) => {
                write_atomically(&vmlinux, &elf)?;
                remove_stale_cache_files(
                    cache_dir,
                    &format!("vmlinux-{}-", self.version),
                    &vmlinux,
                );
                Ok(vmlinux)
            }
            Err(err) => {
                println!("xtask: booting vmlinuz, could not extract vmlinux: {err:#}");
                Ok(self.vmlinuz.clone())
            }
        }
    }
}

/// "6.1.0-56-amd64" -> [6, 1, 0, 56]: numeric runs compare as numbers.
fn version_sort_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|number| number.parse().ok())
        .collect()
}

/// The ELF kernel inside a bzImage: the setup header says where the
/// compressed payload is; its magic says which decompressor it needs.
fn extract_vmlinux(bzimage: &Path) -> Result<Vec<u8>> {
    let image = fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let read_u32 = |offset: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            image.get(offset..offset + 4)?.try_into().ok()?,
        ))
    };
    ensure!(image.get(0x202..0x206) == Some(b"HdrS"), "not a bzImage");
    let protocol = u16::from_le_bytes([image[0x206], image[0x207]]);
    ensure!(
        protocol >= 0x208,
        "boot protocol {protocol:#x} has no payload fields"
    );
    // A setup_sects of 0 means 4, for historical reasons.
    let setup_sectors = match image[0x1f1] {
        0 => 4,
        sectors => usize::from(sectors),
    };
    let protected_mode_start = (setup_sectors + 1) * 512;
    let payload_offset = read_u32(0x248).context("short header")? as usize;
    let payload_length = read_u32(0x24c).context("short header")? as usize;
    let start = protected_mode_start + payload_offset;
    let payload = image
        .get(start..start + payload_length)
        .context("payload outside the file")?;
    let decompressor: &[&str] = match payload {
        [0x1f, 0x8b, ..] => &["gzip", "-dc"],
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => &["xz", "-dc", "--single-stream"],
        [0x28, 0xb5, 0x2f, 0xfd, ..] => &["zstd", "-dc"],
        [0x5d, 0, 0, ..] => &["lzma", "-dc"],
        [b'B', b'Z', b'h', ..] => &["bzip2", "-dc"],
        [0x02, 0x21, 0x4c, 0x18, ..] => &["lz4", "-dc"],
        _ => bail!("unknown compression of the kernel payload"),
    };
    let mut child = Command::new(decompressor[0])
        .args(&decompressor[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", decompressor[0]))?;
    let mut stdin = child.stdin.take().context("stdin was not piped")?;
    let payload = payload.to_vec();
    // Fed from a thread: the decompressed output is far bigger than a pipe.
    let feeder = std::thread::spawn(move || stdin.write_all(&payload));
    let output = child.wait_with_output()?;
    let _ = feeder.join();
    // The kernel appends the uncompressed size after the stream, which
    // some decompressors call trailing garbage: judge by the output.
    ensure!(
        output.stdout.starts_with(b"\x7fELF"),
        "{} did not produce an ELF kernel",
        decompressor[0]
    );
    Ok(output.stdout)
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&temporary, contents).with_context(|| format!("writing {}", temporary.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("renaming to {}", path.display()))
}

/// A kernel module to load in the initramfs, with the file it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ModuleFile {
    name: String,
    path: PathBuf,
}

/// `names` and all their dependencies, dependencies first (insmod order).
/// Built-in modules need no loading and are left out.
fn resolve_modules(kernel_version: &str, names: &[&str]) -> Result<Vec<ModuleFile>> {
    fn visit(
        kernel_version: &str,
        name: &str,
        visiting: &mut Vec<String>,
        ordered: &mut Vec<ModuleFile>,
    ) -> Result<()> {
        if visiting.iter().any(|seen| seen == name) || ordered.iter().any(|m| m.name == name) {
            return Ok(());
        }
        visiting.push(name.to_owned());
        let field = |field: &str| -> Result<String> {
            let output = Command::new("modinfo")
                .args(["-k", kernel_version, "-F", field, name])
                .stderr(Stdio::inherit())
                .output()
                .context("running modinfo (apt-get install kmod)")?;
            ensure!(output.status.success(), "modinfo {name} failed");
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        };
        for dependency in field("depends")?.split(',').filter(|d| !d.is_empty()) {
            visit(kernel_version, dependency, visiting, ordered)?;
        }
        let filename = field("filename")?;
        if !filename.starts_with("(builtin)") {
            ordered.push(ModuleFile {
                name: name.to_owned(),
                path: PathBuf::from(filename),
            });
        }
        Ok(())
    }
    let mut ordered = Vec::new();
    for name in names {
        visit(kernel_version, name, &mut Vec::new(), &mut ordered)?;
    }
    Ok(ordered)
}

/// A module's contents as insmod needs them (uncompressed).
fn read_module(module: &ModuleFile) -> Result<Vec<u8>> {
    let path = &module.path;
    let decompressor = match path.extension().and_then(|ext| ext.to_str()) {
        Some("xz") => Some("xz"),
        Some("zst") => Some("zstd"),
        Some("gz") => Some("gzip"),
        _ => None,
    };
    let Some(decompressor) = decompressor else {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let output = Command::new(decompressor)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {decompressor} on {}", path.display()))?;
    ensure!(
        output.status.success(),
        "{decompressor} -dc {} failed",
        path.display()
    );
    Ok(output.stdout)
}

/// The stage-1 init: everything up to switch_root into the host's root.
fn initramfs_init(modules: &[ModuleFile]) -> String {
    let module_names: Vec<&str> = modules.iter().map(|module| module.name.as_str()).collect();
    format!(
        r#"#!/bin/busybox sh
# Stage 1 of the e2e VM (written by `cargo xtask e2e`): mount the host root
# over 9p and switch_root into it. See xtask/src/vm.rs.
/bin/busybox --install -s /bin
export PATH=/bin
fail() {{
    echo "xtask-init: $*: powering off"
    poweroff -f
    sleep 10
}}
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev \
    || fail "cannot mount /proc /sys /dev"
for module in {modules}; do
    insmod "/lib/modules/$module.ko" || fail "insmod $module failed"
done
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        xtask_workspace=*) workspace="${{arg#*=}}" ;;
        xtask_share=*) share="${{arg#*=}}" ;;
    esac
done
[ -n "$workspace" ] && [ -n "$share" ] || fail "xtask_workspace= or xtask_share= missing"
p9=trans=virtio,version=9p2000.L,msize=262144
# cache=loose lets the guest keep file pages: without it every exec of the
# 40 MB debug berth re-reads it over 9p (~3 s each under TCG, ~0.2 s with).
# Safe because nothing on the host changes these files during the run; the
# shared directory, which carries the results back, stays uncached.
mount -t 9p -o "$p9,ro,cache=loose" {TAG_HOST_ROOT} /newroot || fail "cannot mount the host root"
mount -t tmpfs -o mode=0755 run /newroot/run && mount -t tmpfs -o mode=1777 tmp /newroot/tmp \
    || fail "cannot mount /run and /tmp"
# Copy-on-write where a booting system writes; overlay uppers cannot be on 9p.
mount -t tmpfs cow /cow || fail "cannot mount the overlay tmpfs"
for dir in etc var root; do
    mkdir -p "/cow/$dir/upper" "/cow/$dir/work"
    mount -t overlay overlay \
        -o "lowerdir=/newroot/$dir,upperdir=/cow/$dir/upper,workdir=/cow/$dir/work" \
        "/newroot/$dir" || fail "cannot overlay /$dir"
done
# mkdir: a workspace below /tmp lies under the fresh tmpfs.
mkdir -p "/newroot$workspace" "/newroot$share" 2>/dev/null
mount -t 9p -o "$p9,cache=loose" {TAG_WORKSPACE} "/newroot$workspace" || fail "cannot mount $workspace"
mount -t 9p -o "$p9" {TAG_SHARE} "/newroot$share" || fail "cannot mount $share"
for fs in proc sys dev; do mount --move "/$fs" "/newroot/$fs"; done
exec switch_root /newroot /bin/sh "$share/run.sh"
"#,
        modules = module_names.join(" "),
    )
}

/// The initramfs for `kernel`, cached under target/xtask/ by kernel version
/// and a hash of its inputs (the init script, the module files, busybox).
fn build_initramfs(kernel: &Kernel, cache_dir: &Path) -> Result<PathBuf> {
    let modules = resolve_modules(&kernel.version, INITRAMFS_MODULES)?;
    let busybox = berth_image::find_static_busybox()
        .context("no static busybox found: apt-get install busybox-static")?;
    let init = initramfs_init(&modules);

    let mut hasher = DefaultHasher::new();
    init.hash(&mut hasher);
    for input in modules.iter().map(|module| &module.path).chain([&busybox]) {
        input.hash(&mut hasher);
        let metadata =
            fs::metadata(input).with_context(|| format!("reading {}", input.display()))?;
        (metadata.len(), metadata.modified().ok()).hash(&mut hasher);
    }
    let archive = cache_dir.join(format!(
        "initramfs-{}-{:016x}.cpio",
        kernel.version,
        hasher.finish()
    ));
    if archive.exists() {
        return Ok(archive);
    }

    println!("xtask: building {}", archive.display());
    let staging = cache_dir.join(format!("initramfs-{}.staging", kernel.version));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    for dir in ["bin", "lib/modules", "proc", "sys", "dev", "newroot", "cow"] {
        fs::create_dir_all(staging.join(dir))?;
    }
    fs::copy(&busybox, staging.join("bin/busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    for module in &modules {
        fs::write(
            staging.join(format!("lib/modules/{}.ko", module.name)),
            read_module(module)?,
        )?;
    }
    fs::write(staging.join("init"), init)?;
    fs::set_permissions(staging.join("init"), fs::Permissions::from_mode(0o755))?;

    // Left uncompressed: unpacking gzip costs more under TCG than reading
    // a few more MB from the host's page cache.
    let temporary = archive.with_extension("cpio.tmp");
    let mut cpio = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(&staging)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&temporary)?)
        .spawn()
        .context("running cpio (apt-get install cpio)")?;
    let mut file_list = String::new();
    list_tree(&staging, Path::new("."), &mut file_list)?;
    cpio.stdin
        .take()
        .context("cpio stdin was not piped")?
        .write_all(file_list.as_bytes())?;
    let status = cpio.wait()?;
    ensure!(status.success(), "cpio failed ({status})");
    fs::rename(&temporary, &archive)?;
    fs::remove_dir_all(&staging)?;
    remove_stale_cache_files(
        cache_dir,
        &format!("initramfs-{}-", kernel.version),
        &archive,
    );
    Ok(archive)
}

/// Deletes the older cached builds `current` replaces (same name prefix).
fn remove_stale_cache_files(cache_dir: &Path, prefix: &str, current: &Path) {
    let Ok(entries) = fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale =
            entry.file_name().to_string_lossy().starts_with(prefix) && entry.path() != current;
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `find .` for cpio: every path, each directory before its contents.
fn list_tree(root: &Path, relative: &Path, list: &mut String) -> Result<()> {
    list.push_str(&format!("{}\n", relative.display()));
    let full = root.join(relative);
    if fs::symlink_metadata(&full)?.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(&full)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        entries.sort();
        for entry in entries {
            list_tree(root, &relative.join(entry), list)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_numerically() {
        let mut versions = ["6.10.0-1-amd64", "6.9.0-3-amd64", "6.1.0-56-amd64"];
        versions.sort_by_key(|version| version_sort_key(version));
        assert_eq!(versions.last(), Some(&"6.10.0-1-amd64"));
    }

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn guest_timeout_leaves_room_to_report() {
        assert_eq!(guest_suite_timeout(Duration::from_secs(900)).as_secs(), 780);
        assert_eq!(
            guest_suite_timeout(Duration::from_secs(3000)).as_secs(),
            2700
        );
        assert_eq!(guest_suite_timeout(Duration::from_secs(60)).as_secs(), 30);
    }
}

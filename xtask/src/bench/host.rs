//! The host stage: build berth, write the rootfs and the OCI bundles, run
//! the namespace stage under `unshare`, then remove what only the host
//! namespaces show and check that nothing was left behind.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_cgroup::Hierarchies;
use serde_json::{json, Value};

use super::engines::MASKED_DIRS;
use super::latency::{CPU_PERIOD_US, CPU_QUOTA_US, MEMORY_LIMIT_BYTES};
use super::system::{
    append, berth_container_ids, cgroup_dirs, find_in_path, mounts_below, processes, quiet,
    remove_cgroups_named, run_checked,
};
use super::{BenchArgs, BundleKind, Settings, WorkDir};
use crate::cargo::{cargo_command, Workspace};

/// Set by SIGINT/SIGTERM in the host stage: the namespace stage dies with
/// `unshare --kill-child`, and we still clean up before exiting.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_signal: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub(super) fn host_stage(args: &BenchArgs, settings: &Settings) -> Result<()> {
    let workspace = Workspace::locate()?;
    let out_dir = workspace.target_dir.join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for tool in ["unshare", "tar"] {
        if find_in_path(tool).is_none() {
            bail!("`{tool}` is needed and not installed");
        }
    }
    if settings.scenarios == [super::Scenario::Ipam] {
        return super::network::ipam_alone(settings, &out_dir);
    }
    let berth = match &args.berth {
        Some(path) => fs::canonicalize(path).with_context(|| format!("{}", path.display()))?,
        None => build_release_berth(&workspace)?,
    };
    if settings.has(super::Scenario::Checkpoint)
        && std::env::var_os(IN_VM).is_none()
        && !super::checkpoint::criu_works()
    {
        return run_in_vm(&workspace, &berth);
    }

    catch_interrupts()?;
    let work = WorkDir::create()?;
    println!("xtask: bench work dir {}", work.root.display());
    let before = HostSnapshot::take(&work);
    let result = prepare_bundles(&work, settings)
        .and_then(|()| run_namespace_stage(&work, &berth, &out_dir));
    let cleanup = clean_up_on_host(&work, &berth, settings, &before);
    let leftovers = leftover_report(&work, &before);
    let leftover_text = format!(
        "## Leftover check (host namespaces, after the private ones are gone)\n\n{leftovers}\n"
    );
    print!("{leftover_text}");
    let summary = out_dir.join("summary.md");
    if result.is_ok() {
        append(&summary, &leftover_text)?;
        println!(
            "xtask: results in {} (beside it: latency.svg and the raw data, samples.tsv and one .tsv per other scenario)",
            summary.display()
        );
    }
    if let (Err(_), Err(cleanup_err)) = (&result, &cleanup) {
        eprintln!("xtask: cleanup failed too: {cleanup_err:#}");
    }
    result?;
    cleanup?;
    if leftovers.starts_with("- left behind") {
        bail!("the benchmark left something behind (see above)");
    }
    Ok(())
}

/// Set in the VM that runs a bench for a host whose kernel criu cannot
/// work on.
const IN_VM: &str = "XTASK_BENCH_IN_VM";

/// The same `cargo xtask bench` invocation, in the project's cgroup v2 VM
/// (criu 3.17 works on its Debian kernel), with the berth just built; the
/// results land in the shared workspace's target/bench as usual.
fn run_in_vm(workspace: &Workspace, berth: &Path) -> Result<()> {
    println!("xtask: criu does not work on this kernel: running the bench in the cgroup v2 VM");
    let xtask = std::env::current_exe().context("finding the xtask executable")?;
    // The guest has the host's programs, but its PATH lacks cargo's
    // directory (the host stage asks cargo for the workspace).
    let cargo_dir = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| find_in_path("cargo"))
        .and_then(|cargo| cargo.parent().map(Path::to_path_buf))
        .context("cargo is not on PATH")?;
    let mut command = vec![
        format!("{IN_VM}=1"),
        format!("PATH={}:$PATH", cargo_dir.display()),
        xtask.display().to_string(),
    ];
    let mut args = std::env::args().skip(1).peekable();
    while let Some(arg) = args.next() {
        if arg == "--berth" {
            args.next();
            continue;
        }
        if arg.starts_with("--berth=") {
            continue;
        }
        command.push(arg);
    }
    command.push("--berth".to_owned());
    command.push(berth.display().to_string());
    let outcome = crate::vm::run(&crate::vm::VmRun {
        workspace,
        berth_bin: berth,
        executables: &[],
        cgroup: crate::vm::CgroupVersion::V2,
        filter: &[],
        timeout: Duration::from_secs(3600),
        command: Some(&command),
    })?;
    match outcome.exit_code {
        Some(0) => Ok(()),
        Some(code) => bail!("the bench in the VM failed (exit code {code})"),
        None => bail!("the bench in the VM did not finish"),
    }
}

/// `cargo build --release -p cli`: the binary people would ship.
fn build_release_berth(workspace: &Workspace) -> Result<PathBuf> {
    println!("xtask: cargo build --release -p cli");
    let status = cargo_command()
        .current_dir(&workspace.root)
        .args(["build", "--release", "-p", "cli"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("`cargo build --release -p cli` failed ({status})");
    }
    let berth = workspace.target_dir.join("release").join("berth");
    if !berth.is_file() {
        bail!("{} is missing after the build", berth.display());
    }
    Ok(berth)
}

/// The busybox rootfs (the image berth builds for `busybox`, from the same
/// code) and one bundle per runtime and kind, from the runtime's own
/// `spec` so each gets the defaults it would give a user.
fn prepare_bundles(work: &WorkDir, settings: &Settings) -> Result<()> {
    let busybox = berth_image::find_static_busybox()
        .context("no static busybox found: apt-get install busybox-static")?;
    let tar_path = work.busybox_tar();
    let file =
        fs::File::create(&tar_path).with_context(|| format!("creating {}", tar_path.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    berth_image::write_busybox_tar(&busybox, &mut writer)
        .with_context(|| format!("writing the busybox image from {}", busybox.display()))?;
    std::io::Write::flush(&mut writer)
        .with_context(|| format!("writing {}", tar_path.display()))?;
    let rootfs = work.rootfs();
    fs::create_dir(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    run_checked(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar_path)
            .arg("-C")
            .arg(&rootfs),
    )?;

    for runtime in settings
        .tools
        .iter()
        .copied()
        .filter(|tool| tool.is_oci_runtime())
    {
        if find_in_path(runtime.name()).is_none() {
            continue; // reported as skipped by the namespace stage
        }
        let spec_dir = work
            .root
            .join("bundles")
            .join(format!("{}-spec", runtime.name()));
        fs::create_dir_all(&spec_dir)
            .with_context(|| format!("creating {}", spec_dir.display()))?;
        run_checked(
            Command::new(runtime.name())
                .arg("spec")
                .current_dir(&spec_dir),
        )?;
        let spec_file = spec_dir.join("config.json");
        let spec: Value = serde_json::from_slice(
            &fs::read(&spec_file).with_context(|| format!("reading {}", spec_file.display()))?,
        )
        .with_context(|| format!("parsing {}", spec_file.display()))?;
        fs::remove_dir_all(&spec_dir)
            .with_context(|| format!("removing {}", spec_dir.display()))?;
        for kind in BundleKind::ALL {
            let bundle = work.bundle(runtime, kind);
            fs::create_dir_all(&bundle)
                .with_context(|| format!("creating {}", bundle.display()))?;
            let config = bundle_config(spec.clone(), &rootfs, kind);
            let path = bundle.join("config.json");
            fs::write(&path, serde_json::to_vec_pretty(&config)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The runtime's default spec, made equivalent to `berth run --rm busybox
/// true`: no terminal, a writable root (berth's overlay is writable too), the
/// default namespaces (pid, network, ipc, uts, mount), and for the limits
/// kinds the OCI form of `-m 64m --cpus 1`.
fn bundle_config(mut spec: Value, rootfs: &Path, kind: BundleKind) -> Value {
    spec["root"] = json!({ "path": rootfs, "readonly": false });
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = match kind {
        BundleKind::Plain | BundleKind::Limits => json!(["/bin/true"]),
        BundleKind::LimitsProbe => json!(["/bin/sleep", "1"]),
        BundleKind::Sleep => json!(["/bin/sleep", "60"]),
        BundleKind::LongSleep => json!(["/bin/sleep", "3600"]),
    };
    if matches!(kind, BundleKind::Limits | BundleKind::LimitsProbe) {
        spec["linux"]["resources"]["memory"] = json!({ "limit": MEMORY_LIMIT_BYTES });
        spec["linux"]["resources"]["cpu"] =
            json!({ "quota": CPU_QUOTA_US, "period": CPU_PERIOD_US });
    }
    spec
}

/// From here on an interrupt only sets INTERRUPTED, so that the host stage
/// lives on to clean up. A handler, not SIG_IGN: children get the default
/// disposition back at exec, so Ctrl-C still stops them.
fn catch_interrupts() -> Result<()> {
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(note_interrupt),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for signal in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; no other code of this process handles these.
        unsafe { nix::sys::signal::sigaction(signal, &action) }
            .context("installing a signal handler")?;
    }
    Ok(())
}

fn run_namespace_stage(work: &WorkDir, berth: &Path, out_dir: &Path) -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    let exe = std::env::current_exe().context("finding the xtask executable")?;
    // The same arguments again (so the same settings), plus the paths.
    let mut child = Command::new("unshare")
        .args([
            "--kill-child",
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
        ])
        .args(["--propagation", "private"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .arg("--inner-work-dir")
        .arg(&work.root)
        .arg("--inner-berth")
        .arg(berth)
        .arg("--inner-out-dir")
        .arg(out_dir)
        .spawn()
        .context("running unshare")?;
    // Polled rather than a blocking wait, so that an interrupt also stops a
    // stage that ignores SIGINT (as background jobs do): killing `unshare`
    // makes --kill-child SIGKILL the stage, which takes the whole PID
    // namespace with it.
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for unshare")? {
            break status;
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    if !status.success() {
        bail!("the measuring stage (in private namespaces) failed ({status})");
    }
    Ok(())
}

/// What only the host namespaces show: cgroups named after our container
/// ids (crun puts them at each hierarchy's root, runc below the caller's
/// cgroup), berth containers of an interrupted run, then the work dir.
fn clean_up_on_host(
    work: &WorkDir,
    berth: &Path,
    settings: &Settings,
    before: &HostSnapshot,
) -> Result<()> {
    // After an interrupt the killed namespace's processes may take a moment
    // to leave their cgroups; a cgroup with tasks cannot be removed yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !remove_cgroups_named(&work.id_prefix()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Normally empty: only an interrupted run leaves containers in the store.
    let berths = std::iter::once((berth, work.berth_root())).chain(
        settings
            .baseline_berth
            .as_deref()
            .map(|baseline| (baseline, work.baseline_berth_root())),
    );
    for (binary, root) in berths {
        if !root.exists() {
            continue;
        }
        let ids = berth_container_ids(binary, &root);
        if !ids.is_empty() {
            let _ = quiet(
                Command::new(binary)
                    .arg("--root")
                    .arg(&root)
                    .args(["rm", "-f"])
                    .args(&ids),
            )
            .status();
        }
    }
    // crun makes its default state dir even for `crun spec` or `--version`;
    // the engines scenario makes the dirs it covers with a tmpfs if missing.
    for dir in before.new_watched_dirs() {
        let _ = fs::remove_dir(dir); // only if empty: then it holds nothing
    }
    let mounts = mounts_below(&work.root)?;
    if !mounts.is_empty() {
        bail!(
            "mounts remain under {} in the host namespace, not removing it: {}",
            work.root.display(),
            mounts.join(", ")
        );
    }
    // berth keeps each root's runtime state below /run/berth, linked
    // from <root>/runtime: empty once its containers are gone, it goes too.
    for entry in walkdir::WalkDir::new(&work.root)
        .max_depth(3)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path_is_symlink() && e.file_name() == "runtime")
    {
        if let Ok(target) = fs::read_link(entry.path()) {
            for shared in ["seccomp@cache", "empty@layer", "containers@transient"] {
                let _ = fs::remove_dir_all(target.join(shared));
            }
            let _ = fs::remove_dir(target);
        }
    }
    fs::remove_dir_all(&work.root).with_context(|| format!("removing {}", work.root.display()))
}

/// What existed before the run, so that only what it added is removed or
/// reported.
#[derive(Debug)]
struct HostSnapshot {
    cgroups: BTreeSet<PathBuf>,
    runtime_state_dirs: Vec<PathBuf>,
    /// (hierarchy mount, our cgroup in it) where ours is not the root.
    own_cgroups: Vec<(PathBuf, PathBuf)>,
}

impl HostSnapshot {
    /// The runtimes' default `--root`s: we pass our own, but crun creates
    /// its default one on every start anyway.
    const RUNTIME_STATE_DIRS: [&'static str; 2] = ["/run/crun", "/run/runc"];

    fn take(work: &WorkDir) -> Self {
        HostSnapshot {
            cgroups: berth_like_cgroups(work),
            own_cgroups: own_cgroups(),
            runtime_state_dirs: Self::watched_dirs().filter(|dir| dir.exists()).collect(),
        }
    }

    /// Other berths may run on this machine meanwhile (tests of another
    /// checkout). berth puts a container below the cgroup of the process
    /// running it, so a 64-hex cgroup outside ours, on a hierarchy where we
    /// are not at the root, is someone else's; so are its siblings by the
    /// same id on the other hierarchies. Tagged ones are always ours.
    fn foreign_ids(&self, new_cgroups: &BTreeSet<PathBuf>, prefix: &str) -> BTreeSet<String> {
        new_cgroups
            .iter()
            .filter(|dir| {
                self.own_cgroups
                    .iter()
                    .any(|(mount, own)| dir.starts_with(mount) && !dir.starts_with(own))
            })
            .filter_map(|dir| Some(dir.file_name()?.to_string_lossy().into_owned()))
            .filter(|name| !name.starts_with(prefix))
            .collect()
    }

    /// The dirs of [`Self::watched_dirs`] that appeared during the run.
    fn new_watched_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        Self::watched_dirs().filter(|dir| dir.exists() && !self.runtime_state_dirs.contains(dir))
    }

    /// New crun/runc default state dirs: crun fills its own on the host
    /// (the others are covered by the engines scenario's tmpfs mounts, so
    /// whatever is in them is someone else's).
    fn new_runtime_state_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.new_watched_dirs().filter(|dir| {
            Self::RUNTIME_STATE_DIRS
                .iter()
                .any(|known| dir == Path::new(known))
        })
    }

    /// The runtimes' default state dirs, and the machine-wide dirs the
    /// engines scenario covers with a tmpfs (made first if missing).
    fn watched_dirs() -> impl Iterator<Item = PathBuf> {
        let mut dirs: Vec<&str> = Self::RUNTIME_STATE_DIRS.to_vec();
        dirs.extend(MASKED_DIRS);
        dirs.sort_unstable();
        dirs.dedup();
        dirs.into_iter().map(PathBuf::from)
    }
}

/// This process's cgroup on each mounted hierarchy, as (mount point,
/// directory), leaving out those at a hierarchy's root.
fn own_cgroups() -> Vec<(PathBuf, PathBuf)> {
    let Ok(cgroups) = Hierarchies::from_host() else {
        return Vec::new();
    };
    cgroups
        .hierarchies()
        .iter()
        .filter_map(|hierarchy| {
            let own = hierarchy.own_cgroup()?;
            if own == Path::new("/") {
                return None;
            }
            Some((
                hierarchy.mount_point().to_owned(),
                hierarchy.dir_of(own).ok()?,
            ))
        })
        .collect()
}

/// Cgroup directories that could be berth's (named by a 64-hex container id)
/// or ours (named with the tag); the leftover check compares before/after.
fn berth_like_cgroups(work: &WorkDir) -> BTreeSet<PathBuf> {
    let prefix = work.id_prefix();
    cgroup_dirs()
        .into_iter()
        .filter(|dir| {
            let name = dir
                .file_name()
                .map(|name| name.to_string_lossy())
                .unwrap_or_default();
            name.starts_with(&prefix)
                || (name.len() == 64 && name.bytes().all(|byte| byte.is_ascii_hexdigit()))
        })
        .collect()
}

fn leftover_report(work: &WorkDir, before: &HostSnapshot) -> String {
    let mut found = Vec::new();
    let new_cgroups: BTreeSet<PathBuf> = berth_like_cgroups(work)
        .difference(&before.cgroups)
        .cloned()
        .collect();
    let foreign = before.foreign_ids(&new_cgroups, &work.id_prefix());
    for dir in &new_cgroups {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        if !foreign.contains(name.as_ref()) {
            found.push(format!("cgroup {}", dir.display()));
        }
    }
    for dir in before.new_runtime_state_dirs() {
        found.push(format!("runtime state dir {} (not empty)", dir.display()));
    }
    if work.root.exists() {
        found.push(format!("work dir {}", work.root.display()));
    }
    match mounts_below(&work.root) {
        Ok(mounts) => found.extend(mounts.into_iter().map(|mount| format!("mount {mount}"))),
        Err(err) => found.push(format!("mount table unreadable: {err:#}")),
    }
    let work_dir = work.root.to_string_lossy().into_owned();
    for (pid, cmdline) in processes() {
        if cmdline.contains(&work_dir) && pid != std::process::id() {
            found.push(format!("process {pid}: {cmdline}"));
        }
    }
    if found.is_empty() {
        format!(
            "- none: no cgroup named {}* or by a new 64-hex id, no mount or process under {}, no new /run/crun, /run/runc or dir the engines scenario masks, work dir removed\n",
            work.id_prefix(),
            work.root.display()
        )
    } else {
        let mut report = String::from("- left behind:\n");
        for item in found {
            let _ = writeln!(report, "  - {item}");
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berth_cgroups_outside_ours_are_someone_elses() {
        let snapshot = HostSnapshot {
            cgroups: BTreeSet::new(),
            runtime_state_dirs: Vec::new(),
            own_cgroups: vec![("/cg/memory".into(), "/cg/memory/api/ours".into())],
        };
        let new_cgroups: BTreeSet<PathBuf> = [
            "/cg/memory/api/other/berth/aaaa",
            "/cg/cpu/berth/aaaa",
            "/cg/memory/api/ours/berth/bbbb",
            "/cg/cpu/berth/bbbb",
            "/cg/memory/bench-0123abcd-crun-plain-cold1",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        let foreign = snapshot.foreign_ids(&new_cgroups, "bench-0123abcd-");
        assert_eq!(foreign, BTreeSet::from(["aaaa".to_owned()]));
    }
}

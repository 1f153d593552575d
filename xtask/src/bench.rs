//! `cargo xtask bench`: start-to-exit latency of one `true` container,
//! `berth run --rm busybox true` side by side with `crun run` and `runc run`
//! on an equivalent OCI bundle, with and without resource limits
//! (`-m 64m --cpus 1`).
//!
//! The method is the one of ../shared/tools/peer-bench.sh, in Rust:
//!
//! - **Two stages.** The host stage builds berth (release), writes the busybox
//!   rootfs and the OCI bundles (no mounts), then re-executes this program
//!   under `unshare --mount --net --pid --fork --mount-proc` (the namespace
//!   stage). Everything measured runs there: every process dies with the PID
//!   namespace, every mount (berth's overlays, our tmpfs) with the mount
//!   namespace. Back on the host, the host stage removes what only it can
//!   see (cgroups named after our container ids, the work dir) and checks
//!   that nothing was left behind.
//! - **crun on a hybrid host.** crun 1.8 refuses a hybrid cgroup layout
//!   ("cgroups in hybrid mode not supported") as soon as a cgroup2 mount sits
//!   next to the v1 hierarchies. Inside the private mount namespace only,
//!   /sys/fs/cgroup/unified is unmounted, so crun and runc see plain v1 and
//!   use cgroupfs. berth does not depend on it: it is also probed with the
//!   host's layout as-is before the switch.
//! - **Two regimes**, because on cgroup v1 the first cgroup attach after
//!   ~50 ms without one waits for an RCU grace period
//!   (cgroup_threadgroup_rwsem, ~10 ms): *cold/paced* interleaves the tools
//!   round-robin (order rotated every round), and before every run waits
//!   until no stray process is left and then idles `--gap-ms`; *warm* runs
//!   each case back to back, in short bursts rotated over the cases. Both
//!   tables also give the median of the per-round paired ratios against
//!   crun, which a noisy neighbour disturbs far less than the ratio of
//!   medians.
//!
//! Results: target/bench/summary.md (the tables, also printed) and
//! target/bench/samples.tsv (every measured run).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde_json::{json, Value};

use crate::cargo::{cargo_command, Workspace};

/// `--memory 64m` and `--cpus 1` as the OCI runtimes get them.
const MEMORY_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
const CPU_PERIOD_US: u64 = 100_000;
const CPU_QUOTA_US: u64 = 100_000;
/// The berth flags for the same limits.
const BERTH_LIMIT_FLAGS: [&str; 4] = ["-m", "64m", "--cpus", "1"];
/// Warm regime: measured back-to-back runs per burst (see measure_warm).
const WARM_BURST: usize = 5;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Measured runs per case and regime.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Smoke run: 5 measured runs and 1 warm-up per case (overrides --runs
    /// and --warmup).
    #[arg(long)]
    quick: bool,
    /// Unmeasured runs before measuring: rounds in the cold regime, runs per
    /// case in the warm one (first-run effects: page cache, dentries).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Cold regime: idle time before every run, once no stray process is left.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    gap_ms: u64,
    /// Scenarios: `plain` (`true`), `limits` (`-m 64m --cpus 1` and the same
    /// limits in the OCI config).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::Plain, Scenario::Limits])]
    scenarios: Vec<Scenario>,
    /// Regimes: `cold` (interleaved, paced), `warm` (back to back).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Regime::Cold, Regime::Warm])]
    regimes: Vec<Regime>,
    /// Tools to measure (those not installed are skipped with a note).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Tool::Berth, Tool::Crun, Tool::Runc])]
    tools: Vec<Tool>,
    /// Use this berth binary instead of building target/release/berth.
    #[arg(long, value_name = "PATH")]
    berth: Option<PathBuf>,
    /// Put berth's --root on a private tmpfs instead of $TMPDIR's
    /// filesystem. By default it is on disk, like /var/lib/berth, while
    /// crun/runc keep their state on tmpfs, like /run; this shows what the
    /// disk (berth's fsyncs of its state) costs.
    #[arg(long)]
    berth_root_on_tmpfs: bool,
    /// Internal: the work dir prepared by the host stage; set only when this
    /// program re-executes itself inside the private namespaces.
    #[arg(long, hide = true, value_name = "DIR")]
    inner_work_dir: Option<PathBuf>,
    /// Internal: the berth binary chosen by the host stage.
    #[arg(long, hide = true, value_name = "PATH")]
    inner_berth: Option<PathBuf>,
    /// Internal: where the results go (target/bench).
    #[arg(long, hide = true, value_name = "DIR")]
    inner_out_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Tool {
    Berth,
    Crun,
    Runc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    Plain,
    Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Regime {
    Cold,
    Warm,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Berth => "berth",
            Tool::Crun => "crun",
            Tool::Runc => "runc",
        }
    }

    fn is_oci_runtime(self) -> bool {
        matches!(self, Tool::Crun | Tool::Runc)
    }
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Plain => "plain",
            Scenario::Limits => "limits",
        }
    }
}

impl Regime {
    fn name(self) -> &'static str {
        match self {
            Regime::Cold => "cold",
            Regime::Warm => "warm",
        }
    }
}

/// One row of the tables: a tool running one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Case {
    scenario: Scenario,
    tool: Tool,
}

impl Case {
    fn label(self) -> String {
        match self.scenario {
            Scenario::Plain => self.tool.name().to_owned(),
            Scenario::Limits => format!("{} + limits", self.tool.name()),
        }
    }

    /// The crun case of the same scenario: what ratios are taken against.
    fn baseline(self) -> Case {
        Case {
            scenario: self.scenario,
            tool: Tool::Crun,
        }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark creates namespaces, mounts and cgroups: run it as root");
    }
    let settings = Settings::from_args(&args);
    match (&args.inner_work_dir, &args.inner_berth, &args.inner_out_dir) {
        (Some(work_dir), Some(berth), Some(out_dir)) => {
            namespace_stage(&settings, WorkDir::open(work_dir)?, berth, out_dir)
        }
        (None, None, None) => host_stage(&args, &settings),
        _ => bail!("--inner-work-dir, --inner-berth and --inner-out-dir go together"),
    }
}

/// What to measure and how, the same in both stages.
#[derive(Debug, Clone)]
struct Settings {
    runs: usize,
    warmup: usize,
    gap: Duration,
    scenarios: Vec<Scenario>,
    regimes: Vec<Regime>,
    tools: Vec<Tool>,
    berth_root_on_tmpfs: bool,
}

impl Settings {
    fn from_args(args: &BenchArgs) -> Self {
        let (runs, warmup) = if args.quick {
            (5, 1)
        } else {
            (args.runs.max(1), args.warmup)
        };
        Settings {
            runs,
            warmup,
            gap: Duration::from_millis(args.gap_ms),
            scenarios: sorted_unique(&args.scenarios),
            regimes: sorted_unique(&args.regimes),
            tools: sorted_unique(&args.tools),
            berth_root_on_tmpfs: args.berth_root_on_tmpfs,
        }
    }
}

fn sorted_unique<T: Ord + Copy>(values: &[T]) -> Vec<T> {
    let mut values = values.to_vec();
    values.sort();
    values.dedup();
    values
}

// ---------------------------------------------------------------------------
// The work dir: rootfs, bundles, berth's state root, runtime state.
// ---------------------------------------------------------------------------

/// `$TMPDIR/berth-bench-TAG`; TAG also prefixes every container id, so the
/// cgroups crun and runc name after the id can be found and removed.
#[derive(Debug, Clone)]
struct WorkDir {
    root: PathBuf,
    tag: String,
}

impl WorkDir {
    const PREFIX: &'static str = "berth-bench-";

    fn create() -> Result<Self> {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        let tag = format!(
            "{:08x}",
            ((seconds << 16) ^ u64::from(std::process::id())) as u32
        );
        let root = std::env::temp_dir().join(format!("{}{tag}", Self::PREFIX));
        fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(WorkDir { root, tag })
    }

    fn open(root: &Path) -> Result<Self> {
        let tag = root
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix(Self::PREFIX))
            .with_context(|| format!("{} is not a bench work dir", root.display()))?
            .to_owned();
        Ok(WorkDir {
            root: root.to_owned(),
            tag,
        })
    }

    fn busybox_tar(&self) -> PathBuf {
        self.root.join("busybox.tar")
    }

    fn rootfs(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    fn berth_root(&self) -> PathBuf {
        self.root.join("berth-root")
    }

    /// crun's and runc's `--root`; a private tmpfs in the namespace stage.
    fn runtime_state(&self) -> PathBuf {
        self.root.join("runtime-state")
    }

    fn bundle(&self, runtime: Tool, kind: BundleKind) -> PathBuf {
        self.root
            .join("bundles")
            .join(format!("{}-{}", runtime.name(), kind.name()))
    }

    fn id_prefix(&self) -> String {
        format!("bench-{}-", self.tag)
    }

    fn container_id(&self, case: Case, regime: &str, index: usize) -> String {
        format!(
            "{}{}-{}-{regime}{index}",
            self.id_prefix(),
            case.tool.name(),
            case.scenario.name()
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum BundleKind {
    /// `true`, default config.
    Plain,
    /// `true` with the memory and cpu limits.
    Limits,
    /// `sleep 1` with the limits: lets us read the limits the runtime applied
    /// from the container's cgroup while it sleeps.
    LimitsProbe,
}

impl BundleKind {
    fn name(self) -> &'static str {
        match self {
            BundleKind::Plain => "plain",
            BundleKind::Limits => "limits",
            BundleKind::LimitsProbe => "limits-probe",
        }
    }
}

// ---------------------------------------------------------------------------
// Host stage
// ---------------------------------------------------------------------------

/// Set by SIGINT/SIGTERM in the host stage: the namespace stage dies with
/// `unshare --kill-child`, and we still clean up before exiting.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_signal: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn host_stage(args: &BenchArgs, settings: &Settings) -> Result<()> {
    let workspace = Workspace::locate()?;
    let out_dir = workspace.target_dir.join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for tool in ["unshare", "tar"] {
        if find_in_path(tool).is_none() {
            bail!("`{tool}` is needed and not installed");
        }
    }
    let berth = match &args.berth {
        Some(path) => fs::canonicalize(path).with_context(|| format!("{}", path.display()))?,
        None => build_release_berth(&workspace)?,
    };

    catch_interrupts()?;
    let work = WorkDir::create()?;
    println!("xtask: bench work dir {}", work.root.display());
    let before = HostSnapshot::take(&work);
    let result = prepare_bundles(&work, settings)
        .and_then(|()| run_namespace_stage(&work, &berth, &out_dir));
    let cleanup = clean_up_on_host(&work, &berth, &before);
    let leftovers = leftover_report(&work, &before);
    let leftover_text = format!(
        "## Leftover check (host namespaces, after the private ones are gone)\n\n{leftovers}\n"
    );
    print!("{leftover_text}");
    let summary = out_dir.join("summary.md");
    if result.is_ok() {
        append(&summary, &leftover_text)?;
        println!(
            "xtask: results in {} and {}",
            summary.display(),
            out_dir.join("samples.tsv").display()
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
        for kind in [
            BundleKind::Plain,
            BundleKind::Limits,
            BundleKind::LimitsProbe,
        ] {
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
fn clean_up_on_host(work: &WorkDir, berth: &Path, before: &HostSnapshot) -> Result<()> {
    // After an interrupt the killed namespace's processes may take a moment
    // to leave their cgroups; a cgroup with tasks cannot be removed yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !remove_cgroups_named(&work.id_prefix()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Normally empty: only an interrupted run leaves containers in the store.
    let berth_root = work.berth_root();
    if berth_root.exists() {
        for id in berth_container_ids(berth, &berth_root) {
            let _ = quiet(
                Command::new(berth)
                    .arg("--root")
                    .arg(&berth_root)
                    .args(["rm", "-f", &id]),
            )
            .status();
        }
    }
    // crun makes its default state dir even for `crun spec` or `--version`.
    for dir in before.new_runtime_state_dirs() {
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
            runtime_state_dirs: Self::RUNTIME_STATE_DIRS
                .iter()
                .map(PathBuf::from)
                .filter(|dir| dir.exists())
                .collect(),
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

    fn new_runtime_state_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        Self::RUNTIME_STATE_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|dir| dir.exists() && !self.runtime_state_dirs.contains(dir))
    }
}

/// This process's cgroup on each mounted hierarchy (from /proc/self/cgroup),
/// as (mount point, directory), leaving out those at a hierarchy's root.
fn own_cgroups() -> Vec<(PathBuf, PathBuf)> {
    let (Ok(mounts), Ok(membership)) = (read_mounts(), fs::read_to_string("/proc/self/cgroup"))
    else {
        return Vec::new();
    };
    membership
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            if path.is_empty() {
                return None;
            }
            let mount = mounts.iter().find(|mount| {
                if controllers.is_empty() {
                    mount.fs_type == "cgroup2"
                } else {
                    mount.fs_type == "cgroup"
                        && controllers
                            .split(',')
                            .all(|controller| mount.super_options.iter().any(|o| o == controller))
                }
            })?;
            Some((mount.mount_point.clone(), mount.mount_point.join(path)))
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
            "- none: no cgroup named {}* or by a new 64-hex id, no mount or process under {}, no new /run/crun or /run/runc, work dir removed\n",
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

// ---------------------------------------------------------------------------
// Namespace stage: PID 1 of private mount, PID and network namespaces.
// ---------------------------------------------------------------------------

/// Everything a measured run needs to know about the tools.
#[derive(Debug)]
struct Runner {
    work: WorkDir,
    berth: PathBuf,
}

impl Runner {
    fn berth_command(&self) -> Command {
        let mut command = Command::new(&self.berth);
        command.arg("--root").arg(self.work.berth_root());
        command
    }

    /// `crun`/`runc` with their state on our private tmpfs.
    fn runtime_command(&self, runtime: Tool) -> Command {
        let mut command = Command::new(runtime.name());
        command
            .arg("--root")
            .arg(self.work.runtime_state().join(runtime.name()));
        if runtime == Tool::Crun {
            // Explicit: crun could pick systemd; this host has cgroupfs v1.
            command.arg("--cgroup-manager").arg("cgroupfs");
        }
        // runc uses cgroupfs unless given --systemd-cgroup.
        command
    }

    /// The measured command: create, start, wait for and delete one container.
    fn command(&self, case: Case, id: &str) -> Command {
        self.command_with_bundle(
            case,
            id,
            match case.scenario {
                Scenario::Plain => BundleKind::Plain,
                Scenario::Limits => BundleKind::Limits,
            },
        )
    }

    fn command_with_bundle(&self, case: Case, id: &str, kind: BundleKind) -> Command {
        match case.tool {
            Tool::Berth => {
                let mut command = self.berth_command();
                command.args(["run", "--rm"]);
                if case.scenario == Scenario::Limits {
                    command.args(BERTH_LIMIT_FLAGS);
                }
                command.arg("busybox");
                match kind {
                    BundleKind::LimitsProbe => command.args(["sleep", "1"]),
                    BundleKind::Plain | BundleKind::Limits => command.arg("true"),
                };
                command
            }
            Tool::Crun | Tool::Runc => {
                let mut command = self.runtime_command(case.tool);
                command
                    .arg("run")
                    .arg("--bundle")
                    .arg(self.work.bundle(case.tool, kind))
                    .arg(id);
                command
            }
        }
    }

    /// Untimed, after a run: is the container still there? If so, remove it.
    fn remove_leftover(&self, case: Case, id: &str) -> bool {
        match case.tool {
            Tool::Berth => {
                let ids = berth_container_ids(&self.berth, &self.work.berth_root());
                for id in &ids {
                    let _ = quiet(self.berth_command().args(["rm", "-f", id])).status();
                }
                !ids.is_empty()
            }
            Tool::Crun | Tool::Runc => {
                let exists = quiet(self.runtime_command(case.tool).args(["state", id]))
                    .status()
                    .is_ok_and(|status| status.success());
                if exists {
                    let _ =
                        quiet(self.runtime_command(case.tool).args(["delete", "-f", id])).status();
                }
                exists
            }
        }
    }

    /// Remove every container of the tool (warm regime, end of the stage).
    fn remove_all(&self, tool: Tool) -> usize {
        let ids: Vec<String> = match tool {
            Tool::Berth => berth_container_ids(&self.berth, &self.work.berth_root()),
            Tool::Crun | Tool::Runc => {
                stdout_lines(self.runtime_command(tool).args(["list", "-q"]))
            }
        };
        for id in &ids {
            let _ = match tool {
                Tool::Berth => quiet(self.berth_command().args(["rm", "-f", id])).status(),
                Tool::Crun | Tool::Runc => {
                    quiet(self.runtime_command(tool).args(["delete", "-f", id])).status()
                }
            };
        }
        ids.len()
    }
}

/// One measured run.
#[derive(Debug, Clone)]
struct Sample {
    regime: Regime,
    round: usize,
    case: Case,
    id: String,
    exit_code: i32,
    elapsed: Duration,
    leftover: bool,
}

impl Sample {
    fn ok(&self) -> bool {
        self.exit_code == 0
    }

    fn millis(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0
    }
}

fn namespace_stage(settings: &Settings, work: WorkDir, berth: &Path, out_dir: &Path) -> Result<()> {
    if std::process::id() != 1 {
        bail!(
            "the measuring stage must be PID 1 of its own PID namespace (run `cargo xtask bench`)"
        );
    }
    let started = Instant::now();
    let runner = Runner {
        work,
        berth: berth.to_owned(),
    };
    let mut report = Report::default();
    let result = measure(settings, &runner, &mut report);
    clean_up_in_namespace(settings, &runner, &mut report);
    let samples = result?;

    // Other load on the machine shows in the spread; say how much there was.
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split(' ').take(3).collect();
    report.section(format!(
        "- measured in {:.0} s (probes, both regimes, cleanup); loadavg at end {}\n",
        started.elapsed().as_secs_f64(),
        loadavg.join(" ")
    ));
    let text = report.render(settings, &samples);
    print!("{text}");
    fs::write(out_dir.join("summary.md"), &text).context("writing summary.md")?;
    write_samples(&out_dir.join("samples.tsv"), &samples)
}

/// Probes, then the regimes. The report collects the prose as we go.
fn measure(settings: &Settings, runner: &Runner, report: &mut Report) -> Result<Vec<Sample>> {
    let state = runner.work.runtime_state();
    fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    // Runtime state on a tmpfs of this mount namespace: gone with it.
    mount_tmpfs(&state, "berth-bench-state", "mode=0700,size=64m")?;

    report.host_facts(settings, &runner.berth);
    let host_layout = CgroupLayout::read()?;
    report.section(format!("- cgroups as mounted on the host: {host_layout}\n"));

    let berth_root = runner.work.berth_root();
    if settings.berth_root_on_tmpfs {
        fs::create_dir_all(&berth_root)
            .with_context(|| format!("creating {}", berth_root.display()))?;
        mount_tmpfs(&berth_root, "berth-bench-root", "mode=0700,size=512m")?;
    }
    report.section(format!(
        "- berth --root {} is on {}; crun/runc --root on tmpfs (like /run)\n",
        berth_root.display(),
        filesystem_of(&berth_root)?
    ));

    // berth builds the default image on first use; that is not what we time.
    let first = Instant::now();
    let image_probe = probe(
        runner
            .berth_command()
            .args(["run", "--rm", "busybox", "true"]),
    );
    report.section(format!(
        "- berth's first run (builds the busybox image in a fresh --root): {:.0} ms, {}\n",
        first.elapsed().as_secs_f64() * 1000.0,
        image_probe.describe()
    ));
    if let ProbeResult::Failed(line) = &image_probe {
        bail!("berth cannot run busybox here: {line}");
    }

    let mut probes = ProbeTable::default();
    let tools_present: Vec<Tool> = settings
        .tools
        .iter()
        .copied()
        .filter(|tool| *tool == Tool::Berth || find_in_path(tool.name()).is_some())
        .collect();
    for tool in settings
        .tools
        .iter()
        .filter(|tool| !tools_present.contains(tool))
    {
        probes.add(
            format!("{} (host layout)", tool.name()),
            "not installed, skipped".to_owned(),
        );
    }

    // As the host is: berth must cope; crun 1.8 is expected to refuse.
    for &scenario in &settings.scenarios {
        for &tool in &tools_present {
            let case = Case { scenario, tool };
            let id = runner.work.container_id(case, "host-view", 0);
            let result = probe(&mut runner.command(case, &id));
            runner.remove_leftover(case, &id);
            probes.add(
                format!("{} `true`, host cgroup layout", case.label()),
                result.describe(),
            );
        }
    }

    let bench_layout = match host_layout.hybrid_v2_mount() {
        Some(unified) => {
            hide_unified_hierarchy(unified)?;
            let layout = CgroupLayout::read()?;
            report.section(format!(
                "- measurements run with {} unmounted in a private mount namespace (host untouched; crun refuses hybrid layouts): runtimes see {layout}\n",
                unified.display()
            ));
            layout
        }
        None => host_layout,
    };

    // Which cases can run in the bench view, and do the limits really apply?
    let mut cases = Vec::new();
    let mut skipped = BTreeMap::new();
    for &scenario in &settings.scenarios {
        for &tool in &settings.tools {
            let case = Case { scenario, tool };
            if !tools_present.contains(&tool) {
                skipped.insert(case, format!("{}: not installed, skipped", tool.name()));
                continue;
            }
            let id = runner.work.container_id(case, "probe", 0);
            let result = probe(&mut runner.command(case, &id));
            runner.remove_leftover(case, &id);
            let mut verdict = result.describe();
            match (&result, scenario) {
                (ProbeResult::Failed(line), Scenario::Limits)
                    if tool == Tool::Berth && is_unknown_flag_error(line) =>
                {
                    skipped.insert(case, "berth: limits not supported yet, skipped".to_owned());
                    verdict = format!("flags rejected ({line})");
                }
                (ProbeResult::Failed(line), _) => {
                    skipped.insert(
                        case,
                        format!("{}: fails here, skipped ({line})", tool.name()),
                    );
                }
                (ProbeResult::Ok, Scenario::Limits) => {
                    let id = runner.work.container_id(case, "limits-probe", 0);
                    let seen = observe_limits(
                        &mut runner.command_with_bundle(case, &id, BundleKind::LimitsProbe),
                        &bench_layout,
                    );
                    runner.remove_leftover(case, &id);
                    verdict = match seen {
                        Ok(seen) if seen.matches_request() => format!("ok, applied: {seen}"),
                        Ok(seen) => {
                            skipped.insert(
                                case,
                                format!("{}: limits not applied, skipped ({seen})", tool.name()),
                            );
                            format!("limits NOT applied: {seen}")
                        }
                        Err(err) => {
                            skipped.insert(
                                case,
                                format!("{}: limits unverifiable, skipped ({err:#})", tool.name()),
                            );
                            format!("cannot verify limits: {err:#}")
                        }
                    };
                }
                (ProbeResult::Ok, Scenario::Plain) => {}
            }
            if !skipped.contains_key(&case) {
                cases.push(case);
            }
            probes.add(format!("{} `true`, bench layout", case.label()), verdict);
        }
    }
    report.probes = probes;
    for message in skipped.values() {
        eprintln!("xtask: {message}");
    }
    report.skipped = skipped;
    report.cases.clone_from(&cases);
    report.commands = cases
        .iter()
        .map(|case| (*case, display_command(&runner.command(*case, "ID"))))
        .collect();
    if cases.is_empty() {
        bail!("no case can run here");
    }

    let mut samples = Vec::new();
    for &regime in &settings.regimes {
        let total = cases.len() * (settings.warmup + settings.runs);
        eprintln!("xtask: {} regime: {total} runs", regime.name());
        let measured = match regime {
            Regime::Cold => measure_cold(settings, runner, &cases),
            Regime::Warm => measure_warm(settings, runner, &cases),
        };
        samples.extend(measured);
    }
    Ok(samples)
}

/// Round-robin over the cases, order rotated every round, each run preceded
/// by an idle system: no stray process, then `gap` of nothing.
fn measure_cold(settings: &Settings, runner: &Runner, cases: &[Case]) -> Vec<Sample> {
    let mut samples = Vec::new();
    for round in 0..settings.warmup + settings.runs {
        for offset in 0..cases.len() {
            let case = cases[(round + offset) % cases.len()];
            let id = runner.work.container_id(case, "cold", round);
            settle();
            std::thread::sleep(settings.gap);
            let (status, elapsed) = time_run(&mut runner.command(case, &id));
            let leftover = runner.remove_leftover(case, &id);
            if round >= settings.warmup {
                samples.push(Sample {
                    regime: Regime::Cold,
                    round: round - settings.warmup,
                    case,
                    id,
                    exit_code: exit_code(status),
                    elapsed,
                    leftover,
                });
            }
        }
    }
    samples
}

/// Back to back: each run starts within microseconds of the previous one's
/// exit. Done in short bursts per case, the cases rotated round-robin like
/// the cold rounds, so that load from elsewhere on the machine (which comes
/// and goes over seconds) falls on every case alike instead of on whichever
/// case ran during a busy stretch. Each burst starts with unmeasured
/// lead-in runs, which pay the cold cost. Leftovers are swept per burst.
fn measure_warm(settings: &Settings, runner: &Runner, cases: &[Case]) -> Vec<Sample> {
    let lead_in = settings.warmup.max(1);
    let bursts = settings.runs.div_ceil(WARM_BURST);
    let mut samples = Vec::new();
    for burst in 0..bursts {
        let measured = WARM_BURST.min(settings.runs - burst * WARM_BURST);
        for offset in 0..cases.len() {
            let case = cases[(burst + offset) % cases.len()];
            settle();
            let mut batch = Vec::new();
            for index in 0..lead_in + measured {
                let id =
                    runner
                        .work
                        .container_id(case, "warm", burst * (lead_in + WARM_BURST) + index);
                let (status, elapsed) = time_run(&mut runner.command(case, &id));
                if index >= lead_in {
                    batch.push(Sample {
                        regime: Regime::Warm,
                        // Run i of burst b pairs with crun's run i of burst b.
                        round: burst * WARM_BURST + index - lead_in,
                        case,
                        id,
                        exit_code: exit_code(status),
                        elapsed,
                        leftover: false,
                    });
                }
            }
            if runner.remove_all(case.tool) > 0 {
                // Which run left it is unknown here; mark the burst.
                for sample in &mut batch {
                    sample.leftover = true;
                }
            }
            samples.extend(batch);
        }
    }
    samples
}

/// Start-to-exit of the tool process. stdio on /dev/null, as a script
/// would run it; spawning costs the same for every tool.
fn time_run(command: &mut Command) -> (Option<ExitStatus>, Duration) {
    let started = Instant::now();
    let status = quiet(command).status().ok();
    (status, started.elapsed())
}

fn exit_code(status: Option<ExitStatus>) -> i32 {
    match status {
        Some(status) => status
            .code()
            .or_else(|| status.signal().map(|signal| 128 + signal))
            .unwrap_or(-1),
        None => -1, // could not even be started
    }
}

/// Everything still there at the end of the stage, inside the namespaces.
/// Whatever we miss dies with them; the host stage removes cgroups.
fn clean_up_in_namespace(settings: &Settings, runner: &Runner, report: &mut Report) {
    let mut removed = Vec::new();
    for &tool in &settings.tools {
        if tool == Tool::Berth || find_in_path(tool.name()).is_some() {
            let count = runner.remove_all(tool);
            if count > 0 {
                removed.push(format!("{count} {} container(s)", tool.name()));
            }
        }
    }
    // We are PID 1: anything still running is ours.
    let strays: Vec<u32> = processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| *pid != 1)
        .collect();
    for &pid in &strays {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGKILL,
        );
    }
    if !strays.is_empty() {
        removed.push(format!("{} stray process(es) killed", strays.len()));
    }
    settle();
    let cgroups = remove_cgroups_named(&runner.work.id_prefix());
    if !cgroups.is_empty() {
        removed.push(format!(
            "{} cgroup(s) that would not go: {}",
            cgroups.len(),
            cgroups.join(", ")
        ));
    }
    if !removed.is_empty() {
        report.section(format!(
            "- cleanup at the end had to remove: {}\n",
            removed.join("; ")
        ));
    }
}

/// Wait (at most 10 s) until this PID namespace holds nothing but us, reaping
/// zombies reparented to us: a run must not pay for its predecessor's exit.
fn settle() {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        reap_zombies();
        let busy = processes().iter().filter(|(pid, _)| *pid != 1).count();
        if busy == 0 {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("xtask: settle: {busy} stray processes still running after 10 s");
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn reap_zombies() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    // Only called between runs, when no Command of ours is outstanding.
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum ProbeResult {
    Ok,
    Failed(String),
}

impl ProbeResult {
    fn describe(&self) -> String {
        match self {
            ProbeResult::Ok => "ok".to_owned(),
            ProbeResult::Failed(line) => format!("fails: {line}"),
        }
    }
}

/// One untimed run, keeping the first line of the error.
fn probe(command: &mut Command) -> ProbeResult {
    match command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(output) if output.status.success() => ProbeResult::Ok,
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let line = stderr
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("");
            ProbeResult::Failed(format!("{} ({})", line.trim(), output.status))
        }
        Err(err) => ProbeResult::Failed(format!("cannot start: {err}")),
    }
}

/// clap's wording for an unknown flag: berth does not have -m/--cpus yet.
fn is_unknown_flag_error(line: &str) -> bool {
    line.contains("unexpected argument")
        || line.contains("unrecognized")
        || line.contains("unknown option")
}

/// The limits the runtime put on a container, read from its cgroup while
/// it runs `sleep 1`.
#[derive(Debug)]
struct ObservedLimits {
    memory_bytes: String,
    cpu_quota: String,
    cgroup: String,
}

impl ObservedLimits {
    fn matches_request(&self) -> bool {
        let quota_ok = self.cpu_quota == CPU_QUOTA_US.to_string()
            || self.cpu_quota == format!("{CPU_QUOTA_US} {CPU_PERIOD_US}");
        self.memory_bytes == MEMORY_LIMIT_BYTES.to_string() && quota_ok
    }
}

impl std::fmt::Display for ObservedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory {} B, cpu quota {} (cgroup {})",
            self.memory_bytes, self.cpu_quota, self.cgroup
        )
    }
}

fn observe_limits(command: &mut Command, layout: &CgroupLayout) -> Result<ObservedLimits> {
    let mut child = quiet(command)
        .spawn()
        .context("starting the limits probe")?;
    let observed = wait_for_sleeper().and_then(|pid| {
        let membership = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
        layout.limits_of(&membership)
    });
    let status = child.wait().context("waiting for the limits probe")?;
    let observed = observed?;
    if !status.success() {
        bail!("the limits probe failed ({status})");
    }
    Ok(observed)
}

/// The container's `sleep 1`: our PID namespace holds only the probe run,
/// so the one `sleep` in it is the container's (argv[0] is `sleep` for
/// berth, `/bin/sleep` for the bundles).
fn wait_for_sleeper() -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sleeper = processes().into_iter().find(|(_, cmdline)| {
            let mut words = cmdline.split(' ');
            let program = words.next().unwrap_or_default();
            Path::new(program)
                .file_name()
                .is_some_and(|name| name == "sleep")
                && words.eq(["1"])
        });
        if let Some((pid, _)) = sleeper {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            bail!("the container's `sleep 1` never showed up");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// Cgroups: layout, limit files, our leftovers.
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Mount {
    mount_point: PathBuf,
    fs_type: String,
    super_options: Vec<String>,
}

fn read_mounts() -> Result<Vec<Mount>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(mountinfo.lines().filter_map(parse_mountinfo_line).collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields.iter().position(|field| *field == "-")?;
    Some(Mount {
        mount_point: PathBuf::from(unescape_mount_path(fields.get(4)?)),
        fs_type: (*fields.get(separator + 1)?).to_owned(),
        super_options: fields
            .get(separator + 3)?
            .split(',')
            .map(str::to_owned)
            .collect(),
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(raw: &str) -> String {
    raw.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// "ext4 (/dev/vda on /, rw,relatime,discard)": the mount holding `path`
/// (or the nearest existing ancestor), the last one mounted there winning.
fn filesystem_of(path: &Path) -> Result<String> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields.iter().position(|field| *field == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fs_type), Some(source), Some(options)) = (
            fields.get(4),
            fields.get(separator + 1),
            fields.get(separator + 2),
            fields.get(5),
        ) else {
            continue;
        };
        let mount_point = unescape_mount_path(mount_point);
        let depth = Path::new(&mount_point).components().count();
        if path.starts_with(&mount_point)
            && best
                .as_ref()
                .map_or(true, |(best_depth, _)| depth >= *best_depth)
        {
            best = Some((
                depth,
                format!("{fs_type} ({source} on {mount_point}, {options})"),
            ));
        }
    }
    best.map(|(_, description)| description)
        .with_context(|| format!("no mount holds {}", path.display()))
}

fn mounts_below(dir: &Path) -> Result<Vec<String>> {
    Ok(read_mounts()?
        .into_iter()
        .filter(|mount| mount.mount_point.starts_with(dir))
        .map(|mount| mount.mount_point.display().to_string())
        .collect())
}

/// The cgroup hierarchies as mounted: v1 ones by controller, the cgroup2 one.
#[derive(Debug)]
struct CgroupLayout {
    /// (mount point, controllers or name=...) per v1 hierarchy.
    v1: Vec<(PathBuf, Vec<String>)>,
    v2: Option<PathBuf>,
}

impl CgroupLayout {
    fn read() -> Result<Self> {
        Ok(Self::from_mounts(&read_mounts()?))
    }

    fn from_mounts(mounts: &[Mount]) -> Self {
        let v1 = mounts
            .iter()
            .filter(|mount| mount.fs_type == "cgroup")
            .map(|mount| {
                let controllers = mount
                    .super_options
                    .iter()
                    .filter(|option| {
                        !matches!(option.as_str(), "rw" | "ro") && !option.contains("relatime")
                    })
                    .cloned()
                    .collect();
                (mount.mount_point.clone(), controllers)
            })
            .collect();
        let v2 = mounts
            .iter()
            .find(|mount| mount.fs_type == "cgroup2")
            .map(|mount| mount.mount_point.clone());
        CgroupLayout { v1, v2 }
    }

    /// The cgroup2 mount of a hybrid layout (v1 hierarchies next to it).
    fn hybrid_v2_mount(&self) -> Option<&Path> {
        self.v2.as_deref().filter(|_| !self.v1.is_empty())
    }

    fn v1_mount_of(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(_, controllers)| controllers.iter().any(|c| c == controller))
            .map(|(mount_point, _)| mount_point.as_path())
    }

    /// Reads the memory limit and cpu quota of the cgroups a process is in,
    /// given its /proc/PID/cgroup, from whichever hierarchy has each
    /// controller (v1 first, as a hybrid host binds them there).
    fn limits_of(&self, membership: &str) -> Result<ObservedLimits> {
        let path_in = |hierarchy: &str| {
            membership.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                let found = if hierarchy.is_empty() {
                    controllers.is_empty()
                } else {
                    controllers.split(',').any(|c| c == hierarchy)
                };
                found.then(|| path.trim_start_matches('/').to_owned())
            })
        };
        let read = |path: PathBuf| -> Result<String> {
            Ok(fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned())
        };
        if let (Some(memory_mount), Some(cpu_mount)) =
            (self.v1_mount_of("memory"), self.v1_mount_of("cpu"))
        {
            let memory_path = path_in("memory").context("no memory line in /proc/PID/cgroup")?;
            let cpu_path = path_in("cpu").context("no cpu line in /proc/PID/cgroup")?;
            return Ok(ObservedLimits {
                memory_bytes: read(
                    memory_mount
                        .join(&memory_path)
                        .join("memory.limit_in_bytes"),
                )?,
                cpu_quota: read(cpu_mount.join(&cpu_path).join("cpu.cfs_quota_us"))?,
                cgroup: format!("memory:/{memory_path}"),
            });
        }
        let v2 = self
            .v2
            .as_deref()
            .context("no memory/cpu controller mounted")?;
        let path = path_in("").context("no cgroup2 line in /proc/PID/cgroup")?;
        Ok(ObservedLimits {
            memory_bytes: read(v2.join(&path).join("memory.max"))?,
            cpu_quota: read(v2.join(&path).join("cpu.max"))?,
            cgroup: format!("/{path}"),
        })
    }
}

impl std::fmt::Display for CgroupLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v1: Vec<String> = self
            .v1
            .iter()
            .map(|(_, controllers)| controllers.join(","))
            .collect();
        let v2 = self.v2.as_ref().map(|mount| {
            let controllers =
                fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
            format!(
                "cgroup2 at {} with controllers [{}]",
                mount.display(),
                controllers.trim()
            )
        });
        match (v1.is_empty(), v2) {
            (true, Some(v2)) => write!(f, "unified (v2 only): {v2}"),
            (false, Some(v2)) => write!(f, "hybrid: v1 [{}] + {v2}", v1.join(" ")),
            (false, None) => write!(f, "legacy (v1 only): [{}]", v1.join(" ")),
            (true, None) => write!(f, "no cgroup filesystem mounted"),
        }
    }
}

/// Unmount the cgroup2 hierarchy in our mount namespace and put an empty
/// tmpfs in its place. Only the unmount is needed for crun; the tmpfs stops
/// crun's v1 code from making `unified/ID` directories (with a cgroup.procs
/// file) on the host's /sys/fs/cgroup tmpfs below the hidden mount point,
/// where nothing on the host could see or remove them.
fn hide_unified_hierarchy(mount_point: &Path) -> Result<()> {
    nix::mount::umount2(mount_point, nix::mount::MntFlags::empty()).with_context(|| {
        format!(
            "unmounting {} in the private mount namespace",
            mount_point.display()
        )
    })?;
    mount_tmpfs(mount_point, "berth-bench-no-cgroup2", "mode=0755,size=1m")
}

fn mount_tmpfs(target: &Path, source: &str, options: &str) -> Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(options),
    )
    .with_context(|| format!("mounting a tmpfs on {}", target.display()))
}

/// Every cgroup directory of every mounted hierarchy (and nothing on the
/// tmpfs around them), bounded in depth: containers sit a few levels down
/// at most.
fn cgroup_dirs() -> Vec<PathBuf> {
    const MAX_DEPTH: usize = 6;
    let Ok(layout) = CgroupLayout::read() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut pending: Vec<(PathBuf, usize)> = layout
        .v1
        .into_iter()
        .map(|(mount_point, _)| mount_point)
        .chain(layout.v2)
        .map(|mount_point| (mount_point, 0))
        .collect();
    while let Some((dir, depth)) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) && depth < MAX_DEPTH {
                pending.push((entry.path(), depth + 1));
                found.push(entry.path());
            }
        }
    }
    found
}

/// rmdir every cgroup whose name starts with `prefix`, deepest first;
/// returns those that would not go.
fn remove_cgroups_named(prefix: &str) -> Vec<String> {
    let mut dirs: Vec<PathBuf> = cgroup_dirs()
        .into_iter()
        .filter(|dir| {
            dir.ancestors().any(|ancestor| {
                ancestor
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(prefix))
            })
        })
        .collect();
    dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    dirs.into_iter()
        .filter(|dir| fs::remove_dir(dir).is_err() && dir.exists())
        .map(|dir| dir.display().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Small process helpers
// ---------------------------------------------------------------------------

fn quiet(command: &mut Command) -> &mut Command {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

fn run_checked(command: &mut Command) -> Result<()> {
    let description = display_command(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{description}`"))?;
    if !output.status.success() {
        bail!(
            "`{description}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn stdout_lines(command: &mut Command) -> Vec<String> {
    command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn berth_container_ids(berth: &Path, root: &Path) -> Vec<String> {
    stdout_lines(
        Command::new(berth)
            .arg("--root")
            .arg(root)
            .args(["ps", "-a", "-q"]),
    )
}

fn display_command(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// (pid, command line) of every live process visible in /proc; zombies and
/// kernel threads (empty command line) are not counted.
fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            if cmdline.is_empty() {
                return None;
            }
            let words: Vec<String> = cmdline
                .split(|byte| *byte == 0)
                .filter(|word| !word.is_empty())
                .map(|word| String::from_utf8_lossy(word).into_owned())
                .collect();
            Some((pid, words.join(" ")))
        })
        .collect()
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------
// Statistics and the report
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
struct Stats {
    min: f64,
    median: f64,
    p95: f64,
    max: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Option<Stats> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Stats {
            min: *sorted.first()?,
            median: median_of_sorted(&sorted)?,
            p95: nearest_rank(&sorted, 0.95)?,
            max: *sorted.last()?,
        })
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    median_of_sorted(&sorted)
}

fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The smallest value with at least `fraction` of the values at or below it.
fn nearest_rank(sorted: &[f64], fraction: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (fraction * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// Median over rounds of `case / crun` from the same round: both ran within
/// a second or two of each other, so drift in the machine's load cancels out.
fn paired_ratio(samples: &[&Sample], case: Case) -> Option<f64> {
    let baseline: BTreeMap<usize, f64> = samples
        .iter()
        .filter(|sample| sample.case == case.baseline() && sample.ok())
        .map(|sample| (sample.round, sample.millis()))
        .collect();
    let ratios: Vec<f64> = samples
        .iter()
        .filter(|sample| sample.case == case && sample.ok())
        .filter_map(|sample| Some(sample.millis() / baseline.get(&sample.round)?))
        .collect();
    median(&ratios)
}

#[derive(Debug, Default)]
struct ProbeTable {
    rows: Vec<(String, String)>,
}

impl ProbeTable {
    fn add(&mut self, what: String, result: String) {
        self.rows.push((what, result));
    }
}

/// The summary, assembled while the stage runs.
#[derive(Debug, Default)]
struct Report {
    preamble: String,
    probes: ProbeTable,
    cases: Vec<Case>,
    skipped: BTreeMap<Case, String>,
    commands: Vec<(Case, String)>,
}

impl Report {
    fn section(&mut self, text: String) {
        self.preamble.push_str(&text);
    }

    fn host_facts(&mut self, settings: &Settings, berth: &Path) {
        let read = |path: &str| {
            fs::read_to_string(path)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or_else(
                || "?".to_owned(),
                |kib| format!("{:.1}", kib / 1024.0 / 1024.0),
            );
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let version = |program: &str| {
            stdout_lines(Command::new(program).arg("--version"))
                .into_iter()
                .next()
                .unwrap_or_else(|| format!("{program}: absent"))
        };
        let loadavg = read("/proc/loadavg");
        let loadavg: Vec<&str> = loadavg.split(' ').take(3).collect();
        let _ = write!(
            self.preamble,
            "# berth bench: start-to-exit of a `true` container\n\n\
             - host: {} {} {}; {cpus} CPUs; {memory_gib} GiB; loadavg at start {}\n\
             - {}; {}; berth {}\n\
             - settings: {} measured runs per case and regime, {} warm-up, cold gap {} ms; scenarios {}; regimes {}\n",
            read("/proc/sys/kernel/ostype"),
            read("/proc/sys/kernel/osrelease"),
            std::env::consts::ARCH,
            loadavg.join(" "),
            version("crun"),
            version("runc"),
            berth.display(),
            settings.runs,
            settings.warmup,
            settings.gap.as_millis(),
            settings.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>().join(","),
            settings.regimes.iter().map(|r| r.name()).collect::<Vec<_>>().join(","),
        );
    }

    fn render(&self, settings: &Settings, samples: &[Sample]) -> String {
        let mut out = self.preamble.clone();
        out.push_str("\n## Probes (one untimed run each)\n\n| probe | result |\n|---|---|\n");
        for (what, result) in &self.probes.rows {
            let _ = writeln!(out, "| {what} | {} |", result.replace('|', "\\|"));
        }
        out.push('\n');
        for &regime in &settings.regimes {
            let of_regime: Vec<&Sample> = samples
                .iter()
                .filter(|sample| sample.regime == regime)
                .collect();
            let _ = match regime {
                Regime::Cold => writeln!(
                    out,
                    "## Cold/paced (ms): cases interleaved round-robin, order rotated each round; before every run no stray process and {} ms idle\n",
                    settings.gap.as_millis()
                ),
                Regime::Warm => writeln!(
                    out,
                    "## Warm/back-to-back (ms): bursts of {WARM_BURST} back-to-back runs per case, each after {} unmeasured lead-in run(s), bursts rotated round-robin over the cases; paired ratio: run i of a burst vs crun's run i in the same round\n",
                    settings.warmup.max(1)
                ),
            };
            self.render_table(&mut out, &of_regime);
        }
        let _ = write!(
            out,
            "\"+ limits\": berth `{}`; crun/runc with linux.resources memory.limit {MEMORY_LIMIT_BYTES}, cpu quota {CPU_QUOTA_US} period {CPU_PERIOD_US}. Ratios are against crun in the same scenario. Raw samples: samples.tsv.\n\nCommands (ID unique per run; crun/runc `run` creates, starts, waits for and deletes; cold: `state ID` checked afterwards, untimed):\n\n",
            BERTH_LIMIT_FLAGS.join(" ")
        );
        for (case, command) in &self.commands {
            let _ = writeln!(out, "    {}: {command}", case.label());
        }
        out.push('\n');
        out
    }

    fn render_table(&self, out: &mut String, samples: &[&Sample]) {
        out.push_str("| case | ok/runs | min | median | p95 | max | median / crun median | median of paired ratios vs crun |\n|---|---|---|---|---|---|---|---|\n");
        let stats_of = |case: Case| {
            let values: Vec<f64> = samples
                .iter()
                .filter(|sample| sample.case == case && sample.ok())
                .map(|sample| sample.millis())
                .collect();
            Stats::of(&values)
        };
        let mut rows: Vec<Case> = self.cases.clone();
        rows.extend(self.skipped.keys().copied());
        rows.sort();
        for case in rows {
            if let Some(reason) = self.skipped.get(&case) {
                let _ = writeln!(out, "| {} | {reason} | | | | | | |", case.label());
                continue;
            }
            let of_case: Vec<&&Sample> = samples
                .iter()
                .filter(|sample| sample.case == case)
                .collect();
            let ok = of_case.iter().filter(|sample| sample.ok()).count();
            let leftovers = of_case.iter().filter(|sample| sample.leftover).count();
            let ok_text = if leftovers > 0 {
                format!("{ok}/{} ({leftovers} left state behind!)", of_case.len())
            } else {
                format!("{ok}/{}", of_case.len())
            };
            let Some(stats) = stats_of(case) else {
                let _ = writeln!(out, "| {} | {ok_text} | | | | | | |", case.label());
                continue;
            };
            let ratio = stats_of(case.baseline()).map_or("-".to_owned(), |crun| {
                format!("{:.2}x", stats.median / crun.median)
            });
            let paired =
                paired_ratio(samples, case).map_or("-".to_owned(), |ratio| format!("{ratio:.2}x"));
            let _ = writeln!(
                out,
                "| {} | {ok_text} | {:.2} | {:.2} | {:.2} | {:.2} | {ratio} | {paired} |",
                case.label(),
                stats.min,
                stats.median,
                stats.p95,
                stats.max
            );
        }
        // What the limits cost each tool: the cgroup setup berth must not let dominate.
        let mut costs = Vec::new();
        for tool in [Tool::Berth, Tool::Crun, Tool::Runc] {
            let plain = stats_of(Case {
                scenario: Scenario::Plain,
                tool,
            });
            let limits = stats_of(Case {
                scenario: Scenario::Limits,
                tool,
            });
            if let (Some(plain), Some(limits)) = (plain, limits) {
                costs.push(format!(
                    "{} {:+.2} ms ({:.2}x)",
                    tool.name(),
                    limits.median - plain.median,
                    limits.median / plain.median
                ));
            }
        }
        if !costs.is_empty() {
            let _ = writeln!(
                out,
                "\nCost of the limits (median with limits minus median without): {}",
                costs.join(", ")
            );
        }
        out.push('\n');
    }
}

fn write_samples(path: &Path, samples: &[Sample]) -> Result<()> {
    let mut text = String::from("regime\tround\ttool\tscenario\tid\texit_code\tmicros\tleftover\n");
    for sample in samples {
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            sample.regime.name(),
            sample.round,
            sample.case.tool.name(),
            sample.case.scenario.name(),
            sample.id,
            sample.exit_code,
            sample.elapsed.as_micros(),
            u8::from(sample.leftover)
        );
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_nearest_rank_p95() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let stats = Stats::of(&values).unwrap();
        assert_eq!(stats.min, 1.0);
        assert_eq!(stats.median, 10.5);
        assert_eq!(stats.p95, 19.0);
        assert_eq!(stats.max, 20.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(nearest_rank(&[5.0], 0.95), Some(5.0));
    }

    #[test]
    fn paired_ratio_uses_rounds_where_both_succeeded() {
        let sample = |round, tool, millis: u64, exit_code| Sample {
            regime: Regime::Cold,
            round,
            case: Case {
                scenario: Scenario::Plain,
                tool,
            },
            id: String::new(),
            exit_code,
            elapsed: Duration::from_millis(millis),
            leftover: false,
        };
        let samples = [
            sample(0, Tool::Crun, 10, 0),
            sample(0, Tool::Berth, 20, 0),
            sample(1, Tool::Crun, 20, 0),
            sample(1, Tool::Berth, 20, 0),
            sample(2, Tool::Crun, 10, 1),
            sample(2, Tool::Berth, 90, 0),
        ];
        let refs: Vec<&Sample> = samples.iter().collect();
        let berth = Case {
            scenario: Scenario::Plain,
            tool: Tool::Berth,
        };
        assert_eq!(paired_ratio(&refs, berth), Some(1.5));
    }

    #[test]
    fn hybrid_layout_and_limits_from_fake_tree() {
        let line =
            "36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory";
        let mount = parse_mountinfo_line(line).unwrap();
        assert_eq!(mount.fs_type, "cgroup");
        assert_eq!(mount.super_options, ["rw", "memory"]);

        let root = std::env::temp_dir().join(format!("berth-bench-test-{}", std::process::id()));
        let memory = root.join("memory");
        let cpu = root.join("cpu");
        fs::create_dir_all(memory.join("a/ctr")).unwrap();
        fs::create_dir_all(cpu.join("ctr")).unwrap();
        fs::write(memory.join("a/ctr/memory.limit_in_bytes"), "67108864\n").unwrap();
        fs::write(cpu.join("ctr/cpu.cfs_quota_us"), "100000\n").unwrap();
        let layout = CgroupLayout {
            v1: vec![(memory, vec!["memory".into()]), (cpu, vec!["cpu".into()])],
            v2: Some(root.join("unified")),
        };
        assert_eq!(
            layout.hybrid_v2_mount(),
            Some(root.join("unified").as_path())
        );
        let seen = layout
            .limits_of("4:memory:/a/ctr\n1:cpu:/ctr\n0::/\n")
            .unwrap();
        fs::remove_dir_all(&root).unwrap();
        assert!(seen.matches_request(), "{seen}");
        assert_eq!(seen.cgroup, "memory:/a/ctr");
    }

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

    #[test]
    fn container_ids_carry_the_tag() {
        let work = WorkDir::open(Path::new("/tmp/berth-bench-0123abcd")).unwrap();
        let case = Case {
            scenario: Scenario::Limits,
            tool: Tool::Runc,
        };
        let id = work.container_id(case, "cold", 7);
        assert_eq!(id, "bench-0123abcd-runc-limits-cold7");
        assert!(id.starts_with(&work.id_prefix()));
        assert!(WorkDir::open(Path::new("/tmp/elsewhere")).is_err());
    }
}

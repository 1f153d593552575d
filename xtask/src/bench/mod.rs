//! `cargo xtask bench`: berth beside crun and runc (and its own older self)
//! on this host, in four scenarios:
//!
//! - `plain` and `limits` ([`latency`]): start-to-exit latency of one `true`
//!   container, `berth run --rm --net none busybox true` side by side with
//!   `crun run` and `runc run` on an equivalent OCI bundle (the same
//!   namespaces: a network namespace with only `lo`; the same seccomp
//!   profile and capabilities, taken from berth's own spec), with and without resource
//!   limits (`-m 64m --cpus 1`); with `--baseline-berth PATH` also a
//!   `berth-baseline` row (another berth binary, e.g. from before a change)
//!   and the ratio berth / berth-baseline.
//! - `throughput` ([`throughput`]): `--count` detached `sleep 60`
//!   containers started one after another, listed and force-removed, per
//!   phase, berth (with `--net none` and on the default bridge) beside
//!   `crun`/`runc run -d`, `list`, `delete -f`; the PSS of berth's
//!   per-container monitors while they are up.
//! - `network` ([`network`]): `berth run --rm` on a network the bench
//!   creates, with and without `-p 8080:80`, beside `--net none`; and the
//!   IPAM API timed alone (a whole /16 in one transaction, one commit per
//!   allocation).
//! - `scale` ([`scale`], only when asked for): `--scale N` (500) detached
//!   containers, berth on its bridge beside crun: the Nth start against the
//!   1st, the listing of N, the monitors' memory, the parallel removal of
//!   all and what it left behind.
//! - `checkpoint` ([`checkpoint`], only when asked for): `berth
//!   checkpoint` + `restore` of a container with 256 MiB of touched memory
//!   beside podman's with runc and with berth-runtime; in the cgroup v2 VM
//!   where criu does not work on the host's kernel.
//! - `dns` ([`dns`], only when asked for): the answer time of berth's
//!   embedded DNS server for a container's name, asked from inside another
//!   container on the same network.
//! - `exec` ([`exec`], only when asked for): `berth exec C true` into a
//!   running container beside `crun exec`/`runc exec` into an equivalent
//!   one, with the CVE-2019-5736 protection berth used.
//! - `commit` ([`commit`], only when asked for): `berth commit` of a
//!   ~100 MiB write layer beside `tar -czf`/`tar -cf` of the same dir.
//! - `engines` ([`engines`], only when asked for): berth as the OCI
//!   runtime of podman and containerd (`berth-runtime`), `run --rm IMAGE
//!   true` beside runc and crun under the same engine, interleaved round
//!   by round, with the median of paired ratios berth-runtime / runc.
//!
//! The method is the one of ../shared/tools/peer-bench.sh, in Rust:
//!
//! - **Two stages** ([`host`]). The host stage builds berth (release),
//!   writes the busybox rootfs and the OCI bundles (no mounts), then
//!   re-executes this program under `unshare --mount --net --pid --fork
//!   --mount-proc` (the namespace stage, this module). Everything measured
//!   runs there: every process dies with the PID namespace, every mount
//!   (berth's overlays, our tmpfs) with the mount namespace, berth's bridges,
//!   veths and iptables rules with the network namespace. Back on the host,
//!   the host stage removes what only it can see (cgroups named after our
//!   container ids, the work dir) and checks that nothing was left behind.
//! - **crun on a hybrid host.** crun 1.8 refuses a hybrid cgroup layout
//!   ("cgroups in hybrid mode not supported") as soon as a cgroup2 mount sits
//!   next to the v1 hierarchies. Inside the private mount namespace only,
//!   /sys/fs/cgroup/unified is unmounted, so crun and runc see plain v1 and
//!   use cgroupfs. berth does not depend on it: it is also probed with the
//!   host's layout as-is before the switch.
//! - **Two regimes** for the latency scenarios, because on cgroup v1 the
//!   first cgroup attach after ~50 ms without one waits for an RCU grace
//!   period (cgroup_threadgroup_rwsem, ~10 ms): *cold/paced* interleaves the
//!   tools round-robin (order rotated every round), and before every run
//!   waits until no stray process is left and then idles `--gap-ms`; *warm*
//!   runs each case back to back, in short bursts rotated over the cases.
//!   Both tables also give the median of the per-round paired ratios against
//!   crun, which a noisy neighbour disturbs far less than the ratio of
//!   medians. The network scenario uses the cold procedure; throughput
//!   interleaves whole rounds of the tools, as peer-bench.sh does.
//!
//! Results: target/bench/summary.md (the tables, also printed), latency.svg
//! ([`plot`]: the latency distributions), and the raw data: samples.tsv
//! (every latency run), throughput.tsv, network.tsv, exec.tsv, commit.tsv.
//!
//! Layout: this module (arguments, work dir, the namespace stage and its
//! cleanup), [`host`] (host stage), [`latency`], [`throughput`],
//! [`network`] (the scenarios), [`report`] (statistics, summary),
//! [`system`] (mounts, cgroups, processes).

mod checkpoint;
mod commit;
mod dns;
mod engines;
mod exec;
mod files;
mod host;
mod images;
mod latency;
mod network;
mod plot;
mod report;
mod scale;
mod system;
mod throughput;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_cgroup::{Hierarchies, Layout};
use clap::ValueEnum;

use self::latency::Case;
use self::report::{ProbeTable, Report};
use self::system::{
    berth_container_ids, find_in_path, hide_unified_hierarchy, mount_tmpfs, probe, processes,
    quiet, remove_cgroups_named, run_checked, settle, stdout_lines, ProbeResult,
};
use crate::mounts::filesystem_of;
use crate::suite::{describe_cgroup_layout, describe_hierarchies};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Measured runs per case and regime (latency and network scenarios).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Smoke run of every scenario in well under a minute: 5 measured runs
    /// and 1 warm-up per case, 1 throughput round of at most 20 containers,
    /// 200 single-commit IPAM allocations (overrides --runs, --warmup,
    /// --rounds, --count).
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
    /// limits in the OCI config), `throughput` (--count detached containers
    /// started, listed, removed), `network` (`--net NET [-p]` beside
    /// `--net none`, and IPAM allocation), `images` (pull from a local
    /// registry against podman and skopeo+tar, load against tar -xf, run of
    /// a 10-layer against a 1-layer image), `cp` (a 1 GiB tree out of a
    /// container against tar | tar; only when asked for), `engines`
    /// (`podman run --rm` and `ctr run --rm` with berth-runtime against
    /// runc and crun; only when asked for), `scale` (--scale detached
    /// containers: start, list, monitor memory, parallel removal; only when
    /// asked for), `checkpoint` (checkpoint + restore of 256 MiB of touched
    /// memory against podman with runc; only when asked for; where criu
    /// does not work on this kernel, the whole bench runs in the project's
    /// cgroup v2 VM), `ipam` (the IPAM rows of `network` alone, on the
    /// host: no berth build, no containers; only alone), `exec` (`exec C
    /// true` into a running container against `crun exec`/`runc exec`;
    /// only when asked for), `commit` (commit of a ~100 MiB write layer
    /// against `tar -czf`/`tar -cf` of it; only when asked for).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::Plain, Scenario::Limits, Scenario::Throughput, Scenario::Network, Scenario::Images])]
    scenarios: Vec<Scenario>,
    /// Regimes of the latency scenarios: `cold` (interleaved, paced), `warm`
    /// (back to back).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Regime::Cold, Regime::Warm])]
    regimes: Vec<Regime>,
    /// Tools to measure (those not installed are skipped with a note).
    /// `berth-baseline` is added by --baseline-berth.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Tool::Berth, Tool::Crun, Tool::Runc])]
    tools: Vec<Tool>,
    /// Use this berth binary instead of building target/release/berth.
    #[arg(long, value_name = "PATH")]
    berth: Option<PathBuf>,
    /// Another berth binary (say, built from the commit before a change):
    /// adds a `berth-baseline` row to the latency scenarios, interleaved with
    /// the others, with its own --root, and the ratio berth / berth-baseline.
    #[arg(long, value_name = "PATH")]
    baseline_berth: Option<PathBuf>,
    /// Throughput scenario: detached containers per tool and round.
    #[arg(long, value_name = "N", default_value_t = 50)]
    count: usize,
    /// Throughput scenario: rounds (tools interleaved, order rotated).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scale scenario: detached containers per tool (--quick: at most 20).
    #[arg(long, value_name = "N", default_value_t = 500)]
    scale: usize,
    /// Put berth's --root on a private tmpfs instead of $TMPDIR's
    /// filesystem. By default it is on disk, like /var/lib/berth, while
    /// crun/runc keep their state on tmpfs, like /run; this shows what the
    /// disk (berth's fsyncs of its state) costs.
    #[arg(long)]
    berth_root_on_tmpfs: bool,
    /// Leave crun's and runc's bundles as their own `spec` makes them,
    /// without a seccomp filter. By default they get the seccomp profile
    /// and capabilities of the spec berth makes for `busybox true`
    /// (docker's default profile), so that all tools run the same bundle
    /// content.
    #[arg(long)]
    runtimes_without_seccomp: bool,
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
    /// The binary given with --baseline-berth.
    BerthBaseline,
    Crun,
    Runc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    Plain,
    Limits,
    Throughput,
    Network,
    Images,
    Cp,
    Engines,
    Scale,
    Checkpoint,
    Dns,
    Ipam,
    Exec,
    Commit,
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
            Tool::BerthBaseline => "berth-baseline",
            Tool::Crun => "crun",
            Tool::Runc => "runc",
        }
    }

    fn is_oci_runtime(self) -> bool {
        matches!(self, Tool::Crun | Tool::Runc)
    }

    fn is_berth(self) -> bool {
        matches!(self, Tool::Berth | Tool::BerthBaseline)
    }
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Plain => "plain",
            Scenario::Limits => "limits",
            Scenario::Throughput => "throughput",
            Scenario::Network => "network",
            Scenario::Images => "images",
            Scenario::Cp => "cp",
            Scenario::Engines => "engines",
            Scenario::Scale => "scale",
            Scenario::Checkpoint => "checkpoint",
            Scenario::Dns => "dns",
            Scenario::Ipam => "ipam",
            Scenario::Exec => "exec",
            Scenario::Commit => "commit",
        }
    }

    /// Measured by [`latency`]: one short container at a time, per tool.
    fn is_latency(self) -> bool {
        matches!(self, Scenario::Plain | Scenario::Limits)
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

pub fn run(args: BenchArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark creates namespaces, mounts and cgroups: run it as root");
    }
    let settings = Settings::from_args(&args)?;
    match (&args.inner_work_dir, &args.inner_berth, &args.inner_out_dir) {
        (Some(work_dir), Some(berth), Some(out_dir)) => {
            namespace_stage(&settings, WorkDir::open(work_dir)?, berth, out_dir)
        }
        (None, None, None) => host::host_stage(&args, &settings),
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
    runtimes_without_seccomp: bool,
    /// --baseline-berth, canonical.
    baseline_berth: Option<PathBuf>,
    /// Throughput: containers per tool and round, rounds.
    count: usize,
    rounds: usize,
    /// Scale: detached containers per tool.
    scale: usize,
    /// Network: IPAM calls timed with one commit each, per leases held.
    ipam_single_commits: usize,
    quick: bool,
}

impl Settings {
    /// IPAM calls (allocate, then release) timed at each number of leases
    /// held (the issue's "per-call cost"); fewer with --quick.
    const IPAM_SINGLE_COMMITS: usize = 200;
    const QUICK_IPAM_SINGLE_COMMITS: usize = 50;
    const QUICK_MAX_COUNT: usize = 20;

    fn from_args(args: &BenchArgs) -> Result<Self> {
        if args.scenarios.contains(&Scenario::Ipam) && args.scenarios.len() > 1 {
            bail!("--scenarios ipam runs alone (the network scenario includes its rows)");
        }
        let (runs, warmup, rounds, count) = if args.quick {
            (5, 1, 1, args.count.clamp(1, Self::QUICK_MAX_COUNT))
        } else {
            (
                args.runs.max(1),
                args.warmup,
                args.rounds.max(1),
                args.count.max(1),
            )
        };
        let baseline_berth = args
            .baseline_berth
            .as_ref()
            .map(|path| {
                fs::canonicalize(path)
                    .with_context(|| format!("--baseline-berth {}", path.display()))
            })
            .transpose()?;
        let mut tools = args.tools.clone();
        match &baseline_berth {
            Some(_) => tools.push(Tool::BerthBaseline),
            None if tools.contains(&Tool::BerthBaseline) => {
                bail!("--tools berth-baseline needs --baseline-berth PATH")
            }
            None => {}
        }
        Ok(Settings {
            runs,
            warmup,
            gap: Duration::from_millis(args.gap_ms),
            scenarios: sorted_unique(&args.scenarios),
            regimes: sorted_unique(&args.regimes),
            tools: sorted_unique(&tools),
            berth_root_on_tmpfs: args.berth_root_on_tmpfs,
            runtimes_without_seccomp: args.runtimes_without_seccomp,
            baseline_berth,
            count,
            rounds,
            scale: if args.quick {
                args.scale.clamp(1, Self::QUICK_MAX_COUNT)
            } else {
                args.scale.max(1)
            },
            ipam_single_commits: if args.quick {
                Self::QUICK_IPAM_SINGLE_COMMITS
            } else {
                Self::IPAM_SINGLE_COMMITS
            },
            quick: args.quick,
        })
    }

    fn latency_scenarios(&self) -> Vec<Scenario> {
        self.scenarios
            .iter()
            .copied()
            .filter(|scenario| scenario.is_latency())
            .collect()
    }

    fn has(&self, scenario: Scenario) -> bool {
        self.scenarios.contains(&scenario)
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

    /// The --root of the --baseline-berth binary.
    fn baseline_berth_root(&self) -> PathBuf {
        self.root.join("berth-baseline-root")
    }

    /// Scratch space of the IPAM timing (no root needed there).
    fn ipam_dir(&self, name: &str) -> PathBuf {
        self.root.join("ipam").join(name)
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
    /// `sleep 60`, default config: the detached containers of the
    /// throughput scenario.
    Sleep,
    /// `sleep 3600`, default config: the scale scenario's containers, which
    /// must outlive the minutes their N starts take.
    LongSleep,
}

impl BundleKind {
    const ALL: [BundleKind; 5] = [
        BundleKind::Plain,
        BundleKind::Limits,
        BundleKind::LimitsProbe,
        BundleKind::Sleep,
        BundleKind::LongSleep,
    ];
}

impl BundleKind {
    fn name(self) -> &'static str {
        match self {
            BundleKind::Plain => "plain",
            BundleKind::Limits => "limits",
            BundleKind::LimitsProbe => "limits-probe",
            BundleKind::Sleep => "sleep",
            BundleKind::LongSleep => "long-sleep",
        }
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
    baseline_berth: Option<PathBuf>,
}

impl Runner {
    /// `berth --root ...` (the berth under test).
    fn berth_command(&self) -> Command {
        self.berth_tool_command(Tool::Berth)
    }

    /// The binary and the --root of a berth tool (each its own store: an
    /// older berth need not read a newer one's state).
    fn berth_of(&self, tool: Tool) -> (&Path, PathBuf) {
        match (tool, &self.baseline_berth) {
            (Tool::BerthBaseline, Some(baseline)) => {
                (baseline.as_path(), self.work.baseline_berth_root())
            }
            _ => (self.berth.as_path(), self.work.berth_root()),
        }
    }

    fn berth_tool_command(&self, tool: Tool) -> Command {
        let (binary, root) = self.berth_of(tool);
        let mut command = Command::new(binary);
        command.arg("--root").arg(root);
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

    fn container_ids(&self, tool: Tool) -> Vec<String> {
        if tool.is_berth() {
            let (binary, root) = self.berth_of(tool);
            berth_container_ids(binary, &root)
        } else {
            stdout_lines(self.runtime_command(tool).args(["list", "-q"]))
        }
    }

    /// Remove every container of the tool (warm regime, end of the stage).
    fn remove_all(&self, tool: Tool) -> usize {
        let ids = self.container_ids(tool);
        if ids.is_empty() {
            return 0;
        }
        if tool.is_berth() {
            let _ = quiet(self.berth_tool_command(tool).args(["rm", "-f"]).args(&ids)).status();
        } else {
            for id in &ids {
                let _ = quiet(self.runtime_command(tool).args(["delete", "-f", id])).status();
            }
        }
        ids.len()
    }

    fn tool_present(&self, tool: Tool) -> bool {
        match tool {
            Tool::Berth => true,
            Tool::BerthBaseline => self.baseline_berth.is_some(),
            Tool::Crun | Tool::Runc => find_in_path(tool.name()).is_some(),
        }
    }
}

/// A scenario's part of the results: its markdown and its raw data file.
#[derive(Debug, Default)]
struct Section {
    markdown: String,
    /// (file name in the output dir, tab-separated text)
    raw: Option<(&'static str, String)>,
    /// What went wrong, when the scenario finished but not cleanly (its
    /// numbers are still reported; the bench then exits with an error).
    failure: Option<String>,
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
        baseline_berth: settings.baseline_berth.clone(),
    };
    let mut report = Report::default();
    let result = measure(settings, &runner, &mut report);
    clean_up_in_namespace(settings, &runner, &mut report);

    // Other load on the machine shows in the spread; say how much there was.
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split(' ').take(3).collect();
    report.section(format!(
        "- measured in {:.0} s (probes, all scenarios, cleanup); loadavg at end {}\n",
        started.elapsed().as_secs_f64(),
        loadavg.join(" ")
    ));
    // A scenario that failed is reported; the others' results still count.
    let failed: Vec<String> = match &result {
        Ok(failures) => failures.clone(),
        Err(err) => vec![format!("{err:#}")],
    };
    let text = report.render(settings);
    print!("{text}");
    fs::write(out_dir.join("summary.md"), &text).context("writing summary.md")?;
    report::write_samples(&out_dir.join("samples.tsv"), &report.samples)?;
    if let Some(svg) = plot::latency_svg(&report.samples)? {
        fs::write(out_dir.join(report::LATENCY_PLOT), svg).context("writing latency.svg")?;
    }
    for section in &report.scenario_sections {
        if let Some((name, raw)) = &section.raw {
            let path = out_dir.join(name);
            fs::write(&path, raw).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Set-up shared by the scenarios (state tmpfs, first berth runs, the cgroup
/// view crun accepts), then each selected scenario. Returns the failures of
/// scenarios that could not finish; an error here means none could start.
fn measure(settings: &Settings, runner: &Runner, report: &mut Report) -> Result<Vec<String>> {
    let state = runner.work.runtime_state();
    fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    // Runtime state on a tmpfs of this mount namespace: gone with it.
    mount_tmpfs(&state, "berth-bench-state", "mode=0700,size=64m")?;
    // berth keeps its runtime state in /run/berth, a tmpfs where /run is
    // one (systemd's hosts); where it is not (this VM's /run is on its
    // disk), it gets one here, as crun's and runc's state does above.
    let run_berth = Path::new("/run/berth");
    if !is_tmpfs(Path::new("/run")) {
        fs::create_dir_all(run_berth)
            .with_context(|| format!("creating {}", run_berth.display()))?;
        mount_tmpfs(run_berth, "berth-bench-run", "mode=0755,size=64m")?;
        report.section(
            "- /run is not a tmpfs on this host: berth's /run/berth is one in the measuring namespace, as on a systemd host\n".to_owned(),
        );
    }

    report.host_facts(settings, &runner.berth);
    let host_cgroups =
        Hierarchies::from_host().context("discovering the host's cgroup hierarchies")?;
    report.section(format!(
        "- cgroups as mounted on the host: {}\n",
        describe_hierarchies(&host_cgroups)
    ));

    let berth_root = runner.work.berth_root();
    if settings.berth_root_on_tmpfs {
        for root in [berth_root.clone(), runner.work.baseline_berth_root()] {
            fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
            mount_tmpfs(&root, "berth-bench-root", "mode=0700,size=512m")?;
        }
    }
    report.section(format!(
        "- berth --root {} is on {}; crun/runc --root on tmpfs (like /run)\n",
        berth_root.display(),
        filesystem_of(&berth_root)?
    ));

    // berth builds the default image (and the default network) on first
    // use; that is not what we time.
    for tool in [Tool::Berth, Tool::BerthBaseline] {
        if !settings.tools.contains(&tool) {
            continue;
        }
        let first = Instant::now();
        let image_probe = probe(
            runner
                .berth_tool_command(tool)
                .args(["run", "--rm", "busybox", "true"]),
        );
        report.section(format!(
            "- {}'s first run (builds the busybox image in a fresh --root): {:.0} ms, {}\n",
            tool.name(),
            first.elapsed().as_secs_f64() * 1000.0,
            image_probe.describe()
        ));
        if let ProbeResult::Failed(line) = &image_probe {
            bail!("{} cannot run busybox here: {line}", tool.name());
        }
    }

    if settings.runtimes_without_seccomp {
        report.section(
            "- crun/runc bundles: their own `spec` defaults, without a seccomp filter (--runtimes-without-seccomp); berth loads docker's default profile\n"
                .to_owned(),
        );
    } else if settings.tools.contains(&Tool::Berth) {
        let syscall_rules = give_runtimes_berths_confinement(runner)?;
        report.section(format!(
            "- crun/runc bundles carry the seccomp profile ({syscall_rules} rules) and capabilities of berth's own spec for `busybox true`, so every tool loads the same filter (--runtimes-without-seccomp leaves them out)\n"
        ));
    }

    let mut probes = ProbeTable::default();
    // As the host is: berth must cope; crun 1.8 is expected to refuse.
    latency::host_view_probes(settings, runner, &mut probes);
    let hybrid_unified = host_cgroups
        .unified()
        .filter(|_| host_cgroups.layout() == Layout::Hybrid);
    if let Some(unified) = hybrid_unified {
        let mount_point = unified.mount_point();
        hide_unified_hierarchy(mount_point)?;
        report.section(format!(
            "- measurements run with {} unmounted in a private mount namespace (host untouched; crun refuses hybrid layouts): runtimes see {}\n",
            mount_point.display(),
            describe_cgroup_layout()
        ));
    }

    let mut failures = Vec::new();
    if !settings.latency_scenarios().is_empty() {
        if let Err(err) = latency::measure(settings, runner, report, &mut probes) {
            failures.push(format!("latency: {err:#}"));
        }
    }
    report.probes = probes;
    type MeasureFn = fn(&Settings, &Runner) -> Result<Section>;
    let others: [(Scenario, &str, MeasureFn); 10] = [
        (Scenario::Throughput, "throughput", throughput::measure),
        (Scenario::Network, "network", network::measure),
        (Scenario::Images, "images", images::measure),
        (Scenario::Cp, "cp", files::measure),
        (Scenario::Engines, "engines", engines::measure),
        (Scenario::Scale, "scale", scale::measure),
        (Scenario::Checkpoint, "checkpoint", checkpoint::measure),
        (Scenario::Dns, "dns", dns::measure),
        (Scenario::Exec, "exec", exec::measure),
        (Scenario::Commit, "commit", commit::measure),
    ];
    for (scenario, name, measure) in others {
        if !settings.has(scenario) {
            continue;
        }
        eprintln!("xtask: {name} scenario");
        match measure(settings, runner) {
            Ok(section) => {
                if let Some(failure) = &section.failure {
                    failures.push(format!("{name}: {failure}"));
                }
                report.scenario_sections.push(section);
            }
            Err(err) => {
                report.scenario_sections.push(Section {
                    markdown: format!("## {name}: FAILED\n\n{err:#}\n\n"),
                    raw: None,
                    failure: None,
                });
                failures.push(format!("{name}: {err:#}"));
            }
        }
        // Whatever a failed scenario left is not the next one's to pay for.
        for tool in &settings.tools {
            if runner.tool_present(*tool) {
                runner.remove_all(*tool);
            }
        }
        settle();
    }
    Ok(failures)
}

/// Everything still there at the end of the stage, inside the namespaces.
/// Whatever we miss dies with them; the host stage removes cgroups.
fn clean_up_in_namespace(settings: &Settings, runner: &Runner, report: &mut Report) {
    let mut removed = Vec::new();
    for &tool in &settings.tools {
        if runner.tool_present(tool) {
            let count = runner.remove_all(tool);
            if count > 0 {
                removed.push(format!("{count} {} container(s)", tool.name()));
            }
        }
    }
    if network::remove_bench_network(runner) {
        removed.push(format!("berth network {}", network::BENCH_NETWORK));
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

/// Same bundle content for every tool: the OCI runtimes' bundles get the
/// `linux.seccomp` and `process.capabilities` of the spec berth itself makes
/// for `busybox true` (read from a container created for it and removed
/// again). Returns the number of syscall rules in the profile.
fn give_runtimes_berths_confinement(runner: &Runner) -> Result<usize> {
    let output = runner
        .berth_tool_command(Tool::Berth)
        .args(["create", "busybox", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running berth create")?;
    if !output.status.success() {
        bail!(
            "berth create busybox true failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let spec_path = runner
        .work
        .berth_root()
        .join("containers")
        .join(&id)
        .join("spec.json");
    let spec = fs::read(&spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))
        .and_then(|bytes| {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .with_context(|| format!("parsing {}", spec_path.display()))
        });
    let removed = run_checked(
        runner
            .berth_tool_command(Tool::Berth)
            .args(["rm", "-f", &id]),
    );
    let spec = spec?;
    removed?;
    let rules = spec["linux"]["seccomp"]["syscalls"]
        .as_array()
        .map(Vec::len)
        .with_context(|| format!("{} has no linux.seccomp.syscalls", spec_path.display()))?;
    for runtime in [Tool::Crun, Tool::Runc] {
        for kind in BundleKind::ALL {
            let path = runner.work.bundle(runtime, kind).join("config.json");
            let Ok(bytes) = fs::read(&path) else {
                continue; // a runtime that is not installed has no bundle
            };
            let mut config: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?;
            confine_like(&mut config, &spec);
            fs::write(&path, serde_json::to_vec_pretty(&config)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(rules)
}

/// A runtime's bundle `config` with the seccomp profile and capabilities of
/// berth's `spec`; the rest (root, process args, resources) stays its own.
fn confine_like(config: &mut serde_json::Value, spec: &serde_json::Value) {
    config["linux"]["seccomp"] = spec["linux"]["seccomp"].clone();
    config["process"]["capabilities"] = spec["process"]["capabilities"].clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_bundles_get_berths_seccomp_profile_and_capabilities_only() {
        let spec = serde_json::json!({
            "process": { "args": ["true"], "capabilities": { "bounding": ["CAP_KILL"] } },
            "linux": {
                "seccomp": { "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [] },
                "maskedPaths": ["/proc/kcore"]
            }
        });
        let mut config = serde_json::json!({
            "root": { "path": "/r" },
            "process": { "args": ["/bin/true"], "capabilities": { "bounding": ["CAP_CHOWN"] } },
            "linux": { "resources": { "memory": { "limit": 1 } } }
        });
        confine_like(&mut config, &spec);
        assert_eq!(config["linux"]["seccomp"], spec["linux"]["seccomp"]);
        assert_eq!(
            config["process"]["capabilities"],
            spec["process"]["capabilities"]
        );
        assert_eq!(config["process"]["args"], serde_json::json!(["/bin/true"]));
        assert_eq!(config["root"]["path"], "/r");
        assert_eq!(config["linux"]["resources"]["memory"]["limit"], 1);
        assert!(config["linux"].get("maskedPaths").is_none());
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

    #[test]
    fn baseline_needs_its_binary() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let parse = |argv: &[&str]| {
            Settings::from_args(
                &Cli::parse_from(std::iter::once("bench").chain(argv.iter().copied())).args,
            )
        };
        assert!(parse(&["--tools", "berth,berth-baseline"]).is_err());
        let exe = std::env::current_exe().unwrap();
        let settings = parse(&["--baseline-berth", exe.to_str().unwrap(), "--quick"]).unwrap();
        assert_eq!(
            settings.tools,
            [Tool::Berth, Tool::BerthBaseline, Tool::Crun, Tool::Runc]
        );
        assert_eq!((settings.runs, settings.rounds, settings.count), (5, 1, 20));
        assert_eq!(settings.scenarios.len(), 5);
    }
}

//! The `engines` scenario (issue 10's speed rows): berth as the OCI runtime
//! of real engines, beside runc and crun, on the same image:
//!
//! - podman 4 (through conmon): `podman --runtime R run --rm --network none
//!   IMAGE true`, everything private (storage, runroot, containers.conf,
//!   registries.conf, events, tmp dir in the work dir; cgroupfs);
//! - containerd (through its runc shim): a daemon started here with its
//!   root, state and socket in the work dir, driven with `ctr run --rm
//!   --runc-binary R IMAGE ID true`.
//!
//! R is `berth-runtime` (a link to the berth binary: argv[0] selects runc's
//! command line), runc and crun; a runtime whose untimed probe run fails is
//! skipped with the reason. The image is busybox, made here as an OCI
//! archive and loaded or imported: no registry traffic.
//!
//! Every round runs each engine with each runtime (order rotated every
//! round), each run after the previous one's processes are gone and
//! `--gap-ms` of idle; a row gives each runtime's median and the median of
//! the per-round ratios berth-runtime / runc (and / crun).
//!
//! The places podman and containerd hard-code (/run/containerd,
//! /run/containers, /var/lib/containers, the runtimes' default state dirs
//! under /run) are covered by tmpfs mounts in the bench's private mount
//! namespace while the scenario runs: nothing of theirs lands on the host.
//! Cgroups go below `/<id prefix>podman` and `/<id prefix>ctr/ID`, which
//! the bench's cleanup removes by name.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::images::write_layout;
use super::report::{median, median_paired_ratio};
use super::system::{
    cgroup_dirs, find_in_path, mount_tmpfs, mounts_below, probe, processes, remove_cgroups_named,
    run_checked, settle_sparing, stdout_lines, ProbeResult,
};
use super::{Runner, Section, Settings};

/// The name under which the berth binary speaks runc's command line.
pub(super) const BERTH_RUNTIME: &str = "berth-runtime";

/// The image both engines run (podman takes the name from `ref.name`,
/// containerd from its own annotation; both are written).
pub(super) const IMAGE: &str = "localhost/busybox:latest";

/// containerd's namespace for the bench's images and containers.
const CONTAINERD_NAMESPACE: &str = "berth-bench";

/// Machine-wide directories the engines or the runtimes (at their default
/// `--root`, which podman does not override for root) write to; covered by
/// a tmpfs while the scenario runs. The host stage removes those that did
/// not exist before (see `HostSnapshot`).
pub(super) const MASKED_DIRS: [&str; 6] = [
    "/run/containerd",
    "/run/containers",
    "/var/lib/containers",
    "/run/runc",
    "/run/crun",
    "/run/berth-runtime",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Engine {
    Podman,
    Containerd,
}

impl Engine {
    const ALL: [Engine; 2] = [Engine::Podman, Engine::Containerd];

    fn label(self) -> &'static str {
        match self {
            Engine::Podman => "podman run --rm --network none IMAGE true",
            Engine::Containerd => "ctr run --rm IMAGE ID true",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Containerd => "ctr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum OciRuntime {
    BerthRuntime,
    Runc,
    Crun,
}

impl OciRuntime {
    const ALL: [OciRuntime; 3] = [OciRuntime::BerthRuntime, OciRuntime::Runc, OciRuntime::Crun];

    fn name(self) -> &'static str {
        match self {
            OciRuntime::BerthRuntime => BERTH_RUNTIME,
            OciRuntime::Runc => "runc",
            OciRuntime::Crun => "crun",
        }
    }
}

/// One timed `run --rm`.
#[derive(Debug, Clone)]
struct EngineSample {
    engine: Engine,
    runtime: OciRuntime,
    round: usize,
    millis: f64,
    ok: bool,
}

/// A runtime that cannot run under an engine here, and why.
#[derive(Debug, Clone)]
struct Skipped {
    engine: Engine,
    runtime: OciRuntime,
    reason: String,
}

pub(super) fn measure(settings: &Settings, runner: &Runner) -> Result<Section> {
    for tool in ["podman", "conmon", "containerd", "ctr", "tar"] {
        if find_in_path(tool).is_none() {
            bail!("the engines scenario needs {tool} (apt-get install podman containerd)");
        }
    }
    let base = runner.work.root.join("engines");
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let masks = MaskedDirs::mount()?;
    let result = measure_in(settings, runner, &base);
    // Whatever happened: no engine process, no mount, nothing on disk.
    let mut problems = Vec::new();
    if let Err(err) = masks.unmount() {
        problems.push(format!("{err:#}"));
    }
    match mounts_below(&base) {
        Ok(mounts) if !mounts.is_empty() => {
            problems.push(format!(
                "mounts left under the engines dir: {}",
                mounts.join(", ")
            ));
        }
        Ok(_) => {}
        Err(err) => problems.push(format!("{err:#}")),
    }
    if problems.is_empty() {
        fs::remove_dir_all(&base).with_context(|| format!("removing {}", base.display()))?;
    }
    let mut section = result?;
    if !problems.is_empty() {
        let problems = problems.join("; ");
        section.failure = Some(match section.failure {
            Some(failure) => format!("{failure}; {problems}"),
            None => problems,
        });
    }
    Ok(section)
}

fn measure_in(settings: &Settings, runner: &Runner, base: &Path) -> Result<Section> {
    let bin = base.join("bin");
    fs::create_dir_all(&bin)?;
    let berth_runtime = bin.join(BERTH_RUNTIME);
    std::os::unix::fs::symlink(&runner.berth, &berth_runtime)
        .with_context(|| format!("linking {}", berth_runtime.display()))?;
    let runtime_paths: Vec<(OciRuntime, PathBuf)> = OciRuntime::ALL
        .iter()
        .filter_map(|&runtime| match runtime {
            OciRuntime::BerthRuntime => Some((runtime, berth_runtime.clone())),
            _ => find_in_path(runtime.name()).map(|path| (runtime, path)),
        })
        .collect();

    let archive = base.join("busybox.oci.tar");
    write_busybox_archive(runner, &base.join("layout"), &archive)?;
    let cgroup_parent = format!("/{}", runner.work.id_prefix());
    let podman = Podman::new(
        &base.join("podman"),
        &archive,
        &cgroup_parent,
        &berth_runtime,
    )?;
    let mut containerd = match Containerd::start(&base.join("containerd"), &archive, &cgroup_parent)
    {
        Ok(containerd) => containerd,
        Err(err) => {
            podman.remove_all();
            return Err(err);
        }
    };
    let result = measure_rounds(settings, &runtime_paths, &podman, &containerd);
    let mut failures = podman.remove_all();
    failures.extend(containerd.stop());
    failures.extend(remove_cgroup_parents(&[
        &podman.cgroup_parent,
        &containerd.cgroup_parent,
    ]));
    let (samples, skipped) = result?;

    let failed_runs = samples.iter().filter(|sample| !sample.ok).count();
    if failed_runs > 0 {
        failures.push(format!(
            "{failed_runs} measured run(s) failed (see engines.tsv)"
        ));
    }
    let versions = [
        stdout_lines(Command::new("podman").arg("--version")),
        stdout_lines(Command::new("containerd").arg("--version")),
    ]
    .map(|lines| lines.into_iter().next().unwrap_or_default())
    .join("; ");
    let mut markdown = render(settings.runs, &samples, &skipped);
    let _ = writeln!(
        markdown,
        "{versions}; podman storage driver {}; `berth-runtime` links to {}.\n",
        podman.storage_driver,
        runner.berth.display()
    );
    Ok(Section {
        markdown,
        raw: Some(("engines.tsv", raw_samples(&samples))),
        failure: (!failures.is_empty()).then(|| failures.join("; ")),
    })
}

/// Probe every (engine, runtime) once, warm up, then the measured rounds.
fn measure_rounds(
    settings: &Settings,
    runtime_paths: &[(OciRuntime, PathBuf)],
    podman: &Podman,
    containerd: &Containerd,
) -> Result<(Vec<EngineSample>, Vec<Skipped>)> {
    let spare = [containerd.pid()];
    let mut skipped = Vec::new();
    let mut cases: Vec<(Engine, OciRuntime, &Path)> = Vec::new();
    let mut probe_count = 0;
    for engine in Engine::ALL {
        for runtime in OciRuntime::ALL {
            let Some((_, path)) = runtime_paths.iter().find(|(r, _)| *r == runtime) else {
                skipped.push(Skipped {
                    engine,
                    runtime,
                    reason: format!("{} is not installed", runtime.name()),
                });
                continue;
            };
            let id = format!("probe{probe_count}");
            probe_count += 1;
            let mut command = match engine {
                Engine::Podman => podman.run_command(path),
                Engine::Containerd => containerd.run_command(path, &id),
            };
            match probe(&mut command) {
                ProbeResult::Ok => cases.push((engine, runtime, path.as_path())),
                ProbeResult::Failed(line) => skipped.push(Skipped {
                    engine,
                    runtime,
                    reason: shorten(&line, 300),
                }),
            }
            settle_sparing(&spare);
        }
    }
    if !cases
        .iter()
        .any(|(_, runtime, _)| *runtime == OciRuntime::BerthRuntime)
    {
        let reasons: Vec<String> = skipped
            .iter()
            .filter(|skip| skip.runtime == OciRuntime::BerthRuntime)
            .map(|skip| format!("{}: {}", skip.engine.name(), skip.reason))
            .collect();
        bail!(
            "berth-runtime runs under neither engine: {}",
            reasons.join("; ")
        );
    }

    let mut samples = Vec::new();
    let mut run_count = 0;
    for round in 0..settings.warmup + settings.runs {
        let measured = round >= settings.warmup;
        // Rotated every round: no runtime always runs right after another.
        let mut order = cases.clone();
        order.rotate_left(round % cases.len());
        for (engine, runtime, path) in order {
            settle_sparing(&spare);
            std::thread::sleep(settings.gap);
            let id = format!("run{run_count}");
            run_count += 1;
            let mut command = match engine {
                Engine::Podman => podman.run_command(path),
                Engine::Containerd => containerd.run_command(path, &id),
            };
            let started = Instant::now();
            let status = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let millis = started.elapsed().as_secs_f64() * 1000.0;
            if measured {
                samples.push(EngineSample {
                    engine,
                    runtime,
                    round: round - settings.warmup,
                    millis,
                    ok: status.is_ok_and(|status| status.success()),
                });
            }
        }
    }
    settle_sparing(&spare);
    Ok((samples, skipped))
}

/// Remove the engines' parent cgroups; a container cgroup still below one
/// (anything but podman's `conmon`) is a runtime's leftover and reported.
pub(super) fn remove_cgroup_parents(parents: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for parent in parents {
        let name = parent.trim_start_matches('/');
        let leftovers = container_cgroups_below(&cgroup_dirs(), name);
        if !leftovers.is_empty() {
            problems.push(format!("container cgroups left: {}", leftovers.join(", ")));
        }
        let stuck = remove_cgroups_named(name);
        if !stuck.is_empty() {
            problems.push(format!("cgroups that would not go: {}", stuck.join(", ")));
        }
    }
    problems
}

/// The cgroup dirs strictly below a top-level cgroup `parent` (on any
/// hierarchy), but for the `conmon` one podman moves conmon into.
fn container_cgroups_below(dirs: &[PathBuf], parent: &str) -> Vec<String> {
    dirs.iter()
        .filter(|dir| {
            let below = dir.parent().is_some_and(|up| {
                up.ancestors()
                    .any(|a| a.file_name() == Some(parent.as_ref()))
            });
            below && dir.file_name() != Some("conmon".as_ref())
        })
        .map(|dir| dir.display().to_string())
        .collect()
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Median ms of a runtime's successful runs under an engine.
fn median_millis(samples: &[EngineSample], engine: Engine, runtime: OciRuntime) -> Option<f64> {
    let millis: Vec<f64> = samples
        .iter()
        .filter(|s| s.engine == engine && s.runtime == runtime && s.ok)
        .map(|s| s.millis)
        .collect();
    median(&millis)
}

/// Median over rounds of `runtime / against` under one engine, from the
/// rounds where both succeeded: both ran within a second or two of each
/// other, so drift in the machine's load cancels out.
fn paired_ratio(
    samples: &[EngineSample],
    engine: Engine,
    runtime: OciRuntime,
    against: OciRuntime,
) -> Option<f64> {
    let of = |which: OciRuntime| {
        samples
            .iter()
            .filter(move |s| s.engine == engine && s.runtime == which && s.ok)
            .map(|s| (s.round, s.millis))
    };
    median_paired_ratio(of(runtime), of(against))
}

/// The scenario's markdown: one row per engine, the skipped runtimes and
/// why.
fn render(rounds: usize, samples: &[EngineSample], skipped: &[Skipped]) -> String {
    let mut out = String::from("## engines: berth-runtime under podman and containerd\n\n");
    let _ = writeln!(
        out,
        "{rounds} rounds, each engine with each runtime once per round (order rotated, before every run no stray process and the cold gap); median ms of successful runs, ok/runs; ratios are medians of per-round paired ratios (target: berth-runtime <= 1.00x runc).\n"
    );
    out.push_str("| engine: command | berth-runtime ms | runc ms | crun ms | berth-runtime / runc | berth-runtime / crun |\n|---|---:|---:|---:|---:|---:|\n");
    for engine in Engine::ALL {
        let cell = |runtime: OciRuntime| {
            if skipped
                .iter()
                .any(|s| s.engine == engine && s.runtime == runtime)
            {
                return "skipped".to_owned();
            }
            let runs = samples
                .iter()
                .filter(|s| s.engine == engine && s.runtime == runtime);
            let total = runs.clone().count();
            let ok = runs.filter(|s| s.ok).count();
            match median_millis(samples, engine, runtime) {
                Some(millis) => format!("{millis:.1} ({ok}/{total})"),
                None => format!("- ({ok}/{total})"),
            }
        };
        let ratio = |against: OciRuntime| {
            paired_ratio(samples, engine, OciRuntime::BerthRuntime, against)
                .map_or("-".to_owned(), |ratio| format!("{ratio:.2}x"))
        };
        let _ = writeln!(
            out,
            "| {}: `{}` | {} | {} | {} | {} | {} |",
            engine.name(),
            engine.label(),
            cell(OciRuntime::BerthRuntime),
            cell(OciRuntime::Runc),
            cell(OciRuntime::Crun),
            ratio(OciRuntime::Runc),
            ratio(OciRuntime::Crun),
        );
    }
    out.push('\n');
    for skip in skipped {
        let _ = writeln!(
            out,
            "- {} under {} skipped: {}",
            skip.runtime.name(),
            skip.engine.name(),
            skip.reason.replace('|', "\\|")
        );
    }
    if !skipped.is_empty() {
        out.push('\n');
    }
    out
}

fn raw_samples(samples: &[EngineSample]) -> String {
    let mut raw = String::from("engine\tround\truntime\tok\tmillis\n");
    for sample in samples {
        let _ = writeln!(
            raw,
            "{}\t{}\t{}\t{}\t{:.1}",
            sample.engine.name(),
            sample.round,
            sample.runtime.name(),
            u8::from(sample.ok),
            sample.millis
        );
    }
    raw
}

/// The busybox rootfs tar the host stage wrote, as a one-layer OCI image
/// layout in a tar (what `podman load` and `ctr image import` read).
pub(super) fn write_busybox_archive(runner: &Runner, layout: &Path, archive: &Path) -> Result<()> {
    let layer = fs::read(runner.work.busybox_tar()).context("reading the busybox tar")?;
    write_layout(layout, &[layer], IMAGE)?;
    run_checked(
        Command::new("tar")
            .arg("-C")
            .arg(layout)
            .arg("-cf")
            .arg(archive)
            .arg("."),
    )
}

// ---------------------------------------------------------------------------
// The machine-wide directories, masked.
// ---------------------------------------------------------------------------

/// The [`MASKED_DIRS`] covered by tmpfs mounts in this mount namespace.
#[derive(Debug)]
pub(super) struct MaskedDirs {
    mounted: Vec<PathBuf>,
}

impl MaskedDirs {
    pub(super) fn mount() -> Result<Self> {
        let mut masks = MaskedDirs {
            mounted: Vec::new(),
        };
        for dir in MASKED_DIRS.map(PathBuf::from) {
            let mounted = fs::create_dir_all(&dir)
                .with_context(|| format!("creating {}", dir.display()))
                .and_then(|()| mount_tmpfs(&dir, "berth-bench-engines", "mode=0711,size=256m"));
            if let Err(err) = mounted {
                let _ = masks.unmount();
                return Err(err);
            }
            masks.mounted.push(dir);
        }
        Ok(masks)
    }

    pub(super) fn unmount(self) -> Result<()> {
        let mut failed = Vec::new();
        for dir in self.mounted.iter().rev() {
            // Detached: a mount the engines left below goes with it.
            if let Err(err) = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH) {
                failed.push(format!("{}: {err}", dir.display()));
            }
        }
        if !failed.is_empty() {
            bail!("unmounting the engines' tmpfs: {}", failed.join(", "));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------

/// podman with its storage, state and configuration in `dir` and the
/// busybox image loaded.
#[derive(Debug)]
pub(super) struct Podman {
    dir: PathBuf,
    storage_driver: &'static str,
    pub(super) cgroup_parent: String,
    /// The runtime of the untimed commands (load, clean-up): podman wants
    /// one that exists.
    admin_runtime: PathBuf,
}

impl Podman {
    pub(super) fn new(
        dir: &Path,
        archive: &Path,
        cgroup_parent: &str,
        admin_runtime: &Path,
    ) -> Result<Self> {
        let mut podman = Podman {
            dir: dir.to_owned(),
            storage_driver: "overlay",
            cgroup_parent: format!("{cgroup_parent}podman"),
            admin_runtime: admin_runtime.to_owned(),
        };
        podman.write_config()?;
        let load = |podman: &Podman| {
            run_checked(
                podman
                    .command(&podman.admin_runtime)
                    .args(["load", "-q", "-i"])
                    .arg(archive),
            )
        };
        if let Err(overlay_err) = load(&podman) {
            // Some file systems cannot hold overlay's upper directories.
            eprintln!("xtask: podman load with overlay failed ({overlay_err:#}), trying vfs");
            podman.storage_driver = "vfs";
            for sub in ["root", "runroot"] {
                let path = podman.dir.join(sub);
                let _ = fs::remove_dir_all(&path);
                fs::create_dir_all(&path)?;
            }
            load(&podman).context("podman load of the busybox image")?;
        }
        Ok(podman)
    }

    fn write_config(&self) -> Result<()> {
        for sub in ["root", "runroot", "tmp", "networks", "volumes"] {
            let path = self.dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        // podman passes `--log FILE --log-format json` to the runtimes named
        // here (it matches the binary's file name), berth-runtime too.
        let containers_conf = format!(
            "[engine]\nevents_logfile_path = \"{}\"\nimage_copy_tmp_dir = \"{}\"\nlock_type = \"file\"\npull_policy = \"never\"\nruntime_supports_json = [\"crun\", \"runc\", \"{BERTH_RUNTIME}\"]\n",
            self.dir.join("events.log").display(),
            self.dir.join("tmp").display(),
        );
        let storage_conf = format!(
            "[storage]\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            self.dir.join("root").display(),
            self.dir.join("runroot").display()
        );
        // No registry is reachable: never look one up.
        let registries_conf =
            "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n";
        for (name, text) in [
            ("containers.conf", containers_conf.as_str()),
            ("storage.conf", storage_conf.as_str()),
            ("registries.conf", registries_conf),
        ] {
            let path = self.dir.join(name);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// `podman <private globals> --runtime RUNTIME`.
    pub(super) fn command(&self, runtime: &Path) -> Command {
        let path = |sub: &str| self.dir.join(sub);
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(path("root"))
            .arg("--runroot")
            .arg(path("runroot"))
            .arg("--tmpdir")
            .arg(path("tmp"))
            .arg("--volumepath")
            .arg(path("volumes"))
            .arg("--network-config-dir")
            .arg(path("networks"))
            .args(["--storage-driver", self.storage_driver])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .arg("--runtime")
            .arg(runtime)
            .env("CONTAINERS_CONF", path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", path("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", path("registries.conf"))
            .env("TMPDIR", path("tmp"))
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION")
            // conmon inherits it and writes an `oom` file there.
            .current_dir(&self.dir);
        command
    }

    /// The measured command.
    fn run_command(&self, runtime: &Path) -> Command {
        let mut command = self.command(runtime);
        command
            .args(["run", "--rm", "--network", "none", "--cgroup-parent"])
            .arg(&self.cgroup_parent)
            .args([IMAGE, "true"]);
        command
    }

    /// Remove every container and the storage (podman's overlay mounts
    /// with it); returns what went wrong.
    pub(super) fn remove_all(&self) -> Vec<String> {
        let runtime = &self.admin_runtime;
        let mut problems = Vec::new();
        let left = stdout_lines(self.command(runtime).args(["ps", "-a", "-q"]));
        if !left.is_empty() {
            problems.push(format!("podman left {} container(s)", left.len()));
            let _ = run_checked(self.command(runtime).args(["rm", "-a", "-f", "-t", "0"]));
        }
        if let Err(err) = run_checked(self.command(runtime).args(["system", "reset", "-f"])) {
            problems.push(format!("{err:#}"));
        }
        problems
    }
}

// ---------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------

/// A containerd daemon of the bench's own, root, state and socket in `dir`,
/// the busybox image imported.
#[derive(Debug)]
struct Containerd {
    dir: PathBuf,
    daemon: Option<Child>,
    cgroup_parent: String,
}

impl Containerd {
    fn start(dir: &Path, archive: &Path, cgroup_parent: &str) -> Result<Self> {
        for sub in ["root", "state", "opt", "runtime", "fifo"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = \"{}\"\n\n[ttrpc]\n  address = \"{}.ttrpc\"\n\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}\"\n",
            dir.join("root").display(),
            dir.join("state").display(),
            socket.display(),
            socket.display(),
            dir.join("opt").display(),
        );
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = dir.join("containerd.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        let mut containerd = Containerd {
            dir: dir.to_owned(),
            daemon: Some(daemon),
            cgroup_parent: format!("{cgroup_parent}ctr"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let exited = containerd
                .daemon
                .as_mut()
                .is_some_and(|daemon| !matches!(daemon.try_wait(), Ok(None)));
            let answers = !exited
                && socket.exists()
                && containerd
                    .ctr()
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success());
            if answers {
                break;
            }
            if exited || Instant::now() > deadline {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                containerd.stop();
                bail!(
                    "containerd did not come up; the end of its log: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Err(err) = run_checked(containerd.ctr().args(["image", "import"]).arg(archive)) {
            containerd.stop();
            return Err(err.context("ctr image import of the busybox image"));
        }
        Ok(containerd)
    }

    fn pid(&self) -> u32 {
        self.daemon.as_ref().map_or(0, Child::id)
    }

    /// `ctr --address SOCK -n berth-bench`.
    fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", CONTAINERD_NAMESPACE]);
        command
    }

    /// The measured command.
    fn run_command(&self, runtime: &Path, id: &str) -> Command {
        let mut command = self.ctr();
        command
            .args(["run", "--rm", "--runc-binary"])
            .arg(runtime)
            .arg("--runc-root")
            .arg(self.dir.join("runtime"))
            .arg("--fifo-dir")
            .arg(self.dir.join("fifo"))
            .arg("--cgroup")
            .arg(format!("{}/{id}", self.cgroup_parent))
            .args([IMAGE, id, "true"]);
        command
    }

    /// Remove every task and container, stop the daemon (SIGTERM, then
    /// SIGKILL after 10 s), wait for its shims; returns what was left.
    fn stop(&mut self) -> Vec<String> {
        let Some(mut daemon) = self.daemon.take() else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for kind in ["task", "container"] {
            let left = stdout_lines(self.ctr().args([kind, "ls", "-q"]));
            if !left.is_empty() {
                problems.push(format!("containerd left {kind}(s): {}", left.join(", ")));
            }
            for id in left {
                let args: &[&str] = match kind {
                    "task" => &["task", "delete", "--force"],
                    _ => &["container", "rm"],
                };
                let _ = run_checked(self.ctr().args(args).arg(&id));
            }
        }
        let pid = nix::unistd::Pid::from_raw(daemon.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(daemon.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                problems.push("containerd ignored SIGTERM for 10 s".to_owned());
                let _ = daemon.kill();
                let _ = daemon.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        // Its shims exit once their containers are deleted.
        settle_sparing(&[]);
        let shims: Vec<String> = processes()
            .into_iter()
            .filter(|(pid, cmdline)| *pid != 1 && cmdline.contains("containerd-shim"))
            .map(|(pid, _)| pid.to_string())
            .collect();
        if !shims.is_empty() {
            problems.push(format!("containerd shims left: {}", shims.join(", ")));
        }
        problems
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(engine: Engine, runtime: OciRuntime, round: usize, millis: f64) -> EngineSample {
        EngineSample {
            engine,
            runtime,
            round,
            millis,
            ok: millis > 0.0,
        }
    }

    #[test]
    fn rows_pair_rounds_and_name_skipped_runtimes() {
        use Engine::{Containerd, Podman};
        use OciRuntime::{BerthRuntime, Crun, Runc};
        let samples = [
            sample(Podman, BerthRuntime, 0, 100.0),
            sample(Podman, Runc, 0, 200.0),
            sample(Podman, BerthRuntime, 1, 300.0),
            sample(Podman, Runc, 1, 200.0),
            sample(Podman, BerthRuntime, 2, 100.0),
            sample(Podman, Runc, 2, 100.0),
            // A failed runc run: round 3 is not paired.
            sample(Podman, BerthRuntime, 3, 900.0),
            sample(Podman, Runc, 3, 0.0),
            sample(Containerd, BerthRuntime, 0, 50.0),
            sample(Containerd, Runc, 0, 100.0),
            sample(Containerd, Crun, 0, 25.0),
        ];
        assert_eq!(
            paired_ratio(&samples, Podman, BerthRuntime, Runc),
            Some(1.0)
        );
        assert_eq!(median_millis(&samples, Podman, BerthRuntime), Some(200.0));
        assert_eq!(
            paired_ratio(&samples, Containerd, BerthRuntime, Crun),
            Some(2.0)
        );
        assert_eq!(paired_ratio(&samples, Podman, BerthRuntime, Crun), None);

        let skipped = [Skipped {
            engine: Podman,
            runtime: Crun,
            reason: "cgroups in hybrid mode not supported | really".to_owned(),
        }];
        let text = render(4, &samples, &skipped);
        assert!(
            text.contains("| podman: `podman run --rm --network none IMAGE true` | 200.0 (4/4) | 200.0 (3/4) | skipped | 1.00x | - |"),
            "{text}"
        );
        assert!(
            text.contains("| ctr: `ctr run --rm IMAGE ID true` | 50.0 (1/1) | 100.0 (1/1) | 25.0 (1/1) | 0.50x | 2.00x |"),
            "{text}"
        );
        assert!(
            text.contains(
                "- crun under podman skipped: cgroups in hybrid mode not supported \\| really"
            ),
            "{text}"
        );
        assert_eq!(
            raw_samples(&samples[..1]),
            "engine\tround\truntime\tok\tmillis\npodman\t0\tberth-runtime\t1\t100.0\n"
        );
    }

    #[test]
    fn container_cgroups_are_those_below_the_parent() {
        let dirs: Vec<PathBuf> = [
            "/sys/fs/cgroup/memory/bench-1-podman",
            "/sys/fs/cgroup/memory/bench-1-podman/conmon",
            "/sys/fs/cgroup/memory/bench-1-podman/libpod-abc",
            "/sys/fs/cgroup/pids/bench-1-ctr/run3",
            "/sys/fs/cgroup/pids/other/run4",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            container_cgroups_below(&dirs, "bench-1-podman"),
            ["/sys/fs/cgroup/memory/bench-1-podman/libpod-abc"]
        );
        assert_eq!(
            container_cgroups_below(&dirs, "bench-1-ctr"),
            ["/sys/fs/cgroup/pids/bench-1-ctr/run3"]
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("ééééé", 2), "éé...");
    }
}

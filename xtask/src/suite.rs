//! Running the privileged test executables with a leak check around them.
//!
//! The same code runs on the host (`cargo xtask e2e --host`, in-process) and
//! inside the VM (the guest's run script calls `xtask run-suite`), so both
//! places test and check exactly the same way. The report goes back to the
//! host as JSON through the VM's shared directory.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_cgroup::{Hierarchies, Layout, Version};
use serde::{Deserialize, Serialize};

use crate::leaks::LeakProbe;

/// Printed (on the VM console) right before the first test executable
/// starts, so the host can measure boot-to-first-test.
pub const FIRST_TEST_MARKER: &str = "xtask: starting the first test executable";

#[derive(Debug, clap::Args)]
pub struct RunSuiteArgs {
    /// Absolute path of the berth binary, passed to the tests as BERTH_BIN.
    #[arg(long)]
    berth_bin: PathBuf,
    /// Run the tests of each executable one at a time.
    #[arg(long)]
    serial: bool,
    /// Only tests whose name contains one of these (repeatable).
    #[arg(long)]
    filter: Vec<String>,
    /// Give up on the suite after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Write the report here as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the exit code (0 or 1) here once everything is done.
    #[arg(long)]
    exit_file: Option<PathBuf>,
    /// The test executables.
    #[arg(required = true)]
    executables: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SuiteConfig {
    pub berth_bin: PathBuf,
    pub executables: Vec<PathBuf>,
    pub serial: bool,
    pub filter: Vec<String>,
    pub timeout: Duration,
}

/// What one executable did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutableReport {
    pub name: String,
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub ignored: Vec<String>,
    /// Why the executable counts as failed beyond its failed tests (a crash,
    /// a timeout, a non-zero exit), if it does.
    pub problem: Option<String>,
}

/// What the whole suite did on one machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteReport {
    pub cgroup_layout: String,
    pub executables: Vec<ExecutableReport>,
    pub leaks: Vec<String>,
}

impl SuiteReport {
    pub fn succeeded(&self) -> bool {
        self.leaks.is_empty()
            && self
                .executables
                .iter()
                .all(|exe| exe.failed.is_empty() && exe.problem.is_none())
    }

    pub fn count(&self, pick: impl Fn(&ExecutableReport) -> usize) -> usize {
        self.executables.iter().map(pick).sum()
    }

    /// "which tests ran where": every test with its result, then the leaks.
    pub fn print_summary(&self, place: &str) {
        println!("---- e2e on {place}; cgroup layout: {}", self.cgroup_layout);
        for exe in &self.executables {
            for test in &exe.passed {
                println!("  ok      {}::{test}", exe.name);
            }
            for test in &exe.ignored {
                println!("  ignored {}::{test}", exe.name);
            }
            for test in &exe.failed {
                println!("  FAILED  {}::{test}", exe.name);
            }
            if let Some(problem) = &exe.problem {
                println!("  FAILED  {}: {problem}", exe.name);
            }
        }
        for leak in &self.leaks {
            println!("  LEAKED  {leak}");
        }
        println!(
            "---- {place}: {} passed, {} failed, {} ignored, {} leaked -> {}",
            self.count(|exe| exe.passed.len()),
            self.count(|exe| exe.failed.len() + usize::from(exe.problem.is_some())),
            self.count(|exe| exe.ignored.len()),
            self.leaks.len(),
            if self.succeeded() { "ok" } else { "FAILED" },
        );
    }
}

/// `xtask run-suite`: run, print, write the report and the exit code.
pub fn run_from_cli(args: &RunSuiteArgs) -> Result<()> {
    let config = SuiteConfig {
        berth_bin: args.berth_bin.clone(),
        executables: args.executables.clone(),
        serial: args.serial,
        filter: args.filter.clone(),
        timeout: Duration::from_secs(args.timeout),
    };
    let report = run_suite(&config)?;
    // The summary itself is printed by whoever reads the report.
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    let succeeded = report.succeeded();
    if let Some(path) = &args.exit_file {
        // Written last: its presence tells the host the suite really ended.
        let code = if succeeded { "0\n" } else { "1\n" };
        fs::write(path, code).with_context(|| format!("writing {}", path.display()))?;
    }
    if !succeeded {
        bail!("the e2e suite failed");
    }
    Ok(())
}

/// Runs every executable (with the name filter) and checks for leaks after.
pub fn run_suite(config: &SuiteConfig) -> Result<SuiteReport> {
    let cgroup_layout = describe_cgroup_layout();
    println!("xtask: cgroup layout: {cgroup_layout}");

    // A directory of our own as the tests' TMPDIR: their state roots land
    // in it, so leaked mounts and files are easy to attribute.
    let test_tmp_dir = std::env::temp_dir().join(format!("berth-e2e-{}", std::process::id()));
    if test_tmp_dir.exists() {
        fs::remove_dir_all(&test_tmp_dir)
            .with_context(|| format!("removing stale {}", test_tmp_dir.display()))?;
    }
    fs::create_dir_all(&test_tmp_dir)
        .with_context(|| format!("creating {}", test_tmp_dir.display()))?;

    let probe = LeakProbe {
        berth_bin: config.berth_bin.clone(),
        test_tmp_dir: test_tmp_dir.clone(),
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
    };
    let snapshot_started = Instant::now();
    let before = probe.snapshot()?;
    println!(
        "xtask: leak-check snapshot took {:.1} s",
        snapshot_started.elapsed().as_secs_f64()
    );

    let deadline = Instant::now() + config.timeout;
    let mut executables = Vec::new();
    let mut first = true;
    for executable in &config.executables {
        let test_count = list_tests(executable, &config.filter)?;
        if test_count == 0 {
            continue;
        }
        if Instant::now() >= deadline {
            executables.push(ExecutableReport {
                name: test_executable_name(executable),
                passed: Vec::new(),
                failed: Vec::new(),
                ignored: Vec::new(),
                problem: Some(format!(
                    "not run: the suite's {} s ran out",
                    config.timeout.as_secs()
                )),
            });
            continue;
        }
        if first {
            println!("{FIRST_TEST_MARKER}");
            first = false;
        }
        executables.push(run_executable(executable, config, &test_tmp_dir, deadline)?);
    }
    if executables.is_empty() {
        println!("xtask: no e2e test matches the filter");
    }

    let leaks = probe.leaks_since(&before)?;
    // berth keeps its shared `berth` parent cgroups (as docker its /docker);
    // the suite leaves the host as it found it. Busy (another berth's
    // containers) or absent is fine.
    if let Ok(hierarchies) = Hierarchies::from_host() {
        let _ = berth_cgroup::Cgroup::remove_empty_parent(&hierarchies);
    }
    if leaks.is_empty() {
        // Only a clean run removes the directory: leaked mounts under it
        // must stay visible for whoever investigates.
        fs::remove_dir_all(&test_tmp_dir)
            .with_context(|| format!("removing {}", test_tmp_dir.display()))?;
    }
    Ok(SuiteReport {
        cgroup_layout,
        executables,
        leaks,
    })
}

/// How many tests of `executable` match `filter` (libtest's `--list`).
fn list_tests(executable: &Path, filter: &[String]) -> Result<usize> {
    let mut command = Command::new(executable);
    command.args(["--list", "--format", "terse"]);
    command.args(filter);
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("listing the tests of {}", executable.display()))?;
    if !output.status.success() {
        bail!(
            "`{} --list` failed ({})",
            executable.display(),
            output.status
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.ends_with(": test"))
        .count())
}

/// Runs one test executable, streaming its output and recording each
/// test's result from libtest's "test NAME ... ok" lines.
fn run_executable(
    executable: &Path,
    config: &SuiteConfig,
    test_tmp_dir: &Path,
    deadline: Instant,
) -> Result<ExecutableReport> {
    let name = test_executable_name(executable);
    let mut command = Command::new(executable);
    if config.serial {
        command.arg("--test-threads=1");
    }
    command.args(&config.filter);
    command
        .env("BERTH_BIN", &config.berth_bin)
        .env("TMPDIR", test_tmp_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    println!(
        "xtask: running {name} ({})",
        if config.serial {
            "serially"
        } else {
            "in parallel"
        }
    );
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", executable.display()))?;
    let stdout = child.stdout.take().context("test stdout was not piped")?;
    let reader = std::thread::spawn(move || collect_results(stdout, std::io::stdout()));

    let problem = match wait_until(&mut child, deadline)? {
        None => Some("timed out, killed".to_owned()),
        Some(status) if !status.success() => Some(format!("exited with {status}")),
        Some(_) => None,
    };
    let (passed, failed, ignored) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the output reader of {name} panicked"))?;
    // A non-zero exit explained by failed tests needs no second mention,
    // but a timeout always does.
    let problem = problem.filter(|problem| failed.is_empty() || problem.starts_with("timed out"));
    Ok(ExecutableReport {
        name,
        passed,
        failed,
        ignored,
        problem,
    })
}

type TestResults = (Vec<String>, Vec<String>, Vec<String>);

fn collect_results(mut stdout: impl Read, mut console: impl Write) -> TestResults {
    let (mut passed, mut failed, mut ignored) = (Vec::new(), Vec::new(), Vec::new());
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    // Forwarded as it comes, not line by line: serial libtest prints
    // "test NAME ... " before the test runs, which shows what is running.
    while let Ok(read @ 1..) = stdout.read(&mut chunk) {
        let _ = console.write_all(&chunk[..read]);
        let _ = console.flush();
        pending.extend_from_slice(&chunk[..read]);
        while let Some(newline) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=newline).collect();
            let line = String::from_utf8_lossy(&line);
            let Some((test, result)) = line
                .trim_end()
                .strip_prefix("test ")
                .and_then(|rest| rest.rsplit_once(" ... "))
            else {
                continue;
            };
            match result {
                "ok" => passed.push(test.to_owned()),
                "FAILED" => failed.push(test.to_owned()),
                result if result.starts_with("ignored") => ignored.push(test.to_owned()),
                _ => {}
            }
        }
    }
    // Serial libtest prints "test NAME ... " before running it: a line left
    // unfinished names the test that hung or crashed the executable.
    let unfinished = String::from_utf8_lossy(&pending);
    if let Some(test) = unfinished
        .trim_end()
        .strip_prefix("test ")
        .and_then(|rest| rest.strip_suffix(" ..."))
    {
        failed.push(format!("{test} (never finished)"));
    }
    (passed, failed, ignored)
}

/// Waits for `child` until `deadline`; on timeout kills it (by its own pid)
/// and returns None.
pub fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            child.kill().context("killing a child that timed out")?;
            child.wait().context("reaping a killed child")?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `target/debug/deps/run-0123abcd` -> `run`.
fn test_executable_name(executable: &Path) -> String {
    let file_name = executable
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    match file_name.rsplit_once('-') {
        Some((name, hash)) if hash.bytes().all(|b| b.is_ascii_hexdigit()) => name.to_owned(),
        _ => file_name,
    }
}

/// "v2", "v1" or "hybrid", with where the hierarchies are and their
/// controllers, as this mount namespace sees them.
pub fn describe_cgroup_layout() -> String {
    match Hierarchies::from_host() {
        Ok(cgroups) => describe_hierarchies(&cgroups),
        Err(err) => format!("none ({err})"),
    }
}

/// [`describe_cgroup_layout`] of hierarchies already discovered.
pub fn describe_hierarchies(cgroups: &Hierarchies) -> String {
    let v1: Vec<String> = cgroups
        .hierarchies()
        .iter()
        .filter(|hierarchy| hierarchy.version() == Version::V1)
        .map(|hierarchy| hierarchy.controllers().join(","))
        .collect();
    let unified = cgroups.unified().map(|unified| {
        format!(
            "cgroup2 at {}, controllers: {}",
            unified.mount_point().display(),
            unified.controllers().join(" ")
        )
    });
    match (cgroups.layout(), unified) {
        (Layout::Unified, Some(unified)) => format!("v2 ({unified})"),
        (Layout::Hybrid, Some(unified)) => {
            format!("hybrid (v1 hierarchies: {}; {unified})", v1.join(" "))
        }
        // A cgroup2 mount on a legacy host only holds named hierarchies.
        _ => format!("v1 (hierarchies: {})", v1.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_described_with_their_hierarchies() {
        let hybrid = Hierarchies::discover(
            "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
             31 25 0:27 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
             32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
            "",
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(
            describe_hierarchies(&hybrid),
            "hybrid (v1 hierarchies: name=systemd cpu,cpuacct; \
             cgroup2 at /nonexistent/sys/fs/cgroup/unified, controllers: )"
        );
        let root = std::env::temp_dir().join(format!("xtask-layout-{}", std::process::id()));
        fs::create_dir_all(root.join("sys/fs/cgroup")).unwrap();
        fs::write(
            root.join("sys/fs/cgroup/cgroup.controllers"),
            "cpu memory\n",
        )
        .unwrap();
        let unified = Hierarchies::discover(
            "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n",
            "0::/\n",
            &root,
        );
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            describe_hierarchies(&unified.unwrap()),
            format!(
                "v2 (cgroup2 at {}, controllers: cpu memory)",
                root.join("sys/fs/cgroup").display()
            )
        );
    }

    #[test]
    fn libtest_lines_become_results() {
        let output = "running 3 tests\ntest a ... ok\ntest b::c ... FAILED\n\
                      test d ... ignored, needs root\ntest result: FAILED\n";
        let (passed, failed, ignored) = collect_results(output.as_bytes(), std::io::sink());
        assert_eq!(passed, ["a"]);
        assert_eq!(failed, ["b::c"]);
        assert_eq!(ignored, ["d"]);
    }

    #[test]
    fn a_test_left_running_is_named() {
        let (_, failed, _) =
            collect_results(&b"test a ... ok\ntest hang ... "[..], std::io::sink());
        assert_eq!(failed, ["hang (never finished)"]);
    }

    #[test]
    fn executable_names_lose_their_hash() {
        assert_eq!(
            test_executable_name(Path::new("/t/debug/deps/run_exit-0123abcdef")),
            "run_exit"
        );
        assert_eq!(test_executable_name(Path::new("/t/plain")), "plain");
    }
}

//! `cargo xtask e2e`: build berth and the privileged tests, then run them on
//! this host or in a VM with the chosen cgroup layout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::cargo::{self, Workspace};
use crate::suite::{self, SuiteConfig};
use crate::vm::{self, CgroupVersion, VmRun};

#[derive(Debug, Clone, clap::Args)]
pub struct E2eArgs {
    /// Run on this machine (as root) instead of in a VM.
    #[arg(long, conflicts_with = "cgroup")]
    pub host: bool,
    /// The cgroup layout the VM sets up.
    #[arg(long, value_enum, default_value_t = CgroupVersion::V2)]
    pub cgroup: CgroupVersion,
    /// Give up after this many seconds (the VM is killed).
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Only tests whose name contains one of these.
    pub filter: Vec<String>,
}

/// Where the suite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Host,
    Vm(CgroupVersion),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Host => f.write_str("host"),
            Place::Vm(cgroup) => write!(f, "cgroup {cgroup} VM"),
        }
    }
}

/// The built artifacts every place runs.
#[derive(Debug)]
pub struct Build {
    pub workspace: Workspace,
    pub berth_bin: PathBuf,
    pub executables: Vec<PathBuf>,
}

impl Build {
    pub fn run() -> Result<Self> {
        let workspace = Workspace::locate()?;
        let berth_bin = cargo::build_berth()?;
        let executables = cargo::build_e2e_tests()?;
        println!("xtask: berth binary: {}", berth_bin.display());
        for executable in &executables {
            println!(
                "xtask: test executable: {}",
                cargo::display_path(executable, &workspace)
            );
        }
        Ok(Self {
            workspace,
            berth_bin,
            executables,
        })
    }
}

/// The result of one place, with its timings.
#[derive(Debug)]
pub struct PlaceOutcome {
    pub succeeded: bool,
    pub wall_time: Duration,
    pub boot_to_first_test: Option<Duration>,
}

pub fn run(args: &E2eArgs) -> Result<()> {
    let place = if args.host {
        Place::Host
    } else {
        Place::Vm(args.cgroup)
    };
    let build = Build::run()?;
    let outcome = run_at(
        &build,
        place,
        &args.filter,
        Duration::from_secs(args.timeout),
    )?;
    println!(
        "xtask: e2e on the {place} took {:.1} s",
        outcome.wall_time.as_secs_f64()
    );
    if !outcome.succeeded {
        bail!("the e2e suite failed on the {place}");
    }
    Ok(())
}

pub fn run_at(
    build: &Build,
    place: Place,
    filter: &[String],
    timeout: Duration,
) -> Result<PlaceOutcome> {
    let started = Instant::now();
    match place {
        Place::Host => {
            // The VM is root inside whoever starts it; the host is not.
            if !nix::unistd::geteuid().is_root() {
                bail!("`cargo xtask e2e --host` needs root (namespaces, mounts, cgroups): run it with sudo");
            }
            let report = suite::run_suite(&SuiteConfig {
                berth_bin: build.berth_bin.clone(),
                executables: build.executables.clone(),
                serial: false,
                filter: filter.to_vec(),
                timeout,
            })?;
            report.print_summary(&place.to_string());
            Ok(PlaceOutcome {
                succeeded: report.succeeded(),
                wall_time: started.elapsed(),
                boot_to_first_test: None,
            })
        }
        Place::Vm(cgroup) => {
            let outcome = vm::run(&VmRun {
                workspace: &build.workspace,
                berth_bin: &build.berth_bin,
                executables: &build.executables,
                cgroup,
                filter,
                timeout,
                command: None,
            })?;
            match &outcome.report {
                Some(report) => report.print_summary(&place.to_string()),
                None => println!("---- e2e on {place}: no report came back -> FAILED"),
            }
            if let Some(boot) = outcome.boot_to_first_test {
                println!(
                    "---- {place}: boot to first test {:.1} s, total {:.1} s",
                    boot.as_secs_f64(),
                    outcome.wall_time.as_secs_f64()
                );
            }
            Ok(PlaceOutcome {
                succeeded: outcome.succeeded(),
                wall_time: outcome.wall_time,
                boot_to_first_test: outcome.boot_to_first_test,
            })
        }
    }
}

//! `cargo xtask ...`: berth's developer tasks.
//!
//! - `ci`: everything the README's test command promises (fmt, clippy, unit
//!   tests, the privileged e2e suite on the host and in cgroup v2 and v1 VMs).
//! - `e2e`: the privileged suite in `tests/`, on the host or inside a QEMU VM.
//! - `rootfs`: write the default busybox image as a tar file.
//! - `bench`: start-to-exit latency of `berth run` beside crun and runc.
//!
//! Printing progress is this program's whole job, hence the allow below.
#![allow(clippy::print_stdout)]

mod bench;
mod cargo;
mod ci;
mod e2e;
mod leaks;
mod mounts;
mod rootfs;
mod suite;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "berth's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// fmt, clippy, unit tests, then the e2e suite on the host, in a cgroup v2
    /// VM and in a cgroup v1 VM (the README's test command).
    Ci,
    /// Build berth and the privileged tests, run them in a VM (default) or
    /// on this host, and check that they leave nothing behind.
    E2e(e2e::E2eArgs),
    /// Start-to-exit latency of `berth run` next to crun and runc (cold and
    /// warm, with and without resource limits); results in target/bench/.
    Bench(bench::BenchArgs),
    /// Write the default busybox image (the one `berth run busybox` uses).
    Rootfs {
        /// Output tar file.
        #[arg(short, long, default_value = "busybox.tar")]
        output: PathBuf,
    },
    /// Inside the VM (or on the host): run the test binaries with a leak
    /// check around them. Called by the guest's run script, not by people.
    #[command(hide = true)]
    RunSuite(suite::RunSuiteArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ci => ci::run(),
        Command::E2e(args) => e2e::run(&args),
        Command::Rootfs { output } => rootfs::run(&output),
        Command::Bench(args) => bench::run(args),
        Command::RunSuite(args) => suite::run_from_cli(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

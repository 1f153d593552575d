//! `berth`: the command-line container engine. This crate is the only one
//! that knows every subsystem; it composes the library crates.
#![allow(clippy::print_stdout)]

mod args;
mod container;
mod container_spec;
mod exec;
mod exit;
mod images;
mod limits;
mod logs;
mod monitor;
mod network;
mod oci_cli;
mod paths;
mod pause;
mod ps;
mod pull;
mod run;
mod seccomp;
mod supervise;
mod table;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, ImageCommand};
use exit::Failure;
use paths::Paths;

fn main() -> ExitCode {
    // One binary, two grammars: under the name `berth-runtime` it is an
    // OCI runtime with runc's command line.
    let invoked_as = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_owned()));
    if invoked_as.is_some_and(|name| name == oci_cli::PROGRAM_NAME) {
        return ExitCode::from(oci_cli::main());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // docker: usage errors are berth's failure (125); --help is not.
            return ExitCode::from(if e.use_stderr() { 125 } else { 0 });
        }
    };
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            let failure = Failure::from(error);
            eprintln!("berth: {}", failure.message);
            failure.code
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(125))
}

/// Run one command; `Ok` carries the exit code (a container's own code for
/// `run`).
fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let paths = Paths::new(cli.root);
    match cli.command {
        Command::Run(args) => run::run(&paths, *args),
        Command::Ps(args) => ps::ps(&paths, &args).map(|()| 0),
        Command::Rm(args) => container::rm(&paths, &args),
        Command::Logs(args) => logs::logs(&paths, &args),
        Command::Exec(args) => exec::exec(&paths, &args),
        Command::Stop(args) => container::stop(&paths, &args),
        Command::Kill(args) => container::kill_containers(&paths, &args),
        Command::Commit(args) => images::commit(&paths, &args),
        Command::Pause(args) => pause::pause(&paths, &args),
        Command::Unpause(args) => pause::unpause(&paths, &args),
        Command::Stats(args) => pause::stats(&paths, &args),
        Command::Network(command) => network::command(&paths, &command),
        Command::Inspect(args) => container::inspect(&paths, &args),
        Command::Images | Command::Image(ImageCommand::List) => images::list(&paths).map(|()| 0),
        Command::Image(ImageCommand::Import { file, name }) => {
            images::import(&paths, &file, &name).map(|()| 0)
        }
        Command::Image(ImageCommand::Rm { names }) => images::remove(&paths, &names),
        Command::Image(ImageCommand::Save { name, output }) => images::save(&paths, &name, &output),
        Command::Pull(args) | Command::Image(ImageCommand::Pull(args)) => {
            pull::pull_command(&paths, &args)
        }
        Command::Login(args) => pull::login(&paths, &args),
        Command::Logout(args) => pull::logout(&paths, &args),
    }
}

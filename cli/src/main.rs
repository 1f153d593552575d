//! `berth`: the command-line container engine. This crate is the only one
//! that knows every subsystem; it composes the library crates.
#![allow(clippy::print_stdout)]

mod args;
mod container;
mod container_ops;
mod container_spec;
mod copy;
mod diff;
mod exec;
mod exit;
mod images;
mod info;
mod limits;
mod logs;
mod monitor;
mod network;
mod oci_cli;
mod paths;
mod pause;
mod prune;
mod ps;
mod pull;
mod run;
mod seccomp;
mod supervise;
mod table;
mod user;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, ContainerCommand, ImageCommand, SystemCommand};
use exit::Failure;
use paths::Paths;

/// `print!`/`println!` panic when standard output cannot be written (a
/// reader that went away, a full disk). Output is berth's answer, so such
/// a failure ends berth like any other, without a backtrace: silently with
/// 141 for a closed pipe (what a shell reports for SIGPIPE, as `head`
/// expects), with one line and 125 otherwise. Every other panic keeps the
/// default report.
fn exit_cleanly_when_stdout_fails() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if let Some(reason) = message.strip_prefix("failed printing to stdout: ") {
            if reason.contains("os error 32") {
                std::process::exit(exit::CLOSED_PIPE);
            }
            eprintln!("berth: cannot write the output: {reason}");
            std::process::exit(125);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    exit_cleanly_when_stdout_fails();
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
        Command::Version => info::version(),
        Command::Rename {
            container,
            new_name,
        } => container_ops::rename(&paths, &container, &new_name),
        Command::Wait { containers } => container_ops::wait(&paths, &containers),
        Command::Port { container, private } => {
            container_ops::port(&paths, &container, private.as_deref())
        }
        Command::Top { container } => container_ops::top(&paths, &container),
        Command::Info => info::info(&paths),
        Command::Network(command) => network::command(&paths, &command),
        Command::Inspect(args) => container::inspect(&paths, &args),
        Command::Images(args) | Command::Image(ImageCommand::List(args)) => {
            images::list(&paths, &args)
        }
        Command::Image(ImageCommand::Import { file, name }) => images::import(&paths, &file, &name),
        Command::Rmi(args) | Command::Image(ImageCommand::Rm(args)) => {
            images::remove(&paths, &args)
        }
        Command::Save(args) | Command::Image(ImageCommand::Save(args)) => {
            images::save(&paths, &args)
        }
        Command::Load(args) | Command::Image(ImageCommand::Load(args)) => {
            images::load(&paths, &args)
        }
        Command::Tag { source, target } | Command::Image(ImageCommand::Tag { source, target }) => {
            images::tag(&paths, &source, &target)
        }
        Command::History(args) | Command::Image(ImageCommand::History(args)) => {
            images::history(&paths, &args)
        }
        Command::Image(ImageCommand::Inspect { images: names }) => images::inspect(&paths, &names),
        Command::Image(ImageCommand::Prune(args)) => prune::image_prune(&paths, &args),
        Command::Export(args) => images::export(&paths, &args),
        Command::Pull(args) | Command::Image(ImageCommand::Pull(args)) => {
            pull::pull_command(&paths, &args)
        }
        Command::Login(args) => pull::login(&paths, &args),
        Command::Logout(args) => pull::logout(&paths, &args),
        Command::Cp(args) | Command::Container(ContainerCommand::Cp(args)) => {
            copy::cp(&paths, &args)
        }
        Command::Diff { container } | Command::Container(ContainerCommand::Diff { container }) => {
            diff::diff(&paths, &container)
        }
        Command::Container(ContainerCommand::Prune(args)) => prune::container_prune(&paths, &args),
        Command::System(SystemCommand::Prune(args)) => prune::system_prune(&paths, &args),
        Command::System(SystemCommand::Df(args)) => prune::system_df(&paths, &args),
    }
}

//! `berth`: the command-line container engine. This crate is the only one
//! that knows every subsystem; it composes the library crates.
#![allow(clippy::print_stdout)]

mod args;
mod attach;
mod checkpoint;
mod completion;
mod container;
mod container_ops;
mod container_spec;
mod copy;
mod diff;
mod exec;
mod exit;
mod format;
mod images;
mod info;
mod inspect;
mod lifecycle;
mod limits;
mod logs;
mod monitor;
mod mounts;
mod network;
mod network_hosts;
mod oci_cli;
mod paths;
mod pause;
mod prune;
mod ps;
mod pull;
mod quick_parse;
mod run;
mod seccomp;
mod table;
mod time_text;
mod user;
mod userns;
mod volume;

use std::process::ExitCode;

use clap::Parser;
// The relay loop lives in the library (the small monitor runs it too).
use cli::supervise;

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
    // Chosen before clap: the small monitor of a detached container hands
    // a container that ended back to berth (a hidden, internal entry).
    let mut arguments = std::env::args_os().skip(1);
    if arguments
        .next()
        .is_some_and(|first| first == cli::monitor_handoff::FINISH_ENTRY)
    {
        let code = monitor::finish_entry(&arguments.collect::<Vec<_>>());
        return ExitCode::from(u8::try_from(code).unwrap_or(125));
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli =
        match quick_parse::narrow_command(&args).map_or_else(|| Cli::try_parse_from(&args), Ok) {
            Ok(cli) => cli,
            Err(e) if !e.use_stderr() => {
                // --help and --version.
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                // docker: usage errors are berth's failure (125), and like every
                // error one line.
                eprintln!("berth: {}", usage_error_line(&e));
                return ExitCode::from(125);
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

/// clap's report of a usage error as one line: its message without the
/// tips (a flag berth does not know is named once, not offered as a value
/// with `-- --flag`) and the usage block, plus where to read more.
fn usage_error_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.trim())
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    let command: Vec<String> = std::env::args()
        .skip(1)
        .take_while(|a| !a.starts_with('-'))
        .take(2)
        .collect();
    match error.kind() {
        clap::error::ErrorKind::UnknownArgument | clap::error::ErrorKind::InvalidSubcommand => {
            let shown = match command.first() {
                Some(sub) if error.kind() == clap::error::ErrorKind::UnknownArgument => {
                    format!("berth {sub} --help")
                }
                _ => "berth --help".to_owned(),
            };
            let what = message.split(" found").next().unwrap_or(message);
            format!("{what} (see `{shown}`)")
        }
        _ => message.to_owned(),
    }
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
        Command::Version(args) => info::version(args.format.as_deref()),
        Command::Rename {
            container,
            new_name,
        } => container_ops::rename(&paths, &container, &new_name),
        Command::Wait { containers } => container_ops::wait(&paths, &containers),
        Command::Port { container, private } => {
            container_ops::port(&paths, &container, private.as_deref())
        }
        Command::Top { container } => container_ops::top(&paths, &container),
        Command::Info(args) => info::info(&paths, args.format.as_deref()),
        Command::Network(command) => network::command(&paths, &command),
        Command::Inspect(args) => inspect::inspect(&paths, &args),
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
        Command::Create(args) => run::create(&paths, *args),
        Command::Start(args) => lifecycle::start(&paths, &args),
        Command::Restart(args) => lifecycle::restart(&paths, &args),
        Command::Attach(args) => attach::attach(&paths, &args),
        Command::Completion { shell } => completion::completion(shell),
        Command::Volume(command) => volume::command(&paths, &command),
        Command::Cp(args) | Command::Container(ContainerCommand::Cp(args)) => {
            copy::cp(&paths, &args)
        }
        Command::Diff { container } | Command::Container(ContainerCommand::Diff { container }) => {
            diff::diff(&paths, &container)
        }
        Command::Container(ContainerCommand::Prune(args)) => prune::container_prune(&paths, &args),
        Command::System(SystemCommand::Prune(args)) => prune::system_prune(&paths, &args),
        Command::System(SystemCommand::Df(args)) => prune::system_df(&paths, &args),
        Command::Checkpoint(args) => checkpoint::checkpoint(&paths, &args),
        Command::Restore(args) => checkpoint::restore(&paths, &args),
    }
}

//! `berth run ...` parsed with only the `run` command built. clap builds
//! every command's arguments before it parses anything (about fifty
//! commands, hundreds of arguments, for the one that is used), which is a
//! measurable part of a short `run --rm`. Only a command line that this
//! narrow parser accepts is taken from it; anything else (another command,
//! `--help`, `--version`, a usage error) goes through the full parser, so
//! help, completions and every error stay exactly what they were.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, FromArgMatches};

use crate::args::{Cli, RunArgs};

/// The command line as the full parser would read it, when it is a `run`
/// command the narrow parser accepts; `None` otherwise.
pub fn run_command(args: &[OsString]) -> Option<Cli> {
    let command_at = match args.get(1).and_then(|a| a.to_str()) {
        Some("--root") => 3,
        Some(a) if a.starts_with("--root=") => 2,
        _ => 1,
    };
    if args.get(command_at).and_then(|a| a.to_str()) != Some("run") {
        return None;
    }
    let narrow = clap::Command::new("berth")
        .arg(root_arg())
        .subcommand(RunArgs::augment_args(clap::Command::new("run")))
        .subcommand_required(true);
    let matches = narrow.try_get_matches_from(args).ok()?;
    Cli::from_arg_matches(&matches).ok()
}

/// `Cli::root` as its derive declares it (a unit test compares the two
/// parsers' results, so a change there cannot go unnoticed).
fn root_arg() -> clap::Arg {
    clap::Arg::new("root")
        .long("root")
        .global(true)
        .env("BERTH_ROOT")
        .default_value("/var/lib/berth")
        .value_parser(clap::value_parser!(PathBuf))
        .action(clap::ArgAction::Set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn argv(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    /// Both parsers give the same `Cli` for every `run` line the narrow
    /// one accepts.
    #[test]
    fn run_lines_parse_as_the_full_parser_parses_them() {
        for line in [
            "berth run busybox true",
            "berth --root /tmp/r run --rm --net none busybox true",
            "berth --root=/tmp/r run --rm -m 64m --cpus 1 busybox true",
            "berth run -d --name web -p 8080:80 -e A=1 -v /a:/b:ro busybox sleep 9",
            "berth run -it --rm -h box --user 1000:1000 busybox sh -c echo",
            "berth run --rm busybox ls -l --color",
            "berth run --root /x --rm busybox true",
            "berth run --rm --security-opt no-new-privileges --cap-drop ALL busybox id",
        ] {
            let args = argv(line);
            let quick = run_command(&args).unwrap_or_else(|| panic!("not taken: {line}"));
            let full = Cli::try_parse_from(&args).expect(line);
            assert_eq!(format!("{quick:?}"), format!("{full:?}"), "{line}");
        }
    }

    /// Lines the narrow parser must leave to the full one: other commands,
    /// help, and usage errors (whose text names the full command tree).
    #[test]
    fn other_lines_go_to_the_full_parser() {
        for line in [
            "berth ps -a",
            "berth --root /tmp/r ps",
            "berth run --help",
            "berth run",
            "berth run --no-such-flag busybox",
            "berth --version run busybox",
            "berth --root",
            "berth",
        ] {
            assert!(run_command(&argv(line)).is_none(), "{line}");
        }
    }
}

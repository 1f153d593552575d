//! `berth run ...` and `berth exec ...` parsed with only their own command
//! built. clap builds every command's arguments before it parses anything
//! (about fifty commands, hundreds of arguments, for the one that is used),
//! which is a measurable part of a short `run --rm`, and of an `exec`, which
//! parses twice (before and after it starts over from its sealed copy).
//! Only a command line that this narrow parser accepts is taken from it;
//! anything else (another command, `--help`, `--version`, a usage error)
//! goes through the full parser, so help, completions and every error stay
//! exactly what they were.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, FromArgMatches};

use crate::args::{Cli, ExecArgs, RunArgs};

/// The command line as the full parser would read it, when it is a `run` or
/// `exec` command the narrow parser accepts; `None` otherwise.
pub fn narrow_command(args: &[OsString]) -> Option<Cli> {
    let command_at = match args.get(1).and_then(|a| a.to_str()) {
        Some("--root") => 3,
        Some(a) if a.starts_with("--root=") => 2,
        _ => 1,
    };
    let subcommand = match args.get(command_at).and_then(|a| a.to_str())? {
        "run" => RunArgs::augment_args(clap::Command::new("run")),
        "exec" => ExecArgs::augment_args(clap::Command::new("exec")),
        _ => return None,
    };
    let narrow = clap::Command::new("berth")
        .arg(root_arg())
        .subcommand(subcommand)
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
        assert_parsed_as_the_full_parser_does(&[
            "berth run busybox true",
            "berth --root /tmp/r run --rm --net none busybox true",
            "berth --root=/tmp/r run --rm -m 64m --cpus 1 busybox true",
            "berth run -d --name web -p 8080:80 -e A=1 -v /a:/b:ro busybox sleep 9",
            "berth run -it --rm -h box --user 1000:1000 busybox sh -c echo",
            "berth run --rm busybox ls -l --color",
            "berth run --root /x --rm busybox true",
            "berth run --rm --security-opt no-new-privileges --cap-drop ALL busybox id",
        ]);
    }

    /// Each line is taken by the narrow parser, with the full one's result.
    fn assert_parsed_as_the_full_parser_does(lines: &[&str]) {
        for line in lines {
            let args = argv(line);
            let quick = narrow_command(&args).unwrap_or_else(|| panic!("not taken: {line}"));
            let full = Cli::try_parse_from(&args).expect(line);
            assert_eq!(format!("{quick:?}"), format!("{full:?}"), "{line}");
        }
    }

    /// The same for `exec` lines.
    #[test]
    fn exec_lines_parse_as_the_full_parser_parses_them() {
        assert_parsed_as_the_full_parser_does(&[
            "berth exec web true",
            "berth --root /tmp/r exec -it web sh",
            "berth exec -d -e A=1 -w /tmp -u 1000 web sleep 9",
            "berth exec --privileged web ls -l --color",
        ]);
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
            "berth exec --help",
            "berth exec web",
            "berth exec --no-such-flag web true",
            "berth --version run busybox",
            "berth --root",
            "berth",
        ] {
            assert!(narrow_command(&argv(line)).is_none(), "{line}");
        }
    }
}

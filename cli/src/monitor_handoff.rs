//! The hand-over between berth and the small monitor of a detached
//! container.
//!
//! A detached container's monitor lives as long as the container, so what
//! it holds is paid per container. berth forks it, and the fork (the whole
//! CLI: its heap, its stack, the relocated tables of a large binary)
//! starts the container; then it executes `berth-monitor`, a small program
//! installed next to berth, in its place. The process stays the parent of
//! the container's PID 1; only what watches it shrinks: the relay of the
//! output to the log and to attach clients, until PID 1 exits. Then
//! `berth-monitor` executes berth again (as `berth __monitor-finish`), which
//! records the exit, releases what the container held and carries out its
//! restart policy, handing over to `berth-monitor` again after a restart.
//!
//! Both programs meet here: the command lines they give each other.

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_state::LogLimits;
use nix::sys::wait::WaitStatus;

/// The small monitor's file name, next to the berth binary.
pub const MONITOR_PROGRAM: &str = "berth-monitor";

/// berth's first argument when `berth-monitor` hands a container that
/// ended back to it (never typed by a user; berth checks it is the
/// container's monitor).
pub const FINISH_ENTRY: &str = "__monitor-finish";

/// Where the container's output comes from, as descriptors inherited
/// across the exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayOutput {
    Terminal(RawFd),
    Pipes {
        stdout: RawFd,
        stderr: RawFd,
        /// The write end of the container's stdin (a detached `-i`).
        stdin: Option<RawFd>,
    },
}

/// What `berth-monitor` needs to watch one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPlan {
    /// The container's PID 1 (a child of the monitor).
    pub pid: i32,
    /// The container's directory (its attach socket).
    pub container_dir: PathBuf,
    pub log: PathBuf,
    pub log_limits: LogLimits,
    pub output: RelayOutput,
    /// The berth binary to hand the ended container back to.
    pub berth: PathBuf,
    /// How berth finds the container again.
    pub root: PathBuf,
    pub id: String,
    /// The restart policy's backoff, carried through for berth.
    pub restart_delay: Duration,
    /// Sockets holding the container's published host ports: kept while
    /// it runs, closed when it ends (before berth records the end).
    pub held: Vec<RawFd>,
    /// The container's embedded DNS responder's socket, served by the
    /// monitor while the container runs.
    pub dns: Option<DnsHandoff>,
}

/// The embedded DNS responder handed over: its socket and the servers
/// it relays other names to (its hosts file is the container's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsHandoff {
    pub socket: RawFd,
    pub upstreams: Vec<std::net::SocketAddr>,
    pub search_domains: Vec<String>,
}

/// How the container's PID 1 ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEnd {
    Exited(i32),
    Signaled(i32),
}

impl ContainerEnd {
    /// `None` for a status that is not an end (stopped, continued).
    pub fn from_wait_status(status: WaitStatus) -> Option<Self> {
        match status {
            WaitStatus::Exited(_, code) => Some(ContainerEnd::Exited(code)),
            WaitStatus::Signaled(_, signal, _) => Some(ContainerEnd::Signaled(signal as i32)),
            _ => None,
        }
    }

    /// Back to a wait status of process `pid` (an unknown signal number
    /// counts as SIGKILL).
    pub fn wait_status(self, pid: nix::unistd::Pid) -> WaitStatus {
        match self {
            ContainerEnd::Exited(code) => WaitStatus::Exited(pid, code),
            ContainerEnd::Signaled(number) => WaitStatus::Signaled(
                pid,
                nix::sys::signal::Signal::try_from(number)
                    .unwrap_or(nix::sys::signal::Signal::SIGKILL),
                false,
            ),
        }
    }
}

/// What berth needs to finish a container `berth-monitor` watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishPlan {
    pub root: PathBuf,
    pub id: String,
    pub end: ContainerEnd,
    /// How long it ran (the backoff starts over after a long run).
    pub ran: Duration,
    pub restart_delay: Duration,
}

impl RelayPlan {
    /// `berth-monitor`'s arguments (after its name).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Args::default();
        args.push("--pid", self.pid.to_string());
        args.push("--dir", &self.container_dir);
        args.push("--log", &self.log);
        args.push("--log-max-size", self.log_limits.max_size.to_string());
        args.push("--log-max-files", self.log_limits.max_files.to_string());
        match self.output {
            RelayOutput::Terminal(fd) => args.push("--terminal", fd.to_string()),
            RelayOutput::Pipes {
                stdout,
                stderr,
                stdin,
            } => {
                args.push("--stdout", stdout.to_string());
                args.push("--stderr", stderr.to_string());
                if let Some(stdin) = stdin {
                    args.push("--stdin", stdin.to_string());
                }
            }
        }
        args.push("--berth", &self.berth);
        args.push("--root", &self.root);
        args.push("--id", &self.id);
        args.push(
            "--restart-delay-ms",
            self.restart_delay.as_millis().to_string(),
        );
        if !self.held.is_empty() {
            let list: Vec<String> = self.held.iter().map(ToString::to_string).collect();
            args.push("--held", list.join(","));
        }
        if let Some(dns) = &self.dns {
            args.push("--dns", dns.socket.to_string());
            let list: Vec<String> = dns.upstreams.iter().map(ToString::to_string).collect();
            args.push("--dns-upstreams", list.join(","));
            args.push("--dns-search", dns.search_domains.join(","));
        }
        args.0
    }

    pub fn parse(args: &[OsString]) -> anyhow::Result<Self> {
        let mut given = Given::parse(args)?;
        let output = match given.take("--terminal") {
            Some(fd) => RelayOutput::Terminal(number(&fd, "--terminal")?),
            None => RelayOutput::Pipes {
                stdout: given.number("--stdout")?,
                stderr: given.number("--stderr")?,
                stdin: given
                    .take("--stdin")
                    .map(|fd| number(&fd, "--stdin"))
                    .transpose()?,
            },
        };
        let plan = RelayPlan {
            pid: given.number("--pid")?,
            container_dir: given.required("--dir")?.into(),
            log: given.required("--log")?.into(),
            log_limits: LogLimits {
                max_size: given.number("--log-max-size")?,
                max_files: given.number("--log-max-files")?,
            },
            output,
            berth: given.required("--berth")?.into(),
            root: given.required("--root")?.into(),
            id: text(&given.required("--id")?, "--id")?.to_owned(),
            restart_delay: Duration::from_millis(given.number("--restart-delay-ms")?),
            held: match given.take("--held") {
                Some(list) => text(&list, "--held")?
                    .split(',')
                    .map(|fd| number(OsStr::new(fd), "--held"))
                    .collect::<anyhow::Result<_>>()?,
                None => Vec::new(),
            },
            dns: match given.take("--dns") {
                Some(fd) => Some(DnsHandoff {
                    socket: number(&fd, "--dns")?,
                    upstreams: text(&given.required("--dns-upstreams")?, "--dns-upstreams")?
                        .split(',')
                        .filter(|address| !address.is_empty())
                        .map(|address| number(OsStr::new(address), "--dns-upstreams"))
                        .collect::<anyhow::Result<_>>()?,
                    search_domains: text(&given.required("--dns-search")?, "--dns-search")?
                        .split(',')
                        .filter(|domain| !domain.is_empty())
                        .map(str::to_owned)
                        .collect(),
                }),
                None => None,
            },
        };
        given.finish()?;
        Ok(plan)
    }

    /// The plan for berth once the container ended.
    pub fn finish(&self, end: ContainerEnd, ran: Duration) -> FinishPlan {
        FinishPlan {
            root: self.root.clone(),
            id: self.id.clone(),
            end,
            ran,
            restart_delay: self.restart_delay,
        }
    }
}

impl FinishPlan {
    /// berth's arguments after [`FINISH_ENTRY`].
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Args::default();
        args.push("--root", &self.root);
        args.push("--id", &self.id);
        match self.end {
            ContainerEnd::Exited(code) => args.push("--exited", code.to_string()),
            ContainerEnd::Signaled(signal) => args.push("--signaled", signal.to_string()),
        }
        args.push("--ran-ms", self.ran.as_millis().to_string());
        args.push(
            "--restart-delay-ms",
            self.restart_delay.as_millis().to_string(),
        );
        args.0
    }

    pub fn parse(args: &[OsString]) -> anyhow::Result<Self> {
        let mut given = Given::parse(args)?;
        let end = match (given.take("--exited"), given.take("--signaled")) {
            (Some(code), None) => ContainerEnd::Exited(number(&code, "--exited")?),
            (None, Some(signal)) => ContainerEnd::Signaled(number(&signal, "--signaled")?),
            _ => bail!("give one of --exited and --signaled"),
        };
        let plan = FinishPlan {
            root: given.required("--root")?.into(),
            id: text(&given.required("--id")?, "--id")?.to_owned(),
            end,
            ran: Duration::from_millis(given.number("--ran-ms")?),
            restart_delay: Duration::from_millis(given.number("--restart-delay-ms")?),
        };
        given.finish()?;
        Ok(plan)
    }
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, flag: &str, value: impl AsRef<OsStr>) {
        self.0.push(flag.into());
        self.0.push(value.as_ref().to_owned());
    }
}

/// `--flag value` pairs, each flag at most once.
struct Given(Vec<(String, OsString)>);

impl Given {
    fn parse(args: &[OsString]) -> anyhow::Result<Self> {
        let mut pairs: Vec<(String, OsString)> = Vec::new();
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let flag = text(flag, "a flag")?;
            if !flag.starts_with("--") {
                bail!("unexpected argument {flag:?}");
            }
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            if pairs.iter().any(|(seen, _)| seen == flag) {
                bail!("{flag} given twice");
            }
            pairs.push((flag.to_owned(), value.clone()));
        }
        Ok(Given(pairs))
    }

    fn take(&mut self, flag: &str) -> Option<OsString> {
        let index = self.0.iter().position(|(seen, _)| seen == flag)?;
        Some(self.0.remove(index).1)
    }

    fn required(&mut self, flag: &str) -> anyhow::Result<OsString> {
        self.take(flag)
            .with_context(|| format!("{flag} is missing"))
    }

    fn number<T: std::str::FromStr>(&mut self, flag: &str) -> anyhow::Result<T> {
        number(&self.required(flag)?, flag)
    }

    /// Every flag was used.
    fn finish(self) -> anyhow::Result<()> {
        match self.0.first() {
            Some((flag, _)) => bail!("unknown flag {flag}"),
            None => Ok(()),
        }
    }
}

fn text<'a>(value: &'a OsStr, what: &str) -> anyhow::Result<&'a str> {
    value
        .to_str()
        .with_context(|| format!("{what}: {value:?} is not UTF-8"))
}

fn number<T: std::str::FromStr>(value: &OsStr, flag: &str) -> anyhow::Result<T> {
    text(value, flag)?
        .parse()
        .ok()
        .with_context(|| format!("{flag}: {value:?} is not a valid number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_plan(output: RelayOutput) -> RelayPlan {
        RelayPlan {
            pid: 4242,
            container_dir: "/var/lib/berth/containers/abc".into(),
            log: "/var/lib/berth/containers/abc/container.log".into(),
            log_limits: LogLimits {
                max_size: 1024,
                max_files: 3,
            },
            output,
            berth: "/usr/bin/berth".into(),
            root: "/var/lib/berth".into(),
            id: "abc".into(),
            restart_delay: Duration::from_millis(400),
            held: vec![9, 10],
            dns: None,
        }
    }

    #[test]
    fn relay_plans_survive_their_command_line() {
        for output in [
            RelayOutput::Terminal(5),
            RelayOutput::Pipes {
                stdout: 5,
                stderr: 6,
                stdin: None,
            },
            RelayOutput::Pipes {
                stdout: 5,
                stderr: 6,
                stdin: Some(7),
            },
        ] {
            let plan = relay_plan(output);
            assert_eq!(RelayPlan::parse(&plan.to_args()).unwrap(), plan);
        }
        let mut plan = relay_plan(RelayOutput::Terminal(5));
        for (upstreams, search_domains) in [
            (vec![], vec![]),
            (
                vec![
                    "10.98.0.53:53".parse().unwrap(),
                    "[fd00::35]:53".parse().unwrap(),
                ],
                vec!["corp.test".to_owned(), "lab.test".to_owned()],
            ),
        ] {
            plan.dns = Some(DnsHandoff {
                socket: 11,
                upstreams,
                search_domains,
            });
            assert_eq!(RelayPlan::parse(&plan.to_args()).unwrap(), plan);
        }
    }

    #[test]
    fn finish_plans_survive_their_command_line() {
        let relay = relay_plan(RelayOutput::Terminal(3));
        for end in [ContainerEnd::Exited(3), ContainerEnd::Signaled(9)] {
            let plan = relay.finish(end, Duration::from_millis(12_345));
            assert_eq!(FinishPlan::parse(&plan.to_args()).unwrap(), plan);
            assert_eq!(plan.restart_delay, Duration::from_millis(400));
        }
    }

    #[test]
    fn broken_command_lines_are_refused() {
        let args = |items: &[&str]| items.iter().map(OsString::from).collect::<Vec<_>>();
        let good = relay_plan(RelayOutput::Terminal(3)).to_args();
        let mut twice = good.clone();
        twice.extend(args(&["--pid", "1"]));
        let mut unknown = good.clone();
        unknown.extend(args(&["--bogus", "1"]));
        let mut dangling = good.clone();
        dangling.push("--stdin".into());
        for bad in [twice, unknown, dangling, good[2..].to_vec()] {
            assert!(RelayPlan::parse(&bad).is_err(), "{bad:?}");
        }
        let finish = args(&[
            "--root",
            "/r",
            "--id",
            "x",
            "--exited",
            "1",
            "--signaled",
            "9",
            "--ran-ms",
            "1",
            "--restart-delay-ms",
            "1",
        ]);
        assert!(FinishPlan::parse(&finish).is_err());
        let not_a_number = args(&[
            "--root",
            "/r",
            "--id",
            "x",
            "--exited",
            "one",
            "--ran-ms",
            "1",
            "--restart-delay-ms",
            "1",
        ]);
        assert!(FinishPlan::parse(&not_a_number).is_err());
    }

    #[test]
    fn ends_map_to_wait_statuses_and_back() {
        let pid = nix::unistd::Pid::from_raw(7);
        for end in [ContainerEnd::Exited(0), ContainerEnd::Signaled(15)] {
            assert_eq!(
                ContainerEnd::from_wait_status(end.wait_status(pid)),
                Some(end)
            );
        }
        assert_eq!(ContainerEnd::from_wait_status(WaitStatus::StillAlive), None);
    }
}

//! `berth logs`: print a container's output from its log, and follow it.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_state::{read_log, read_log_from, LogEntry, Stream, Timestamp};

use crate::args::LogsArgs;
use crate::container::find;
use crate::paths::Paths;
use crate::run::log_path;

pub fn logs(paths: &Paths, args: &LogsArgs) -> anyhow::Result<i32> {
    let tail = parse_tail(&args.tail)?;
    let now = Timestamp::now();
    let window = Window {
        since: args
            .since
            .as_deref()
            .map(|t| parse_time(t, now).with_context(|| format!("invalid --since {t:?}")))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time(t, now).with_context(|| format!("invalid --until {t:?}")))
            .transpose()?,
        timestamps: args.timestamps,
    };
    let store = paths.containers()?;
    let record = find(&store, &args.container)?;
    let path = log_path(&store, &record.id);
    let mut entries = read_log(&path, record.log_limits)?;
    // docker takes the tail first, then keeps what is in the time window.
    if let Some(n) = tail {
        entries.drain(..entries.len().saturating_sub(n));
    }
    print_entries(&window.keep(entries))?;
    if !args.follow || window.until.is_some_and(|until| until < now) {
        return Ok(0);
    }
    // Follow the live file from its current end. Rotation replaces it with
    // a shorter file, which shows as the end moving backwards.
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    loop {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size < offset {
            offset = 0;
        }
        let (new, next) = read_log_from(&path, offset)?;
        offset = next;
        print_entries(&window.keep(new.clone()))?;
        if window.until.is_some_and(|until| until < Timestamp::now()) {
            return Ok(0);
        }
        if new.is_empty() {
            let current = find(&store, &record.id);
            match current {
                Ok(r) if r.is_active() => std::thread::sleep(Duration::from_millis(50)),
                // Ended or removed: print what arrived meanwhile and stop.
                _ => {
                    let (rest, _) = read_log_from(&path, offset)?;
                    print_entries(&window.keep(rest))?;
                    return Ok(0);
                }
            }
        }
    }
}

/// Which lines to show, and how.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    timestamps: bool,
}

impl Window {
    /// The entries inside the window; with `-t`, each line led by its time
    /// as docker prints it (RFC 3339 with nine fraction digits).
    fn keep(&self, entries: Vec<LogEntry>) -> Vec<LogEntry> {
        entries
            .into_iter()
            .filter(|e| self.since.map_or(true, |since| e.time >= since))
            .filter(|e| self.until.map_or(true, |until| e.time <= until))
            .map(|mut e| {
                if self.timestamps {
                    e.log = format!("{} {}", e.time, e.log);
                }
                e
            })
            .collect()
    }
}

/// docker's `--since`/`--until` times (see [`crate::time_text::point_in_time`]).
fn parse_time(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    crate::time_text::point_in_time(text, now).ok_or_else(|| {
        anyhow::anyhow!("use RFC 3339 (2026-01-02T15:04:05Z), unix seconds, or a duration (10m)")
    })
}

fn parse_tail(text: &str) -> anyhow::Result<Option<usize>> {
    if text == "all" {
        return Ok(None);
    }
    match text.parse() {
        Ok(n) => Ok(Some(n)),
        Err(_) => bail!("invalid --tail {text:?}: give a number of lines or \"all\""),
    }
}

fn print_entries(entries: &[LogEntry]) -> anyhow::Result<()> {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for entry in entries {
        let result = match entry.stream {
            Stream::Stdout => out.write_all(entry.log.as_bytes()),
            Stream::Stderr => err.write_all(entry.log.as_bytes()),
        };
        if let Err(e) = result {
            // A closed pipe (e.g. `| head`) ends the command quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(e.into());
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_docker_forms() {
        let now = Timestamp::from_unix(1_795_296_655, 500);
        let at = |secs, nanos| Timestamp::from_unix(secs, nanos);
        let parse = |text: &str| parse_time(text, now).unwrap();
        assert_eq!(parse("10m"), at(1_795_296_655 - 600, 500));
        assert_eq!(parse("1h30m"), at(1_795_296_655 - 5400, 500));
        assert_eq!(parse("1700000000"), at(1_700_000_000, 0));
        assert_eq!(parse("1700000000.25"), at(1_700_000_000, 250_000_000));
        assert_eq!(parse("2026-11-21T21:30:55Z"), at(1_795_296_655, 0));
        assert_eq!(
            parse("2026-11-21T21:30:55.000000005Z"),
            at(1_795_296_655, 5)
        );
        assert_eq!(parse("2026-11-21T22:30:55+01:00"), at(1_795_296_655, 0));
        assert_eq!(parse("2026-11-21T21:30"), at(1_795_296_600, 0));
        assert_eq!(parse("2026-11-21"), at(1_795_219_200, 0));
        for bad in [
            "yesterday",
            "10x",
            "2026-13-01",
            "2026-11-21T25:00",
            "",
            "-5m",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn window_keeps_lines_in_time_and_stamps_them() {
        let entry = |secs, log: &str| LogEntry {
            stream: Stream::Stdout,
            time: Timestamp::from_unix(secs, 0),
            log: log.to_owned(),
        };
        let window = Window {
            since: Some(Timestamp::from_unix(20, 0)),
            until: Some(Timestamp::from_unix(30, 0)),
            timestamps: true,
        };
        let kept = window.keep(vec![entry(10, "a\n"), entry(20, "b\n"), entry(31, "c\n")]);
        let lines: Vec<&str> = kept.iter().map(|e| e.log.as_str()).collect();
        assert_eq!(lines, ["1970-01-01T00:00:20.000000000Z b\n"]);
    }

    #[test]
    fn tail_values() {
        assert_eq!(parse_tail("all").unwrap(), None);
        assert_eq!(parse_tail("3").unwrap(), Some(3));
        assert!(parse_tail("-1").is_err());
        assert!(parse_tail("x").is_err());
    }
}

//! `berth logs`: print a container's output from its log, and follow it.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use berth_state::{read_log, read_log_from, LogEntry, Stream};

use crate::args::LogsArgs;
use crate::container::find;
use crate::paths::Paths;
use crate::run::log_path;

pub fn logs(paths: &Paths, args: &LogsArgs) -> anyhow::Result<i32> {
    let tail = parse_tail(&args.tail)?;
    let store = paths.containers()?;
    let record = find(&store, &args.container)?;
    let path = log_path(&store, &record.id);
    let mut entries = read_log(&path, record.log_limits)?;
    if let Some(n) = tail {
        entries.drain(..entries.len().saturating_sub(n));
    }
    print_entries(&entries)?;
    if !args.follow {
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
        print_entries(&new)?;
        if new.is_empty() {
            let current = find(&store, &record.id);
            match current {
                Ok(r) if r.is_active() => std::thread::sleep(Duration::from_millis(50)),
                // Ended or removed: print what arrived meanwhile and stop.
                _ => {
                    let (rest, _) = read_log_from(&path, offset)?;
                    print_entries(&rest)?;
                    return Ok(0);
                }
            }
        }
    }
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
    fn tail_values() {
        assert_eq!(parse_tail("all").unwrap(), None);
        assert_eq!(parse_tail("3").unwrap(), Some(3));
        assert!(parse_tail("-1").is_err());
        assert!(parse_tail("x").is_err());
    }
}

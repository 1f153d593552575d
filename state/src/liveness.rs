use std::path::Path;

/// Start time of process `pid` in clock ticks since boot (field 22 of
/// `<proc_root>/PID/stat`), or `None` if there is no such process.
/// Together with the PID it names one process for good: a PID can be
/// reused, a (PID, start time) pair cannot.
pub fn process_start_time(proc_root: &Path, pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after it start past the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so starttime (22) is the 20th.
    let start = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let state = after_name.split_whitespace().next()?;
    // A zombie has exited already: its record should say so.
    (state != "Z" && state != "X").then_some(start)
}

/// Whether `pid` still names the process that started at `start_time`.
pub fn is_same_process(proc_root: &Path, pid: i32, start_time: Option<u64>) -> bool {
    match (process_start_time(proc_root, pid), start_time) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_start_time_past_a_tricky_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("42")).unwrap();
        let fields: Vec<String> = (3..=30)
            .map(|i| if i == 3 { "S".into() } else { i.to_string() })
            .collect();
        std::fs::write(
            dir.path().join("42/stat"),
            format!("42 (a) b) c) {}", fields.join(" ")),
        )
        .unwrap();
        assert_eq!(process_start_time(dir.path(), 42), Some(22));
        assert!(is_same_process(dir.path(), 42, Some(22)));
        assert!(!is_same_process(dir.path(), 42, Some(23)));
        assert!(!is_same_process(dir.path(), 43, Some(22)));
    }

    #[test]
    fn sees_this_process() {
        let me = std::process::id() as i32;
        let start = process_start_time(Path::new("/proc"), me);
        assert!(start.is_some());
        assert!(is_same_process(Path::new("/proc"), me, start));
    }
}

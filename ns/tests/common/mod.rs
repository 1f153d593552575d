//! What every privileged test here needs: run a closure in a forked child
//! (capabilities, ids, limits and keyrings are per process, so the test
//! harness keeps its own) and read /proc/PID/status fields.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, geteuid, pipe, ForkResult};

/// Whether to skip a test that needs root (saying why).
pub fn skip_unless_root() -> bool {
    if !geteuid().is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    false
}

/// Run `body` in a forked child; panic with its message if it fails or
/// panics. The child is single-threaded, so it may `berth_ns::spawn`.
pub fn in_child(body: impl FnOnce() -> Result<(), String>) {
    let (read_end, write_end) = pipe().unwrap();
    // SAFETY: the child only runs `body` and then `_exit`s, never returning
    // into the test harness; glibc makes malloc usable after fork even
    // though the harness is multi-threaded.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(read_end);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
                .unwrap_or_else(|payload| Err(panic_message(payload.as_ref())));
            let code = match result {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = File::from(write_end).write_all(msg.as_bytes());
                    1
                }
            };
            // SAFETY: _exit skips the destructors that belong to the parent.
            unsafe { libc::_exit(code) };
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let status = waitpid(child, None).unwrap();
            // Read what the child wrote without waiting for end-of-file:
            // a child forked meanwhile by another test's thread may hold a
            // copy of the write end. Messages are short (a pipe holds 64 KiB).
            let mut reader = File::from(read_end);
            let flags = OFlag::from_bits_truncate(fcntl(&reader, FcntlArg::F_GETFL).unwrap());
            fcntl(&reader, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
            let mut bytes = Vec::new();
            let _ = reader.read_to_end(&mut bytes);
            let msg = String::from_utf8_lossy(&bytes);
            assert_eq!(status, WaitStatus::Exited(child, 0), "child failed: {msg}");
        }
    }
}

/// What a panic said (the harness's output capture does not reach a
/// forked child).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    format!("panicked: {text}")
}

/// The text of /proc/self/status.
pub fn own_status() -> Result<String, String> {
    std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))
}

/// /proc/self/status as a program exec'd from here sees it (its own).
pub fn status_after_exec() -> Result<String, String> {
    let out = std::process::Command::new("/bin/cat")
        .arg("/proc/self/status")
        .output()
        .map_err(|e| format!("cat: {e}"))?;
    if !out.status.success() {
        return Err(format!("cat: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of `key:` in a /proc/PID/status text.
pub fn field<'a>(status: &'a str, key: &str) -> Result<&'a str, String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .ok_or_else(|| format!("no {key} in:\n{status}"))
}

/// A capability mask field (`CapEff`) of a /proc/PID/status text.
pub fn mask(status: &str, key: &str) -> Result<u64, String> {
    let text = field(status, key)?;
    u64::from_str_radix(text, 16).map_err(|e| format!("{key}: {text:?}: {e}"))
}

/// Check that each `(key, mask)` is what the status text says.
pub fn expect_masks(status: &str, expected: &[(&str, u64)], what: &str) -> Result<(), String> {
    for &(key, want) in expected {
        let got = mask(status, key)?;
        if got != want {
            return Err(format!("{what}: {key} is {got:016x}, expected {want:016x}"));
        }
    }
    Ok(())
}

/// Check that a field reads `expected`, whitespace-separated values
/// compared one by one (`Uid: 1000 1000 1000 1000`, tab-separated).
pub fn expect_field(status: &str, key: &str, expected: &str, what: &str) -> Result<(), String> {
    let got: Vec<&str> = field(status, key)?.split_whitespace().collect();
    let want: Vec<&str> = expected.split_whitespace().collect();
    if got != want {
        return Err(format!("{what}: {key} is {got:?}, expected {want:?}"));
    }
    Ok(())
}

//! Privileged test on the running host: a container cgroup on a named v1
//! hierarchy (`name=systemd`). A forked child that moves itself in and a
//! process moved in by PID both show the new cgroup on that line of their
//! /proc/PID/cgroup; remove kills them and leaves nothing. Skips (saying
//! why) when not root or when the host has no named hierarchy.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use berth_cgroup::{Cgroup, Hierarchies, Hierarchy};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

fn named_hierarchy(hierarchies: &Hierarchies) -> Option<&Hierarchy> {
    hierarchies
        .hierarchies()
        .iter()
        .find(|h| h.name().is_some())
}

/// Kills the children and removes the cgroup and its parent on every
/// hierarchy, whatever happens to the test.
struct Guard {
    cgroup: Cgroup,
    /// The test's parent cgroup on each hierarchy.
    parents: Vec<PathBuf>,
    forked: Vec<Pid>,
    spawned: Vec<Child>,
}

impl Guard {
    fn clean_up(&mut self) -> Vec<PathBuf> {
        let _ = self.cgroup.remove();
        for pid in self.forked.drain(..) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        for child in &mut self.spawned {
            let _ = child.kill();
            let _ = child.wait();
        }
        for parent in &self.parents {
            let _ = fs::remove_dir(parent);
        }
        self.cgroup
            .dirs()
            .iter()
            .map(|d| d.path().to_owned())
            .chain(self.parents.iter().cloned())
            .filter(|path| path.exists())
            .collect()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// Fork a child that writes "0" to each file (moving itself into the
/// cgroup, as `join_self` does) and then waits to be killed. Only
/// async-signal-safe calls run in the child: the test binary has threads.
fn fork_self_attaching(files: &[PathBuf]) -> Pid {
    let files: Vec<CString> = files
        .iter()
        .map(|f| CString::new(f.as_os_str().as_bytes()).unwrap())
        .collect();
    // SAFETY: the child only calls open, write, close, pause and _exit
    // (async-signal-safe) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        for file in &files {
            // SAFETY: `file` is a valid NUL-terminated path; the written
            // buffer is a 1-byte static string; the fd is ours to close.
            unsafe {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(1);
                }
                libc::close(fd);
            }
        }
        loop {
            // SAFETY: pause has no preconditions; the parent kills us.
            unsafe { libc::pause() };
        }
    }
    Pid::from_raw(pid)
}

/// The cgroup path on the line of hierarchy `name` in /proc/PID/cgroup.
fn named_line(pid: libc::pid_t, name: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let field = format!("name={name}");
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == field)
            .then(|| path.to_owned())
    })
}

/// Wait (at most 5 s) until the forked child has moved itself.
fn wait_for_line(pid: libc::pid_t, name: &str, expected: &str) -> Option<String> {
    let mut seen = None;
    for _ in 0..500 {
        seen = named_line(pid, name);
        if seen.as_deref() == Some(expected) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    seen
}

#[test]
fn named_hierarchy_holds_the_container_processes() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let hierarchies = Hierarchies::from_host().unwrap();
    let Some(named) = named_hierarchy(&hierarchies) else {
        eprintln!("skipped: no named v1 cgroup hierarchy (name=...) on this host");
        return;
    };
    let name = named.name().unwrap().to_owned();
    let own = named.own_cgroup().unwrap().to_owned();
    let relative = format!("cgroup-test-named-{}/ctr", std::process::id());
    let expected = own.join(&relative);
    let expected = expected.to_str().unwrap();

    let cgroup = Cgroup::create_at(&hierarchies, &relative).unwrap();
    let mut guard = Guard {
        parents: cgroup
            .dirs()
            .iter()
            .map(|d| d.path().parent().unwrap().to_owned())
            .collect(),
        cgroup,
        forked: Vec::new(),
        spawned: Vec::new(),
    };
    let dir = guard
        .cgroup
        .dirs()
        .iter()
        .find(|d| d.name() == Some(name.as_str()))
        .expect("a directory on the named hierarchy")
        .path()
        .to_owned();
    assert_eq!(dir, named.dir_of(Path::new(expected)).unwrap());
    assert!(dir.is_dir(), "{}", dir.display());

    // A child moving itself in through the self-attach files.
    let forked = fork_self_attaching(&guard.cgroup.self_attach_files());
    guard.forked.push(forked);
    assert_eq!(
        wait_for_line(forked.as_raw(), &name, expected).as_deref(),
        Some(expected),
        "forked child {forked} on the name={name} line"
    );
    // A process moved in by PID.
    let spawned = Command::new("sleep").arg("30").spawn().unwrap();
    let spawned_pid = spawned.id() as libc::pid_t;
    guard.spawned.push(spawned);
    guard.cgroup.add_task(spawned_pid).unwrap();
    assert_eq!(named_line(spawned_pid, &name).as_deref(), Some(expected));
    let in_named = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    for pid in [forked.as_raw(), spawned_pid] {
        assert!(
            in_named.lines().any(|l| l == pid.to_string()),
            "{pid} not in {}: {in_named}",
            dir.display()
        );
        assert!(guard.cgroup.processes().unwrap().contains(&pid));
    }

    // remove kills both and removes every directory, the named one too.
    guard.cgroup.remove().unwrap();
    let status = waitpid(forked, None).unwrap();
    guard.forked.clear();
    assert!(
        matches!(
            status,
            nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
        ),
        "{status:?}"
    );
    let status = guard.spawned[0].wait().unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(!dir.exists(), "{} left", dir.display());
    let left = guard.clean_up();
    assert!(left.is_empty(), "left behind: {left:?}");
}

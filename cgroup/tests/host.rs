//! Privileged test on the running host: a real cgroup below the test's own,
//! with a real process in it. Skips (saying why) when not root.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use std::time::{Duration, Instant};

use berth_cgroup::{
    parse_cpu_list, parse_memory_size, Cgroup, Controller, CpuQuota, Hierarchies, Resources,
    Version,
};

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root");
    }
    if !Path::new("/sys/fs/cgroup").is_dir() {
        return Some("no /sys/fs/cgroup");
    }
    None
}

/// The tests share the `berth` parent cgroups and remove them at the end:
/// one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Kills the children and removes the cgroup whatever happens to the test,
/// and the shared `berth` parent too when nobody else uses it (it would
/// otherwise stay below the cgroup of whatever ran the tests).
struct Guard {
    cgroup: Cgroup,
    children: Vec<Child>,
    _serial: MutexGuard<'static, ()>,
}

impl Guard {
    fn new(cgroup: Cgroup) -> Self {
        Self {
            _serial: SERIAL.lock().unwrap_or_else(|e| e.into_inner()),
            cgroup,
            children: Vec::new(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.cgroup.remove();
        for dir in self.cgroup.dirs() {
            let _ = fs::remove_dir(dir.path());
            // Fails (EBUSY) while other containers' cgroups are in it.
            let _ = fs::remove_dir(dir.path().parent().unwrap());
        }
    }
}

/// This host's hierarchies; with `v1_only`, as if no cgroup2 were mounted
/// (so that removal has to freeze and kill instead of using cgroup.kill).
fn host_hierarchies(v1_only: bool) -> Hierarchies {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let mountinfo: String = mountinfo
        .lines()
        .filter(|l| !(v1_only && l.contains(" - cgroup2 ")))
        .map(|l| format!("{l}\n"))
        .collect();
    Hierarchies::discover(&mountinfo, &own, Path::new("/")).unwrap()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn unique_id(name: &str) -> String {
    format!("cgroup-test-{name}-{}", std::process::id())
}

#[test]
fn limits_freeze_stats_and_remove_on_this_host() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let hierarchies = Hierarchies::from_host().unwrap();
    eprintln!("layout: {:?}", hierarchies.layout());
    // A CPU this machine lacks is refused before anything is created.
    let err = hierarchies
        .check(&Resources {
            cpuset_cpus: Some(parse_cpu_list("4095").unwrap()),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("CPU 4095 is not available"),
        "{err}"
    );
    let id = unique_id("limits");
    let mut guard = Guard::new(Cgroup::create(&hierarchies, &id, None).unwrap());
    let cgroup = guard.cgroup.clone();
    let has = |c| hierarchies.placement(c).is_some();
    let resources = Resources {
        memory_limit: has(Controller::Memory).then(|| parse_memory_size("64m").unwrap()),
        cpu_shares: has(Controller::Cpu).then_some(512),
        cpu_quota: has(Controller::Cpu).then(|| CpuQuota::from_cpus(0.5).unwrap()),
        cpuset_cpus: has(Controller::Cpuset).then(|| parse_cpu_list("0").unwrap()),
        cpuset_mems: None,
        pids_limit: has(Controller::Pids).then_some(20),
        ..Resources::default()
    };
    cgroup.apply(&resources).unwrap();

    let child = Command::new("sleep").arg("5").spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    guard.children.push(child);
    let started = Instant::now();
    cgroup.add_task(pid).unwrap();
    eprintln!(
        "add_task on {} hierarchies took {:?}",
        cgroup.dirs().len(),
        started.elapsed()
    );

    // /proc/PID/cgroup names the new cgroup on every hierarchy we used.
    let proc_cgroup = read(Path::new(&format!("/proc/{pid}/cgroup")));
    for dir in cgroup.dirs() {
        let controller = dir.controllers().first().map(|c| c.name()).unwrap_or("");
        let line = proc_cgroup
            .lines()
            .find(|l| {
                let fields: Vec<&str> = l.splitn(3, ':').collect();
                match dir.version() {
                    Version::V2 => fields[0] == "0" && fields[1].is_empty(),
                    Version::V1 => fields[1].split(',').any(|c| c == controller),
                }
            })
            .unwrap_or_else(|| panic!("no line for {controller} in {proc_cgroup}"));
        assert!(line.ends_with(&format!("/berth/{id}")), "{line}");
    }
    assert_eq!(cgroup.processes().unwrap(), [pid]);

    if let Some(memory) = cgroup.path_of(Controller::Memory) {
        let file = if memory.join("memory.max").exists() {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        assert_eq!(read(&memory.join(file)), "67108864");
        if memory.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read(&memory.join("memory.memsw.limit_in_bytes")),
                "67108864"
            );
        }
    }
    if let Some(pids) = cgroup.path_of(Controller::Pids) {
        assert_eq!(read(&pids.join("pids.max")), "20");
    }
    if let Some(cpuset) = cgroup.path_of(Controller::Cpuset) {
        assert_eq!(read(&cpuset.join("cpuset.cpus")), "0");
        let status = read(Path::new(&format!("/proc/{pid}/status")));
        assert!(
            status.lines().any(|l| l == "Cpus_allowed_list:\t0"),
            "{status}"
        );
    }
    if let Some(cpu) = cgroup.path_of(Controller::Cpu) {
        if cpu.join("cpu.shares").exists() {
            assert_eq!(read(&cpu.join("cpu.shares")), "512");
            assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
        } else {
            assert_eq!(read(&cpu.join("cpu.weight")), "20");
            assert_eq!(read(&cpu.join("cpu.max")), "50000 100000");
        }
    }

    cgroup.freeze().unwrap();
    assert!(cgroup.is_frozen().unwrap());
    if let Some(freezer) = cgroup.path_of(Controller::Freezer) {
        if freezer.join("freezer.state").exists() {
            assert_eq!(read(&freezer.join("freezer.state")), "FROZEN");
        }
    }
    cgroup.thaw().unwrap();
    assert!(!cgroup.is_frozen().unwrap());

    let stats = cgroup.stats().unwrap();
    eprintln!("stats: {stats:?}");
    if has(Controller::Pids) {
        assert_eq!(stats.pids_current, Some(1));
    }
    if has(Controller::Memory) {
        assert_eq!(stats.memory_limit, Some(64 << 20));
        assert!(stats.memory_usage.is_some());
        assert_eq!(cgroup.oom_kill_count().unwrap(), 0);
    }
    assert!(stats.cpu_usage_ns.is_some());

    // remove() kills the child (left unreaped: a zombie must not block it).
    cgroup.remove().unwrap();
    for dir in cgroup.dirs() {
        assert!(!dir.path().exists(), "{} is left", dir.path().display());
    }
    let status = guard.children[0].wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn a_process_over_the_memory_limit_is_oom_killed() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let hierarchies = Hierarchies::from_host().unwrap();
    if hierarchies.placement(Controller::Memory).is_none() {
        eprintln!("skipping: no memory controller");
        return;
    }
    let id = unique_id("oom");
    let mut guard = Guard::new(Cgroup::create(&hierarchies, &id, None).unwrap());
    let cgroup = guard.cgroup.clone();
    cgroup
        .apply(&Resources {
            memory_limit: Some(16 << 20),
            ..Resources::default()
        })
        .unwrap();
    // `tail` keeps a whole newline-free input in memory. The shell waits
    // for a line on stdin so that it is in the cgroup before it allocates.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read go; head -c 100000000 /dev/zero | tail >/dev/null",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let pid = child.id() as libc::pid_t;
    guard.children.push(child);
    cgroup.add_task(pid).unwrap();
    writeln!(stdin, "go").unwrap();
    drop(stdin);
    let status = guard.children[0].wait().unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(cgroup.oom_kill_count().unwrap() >= 1);
    cgroup.remove().unwrap();
    for dir in cgroup.dirs() {
        assert!(!dir.path().exists(), "{} is left", dir.path().display());
    }
}

#[test]
fn remove_kills_a_process_tree() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    kill_tree(&Hierarchies::from_host().unwrap(), "tree");
}

#[test]
fn remove_kills_a_process_tree_without_cgroup_kill() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let hierarchies = host_hierarchies(true);
    if hierarchies.placement(Controller::Freezer) != Some(Version::V1) {
        eprintln!("skipping: no cgroup v1 freezer");
        return;
    }
    kill_tree(&hierarchies, "tree-v1");
}

fn kill_tree(hierarchies: &Hierarchies, name: &str) {
    let id = unique_id(name);
    let mut guard = Guard::new(Cgroup::create(hierarchies, &id, None).unwrap());
    let cgroup = guard.cgroup.clone();
    let mut child = Command::new("sh")
        .args(["-c", "read go; sleep 30 & sleep 30 & sleep 30"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let pid = child.id() as libc::pid_t;
    guard.children.push(child);
    cgroup.add_task(pid).unwrap();
    writeln!(stdin, "go").unwrap();
    // Wait for the shell's three children.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cgroup.processes().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "{:?}", cgroup.processes());
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    cgroup.remove().unwrap();
    eprintln!("{name}: remove took {:?}", started.elapsed());
    for dir in cgroup.dirs() {
        assert!(!dir.path().exists(), "{} is left", dir.path().display());
    }
}

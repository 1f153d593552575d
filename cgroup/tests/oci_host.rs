//! Privileged test on the running host: a cgroup placed by a relative path
//! below the test's own cgroup, the OCI resources the host has controllers
//! for, a process listed, signalled and killed through the cgroup, and
//! nothing left afterwards. Skips (saying why) when not root.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_cgroup::{
    BlockIo, Cgroup, Controller, CpuQuota, Hierarchies, Resources, Signal, SwapLimit, Version,
};

/// One test at a time: they share nothing on disk, but freezing and
/// killing are easier to read alone.
static SERIAL: Mutex<()> = Mutex::new(());

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root");
    }
    if !Path::new("/sys/fs/cgroup").is_dir() {
        return Some("no /sys/fs/cgroup");
    }
    None
}

/// Kills the children and removes the cgroup and the test's parent cgroup
/// on every hierarchy, whatever happens to the test.
struct Guard {
    cgroup: Cgroup,
    /// `<own cgroup>/<parent>` on each hierarchy.
    parents: Vec<PathBuf>,
    children: Vec<Child>,
    _serial: MutexGuard<'static, ()>,
}

impl Guard {
    fn new(cgroup: Cgroup) -> Self {
        let parents = cgroup
            .dirs()
            .iter()
            .map(|d| d.path().parent().unwrap().to_owned())
            .collect();
        Self {
            _serial: SERIAL.lock().unwrap_or_else(|e| e.into_inner()),
            cgroup,
            parents,
            children: Vec::new(),
        }
    }

    fn spawn_sleep(&mut self) -> libc::pid_t {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        self.children.push(child);
        self.cgroup.add_task(pid).unwrap();
        pid
    }

    /// Remove everything and say what could not be removed.
    fn clean_up(&mut self) -> Vec<PathBuf> {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.cgroup.remove();
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

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The test cgroup: `<own cgroup>/cgroup-test-<name>-<pid>/ctr`.
fn place(hierarchies: &Hierarchies, name: &str) -> Guard {
    let path = format!("cgroup-test-{name}-{}/ctr", std::process::id());
    let guard = Guard::new(Cgroup::create_at(hierarchies, &path).unwrap());
    for dir in guard.cgroup.dirs() {
        let hierarchy = hierarchies
            .hierarchies()
            .iter()
            .find(|h| dir.path().starts_with(h.mount_point()))
            .unwrap();
        let own = hierarchy.dir_of(hierarchy.own_cgroup().unwrap()).unwrap();
        assert_eq!(dir.path(), own.join(&path), "{:?}", dir.controllers());
        assert!(dir.path().is_dir());
    }
    guard
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "child {} still runs", child.id());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn oci_resources_on_a_cgroup_placed_by_path() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let hierarchies = Hierarchies::from_host().unwrap();
    eprintln!("layout: {}", hierarchies.layout());
    let mut guard = place(&hierarchies, "oci");
    let cgroup = guard.cgroup.clone();
    let has = |c| hierarchies.placement(c).is_some();

    if let Some(memory) = cgroup.path_of(Controller::Memory) {
        let v1 = hierarchies.placement(Controller::Memory) == Some(Version::V1);
        let swap_file = if v1 {
            "memory.memsw.limit_in_bytes"
        } else {
            "memory.swap.max"
        };
        let limit_file = if v1 {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        };
        let swap_accounted = memory.join(swap_file).exists();
        // Set, lower and raise memory and swap: on v1 the kernel refuses a
        // memory limit above the memory+swap limit, so a wrong write order
        // fails here.
        for (limit_mb, total_mb) in [(64u64, 96u64), (32, 32), (128, 256)] {
            let resources = Resources {
                memory_limit: Some(limit_mb << 20),
                memory_swap: swap_accounted.then_some(SwapLimit::Total(total_mb << 20)),
                memory_reservation: Some(16 << 20),
                memory_swappiness: Some(10),
                ..Resources::default()
            };
            hierarchies.check(&resources).unwrap();
            cgroup.apply(&resources).unwrap();
            assert_eq!(read(&memory.join(limit_file)), (limit_mb << 20).to_string());
            if swap_accounted {
                let expected = if v1 { total_mb } else { total_mb - limit_mb };
                assert_eq!(read(&memory.join(swap_file)), (expected << 20).to_string());
            }
        }
        if v1 {
            assert_eq!(read(&memory.join("memory.soft_limit_in_bytes")), "16777216");
            assert_eq!(read(&memory.join("memory.swappiness")), "10");
            cgroup
                .apply(&Resources {
                    oom_kill_disable: Some(true),
                    ..Resources::default()
                })
                .unwrap();
            assert!(read(&memory.join("memory.oom_control")).contains("oom_kill_disable 1"));
        } else {
            assert_eq!(read(&memory.join("memory.low")), "16777216");
        }
        if swap_accounted {
            cgroup
                .apply(&Resources {
                    memory_swap: Some(SwapLimit::Unlimited),
                    ..Resources::default()
                })
                .unwrap();
            let expected = if v1 { "9223372036854771712" } else { "max" };
            assert_eq!(read(&memory.join(swap_file)), expected);
        } else {
            eprintln!("no swap accounting: swap limits not tried");
        }
    }

    if let Some(pids) = cgroup.path_of(Controller::Pids) {
        cgroup
            .apply(&Resources {
                pids_limit: Some(20),
                ..Resources::default()
            })
            .unwrap();
        assert_eq!(read(&pids.join("pids.max")), "20");
    }

    if let Some(cpu) = cgroup.path_of(Controller::Cpu) {
        // A period other than the default 100 ms.
        cgroup
            .apply(&Resources {
                cpu_quota: Some(CpuQuota {
                    quota_us: 50_000,
                    period_us: 250_000,
                }),
                ..Resources::default()
            })
            .unwrap();
        if cpu.join("cpu.cfs_period_us").exists() {
            assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "250000");
            assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
        } else {
            assert_eq!(read(&cpu.join("cpu.max")), "50000 250000");
        }
        if cpu.join("cpu.idle").exists() {
            cgroup
                .apply(&Resources {
                    cpu_idle: Some(true),
                    ..Resources::default()
                })
                .unwrap();
            assert_eq!(read(&cpu.join("cpu.idle")), "1");
        }
        if cpu.join("cpu.rt_period_us").exists() {
            // No real-time time of its own (the parent has none to give),
            // but its own period.
            cgroup
                .apply(&Resources {
                    cpu_rt_runtime_us: Some(0),
                    cpu_rt_period_us: Some(500_000),
                    ..Resources::default()
                })
                .unwrap();
            assert_eq!(read(&cpu.join("cpu.rt_period_us")), "500000");
            assert_eq!(read(&cpu.join("cpu.rt_runtime_us")), "0");
        }
    }

    match cgroup.path_of(Controller::Blkio) {
        Some(blkio) => {
            let weight_file = [
                "blkio.weight",
                "blkio.bfq.weight",
                "io.bfq.weight",
                "io.weight",
            ]
            .into_iter()
            .find(|name| blkio.join(name).exists());
            match weight_file {
                Some(name) => {
                    cgroup
                        .apply(&Resources {
                            block_io: Some(BlockIo {
                                weight: Some(300),
                                ..BlockIo::default()
                            }),
                            ..Resources::default()
                        })
                        .unwrap();
                    let expected = if name == "io.weight" { "2930" } else { "300" };
                    // io.weight and io.bfq.weight show "default N".
                    let shown = read(&blkio.join(name));
                    assert!(shown.ends_with(expected), "{name}: {shown}");
                }
                None => eprintln!("no block I/O weight file: weights not tried"),
            }
        }
        None if has(Controller::Blkio) => panic!("blkio placed but no directory"),
        None => eprintln!("no blkio/io controller: block I/O not tried"),
    }

    // A process in it: listed, signalled through the cgroup while frozen
    // (the signal waits for the thaw; the cgroup stays frozen), killed.
    let pid = guard.spawn_sleep();
    assert_eq!(cgroup.processes().unwrap(), [pid]);
    let stats = cgroup.stats().unwrap();
    eprintln!("stats: {stats:?}");
    if has(Controller::Pids) {
        assert_eq!((stats.pids_current, stats.pids_limit), (Some(1), Some(20)));
    }
    if has(Controller::Memory) {
        assert_eq!(stats.memory_limit, Some(128 << 20));
        assert!(stats.memory_usage.is_some());
        if hierarchies.placement(Controller::Memory) == Some(Version::V1) {
            assert!(stats.memory_max_usage.is_some());
        }
    }
    assert!(stats.cpu_usage_ns.is_some());
    if has(Controller::Freezer) {
        cgroup.freeze().unwrap();
        cgroup.kill_all(Signal::SIGTERM).unwrap();
        assert!(
            cgroup.is_frozen().unwrap(),
            "kill_all thawed a paused cgroup"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert!(guard.children[0].try_wait().unwrap().is_none());
        cgroup.thaw().unwrap();
    } else {
        cgroup.kill_all(Signal::SIGTERM).unwrap();
    }
    assert_eq!(
        wait_exit(&mut guard.children[0]).signal(),
        Some(libc::SIGTERM)
    );
    let pid = guard.spawn_sleep();
    assert_eq!(cgroup.processes().unwrap(), [pid]);
    cgroup.kill_all(Signal::SIGKILL).unwrap();
    assert_eq!(
        wait_exit(&mut guard.children[1]).signal(),
        Some(libc::SIGKILL)
    );

    let left = guard.clean_up();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn sigkill_reaches_a_paused_cgroup_without_cgroup_kill() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    // This host's hierarchies as if no cgroup2 were mounted, so that
    // kill_all has to signal each process itself.
    let mountinfo: String = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| !l.contains(" - cgroup2 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let Ok(hierarchies) = Hierarchies::discover(&mountinfo, &own, Path::new("/")) else {
        eprintln!("skipping: no cgroup v1 hierarchy");
        return;
    };
    if hierarchies.placement(Controller::Freezer) != Some(Version::V1) {
        eprintln!("skipping: no cgroup v1 freezer");
        return;
    }
    let mut guard = place(&hierarchies, "paused-kill");
    let cgroup = guard.cgroup.clone();
    guard.spawn_sleep();
    cgroup.freeze().unwrap();
    // A frozen v1 task dies only once thawed: kill_all thaws after SIGKILL.
    cgroup.kill_all(Signal::SIGKILL).unwrap();
    assert_eq!(
        wait_exit(&mut guard.children[0]).signal(),
        Some(libc::SIGKILL)
    );
    assert!(!cgroup.is_frozen().unwrap());
    let left = guard.clean_up();
    assert!(left.is_empty(), "left behind: {left:?}");
}

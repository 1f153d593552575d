//! Where a container's processes are in the cgroup hierarchies: its init
//! and every `exec`'d process sit in the container's cgroup on every
//! hierarchy the host has (cgroup2 included: there they are born in it,
//! clone3 with CLONE_INTO_CGROUP, and never migrate), with and without a
//! user namespace. On whichever cgroup layout the host has.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use berth_e2e::{cgroup_dirs, cgroup_layout, require_root, wait_until, Berth};

/// The PIDs in `dir`'s `cgroup.procs`.
fn procs(dir: &std::path::Path) -> BTreeSet<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The container's cgroup directories (asserted to be there) and its
/// init's PID.
fn cgroups_and_pid(berth: &Berth, name: &str) -> (Vec<PathBuf>, i32) {
    let record = berth.inspect(name);
    let dirs = cgroup_dirs(&record);
    assert!(
        !dirs.is_empty(),
        "no cgroup dirs in the record:\n{record:#}"
    );
    let pid = berth
        .run_ok(["inspect", "-f", "{{.State.Pid}}", name])
        .trim()
        .parse()
        .expect("a PID");
    (dirs, pid)
}

/// Every directory holds exactly `expected`; says which does not.
fn misplaced(dirs: &[PathBuf], expected: &BTreeSet<i32>) -> Vec<String> {
    dirs.iter()
        .filter_map(|dir| {
            let found = procs(dir);
            (found != *expected).then(|| format!("{}: {found:?}", dir.display()))
        })
        .collect()
}

fn check_init_and_exec_placement(extra_run_args: &[&str]) {
    eprintln!("cgroup layout: {:?}", cgroup_layout());
    let berth = Berth::new();
    let mut args = vec![
        "run", "-d", "--name", "placed", "--net", "none", "--pull", "never",
    ];
    args.extend_from_slice(extra_run_args);
    args.extend(["busybox", "sleep", "60"]);
    berth.run_ok(args);
    let (dirs, init) = cgroups_and_pid(&berth, "placed");
    let only_init = BTreeSet::from([init]);
    let wrong = misplaced(&dirs, &only_init);
    assert!(
        wrong.is_empty(),
        "the init {init} is not (only) in: {wrong:?}"
    );

    // An exec'd process joins the same cgroup on every hierarchy.
    let mut exec = berth.spawn(["exec", "placed", "sleep", "30"]);
    let two = || dirs.iter().all(|dir| procs(dir).len() == 2);
    assert!(
        wait_until(Duration::from_secs(10), two),
        "the exec'd process did not show up everywhere: {:?}",
        dirs.iter().map(|d| (d, procs(d))).collect::<Vec<_>>()
    );
    let both = procs(&dirs[0]);
    assert!(both.contains(&init), "{both:?} lacks the init {init}");
    let wrong = misplaced(&dirs, &both);
    assert!(wrong.is_empty(), "expected {both:?} everywhere: {wrong:?}");

    berth.run_ok(["rm", "-f", "placed"]);
    let _ = exec.wait(Duration::from_secs(10));
    berth.assert_clean();
}

#[test]
fn init_and_exec_are_in_the_containers_cgroup_on_every_hierarchy() {
    require_root!();
    check_init_and_exec_placement(&["-m", "64m"]);
}

#[test]
fn in_a_user_namespace_init_and_exec_are_in_the_containers_cgroup_everywhere() {
    require_root!();
    check_init_and_exec_placement(&["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"]);
}

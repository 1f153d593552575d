//! Children in new user namespaces whose id maps the parent writes, and
//! joining namespaces by path. Needs root; skips otherwise.

mod common;

use std::path::{Path, PathBuf};

use berth_ns::capabilities::{apply_sets, current_bounding_set, CapabilitySets};
use berth_ns::process::{set_user, write_id_maps, IdMap};
use berth_ns::NsError;
use berth_ns::{join_paths, spawn_with_channel, Capability, Channel, Namespace};
use common::{expect_field, in_child, skip_unless_root};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum ToChild {
    /// The maps are written: go on.
    MapsWritten,
    /// The parent has seen what it needed: exit.
    Done,
}

#[derive(Debug, Serialize, Deserialize)]
enum FromChild {
    /// What the child saw, or what went wrong.
    Report(Result<String, String>),
}

fn map(container_id: u32, host_id: u32, size: u32) -> IdMap {
    IdMap {
        container_id,
        host_id,
        size,
    }
}

/// The lines of a uid_map/gid_map text, whitespace-normalised.
fn map_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// In a new user namespace: wait for the maps, then run `inside` and
/// report, then wait until told to exit.
fn spawn_in_user_namespace(
    inside: impl FnOnce() -> Result<String, String>,
) -> Result<(Pid, Channel<ToChild, FromChild>), NsError> {
    spawn_with_channel(&[Namespace::User, Namespace::Uts], |channel| {
        match channel.recv() {
            Ok(Some(ToChild::MapsWritten)) => {}
            _ => return 1,
        }
        if channel.send(&FromChild::Report(inside())).is_err() {
            return 2;
        }
        match channel.recv() {
            Ok(Some(ToChild::Done)) => 0,
            _ => 3,
        }
    })
}

/// The child's report, once the parent has let it go on.
fn report(channel: &Channel<ToChild, FromChild>) -> Result<String, String> {
    channel.send(&ToChild::MapsWritten).unwrap();
    match channel.recv().unwrap() {
        Some(FromChild::Report(report)) => report,
        None => Err("the child exited without a report".into()),
    }
}

/// Let the child exit, and reap it.
fn finish(pid: Pid, channel: Channel<ToChild, FromChild>) -> Result<(), String> {
    // A child still waiting for its maps reads this as "stop" too.
    let _ = channel.send(&ToChild::Done);
    match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        other => Err(format!(
            "the child in the user namespace ended with {other:?}"
        )),
    }
}

#[test]
fn id_maps_are_written_before_the_child_goes_on() {
    if skip_unless_root() {
        return;
    }
    in_child(|| {
        let uids = [map(0, 0, 1), map(1, 100_000, 1000)];
        let gids = [map(0, 0, 1), map(1, 200_000, 1000)];
        let (pid, channel) = spawn_in_user_namespace(|| {
            let uid_map = read("/proc/self/uid_map")?;
            let gid_map = read("/proc/self/gid_map")?;
            let setgroups = read("/proc/self/setgroups")?;
            if nix::unistd::getuid().as_raw() != 0 {
                return Err(format!("uid {} before set_user", nix::unistd::getuid()));
            }
            // Root in the namespace may set mapped ids and groups.
            set_user(1, 1, &[2]).map_err(|e| e.to_string())?;
            let status = read("/proc/self/status")?;
            expect_field(&status, "Uid", "1 1 1 1", "inside")?;
            expect_field(&status, "Groups", "2", "inside")?;
            Ok(format!("{uid_map}|{gid_map}|{}", setgroups.trim()))
        })
        .unwrap();
        write_id_maps(Path::new("/proc"), pid.as_raw(), &uids, &gids).unwrap();
        let seen = report(&channel).unwrap();
        let parts: Vec<&str> = seen.split('|').collect();
        assert_eq!(map_lines(parts[0]), ["0 0 1", "1 100000 1000"]);
        assert_eq!(map_lines(parts[1]), ["0 0 1", "1 200000 1000"]);
        // A privileged writer leaves setgroups(2) allowed.
        assert_eq!(parts[2], "allow");
        // Seen from here, the ids are the mapped host ids.
        let status = read(&format!("/proc/{pid}/status")).unwrap();
        expect_field(&status, "Uid", "100000 100000 100000 100000", "outside").unwrap();
        expect_field(&status, "Gid", "200000 200000 200000 200000", "outside").unwrap();
        expect_field(&status, "Groups", "200001", "outside").unwrap();
        finish(pid, channel)
    });
}

#[test]
fn a_writer_without_cap_setgid_denies_setgroups() {
    if skip_unless_root() {
        return;
    }
    in_child(|| {
        // Everything but an effective CAP_SETGID: the kernel then lets this
        // process map only its own gid, and only with setgroups denied.
        let held = current_bounding_set();
        let mut effective = held;
        effective.remove(Capability::Setgid);
        let sets = CapabilitySets {
            bounding: held,
            permitted: held,
            effective,
            ..CapabilitySets::default()
        };
        apply_sets(&sets).map_err(|e| e.to_string())?;

        let (pid, channel) = spawn_in_user_namespace(|| {
            let setgroups = read("/proc/self/setgroups")?;
            // No groups asked for: the denied setgroups(2) is skipped.
            set_user(0, 0, &[]).map_err(|e| format!("set_user without groups: {e}"))?;
            match set_user(0, 0, &[5]) {
                Err(NsError::User {
                    source: Errno::EPERM,
                    ..
                }) => Ok(setgroups.trim().to_owned()),
                other => Err(format!("set_user with a group: {other:?}")),
            }
        })
        .map_err(|e| e.to_string())?;
        let own = [map(0, 0, 1)];
        let written = write_id_maps(Path::new("/proc"), pid.as_raw(), &own, &own);
        let seen = written
            .map_err(|e| e.to_string())
            .and_then(|()| report(&channel));
        let finished = finish(pid, channel);
        let seen = seen?;
        finished?;
        match seen.as_str() {
            "deny" => Ok(()),
            other => Err(format!("setgroups is {other:?}")),
        }
    });
}

/// A child in its own UTS namespace with hostname `name`, alive until its
/// channel closes.
fn child_with_hostname(name: &'static str) -> (Pid, Channel<(), ()>) {
    let (pid, channel) = spawn_with_channel(&[Namespace::Uts], move |channel: Channel<(), ()>| {
        if nix::unistd::sethostname(name).is_err() || channel.send(&()).is_err() {
            return 1;
        }
        match channel.recv() {
            Ok(None) => 0,
            _ => 2,
        }
    })
    .unwrap();
    assert_eq!(channel.recv().unwrap(), Some(()), "the child did not start");
    (pid, channel)
}

#[test]
fn namespaces_are_joined_by_path_and_kind() {
    if skip_unless_root() {
        return;
    }
    in_child(|| {
        let (pid, channel) = child_with_hostname("berth-ns-join");
        let uts = PathBuf::from(format!("/proc/{pid}/ns/uts"));
        in_child(|| {
            join_paths(&[(Namespace::Uts, uts.clone())]).map_err(|e| e.to_string())?;
            match nix::unistd::gethostname() {
                Ok(name) if name == "berth-ns-join" => Ok(()),
                other => Err(format!("hostname after joining: {other:?}")),
            }
        });
        in_child(|| {
            // A UTS namespace file listed as a network namespace: setns checks
            // the kind.
            match join_paths(&[(Namespace::Net, uts.clone())]) {
                Err(NsError::Join {
                    kind: "net",
                    source: Errno::EINVAL,
                    ..
                }) => Ok(()),
                other => Err(format!("joining a uts file as net: {other:?}")),
            }
        });
        drop(channel);
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
        Ok(())
    });
}

/// The user namespace is joined first whatever the list's order: a process
/// without capabilities can join another namespace only through the user
/// namespace that owns it (it has none in its own).
#[test]
fn the_user_namespace_is_joined_first() {
    if skip_unless_root() {
        return;
    }
    in_child(|| {
        // An unprivileged user owns the new user namespace and writes its
        // maps; it can map only itself.
        set_user(300_000, 300_000, &[]).map_err(|e| e.to_string())?;
        let none = CapabilitySets {
            bounding: current_bounding_set(),
            ..CapabilitySets::default()
        };
        apply_sets(&none).map_err(|e| e.to_string())?;
        // The uid change made this process (and its children) not
        // dumpable: their /proc files would belong to root.
        nix::sys::prctl::set_dumpable(true).map_err(|e| format!("dumpable: {e}"))?;
        let (pid, channel) = spawn_in_user_namespace(|| {
            nix::unistd::sethostname("berth-ns-userns").map_err(|e| e.to_string())?;
            Ok(String::new())
        })
        .map_err(|e| e.to_string())?;
        let ids = [map(0, 300_000, 1)];
        let joined = write_id_maps(Path::new("/proc"), pid.as_raw(), &ids, &ids)
            .map_err(|e| e.to_string())
            .and_then(|()| report(&channel))
            .map(|_| {
                let ns = |kind: &str| PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
                in_child(|| {
                    join_paths(&[(Namespace::Uts, ns("uts")), (Namespace::User, ns("user"))])
                        .map_err(|e| e.to_string())?;
                    let status = read("/proc/self/status")?;
                    expect_field(&status, "Uid", "0 0 0 0", "in the joined user namespace")?;
                    match nix::unistd::gethostname() {
                        Ok(name) if name == "berth-ns-userns" => Ok(()),
                        other => Err(format!("hostname after joining: {other:?}")),
                    }
                })
            });
        let finished = finish(pid, channel);
        joined.and(finished)
    });
}

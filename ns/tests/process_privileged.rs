//! Process attributes for real, in forked children: user and groups,
//! rlimits, OOM score, session keyring and sysctls. Needs root; skips
//! otherwise.

mod common;

use std::path::Path;

use berth_ns::process::{
    join_new_session_keyring, set_oom_score_adj, set_rlimits, set_user, validate_sysctl,
    write_sysctls, Rlimit,
};
use berth_ns::{Namespace, NsError};
use common::{expect_field, in_child, mask, own_status, skip_unless_root};
use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{getrlimit, Resource};

#[test]
fn user_and_groups_change_and_permitted_capabilities_stay() {
    if skip_unless_root() {
        return;
    }
    in_child(|| {
        set_user(0, 0, &[7, 8]).map_err(|e| e.to_string())?;
        expect_field(&own_status()?, "Groups", "7 8", "root with two groups")?;

        set_user(1234, 2345, &[3456]).map_err(|e| e.to_string())?;
        let status = own_status()?;
        expect_field(&status, "Uid", "1234 1234 1234 1234", "after set_user")?;
        expect_field(&status, "Gid", "2345 2345 2345 2345", "after set_user")?;
        expect_field(&status, "Groups", "3456", "after set_user")?;
        // Kept for apply_sets (PR_SET_KEEPCAPS), but not effective.
        if mask(&status, "CapPrm")? == 0 || mask(&status, "CapEff")? != 0 {
            return Err(format!("capabilities after set_user:\n{status}"));
        }
        Ok(())
    });
}

#[test]
fn no_groups_means_none() {
    if skip_unless_root() {
        return;
    }
    in_child(|| {
        set_user(0, 0, &[7]).map_err(|e| e.to_string())?;
        set_user(4321, 4321, &[]).map_err(|e| e.to_string())?;
        expect_field(
            &own_status()?,
            "Groups",
            "",
            "after set_user without groups",
        )
    });
}

#[test]
fn rlimits_are_set() {
    if skip_unless_root() {
        return;
    }
    in_child(|| {
        let limits = [
            Rlimit::parse("RLIMIT_NOFILE", 100, 200),
            Rlimit::parse("RLIMIT_CORE", 0, 0),
            // Above the current hard limit: needs CAP_SYS_RESOURCE.
            Rlimit::parse("RLIMIT_CPU", 3600, u64::MAX),
            Rlimit::parse("RLIMIT_MSGQUEUE", 8192, 16384),
        ]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
        set_rlimits(&limits).map_err(|e| e.to_string())?;
        for (resource, expected) in [
            (Resource::RLIMIT_NOFILE, (100, 200)),
            (Resource::RLIMIT_CORE, (0, 0)),
            (Resource::RLIMIT_CPU, (3600, libc::RLIM_INFINITY)),
            (Resource::RLIMIT_MSGQUEUE, (8192, 16384)),
        ] {
            let got = getrlimit(resource).map_err(|e| format!("getrlimit: {e}"))?;
            if got != expected {
                return Err(format!("{resource:?} is {got:?}, expected {expected:?}"));
            }
        }
        Ok(())
    });
}

#[test]
fn oom_score_adj_is_set() {
    if skip_unless_root() {
        return;
    }
    in_child(|| {
        // Lowering it is allowed down to the minimum set by a process with
        // CAP_SYS_RESOURCE (0 unless one did).
        for value in [321, 100] {
            set_oom_score_adj(Path::new("/proc"), value).map_err(|e| e.to_string())?;
            let read = std::fs::read_to_string("/proc/self/oom_score_adj")
                .map_err(|e| format!("oom_score_adj: {e}"))?;
            if read.trim() != value.to_string() {
                return Err(format!("oom_score_adj is {read:?}, expected {value}"));
            }
        }
        match set_oom_score_adj(Path::new("/proc"), 1001) {
            Err(NsError::OomScoreAdj { value: 1001, .. }) => Ok(()),
            other => Err(format!("oom_score_adj 1001: {other:?}")),
        }
    });
}

/// KEYCTL_GET_KEYRING_ID of the session keyring, without creating one.
fn session_keyring_id() -> Result<i64, String> {
    // SAFETY: KEYCTL_GET_KEYRING_ID only reads the caller's keyrings; the
    // create flag is 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_GET_KEYRING_ID as libc::c_long,
            libc::KEY_SPEC_SESSION_KEYRING as libc::c_long,
            0 as libc::c_long,
        )
    };
    Errno::result(ret).map_err(|e| format!("KEYCTL_GET_KEYRING_ID: {e}"))
}

/// KEYCTL_DESCRIBE of a key: `type;uid;gid;perm;description`.
fn describe_key(id: i64) -> Result<String, String> {
    let mut buf = vec![0u8; 512];
    // SAFETY: KEYCTL_DESCRIBE writes at most `buf.len()` bytes into `buf`,
    // which lives for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_DESCRIBE as libc::c_long,
            id,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    let len = Errno::result(ret).map_err(|e| format!("KEYCTL_DESCRIBE: {e}"))? as usize;
    buf.truncate(len.min(buf.len()).saturating_sub(1));
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[test]
fn each_container_gets_its_own_session_keyring() {
    if skip_unless_root() {
        return;
    }
    in_child(|| {
        let inherited = session_keyring_id()?;
        let name = format!("_ses.berth-ns-test-{}", std::process::id());
        let joined = join_new_session_keyring(&name)
            .map_err(|e| e.to_string())?
            .ok_or("this kernel reports no keyrings")?;
        let now = session_keyring_id()?;
        if now == inherited || now != i64::from(joined) {
            return Err(format!(
                "session keyring {now}: inherited {inherited}, joined {joined}"
            ));
        }
        let description = describe_key(now)?;
        if !description.starts_with("keyring;") || !description.ends_with(&format!(";{name}")) {
            return Err(format!("the session keyring is {description:?}"));
        }
        Ok(())
    });
}

#[test]
fn sysctls_land_in_the_containers_namespaces() {
    if skip_unless_root() {
        return;
    }
    let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_owned());
    let host_values = || {
        (
            read("/proc/sys/kernel/domainname").unwrap(),
            read("/proc/sys/net/core/somaxconn").unwrap(),
        )
    };
    let before = host_values();
    in_child(|| {
        unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
            .map_err(|e| format!("unshare: {e}"))?;
        let sysctls = [
            // Per network namespace, and not copied from the host's.
            ("net.core.somaxconn", "1234"),
            ("kernel.domainname", "berth-ns-test.example"),
            ("kernel.shmmni", "1234"),
        ];
        let entries: Vec<(String, String)> = sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let own = [Namespace::Net, Namespace::Uts, Namespace::Ipc];
        for (key, value) in sysctls {
            validate_sysctl(key, &own).map_err(|e| e.to_string())?;
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            if read(&path).map_err(|e| format!("{path}: {e}"))? == value {
                return Err(format!("{key} is {value} before it was written"));
            }
        }
        write_sysctls(Path::new("/proc/sys"), &entries).map_err(|e| e.to_string())?;
        for (key, value) in sysctls {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            let got = read(&path).map_err(|e| format!("{path}: {e}"))?;
            if got != value {
                return Err(format!("{key} is {got:?}, expected {value:?}"));
            }
        }
        Ok(())
    });
    assert_eq!(host_values(), before);
}

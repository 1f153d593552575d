//! seccomp profiles in docker's format (`--security-opt seccomp=FILE`) and
//! berth's default profile (docker's semantics), resolved for one
//! container's capabilities and architecture into the spec's
//! `linux.seccomp`.
//!
//! docker's format is OCI's plus, per rule, `includes`/`excludes` of
//! capabilities and architectures: a rule applies only when the container
//! holds the capabilities it includes (and none it excludes). So the
//! default profile allows `mount` only to a container with CAP_SYS_ADMIN,
//! and `clone` with namespace flags likewise.

use std::collections::BTreeSet;

use anyhow::{bail, Context};
#[cfg(test)]
use berth_ns::Capability;
use berth_ns::CapabilitySet;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};
use serde::Deserialize;

/// A profile as docker reads it (unknown fields are ignored, as docker
/// does).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerProfile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<DockerRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerRule {
    #[serde(default)]
    names: Vec<String>,
    /// Docker's older single-name form.
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<DockerArg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerArg {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: LinuxSeccompOperator,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

impl DockerProfile {
    /// Parse a profile file's contents.
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        let profile: DockerProfile =
            serde_json::from_str(json).context("not a seccomp profile in docker's JSON format")?;
        if profile
            .syscalls
            .iter()
            .any(|r| r.names.is_empty() && r.name.is_none())
        {
            bail!("a rule of the seccomp profile names no system call");
        }
        Ok(profile)
    }

    /// The spec's `linux.seccomp` for a container holding `capabilities`,
    /// on this machine's architecture.
    pub fn resolve(&self, capabilities: &CapabilitySet) -> anyhow::Result<LinuxSeccomp> {
        let held: BTreeSet<String> = capabilities.iter().map(|c| c.name().to_owned()).collect();
        let arch = std::env::consts::ARCH;
        let applies = |rule: &DockerRule| {
            let caps_ok = rule.includes.caps.iter().all(|c| held.contains(c))
                && !rule.excludes.caps.iter().any(|c| held.contains(c));
            let arches_ok = (rule.includes.arches.is_empty()
                || rule.includes.arches.iter().any(|a| arch_matches(a, arch)))
                && !rule.excludes.arches.iter().any(|a| arch_matches(a, arch));
            caps_ok && arches_ok
        };
        let syscalls: Vec<LinuxSyscall> = self
            .syscalls
            .iter()
            .filter(|rule| applies(rule))
            .map(|rule| {
                let mut syscall = LinuxSyscall::default();
                let mut names = rule.names.clone();
                names.extend(rule.name.clone());
                syscall.set_names(names);
                syscall.set_action(rule.action);
                syscall.set_errno_ret(rule.errno_ret);
                if !rule.args.is_empty() {
                    syscall.set_args(Some(
                        rule.args
                            .iter()
                            .map(|a| {
                                LinuxSeccompArgBuilder::default()
                                    .index(a.index)
                                    .value(a.value)
                                    .value_two(a.value_two)
                                    .op(a.op)
                                    .build()
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    ));
                }
                Ok(syscall)
            })
            .collect::<anyhow::Result<_>>()?;
        // The native architecture's sub-architectures (x86 and x32 on
        // x86_64), as docker picks them from archMap.
        let native = native_arch();
        let mut architectures: Vec<Arch> = self
            .arch_map
            .iter()
            .filter(|m| Some(m.architecture) == native)
            .flat_map(|m| std::iter::once(m.architecture).chain(m.sub_architectures.clone()))
            .collect();
        if architectures.is_empty() {
            architectures = self.architectures.clone();
        }
        let mut seccomp = LinuxSeccomp::default();
        seccomp.set_default_action(self.default_action);
        seccomp.set_default_errno_ret(self.default_errno_ret);
        seccomp.set_architectures((!architectures.is_empty()).then_some(architectures));
        seccomp.set_syscalls(Some(syscalls));
        Ok(seccomp)
    }
}

fn native_arch() -> Option<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(Arch::ScmpArchX86_64),
        "aarch64" => Some(Arch::ScmpArchAarch64),
        _ => None,
    }
}

/// docker's `arches` use Go's names (`amd64`, `arm64`, ...).
fn arch_matches(docker_name: &str, rust_arch: &str) -> bool {
    matches!(
        (docker_name, rust_arch),
        ("amd64", "x86_64") | ("x32", "x86_64") | ("386", "x86") | ("arm64", "aarch64")
    ) || docker_name == rust_arch
}

/// What `--security-opt seccomp=...` chose, as kept in the container's
/// record: `None` is berth's default profile.
pub fn parse_choice(value: &str) -> anyhow::Result<String> {
    if value == "unconfined" {
        return Ok(value.to_owned());
    }
    let text = std::fs::read_to_string(value)
        .with_context(|| format!("cannot read the seccomp profile {value}"))?;
    DockerProfile::parse(&text).with_context(|| format!("seccomp profile {value}"))?;
    Ok(text)
}

/// The spec's `linux.seccomp` for a container: none when privileged or
/// `unconfined`, the user's profile, or the default one.
pub fn for_container(
    choice: Option<&str>,
    privileged: bool,
    capabilities: &CapabilitySet,
) -> anyhow::Result<Option<LinuxSeccomp>> {
    if privileged || choice == Some("unconfined") {
        return Ok(None);
    }
    let profile = match choice {
        Some(json) => DockerProfile::parse(json)?,
        None => default_profile(),
    };
    Ok(Some(profile.resolve(capabilities)?))
}

/// System calls every container may make (docker's default allow-list).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// System calls allowed only to a container holding a capability (docker's
/// `includes.caps` rules).
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// The clone(2) flags that create namespaces: CLONE_NEWNS, NEWCGROUP,
/// NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// berth's default profile: docker's semantics (an allow-list, EPERM for
/// the rest; namespace-creating clone, mount and the like only with
/// CAP_SYS_ADMIN; clone3 ENOSYS without it so libc falls back to clone,
/// whose flags the filter can see; personality only for the harmless
/// domains).
pub fn default_profile() -> DockerProfile {
    let rule =
        |names: &[&str], action, errno_ret, args: Vec<DockerArg>, includes, excludes| DockerRule {
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            name: None,
            action,
            errno_ret,
            args,
            includes,
            excludes,
        };
    let caps = |cap: &str| Filter {
        caps: vec![cap.to_owned()],
        arches: Vec::new(),
    };
    let arches = |list: &[&str]| Filter {
        caps: Vec::new(),
        arches: list.iter().map(|s| (*s).to_owned()).collect(),
    };
    let allow = LinuxSeccompAction::ScmpActAllow;
    let mut syscalls = vec![rule(
        ALLOWED,
        allow,
        None,
        vec![],
        Filter::default(),
        Filter::default(),
    )];
    // personality(2): PER_LINUX, PER_LINUX32, UNAME26, their combination,
    // and the query.
    for domain in [0x0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff] {
        syscalls.push(rule(
            &["personality"],
            allow,
            None,
            vec![DockerArg {
                index: 0,
                value: domain,
                value_two: 0,
                op: LinuxSeccompOperator::ScmpCmpEq,
            }],
            Filter::default(),
            Filter::default(),
        ));
    }
    syscalls.push(rule(
        &["arch_prctl", "modify_ldt"],
        allow,
        None,
        vec![],
        arches(&["amd64", "x32", "386"]),
        Filter::default(),
    ));
    // Without CAP_SYS_ADMIN: clone without namespace flags, clone3 ENOSYS.
    syscalls.push(rule(
        &["clone"],
        allow,
        None,
        vec![DockerArg {
            index: 0,
            value: CLONE_NAMESPACE_FLAGS,
            value_two: 0,
            op: LinuxSeccompOperator::ScmpCmpMaskedEq,
        }],
        Filter::default(),
        caps("CAP_SYS_ADMIN"),
    ));
    syscalls.push(rule(
        &["clone3"],
        LinuxSeccompAction::ScmpActErrno,
        Some(libc::ENOSYS as u32),
        vec![],
        Filter::default(),
        caps("CAP_SYS_ADMIN"),
    ));
    for (cap, names) in BY_CAPABILITY {
        syscalls.push(rule(
            names,
            allow,
            None,
            vec![],
            caps(cap),
            Filter::default(),
        ));
    }
    DockerProfile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(libc::EPERM as u32),
        architectures: Vec::new(),
        arch_map: vec![
            ArchMap {
                architecture: Arch::ScmpArchX86_64,
                sub_architectures: vec![Arch::ScmpArchX86, Arch::ScmpArchX32],
            },
            ArchMap {
                architecture: Arch::ScmpArchAarch64,
                sub_architectures: vec![Arch::ScmpArchArm],
            },
        ],
        syscalls,
    }
}

/// The names of the capabilities a rule's `includes` can ask for, checked
/// against berth's own list so a typo in the table above fails a test.
#[cfg(test)]
fn known_capability(name: &str) -> bool {
    Capability::from_kernel_name(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(seccomp: &LinuxSeccomp) -> BTreeSet<String> {
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.args().as_ref().is_none_or(|a| a.is_empty()))
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow)
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn the_default_profile_follows_the_containers_capabilities() {
        let default = default_profile()
            .resolve(&CapabilitySet::docker_default())
            .unwrap();
        let allowed = names_of(&default);
        assert!(allowed.contains("read") && allowed.contains("chroot"));
        for denied in [
            "mount",
            "unshare",
            "keyctl",
            "bpf",
            "kexec_load",
            "io_uring_setup",
            "setns",
        ] {
            assert!(!allowed.contains(denied), "{denied}");
        }
        assert_eq!(default.default_errno_ret(), Some(1));
        let clone3 = default
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names().contains(&"clone3".to_owned()))
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(38), "clone3 is ENOSYS");

        let admin = default_profile().resolve(&CapabilitySet::all()).unwrap();
        let allowed = names_of(&admin);
        for call in [
            "mount", "unshare", "setns", "clone", "clone3", "bpf", "ptrace",
        ] {
            assert!(allowed.contains(call), "{call}");
        }
        assert!(
            !admin
                .syscalls()
                .iter()
                .flatten()
                .any(|s| s.action() == LinuxSeccompAction::ScmpActErrno),
            "no ENOSYS clone3 with CAP_SYS_ADMIN"
        );
        assert!(admin
            .architectures()
            .as_ref()
            .unwrap()
            .contains(&Arch::ScmpArchX32));
    }

    #[test]
    fn the_tables_name_real_capabilities_and_compile() {
        for (cap, _) in BY_CAPABILITY {
            assert!(known_capability(cap), "{cap}");
        }
        // Every rule set compiles with libseccomp.
        let spec = {
            let mut linux = oci_spec::runtime::Linux::default();
            linux.set_seccomp(Some(
                default_profile()
                    .resolve(&CapabilitySet::docker_default())
                    .unwrap(),
            ));
            let mut spec = oci_spec::runtime::Spec::default();
            spec.set_linux(Some(linux));
            spec
        };
        assert!(serde_json::to_string(&spec).is_ok());
    }

    #[test]
    fn docker_profile_files_parse_with_includes_and_excludes() {
        let json = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                         "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18},
                {"names": ["reboot"], "action": "SCMP_ACT_ALLOW",
                 "includes": {"caps": ["CAP_SYS_BOOT"]}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
                 "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
                {"name": "tee", "action": "SCMP_ACT_ALLOW", "comment": "old form"}
            ],
            "unknownField": true
        }"#;
        let profile = DockerProfile::parse(json).unwrap();
        let resolved = profile.resolve(&CapabilitySet::docker_default()).unwrap();
        let names: Vec<Vec<String>> = resolved
            .syscalls()
            .iter()
            .flatten()
            .map(|s| s.names().clone())
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["read".to_owned(), "write".to_owned()],
                vec!["mkdir".to_owned()],
                vec!["clone".to_owned()],
                vec!["tee".to_owned()],
            ]
        );
        assert!(DockerProfile::parse("{}").is_err());
        assert!(DockerProfile::parse(r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).is_err());
    }
}

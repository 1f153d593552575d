use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use nix::sys::resource::{setrlimit, Resource};

use crate::NsError;

macro_rules! rlimit_resources {
    ($($(#[$doc:meta])* $variant:ident => $resource:ident,)*) => {
        /// A resource limited by setrlimit(2), named as an OCI runtime spec
        /// and the kernel name it (`RLIMIT_NOFILE`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum RlimitResource {
            $($(#[$doc])* $variant,)*
        }

        impl RlimitResource {
            /// Every resource.
            pub const ALL: [RlimitResource; 16] = [$(RlimitResource::$variant,)*];

            /// The kernel's name, e.g. `RLIMIT_NOFILE`.
            pub fn name(self) -> &'static str {
                match self {
                    $(RlimitResource::$variant => stringify!($resource),)*
                }
            }

            fn kernel_resource(self) -> Resource {
                match self {
                    $(RlimitResource::$variant => Resource::$resource,)*
                }
            }
        }
    };
}

rlimit_resources! {
    /// Address space size, in bytes.
    AddressSpace => RLIMIT_AS,
    /// Core file size, in bytes.
    Core => RLIMIT_CORE,
    /// CPU time, in seconds.
    Cpu => RLIMIT_CPU,
    /// Data segment size, in bytes.
    Data => RLIMIT_DATA,
    /// Size of files the process may create, in bytes.
    FileSize => RLIMIT_FSIZE,
    /// flock and fcntl locks and leases.
    Locks => RLIMIT_LOCKS,
    /// Memory locked in RAM, in bytes.
    MemoryLock => RLIMIT_MEMLOCK,
    /// Bytes in POSIX message queues of the real user.
    MessageQueue => RLIMIT_MSGQUEUE,
    /// Ceiling of the nice value (as 20 - nice).
    Nice => RLIMIT_NICE,
    /// Open file descriptors (one more than the highest number).
    OpenFiles => RLIMIT_NOFILE,
    /// Processes and threads of the real user.
    Processes => RLIMIT_NPROC,
    /// Resident set size (no effect since Linux 2.6).
    ResidentSet => RLIMIT_RSS,
    /// Ceiling of the real-time priority.
    RealtimePriority => RLIMIT_RTPRIO,
    /// CPU time under a real-time policy without blocking, in microseconds.
    RealtimeCpu => RLIMIT_RTTIME,
    /// Queued signals of the real user.
    PendingSignals => RLIMIT_SIGPENDING,
    /// Stack size, in bytes.
    Stack => RLIMIT_STACK,
}

impl fmt::Display for RlimitResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RlimitResource {
    type Err = NsError;

    /// Exactly the kernel's name (`RLIMIT_NOFILE`), as in an OCI spec's
    /// `process.rlimits[].type`.
    fn from_str(name: &str) -> Result<Self, NsError> {
        RlimitResource::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| NsError::UnknownRlimit {
                name: name.to_owned(),
            })
    }
}

/// One resource limit: `soft` is what the kernel enforces, `hard` the
/// ceiling up to which an unprivileged process may raise `soft`. The value
/// `u64::MAX` is unlimited (`RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: RlimitResource,
    pub soft: u64,
    pub hard: u64,
}

impl Rlimit {
    /// The limit of the resource named `name` (`RLIMIT_NOFILE`): an unknown
    /// name is [`NsError::UnknownRlimit`], a soft limit above the hard one
    /// [`NsError::InvalidRlimit`].
    pub fn parse(name: &str, soft: u64, hard: u64) -> Result<Self, NsError> {
        let resource: RlimitResource = name.parse()?;
        if soft > hard {
            return Err(NsError::InvalidRlimit {
                resource: resource.name(),
                soft,
                hard,
            });
        }
        Ok(Rlimit {
            resource,
            soft,
            hard,
        })
    }
}

/// Set each limit on the calling process, in order. Raising a hard limit
/// needs CAP_SYS_RESOURCE: call it before the capabilities are reduced.
pub fn set_rlimits(limits: &[Rlimit]) -> Result<(), NsError> {
    for limit in limits {
        setrlimit(limit.resource.kernel_resource(), limit.soft, limit.hard).map_err(|source| {
            NsError::Rlimit {
                resource: limit.resource.name(),
                soft: limit.soft,
                hard: limit.hard,
                source,
            }
        })?;
    }
    Ok(())
}

/// Set the calling process's OOM score adjustment (-1000, never killed
/// for lack of memory, to 1000, killed first) by writing
/// `<proc_root>/self/oom_score_adj` (pass "/proc"). Lowering it below its
/// current value needs CAP_SYS_RESOURCE.
pub fn set_oom_score_adj(proc_root: &Path, value: i32) -> Result<(), NsError> {
    let path = proc_root.join("self/oom_score_adj");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut file| file.write_all(value.to_string().as_bytes()));
    written.map_err(|source| NsError::OomScoreAdj {
        value,
        path,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_by_their_kernel_names() {
        for resource in RlimitResource::ALL {
            assert_eq!(resource.name().parse::<RlimitResource>().unwrap(), resource);
        }
        let kernel: std::collections::HashSet<_> = RlimitResource::ALL
            .iter()
            .map(|r| r.kernel_resource() as i64)
            .collect();
        assert_eq!(kernel.len(), RlimitResource::ALL.len());
        assert_eq!(RlimitResource::OpenFiles.to_string(), "RLIMIT_NOFILE");
        assert_eq!(
            RlimitResource::OpenFiles.kernel_resource(),
            Resource::RLIMIT_NOFILE
        );
    }

    #[test]
    fn unknown_or_inverted_limits_are_refused() {
        for bad in [
            "RLIMIT_FOO",
            "NOFILE",
            "rlimit_nofile",
            "",
            "RLIMIT_NOFILE ",
        ] {
            let err = Rlimit::parse(bad, 1, 1).unwrap_err();
            assert!(
                matches!(&err, NsError::UnknownRlimit { name } if name == bad),
                "{bad:?}: {err}"
            );
        }
        let err = Rlimit::parse("RLIMIT_CORE", 2, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid RLIMIT_CORE: soft limit 2 is above hard limit 1"
        );
        assert_eq!(
            Rlimit::parse("RLIMIT_NOFILE", 1024, u64::MAX).unwrap(),
            Rlimit {
                resource: RlimitResource::OpenFiles,
                soft: 1024,
                hard: u64::MAX
            }
        );
    }

    #[test]
    fn oom_score_adj_is_written_below_proc_root() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("self")).unwrap();
        std::fs::write(tmp.path().join("self/oom_score_adj"), "").unwrap();
        set_oom_score_adj(tmp.path(), -500).unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("self/oom_score_adj")).unwrap(),
            "-500"
        );

        let missing = tmp.path().join("nowhere");
        let err = set_oom_score_adj(&missing, 1).unwrap_err();
        assert!(
            err.to_string()
                .contains(&missing.join("self/oom_score_adj").display().to_string()),
            "{err}"
        );
    }
}

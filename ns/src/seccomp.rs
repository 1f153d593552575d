//! seccomp filters: a profile (default action, per-syscall rules with
//! argument conditions) compiled to a BPF program by libseccomp, and loaded
//! into the calling process.
//!
//! Compiling and loading are separate so that the (comparatively slow)
//! compilation runs once in the parent, before any clone, and the child only
//! makes the one `seccomp(2)` call, as late as possible before its exec.
//!
//! libseccomp (the C library runc and crun use) compiles the filter, so a
//! profile means exactly what it means to them: architecture checks, the
//! x32 ABI, argument comparisons on 64-bit values, actions by precedence.
//!
//! ```no_run
//! use berth_ns::seccomp::{Action, Profile, SyscallRule};
//!
//! # fn main() -> Result<(), berth_ns::seccomp::SeccompError> {
//! let profile = Profile {
//!     default_action: Action::Allow,
//!     rules: vec![SyscallRule::new(["keyctl", "add_key"], Action::Errno(libc::EPERM as u32))],
//!     ..Profile::default()
//! };
//! let filter = profile.compile()?;
//! // ... later, in the process to be confined, just before exec:
//! filter.load()?;
//! # Ok(())
//! # }
//! ```

use std::io::{Read, Seek};
use std::os::fd::AsFd;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};

/// What a seccomp filter does with a matching system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let it run.
    Allow,
    /// Fail it with this errno.
    Errno(u32),
    /// Kill the calling thread.
    KillThread,
    /// Kill the whole process.
    KillProcess,
    /// Send SIGSYS.
    Trap,
    /// Notify a ptrace tracer with this message.
    Trace(u32),
    /// Let it run and log it.
    Log,
}

/// How an argument is compared with a rule's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `arg != value`
    NotEqual,
    /// `arg < value`
    Less,
    /// `arg <= value`
    LessOrEqual,
    /// `arg == value`
    Equal,
    /// `arg >= value`
    GreaterOrEqual,
    /// `arg > value`
    Greater,
    /// `arg & value == value_two`
    MaskedEqual,
}

/// One condition on a system call argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgCondition {
    /// Which argument, 0 to 5.
    pub index: u32,
    /// The value compared against (the mask for [`Compare::MaskedEqual`]).
    pub value: u64,
    /// The expected masked value for [`Compare::MaskedEqual`].
    pub value_two: u64,
    /// The comparison.
    pub op: Compare,
}

/// An action for a set of system calls, when all of `args` hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallRule {
    /// System call names; names this libseccomp does not know are skipped
    /// (profiles list calls newer than the library), as runc does.
    pub names: Vec<String>,
    /// What to do when the call matches.
    pub action: Action,
    /// Conditions that must all hold.
    pub args: Vec<ArgCondition>,
}

impl SyscallRule {
    /// A rule without argument conditions.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>, action: Action) -> Self {
        SyscallRule {
            names: names.into_iter().map(Into::into).collect(),
            action,
            args: Vec::new(),
        }
    }
}

/// Flags of `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterFlags {
    /// SECCOMP_FILTER_FLAG_TSYNC: apply to every thread of the process.
    pub thread_sync: bool,
    /// SECCOMP_FILTER_FLAG_LOG: log every action but Allow.
    pub log: bool,
    /// SECCOMP_FILTER_FLAG_SPEC_ALLOW: keep speculative store bypass
    /// mitigation off.
    pub spec_allow: bool,
}

impl FilterFlags {
    fn bits(self) -> libc::c_ulong {
        let mut bits = 0;
        if self.thread_sync {
            bits |= libc::SECCOMP_FILTER_FLAG_TSYNC;
        }
        if self.log {
            bits |= libc::SECCOMP_FILTER_FLAG_LOG;
        }
        if self.spec_allow {
            bits |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        }
        bits
    }
}

/// A whole filter, as OCI's `linux.seccomp` and docker's profiles describe
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// What happens to a call no rule matches.
    pub default_action: Action,
    /// Architectures the filter accepts besides the native one, as
    /// libseccomp names them (`SCMP_ARCH_X86`, `SCMP_ARCH_X32`, ...). A call
    /// made through any other ABI is killed.
    pub architectures: Vec<String>,
    /// Flags for loading.
    pub flags: FilterFlags,
    /// Rules, in order.
    pub rules: Vec<SyscallRule>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            default_action: Action::Errno(libc::EPERM as u32),
            architectures: Vec::new(),
            flags: FilterFlags::default(),
            rules: Vec::new(),
        }
    }
}

/// The version of the libseccomp that compiles profiles, e.g. `2.5.4`: a
/// cache of compiled programs must be keyed by it.
pub fn library_version() -> String {
    libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default()
}

/// A compiled BPF program, ready to be loaded.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    program: Vec<libc::sock_filter>,
    flags: FilterFlags,
}

/// What went wrong compiling or loading a filter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// The profile names an architecture libseccomp does not know.
    #[error("unknown seccomp architecture {name:?}")]
    UnknownArchitecture {
        /// The name as given.
        name: String,
    },
    /// An argument index outside 0..=5.
    #[error("seccomp rule for {syscall}: argument index {index} is out of range (0 to 5)")]
    ArgumentIndex {
        /// The first system call of the rule.
        syscall: String,
        /// The index as given.
        index: u32,
    },
    /// An errno or trace value that does not fit.
    #[error("seccomp action value {value} is out of range")]
    ActionValue {
        /// The value as given.
        value: u32,
    },
    /// libseccomp refused something.
    #[error("seccomp: {what}: {source}")]
    Library {
        /// What was being done.
        what: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// Exporting the program through a memfd failed.
    #[error("seccomp: export the compiled program: {source}")]
    Export {
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// seccomp(2) failed.
    #[error("cannot load the seccomp filter: {source}")]
    Load {
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
}

fn library(
    what: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let what = what.into();
    move |source| SeccompError::Library { what, source }
}

impl Action {
    fn to_scmp(self) -> Result<ScmpAction, SeccompError> {
        let errno = |value: u32| {
            i32::try_from(value)
                .ok()
                .filter(|v| *v <= 0xffff)
                .ok_or(SeccompError::ActionValue { value })
        };
        Ok(match self {
            Action::Allow => ScmpAction::Allow,
            Action::Errno(value) => ScmpAction::Errno(errno(value)?),
            Action::KillThread => ScmpAction::KillThread,
            Action::KillProcess => ScmpAction::KillProcess,
            Action::Trap => ScmpAction::Trap,
            Action::Trace(value) => ScmpAction::Trace(
                u16::try_from(value).map_err(|_| SeccompError::ActionValue { value })?,
            ),
            Action::Log => ScmpAction::Log,
        })
    }
}

impl ArgCondition {
    fn to_scmp(self) -> ScmpArgCompare {
        let op = match self.op {
            Compare::NotEqual => ScmpCompareOp::NotEqual,
            Compare::Less => ScmpCompareOp::Less,
            Compare::LessOrEqual => ScmpCompareOp::LessOrEqual,
            Compare::Equal => ScmpCompareOp::Equal,
            Compare::GreaterOrEqual => ScmpCompareOp::GreaterEqual,
            Compare::Greater => ScmpCompareOp::Greater,
            Compare::MaskedEqual => ScmpCompareOp::MaskedEqual(self.value),
        };
        let datum = match self.op {
            Compare::MaskedEqual => self.value_two,
            _ => self.value,
        };
        ScmpArgCompare::new(self.index, op, datum)
    }
}

/// libseccomp's SCMP_FLTATR_CTL_OPTIMIZE level 2: the syscalls sorted
/// into a binary tree.
const BINARY_TREE: u32 = 2;

/// What, besides the profile and libseccomp's version, decides the
/// compiled program: part of a cache key for compiled programs.
pub const COMPILE_OPTIONS: &str = "optimize=2";

impl Profile {
    /// Compile the profile to a BPF program.
    pub fn compile(&self) -> Result<CompiledFilter, SeccompError> {
        let default_action = self.default_action.to_scmp()?;
        let mut context =
            ScmpFilterContext::new(default_action).map_err(library("create a filter"))?;
        // The caller orders no_new_privs itself and loads the program with
        // its own seccomp(2) call; libseccomp only compiles.
        context
            .set_ctl_nnp(false)
            .map_err(library("leave no_new_privs to the caller"))?;
        // A binary tree of the syscall numbers instead of a linear list:
        // docker's profile has ~350 calls, and every syscall of the
        // container (and of the init after the load) walks the program.
        // libseccomp before 2.5 lacks it: the linear program stays.
        let _ = context.set_ctl_optimize(BINARY_TREE);
        for name in &self.architectures {
            let arch: ScmpArch = name
                .parse()
                .map_err(|_| SeccompError::UnknownArchitecture { name: name.clone() })?;
            match context.add_arch(arch) {
                Ok(_) => {}
                // Already present: the native architecture is always in.
                Err(e) if e.errno() == Some(libseccomp::error::SeccompErrno::EEXIST) => {}
                Err(e) => return Err(library(format!("add architecture {name}"))(e)),
            }
        }
        for rule in &self.rules {
            self.add_rule(&mut context, rule, default_action)?;
        }
        let program = export(&context)?;
        Ok(CompiledFilter {
            program,
            flags: self.flags,
        })
    }

    fn add_rule(
        &self,
        context: &mut ScmpFilterContext,
        rule: &SyscallRule,
        default_action: ScmpAction,
    ) -> Result<(), SeccompError> {
        let action = rule.action.to_scmp()?;
        // libseccomp refuses a rule that repeats the default action; it
        // would change nothing anyway.
        if action == default_action {
            return Ok(());
        }
        for condition in &rule.args {
            if condition.index > 5 {
                return Err(SeccompError::ArgumentIndex {
                    syscall: rule.names.first().cloned().unwrap_or_default(),
                    index: condition.index,
                });
            }
        }
        let conditions: Vec<ScmpArgCompare> = rule.args.iter().map(|c| c.to_scmp()).collect();
        // libseccomp cannot AND two conditions on the same argument; such
        // rules are meant (by docker's profile and runc) as alternatives,
        // one rule per condition.
        let repeats_an_argument = rule
            .args
            .iter()
            .enumerate()
            .any(|(i, a)| rule.args[..i].iter().any(|b| b.index == a.index));
        for name in &rule.names {
            let Ok(syscall) = libseccomp::ScmpSyscall::from_name(name) else {
                continue;
            };
            let what = || format!("add a rule for {name}");
            if conditions.is_empty() {
                context.add_rule(action, syscall).map_err(library(what()))?;
            } else if repeats_an_argument {
                for condition in &conditions {
                    context
                        .add_rule_conditional(action, syscall, std::slice::from_ref(condition))
                        .map_err(library(what()))?;
                }
            } else {
                context
                    .add_rule_conditional(action, syscall, &conditions)
                    .map_err(library(what()))?;
            }
        }
        Ok(())
    }
}

/// The compiled program, read back through a memfd (libseccomp 2.5 can
/// export only to a descriptor).
fn export(context: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let fd =
        nix::sys::memfd::memfd_create(c"berth-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| SeccompError::Export { source: e.into() })?;
    context
        .export_bpf(fd.as_fd())
        .map_err(library("export the program"))?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|()| file.read_to_end(&mut bytes))
        .map_err(|source| SeccompError::Export { source })?;
    instructions(&bytes).ok_or_else(|| SeccompError::Export {
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} bytes is not a whole BPF program", bytes.len()),
        ),
    })
}

/// BPF instructions from their in-memory bytes; `None` unless whole.
fn instructions(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    const INSTRUCTION: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % INSTRUCTION != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(INSTRUCTION)
            .map(|b| libc::sock_filter {
                code: u16::from_ne_bytes([b[0], b[1]]),
                jt: b[2],
                jf: b[3],
                k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            })
            .collect(),
    )
}

impl CompiledFilter {
    /// The program as bytes (8 per instruction, native endian), e.g. to
    /// cache it: compiling a large profile costs milliseconds.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.program
            .iter()
            .flat_map(|i| {
                let mut bytes = [0u8; 8];
                bytes[..2].copy_from_slice(&i.code.to_ne_bytes());
                bytes[2] = i.jt;
                bytes[3] = i.jf;
                bytes[4..].copy_from_slice(&i.k.to_ne_bytes());
                bytes
            })
            .collect()
    }

    /// A program from [`CompiledFilter::to_bytes`], loaded with `flags`.
    /// `None` for bytes that cannot be a program (empty, torn, longer than
    /// the kernel's 4096 instructions).
    pub fn from_bytes(bytes: &[u8], flags: FilterFlags) -> Option<Self> {
        const MAX_INSTRUCTIONS: usize = 4096;
        let program = instructions(bytes)?;
        (program.len() <= MAX_INSTRUCTIONS).then_some(CompiledFilter { program, flags })
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    /// Whether the program is empty (never, for a compiled profile).
    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// Confine the calling thread (every thread with `thread_sync`). Needs
    /// no_new_privs set or CAP_SYS_ADMIN. Makes no allocation, so it may be
    /// called in a freshly cloned child.
    pub fn load(&self) -> Result<(), SeccompError> {
        let program = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `program` points at `self.program`, which outlives the
        // call; the kernel copies the instructions.
        let result = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags.bits(),
                &program as *const libc::sock_fprog,
            )
        };
        nix::errno::Errno::result(result)
            .map(drop)
            .map_err(|source| SeccompError::Load { source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_child(test: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the test binary's child only runs `test` and _exits.
        match unsafe { libc::fork() } {
            0 => {
                let code = test();
                // SAFETY: leave the child without running the parent's
                // destructors or test harness.
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                libc::WEXITSTATUS(status)
            }
        }
    }

    #[test]
    fn a_denied_call_fails_with_the_profiles_errno_and_others_still_run() {
        let profile = Profile {
            default_action: Action::Allow,
            rules: vec![SyscallRule::new(
                ["getcwd"],
                Action::Errno(libc::ENOTSUP as u32),
            )],
            ..Profile::default()
        };
        let filter = profile.compile().unwrap();
        assert!(!filter.is_empty());
        // A round trip through bytes gives the same program.
        let again = CompiledFilter::from_bytes(&filter.to_bytes(), profile.flags).unwrap();
        assert_eq!(again.to_bytes(), filter.to_bytes());
        assert!(CompiledFilter::from_bytes(&[0; 7], profile.flags).is_none());
        assert!(CompiledFilter::from_bytes(&[], profile.flags).is_none());
        assert!(CompiledFilter::from_bytes(&vec![0; 8 * 4097], profile.flags).is_none());
        let code = in_child(|| {
            if nix::sys::prctl::set_no_new_privs().is_err() || filter.load().is_err() {
                return 10;
            }
            let mut buf = [0u8; 256];
            // SAFETY: getcwd into a local buffer of the given size.
            let r = unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) };
            let errno = nix::errno::Errno::last_raw();
            if !r.is_null() {
                return 11;
            }
            if errno != libc::ENOTSUP {
                return 12;
            }
            // SAFETY: getpid has no arguments.
            if unsafe { libc::getpid() } <= 0 {
                return 13;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn argument_conditions_select_the_calls_they_name() {
        // personality(0xffffffff) (a query) allowed, anything else denied:
        // docker's profile's shape.
        let profile = Profile {
            default_action: Action::Allow,
            rules: vec![SyscallRule {
                names: vec!["personality".into()],
                action: Action::Errno(libc::EPERM as u32),
                args: vec![ArgCondition {
                    index: 0,
                    value: 0xffff_ffff,
                    value_two: 0,
                    op: Compare::NotEqual,
                }],
            }],
            ..Profile::default()
        };
        let filter = profile.compile().unwrap();
        let code = in_child(|| {
            if nix::sys::prctl::set_no_new_privs().is_err() || filter.load().is_err() {
                return 10;
            }
            // SAFETY: personality only reads/sets the execution domain.
            if unsafe { libc::personality(0xffff_ffff) } < 0 {
                return 11;
            }
            // SAFETY: as above (0x0008 is PER_LINUX32); this call must be refused.
            if unsafe { libc::personality(0x0008) } >= 0 {
                return 12;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn unknown_names_are_skipped_and_bad_values_refused() {
        let profile = Profile {
            default_action: Action::Allow,
            rules: vec![SyscallRule::new(
                ["no_such_syscall_2031", "getcwd"],
                Action::Errno(1),
            )],
            architectures: vec!["SCMP_ARCH_X86".into(), "SCMP_ARCH_X32".into()],
            ..Profile::default()
        };
        assert!(profile.compile().is_ok());
        let bad_arch = Profile {
            architectures: vec!["SCMP_ARCH_VAX".into()],
            ..Profile::default()
        };
        assert!(matches!(
            bad_arch.compile(),
            Err(SeccompError::UnknownArchitecture { .. })
        ));
        let bad_index = Profile {
            rules: vec![SyscallRule {
                names: vec!["read".into()],
                action: Action::Allow,
                args: vec![ArgCondition {
                    index: 6,
                    value: 0,
                    value_two: 0,
                    op: Compare::Equal,
                }],
            }],
            ..Profile::default()
        };
        assert!(matches!(
            bad_index.compile(),
            Err(SeccompError::ArgumentIndex { index: 6, .. })
        ));
    }
}

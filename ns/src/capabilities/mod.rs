//! Linux capabilities of a container's processes: the capability names
//! and sets, docker's default set and its add/drop rules, the five sets of
//! an OCI runtime spec, and applying them right before execve(2).
//!
//! ```no_run
//! use berth_ns::capabilities::{apply, apply_sets, resolve, set_no_new_privs};
//! use berth_ns::capabilities::{kernel_last_cap, CapabilitySet, CapabilitySets};
//!
//! // Docker's semantics: the default set, less NET_RAW, plus NET_ADMIN.
//! let set = resolve(&["NET_ADMIN".into()], &["NET_RAW".into()], false)?;
//! // ... in the container's process, right before execve:
//! set_no_new_privs()?; // only when asked for
//! apply(&set)?;
//!
//! // Or the five sets of a spec's `process.capabilities`, with the names
//! // the running kernel does not know left out (warn about `ignored`).
//! let bounding = CapabilitySet::parse_spec_names(&["CAP_CHOWN", "CAP_KILL"], kernel_last_cap())?;
//! let sets = CapabilitySets { bounding: bounding.set, ..CapabilitySets::default() };
//! apply_sets(&sets)?;
//! # Ok::<(), berth_ns::NsError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::NsError;

mod kernel;

pub(crate) use kernel::capget;
pub use kernel::{apply, apply_sets, current_bounding_set, kernel_last_cap, set_no_new_privs};

macro_rules! capabilities {
    ($($(#[$doc:meta])* $variant:ident = $index:literal => $name:literal,)*) => {
        /// A Linux capability (`capabilities(7)`), numbered as the kernel
        /// numbers it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Capability {
            $($(#[$doc])* $variant = $index,)*
        }

        impl Capability {
            /// Every capability this crate knows, by number (0 to
            /// [`Capability::LAST`]).
            pub const ALL: [Capability; 41] = [$(Capability::$variant,)*];

            /// The kernel's name, e.g. `CAP_NET_ADMIN`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Capability::$variant => $name,)*
                }
            }
        }
    };
}

capabilities! {
    /// Change file owners and groups.
    Chown = 0 => "CAP_CHOWN",
    /// Bypass file read, write and execute permission checks.
    DacOverride = 1 => "CAP_DAC_OVERRIDE",
    /// Bypass file read and directory search permission checks.
    DacReadSearch = 2 => "CAP_DAC_READ_SEARCH",
    /// Bypass checks that the file's owner is the caller.
    Fowner = 3 => "CAP_FOWNER",
    /// Keep set-user/group-ID bits when a file is modified.
    Fsetid = 4 => "CAP_FSETID",
    /// Send signals to any process.
    Kill = 5 => "CAP_KILL",
    /// Change group IDs.
    Setgid = 6 => "CAP_SETGID",
    /// Change user IDs.
    Setuid = 7 => "CAP_SETUID",
    /// Change the bounding set and other processes' capabilities.
    Setpcap = 8 => "CAP_SETPCAP",
    /// Set the immutable and append-only file attributes.
    LinuxImmutable = 9 => "CAP_LINUX_IMMUTABLE",
    /// Bind ports below 1024.
    NetBindService = 10 => "CAP_NET_BIND_SERVICE",
    /// Unused (broadcast and multicast).
    NetBroadcast = 11 => "CAP_NET_BROADCAST",
    /// Network administration (interfaces, routes, firewall).
    NetAdmin = 12 => "CAP_NET_ADMIN",
    /// Raw and packet sockets.
    NetRaw = 13 => "CAP_NET_RAW",
    /// Lock memory.
    IpcLock = 14 => "CAP_IPC_LOCK",
    /// Bypass System V IPC permission checks.
    IpcOwner = 15 => "CAP_IPC_OWNER",
    /// Load and unload kernel modules.
    SysModule = 16 => "CAP_SYS_MODULE",
    /// Raw I/O (ioperm, /dev/mem, ...).
    SysRawio = 17 => "CAP_SYS_RAWIO",
    /// chroot(2).
    SysChroot = 18 => "CAP_SYS_CHROOT",
    /// ptrace any process.
    SysPtrace = 19 => "CAP_SYS_PTRACE",
    /// Process accounting.
    SysPacct = 20 => "CAP_SYS_PACCT",
    /// System administration (mount, sethostname, namespaces, ...).
    SysAdmin = 21 => "CAP_SYS_ADMIN",
    /// Reboot and kexec.
    SysBoot = 22 => "CAP_SYS_BOOT",
    /// Raise priorities, change other processes' scheduling.
    SysNice = 23 => "CAP_SYS_NICE",
    /// Override resource limits.
    SysResource = 24 => "CAP_SYS_RESOURCE",
    /// Set the system clock.
    SysTime = 25 => "CAP_SYS_TIME",
    /// Configure terminals (vhangup, ...).
    SysTtyConfig = 26 => "CAP_SYS_TTY_CONFIG",
    /// Create special files with mknod(2).
    Mknod = 27 => "CAP_MKNOD",
    /// File leases.
    Lease = 28 => "CAP_LEASE",
    /// Write to the kernel audit log.
    AuditWrite = 29 => "CAP_AUDIT_WRITE",
    /// Configure kernel auditing.
    AuditControl = 30 => "CAP_AUDIT_CONTROL",
    /// Set file capabilities.
    Setfcap = 31 => "CAP_SETFCAP",
    /// Override mandatory access control (Smack).
    MacOverride = 32 => "CAP_MAC_OVERRIDE",
    /// Configure mandatory access control (Smack).
    MacAdmin = 33 => "CAP_MAC_ADMIN",
    /// Privileged syslog(2) operations.
    Syslog = 34 => "CAP_SYSLOG",
    /// Wake the system with timers.
    WakeAlarm = 35 => "CAP_WAKE_ALARM",
    /// Block system suspend.
    BlockSuspend = 36 => "CAP_BLOCK_SUSPEND",
    /// Read the audit log.
    AuditRead = 37 => "CAP_AUDIT_READ",
    /// Performance monitoring.
    Perfmon = 38 => "CAP_PERFMON",
    /// BPF operations.
    Bpf = 39 => "CAP_BPF",
    /// Checkpoint/restore.
    CheckpointRestore = 40 => "CAP_CHECKPOINT_RESTORE",
}

impl Capability {
    /// The highest capability number this crate knows (CAP_CHECKPOINT_RESTORE).
    pub const LAST: u8 = 40;

    /// The kernel's number for it.
    pub fn index(self) -> u8 {
        self as u8
    }

    /// The capability with number `index`, if this crate knows it.
    pub fn from_index(index: u8) -> Option<Self> {
        Self::ALL.get(usize::from(index)).copied()
    }

    /// The bit of this capability in a capability mask.
    pub fn mask(self) -> u64 {
        1 << self.index()
    }
}

impl Capability {
    /// The capability whose kernel name is exactly `name` (`CAP_NET_ADMIN`,
    /// as capabilities(7) and an OCI runtime spec write it).
    pub fn from_kernel_name(name: &str) -> Option<Self> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Capability {
    type Err = NsError;

    /// `NET_ADMIN`, `CAP_NET_ADMIN` or `net_admin` (docker accepts any
    /// case, with or without the `CAP_` prefix). `ALL` is not a single
    /// capability: see [`resolve`].
    fn from_str(s: &str) -> Result<Self, NsError> {
        let upper = s.trim().to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        Capability::ALL
            .into_iter()
            .find(|c| c.name() == full)
            .ok_or_else(|| NsError::UnknownCapability { name: s.to_owned() })
    }
}

/// Docker's default capabilities for a container's processes.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// A set of capabilities, as the kernel's 64-bit mask.
///
/// Serialized as the sorted list of names (`["CAP_CHOWN", ...]`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "Vec<String>", try_from = "Vec<String>")]
pub struct CapabilitySet(u64);

impl CapabilitySet {
    /// No capability.
    pub const EMPTY: CapabilitySet = CapabilitySet(0);

    /// Every capability this crate knows ([`Capability::ALL`]): what a
    /// privileged container gets.
    pub fn all() -> Self {
        Capability::ALL.into_iter().collect()
    }

    /// Docker's default set ([`DEFAULT_CAPABILITIES`], mask `0xa80425fb`).
    pub fn docker_default() -> Self {
        DEFAULT_CAPABILITIES.into_iter().collect()
    }

    /// The set with the kernel mask `bits`; bits above [`Capability::LAST`]
    /// are dropped.
    pub fn from_bits_truncate(bits: u64) -> Self {
        Self(bits & Self::all().0)
    }

    /// The kernel mask (bit N is capability N), as in the `Cap*` lines of
    /// /proc/PID/status.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & cap.mask() != 0
    }

    /// Add `cap`.
    pub fn insert(&mut self, cap: Capability) {
        self.0 |= cap.mask();
    }

    /// Remove `cap`.
    pub fn remove(&mut self, cap: Capability) {
        self.0 &= !cap.mask();
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many capabilities the set has.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The capabilities in the set, by number.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |&c| self.contains(c))
    }
}

/// A capability list of an OCI runtime spec, read by
/// [`CapabilitySet::parse_spec_names`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedCapabilities {
    /// The capabilities named that the running kernel knows.
    pub set: CapabilitySet,
    /// Well-formed names left out: capabilities this crate or the running
    /// kernel does not know (runc warns about them and goes on).
    pub ignored: Vec<String>,
}

impl CapabilitySet {
    /// The capabilities of a list as an OCI runtime spec writes it (kernel
    /// names: `CAP_NET_ADMIN`). Like runc, a capability the running kernel
    /// does not know (numbered above `kernel_last_cap`, see
    /// [`kernel_last_cap`]) or that this crate has no name for (a newer
    /// one) is left out and reported in [`ParsedCapabilities::ignored`],
    /// so that a spec written for a newer kernel still runs. A name that
    /// is not of the form `CAP_[A-Z0-9_]+` is
    /// [`NsError::InvalidCapabilityName`].
    pub fn parse_spec_names<S: AsRef<str>>(
        names: &[S],
        kernel_last_cap: u8,
    ) -> Result<ParsedCapabilities, NsError> {
        let mut parsed = ParsedCapabilities::default();
        for name in names.iter().map(AsRef::as_ref) {
            let well_formed = name.strip_prefix("CAP_").is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            });
            if !well_formed {
                return Err(NsError::InvalidCapabilityName {
                    name: name.to_owned(),
                });
            }
            match Capability::from_kernel_name(name) {
                Some(cap) if cap.index() <= kernel_last_cap => parsed.set.insert(cap),
                _ => {
                    if !parsed.ignored.iter().any(|n| n == name) {
                        parsed.ignored.push(name.to_owned());
                    }
                }
            }
        }
        Ok(parsed)
    }
}

impl FromIterator<Capability> for CapabilitySet {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |acc, c| acc | c.mask()))
    }
}

impl fmt::Debug for CapabilitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Capability::name))
            .finish()
    }
}

/// The names, comma-separated (`CAP_CHOWN,CAP_KILL`); empty for none.
impl fmt::Display for CapabilitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Capability::name).collect();
        f.write_str(&names.join(","))
    }
}

impl From<CapabilitySet> for Vec<String> {
    fn from(set: CapabilitySet) -> Self {
        set.iter().map(|c| c.name().to_owned()).collect()
    }
}

impl TryFrom<Vec<String>> for CapabilitySet {
    type Error = NsError;
    fn try_from(names: Vec<String>) -> Result<Self, NsError> {
        names.iter().map(|n| n.parse::<Capability>()).collect()
    }
}

/// Whether an add or drop list entry means every capability.
fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The capabilities of a container given the capabilities to add
/// (`cap_add`) and to drop (`cap_drop`), or every one (`privileged`), with
/// docker's semantics:
///
/// - `privileged`: every capability (the lists are ignored);
/// - `ALL` in `cap_add`: every capability except those in `cap_drop`;
/// - `ALL` in `cap_drop`: exactly those in `cap_add`;
/// - otherwise docker's default set, less `cap_drop`, plus `cap_add` (a
///   capability named in both is kept).
///
/// Names are as [`Capability::from_str`] takes them (`NET_ADMIN`,
/// `CAP_NET_ADMIN`, any case); an unknown one is
/// [`NsError::UnknownCapability`], even when `privileged`.
pub fn resolve(
    cap_add: &[String],
    cap_drop: &[String],
    privileged: bool,
) -> Result<CapabilitySet, NsError> {
    let parse = |names: &[String]| -> Result<CapabilitySet, NsError> {
        names
            .iter()
            .filter(|n| !is_all(n))
            .map(|n| n.parse::<Capability>())
            .collect()
    };
    let add = parse(cap_add)?;
    let drop = parse(cap_drop)?;
    if privileged {
        return Ok(CapabilitySet::all());
    }
    if cap_add.iter().any(|n| is_all(n)) {
        return Ok(CapabilitySet(CapabilitySet::all().0 & !drop.0));
    }
    let base = if cap_drop.iter().any(|n| is_all(n)) {
        CapabilitySet::EMPTY
    } else {
        CapabilitySet(CapabilitySet::docker_default().0 & !drop.0)
    };
    Ok(CapabilitySet(base.0 | add.0))
}

/// The five capability sets of a process (capabilities(7)), as an OCI
/// runtime spec's `process.capabilities` gives them; see [`apply_sets`].
///
/// The default is every set empty: a process with no capabilities at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct CapabilitySets {
    /// The most the process and everything it starts can ever have.
    pub bounding: CapabilitySet,
    /// What the kernel checks for the process's operations.
    pub effective: CapabilitySet,
    /// What the process may make effective.
    pub permitted: CapabilitySet,
    /// What may pass through execve(2) to programs with matching file
    /// capabilities (or into the ambient set).
    pub inheritable: CapabilitySet,
    /// What a program without file capabilities keeps across execve(2),
    /// also as a non-root user. Only capabilities that are also permitted
    /// and inheritable can be ambient.
    pub ambient: CapabilitySet,
}

impl CapabilitySets {
    /// Docker's semantics for `set`: bounding, effective and permitted are
    /// `set`; inheritable and ambient are empty.
    pub fn only(set: CapabilitySet) -> Self {
        CapabilitySets {
            bounding: set,
            effective: set,
            permitted: set,
            inheritable: CapabilitySet::EMPTY,
            ambient: CapabilitySet::EMPTY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn numbering_and_names() {
        for (i, cap) in Capability::ALL.iter().enumerate() {
            assert_eq!(usize::from(cap.index()), i);
            assert_eq!(Capability::from_index(i as u8), Some(*cap));
            assert!(cap.name().starts_with("CAP_"));
        }
        assert_eq!(Capability::ALL.len(), usize::from(Capability::LAST) + 1);
        assert_eq!(Capability::from_index(41), None);
        assert_eq!(Capability::SysAdmin.index(), 21);
        assert_eq!(Capability::Mknod.index(), 27);
        assert_eq!(Capability::Setfcap.index(), 31);
        assert_eq!(
            Capability::CheckpointRestore.name(),
            "CAP_CHECKPOINT_RESTORE"
        );
    }

    #[test]
    fn parsing() {
        for name in [
            "NET_ADMIN",
            "CAP_NET_ADMIN",
            "net_admin",
            "cap_net_admin",
            " Net_Admin ",
        ] {
            assert_eq!(name.parse::<Capability>().unwrap(), Capability::NetAdmin);
        }
        for bad in ["", "CAP_", "NET_ADMINS", "ALL", "CAP_ALL", "sys-admin"] {
            let err = bad.parse::<Capability>().unwrap_err();
            assert!(
                matches!(err, NsError::UnknownCapability { ref name } if name == bad),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            "FOO".parse::<Capability>().unwrap_err().to_string(),
            "unknown capability \"FOO\" (expected a name such as NET_ADMIN or CAP_NET_ADMIN, or ALL)"
        );
    }

    #[test]
    fn docker_default_mask() {
        let set = CapabilitySet::docker_default();
        assert_eq!(set.bits(), 0x0000_0000_a804_25fb);
        assert_eq!(set.len(), 14);
        assert!(set.contains(Capability::NetRaw));
        assert!(!set.contains(Capability::SysAdmin));
        assert_eq!(CapabilitySet::all().bits(), 0x0000_01ff_ffff_ffff);
        assert_eq!(
            CapabilitySet::from_bits_truncate(u64::MAX),
            CapabilitySet::all()
        );
    }

    #[test]
    fn resolve_like_docker() {
        let default = CapabilitySet::docker_default();
        assert_eq!(resolve(&[], &[], false).unwrap(), default);

        let set = resolve(&names(&["NET_ADMIN"]), &names(&["net_raw"]), false).unwrap();
        let mut expected = default;
        expected.insert(Capability::NetAdmin);
        expected.remove(Capability::NetRaw);
        assert_eq!(set, expected);

        // Drop all, then add some.
        let set = resolve(&names(&["CHOWN", "CAP_KILL"]), &names(&["all"]), false).unwrap();
        assert_eq!(
            set,
            [Capability::Chown, Capability::Kill].into_iter().collect()
        );
        assert!(resolve(&[], &names(&["ALL"]), false).unwrap().is_empty());

        // Add all, less some.
        let set = resolve(&names(&["ALL"]), &names(&["SYS_ADMIN"]), false).unwrap();
        assert_eq!(set.len(), Capability::ALL.len() - 1);
        assert!(!set.contains(Capability::SysAdmin));

        // Named in both: kept (docker appends the adds after the drops).
        let set = resolve(&names(&["NET_RAW"]), &names(&["NET_RAW"]), false).unwrap();
        assert!(set.contains(Capability::NetRaw));

        // Privileged: everything, whatever the lists say.
        assert_eq!(
            resolve(&[], &names(&["ALL"]), true).unwrap(),
            CapabilitySet::all()
        );

        // Unknown names are errors, privileged or not.
        for privileged in [false, true] {
            assert!(matches!(
                resolve(&names(&["NET_ADMIM"]), &[], privileged),
                Err(NsError::UnknownCapability { ref name }) if name == "NET_ADMIM"
            ));
            assert!(resolve(&[], &names(&["bogus"]), privileged).is_err());
        }
    }

    #[test]
    fn set_display_and_serde() {
        let set: CapabilitySet = [Capability::Kill, Capability::Chown].into_iter().collect();
        assert_eq!(set.to_string(), "CAP_CHOWN,CAP_KILL");
        assert_eq!(format!("{set:?}"), r#"{"CAP_CHOWN", "CAP_KILL"}"#);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["CAP_CHOWN","CAP_KILL"]"#);
        assert_eq!(serde_json::from_str::<CapabilitySet>(&json).unwrap(), set);
        assert_eq!(
            serde_json::from_str::<CapabilitySet>(r#"["kill","CAP_CHOWN"]"#).unwrap(),
            set
        );
        assert!(serde_json::from_str::<CapabilitySet>(r#"["CAP_NOPE"]"#).is_err());
        assert_eq!(CapabilitySet::EMPTY.to_string(), "");
    }

    #[test]
    fn kernel_names_are_exact() {
        assert_eq!(
            Capability::from_kernel_name("CAP_NET_ADMIN"),
            Some(Capability::NetAdmin)
        );
        for other in [
            "NET_ADMIN",
            "cap_net_admin",
            " CAP_NET_ADMIN",
            "CAP_NET_ADMINS",
        ] {
            assert_eq!(Capability::from_kernel_name(other), None, "{other}");
        }
    }

    #[test]
    fn spec_names_leave_out_what_the_kernel_does_not_know() {
        let parsed = CapabilitySet::parse_spec_names(
            &[
                "CAP_CHOWN",
                "CAP_BPF",
                "CAP_CHECKPOINT_RESTORE",
                "CAP_FUTURE_THING",
                "CAP_CHOWN",
            ],
            Capability::Bpf.index(),
        )
        .unwrap();
        assert_eq!(
            parsed.set,
            [Capability::Chown, Capability::Bpf].into_iter().collect()
        );
        assert_eq!(
            parsed.ignored,
            ["CAP_CHECKPOINT_RESTORE", "CAP_FUTURE_THING"]
        );

        let all = CapabilitySet::parse_spec_names(
            &Capability::ALL.map(Capability::name),
            Capability::LAST,
        )
        .unwrap();
        assert_eq!(all.set, CapabilitySet::all());
        assert!(all.ignored.is_empty());
        let none = CapabilitySet::parse_spec_names::<&str>(&[], Capability::LAST).unwrap();
        assert_eq!(none, ParsedCapabilities::default());
    }

    #[test]
    fn malformed_spec_names_are_errors() {
        for bad in [
            "NET_ADMIN",
            "cap_net_admin",
            "CAP_",
            "CAP_NET-ADMIN",
            "CAP_Net_Admin",
            "",
            "ALL",
        ] {
            let err =
                CapabilitySet::parse_spec_names(&["CAP_KILL", bad], Capability::LAST).unwrap_err();
            assert!(
                matches!(err, NsError::InvalidCapabilityName { ref name } if name == bad),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn docker_semantics_as_five_sets() {
        let set = CapabilitySet::docker_default();
        let sets = CapabilitySets::only(set);
        assert_eq!(sets.bounding, set);
        assert_eq!(sets.effective, set);
        assert_eq!(sets.permitted, set);
        assert!(sets.inheritable.is_empty());
        assert!(sets.ambient.is_empty());
        let none = CapabilitySets::default();
        assert!(none.bounding.is_empty() && none.permitted.is_empty());
    }
}

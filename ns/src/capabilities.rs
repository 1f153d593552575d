//! Linux capabilities of the container's processes: docker's default set,
//! `--cap-add` / `--cap-drop` / `--privileged` resolution, and applying a
//! set right before execve(2).
//!
//! The container's processes keep uid 0 (there is no user namespace), so
//! what they can do as root is exactly their capability sets. After
//! execve(2) a root process gets `permitted = effective = bounding |
//! inheritable` (the kernel treats root's files as having every file
//! capability), which is why [`apply`] reduces the *bounding* set to the
//! wanted set and empties the *inheritable* and *ambient* sets
//! (CVE-2022-29162: an inheritable capability that is not in the bounding
//! set still comes back on execve).
//!
//! ```no_run
//! use berth_ns::capabilities::{apply, resolve, set_no_new_privs};
//! // `berth run --cap-drop NET_RAW --cap-add NET_ADMIN ...`
//! let set = resolve(&["NET_ADMIN".into()], &["NET_RAW".into()], false)?;
//! // ... in the container's init (or `berth exec`), right before execve:
//! set_no_new_privs()?; // only with --security-opt no-new-privileges
//! apply(&set)?;
//! # Ok::<(), berth_ns::NsError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::NsError;

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
            /// Every capability berth knows, by number (0 to
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
    /// The highest capability number berth knows (CAP_CHECKPOINT_RESTORE).
    pub const LAST: u8 = 40;

    /// The kernel's number for it.
    pub fn index(self) -> u8 {
        self as u8
    }

    /// The capability with number `index`, if berth knows it.
    pub fn from_index(index: u8) -> Option<Self> {
        Self::ALL.get(usize::from(index)).copied()
    }

    /// The bit of this capability in a capability mask.
    pub fn mask(self) -> u64 {
        1 << self.index()
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

    /// Every capability berth knows ([`Capability::ALL`]): what
    /// `--privileged` gets.
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

/// Whether a `--cap-add`/`--cap-drop` value means every capability.
fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The capabilities of a container started with `--cap-add cap_add`,
/// `--cap-drop cap_drop` and `--privileged`, with docker's semantics:
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

/// The highest capability number the running kernel knows (its
/// `/proc/sys/kernel/cap_last_cap`), found with `PR_CAPBSET_READ`, which
/// works without /proc.
pub fn kernel_last_cap() -> u8 {
    let mut last = 0;
    for cap in 0..64u8 {
        // SAFETY: PR_CAPBSET_READ only reads the caller's bounding set; the
        // unused arguments are passed as 0 as prctl(2) asks.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
        if ret < 0 {
            break;
        }
        last = cap;
    }
    last
}

/// The calling process's bounding set: the most any process it starts can
/// have. A container cannot be given more than berth itself may hold.
pub fn current_bounding_set() -> CapabilitySet {
    let mut set = CapabilitySet::EMPTY;
    for cap in Capability::ALL {
        // SAFETY: PR_CAPBSET_READ only reads the caller's bounding set.
        let ret = unsafe {
            libc::prctl(
                libc::PR_CAPBSET_READ,
                libc::c_ulong::from(cap.index()),
                0,
                0,
                0,
            )
        };
        if ret == 1 {
            set.insert(cap);
        }
    }
    set
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (effective, permitted, inheritable) masks.
fn capget() -> Result<(u64, u64, u64), NsError> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are properly laid out for version 3, which
    // takes exactly two data structs; both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    Errno::result(ret).map_err(|source| NsError::Capabilities {
        step: "capget".into(),
        source,
    })?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

/// capset(2) on the calling thread.
fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), NsError> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |mask: u64| (mask as u32, (mask >> 32) as u32);
    let (e0, e1) = split(effective);
    let (p0, p1) = split(permitted);
    let (i0, i1) = split(inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: header and data are properly laid out for version 3 (two
    // data structs); the kernel only reads data and may write the header's
    // version; both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    Errno::result(ret)
        .map(drop)
        .map_err(|source| NsError::Capabilities {
            step: "capset".into(),
            source,
        })
}

/// Whether capability number `cap` is in the bounding set.
fn in_bounding_set(cap: u8) -> Result<bool, NsError> {
    // SAFETY: PR_CAPBSET_READ only reads the caller's bounding set.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
    Errno::result(ret)
        .map(|r| r == 1)
        .map_err(|source| NsError::Capabilities {
            step: format!("read capability {cap} of the bounding set"),
            source,
        })
}

fn describe(cap: u8) -> String {
    Capability::from_index(cap).map_or_else(|| format!("capability {cap}"), |c| c.to_string())
}

/// Give the calling process exactly the capabilities of `set`, for the
/// program it is about to execve(2) (call it last, after everything that
/// needs more privileges):
///
/// 1. every capability not in `set` is dropped from the bounding set
///    (`PR_CAPBSET_DROP`, for every capability up to the kernel's last
///    one, including those berth has no name for), so it cannot come back
///    through execve or file capabilities;
/// 2. the ambient set is cleared (`PR_CAP_AMBIENT_CLEAR_ALL`; kernels
///    without ambient capabilities are fine);
/// 3. capset(2): effective = permitted = `set`, inheritable = empty
///    (CVE-2022-29162).
///
/// Capabilities of `set` that the running kernel does not know are left
/// out. The result is read back (capget and `PR_CAPBSET_READ`) and a
/// difference is [`NsError::CapabilitiesMismatch`]. The caller needs
/// CAP_SETPCAP and every capability of `set` (root in the container's init
/// or in `berth exec` has them); the uid stays what it is (0).
///
/// Capabilities are per thread: call it in the single thread that execs.
pub fn apply(set: &CapabilitySet) -> Result<(), NsError> {
    let last = kernel_last_cap();
    let known = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    let wanted = set.bits() & known;

    for cap in 0..=last {
        if wanted & (1 << cap) != 0 || !in_bounding_set(cap)? {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP changes only the caller's bounding set;
        // the unused arguments are 0.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        Errno::result(ret).map_err(|source| NsError::Capabilities {
            step: format!("drop {} from the bounding set", describe(cap)),
            source,
        })?;
    }

    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL changes only the caller's ambient
    // set; the unused arguments are 0 as prctl(2) requires.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    match Errno::result(ret) {
        // Before Linux 4.3 there is no ambient set to clear.
        Ok(_) | Err(Errno::EINVAL) => {}
        Err(source) => {
            return Err(NsError::Capabilities {
                step: "clear the ambient set".into(),
                source,
            })
        }
    }

    capset(wanted, wanted, 0)?;

    let (effective, permitted, inheritable) = capget()?;
    let mut bounding = 0u64;
    for cap in 0..=last {
        if in_bounding_set(cap)? {
            bounding |= 1 << cap;
        }
    }
    if (effective, permitted, inheritable, bounding) != (wanted, wanted, 0, wanted) {
        return Err(NsError::CapabilitiesMismatch {
            expected: format!("{wanted:#018x}"),
            found: format!(
                "effective {effective:#018x}, permitted {permitted:#018x}, \
                 inheritable {inheritable:#018x}, bounding {bounding:#018x}"
            ),
        });
    }
    Ok(())
}

/// Set `no_new_privs` (`PR_SET_NO_NEW_PRIVS`) for the calling process and
/// everything it execs: setuid/setgid bits and file capabilities no longer
/// grant anything (docker's `--security-opt no-new-privileges`). It cannot
/// be unset.
pub fn set_no_new_privs() -> Result<(), NsError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes the value 1 and zeros; it only
    // changes a flag of the calling process.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    Errno::result(ret)
        .map(drop)
        .map_err(|source| NsError::NoNewPrivs { source })
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
    fn the_kernel_knows_at_least_the_classic_capabilities() {
        // CAP_AUDIT_READ (37) is in every kernel since 3.16.
        assert!(kernel_last_cap() >= 37);
    }
}

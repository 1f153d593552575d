//! From the spec's types to the ones of berth's subsystem crates, and the
//! checks that refuse a spec before anything is made.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use berth_cgroup::{
    BlockIo, CpuQuota, DeviceAccess, DeviceRate, DeviceRule, DeviceType, DeviceWeight,
    HugepageLimit, NetPriority, Resources, SwapLimit,
};
use berth_ns::{seccomp, CapabilitySet, CapabilitySets, Namespace};
use oci_spec::runtime::{
    LinuxCapabilities, LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespaceType, LinuxResources,
    LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxThrottleDevice, Spec,
};

use super::{Result, RuntimeError};

/// The namespaces of the spec: `None` = create a new one, `Some(path)` =
/// join that one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Namespaces(pub Vec<(Namespace, Option<PathBuf>)>);

impl Namespaces {
    pub fn from_spec(spec: &Spec) -> Result<Self> {
        let mut list: Vec<(Namespace, Option<PathBuf>)> = Vec::new();
        let declared = spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.namespaces().clone())
            .unwrap_or_default();
        for ns in declared {
            let kind = match ns.typ() {
                LinuxNamespaceType::Mount => Namespace::Mount,
                LinuxNamespaceType::Cgroup => Namespace::Cgroup,
                LinuxNamespaceType::Uts => Namespace::Uts,
                LinuxNamespaceType::Ipc => Namespace::Ipc,
                LinuxNamespaceType::User => Namespace::User,
                LinuxNamespaceType::Pid => Namespace::Pid,
                LinuxNamespaceType::Network => Namespace::Net,
                LinuxNamespaceType::Time => {
                    return Err(RuntimeError::invalid(
                        "time namespaces are not supported by berth",
                    ))
                }
            };
            if list.iter().any(|(k, _)| *k == kind) {
                return Err(RuntimeError::invalid(format!(
                    "the {} namespace is listed twice",
                    kind.proc_name()
                )));
            }
            list.push((kind, ns.path().clone()));
        }
        Ok(Namespaces(list))
    }

    /// Namespaces to create with the clone.
    pub fn new_ones(&self) -> Vec<Namespace> {
        self.0
            .iter()
            .filter(|(_, path)| path.is_none())
            .map(|(kind, _)| *kind)
            .collect()
    }

    /// Namespaces to join by path, in the order they must be joined.
    pub fn joined(&self) -> Vec<(Namespace, PathBuf)> {
        Namespace::JOIN_ORDER
            .iter()
            .filter_map(|kind| {
                self.0
                    .iter()
                    .find(|(k, path)| k == kind && path.is_some())
                    .and_then(|(k, path)| path.clone().map(|p| (*k, p)))
            })
            .collect()
    }

    pub fn creates(&self, kind: Namespace) -> bool {
        self.0.iter().any(|(k, path)| *k == kind && path.is_none())
    }

    /// Whether the container has its own namespace of this kind (new or
    /// joined), rather than the runtime's.
    pub fn has(&self, kind: Namespace) -> bool {
        self.0.iter().any(|(k, _)| *k == kind)
    }
}

/// Refuse what berth cannot do rather than run a container with less
/// confinement than its spec asks for.
pub(crate) fn refuse_unsupported(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    if linux.intel_rdt().is_some() {
        return Err(RuntimeError::invalid("linux.intelRdt is not supported"));
    }
    if linux.personality().is_some() {
        return Err(RuntimeError::invalid("linux.personality is not supported"));
    }
    if let Some(process) = spec.process() {
        if process
            .apparmor_profile()
            .as_deref()
            .is_some_and(|p| !p.is_empty())
        {
            return Err(RuntimeError::invalid(
                "process.apparmorProfile is set, but this runtime does not support AppArmor",
            ));
        }
        if process
            .selinux_label()
            .as_deref()
            .is_some_and(|l| !l.is_empty())
        {
            return Err(RuntimeError::invalid(
                "process.selinuxLabel is set, but this runtime does not support SELinux",
            ));
        }
    }
    Ok(())
}

/// The spec's `linux.seccomp` in berth-ns's terms, or `None` for no
/// filter. What berth cannot honour (a notify listener) is refused, never
/// dropped: the container would run less confined than its spec says.
/// `linux.seccomp.flags` as the flags the program is loaded with.
fn filter_flags(seccomp: &oci_spec::runtime::LinuxSeccomp) -> Result<seccomp::FilterFlags> {
    let mut flags = seccomp::FilterFlags::default();
    for flag in seccomp.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => flags.log = true,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => flags.thread_sync = true,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => flags.spec_allow = true,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(RuntimeError::invalid(
                    "linux.seccomp flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a notify \
                     listener, which this runtime does not support",
                ))
            }
        }
    }
    Ok(flags)
}

pub(crate) fn seccomp_profile(spec: &Spec) -> Result<Option<seccomp::Profile>> {
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let action = |action: LinuxSeccompAction, errno: Option<u32>| -> Result<seccomp::Action> {
        Ok(match action {
            LinuxSeccompAction::ScmpActAllow => seccomp::Action::Allow,
            LinuxSeccompAction::ScmpActErrno => {
                seccomp::Action::Errno(errno.unwrap_or(libc::EPERM as u32))
            }
            LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
                seccomp::Action::KillThread
            }
            LinuxSeccompAction::ScmpActKillProcess => seccomp::Action::KillProcess,
            LinuxSeccompAction::ScmpActTrap => seccomp::Action::Trap,
            LinuxSeccompAction::ScmpActTrace => {
                seccomp::Action::Trace(errno.unwrap_or(libc::EPERM as u32))
            }
            LinuxSeccompAction::ScmpActLog => seccomp::Action::Log,
            LinuxSeccompAction::ScmpActNotify => {
                return Err(RuntimeError::invalid(
                    "linux.seccomp uses SCMP_ACT_NOTIFY, which this runtime does not support",
                ))
            }
        })
    };
    let flags = filter_flags(seccomp)?;
    let architectures = seccomp
        .architectures()
        .iter()
        .flatten()
        .map(|arch| {
            serde_json::to_value(arch)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .ok_or_else(|| {
                    RuntimeError::invalid(format!("unknown seccomp architecture {arch:?}"))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let rules = seccomp
        .syscalls()
        .iter()
        .flatten()
        .map(|rule| {
            let args = rule
                .args()
                .iter()
                .flatten()
                .map(|arg| seccomp::ArgCondition {
                    index: u32::try_from(arg.index()).unwrap_or(u32::MAX),
                    value: arg.value(),
                    value_two: arg.value_two().unwrap_or(0),
                    op: match arg.op() {
                        LinuxSeccompOperator::ScmpCmpNe => seccomp::Compare::NotEqual,
                        LinuxSeccompOperator::ScmpCmpLt => seccomp::Compare::Less,
                        LinuxSeccompOperator::ScmpCmpLe => seccomp::Compare::LessOrEqual,
                        LinuxSeccompOperator::ScmpCmpEq => seccomp::Compare::Equal,
                        LinuxSeccompOperator::ScmpCmpGe => seccomp::Compare::GreaterOrEqual,
                        LinuxSeccompOperator::ScmpCmpGt => seccomp::Compare::Greater,
                        LinuxSeccompOperator::ScmpCmpMaskedEq => seccomp::Compare::MaskedEqual,
                    },
                })
                .collect();
            Ok(seccomp::SyscallRule {
                names: rule.names().clone(),
                action: action(rule.action(), rule.errno_ret())?,
                args,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(seccomp::Profile {
        default_action: action(seccomp.default_action(), seccomp.default_errno_ret())?,
        architectures,
        flags,
        rules,
    }))
}

/// The spec's seccomp filter, compiled (in the runtime, before any clone).
///
/// Compiling docker's default profile takes libseccomp several
/// milliseconds, so programs are cached in `cache_dir` (inside the
/// runtime's root-only state directory) under a hash of the spec's
/// `linux.seccomp`, the libseccomp version and berth's version. A cache
/// entry that cannot be a program is compiled again; one that cannot be
/// written costs only the time.
pub(crate) fn compile_seccomp(
    spec: &Spec,
    cache_dir: &std::path::Path,
) -> Result<Option<seccomp::CompiledFilter>> {
    let Some(section) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let key = {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(serde_json::to_vec(&section).unwrap_or_default());
        hasher.update(seccomp::library_version());
        hasher.update(seccomp::COMPILE_OPTIONS);
        hasher.update(env!("CARGO_PKG_VERSION"));
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let cached = cache_dir.join(format!("{key}.bpf"));
    // A program is cached only for a section that converted and compiled:
    // on a hit (same section, same library) the conversion is skipped.
    let flags = filter_flags(section)?;
    if let Some(filter) = std::fs::read(&cached)
        .ok()
        .and_then(|bytes| seccomp::CompiledFilter::from_bytes(&bytes, flags))
    {
        return Ok(Some(filter));
    }
    let Some(profile) = seccomp_profile(spec)? else {
        return Ok(None);
    };
    let filter = profile
        .compile()
        .map_err(|e| RuntimeError::invalid(format!("linux.seccomp: {e}")))?;
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .and_then(|()| {
            berth_state::replace_file(
                &cached,
                &filter.to_bytes(),
                berth_state::Durability::Volatile,
            )
        });
    Ok(Some(filter))
}

/// The spec's cgroup resources in berth-cgroup's terms (the device rules
/// come from [`device_cgroup`]). Settings berth cannot apply are refused
/// by the cgroup crate's checks, never silently dropped; -1 ("unlimited")
/// and 0 ("unset") leave a limit off, which is what a new cgroup has.
pub(crate) fn resources(linux: Option<&LinuxResources>) -> Result<Resources> {
    let mut out = Resources::default();
    let Some(res) = linux else {
        return Ok(out);
    };
    let positive = |value: Option<i64>| value.filter(|&v| v > 0).map(|v| v as u64);
    if let Some(memory) = res.memory() {
        out.memory_limit = positive(memory.limit());
        out.memory_reservation = positive(memory.reservation());
        out.memory_swap = match memory.swap() {
            Some(-1) => Some(SwapLimit::Unlimited),
            Some(total) if total > 0 => Some(SwapLimit::Total(total as u64)),
            _ => None,
        };
        out.memory_swappiness = memory.swappiness().filter(|&s| s <= 100);
        out.oom_kill_disable = memory.disable_oom_killer();
    }
    if let Some(cpu) = res.cpu() {
        out.cpu_shares = cpu.shares().filter(|&s| s > 0);
        if let Some(quota) = positive(cpu.quota()) {
            let period = cpu.period().filter(|&p| p > 0).unwrap_or(100_000);
            out.cpu_quota = Some(CpuQuota {
                quota_us: quota,
                period_us: period,
            });
        }
        out.cpu_rt_runtime_us = cpu.realtime_runtime().filter(|&r| r != 0);
        out.cpu_rt_period_us = cpu.realtime_period().filter(|&p| p > 0);
        out.cpu_idle = cpu.idle().map(|idle| idle != 0);
        let list = |text: &Option<String>, what: &str| -> Result<Option<berth_cgroup::CpuList>> {
            match text.as_deref().filter(|t| !t.is_empty()) {
                None => Ok(None),
                Some(text) => berth_cgroup::parse_cpu_list(text)
                    .map(Some)
                    .map_err(|e| RuntimeError::invalid(format!("{what} {text:?}: {e}"))),
            }
        };
        out.cpuset_cpus = list(cpu.cpus(), "cpu.cpus")?;
        out.cpuset_mems = list(cpu.mems(), "cpu.mems")?;
    }
    if let Some(pids) = res.pids() {
        out.pids_limit = positive(Some(pids.limit()));
    }
    if let Some(io) = res.block_io() {
        let device = |major: i64, minor: i64| -> Result<(u32, u32)> {
            match (u32::try_from(major), u32::try_from(minor)) {
                (Ok(major), Ok(minor)) => Ok((major, minor)),
                _ => Err(RuntimeError::invalid(format!(
                    "blockIO device {major}:{minor} is not a device number"
                ))),
            }
        };
        let rates = |list: &Option<Vec<LinuxThrottleDevice>>| -> Result<Vec<DeviceRate>> {
            list.iter()
                .flatten()
                .map(|d| {
                    let (major, minor) = device(d.major(), d.minor())?;
                    Ok(DeviceRate {
                        major,
                        minor,
                        rate: d.rate(),
                    })
                })
                .collect()
        };
        out.block_io = Some(BlockIo {
            weight: io.weight(),
            leaf_weight: io.leaf_weight(),
            device_weights: io
                .weight_device()
                .iter()
                .flatten()
                .map(|d| {
                    let (major, minor) = device(d.major(), d.minor())?;
                    Ok(DeviceWeight {
                        major,
                        minor,
                        weight: d.weight(),
                        leaf_weight: d.leaf_weight(),
                    })
                })
                .collect::<Result<_>>()?,
            throttle_read_bps: rates(io.throttle_read_bps_device())?,
            throttle_write_bps: rates(io.throttle_write_bps_device())?,
            throttle_read_iops: rates(io.throttle_read_iops_device())?,
            throttle_write_iops: rates(io.throttle_write_iops_device())?,
        });
    }
    out.hugepage_limits = res
        .hugepage_limits()
        .iter()
        .flatten()
        .map(|h| HugepageLimit {
            page_size: h.page_size().clone(),
            limit: h.limit().max(0) as u64,
        })
        .collect();
    if let Some(network) = res.network() {
        out.net_class_id = network.class_id();
        out.net_priorities = network
            .priorities()
            .iter()
            .flatten()
            .map(|p| NetPriority {
                interface: p.name().clone(),
                priority: p.priority(),
            })
            .collect();
    }
    if let Some(unified) = res.unified() {
        out.unified = unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    Ok(out)
}

/// The device cgroup: what the spec allows (from "deny all"), the devices
/// every container needs (runc's allowed list: null, zero, full, random,
/// urandom, tty, ptmx and the pseudo-terminals) and the nodes the spec
/// creates in `linux.devices`. An "allow all" rule in the spec leaves the
/// devices unrestricted.
pub(crate) fn device_cgroup(spec: &Spec) -> Result<Option<Vec<DeviceRule>>> {
    let linux = spec.linux().as_ref();
    let listed = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let mut rules = device_rules(&listed)?;
    if rules
        .iter()
        .any(|r| r.kind == DeviceType::All && r.major.is_none() && r.minor.is_none())
    {
        return Ok(None);
    }
    for rule in DeviceRule::docker_defaults() {
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    for device in linux.and_then(|l| l.devices().clone()).unwrap_or_default() {
        let kind = match device.typ() {
            LinuxDeviceType::B => DeviceType::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceType::Char,
            _ => continue,
        };
        // A device the spec's own rules name keeps the access they give
        // (docker's `--device /dev/x:/dev/x:r`).
        let named = listed.iter().any(|rule| {
            rule.major() == Some(device.major()) && rule.minor() == Some(device.minor())
        });
        if named {
            continue;
        }
        rules.push(DeviceRule {
            kind,
            major: Some(device.major() as u32),
            minor: Some(device.minor() as u32),
            access: DeviceAccess::ALL,
        });
    }
    Ok(Some(rules))
}

/// The spec's device cgroup list (evaluated in order, later entries win)
/// as an allow-list: berth's device controller takes the rules that are
/// allowed starting from "deny all", which is what every real spec starts
/// with (`{"allow": false, "access": "rwm"}`).
fn device_rules(list: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
    let mut rules: Vec<DeviceRule> = Vec::new();
    for entry in list {
        let kind = match entry.typ() {
            None | Some(LinuxDeviceType::A) => DeviceType::All,
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => DeviceType::Char,
            Some(LinuxDeviceType::B) => DeviceType::Block,
            Some(other) => {
                return Err(RuntimeError::invalid(format!(
                    "device cgroup rule of type {other:?} is not supported"
                )))
            }
        };
        let access = parse_access(entry.access().as_deref().unwrap_or("rwm"))?;
        let rule = DeviceRule {
            kind,
            major: entry.major().filter(|&m| m >= 0).map(|m| m as u32),
            minor: entry.minor().filter(|&m| m >= 0).map(|m| m as u32),
            access,
        };
        let deny_all = kind == DeviceType::All && rule.major.is_none() && rule.minor.is_none();
        if entry.allow() {
            rules.push(rule);
        } else if deny_all {
            rules.clear();
        } else {
            // A deny of something specific after allows: drop the allows it
            // overlaps exactly; partial overlaps cannot be expressed.
            let before = rules.len();
            rules.retain(|r| *r != rule);
            if before == rules.len() && !rules.is_empty() {
                return Err(RuntimeError::invalid(format!(
                    "device cgroup deny rule {:?} after allow rules is not supported",
                    entry
                )));
            }
        }
    }
    Ok(rules)
}

fn parse_access(text: &str) -> Result<DeviceAccess> {
    let mut access = DeviceAccess::READ;
    let mut any = false;
    for c in text.chars() {
        let bit = match c {
            'r' => DeviceAccess::READ,
            'w' => DeviceAccess::WRITE,
            'm' => DeviceAccess::MKNOD,
            _ => {
                return Err(RuntimeError::invalid(format!(
                    "device access {text:?}: only r, w and m are allowed"
                )))
            }
        };
        access = if any { access | bit } else { bit };
        any = true;
    }
    if !any {
        return Err(RuntimeError::invalid("device access is empty"));
    }
    Ok(access)
}

/// The five capability sets of a spec process in berth-ns's terms.
/// Capabilities the kernel does not know, or that the runtime itself does
/// not hold (and so cannot pass on), are left out with a warning on the
/// runtime's stderr, as runc does for unknown ones.
pub(crate) fn capability_sets(caps: Option<&LinuxCapabilities>) -> Result<CapabilitySets> {
    let Some(caps) = caps else {
        // No capabilities object: the process keeps none (runc's reading).
        return Ok(CapabilitySets::default());
    };
    let last = berth_ns::capabilities::kernel_last_cap();
    let held = berth_ns::capabilities::current_bounding_set();
    let mut warned: Vec<String> = Vec::new();
    let mut parse = |list: &Option<oci_spec::runtime::Capabilities>| -> Result<CapabilitySet> {
        let names: Vec<String> = list
            .iter()
            .flatten()
            .filter_map(|cap| serde_json::to_value(cap).ok())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let parsed = CapabilitySet::parse_spec_names(&names, last)?;
        let mut set = CapabilitySet::default();
        for cap in parsed.set.iter() {
            if held.contains(cap) {
                set.insert(cap);
            } else {
                warned.push(cap.name().to_owned());
            }
        }
        warned.extend(parsed.ignored);
        Ok(set)
    };
    let sets = CapabilitySets {
        bounding: parse(caps.bounding())?,
        effective: parse(caps.effective())?,
        permitted: parse(caps.permitted())?,
        inheritable: parse(caps.inheritable())?,
        ambient: parse(caps.ambient())?,
    };
    warned.sort();
    warned.dedup();
    if !warned.is_empty() {
        // Named after whichever program this runtime runs in.
        let program = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "berth-runtime".to_owned());
        eprintln!(
            "{program}: warning: leaving out capabilities this kernel or runtime lacks: {}",
            warned.join(", ")
        );
    }
    Ok(sets)
}

/// Where the container's cgroup goes: `linux.cgroupsPath` (absolute from
/// each hierarchy's root, relative below the runtime's own cgroup), or
/// `berth/<id>` below the runtime's own cgroup.
pub(crate) fn cgroup_path(spec: &Spec, id: &str) -> String {
    spec.linux()
        .as_ref()
        .and_then(|linux| linux.cgroups_path().clone())
        .map(|path| path.to_string_lossy().into_owned())
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| format!("{}/{id}", berth_cgroup::BERTH_CGROUP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn device_rules_start_from_deny_all() {
        let list = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(3)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(136)
                .access("rw")
                .build()
                .unwrap(),
        ];
        let rules = device_rules(&list).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0], DeviceRule::char(1, Some(3)));
        assert_eq!(rules[1].minor, None);
        assert_eq!(rules[1].access, DeviceAccess::READ | DeviceAccess::WRITE);
        assert!(parse_access("rx").is_err());
    }

    #[test]
    fn cgroups_paths() {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(Some(PathBuf::from("/a/b/c")));
        spec.set_linux(Some(linux));
        assert_eq!(cgroup_path(&spec, "x"), "/a/b/c");
        spec.set_linux(None);
        assert_eq!(cgroup_path(&spec, "x"), "berth/x");
    }

    #[test]
    fn resources_convert_with_unlimited_left_off() {
        let json = serde_json::json!({
            "memory": {"limit": 67108864, "swap": -1, "reservation": 0},
            "cpu": {"shares": 512, "quota": 50000, "period": 250000, "cpus": "0"},
            "pids": {"limit": -1},
            "blockIO": {"weight": 300, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
            "unified": {"memory.high": "max"}
        });
        let spec: LinuxResources = serde_json::from_value(json).unwrap();
        let out = resources(Some(&spec)).unwrap();
        assert_eq!(out.memory_limit, Some(64 << 20));
        assert_eq!(out.memory_swap, Some(SwapLimit::Unlimited));
        assert_eq!(out.memory_reservation, None);
        assert_eq!(out.cpu_shares, Some(512));
        assert_eq!(
            out.cpu_quota,
            Some(CpuQuota {
                quota_us: 50_000,
                period_us: 250_000
            })
        );
        assert_eq!(out.pids_limit, None);
        let io = out.block_io.unwrap();
        assert_eq!(io.weight, Some(300));
        assert_eq!(io.throttle_read_bps[0].rate, 1 << 20);
        assert_eq!(
            out.unified.get("memory.high").map(String::as_str),
            Some("max")
        );
    }
}

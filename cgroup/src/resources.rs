//! What a container may use, and the parsers for the CLI's flags.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::controller::devices::DeviceRule;
use crate::error::{CgroupError, Result};

/// Resource limits for a container's cgroup; `None` leaves a limit alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes (swap may not add to it).
    pub memory_limit: Option<u64>,
    /// Relative CPU weight in docker's "shares" (2..=262144, 1024 is the
    /// default); converted to `cpu.weight` on cgroup v2.
    pub cpu_shares: Option<u64>,
    /// Hard CPU cap (`--cpus`).
    pub cpu_quota: Option<CpuQuota>,
    /// CPUs the container may run on.
    pub cpuset_cpus: Option<CpuList>,
    /// Memory nodes the container may allocate from (same list syntax).
    pub cpuset_mems: Option<CpuList>,
    /// Maximum number of processes (and threads).
    pub pids_limit: Option<u64>,
    /// Device access: `Some(rules)` denies every device except what the
    /// rules allow (mknod included; [`DeviceRule::docker_defaults`] for a
    /// normal container), `None` leaves it as inherited (a privileged
    /// container).
    #[serde(default)]
    pub devices: Option<Vec<DeviceRule>>,
}

/// A CFS bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuQuota {
    /// Microseconds of CPU time per period (over all CPUs).
    pub quota_us: u64,
    /// The period in microseconds.
    pub period_us: u64,
}

impl CpuQuota {
    /// The period docker and the kernel use by default: 100 ms.
    pub const DEFAULT_PERIOD_US: u64 = 100_000;

    /// The quota for `cpus` CPUs (e.g. 0.5) with the default period.
    pub fn from_cpus(cpus: f64) -> Result<Self> {
        let invalid = |reason: &str| CgroupError::InvalidValue {
            what: "--cpus value",
            input: cpus.to_string(),
            reason: reason.to_owned(),
        };
        if !cpus.is_finite() || cpus <= 0.0 {
            return Err(invalid("must be a number greater than 0"));
        }
        let quota = (cpus * Self::DEFAULT_PERIOD_US as f64).round();
        // The kernel's minimum quota is 1 ms.
        if quota < 1000.0 {
            return Err(invalid("must be at least 0.01"));
        }
        if quota > u64::MAX as f64 / 2.0 {
            return Err(invalid("is too large"));
        }
        Ok(Self {
            quota_us: quota as u64,
            period_us: Self::DEFAULT_PERIOD_US,
        })
    }
}

/// A set of CPU (or memory node) numbers, written like the kernel does:
/// `0-2,4`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct CpuList(BTreeSet<u32>);

impl CpuList {
    /// The numbers in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// Whether `index` is in the set.
    pub fn contains(&self, index: u32) -> bool {
        self.0.contains(&index)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many numbers the set has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The first number of `self` that `available` lacks.
    pub fn first_missing_from(&self, available: &CpuList) -> Option<u32> {
        self.iter().find(|i| !available.contains(*i))
    }

    /// Parse kernel output, where an empty list is valid.
    pub(crate) fn parse_kernel(text: &str) -> Option<Self> {
        if text.trim().is_empty() {
            return Some(Self::default());
        }
        parse_cpu_list(text).ok()
    }
}

impl FromIterator<u32> for CpuList {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut numbers = self.iter().peekable();
        while let Some(start) = numbers.next() {
            let mut end = start;
            while numbers.peek() == Some(&(end + 1)) {
                end += 1;
                numbers.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for CpuList {
    type Err = CgroupError;
    fn from_str(s: &str) -> Result<Self> {
        parse_cpu_list(s)
    }
}

impl From<CpuList> for String {
    fn from(list: CpuList) -> Self {
        list.to_string()
    }
}

impl TryFrom<String> for CpuList {
    type Error = CgroupError;
    fn try_from(s: String) -> Result<Self> {
        CpuList::parse_kernel(&s).ok_or_else(|| CgroupError::InvalidValue {
            what: "CPU list",
            input: s,
            reason: "expected numbers and ranges like 0-2,4".into(),
        })
    }
}

/// The largest CPU or node number accepted (the kernel's NR_CPUS limit).
const MAX_INDEX: u32 = 8191;

/// Parse a CPU list such as `0-2,4` (docker's `--cpuset-cpus`).
pub fn parse_cpu_list(input: &str) -> Result<CpuList> {
    let invalid = |reason: String| CgroupError::InvalidValue {
        what: "CPU list",
        input: input.to_owned(),
        reason,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(invalid("it is empty; expected e.g. 0-2,4".into()));
    }
    let number = |s: &str| -> Result<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!("{s:?} is not a CPU number")));
        }
        match s.parse::<u32>() {
            Ok(n) if n <= MAX_INDEX => Ok(n),
            _ => Err(invalid(format!("{s} is larger than {MAX_INDEX}"))),
        }
    };
    let mut set = BTreeSet::new();
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((start, end)) => {
                let (start, end) = (number(start.trim())?, number(end.trim())?);
                if start > end {
                    return Err(invalid(format!("range {part} runs backwards")));
                }
                set.extend(start..=end);
            }
            None => {
                set.insert(number(part)?);
            }
        }
    }
    Ok(CpuList(set))
}

/// Parse a memory size like docker's `-m`: a whole or decimal number with an
/// optional unit `b`, `k`, `m` or `g` (powers of 1024, any case, `kb`/`mb`/
/// `gb` too); no unit means bytes. 0, garbage and overflow are errors.
pub fn parse_memory_size(input: &str) -> Result<u64> {
    let invalid = |reason: &str| CgroupError::InvalidValue {
        what: "memory size",
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let text = input.trim().to_ascii_lowercase();
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let multiplier: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => {
            return Err(invalid(
                "expected a number with an optional unit b, k, m or g",
            ))
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(invalid(
            "expected a number with an optional unit b, k, m or g",
        ));
    }
    let too_large = || invalid("is too large");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = u128::from(whole) * u128::from(multiplier);
    if !fraction.is_empty() {
        // Exact decimal arithmetic, rounded down to whole bytes.
        let digits = &fraction[..fraction.len().min(18)];
        let numerator: u128 = digits.parse().map_err(|_| too_large())?;
        bytes += numerator * u128::from(multiplier) / 10u128.pow(digits.len() as u32);
    }
    let bytes = u64::try_from(bytes).map_err(|_| too_large())?;
    // The kernel works in pages; keep clear of its "unlimited" value.
    if bytes > i64::MAX as u64 {
        return Err(too_large());
    }
    if bytes == 0 {
        return Err(invalid("must be greater than 0"));
    }
    Ok(bytes)
}

/// Parse docker's `--cpus` (a decimal number of CPUs, e.g. `0.5`): it must
/// be a finite number of at least 0.01.
pub fn parse_cpus(input: &str) -> Result<f64> {
    let cpus: f64 = input
        .trim()
        .parse()
        .map_err(|_| CgroupError::InvalidValue {
            what: "--cpus value",
            input: input.to_owned(),
            reason: "expected a decimal number of CPUs such as 1.5".into(),
        })?;
    CpuQuota::from_cpus(cpus).map_err(|e| match e {
        CgroupError::InvalidValue { what, reason, .. } => CgroupError::InvalidValue {
            what,
            input: input.to_owned(),
            reason,
        },
        other => other,
    })?;
    Ok(cpus)
}

/// Convert cgroup v1 `cpu.shares` to cgroup v2 `cpu.weight`, the way runc
/// and crun do: `1 + ((shares - 2) * 9999) / 262142`, shares clamped to
/// 2..=262144 so the weight stays in 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        for (input, bytes) in [
            ("64m", 64 << 20),
            ("64M", 64 << 20),
            ("64mb", 64 << 20),
            ("1g", 1 << 30),
            ("1.5G", 3 << 29),
            ("512k", 512 << 10),
            ("100", 100),
            ("100b", 100),
            (" 7K ", 7 << 10),
            ("0.5k", 512),
        ] {
            assert_eq!(parse_memory_size(input).unwrap(), bytes, "{input}");
        }
        for bad in [
            "",
            "0",
            "0m",
            "10x",
            "m",
            "-1",
            "1e3",
            "1..5m",
            "5.m",
            ".5m",
            "1 m",
            "64mib",
            "99999999999999999999",
            "9999999999g",
            "0.0000001k",
        ] {
            let err = parse_memory_size(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    CgroupError::InvalidValue {
                        what: "memory size",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            parse_memory_size("10x").unwrap_err().to_string(),
            "invalid memory size \"10x\": expected a number with an optional unit b, k, m or g"
        );
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("0.5").unwrap(), 0.5);
        assert_eq!(parse_cpus("2").unwrap(), 2.0);
        for bad in ["-1", "0", "abc", "", "nan", "inf", "0.001"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
        assert!(parse_cpus("-1").unwrap_err().to_string().contains("\"-1\""));
        assert_eq!(
            CpuQuota::from_cpus(0.5).unwrap(),
            CpuQuota {
                quota_us: 50_000,
                period_us: 100_000
            }
        );
        assert_eq!(CpuQuota::from_cpus(1.25).unwrap().quota_us, 125_000);
    }

    #[test]
    fn cpu_lists() {
        let list = parse_cpu_list("0-2,4").unwrap();
        assert_eq!(list.iter().collect::<Vec<_>>(), [0, 1, 2, 4]);
        assert_eq!(list.to_string(), "0-2,4");
        assert_eq!(parse_cpu_list("4, 2,0-1,1\n").unwrap().to_string(), "0-2,4");
        assert_eq!(parse_cpu_list("99").unwrap().to_string(), "99");
        assert_eq!(parse_cpu_list("3-3").unwrap().to_string(), "3");
        for bad in ["", "a", "2-0", "1,,2", "-1", "1-", "0-99999", "1.5"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
        let available = parse_cpu_list("0-3").unwrap();
        assert_eq!(
            parse_cpu_list("1,5-6")
                .unwrap()
                .first_missing_from(&available),
            Some(5)
        );
        assert_eq!(CpuList::parse_kernel("\n"), Some(CpuList::default()));
    }

    #[test]
    fn shares_become_weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        // Out of range shares are clamped, not turned into invalid weights.
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(1 << 40), 10_000);
    }
}

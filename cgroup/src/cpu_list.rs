//! Sets of CPU or memory node numbers, in the kernel's list syntax.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{CgroupError, Result};

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

/// Parse a CPU (or memory node) list such as `0-2,4`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Parsers for human-written memory sizes and CPU counts.

use crate::error::{CgroupError, Result};
use crate::CpuQuota;

/// Parse a memory size the way docker reads one (`64m`): a whole or decimal number with an
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

/// Parse a number of CPUs written as a decimal number (e.g. `0.5`, as
/// docker takes it): it must be a finite number of at least 0.01.
pub fn parse_cpus(input: &str) -> Result<f64> {
    let cpus: f64 = input
        .trim()
        .parse()
        .map_err(|_| CgroupError::InvalidValue {
            what: "CPU count",
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
}

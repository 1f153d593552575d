//! Times as people and docker write them on the command line: RFC 3339
//! and its shorter forms, unix seconds, Go durations. One parser for
//! `logs --since/--until`, the prune filters' `until=` and image times.

use std::time::Duration;

use berth_state::Timestamp;

/// A point in time as docker's `--since`/`--until` and `until=` filters
/// take it: RFC 3339 (with or without a fraction and zone; a date alone
/// is its midnight, UTC), unix seconds with an optional fraction, or a Go
/// duration before `now`.
pub fn point_in_time(text: &str, now: Timestamp) -> Option<Timestamp> {
    let text = text.trim();
    if let Some(ago) = parse_go_duration(text) {
        let then = Timestamp::from_unix(0, 0).until(now).saturating_sub(ago);
        return Some(Timestamp::from_unix(then.as_secs(), then.subsec_nanos()));
    }
    if let Some((secs, fraction)) = split_unix(text) {
        return Some(Timestamp::from_unix(secs, fraction));
    }
    let (secs, nanos) = rfc3339(text)?;
    Some(Timestamp::from_unix(u64::try_from(secs).ok()?, nanos))
}

/// `1700000000` or `1700000000.5`.
fn split_unix(text: &str) -> Option<(u64, u32)> {
    let (secs, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !(fraction.is_empty() || digits(fraction) && fraction.len() <= 9) {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<u32>().ok()? * 10u32.pow(9 - fraction.len() as u32)
    };
    Some((secs.parse().ok()?, nanos))
}

/// Go's `time.ParseDuration`: `1h30m`, `10m`, `1.5s`, `300ms`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() || rest == "0" {
        return (rest == "0").then_some(Duration::ZERO);
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Seconds since the epoch (negative before 1970) and nanoseconds of RFC
/// 3339 and the shorter forms docker accepts:
/// `2026-01-02T15:04:05.5+01:00`, `2026-01-02T15:04:05`, `2026-01-02T15:04`,
/// `2026-01-02`.
pub fn rfc3339(text: &str) -> Option<(i64, u32)> {
    let (date, time) = text.split_once('T').unwrap_or((text, "00:00:00Z"));
    let mut parts = date.splitn(3, '-');
    let number = |s: Option<&str>, len: usize| -> Option<i64> {
        let s = s?;
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (year, month, day) = (
        number(parts.next(), 4)?,
        number(parts.next(), 2)?,
        number(parts.next(), 2)?,
    );
    let zone_at = time.find(['Z', 'z', '+', '-']).unwrap_or(time.len());
    let (clock, zone) = time.split_at(zone_at);
    let offset = match zone {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            sign * (number(Some(h), 2)? * 3600 + number(Some(m), 2)? * 60)
        }
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut fields = hms.split(':');
    let hour = number(fields.next(), 2)?;
    let minute = number(fields.next(), 2)?;
    let second = match fields.next() {
        Some(s) => number(Some(s), 2)?,
        None => 0,
    };
    if fields.next().is_some()
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let nanos = match fraction {
        "" => 0,
        f if f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32)
        }
        _ => return None,
    };
    // Days since the epoch of a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((
        days * 86_400 + hour * 3600 + minute * 60 + second - offset,
        nanos,
    ))
}

//! RFC 3339 UTC timestamps with microseconds, without a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Day count since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    micros: u32,
}

fn parts(t: SystemTime) -> Parts {
    // Times before 1970 do not occur on a running proxy; clamp rather than panic.
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Parts {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        micros: since.subsec_micros(),
    }
}

/// `2025-03-04T05:06:07.123456Z`: always UTC, always six fractional digits,
/// so timestamps sort as strings.
pub fn rfc3339_micros(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(27);
    write_rfc3339_micros(t, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// [`rfc3339_micros`], appended to `out` (ASCII only) without formatting
/// machinery: the writer stamps every record with it.
pub fn write_rfc3339_micros(t: SystemTime, out: &mut Vec<u8>) {
    let p = parts(t);
    push_padded(out, u64::try_from(p.year).unwrap_or(0), 4);
    out.push(b'-');
    push_padded(out, u64::from(p.month), 2);
    out.push(b'-');
    push_padded(out, u64::from(p.day), 2);
    out.push(b'T');
    push_padded(out, p.hour, 2);
    out.push(b':');
    push_padded(out, p.minute, 2);
    out.push(b':');
    push_padded(out, p.second, 2);
    out.push(b'.');
    push_padded(out, u64::from(p.micros), 6);
    out.push(b'Z');
}

/// `v` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut n = v;
    let mut i = digits.len();
    while n > 0 {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(digits.len() - width.min(digits.len()));
    out.extend_from_slice(&digits[start..]);
}

/// `20250304T050607.123456Z`: the suffix of a rotated audit file. Sorts as a
/// string, and contains no `:` (awkward in file names).
pub fn compact_micros(t: SystemTime) -> String {
    let p = parts(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:06}Z",
        p.year, p.month, p.day, p.hour, p.minute, p.second, p.micros
    )
}

/// Parses exactly the form [`rfc3339_micros`] writes.
pub fn parse_rfc3339_micros(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + se;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29T23:59:59.000001Z (leap day)
        let t = UNIX_EPOCH + Duration::from_secs(951_868_799) + Duration::from_micros(1);
        assert_eq!(rfc3339_micros(t), "2000-02-29T23:59:59.000001Z");
        assert_eq!(compact_micros(t), "20000229T235959.000001Z");
        // 2024-12-31T12:34:56.789012Z
        let t = UNIX_EPOCH + Duration::from_secs(1_735_648_496) + Duration::from_micros(789_012);
        assert_eq!(rfc3339_micros(t), "2024-12-31T12:34:56.789012Z");
    }

    #[test]
    fn parse_inverts_format() {
        for secs in [
            0u64,
            951_868_799,
            1_735_648_496,
            4_102_444_800,
            1_709_164_800,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(123_456);
            assert_eq!(parse_rfc3339_micros(&rfc3339_micros(t)), Some(t));
        }
        assert_eq!(parse_rfc3339_micros("2024-12-31T12:34:56Z"), None);
        assert_eq!(parse_rfc3339_micros("2024-13-31T12:34:56.000000Z"), None);
    }
}

//! Calendar arithmetic for the dates S3 puts on the wire (SigV4's `x-amz-date`, ISO 8601
//! in XML and headers), in one place: proleptic Gregorian, UTC, no time-zone database.

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub(crate) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Seconds since the epoch of a UTC calendar time; `None` when a field is out of range
/// (no leap seconds, days checked against the month).
pub(crate) fn unix_seconds(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<i64> {
    let valid = (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    valid.then(|| days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (ISO 8601 extended, UTC) into milliseconds
/// since the epoch; digits past the millisecond are dropped. Strict otherwise: `None` for
/// anything out of range or in another form.
pub(crate) fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = &b[range];
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let (year, month, day) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let secs = unix_seconds(year, month, day, hour, minute, second)?;
    let mut millis = 0;
    let rest = match b[19] {
        b'.' => {
            let digits = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            for (i, d) in b[20..20 + digits].iter().take(3).enumerate() {
                millis += i64::from(d - b'0') * [100, 10, 1][i];
            }
            &b[20 + digits..]
        }
        _ => &b[19..],
    };
    if rest != b"Z" {
        return None;
    }
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_forms() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601("2025-01-02T03:04:05.678Z"), Some(1_735_787_045_678));
        assert_eq!(parse_iso8601("2025-01-02T03:04:05.6Z"), Some(1_735_787_045_600));
        assert_eq!(parse_iso8601("2025-01-02T03:04:05.678999Z"), Some(1_735_787_045_678));
        assert_eq!(parse_iso8601("2024-02-29T23:59:59Z"), Some(1_709_251_199_000));
        for bad in [
            "2025-02-29T00:00:00Z",
            "2025-01-02T03:04:05",
            "2025-01-02T03:04:05+01:00",
            "2025-01-02T24:00:00Z",
            "2025-01-02T03:04:05.Z",
            "2025-1-02T03:04:05Z",
            "Thu, 02 Jan 2025 03:04:05 GMT",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!(d >= 1 && d <= days_in_month(y, m), "{y}-{m}-{d}");
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}

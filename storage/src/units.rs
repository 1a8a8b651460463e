//! Human units in configuration: sizes like `16MiB`, durations like `7d`.

use std::time::Duration;

/// Parses `123`, `4KiB`, `16MiB`, `5GiB`, `1TiB` (also `KB`/`MB`/`GB` as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 =
        num.parse().map_err(|_| format!("invalid size {s:?}: expected a number with an optional unit like 16MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        u => return Err(format!("invalid size {s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, TiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses `30s`, `15m`, `1h`, `7d`, `2w`, `500ms`, or combinations like `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("invalid duration {s:?}: a number needs a unit (ms, s, m, h, d, w)"))?;
        let (num, tail) = rest.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86_400),
            "w" => Duration::from_secs(n * 604_800),
            u => return Err(format!("invalid duration {s:?}: unknown unit {u:?} (use ms, s, m, h, d, w)")),
        };
        total += d;
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("5GiB"), Ok(5 << 30));
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("").is_err());
    }
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, secs) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s.is_multiple_of(secs) {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn round_trip() {
        for d in ["7d", "1h", "90s", "2w", "500ms", "15m", "36h"] {
            let v = parse_duration(d).expect("parse");
            assert_eq!(parse_duration(&format_duration(v)), Ok(v), "{d}");
        }
        assert_eq!(format_duration(Duration::from_secs(3 * 86_400)), "3d");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }
}

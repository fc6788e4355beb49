/*!
Numbers, sizes, dates and durations as people read and type them on the admin pages.
Pure functions; dates are civil UTC dates without a time-zone database (agreements only need
days).
*/

/// Seconds since the Unix epoch (0 if the clock is before it: a board without a battery
/// starts in 1970 until time is synced).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Bytes for people: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `500M`, `20G`, `1.5T`, `1024` (bytes); K, M, G, T are powers of 1024; a trailing `B` or
/// `iB` is allowed. Empty means "no limit".
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size: write a number with K, M, G or T, like 20G"))?;
    if !(n.is_finite() && n >= 0.0) || n * mult as f64 >= u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Some((n * mult as f64) as u64))
}

/// `3 min`, `2 h 5 min`, `4 d 3 h`.
pub fn duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{secs} s")
    }
}

/// `5 min ago`, or `never`.
pub fn ago(at: Option<u64>, now: u64) -> String {
    match at {
        None | Some(0) => "never".into(),
        Some(t) if t + 5 > now => "just now".into(),
        Some(t) => format!("{} ago", duration(now - t)),
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn datetime(secs: i64) -> String {
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Today's date as `YYYY-MM-DD` (UTC).
pub fn today() -> String {
    let (y, m, d) = civil_from_days((now_unix() / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Check a `YYYY-MM-DD` date; empty is allowed (no date).
pub fn check_date(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    let bad = || format!("{s:?} is not a date: write it as YYYY-MM-DD");
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return Err(bad());
    }
    let y: i64 = parts[0].parse().map_err(|_| bad())?;
    let m: u32 = parts[1].parse().map_err(|_| bad())?;
    let d: u32 = parts[2].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || d == 0 {
        return Err(bad());
    }
    // Round-trip through day numbers catches 31 April and 29 February of common years.
    if civil_from_days(days_from_civil(y, m, d)) != (y, m, d) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_empty_means_no_limit() {
        assert_eq!(parse_size("20G").unwrap(), Some(20 << 30));
        assert_eq!(parse_size("1.5 TiB").unwrap(), Some(3 << 39));
        assert_eq!(parse_size("512").unwrap(), Some(512));
        assert_eq!(parse_size(" ").unwrap(), None);
        assert!(parse_size("twenty").is_err());
        assert!(parse_size("-1G").is_err());
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn dates_round_trip_and_impossible_dates_are_refused() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(
            civil_from_days(days_from_civil(2026, 11, 25)),
            (2026, 11, 25)
        );
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2
        );
        assert!(check_date("2026-11-25").is_ok());
        assert!(check_date("2024-02-29").is_ok());
        assert!(check_date("2026-02-29").is_err());
        assert!(check_date("2026-04-31").is_err());
        assert!(check_date("25.11.2026").is_err());
        assert!(check_date("").is_ok());
        assert!("2026-01-01" < "2026-11-25", "ISO dates compare as strings");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(125), "2 min");
        assert_eq!(duration(7_500), "2 h 5 min");
        assert_eq!(duration(3 * 86_400 + 7_200), "3 d 2 h");
        assert_eq!(ago(None, 10), "never");
        assert_eq!(ago(Some(10), 310), "5 min ago");
        assert_eq!(ago(Some(10), 12), "just now");
    }
}

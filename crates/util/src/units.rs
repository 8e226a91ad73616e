//! Parsing of durations (`500ms`, `10s`, `5m`, `1h`) and sizes (`64MiB`).
//!
//! Written here rather than taken from `humantime`/`bytesize`: the API has
//! always accepted fractions (`1.5s`) and bare seconds (`7`), which those
//! crates reject, and every duration must fit the `i64` milliseconds it is
//! stored as, which they do not check.

use std::time::Duration;

/// Parses `500ms`, `10s`, `1.5s`, `5m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 10s, 5m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("`{s}` is out of range (at most 100 years)"))
}

/// The longest duration accepted: far below `i64::MAX` milliseconds, so
/// adding one to a timestamp can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Milliseconds of a duration that [`parse_duration`] accepted (saturating
/// for any other).
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds as the shortest of `250ms`, `5s`, `1m`, `2h` that is exact,
/// else seconds with a fraction (`1.5s`).
pub fn format_duration_ms(ms: i64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 && ms > 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 && ms > 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms if ms < 1000 => format!("{ms}ms"),
        ms => format!("{}s", ms as f64 / 1000.0),
    }
}

/// Parses `1048576`, `512KiB`, `64MiB`, `1GiB` (also `KB`/`MB`/`GB`, powers of 1000).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 64MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB or GiB)")),
    };
    value
        .checked_mul(factor)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn rejects_bad_durations() {
        assert!(parse_duration("ten seconds").is_err());
        assert!(parse_duration("10d").is_err());
        assert!(
            parse_duration("9999999999999h").is_err(),
            "a duration past i64 milliseconds is rejected, not wrapped"
        );
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1TiB").is_err());
    }
}

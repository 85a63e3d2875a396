//! When a run may send creates: `--start-at`, `--deadline` and `--max-duration`.
//!
//! Times are `HH:MM` (local time, the next time the clock shows it) or RFC 3339
//! (`2026-11-25T06:00:00+01:00`). Durations are `90s`, `45m`, `8h`, `1h30m`.

use std::time::Duration;

use chrono::{DateTime, Local, NaiveTime, TimeZone, Utc};

/// Why a time or duration was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Neither `HH:MM` nor RFC 3339 (the text given).
    #[error("{0:?} is not a time: use HH:MM (local, next occurrence) or RFC 3339 (2026-11-25T06:00:00Z)")]
    BadTime(String),
    /// Not a duration such as `90s` or `1h30m` (the text given).
    #[error("{0:?} is not a duration: use e.g. 90s, 45m, 8h or 1h30m")]
    BadDuration(String),
}

/// Parses a time as of `now`: `HH:MM` is the next time the local clock shows it (today if still
/// ahead, else tomorrow); RFC 3339 is taken as written.
pub fn parse_time(text: &str, now: DateTime<Local>) -> Result<DateTime<Utc>, TimeError> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let time = NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| TimeError::BadTime(text.to_string()))?;
    let mut date = now.date_naive();
    for _ in 0..3 {
        // A local time that falls in a DST gap doesn't exist that day; take the next day's.
        if let Some(at) = Local.from_local_datetime(&date.and_time(time)).earliest() {
            if at > now {
                return Ok(at.with_timezone(&Utc));
            }
        }
        date = date
            .succ_opt()
            .ok_or_else(|| TimeError::BadTime(text.to_string()))?;
    }
    Err(TimeError::BadTime(text.to_string()))
}

/// Parses `90s`, `45m`, `8h`, `1h30m`, `2h15m10s`.
pub fn parse_duration(text: &str) -> Result<Duration, TimeError> {
    let bad = || TimeError::BadDuration(text.to_string());
    let mut total = 0u64;
    let mut number = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let value: u64 = number.parse().map_err(|_| bad())?;
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
        any = true;
    }
    if !number.is_empty() || !any {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// How long from `now` until `at` (zero if it has passed).
pub fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Local> {
        Local.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap()
    }

    #[test]
    fn hh_mm_is_the_next_time_the_clock_shows_it() {
        let now = local(2026, 11, 24, 21, 30);
        let later_today = parse_time("23:00", now).unwrap();
        assert_eq!(later_today, local(2026, 11, 24, 23, 0).with_timezone(&Utc));
        let tomorrow = parse_time("06:00", now).unwrap();
        assert_eq!(tomorrow, local(2026, 11, 25, 6, 0).with_timezone(&Utc));
        let same_minute = parse_time("21:30", now).unwrap();
        assert_eq!(same_minute, local(2026, 11, 25, 21, 30).with_timezone(&Utc));
    }

    #[test]
    fn rfc3339_is_taken_as_written() {
        let now = local(2026, 11, 24, 21, 30);
        let at = parse_time("2026-11-25T06:00:00+01:00", now).unwrap();
        assert_eq!(at, Utc.with_ymd_and_hms(2026, 11, 25, 5, 0, 0).unwrap());
    }

    #[test]
    fn nonsense_times_and_durations_are_refused() {
        let now = local(2026, 11, 24, 21, 30);
        for text in ["25:00", "7pm", "", "2026-13-01T00:00:00Z"] {
            assert!(parse_time(text, now).is_err(), "{text:?}");
        }
        for text in ["", "10", "5x", "h", "1.5h", "99999999999999999999h"] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn durations_add_their_parts() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2h15m10s").unwrap(), Duration::from_secs(8110));
    }
}

//! RFC 3339 timestamps in UTC without a date library.
//!
//! Generation formats tens of millions of dates per second, so the hot path caches the text of
//! the current day and only rewrites the time-of-day digits when the second changes.

use std::time::{SystemTime, UNIX_EPOCH};

pub const MICROS_PER_SEC: i64 = 1_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or_default()
}

/// Days since 1970-01-01 for a proleptic Gregorian date (era-based day counting).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

#[inline]
fn put2(out: &mut [u8], at: usize, v: u32) {
    out[at] = b'0' + (v / 10) as u8;
    out[at + 1] = b'0' + (v % 10) as u8;
}

fn put_date(out: &mut [u8], days: i64) {
    // Years outside 0..=9999 cannot be written in RFC 3339; callers validate their ranges.
    let (year, month, day) = civil_from_days(days);
    let year = year.clamp(0, 9999) as u32;
    put2(out, 0, year / 100);
    put2(out, 2, year % 100);
    out[4] = b'-';
    put2(out, 5, month);
    out[7] = b'-';
    put2(out, 8, day);
    out[10] = b'T';
}

fn put_time(out: &mut [u8], secs_of_day: u32) {
    put2(out, 11, secs_of_day / 3600);
    out[13] = b':';
    put2(out, 14, secs_of_day / 60 % 60);
    out[16] = b':';
    put2(out, 17, secs_of_day % 60);
}

/// `YYYY-MM-DDTHH:MM:SSZ` for whole seconds since the epoch.
pub fn format_secs(secs: i64) -> [u8; 20] {
    let mut out = [0u8; 20];
    put_date(&mut out, secs.div_euclid(SECS_PER_DAY));
    put_time(&mut out, secs.rem_euclid(SECS_PER_DAY) as u32);
    out[19] = b'Z';
    out
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for microseconds since the epoch (truncated to milliseconds).
pub fn format_millis(micros: i64) -> [u8; 24] {
    let secs = micros.div_euclid(MICROS_PER_SEC);
    let millis = (micros.rem_euclid(MICROS_PER_SEC) / 1000) as u32;
    let mut out = [0u8; 24];
    out[..19].copy_from_slice(&format_secs(secs)[..19]);
    out[19] = b'.';
    out[20] = b'0' + (millis / 100) as u8;
    put2(&mut out, 21, millis % 100);
    out[23] = b'Z';
    out
}

/// Formats seconds, reusing the previous text when the second or the day has not changed.
#[derive(Debug, Clone)]
pub struct DateCache {
    secs: i64,
    day: i64,
    text: [u8; 20],
}

impl Default for DateCache {
    fn default() -> Self {
        Self { secs: 0, day: 0, text: format_secs(0) }
    }
}

impl DateCache {
    #[inline]
    pub fn get(&mut self, secs: i64) -> &[u8; 20] {
        if secs != self.secs {
            let day = secs.div_euclid(SECS_PER_DAY);
            if day != self.day {
                put_date(&mut self.text, day);
                self.day = day;
            }
            put_time(&mut self.text, secs.rem_euclid(SECS_PER_DAY) as u32);
            self.secs = secs;
        }
        &self.text
    }
}

/// Parses an RFC 3339 timestamp (`2025-01-01T00:00:00Z`, optional fraction, `Z` or `±HH:MM`)
/// into microseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bad = || format!("'{text}' is not an RFC 3339 timestamp such as 2025-01-01T00:00:00Z");
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err(bad());
    }
    let num = |from: usize, to: usize| -> Result<i64, String> {
        let part = b.get(from..to).ok_or_else(bad)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(part.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let seps_ok = b[4] == b'-' && b[7] == b'-' && matches!(b[10], b'T' | b't' | b' ') && b[13] == b':' && b[16] == b':';
    if !seps_ok {
        return Err(bad());
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let month_days = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let max_day = match month {
        2 if leap => 29,
        1..=12 => month_days[(month - 1) as usize],
        _ => return Err(bad()),
    };
    if day < 1 || day > max_day || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let mut pos = 19;
    let mut micros = 0i64;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 6 {
                micros = micros * 10 + i64::from(b[pos] - b'0');
            }
            pos += 1;
        }
        if pos == start {
            return Err(bad());
        }
        for _ in (pos - start)..6 {
            micros *= 10;
        }
    }
    let offset_secs = match &b[pos..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let h = num(pos + 1, pos + 3)?;
            let m = num(pos + 4, pos + 6)?;
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let off = h * 3600 + m * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * SECS_PER_DAY + hour * 3600 + minute * 60 + second.min(59) - offset_secs;
    Ok(secs * MICROS_PER_SEC + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_conversion_round_trips_across_leap_years() {
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(&format_secs(0), b"1970-01-01T00:00:00Z");
        assert_eq!(&format_secs(1_735_689_600), b"2025-01-01T00:00:00Z");
        assert_eq!(&format_secs(1_709_251_199), b"2024-02-29T23:59:59Z");
        assert_eq!(&format_millis(1_735_689_600 * MICROS_PER_SEC + 123_456), b"2025-01-01T00:00:00.123Z");
    }

    #[test]
    fn date_cache_matches_direct_formatting_through_day_changes() {
        let mut cache = DateCache::default();
        let start = 1_735_689_600 - 5000;
        for secs in (start..start + 200_000).step_by(7) {
            assert_eq!(cache.get(secs), &format_secs(secs));
        }
        // Going backwards must also be handled.
        assert_eq!(cache.get(start), &format_secs(start));
    }

    #[test]
    fn parses_zulu_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("2025-01-01T00:00:00Z"), Ok(1_735_689_600 * MICROS_PER_SEC));
        assert_eq!(parse_rfc3339("2025-01-01T01:00:00.5+01:00"), Ok(1_735_689_600 * MICROS_PER_SEC + 500_000));
        assert_eq!(parse_rfc3339("2024-12-31T23:00:00-01:00"), Ok(1_735_689_600 * MICROS_PER_SEC));
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for text in [
            "",
            "2025-01-01",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-01-01T24:00:00Z",
            "2025-01-01T00:00:00",
            "2025-01-01T00:00:00.Z",
            "2025-01-01T00:00:00+0100",
            "2025-01-0xT00:00:00Z",
        ] {
            assert!(parse_rfc3339(text).is_err(), "{text} should be rejected");
        }
    }
}

//! Wall-clock dates: unix time → calendar dates and RFC 3339 timestamps,
//! without a date library (what Ollama's answers and chat templates'
//! `strftime_now` need).

/// Unix milliseconds as RFC 3339 in UTC with milliseconds
/// (`2024-06-04T21:38:31.837Z`), as Ollama's `created_at` and `expires_at`.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_717_537_111_837), "2024-06-04T21:38:31.837Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    proptest! {
        /// Day by day, the calendar never skips or repeats a date.
        #[test]
        fn civil_dates_advance_by_one_day(days in -1_000_000i64..3_000_000) {
            let (y0, m0, d0) = civil_from_days(days);
            let (y1, m1, d1) = civil_from_days(days + 1);
            let next_day = (y1, m1, d1) == (y0, m0, d0 + 1);
            let next_month = d1 == 1 && ((y1, m1) == (y0, m0 + 1) || (y1, m1, m0) == (y0 + 1, 1, 12));
            prop_assert!(next_day || next_month, "{:?} → {:?}", (y0, m0, d0), (y1, m1, d1));
            prop_assert!((1..=31).contains(&d0) && (1..=12).contains(&m0));
        }
    }
}

//! Day numbers (days since 1970-01-01) of the demo's dates.

/// Microseconds in a day.
pub(super) const DAY_US: i64 = 86_400_000_000;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian); the demo's
/// dates are all valid.
pub(super) fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let date = chrono::NaiveDate::from_ymd_opt(y, m, d).expect("a valid date");
    (date - chrono::DateTime::UNIX_EPOCH.date_naive()).num_days() as i32
}

/// The civil date (year, month, day) of a day number.
pub(super) fn civil_from_days(days: i32) -> (i32, u32, u32) {
    use chrono::Datelike;
    let date = chrono::DateTime::UNIX_EPOCH.date_naive() + chrono::TimeDelta::days(days.into());
    (date.year(), date.month(), date.day())
}

/// The month (1 to 12) of a day number.
pub(super) fn month_of(days: i32) -> u32 {
    civil_from_days(days).1
}

/// The year and month of a day number.
pub(super) fn year_month(days: i32) -> (i32, u32) {
    let (y, m, _) = civil_from_days(days);
    (y, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2025, 1, 1), 20_089);
        assert_eq!(year_month(days_from_civil(2026, 9, 30)), (2026, 9));
        assert_eq!(year_month(days_from_civil(2024, 2, 29)), (2024, 2));
        for days in -800..30_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}

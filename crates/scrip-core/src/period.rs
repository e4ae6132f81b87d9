//! UTC calendar periods that caps reset on: day, ISO week (from Monday),
//! month, year, or none (a lifetime cap).

use std::fmt;
use std::str::FromStr;

use time::{Date, Duration, Month, OffsetDateTime, Time};

use crate::UnixSecs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Week,
    Month,
    Year,
    /// One period for the token's whole life.
    None,
}

/// The half-open window `[start, end)` a spend is counted in. `end` is
/// `None` for a lifetime cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: UnixSecs,
    pub end: Option<UnixSecs>,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Year => "year",
            Period::None => "none",
        }
    }

    /// The window containing `now`. `lifetime_start` is where a `none`
    /// period starts (the token's creation); calendar periods ignore it.
    ///
    /// `now` is clamped into the range the calendar can represent, so every
    /// input gives an answer and no input panics.
    pub fn window(self, now: UnixSecs, lifetime_start: UnixSecs) -> Window {
        let now = now.clamp(UNIX_MIN, UNIX_MAX);
        let at = OffsetDateTime::from_unix_timestamp(now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let date = at.date();
        let (start, end) = match self {
            Period::None => {
                return Window {
                    start: lifetime_start,
                    end: None,
                }
            }
            Period::Day => (date, date.next_day()),
            Period::Week => {
                let monday =
                    date - Duration::days(i64::from(date.weekday().number_days_from_monday()));
                (monday, monday.checked_add(Duration::days(7)))
            }
            Period::Month => {
                let first = date.replace_day(1).unwrap_or(date);
                let next = if first.month() == Month::December {
                    Date::from_calendar_date(first.year() + 1, Month::January, 1).ok()
                } else {
                    first.replace_month(first.month().next()).ok()
                };
                (first, next)
            }
            Period::Year => {
                let first =
                    Date::from_calendar_date(date.year(), Month::January, 1).unwrap_or(date);
                (
                    first,
                    Date::from_calendar_date(first.year() + 1, Month::January, 1).ok(),
                )
            }
        };
        Window {
            start: midnight(start),
            end: Some(end.map(midnight).unwrap_or(UNIX_MAX)),
        }
    }
}

/// Calendar bounds kept well inside what `time` represents: years 1..=9998.
const UNIX_MIN: UnixSecs = -62_135_596_800; // 0001-01-01T00:00:00Z
const UNIX_MAX: UnixSecs = 253_370_764_800; // 9998-12-31T00:00:00Z

fn midnight(date: Date) -> UnixSecs {
    date.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp()
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("period must be one of day, week, month, year, none")]
pub struct UnknownPeriod;

impl FromStr for Period {
    type Err = UnknownPeriod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Period::Day),
            "week" => Ok(Period::Week),
            "month" => Ok(Period::Month),
            "year" => Ok(Period::Year),
            "none" => Ok(Period::None),
            _ => Err(UnknownPeriod),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(y: i32, m: u8, d: u8, h: u8, mi: u8, s: u8) -> UnixSecs {
        let month = Month::try_from(m).unwrap_or(Month::January);
        let date = Date::from_calendar_date(y, month, d).unwrap_or(Date::MIN);
        let t = Time::from_hms(h, mi, s).unwrap_or(Time::MIDNIGHT);
        date.with_time(t).assume_utc().unix_timestamp()
    }

    #[test]
    fn month_of_leap_february() {
        let w = Period::Month.window(ts(2028, 2, 29, 23, 59, 59), 0);
        assert_eq!(w.start, ts(2028, 2, 1, 0, 0, 0));
        assert_eq!(w.end, Some(ts(2028, 3, 1, 0, 0, 0)));
        assert_eq!(w.end.unwrap_or(0) - w.start, 29 * 86_400);
        let w = Period::Month.window(ts(2027, 2, 10, 0, 0, 0), 0);
        assert_eq!(w.end.unwrap_or(0) - w.start, 28 * 86_400);
    }

    #[test]
    fn december_rolls_into_next_year() {
        let w = Period::Month.window(ts(2026, 12, 31, 23, 59, 59), 0);
        assert_eq!(w.start, ts(2026, 12, 1, 0, 0, 0));
        assert_eq!(w.end, Some(ts(2027, 1, 1, 0, 0, 0)));
        let w = Period::Year.window(ts(2026, 12, 31, 23, 59, 59), 0);
        assert_eq!(w.start, ts(2026, 1, 1, 0, 0, 0));
        assert_eq!(w.end, Some(ts(2027, 1, 1, 0, 0, 0)));
        // One second later is the next year.
        let w = Period::Year.window(ts(2027, 1, 1, 0, 0, 0), 0);
        assert_eq!(w.start, ts(2027, 1, 1, 0, 0, 0));
    }

    #[test]
    fn leap_year_is_366_days() {
        let w = Period::Year.window(ts(2028, 6, 1, 0, 0, 0), 0);
        assert_eq!(w.end.unwrap_or(0) - w.start, 366 * 86_400);
        let w = Period::Year.window(ts(2100, 6, 1, 0, 0, 0), 0);
        assert_eq!(
            w.end.unwrap_or(0) - w.start,
            365 * 86_400,
            "2100 is not a leap year"
        );
        let w = Period::Year.window(ts(2000, 6, 1, 0, 0, 0), 0);
        assert_eq!(
            w.end.unwrap_or(0) - w.start,
            366 * 86_400,
            "2000 is a leap year"
        );
    }

    #[test]
    fn iso_week_starts_monday_across_year_end() {
        // 2026-12-31 is a Thursday; its ISO week runs Mon 2026-12-28 .. Mon 2027-01-04.
        let w = Period::Week.window(ts(2026, 12, 31, 12, 0, 0), 0);
        assert_eq!(w.start, ts(2026, 12, 28, 0, 0, 0));
        assert_eq!(w.end, Some(ts(2027, 1, 4, 0, 0, 0)));
        // A Sunday belongs to the week that began the Monday before.
        let w = Period::Week.window(ts(2027, 1, 3, 23, 59, 59), 0);
        assert_eq!(w.start, ts(2026, 12, 28, 0, 0, 0));
        // A Monday at midnight starts a new week.
        let w = Period::Week.window(ts(2027, 1, 4, 0, 0, 0), 0);
        assert_eq!(w.start, ts(2027, 1, 4, 0, 0, 0));
    }

    #[test]
    fn day_boundaries() {
        let w = Period::Day.window(ts(2026, 12, 3, 0, 0, 0), 0);
        assert_eq!(w.start, ts(2026, 12, 3, 0, 0, 0));
        assert_eq!(w.end, Some(ts(2026, 12, 4, 0, 0, 0)));
        let w = Period::Day.window(ts(2026, 12, 3, 23, 59, 59), 0);
        assert_eq!(w.start, ts(2026, 12, 3, 0, 0, 0));
    }

    #[test]
    fn lifetime_window_starts_at_anchor_and_never_ends() {
        let w = Period::None.window(ts(2030, 1, 1, 0, 0, 0), 1_700_000_000);
        assert_eq!(
            w,
            Window {
                start: 1_700_000_000,
                end: None
            }
        );
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        for p in [Period::Day, Period::Week, Period::Month, Period::Year] {
            let _ = p.window(i64::MIN, 0);
            let _ = p.window(i64::MAX, 0);
        }
    }

    #[test]
    fn names_round_trip() {
        for p in [
            Period::Day,
            Period::Week,
            Period::Month,
            Period::Year,
            Period::None,
        ] {
            assert_eq!(p.name().parse::<Period>(), Ok(p));
        }
        assert!("monthly".parse::<Period>().is_err());
    }

    proptest! {
        #[test]
        fn window_contains_now_and_is_aligned(now in 0i64..4_102_444_800, which in 0usize..4) {
            let p = [Period::Day, Period::Week, Period::Month, Period::Year][which];
            let w = p.window(now, 0);
            let end = w.end.unwrap_or(i64::MAX);
            prop_assert!(w.start <= now && now < end);
            prop_assert_eq!(w.start % 86_400, 0);
            prop_assert_eq!(end % 86_400, 0);
            // The next window starts exactly where this one ends.
            prop_assert_eq!(p.window(end, 0).start, end);
            // And the second before the start belongs to the previous window.
            prop_assert_eq!(p.window(w.start - 1, 0).end, Some(w.start));
            let len_days = (end - w.start) / 86_400;
            let ok = match p {
                Period::Day => len_days == 1,
                Period::Week => len_days == 7,
                Period::Month => (28..=31).contains(&len_days),
                Period::Year => len_days == 365 || len_days == 366,
                Period::None => false,
            };
            prop_assert!(ok, "{} window of {} days", p, len_days);
        }
    }
}

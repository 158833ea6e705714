//! Cron schedules for `rotation.schedule`, evaluated in `rotation.timeZone`.
//!
//! Dialect: standard 5-field cron, `minute hour day-of-month month day-of-week`, parsed and
//! matched by the `croner` crate. Names (`MON`, `JAN`) in any case; `0` and `7` are Sunday; when
//! both day fields are restricted a day matching either runs (Vixie cron). croner's extensions
//! are accepted too: `L` (last), `W` (nearest weekday), `#` (nth weekday), `?` (same as `*`) and
//! a `+` before the day-of-week (both day fields must match). The macros `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily` and `@hourly` are accepted; `@reboot` and seconds or year
//! fields are not, since a rotation has neither a boot nor sub-minute precision.
//!
//! Time zone: any IANA name (default UTC), from the system tz database or, where the image has
//! none, the copy bundled into the binary.
//!
//! Daylight saving time, as Vixie cron and croner do it:
//! - a fixed time that does not exist on a spring-forward day (`30 2 * * *` in Europe/Berlin on
//!   the last Sunday of March) runs **once**, at the first instant after the gap (03:00);
//! - a fixed time that happens twice on a fall-back day runs **once**, at its first occurrence;
//! - wildcard or stepped hours (`0 * * * *`) run at every real occurrence: none in the gap, both
//!   in the repeated hour.

use std::fmt;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Path of the cron expression in an ApiKey, for validation messages.
pub const SCHEDULE_FIELD: &str = "spec.rotation.schedule";
/// Path of the time zone in an ApiKey, for validation messages.
pub const TIME_ZONE_FIELD: &str = "spec.rotation.timeZone";

/// Runs sampled by [`Schedule::shortest_interval`]: over a year of a weekly schedule.
pub const INTERVAL_SAMPLES: usize = 64;
/// 2001-01-01T00:00:00Z, a Monday: where [`Schedule::shortest_interval`] starts sampling.
const INTERVAL_REFERENCE: Timestamp = Timestamp::constant(978_307_200, 0);

const MACROS: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// Why a schedule or time zone was refused; [`ScheduleError::field`] names the field to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression is malformed, or describes no time that ever comes.
    #[error("invalid cron schedule \"{expression}\": {reason}")]
    Expression {
        /// The expression as given.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not in the tz database.
    #[error(
        "unknown time zone \"{name}\"; use an IANA name such as UTC, Europe/Berlin or America/New_York"
    )]
    TimeZone {
        /// The name as given.
        name: String,
    },
}

impl ScheduleError {
    /// The ApiKey field this error is about: [`SCHEDULE_FIELD`] or [`TIME_ZONE_FIELD`].
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::Expression { .. } => SCHEDULE_FIELD,
            ScheduleError::TimeZone { .. } => TIME_ZONE_FIELD,
        }
    }
}

/// A parsed cron expression bound to a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    time_zone: TimeZone,
}

impl Schedule {
    /// Parse `expression` to run in `time_zone` (an IANA name; `None` is UTC).
    ///
    /// The time zone is checked first, so a bad zone is reported even with a bad expression:
    /// both are wrong, and the zone is the one a validation message can name precisely.
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let time_zone = resolve_time_zone(time_zone)?;
        let invalid = |reason: String| ScheduleError::Expression {
            expression: expression.to_owned(),
            reason,
        };
        check_shape(expression).map_err(invalid)?;
        let cron = parse_cron(expression).map_err(|e| invalid(e.to_string()))?;
        let schedule = Schedule {
            expression: expression.to_owned(),
            cron,
            time_zone,
        };
        if schedule.next_after(never_runs_probe()).is_none() {
            return Err(invalid("it never runs (no such date)".to_owned()));
        }
        Ok(schedule)
    }

    /// The first run strictly after `after`, or `None` past the years croner searches (5000).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let zoned = after.to_zoned(self.time_zone.clone());
        // Exclusive search: croner first steps to the next wall-clock second, so the result is
        // strictly later even when `after` has a fraction of a second.
        let next = self.cron.find_next_occurrence(&zoned, false).ok()?;
        Some(next.timestamp())
    }

    /// The gap between the first two runs after `after`: the schedule's interval around that
    /// time, which the planner bounds jitter by. Calendar schedules vary (a monthly run is 28 to
    /// 31 days apart, a daily one 23 or 25 hours across a DST change), hence "after".
    pub(crate) fn interval_after(&self, after: Timestamp) -> Option<Duration> {
        let first = self.next_after(after)?;
        let second = self.next_after(first)?;
        Duration::try_from(second.duration_since(first)).ok()
    }

    /// The shortest gap between runs, sampled over the first [`INTERVAL_SAMPLES`] runs after a
    /// fixed reference date, so validation gives the same answer whenever it runs. An overlap
    /// window must be shorter than this or two replaced tokens would be valid at once.
    pub fn shortest_interval(&self) -> Duration {
        let mut runs =
            std::iter::successors(self.next_after(INTERVAL_REFERENCE), |t| self.next_after(*t));
        let Some(mut previous) = runs.next() else {
            return Duration::MAX;
        };
        runs.take(INTERVAL_SAMPLES)
            .filter_map(|run| {
                let gap = Duration::try_from(run.duration_since(previous)).ok();
                previous = run;
                gap
            })
            .min()
            .unwrap_or(Duration::MAX)
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is evaluated in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.time_zone
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let zone = self.time_zone.iana_name().unwrap_or("UTC");
        write!(f, "{} ({zone})", self.expression)
    }
}

fn resolve_time_zone(name: Option<&str>) -> Result<TimeZone, ScheduleError> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|_| ScheduleError::TimeZone {
            name: name.to_owned(),
        }),
    }
}

/// croner's reading of the dialect: five fields, no seconds, no years.
fn parse_cron(expression: &str) -> Result<Cron, croner::errors::CronError> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
}

/// Where a search for a schedule's next run tells whether it runs at all, as fast as possible.
///
/// `0 0 30 2 *` parses but never runs. Without years in the dialect, anything that runs at all
/// runs within any 28 years that skip no leap day (the Gregorian weekday cycle; the last 29
/// years before croner's search limit contain no century). From an earlier start croner walks
/// on to its limit before giving up: 5,000 years, about 8 ms per refusal, paid by the controller
/// and the verifier on every read of such an ApiKey.
fn never_runs_probe() -> Timestamp {
    let year = i16::try_from(croner::YEAR_UPPER_LIMIT - 29).expect("croner's limit is a year");
    jiff::civil::date(year, 1, 1)
        .to_zoned(TimeZone::UTC)
        .expect("a date in jiff's range")
        .timestamp()
}

/// Refuse what croner would accept but the dialect does not (seconds, years, unknown macros),
/// with a message that says so in cron terms.
fn check_shape(expression: &str) -> Result<(), String> {
    let trimmed = expression.trim();
    if trimmed.starts_with('@') {
        return if MACROS.iter().any(|m| m.eq_ignore_ascii_case(trimmed)) {
            Ok(())
        } else {
            Err(format!("unknown macro; use one of {}", MACROS.join(", ")))
        };
    }
    match trimmed.split_whitespace().count() {
        5 => Ok(()),
        n => Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {n}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn runs(schedule: &Schedule, after: &str, count: usize) -> Vec<String> {
        std::iter::successors(schedule.next_after(ts(after)), |t| schedule.next_after(*t))
            .take(count)
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn weekly_in_utc() {
        let schedule = Schedule::parse("0 3 * * MON", None).unwrap();
        // 2026-11-22 is a Sunday.
        assert_eq!(
            runs(&schedule, "2026-11-22T10:00:00Z", 2),
            ["2026-11-23T03:00:00Z", "2026-11-30T03:00:00Z"]
        );
    }

    #[test]
    fn evaluated_in_the_time_zone() {
        let schedule = Schedule::parse("0 3 * * MON", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            runs(&schedule, "2026-12-20T00:00:00Z", 1),
            ["2026-12-21T02:00:00Z"]
        );
        let summer = runs(&schedule, "2026-07-01T00:00:00Z", 1);
        assert_eq!(summer, ["2026-07-06T01:00:00Z"]);
    }

    #[test]
    fn next_after_is_strictly_after() {
        let schedule = Schedule::parse("0 3 * * *", None).unwrap();
        assert_eq!(
            schedule.next_after(ts("2026-01-01T03:00:00Z")),
            Some(ts("2026-01-02T03:00:00Z"))
        );
        assert_eq!(
            schedule.next_after(ts("2026-01-01T02:59:59.999Z")),
            Some(ts("2026-01-01T03:00:00Z"))
        );
        assert_eq!(
            schedule.next_after(ts("2026-01-01T03:00:00.5Z")),
            Some(ts("2026-01-02T03:00:00Z"))
        );
    }

    #[test]
    fn berlin_spring_forward_runs_a_missing_time_once_after_the_gap() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
        let schedule = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            runs(&schedule, "2026-03-28T00:00:00Z", 3),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST, right after the gap
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
    }

    #[test]
    fn berlin_fall_back_runs_a_repeated_time_once() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let schedule = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            runs(&schedule, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn new_york_transitions() {
        // 2026-03-08: 02:00 EST becomes 03:00 EDT.
        let spring = Schedule::parse("30 2 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            runs(&spring, "2026-03-07T00:00:00Z", 3),
            [
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z"
            ]
        );
        // 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
        let fall = Schedule::parse("30 1 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            runs(&fall, "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
    }

    #[test]
    fn hourly_runs_every_real_hour_across_fall_back() {
        let schedule = Schedule::parse("0 * * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            runs(&schedule, "2026-10-24T23:30:00Z", 4),
            [
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T02:00:00Z",
                "2026-10-25T03:00:00Z",
            ]
        );
    }

    #[test]
    fn interval_follows_the_calendar() {
        let weekly = Schedule::parse("0 3 * * MON", None).unwrap();
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(
            weekly.interval_after(ts("2026-11-22T00:00:00Z")),
            Some(week)
        );
        let daily = Schedule::parse("0 3 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            daily.interval_after(ts("2026-03-27T12:00:00Z")),
            Some(Duration::from_secs(23 * 3_600))
        );
        let every_15 = Schedule::parse("*/15 * * * *", None).unwrap();
        assert_eq!(
            every_15.interval_after(ts("2026-01-01T00:00:00Z")),
            Some(Duration::from_secs(900))
        );
    }

    #[test]
    fn names_macros_and_extensions() {
        let named = Schedule::parse("0 3 1 jan,Jul mon", None).unwrap();
        // Day-of-month and day-of-week restricted: either matches (Vixie cron).
        assert_eq!(
            runs(&named, "2026-01-01T12:00:00Z", 2),
            ["2026-01-05T03:00:00Z", "2026-01-12T03:00:00Z"]
        );
        let daily = Schedule::parse("@daily", None).unwrap();
        assert_eq!(
            runs(&daily, "2026-05-05T05:05:00Z", 1),
            ["2026-05-06T00:00:00Z"]
        );
        let weekly = Schedule::parse("@WEEKLY", None).unwrap();
        assert_eq!(
            runs(&weekly, "2026-11-22T00:00:00Z", 1),
            ["2026-11-29T00:00:00Z"]
        );
        let last_day = Schedule::parse("0 0 L * *", None).unwrap();
        assert_eq!(
            runs(&last_day, "2028-02-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
        // Both day fields must match: 29 February on a Monday, 28 years apart.
        let leap_monday = Schedule::parse("0 0 29 2 +MON", None).unwrap();
        assert_eq!(
            runs(&leap_monday, "2026-01-01T00:00:00Z", 2),
            ["2044-02-29T00:00:00Z", "2072-02-29T00:00:00Z"]
        );
        let sunday = Schedule::parse("0 0 * * 7", None).unwrap();
        assert_eq!(
            runs(&sunday, "2026-11-20T00:00:00Z", 1),
            ["2026-11-22T00:00:00Z"]
        );
    }

    #[test]
    fn bad_expressions_blame_the_schedule_field() {
        for bad in [
            "",
            "0 3 * *",
            "0 0 3 * * *",
            "0 0 3 * * * 2026",
            "61 * * * *",
            "0 24 * * *",
            "0 0 0 * *",
            "0 0 * 13 *",
            "0 0 * * FOO",
            "x * * * *",
            "@reboot",
            "@every 1h",
            "0 0 30 2 *",
        ] {
            let err = Schedule::parse(bad, None).unwrap_err();
            assert_eq!(err.field(), SCHEDULE_FIELD, "{bad:?}");
            assert!(matches!(err, ScheduleError::Expression { .. }), "{bad:?}");
        }
        let err = Schedule::parse("0 3 * *", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid cron schedule \"0 3 * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 4"
        );
        let never = Schedule::parse("0 0 31 4 *", None).unwrap_err();
        assert!(never.to_string().contains("never runs"), "{never}");
    }

    #[test]
    fn the_rarest_days_run_and_impossible_ones_are_refused() {
        // 29 February falls on each weekday once in 28 years, and so does a fifth weekday of
        // February: the longest wait a schedule that runs can have.
        for weekday in 0..=6 {
            for rare in [
                format!("0 0 29 2 +{weekday}"),
                format!("0 0 * 2 {weekday}#5"),
            ] {
                assert!(Schedule::parse(&rare, None).is_ok(), "{rare}");
            }
        }
        for never in [
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "0 0 30 2 +1",
            "0 0 31 2 +5",
        ] {
            assert!(Schedule::parse(never, None).is_err(), "{never}");
        }
    }

    #[test]
    fn unknown_time_zones_blame_the_time_zone_field() {
        for bad in [
            "Mars/Olympus",
            "",
            "Europe/berlin ",
            "../../etc/passwd",
            "+01:00",
        ] {
            let err = Schedule::parse("0 3 * * *", Some(bad)).unwrap_err();
            assert_eq!(err.field(), TIME_ZONE_FIELD, "{bad:?}");
            assert_eq!(
                err,
                ScheduleError::TimeZone {
                    name: bad.to_owned()
                }
            );
        }
        assert!(Schedule::parse("0 3 * * *", Some("UTC")).is_ok());
        assert_eq!(
            Schedule::parse("0 3 * * *", Some("Asia/Kolkata"))
                .unwrap()
                .to_string(),
            "0 3 * * * (Asia/Kolkata)"
        );
    }

    fn field(max: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_owned()),
            (0..=max).prop_map(|n| n.to_string()),
            (1..=max.min(12)).prop_map(|n| format!("*/{n}")),
            (0..=max, 0..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (0..=max, 0..=max).prop_map(|(a, b)| format!("{a},{b}")),
        ]
    }

    /// Expressions that run at least weekly, so a minute-by-minute check stays cheap.
    fn frequent_expression() -> impl Strategy<Value = String> {
        let day_of_week = prop_oneof![
            Just("*".to_owned()),
            Just("MON-FRI".to_owned()),
            (0..=6u32).prop_map(|n| n.to_string()),
        ];
        (field(59), field(23), day_of_week).prop_map(|(m, h, w)| format!("{m} {h} * * {w}"))
    }

    fn expression() -> impl Strategy<Value = String> {
        let day = prop_oneof![
            Just("*".to_owned()),
            (1..=28u32).prop_map(|n| n.to_string())
        ];
        let month = prop_oneof![
            Just("*".to_owned()),
            (1..=12u32).prop_map(|n| n.to_string())
        ];
        (field(59), field(23), day, month, field(6))
            .prop_map(|(m, h, d, mo, w)| format!("{m} {h} {d} {mo} {w}"))
    }

    /// Day fields that may never meet: any day of month (last days, `L`, `W`), one month or a
    /// short list, and a weekday that must match too (`+`, `#`) or may match instead.
    fn day_fields_expression() -> impl Strategy<Value = String> {
        let day = prop_oneof![
            (1..=31u32).prop_map(|n| n.to_string()),
            (28..=31u32).prop_map(|n| n.to_string()),
            Just("L".to_owned()),
            (1..=31u32).prop_map(|n| format!("{n}W")),
        ];
        let month = prop_oneof![
            (1..=12u32).prop_map(|n| n.to_string()),
            Just("2".to_owned()),
            Just("4,6,9,11".to_owned()),
        ];
        let weekday = prop_oneof![
            Just("*".to_owned()),
            (0..=6u32).prop_map(|n| n.to_string()),
            (0..=6u32).prop_map(|n| format!("+{n}")),
            (0..=6u32, 1..=5u32).prop_map(|(d, n)| format!("{d}#{n}")),
        ];
        (day, month, weekday).prop_map(|(d, mo, w)| format!("0 0 {d} {mo} {w}"))
    }

    fn instant() -> impl Strategy<Value = Timestamp> {
        // 2000-01-01 to 2040-01-01, at any second.
        (946_684_800i64..2_208_988_800).prop_map(|s| Timestamp::from_second(s).unwrap())
    }

    fn zone() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kolkata",
        ])
    }

    fn matches(schedule: &Schedule, t: Timestamp) -> bool {
        schedule
            .cron
            .is_time_matching(&t.to_zoned(schedule.time_zone.clone()))
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn next_after_is_strictly_increasing(expr in expression(), zone in zone(), t in instant()) {
            let schedule = Schedule::parse(&expr, Some(zone)).unwrap();
            let first = schedule.next_after(t).unwrap();
            let second = schedule.next_after(first).unwrap();
            prop_assert!(t < first && first < second);
            prop_assert!(schedule.interval_after(t).unwrap() > Duration::ZERO);
        }

        #[test]
        fn next_after_matches_and_skips_nothing(expr in frequent_expression(), t in instant()) {
            // Without DST every run is a wall-clock match; in a zone with DST a run may be
            // moved out of a gap, which the transition tests above pin down.
            let schedule = Schedule::parse(&expr, Some("Asia/Kolkata")).unwrap();
            let next = schedule.next_after(t).unwrap();
            prop_assert!(matches(&schedule, next));
            let mut minute = Timestamp::from_second(t.as_second() - t.as_second().rem_euclid(60) + 60).unwrap();
            while minute < next {
                prop_assert!(!matches(&schedule, minute), "{} skipped", minute);
                minute += jiff::SignedDuration::from_mins(1);
            }
        }

        #[test]
        fn refuses_exactly_the_schedules_that_never_run(expr in day_fields_expression(), zone in zone()) {
            // The full search: from 1970 to croner's limit, 5,000 years on.
            let cron = parse_cron(&expr).unwrap();
            let tz = TimeZone::get(zone).unwrap();
            let runs = cron
                .find_next_occurrence(&Timestamp::UNIX_EPOCH.to_zoned(tz), false)
                .is_ok();
            prop_assert_eq!(Schedule::parse(&expr, Some(zone)).is_ok(), runs, "{}", expr);
        }

        #[test]
        fn parse_never_panics(expr in "[0-9A-Za-z*/,#?@+ -]{0,30}", zone in "\\PC{0,20}") {
            let _ = Schedule::parse(&expr, Some(&zone));
            let _ = Schedule::parse(&expr, None);
        }
    }
}

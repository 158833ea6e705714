//! Durations as the spec writes them: Go's `time.ParseDuration` syntax plus `d` (24h) and `w`
//! (7d), e.g. `90d`, `2w`, `1h30m`, `8760h`, `1.5h`.
//!
//! Units: `ns`, `us` (also `µs`/`μs`), `ms`, `s`, `m`, `h`, `d`, `w`. No sign, no spaces, no
//! empty string, and no bare `0` except through [`parse_allow_zero`] (what `rotation.overlap`
//! accepts). A number may have a fraction (`1.5h`) with digits on both sides of the point, as
//! [`crate::api::DURATION_PATTERN`] requires; fraction digits beyond nanosecond precision are
//! dropped, as Go does. Arithmetic is checked: anything longer than `u64::MAX` nanoseconds
//! (about 584 years) is an error, never a wrap.
//!
//! Calendar units do not exist here: a day is always 24h and a "year" in the bounds is 8760h
//! (365 days), so [`FIVE_YEARS`] is 43800h whatever the leap years.

use std::ops::RangeInclusive;
use std::time::Duration;

/// One minute: the shortest lifetime or rotation interval.
pub(crate) const ONE_MINUTE: Duration = Duration::from_secs(60);
/// Five years of 8760h (365 days) each, i.e. 43800h: the longest lifetime or interval.
pub const FIVE_YEARS: Duration = Duration::from_secs(5 * 8760 * 3600);
/// The range `expiresAfter` and `rotation.every` must fall in.
pub const LIFETIME_RANGE: RangeInclusive<Duration> = ONE_MINUTE..=FIVE_YEARS;

const UNIT_HELP: &str = "use ns, us, ms, s, m, h, d or w";
/// Longest part of the input an error message repeats.
const MAX_ECHO_CHARS: usize = 64;

const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// Units in the order [`format`] writes them, largest first; `w` is parsed but never written,
/// because `30d` reads better than `4w2d`.
const FORMAT_UNITS: [(&str, u64); 7] = [
    ("d", 86_400 * NANOS_PER_SECOND),
    ("h", 3_600 * NANOS_PER_SECOND),
    ("m", 60 * NANOS_PER_SECOND),
    ("s", NANOS_PER_SECOND),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// A duration that could not be read, with the input (shortened) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{input}\": {kind}")]
pub struct DurationError {
    input: String,
    kind: DurationErrorKind,
}

impl DurationError {
    fn new(input: &str, kind: DurationErrorKind) -> DurationError {
        DurationError {
            input: shorten(input),
            kind,
        }
    }

    /// What is wrong, without the input.
    pub fn kind(&self) -> &DurationErrorKind {
        &self.kind
    }
}

/// What is wrong with a duration, in a user's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationErrorKind {
    /// The string is empty.
    #[error("a duration cannot be empty; write e.g. 720h or 30d")]
    Empty,
    /// `+` or `-` in front.
    #[error("a duration has no sign")]
    Sign,
    /// Spaces or other whitespace anywhere.
    #[error("remove the spaces (write 1h30m, not 1h 30m)")]
    Whitespace,
    /// A number without a unit, e.g. `90`.
    #[error("\"{0}\" needs a unit; {UNIT_HELP}")]
    MissingUnit(String),
    /// A unit nobody knows, e.g. `90x`.
    #[error("unknown unit \"{0}\"; {UNIT_HELP}")]
    UnknownUnit(String),
    /// A unit with no number in front, e.g. `h`.
    #[error("expected a number before \"{0}\"")]
    MissingNumber(String),
    /// Not digits with an optional fraction, e.g. `1.`, `.5`, `1.2.3`.
    #[error("\"{0}\" is not a number; write digits, with an optional fraction like 1.5")]
    BadNumber(String),
    /// Longer than about 584 years.
    #[error("too long to represent")]
    Overflow,
    /// Readable, but outside what the field allows.
    #[error("must be between {} and {}", describe_bound(*.min), describe_bound(*.max))]
    OutOfRange {
        /// Shortest allowed.
        min: Duration,
        /// Longest allowed.
        max: Duration,
    },
}

/// Read a duration such as `90d` or `1h30m`. A bare `0` is rejected: write `0s`, or use
/// [`parse_allow_zero`] where `0` is meaningful.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    parse_nanos(s)
        .map(Duration::from_nanos)
        .map_err(|kind| DurationError::new(s, kind))
}

/// [`parse`], also accepting a bare `0` (as `rotation.overlap` does: revoke at once).
pub fn parse_allow_zero(s: &str) -> Result<Duration, DurationError> {
    if s == "0" {
        Ok(Duration::ZERO)
    } else {
        parse(s)
    }
}

/// [`parse`], then require the result to lie in `range`, e.g. [`LIFETIME_RANGE`].
pub fn parse_in_range(s: &str, range: RangeInclusive<Duration>) -> Result<Duration, DurationError> {
    let duration = parse(s)?;
    if range.contains(&duration) {
        Ok(duration)
    } else {
        let kind = DurationErrorKind::OutOfRange {
            min: *range.start(),
            max: *range.end(),
        };
        Err(DurationError::new(s, kind))
    }
}

/// The canonical form: days, hours, minutes, seconds and sub-second units, largest first, each
/// written once and only when non-zero (`30d`, `1d12h`, `1h30m`, `1.5s` is `1s500ms`); zero is
/// `0s`. [`parse`] reads it back to the same value.
pub fn format(duration: Duration) -> String {
    let mut rest = duration.as_nanos();
    if rest == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, nanos) in FORMAT_UNITS {
        let count = rest / u128::from(nanos);
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(unit);
            rest %= u128::from(nanos);
        }
    }
    out
}

/// `s`, cut to [`MAX_ECHO_CHARS`] so a pasted blob cannot bloat a status message.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

fn describe_bound(bound: Duration) -> String {
    if bound == FIVE_YEARS {
        "5y (43800h)".to_owned()
    } else {
        format(bound)
    }
}

fn parse_nanos(s: &str) -> Result<u64, DurationErrorKind> {
    if s.is_empty() {
        return Err(DurationErrorKind::Empty);
    }
    if s.starts_with(['+', '-']) {
        return Err(DurationErrorKind::Sign);
    }
    if s.contains(char::is_whitespace) {
        return Err(DurationErrorKind::Whitespace);
    }
    let mut total = 0u64;
    let mut rest = s;
    while !rest.is_empty() {
        let (component, after) = next_component(rest)?;
        total = total
            .checked_add(component)
            .ok_or(DurationErrorKind::Overflow)?;
        rest = after;
    }
    Ok(total)
}

/// Read one `<number><unit>` from the front of `s`: its value in nanoseconds and the rest.
fn next_component(s: &str) -> Result<(u64, &str), DurationErrorKind> {
    let is_numeric = |c: char| c.is_ascii_digit() || c == '.';
    let number_end = s.find(|c| !is_numeric(c)).unwrap_or(s.len());
    let (number, after_number) = s.split_at(number_end);
    let unit_end = after_number.find(is_numeric).unwrap_or(after_number.len());
    let (unit, rest) = after_number.split_at(unit_end);
    if number.is_empty() {
        return Err(DurationErrorKind::MissingNumber(shorten(unit)));
    }
    if unit.is_empty() {
        return Err(DurationErrorKind::MissingUnit(shorten(number)));
    }
    let unit_nanos =
        unit_nanos(unit).ok_or_else(|| DurationErrorKind::UnknownUnit(shorten(unit)))?;
    Ok((scale(number, unit_nanos)?, rest))
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        // U+00B5 MICRO SIGN and U+03BC GREEK SMALL LETTER MU, as Go accepts both.
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3_600 * NANOS_PER_SECOND,
        "d" => 86_400 * NANOS_PER_SECOND,
        "w" => 7 * 86_400 * NANOS_PER_SECOND,
        _ => return None,
    })
}

/// `number` (digits, optionally `.` and more digits) times `unit_nanos`, checked.
fn scale(number: &str, unit_nanos: u64) -> Result<u64, DurationErrorKind> {
    let bad_number = || DurationErrorKind::BadNumber(shorten(number));
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !is_digits(whole) || fraction.is_some_and(|f| !is_digits(f)) {
        return Err(bad_number());
    }
    let whole_nanos = whole
        .bytes()
        .try_fold(0u64, |acc, b| {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
        .and_then(|n| n.checked_mul(unit_nanos))
        .ok_or(DurationErrorKind::Overflow)?;
    let fraction_nanos = fraction.map_or(0, |f| fraction_nanos(f, unit_nanos));
    whole_nanos
        .checked_add(fraction_nanos)
        .ok_or(DurationErrorKind::Overflow)
}

/// `0.<digits>` of a unit, in nanoseconds, truncated. Eighteen digits are below a nanosecond of
/// the largest unit (a week is 6.048e14 ns), so later digits cannot change the result, and
/// 10^18 × 6.048e14 still fits in a u128.
fn fraction_nanos(digits: &str, unit_nanos: u64) -> u64 {
    let digits = &digits.as_bytes()[..digits.len().min(18)];
    let (numerator, denominator) = digits.iter().fold((0u128, 1u128), |(n, d), b| {
        (n * 10 + u128::from(b - b'0'), d * 10)
    });
    // numerator < denominator, so the quotient is below unit_nanos and fits in u64.
    (numerator * u128::from(unit_nanos) / denominator) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn message(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn reads_the_spec_examples() {
        assert_eq!(parse("90d").unwrap(), secs(90 * 86_400));
        assert_eq!(parse("2w").unwrap(), secs(14 * 86_400));
        assert_eq!(parse("1h30m").unwrap(), secs(5_400));
        assert_eq!(parse("8760h").unwrap(), secs(8_760 * 3_600));
        assert_eq!(parse("1.5h").unwrap(), secs(5_400));
        assert_eq!(parse("720h").unwrap(), secs(30 * 86_400));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn reads_every_unit() {
        assert_eq!(parse("1ns").unwrap(), Duration::from_nanos(1));
        assert_eq!(parse("1us").unwrap(), Duration::from_micros(1));
        assert_eq!(parse("1µs").unwrap(), Duration::from_micros(1));
        assert_eq!(parse("1μs").unwrap(), Duration::from_micros(1));
        assert_eq!(parse("1ms").unwrap(), Duration::from_millis(1));
        assert_eq!(parse("1s").unwrap(), secs(1));
        assert_eq!(parse("1m").unwrap(), secs(60));
        assert_eq!(parse("1h").unwrap(), secs(3_600));
        assert_eq!(parse("1d").unwrap(), secs(86_400));
        assert_eq!(parse("1w").unwrap(), secs(604_800));
    }

    #[test]
    fn fractions_truncate_below_a_nanosecond() {
        assert_eq!(parse("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.0000000001s").unwrap(), secs(1));
        assert_eq!(
            parse("0.333333333333333333333333s").unwrap(),
            Duration::from_nanos(333_333_333)
        );
        assert_eq!(parse("1.25d").unwrap(), secs(30 * 3_600));
    }

    #[test]
    fn bare_zero_only_where_allowed() {
        assert_eq!(
            message("0"),
            r#""0": "0" needs a unit; use ns, us, ms, s, m, h, d or w"#
        );
        assert_eq!(parse_allow_zero("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_allow_zero("24h").unwrap(), secs(86_400));
        assert!(parse_allow_zero("00").is_err());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            message("90x"),
            r#""90x": unknown unit "x"; use ns, us, ms, s, m, h, d or w"#
        );
        assert_eq!(
            message("90"),
            r#""90": "90" needs a unit; use ns, us, ms, s, m, h, d or w"#
        );
        assert_eq!(
            message(""),
            r#""": a duration cannot be empty; write e.g. 720h or 30d"#
        );
        assert_eq!(message("-5m"), r#""-5m": a duration has no sign"#);
        assert_eq!(message("+5m"), r#""+5m": a duration has no sign"#);
        assert_eq!(
            message("1h 30m"),
            r#""1h 30m": remove the spaces (write 1h30m, not 1h 30m)"#
        );
        assert_eq!(message("h"), r#""h": expected a number before "h""#);
        assert_eq!(
            message("1.h"),
            r#""1.h": "1." is not a number; write digits, with an optional fraction like 1.5"#
        );
        assert_eq!(
            parse(".5h").unwrap_err().kind(),
            &DurationErrorKind::BadNumber(".5".into())
        );
        assert_eq!(
            parse("1.2.3h").unwrap_err().kind(),
            &DurationErrorKind::BadNumber("1.2.3".into())
        );
        assert_eq!(
            parse("1y").unwrap_err().kind(),
            &DurationErrorKind::UnknownUnit("y".into())
        );
        assert_eq!(
            parse("1H").unwrap_err().kind(),
            &DurationErrorKind::UnknownUnit("H".into())
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let overflow = Err(DurationErrorKind::Overflow);
        assert_eq!(
            parse("18446744073709551615ns").unwrap().as_nanos(),
            u64::MAX as u128
        );
        assert_eq!(
            parse("18446744073709551616ns").map_err(|e| e.kind),
            overflow
        );
        assert_eq!(parse("30501w").map_err(|e| e.kind), overflow);
        assert_eq!(parse("106752d106752d").map_err(|e| e.kind), overflow);
        assert_eq!(
            parse(&format!("{}s", "9".repeat(400))).map_err(|e| e.kind),
            overflow
        );
    }

    #[test]
    fn long_input_is_shortened_in_messages() {
        let err = parse(&"x".repeat(1_000)).unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn bounds_are_one_minute_to_five_years() {
        assert_eq!(FIVE_YEARS, parse("43800h").unwrap());
        assert_eq!(parse_in_range("1m", LIFETIME_RANGE).unwrap(), ONE_MINUTE);
        assert_eq!(
            parse_in_range("43800h", LIFETIME_RANGE).unwrap(),
            FIVE_YEARS
        );
        assert_eq!(
            parse_in_range("59s", LIFETIME_RANGE)
                .unwrap_err()
                .to_string(),
            r#""59s": must be between 1m and 5y (43800h)"#
        );
        assert!(parse_in_range("43800h1s", LIFETIME_RANGE).is_err());
        assert!(parse_in_range("1826d", LIFETIME_RANGE).is_err());
    }

    #[test]
    fn format_is_canonical() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(parse("720h").unwrap()), "30d");
        assert_eq!(format(parse("2w").unwrap()), "14d");
        assert_eq!(format(parse("90m").unwrap()), "1h30m");
        assert_eq!(format(parse("36h").unwrap()), "1d12h");
        assert_eq!(format(parse("1.5s").unwrap()), "1s500ms");
        assert_eq!(format(Duration::from_nanos(1_001)), "1us1ns");
    }

    fn unit() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["ns", "us", "µs", "ms", "s", "m", "h", "d", "w"])
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in any::<u64>()) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse(&format(duration)).unwrap(), duration);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s);
            let _ = parse_allow_zero(&s);
        }

        #[test]
        fn parse_never_panics_on_near_misses(s in "[0-9.µμa-z+ -]{0,24}") {
            let _ = parse(&s);
        }

        #[test]
        fn whatever_the_crd_pattern_admits_parses(
            s in "([0-9]{1,3}(\\.[0-9]{1,4})?(ns|us|µs|ms|s|m|h|d|w)){1,4}"
        ) {
            prop_assert!(parse(&s).is_ok());
        }

        #[test]
        fn components_add_up(parts in prop::collection::vec((0u32..5_000, unit()), 1..6)) {
            let texts: Vec<String> = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
            let each: Vec<Duration> = texts.iter().map(|t| parse(t).unwrap()).collect();
            let whole = parse(&texts.concat()).unwrap();
            prop_assert_eq!(whole, each.iter().sum::<Duration>());
            prop_assert!(each.iter().all(|d| *d <= whole));
        }
    }
}

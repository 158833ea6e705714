//! A time as RFC 3339 text in UTC, exactly as `jiff::Timestamp` displays it, written without
//! `fmt`: jiff's printer costs about 700 instructions through `write!`, a tenth of an audit line.

use std::io::Write as _;

use jiff::Timestamp;

/// Seconds of 10000-01-01T00:00:00Z: from there on, years have five digits.
const YEAR_10000: i64 = 253_402_300_800;

/// Append `at` as jiff displays it: `2026-11-26T18:11:28.611409052Z`, the fraction without
/// trailing zeros and left out when zero.
pub fn write_rfc3339(bytes: &mut Vec<u8>, at: Timestamp) {
    let (seconds, nanos) = (at.as_second(), at.subsec_nanosecond());
    // (jiff truncates toward zero: just before 1970, the seconds are 0 and the fraction negative.)
    if !(0..YEAR_10000).contains(&seconds) || nanos < 0 {
        // Before 1970 or after 9999: never now; jiff knows their signs and widths.
        let _ = write!(bytes, "{at}");
        return;
    }
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00";
    two_digits(&mut text[0..2], (year / 100) as u32);
    two_digits(&mut text[2..4], (year % 100) as u32);
    two_digits(&mut text[5..7], month);
    two_digits(&mut text[8..10], day);
    two_digits(&mut text[11..13], (second_of_day / 3600) as u32);
    two_digits(&mut text[14..16], (second_of_day / 60 % 60) as u32);
    two_digits(&mut text[17..19], (second_of_day % 60) as u32);
    bytes.extend_from_slice(&text);
    if nanos != 0 {
        let mut fraction = *b".000000000";
        let mut rest = nanos as u32;
        for digit in fraction[1..].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let end = fraction.iter().rposition(|&b| b != b'0').unwrap_or(0) + 1;
        bytes.extend_from_slice(&fraction[..end]);
    }
    bytes.push(b'Z');
}

fn two_digits(out: &mut [u8], n: u32) {
    out[0] = b'0' + (n / 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Year, month and day of the proleptic Gregorian calendar, `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days from 0 on).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(at: Timestamp) -> String {
        let mut bytes = Vec::new();
        write_rfc3339(&mut bytes, at);
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn written_as_jiff_displays_it() {
        // Every day of 1970 to 2100 (leap years, 2000 and 2100 among them) at its first and last
        // second, then every 997th day to 9999, with fractions of every length.
        let nanos = [
            0,
            1,
            10,
            120,
            500_000,
            611_409_052,
            999_999_999,
            100_000_000,
        ];
        let mut seconds: i64 = 0;
        let mut i = 0;
        while seconds + 86_399 <= Timestamp::MAX.as_second() {
            for offset in [0, 86_399] {
                let at = Timestamp::new(seconds + offset, nanos[i % nanos.len()]).unwrap();
                assert_eq!(written(at), at.to_string());
                i += 1;
            }
            seconds += if seconds < 4_133_980_800 {
                86_400
            } else {
                86_400 * 997
            };
        }
        for at in [
            Timestamp::MIN,
            Timestamp::MAX,
            Timestamp::new(-1, 500).unwrap(),
            Timestamp::now(),
        ] {
            assert_eq!(written(at), at.to_string());
        }
    }
}

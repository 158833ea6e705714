//! Text the verifier writes for every request (its answers, its audit lines), without `fmt` and
//! without escaping byte by byte what needs none: JSON strings, and times as RFC 3339 text.
//! Through `fmt` and serde_json's escaper, a `/v1/verify` answer and its audit line cost about
//! 7,000 instructions (`bench/instructions.sh`), a fifth of the request.

use std::io::Write as _;

use jiff::Timestamp;

/// Printable ASCII other than `"` and `\`: text that JSON and Rust's `Debug` both quote as is.
pub fn plain(value: &str) -> bool {
    // Eight bytes at a time: a byte under 0x20, at or over 0x7f, `"` or `\` sets its high bit in
    // `flags` (where one does, bytes above it may too, which changes nothing). The tail is padded
    // with a plain byte.
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v;
    let clean = |x: u64| {
        let flags = (x.wrapping_sub(ONES * 0x20) & !x)
            | ((x & !HIGH) + ONES)
            | x
            | zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')));
        flags & HIGH == 0
    };
    let mut chunks = value.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if !clean(u64::from_ne_bytes(word)) {
            return false;
        }
    }
    let tail = chunks.remainder();
    let mut word = [b'a'; 8];
    word[..tail.len()].copy_from_slice(tail);
    clean(u64::from_ne_bytes(word))
}

/// Append `value` between double quotes, as is.
pub fn quoted(bytes: &mut Vec<u8>, value: &str) {
    bytes.push(b'"');
    bytes.extend_from_slice(value.as_bytes());
    bytes.push(b'"');
}

/// Append `value` as a JSON string, escaped as serde_json escapes it.
pub fn json_str(bytes: &mut Vec<u8>, value: &str) {
    if plain(value) {
        quoted(bytes, value);
    } else {
        // Writing to a Vec cannot fail, and a str always serializes.
        let _ = serde_json::to_writer(&mut *bytes, value);
    }
}

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
    fn plain_is_printable_ascii_without_quote_or_backslash_at_any_position() {
        let reference = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
        for len in 0..20 {
            assert!(plain(&"x".repeat(len)));
            for at in 0..len {
                for b in 0..=0x7f_u8 {
                    let mut text = vec![b'x'; len];
                    text[at] = b;
                    let text = String::from_utf8(text).unwrap();
                    assert_eq!(plain(&text), reference(b), "{text:?}");
                }
                let mut text = "x".repeat(len);
                text.replace_range(at..at + 1, "\u{e9}");
                assert!(!plain(&text), "{text:?}");
            }
        }
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_escapes_them() {
        for value in [
            "",
            "content:pages:home",
            "say \"hi\"\\",
            "a\nb\u{7f}\u{e9}\u{1f980}",
        ] {
            let mut bytes = Vec::new();
            json_str(&mut bytes, value);
            assert_eq!(bytes, serde_json::to_vec(value).unwrap(), "{value:?}");
        }
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

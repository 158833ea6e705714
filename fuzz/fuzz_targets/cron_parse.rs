//! `Schedule::parse` on arbitrary input: the first line is the expression, the optional second the
//! time zone. Never panics, and an accepted schedule runs strictly after a given time.

#![no_main]

use jiff::Timestamp;
use keysmith_core::schedule::Schedule;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let (expression, time_zone) = match input.split_once('\n') {
        Some((expression, time_zone)) => (expression, Some(time_zone)),
        None => (input, None),
    };
    let Ok(schedule) = Schedule::parse(expression, time_zone) else {
        return;
    };
    // 2026-01-01T00:00:00Z: a fixed instant keeps runs reproducible.
    let start = Timestamp::from_second(1_767_225_600).unwrap();
    if let Some(next) = schedule.next_after(start) {
        assert!(next > start);
    }
});

//! `duration::parse` on arbitrary strings: never panics, and what it reads formats back to itself.

#![no_main]

use keysmith_core::duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    if let Ok(parsed) = duration::parse(input) {
        assert_eq!(
            duration::parse(&duration::format(parsed)).ok(),
            Some(parsed)
        );
        assert_eq!(duration::parse_allow_zero(input).ok(), Some(parsed));
    }
    let _ = duration::parse_in_range(input, duration::LIFETIME_RANGE);
});

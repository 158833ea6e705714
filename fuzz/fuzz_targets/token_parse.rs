//! `token::parse` on arbitrary bytes: never panics, and what it accepts is self-consistent.

#![no_main]

use keysmith_core::token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(presented) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = token::parse(presented) else {
        return;
    };
    assert!(presented.starts_with(parsed.id()));
    assert!(parsed.id().starts_with(parsed.prefix()));
    assert!(parsed.id().len() <= parsed.prefix().len() + token::ID_RANDOM_CHARS);
    assert!(parsed.random_len() > 0);
    assert_eq!(token::validate(presented).is_ok(), parsed.checksum_valid());
});

//! Grant patterns: parsing arbitrary text and matching it against arbitrary input never panics,
//! and a pattern without `*` matches exactly itself.
#![no_main]

use keysmith_core::grants::Pattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (&str, &str)| {
    let (pattern, input) = data;
    if let Ok(p) = Pattern::parse(pattern) {
        let matched = p.matches(input);
        if !pattern.contains('*') {
            assert_eq!(matched, pattern == input);
        }
    }
});

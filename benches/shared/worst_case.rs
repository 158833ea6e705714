//! The most expensive grants validation admits, shared by `benches/grants.rs` and the fixture of
//! `bench/tenants.sh` (`examples/load_fixture.rs`), so both measure the same spec.

use keysmith::grants;

/// 63 deny grants sharing the [`grants::MAX_PATTERNS`] patterns and
/// [`grants::MAX_PATTERN_BYTES`] bytes, each pattern scanning the whole action and failing at its
/// end, then `allow *`: an action of `a`s as long as [`grants::MAX_ACTION_LEN`] is checked
/// against every pattern, then allowed.
pub fn pattern_grants() -> Vec<serde_json::Value> {
    let budget = grants::MAX_PATTERNS - 1;
    let per_pattern = grants::MAX_PATTERN_BYTES / grants::MAX_PATTERNS;
    let deny = |i: usize| {
        let actions: Vec<String> = (i * budget / 63..(i + 1) * budget / 63)
            .map(|j| {
                let tail = format!("b{j}*");
                format!("*{}{tail}", "a".repeat(per_pattern - 1 - tail.len()))
            })
            .collect();
        serde_json::json!({ "effect": "deny", "actions": actions })
    };
    let mut list: Vec<serde_json::Value> = (0..63).map(deny).collect();
    list.push(serde_json::json!({ "effect": "allow", "actions": ["*"] }));
    list
}

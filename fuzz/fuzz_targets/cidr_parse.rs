//! CIDRs in `restrictions.ipAllowList`: any text is accepted as a network or rejected with an
//! error naming the entry, never a panic.
#![no_main]

use keysmith_core::api::{ApiKeySpec, Restrictions, TokenSlot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|cidr: String| {
    let spec = ApiKeySpec {
        tokens: vec![TokenSlot { name: "a".into(), ..Default::default() }],
        restrictions: Some(Restrictions { ip_allow_list: vec![cidr], ..Default::default() }),
        ..Default::default()
    };
    match keysmith_core::validation::validate(&spec) {
        Ok(valid) => assert_eq!(valid.ip_allow_list.len(), 1),
        Err(invalid) => assert_eq!(invalid.0[0].field, "spec.restrictions.ipAllowList[0]"),
    }
});

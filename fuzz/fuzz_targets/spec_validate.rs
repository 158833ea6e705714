//! Spec validation fed with arbitrary YAML or JSON: whatever deserializes into an ApiKey spec must
//! validate or be rejected with field errors, never panic.
#![no_main]

use keysmith_core::api::ApiKeySpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let spec = serde_json::from_str::<ApiKeySpec>(text)
        .ok()
        .or_else(|| serde_saphyr::from_str::<ApiKeySpec>(text).ok());
    if let Some(spec) = spec {
        if let Err(invalid) = keysmith_core::validation::validate(&spec) {
            assert!(invalid.0.iter().all(|e| e.field.starts_with("spec")));
        }
    }
});

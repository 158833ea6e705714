//! What a real kube-apiserver (v1.37) refuses and the emulator once accepted, with the answers
//! measured there (issue 26): OpenAPI formats of Keysmith's CRD (`date-time`, `int32`),
//! request bodies over 3 MiB, and annotations over 256 KiB.

use keysmith_emulator::{Config, Emulator};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Api, Client};
use serde_json::{Value, json};

const CRD: &str = include_str!("../../../crds/apikeys.keysmith.dev.yaml");
const NOT_CHECKED: &str = "Invalid value: null: some validation rules were not checked because \
                           the object was invalid; correct the existing errors to complete validation";

async fn apikeys() -> (Emulator, Api<DynamicObject>) {
    let emu = Emulator::start(Config::default()).await.unwrap();
    emu.apply_yaml(CRD).unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keysmith.dev", "v1alpha1", "ApiKey"),
        "apikeys",
    );
    let client: Client = emu.client().await.unwrap();
    (emu, Api::namespaced_with(client, "default", &ar))
}

fn apikey(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn api_error(result: kube::Result<DynamicObject>) -> Status {
    match result {
        Err(kube::Error::Api(s)) => *s,
        Err(e) => panic!("expected an API error, got {e}"),
        Ok(o) => panic!("expected an API error, got {:?} stored", o.metadata.name),
    }
}

/// The causes of a 422, as (reason, field, message).
fn causes(status: &Status) -> Vec<(String, String, String)> {
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    let details = status.details.as_ref().expect("details");
    details
        .causes
        .iter()
        .map(|c| (c.reason.clone(), c.field.clone(), c.message.clone()))
        .collect()
}

fn cause(reason: &str, field: &str, message: &str) -> (String, String, String) {
    (reason.into(), field.into(), message.into())
}

#[tokio::test]
async fn date_time_and_integer_formats_are_checked_as_on_a_real_server() {
    let (_emu, api) = apikeys().await;
    let create = |spec: Value| {
        let api = api.clone();
        async move { api.create(&PostParams::default(), &apikey("k", spec)).await }
    };
    let slot = json!([{"name": "primary"}]);

    let err = api_error(create(json!({"tokens": slot, "expiresAt": "next tuesday"})).await);
    assert_eq!(
        causes(&err),
        [
            cause(
                "FieldValueTypeInvalid",
                "spec.expiresAt",
                "Invalid value: \"next tuesday\": spec.expiresAt in body must be of type date-time: \"next tuesday\""
            ),
            cause("FieldValueInvalid", "<nil>", NOT_CHECKED),
        ]
    );

    // strfmt's date-time, as the real server answered each of these.
    let accepted = [
        "2024-01-01T10:00:00Z",
        "2024-01-01t10:00:00z",
        "2024-02-29T10:00:00Z",
        "2024-01-01T10:00:00.5+01:00",
        "2024-01-01T10:00:00x5Z",
        "2024-01-01T10:00:00+99:99",
        "2024-01-01T10:00:00ZT10",
    ];
    let rejected = [
        "2024-01-01T10:00:00",
        "2024-01-01 10:00:00Z",
        "2024-02-30T10:00:00Z",
        "2023-02-29T10:00:00Z",
        "2024-01-01T25:00:00Z",
        "2024-01-01T23:59:60Z",
        "2024-01-01T10:00:00+0100",
        "2024-01-01T10:00Z",
        "2024-01-01",
        "2024-1-01T10:00:00Z",
        "2024-01-01T10:00:00.Z",
        "2024-01-01TT10:00:00Z",
        "",
    ];
    for at in accepted {
        let spec = json!({"tokens": slot, "expiresAt": at});
        let stored = api
            .create(&PostParams::default(), &apikey("ok", spec))
            .await
            .unwrap_or_else(|e| panic!("{at:?} is a date-time: {e}"));
        assert_eq!(stored.data["spec"]["expiresAt"], at);
        api.delete("ok", &Default::default()).await.unwrap();
    }
    for at in rejected {
        let err = api_error(create(json!({"tokens": slot, "expiresAt": at})).await);
        assert_eq!(causes(&err)[0].0, "FieldValueTypeInvalid", "{at:?}");
    }

    // A value of another type is named by its Go type, against the format.
    let err = api_error(create(json!({"tokens": slot, "expiresAt": 5})).await);
    assert_eq!(
        causes(&err)[0].2,
        "Invalid value: \"int64\": spec.expiresAt in body must be of type date-time: \"int64\""
    );
    let err = api_error(create(json!({"tokens": slot, "description": 5})).await);
    assert_eq!(
        causes(&err),
        [
            cause(
                "FieldValueTypeInvalid",
                "spec.description",
                "Invalid value: \"integer\": spec.description in body must be of type string: \"integer\""
            ),
            cause("FieldValueInvalid", "<nil>", NOT_CHECKED),
        ]
    );

    // int32: out of range is reported without a field path, beside the range check.
    let checked = cause(
        "FieldValueInvalid",
        "<nil>",
        "Invalid value: \"\": Checked value must be of type integer with format int32 in spec.tokens[0].bytes",
    );
    let err =
        api_error(create(json!({"tokens": [{"name": "p", "bytes": 3_000_000_000u64}]})).await);
    assert_eq!(
        causes(&err),
        [
            checked.clone(),
            cause(
                "FieldValueInvalid",
                "spec.tokens[0].bytes",
                "Invalid value: 3000000000: spec.tokens[0].bytes in body should be less than or equal to 64.0"
            ),
        ]
    );
    let err = api_error(create(json!({"tokens": [{"name": "p", "bytes": 32.5}]})).await);
    assert_eq!(
        causes(&err),
        [
            cause(
                "FieldValueTypeInvalid",
                "spec.tokens[0].bytes",
                "Invalid value: \"float64\": spec.tokens[0].bytes in body must be of type int32: \"float64\""
            ),
            checked,
            cause("FieldValueInvalid", "<nil>", NOT_CHECKED),
        ]
    );
    // A whole float is an integer, and stored as one (the real server answers `32`).
    let whole = create(json!({"tokens": [{"name": "p", "bytes": 32.0}]})).await;
    assert_eq!(whole.unwrap().data["spec"]["tokens"][0]["bytes"], json!(32));
}

/// A body of exactly `size` bytes as kube-rs sends it: an ApiKey padded with an unknown field
/// (pruned, so only the body is big).
fn padded_apikey(name: &str, size: usize) -> DynamicObject {
    let mut key = apikey(name, json!({"tokens": [{"name": "p"}], "padding": ""}));
    let bare = serde_json::to_vec(&key).unwrap().len();
    key.data["spec"]["padding"] = json!("x".repeat(size - bare));
    assert_eq!(serde_json::to_vec(&key).unwrap().len(), size);
    key
}

#[tokio::test]
async fn bodies_over_three_mib_are_refused_with_413() {
    const LIMIT: usize = 3 * 1024 * 1024;
    let (_emu, api) = apikeys().await;
    api.create(&PostParams::default(), &padded_apikey("at-limit", LIMIT))
        .await
        .expect("exactly 3 MiB is accepted");
    let too_large = |result: kube::Result<DynamicObject>| {
        let status = api_error(result);
        assert_eq!(
            (
                status.code,
                status.reason.as_str(),
                status.message.as_str(),
                status.details.is_none()
            ),
            (
                413,
                "RequestEntityTooLarge",
                "Request entity too large: limit is 3145728",
                true
            )
        );
    };
    too_large(
        api.create(&PostParams::default(), &padded_apikey("over", LIMIT + 1))
            .await,
    );
    too_large(
        api.replace(
            "at-limit",
            &PostParams::default(),
            &padded_apikey("at-limit", LIMIT + 1),
        )
        .await,
    );
    let patch = serde_json::to_value(padded_apikey("at-limit", LIMIT + 1)).unwrap();
    too_large(
        api.patch(
            "at-limit",
            &PatchParams::default(),
            &Patch::Merge(patch.clone()),
        )
        .await,
    );
    // The body is read before the object is looked up.
    too_large(
        api.patch("missing", &PatchParams::default(), &Patch::Merge(patch))
            .await,
    );
}

/// An ApiKey whose annotation keys and values total `bytes` in UTF-8, partly in `é` (2 bytes).
fn annotated(bytes: usize) -> DynamicObject {
    let mut key = apikey("annotated", json!({"tokens": [{"name": "p"}]}));
    let value = "é".repeat(1000);
    let fixed = "a.example/one".len() + value.len() + "c".len();
    key.metadata.annotations = Some(
        [
            ("a.example/one".to_string(), value),
            ("c".to_string(), "y".repeat(bytes - fixed)),
        ]
        .into(),
    );
    key
}

#[tokio::test]
async fn annotations_over_256_kib_are_invalid() {
    const LIMIT: usize = 256 * 1024;
    let (_emu, api) = apikeys().await;
    let err = api_error(
        api.create(&PostParams::default(), &annotated(LIMIT + 1))
            .await,
    );
    assert_eq!(
        causes(&err),
        [
            cause(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: may not be more than 262144 bytes"
            ),
            cause("FieldValueInvalid", "<nil>", NOT_CHECKED),
        ]
    );
    api.create(&PostParams::default(), &annotated(LIMIT))
        .await
        .expect("exactly 256 KiB of keys and values is accepted");
    // An update is held to the same limit.
    let patch = json!({"metadata": {"annotations": {"d": "z"}}});
    let err = api_error(
        api.patch("annotated", &PatchParams::default(), &Patch::Merge(patch))
            .await,
    );
    // The real server lists the cause three times on an update of a custom object, and
    // names it once in the message.
    let too_long = cause(
        "FieldValueTooLong",
        "metadata.annotations",
        "Too long: may not be more than 262144 bytes",
    );
    assert_eq!(
        causes(&err),
        [
            too_long.clone(),
            too_long.clone(),
            too_long,
            cause("FieldValueInvalid", "<nil>", NOT_CHECKED),
        ]
    );
    assert_eq!(
        err.message,
        format!(
            "ApiKey.keysmith.dev \"annotated\" is invalid: [metadata.annotations: Too long: may not \
             be more than 262144 bytes, <nil>: {NOT_CHECKED}]"
        )
    );
}

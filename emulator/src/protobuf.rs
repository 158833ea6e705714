//! Just enough of Kubernetes' protobuf encoding to read what kubectl's typed
//! clients send as `application/vnd.kubernetes.protobuf`: the access reviews
//! of `kubectl auth can-i` and the Namespaces, Secrets and ConfigMaps of
//! `kubectl create namespace|secret|configmap`. Other protobuf bodies are
//! refused with 415; every answer is JSON, which those clients also accept.

use serde_json::{Map, Value, json};

/// The `k8s\0` prefix of Kubernetes protobuf bodies.
const MAGIC: &[u8] = b"k8s\x00";

/// Fields of one protobuf message: (field number, wire value).
enum Wire<'a> {
    Bytes(&'a [u8]),
    Other,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let value = match key & 7 {
            0 => {
                varint(buf, &mut pos)?;
                Wire::Other
            }
            1 => {
                pos += 8;
                Wire::Other
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let bytes = buf.get(pos..pos.checked_add(len)?)?;
                pos += len;
                Wire::Bytes(bytes)
            }
            5 => {
                pos += 4;
                Wire::Other
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    (pos == buf.len()).then_some(out)
}

fn strings(buf: &[u8], names: &[(u64, &str)]) -> Option<Map<String, Value>> {
    let mut m = Map::new();
    for (n, w) in fields(buf)? {
        if let (Some((_, name)), Wire::Bytes(b)) = (names.iter().find(|(k, _)| *k == n), w) {
            let s = String::from_utf8(b.to_vec()).ok()?;
            match m.get_mut(*name) {
                Some(Value::Array(a)) => a.push(json!(s)),
                _ if *name == "groups" => {
                    m.insert(name.to_string(), json!([s]));
                }
                _ => {
                    m.insert(name.to_string(), json!(s));
                }
            }
        }
    }
    Some(m)
}

fn message(buf: &[u8], field: u64) -> Option<&[u8]> {
    fields(buf)?
        .into_iter()
        .find_map(|(n, w)| match (n == field, w) {
            (true, Wire::Bytes(b)) => Some(b),
            _ => None,
        })
}

const RESOURCE_ATTRIBUTES: &[(u64, &str)] = &[
    (1, "namespace"),
    (2, "verb"),
    (3, "group"),
    (4, "version"),
    (5, "resource"),
    (6, "subresource"),
    (7, "name"),
];
const NON_RESOURCE_ATTRIBUTES: &[(u64, &str)] = &[(1, "path"), (2, "verb")];

fn string_map(entries: &[&[u8]], bytes_values: bool) -> Option<Map<String, Value>> {
    let mut m = Map::new();
    for entry in entries {
        let mut key = String::new();
        let mut value = Value::String(String::new());
        for (n, w) in fields(entry)? {
            let Wire::Bytes(b) = w else { continue };
            match n {
                1 => key = String::from_utf8(b.to_vec()).ok()?,
                2 if bytes_values => {
                    use base64::Engine;
                    value = json!(base64::engine::general_purpose::STANDARD.encode(b));
                }
                2 => value = json!(String::from_utf8(b.to_vec()).ok()?),
                _ => {}
            }
        }
        m.insert(key, value);
    }
    Some(m)
}

fn repeated(buf: &[u8], field: u64) -> Option<Vec<&[u8]>> {
    Some(
        fields(buf)?
            .into_iter()
            .filter_map(|(n, w)| match (n == field, w) {
                (true, Wire::Bytes(b)) => Some(b),
                _ => None,
            })
            .collect(),
    )
}

fn object_meta(buf: &[u8]) -> Option<Value> {
    let mut meta = strings(buf, &[(1, "name"), (2, "generateName"), (3, "namespace")])?;
    for (field, name) in [(11, "labels"), (12, "annotations")] {
        let entries = repeated(buf, field)?;
        if !entries.is_empty() {
            meta.insert(name.into(), Value::Object(string_map(&entries, false)?));
        }
    }
    Some(Value::Object(meta))
}

fn set_map(obj: &mut Value, field: &str, m: Map<String, Value>) {
    if !m.is_empty() {
        obj[field] = Value::Object(m);
    }
}

/// Decode a Namespace, Secret or ConfigMap; `None` for anything else.
pub fn decode_object(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(MAGIC)?;
    let type_meta = strings(message(unknown, 1)?, &[(1, "apiVersion"), (2, "kind")])?;
    let kind = type_meta.get("kind")?.as_str()?.to_string();
    let raw = message(unknown, 2).unwrap_or_default();
    let mut obj = json!({
        "apiVersion": type_meta.get("apiVersion").cloned().unwrap_or_default(),
        "kind": kind,
        "metadata": object_meta(message(raw, 1).unwrap_or_default())?,
    });
    match kind.as_str() {
        "Namespace" => {}
        "Secret" => {
            set_map(&mut obj, "data", string_map(&repeated(raw, 2)?, true)?);
            set_map(
                &mut obj,
                "stringData",
                string_map(&repeated(raw, 4)?, false)?,
            );
            if let Some(t) = strings(raw, &[(3, "type")])?.remove("type") {
                obj["type"] = t;
            }
        }
        "ConfigMap" => {
            set_map(&mut obj, "data", string_map(&repeated(raw, 2)?, false)?);
            set_map(
                &mut obj,
                "binaryData",
                string_map(&repeated(raw, 3)?, true)?,
            );
        }
        _ => return None,
    }
    Some(obj)
}

/// Decode an access-review request (SelfSubjectAccessReview,
/// SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectReview) into
/// its JSON form; `None` for anything else.
pub fn decode_review(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(MAGIC)?;
    let type_meta = strings(message(unknown, 1)?, &[(1, "apiVersion"), (2, "kind")])?;
    let kind = type_meta.get("kind")?.as_str()?.to_string();
    if !kind.ends_with("AccessReview") && kind != "SelfSubjectReview" {
        return None;
    }
    let raw = message(unknown, 2).unwrap_or_default();
    let mut spec = Map::new();
    if let Some(spec_buf) = message(raw, 2) {
        if let Some(ra) = message(spec_buf, 1) {
            spec.insert(
                "resourceAttributes".into(),
                Value::Object(strings(ra, RESOURCE_ATTRIBUTES)?),
            );
        }
        if let Some(nra) = message(spec_buf, 2) {
            spec.insert(
                "nonResourceAttributes".into(),
                Value::Object(strings(nra, NON_RESOURCE_ATTRIBUTES)?),
            );
        }
        spec.extend(strings(
            spec_buf,
            &[(3, "user"), (4, "groups"), (6, "uid")],
        )?);
    }
    Some(json!({
        "apiVersion": type_meta.get("apiVersion").cloned().unwrap_or_default(),
        "kind": kind,
        "metadata": {},
        "spec": spec,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_secret() {
        let entry = [field(1, b"TOKEN"), field(2, b"abc")].concat();
        let meta = [field(1, b"s"), field(3, b"default")].concat();
        let secret = [field(1, &meta), field(2, &entry), field(3, b"Opaque")].concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &secret)].concat();
        let v = decode_object(&body).expect("decodes");
        assert_eq!(v["metadata"], json!({"name": "s", "namespace": "default"}));
        assert_eq!(v["data"], json!({"TOKEN": "YWJj"}));
        assert_eq!(v["type"], "Opaque");
    }

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_self_subject_access_review() {
        let ra = [
            field(1, b"default"),
            field(2, b"create"),
            field(5, b"secrets"),
        ]
        .concat();
        let spec = field(1, &ra);
        let ssar = field(2, &spec);
        let tm = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &ssar)].concat();
        let v = decode_review(&body).expect("decodes");
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(
            v["spec"]["resourceAttributes"],
            json!({"namespace": "default", "verb": "create", "resource": "secrets"})
        );
    }
}

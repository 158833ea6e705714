//! Every rule an `ApiKey` spec must satisfy (SPEC section 8), as one pure function.
//!
//! The CRD schema and its CEL rules catch most of these at apply time, but an API server may run
//! without CEL (and CEL cannot compare `d`/`w` durations), so the controller and the verifier
//! re-validate everything here. [`validate`] returns either the spec parsed into the types the
//! planner and the verifier work with ([`ValidSpec`]), or every problem found, each naming its
//! field path and the rule in words a user can act on.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use jiff::Timestamp;

use crate::api::{
    ApiKeySpec, DNS_LABEL_PATTERN, Encoding, Grant, MAX_ACCESS_ENTRIES, MAX_ACCESS_NAME_LEN,
    MAX_ANNOTATION_VALUE_LEN, MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_METADATA_ENTRIES,
    MAX_PUBLISH, MAX_SLOT_NAME_LEN, MAX_SLOTS, MAX_SPEC_BYTES, MAX_TEMPLATE_ENTRIES, RestartTarget,
    TokenSlot, is_gateway_key,
};
use crate::duration;
use crate::grants::{CompiledGrants, MAX_FIELD_ENTRIES, MAX_PATTERN_BYTES, MAX_PATTERNS};
use crate::schedule::Schedule;
use crate::token;

/// Overlap when `rotation.overlap` is unset (capped at half the rotation interval).
pub(crate) const DEFAULT_OVERLAP: Duration = Duration::from_secs(3600);

/// Longest duration string (`expiresAfter`, `rotation.every`, `renewBefore`, `overlap`).
const MAX_DURATION_LEN: usize = 64;

/// Labels Keysmith sets on every Secret it manages; a template may not change them.
const MANAGED_LABELS: [&str; 2] = [crate::api::MANAGED_BY_LABEL, crate::api::APIKEY_LABEL];

/// One problem with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, e.g. `spec.rotation.overlap` or `spec.tokens[1].prefix`.
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a spec, in field order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSpec(pub Vec<FieldError>);

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

impl std::error::Error for InvalidSpec {}

/// A spec that passed every rule, parsed.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    /// The token slots, in spec order.
    pub slots: Vec<ValidSlot>,
    /// Hard end of the whole key.
    pub expires_at: Option<Timestamp>,
    /// When tokens are replaced.
    pub rotation: RotationPolicy,
    /// Client networks allowed to use the key; empty: any.
    pub ip_allow_list: Vec<IpNet>,
}

/// One token slot, with every default applied.
#[derive(Debug, Clone)]
pub struct ValidSlot {
    /// Slot name.
    pub name: String,
    /// Token prefix.
    pub prefix: String,
    /// Random bytes per token.
    pub bytes: u32,
    /// Encoding of the random bytes.
    pub encoding: Encoding,
    /// Key in the Secret's data.
    pub secret_key: String,
    /// Lifetime of a token; `None`: no expiry.
    pub lifetime: Option<Duration>,
    /// Rotate this long before expiry; `None` when tokens do not expire or the key does not rotate.
    pub renew_before: Option<Duration>,
    /// The slot's permissions, compiled for the verifier.
    pub grants: CompiledGrants,
}

/// When tokens are replaced.
#[derive(Debug, Clone)]
pub struct RotationPolicy {
    /// Scheduled rotation, if any.
    pub cadence: Option<Cadence>,
    /// How long a replaced token keeps verifying.
    pub overlap: Duration,
    /// GitOps trigger value.
    pub trigger: Option<String>,
}

/// A rotation cadence.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// Every so long after the token was issued.
    Every(Duration),
    /// On a cron schedule.
    Schedule(Box<Schedule>),
}

/// Check every rule of SPEC section 8 and parse the spec. Never panics, whatever the input.
pub fn validate(spec: &ApiKeySpec) -> Result<ValidSpec, InvalidSpec> {
    let mut errors = Errors::default();

    // The verifier keeps every key in memory: bound the whole, which the field bounds alone
    // would let grow to tens of megabytes.
    let size = json_size(spec);
    if size > MAX_SPEC_BYTES {
        errors.push(
            "spec",
            format!("is {size} bytes as JSON; at most {MAX_SPEC_BYTES} bytes allowed"),
        );
    }
    errors.fits("spec.description", spec.description.as_deref(), 1024);
    if let Some(env) = &spec.environment {
        check_dns_label(&mut errors, "spec.environment", env, 63);
    }
    let key_lifetime = spec
        .expires_after
        .as_deref()
        .and_then(|v| errors.period("spec.expiresAfter", v));
    let expires_at = spec.expires_at.as_deref();
    let expires_at = expires_at.filter(|v| errors.fits("spec.expiresAt", Some(v), 64));
    let expires_at = expires_at.and_then(|v| {
        errors.check(
            "spec.expiresAt",
            v.parse::<Timestamp>().map_err(|_| {
                format!("{v:?} is not an RFC 3339 timestamp; write it like 2027-06-30T00:00:00Z")
            }),
        )
    });
    let key_grants = compile_grants(&mut errors, "spec.grants", &spec.grants);
    let rotation = spec.rotation.clone().unwrap_or_default();
    let cadence = parse_cadence(&mut errors, &rotation);
    let renew_before = rotation
        .renew_before
        .as_deref()
        .and_then(|v| errors.positive("spec.rotation.renewBefore", v));
    let overlap = parse_overlap(&mut errors, rotation.overlap.as_deref(), cadence.as_ref());
    let slots = validate_slots(&mut errors, spec, key_lifetime, renew_before, key_grants);
    // Renewal ahead of expiry is on when the key rotates at all (a cadence) or asks for it
    // (renewBefore); without either, tokens run to expiry with Expiring/Expired warnings.
    let renews = cadence.is_some() || renew_before.is_some();
    let slots = slots
        .into_iter()
        .map(|slot| ValidSlot {
            renew_before: slot
                .lifetime
                .filter(|_| renews)
                .map(|life| renew_before.unwrap_or(life / 3)),
            ..slot
        })
        .collect::<Vec<_>>();
    if renew_before.is_some() && slots.iter().all(|s| s.lifetime.is_none()) {
        errors.push(
            "spec.rotation.renewBefore",
            "has no effect without a token lifetime; set spec.expiresAfter or remove renewBefore",
        );
    }
    let ip_allow_list = validate_restrictions(&mut errors, spec);
    validate_secret(&mut errors, spec);
    validate_publish(&mut errors, spec);
    errors
        .0
        .extend(crate::personal::owner_errors(spec.owner.as_ref()));
    validate_access(&mut errors, spec);

    if errors.0.is_empty() {
        Ok(ValidSpec {
            slots,
            expires_at,
            rotation: RotationPolicy {
                cadence,
                overlap,
                trigger: rotation.trigger,
            },
            ip_allow_list,
        })
    } else {
        Err(InvalidSpec(errors.0))
    }
}

/// The size of `spec` as JSON, counted without keeping the bytes.
fn json_size(spec: &ApiKeySpec) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, spec).map_or(0, |()| count.0)
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(field, message)).ok()
    }

    /// Whether `value` (if any) is at most `max` bytes long; a longer one is reported, and
    /// callers parse only values that fit, so no message repeats a huge value.
    fn fits(&mut self, field: impl fmt::Display, value: Option<&str>, max: usize) -> bool {
        match value.filter(|v| v.len() > max) {
            Some(v) => {
                self.push(
                    field.to_string(),
                    format!("is {} characters long; at most {max} allowed", v.len()),
                );
                false
            }
            None => true,
        }
    }

    /// A list item: not empty and at most `max` bytes long. Field names here and in
    /// [`Errors::count`] are formatted only when reported: formatting one per grant list and
    /// item was a tenth of the verifier's start-up at 100,000 keys.
    fn item(&mut self, field: impl fmt::Display, value: &str, max: usize) {
        if value.is_empty() {
            self.push(field.to_string(), "is empty");
        } else {
            self.fits(field, Some(value), max);
        }
    }

    /// At most `max` entries in a list or map.
    fn count(&mut self, field: impl fmt::Display, len: usize, max: usize) {
        if len > max {
            self.push(
                field.to_string(),
                format!("has {len} entries; at most {max} allowed"),
            );
        }
    }

    /// A duration greater than zero.
    fn positive(&mut self, field: &str, value: &str) -> Option<Duration> {
        if !self.fits(field, Some(value), MAX_DURATION_LEN) {
            return None;
        }
        let parsed = duration::parse(value)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                if d.is_zero() {
                    Err("must be greater than zero".to_string())
                } else {
                    Ok(d)
                }
            });
        self.check(field, parsed)
    }

    /// A lifetime or interval: within [`duration::LIFETIME_RANGE`] (1m to 5y).
    fn period(&mut self, field: &str, value: &str) -> Option<Duration> {
        if !self.fits(field, Some(value), MAX_DURATION_LEN) {
            return None;
        }
        let parsed = duration::parse_in_range(value, duration::LIFETIME_RANGE);
        self.check(field, parsed.map_err(|e| e.to_string()))
    }
}

fn is_dns_label(value: &str, max: usize) -> bool {
    let bytes = value.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let ends_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    !value.is_empty()
        && value.len() <= max
        && inner_ok
        && ends_ok(bytes.first())
        && ends_ok(bytes.last())
}

fn check_dns_label(errors: &mut Errors, field: &str, value: &str, max: usize) {
    if !is_dns_label(value, max) {
        errors.push(
            field,
            format!(
                "{value:?} is not a DNS label: use at most {max} lower-case letters, digits and '-', \
                 starting and ending with a letter or digit ({DNS_LABEL_PATTERN})"
            ),
        );
    }
}

fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(|label| is_dns_label(label, 63))
}

/// A key Kubernetes accepts in a Secret's `data`.
fn is_secret_data_key(key: &str) -> bool {
    let chars_ok = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    !key.is_empty() && key.len() <= 253 && chars_ok && key != "." && key != ".."
}

fn compile_grants(errors: &mut Errors, field: &str, grants: &[Grant]) -> CompiledGrants {
    if grants.len() > 64 {
        errors.push(
            field,
            format!("has {} grants; at most 64 allowed", grants.len()),
        );
    }
    // The schema's bounds, repeated for API servers that skip them.
    for (i, grant) in grants.iter().enumerate() {
        let conditions = grant.conditions.as_ref();
        let lists = [
            ("actions", Some(&grant.actions), 64, 256),
            ("resources", grant.resources.as_ref(), 64, 256),
            ("fields", grant.fields.as_ref(), 256, 256),
            (
                "conditions.status",
                conditions.and_then(|c| c.status.as_ref()),
                64,
                64,
            ),
            (
                "conditions.locales",
                conditions.and_then(|c| c.locales.as_ref()),
                64,
                64,
            ),
        ];
        for (name, list, max_len, max_item) in lists {
            let list = list.map_or(&[][..], Vec::as_slice);
            errors.count(format_args!("{field}[{i}].{name}"), list.len(), max_len);
            for (j, item) in list.iter().enumerate() {
                errors.item(format_args!("{field}[{i}].{name}[{j}]"), item, max_item);
            }
        }
    }
    // What one request may have to match, all grants together: the bound of docs/security.md.
    let patterns = grants
        .iter()
        .flat_map(|g| g.actions.iter().chain(g.resources.iter().flatten()));
    let (count, bytes) = patterns.fold((0, 0), |(n, b), p| (n + 1, b + p.len()));
    if count > MAX_PATTERNS {
        errors.push(
            field,
            format!(
                "has {count} action and resource patterns in all its grants; at most \
                 {MAX_PATTERNS} allowed"
            ),
        );
    }
    if bytes > MAX_PATTERN_BYTES {
        errors.push(
            field,
            format!(
                "has {bytes} bytes of action and resource patterns in all its grants; at most \
                 {MAX_PATTERN_BYTES} allowed"
            ),
        );
    }
    let fields: usize = grants
        .iter()
        .map(|g| g.fields.as_ref().map_or(0, Vec::len))
        .sum();
    if fields > MAX_FIELD_ENTRIES {
        errors.push(
            field,
            format!(
                "has {fields} fields entries in all its grants; at most {MAX_FIELD_ENTRIES} allowed"
            ),
        );
    }
    match CompiledGrants::compile(grants) {
        Ok(compiled) => compiled,
        Err(e) => {
            errors.push(format!("{field}{}", e.path()), e.error.to_string());
            CompiledGrants::default()
        }
    }
}

fn parse_cadence(errors: &mut Errors, rotation: &crate::api::Rotation) -> Option<Cadence> {
    if rotation.every.is_some() && rotation.schedule.is_some() {
        errors.push(
            "spec.rotation",
            "set at most one of rotation.every and rotation.schedule",
        );
    }
    if rotation.time_zone.is_some() && rotation.schedule.is_none() {
        errors.push(
            "spec.rotation.timeZone",
            "only applies to rotation.schedule; set a schedule or remove timeZone",
        );
    }
    errors.fits("spec.rotation.trigger", rotation.trigger.as_deref(), 253);
    if let Some(every) = &rotation.every {
        return errors
            .period("spec.rotation.every", every)
            .map(Cadence::Every);
    }
    let schedule = rotation.schedule.as_deref()?;
    let fits = errors.fits("spec.rotation.schedule", Some(schedule), 256);
    if !(errors.fits("spec.rotation.timeZone", rotation.time_zone.as_deref(), 64) && fits) {
        return None;
    }
    match Schedule::parse(schedule, rotation.time_zone.as_deref()) {
        Ok(s) => Some(Cadence::Schedule(Box::new(s))),
        Err(e) => {
            errors.push(e.field(), e.to_string());
            None
        }
    }
}

fn parse_overlap(
    errors: &mut Errors,
    overlap: Option<&str>,
    cadence: Option<&Cadence>,
) -> Duration {
    let interval = cadence.map(|c| match c {
        Cadence::Every(d) => *d,
        Cadence::Schedule(s) => s.shortest_interval(),
    });
    let default = interval.map_or(DEFAULT_OVERLAP, |i| DEFAULT_OVERLAP.min(i / 2));
    let Some(value) = overlap else {
        return default;
    };
    if !errors.fits("spec.rotation.overlap", Some(value), MAX_DURATION_LEN) {
        return default;
    }
    let parsed = duration::parse_allow_zero(value).map_err(|e| e.to_string());
    let overlap = errors
        .check("spec.rotation.overlap", parsed)
        .unwrap_or_default();
    if let Some(interval) = interval.filter(|i| overlap >= *i) {
        errors.push(
            "spec.rotation.overlap",
            format!(
                "{value} must be shorter than the rotation interval ({})",
                duration::format(interval)
            ),
        );
    }
    overlap
}

fn validate_slots(
    errors: &mut Errors,
    spec: &ApiKeySpec,
    key_lifetime: Option<Duration>,
    renew_before: Option<Duration>,
    key_grants: CompiledGrants,
) -> Vec<ValidSlot> {
    let n = spec.tokens.len();
    if n == 0 || n > MAX_SLOTS {
        errors.push(
            "spec.tokens",
            format!("has {n} slots; use 1 to {MAX_SLOTS}"),
        );
    }
    let mut names = HashSet::new();
    let mut secret_keys = HashSet::new();
    spec.tokens
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            let at = |f: &str| format!("spec.tokens[{i}].{f}");
            check_dns_label(errors, &at("name"), &slot.name, MAX_SLOT_NAME_LEN);
            if !names.insert(slot.name.as_str()) {
                errors.push(
                    at("name"),
                    format!(
                        "{:?} is used by another slot; slot names must be unique",
                        slot.name
                    ),
                );
            }
            check_slot_format(errors, i, slot);
            if !secret_keys.insert(slot.secret_key()) {
                errors.push(
                    at("secretKey"),
                    format!(
                        "{:?} is written by another slot; give each slot its own secretKey",
                        slot.secret_key()
                    ),
                );
            }
            let lifetime = match &slot.expires_after {
                Some(v) => errors.period(&at("expiresAfter"), v),
                None => key_lifetime,
            };
            if let (Some(renew), Some(life)) = (renew_before, lifetime)
                && renew >= life
            {
                errors.push(
                    "spec.rotation.renewBefore",
                    format!(
                        "{} must be shorter than the token lifetime of slot {:?} ({})",
                        duration::format(renew),
                        slot.name,
                        duration::format(life)
                    ),
                );
            }
            let grants = match &slot.grants {
                Some(own) => compile_grants(errors, &at("grants"), own),
                None => key_grants.clone(),
            };
            ValidSlot {
                name: slot.name.clone(),
                prefix: slot.prefix().to_string(),
                bytes: slot.bytes(),
                encoding: slot.encoding(),
                secret_key: slot.secret_key().to_string(),
                lifetime,
                renew_before: None,
                grants,
            }
        })
        .collect()
}

fn check_slot_format(errors: &mut Errors, i: usize, slot: &TokenSlot) {
    let at = |f: &str| format!("spec.tokens[{i}].{f}");
    let prefix = slot.prefix();
    if !token::is_valid_prefix(prefix) {
        errors.push(
            at("prefix"),
            format!(
                "{prefix:?} is not a valid prefix: use at most {} letters, digits and '_' (no '-')",
                token::MAX_PREFIX_LEN
            ),
        );
    }
    if !(token::MIN_BYTES..=token::MAX_BYTES).contains(&slot.bytes()) {
        errors.push(
            at("bytes"),
            format!(
                "{} is out of range: use {} to {}",
                slot.bytes(),
                token::MIN_BYTES,
                token::MAX_BYTES
            ),
        );
    }
    let key = slot.secret_key();
    if !is_secret_data_key(key) {
        errors.push(
            at("secretKey"),
            format!("{key:?} is not a valid Secret key: use at most 253 letters, digits, '-', '_' and '.'"),
        );
    }
    errors.count(at("metadata"), slot.metadata.len(), MAX_METADATA_ENTRIES);
    for (k, v) in &slot.metadata {
        if k.is_empty() || k.len() > 253 || v.chars().count() > 4096 {
            errors.push(
                at("metadata"),
                format!(
                    "entry {k:?} is too long or empty: keys 1..253, values up to 4096 characters"
                ),
            );
        }
    }
}

fn validate_restrictions(errors: &mut Errors, spec: &ApiKeySpec) -> Vec<IpNet> {
    let Some(r) = &spec.restrictions else {
        return Vec::new();
    };
    errors.count("spec.restrictions.ipAllowList", r.ip_allow_list.len(), 256);
    errors.count(
        "spec.restrictions.requiredHeaders",
        r.required_headers.len(),
        16,
    );
    let nets = r
        .ip_allow_list
        .iter()
        .enumerate()
        .filter_map(|(i, cidr)| {
            let field = format!("spec.restrictions.ipAllowList[{i}]");
            if !errors.fits(&field, Some(cidr), 64) {
                return None;
            }
            let parsed = parse_cidr(cidr).ok_or_else(|| {
                format!("{cidr:?} is not a CIDR: write an address range like 10.0.0.0/8 or 2001:db8::/32")
            });
            errors.check(&field, parsed)
        })
        .collect();
    let mut seen = HashSet::new();
    for (i, h) in r.required_headers.iter().enumerate() {
        let at = |f: &str| format!("spec.restrictions.requiredHeaders[{i}].{f}");
        let name_ok = !h.name.is_empty()
            && h.name.len() <= 256
            && h.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            errors.push(
                at("name"),
                format!("{:?} is not a valid HTTP header name", h.name),
            );
        }
        if !seen.insert(h.name.to_ascii_lowercase()) {
            errors.push(
                at("name"),
                format!("{:?} is required twice; list each header once", h.name),
            );
        }
        errors.fits(at("value"), h.value.as_deref(), 4096);
        if h.value.is_some() == h.value_from.is_some() {
            errors.push(
                format!("spec.restrictions.requiredHeaders[{i}]"),
                "set exactly one of value and valueFrom",
            );
        }
        if let Some(from) = &h.value_from
            && !is_dns_subdomain(&from.secret_key_ref.name)
        {
            errors.push(
                at("valueFrom.secretKeyRef.name"),
                format!("{:?} is not a valid Secret name", from.secret_key_ref.name),
            );
        }
        if let Some(from) = &h.value_from
            && !is_secret_data_key(&from.secret_key_ref.key)
        {
            errors.push(
                at("valueFrom.secretKeyRef.key"),
                format!("{:?} is not a valid Secret key: use at most 253 letters, digits, '-', '_' and '.'", from.secret_key_ref.key),
            );
        }
    }
    nets
}

/// A CIDR, or a bare address meaning that one host.
fn parse_cidr(value: &str) -> Option<IpNet> {
    value
        .parse::<IpNet>()
        .ok()
        .or_else(|| value.parse::<IpAddr>().ok().map(IpNet::from))
}

fn validate_secret(errors: &mut Errors, spec: &ApiKeySpec) {
    let Some(secret) = &spec.secret else { return };
    if let Some(name) = &secret.name
        && !is_dns_subdomain(name)
    {
        errors.push(
            "spec.secret.name",
            format!("{name:?} is not a valid Secret name (a DNS subdomain)"),
        );
    }
    if let Some(ty) = &secret.type_
        && (ty.is_empty() || (ty.starts_with("kubernetes.io/") && ty != "Opaque"))
    {
        errors.push(
                "spec.secret.type",
                format!("{ty:?} cannot hold tokens: built-in kubernetes.io/ types require their own keys; use Opaque or a type of your own"),
            );
    }
    errors.fits("spec.secret.type", secret.type_.as_deref(), 253);
    if let Some(template) = &secret.template {
        let maps = [
            ("labels", &template.labels, MAX_LABEL_VALUE_LEN),
            (
                "annotations",
                &template.annotations,
                MAX_ANNOTATION_VALUE_LEN,
            ),
        ];
        for (name, map, max_value) in maps {
            check_template_map(
                errors,
                &format!("spec.secret.template.{name}"),
                map,
                max_value,
            );
        }
    }
    errors.count(
        "spec.secret.restartTargets",
        secret.restart_targets.len(),
        16,
    );
    for (i, target) in secret.restart_targets.iter().enumerate() {
        check_restart_target(errors, i, target);
    }
}

/// `spec.publish`: one entry per gateway kind, each naming valid objects, none the key's own
/// Secret. (Names derived from the ApiKey's name, which the spec does not know, are checked by
/// the planner.)
fn validate_publish(errors: &mut Errors, spec: &ApiKeySpec) {
    errors.count("spec.publish", spec.publish.len(), MAX_PUBLISH);
    let own_secret = spec.secret.as_ref().and_then(|s| s.name.as_deref());
    let (mut envoy, mut kong, mut agentgateway) = (false, false, false);
    let check_secret_name = |errors: &mut Errors, field: String, name: &Option<String>| {
        let Some(name) = name else { return };
        if !is_dns_subdomain(name) {
            errors.push(
                field,
                format!("{name:?} is not a valid Secret name (a DNS subdomain)"),
            );
        } else if Some(name.as_str()) == own_secret {
            errors.push(
                field,
                format!("{name:?} is the key's own Secret (spec.secret.name); choose another name"),
            );
        }
    };
    for (i, entry) in spec.publish.iter().enumerate() {
        let at = |field: &str| format!("spec.publish[{i}]{field}");
        match (&entry.envoy_gateway, &entry.kong, &entry.agentgateway) {
            (Some(envoy_gateway), None, None) => {
                if std::mem::replace(&mut envoy, true) {
                    errors.push(
                        at(".envoyGateway"),
                        "publishes to Envoy Gateway a second time; keep one envoyGateway entry (one Secret holds every token)",
                    );
                }
                check_secret_name(
                    errors,
                    at(".envoyGateway.secretName"),
                    &envoy_gateway.secret_name,
                );
            }
            (None, Some(consumer), None) => {
                if std::mem::replace(&mut kong, true) {
                    errors.push(
                        at(".kong"),
                        "publishes to Kong a second time; Kong requires a key to be unique across consumers, so a key's tokens can belong to one KongConsumer only",
                    );
                }
                if !is_dns_subdomain(&consumer.consumer) {
                    errors.push(
                        at(".kong.consumer"),
                        format!(
                            "{:?} is not a valid KongConsumer name (a DNS subdomain)",
                            consumer.consumer
                        ),
                    );
                }
            }
            (None, None, Some(hashes)) => {
                if std::mem::replace(&mut agentgateway, true) {
                    errors.push(
                        at(".agentgateway"),
                        "publishes to agentgateway a second time; keep one agentgateway entry (one Secret holds every token's hash)",
                    );
                }
                check_secret_name(errors, at(".agentgateway.secretName"), &hashes.secret_name);
            }
            _ => errors.push(
                at(""),
                "set exactly one of envoyGateway, kong and agentgateway",
            ),
        }
    }
}

/// Subjects that stand for everyone of a kind: an access list names who may read a key.
const EVERYONE: [(&str, &str); 4] = [
    ("users", "system:anonymous"),
    ("groups", "system:authenticated"),
    ("groups", "system:unauthenticated"),
    ("groups", "system:serviceaccounts"),
];

/// `spec.access`: bounded lists of names Kubernetes accepts as RBAC subjects, none standing for
/// everyone.
fn validate_access(errors: &mut Errors, spec: &ApiKeySpec) {
    let Some(access) = &spec.access else { return };
    for (list, names) in [("users", &access.users), ("groups", &access.groups)] {
        let field = format!("spec.access.{list}");
        errors.count(&field, names.len(), MAX_ACCESS_ENTRIES);
        for (i, name) in names.iter().enumerate() {
            let at = format!("{field}[{i}]");
            if name.trim() != name || name.chars().any(char::is_control) {
                errors.push(
                    &at,
                    format!("{name:?} has leading or trailing spaces or control characters; write the name as the API server authenticates it"),
                );
            } else if EVERYONE.contains(&(list, name.as_str())) {
                errors.push(
                    &at,
                    format!("{name:?} stands for everyone of its kind; name the users, groups or ServiceAccounts who need the key"),
                );
            }
            errors.item(at, name, MAX_ACCESS_NAME_LEN);
        }
    }
    let accounts = &access.service_accounts;
    errors.count(
        "spec.access.serviceAccounts",
        accounts.len(),
        MAX_ACCESS_ENTRIES,
    );
    for (i, account) in accounts.iter().enumerate() {
        if !is_dns_subdomain(&account.name) {
            errors.push(
                format!("spec.access.serviceAccounts[{i}].name"),
                format!(
                    "{:?} is not a valid ServiceAccount name (a DNS subdomain)",
                    account.name
                ),
            );
        }
        if let Some(namespace) = &account.namespace {
            check_dns_label(
                errors,
                &format!("spec.access.serviceAccounts[{i}].namespace"),
                namespace,
                63,
            );
        }
    }
}

fn check_template_map(
    errors: &mut Errors,
    field: &str,
    map: &BTreeMap<String, String>,
    max_value: usize,
) {
    errors.count(field, map.len(), MAX_TEMPLATE_ENTRIES);
    for (key, value) in map {
        if key.len() > MAX_LABEL_KEY_LEN {
            let len = key.len();
            errors.push(
                field,
                format!("has a key of {len} characters; at most {MAX_LABEL_KEY_LEN} allowed"),
            );
            continue;
        }
        errors.fits(format_args!("{field}[{key}]"), Some(value), max_value);
        if MANAGED_LABELS.contains(&key.as_str()) || key.starts_with("keysmith.dev/") {
            errors.push(
                format!("{field}[{key}]"),
                "is set by Keysmith itself; remove it from the template",
            );
        } else if is_gateway_key(key) {
            errors.push(
                format!("{field}[{key}]"),
                "is read by a gateway (konghq.com/credential makes a Secret a Kong credential): \
                 remove it from the template, and publish to the gateway with spec.publish",
            );
        }
    }
}

fn check_restart_target(errors: &mut Errors, i: usize, target: &RestartTarget) {
    if !is_dns_subdomain(&target.name) {
        errors.push(
            format!("spec.secret.restartTargets[{i}].name"),
            format!("{:?} is not a valid {:?} name", target.name, target.kind),
        );
    }
}

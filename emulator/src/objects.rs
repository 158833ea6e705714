//! The object lifecycle every REST verb goes through: naming, namespaces,
//! optimistic concurrency, `generation`, the status subresource, admission
//! (schema, CEL, built-in defaulting), managedFields, finalizers and
//! `deletionTimestamp`. Shared by the HTTP handlers and the library API.

use base64::Engine;
use rand::RngExt;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, Cause};
use crate::fields::Shape;
use crate::managed::{self, Part};
use crate::patch::{self, PatchType};
use crate::registry::{GroupResource, Registry, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EventType, Store};
use crate::{cel, events, gc, schema};

/// What the server does with fields a custom object's schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and return a warning (the server default).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

impl FieldValidation {
    /// Parse the `fieldValidation` query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

/// Per-request write settings.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Field manager recorded in managedFields.
    pub manager: String,
    /// Unknown-field handling.
    pub field_validation: FieldValidation,
    /// `dryRun=All`: run everything, store nothing.
    pub dry_run: bool,
    /// SSA `force`.
    pub force: bool,
}

/// `DeleteOptions` that matter here.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `Background` (default), `Foreground` or `Orphan`.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Read a `DeleteOptions` body plus query parameters.
    pub fn from_body(body: &Value, propagation_param: Option<&str>, dry_run: bool) -> Self {
        DeleteOptions {
            propagation: body["propagationPolicy"]
                .as_str()
                .or(propagation_param)
                .map(String::from)
                .or_else(|| match body["orphanDependents"].as_bool() {
                    Some(true) => Some("Orphan".into()),
                    _ => None,
                }),
            uid: body["preconditions"]["uid"].as_str().map(String::from),
            resource_version: body["preconditions"]["resourceVersion"]
                .as_str()
                .map(String::from),
            dry_run: dry_run || body["dryRun"].as_array().is_some_and(|a| !a.is_empty()),
        }
    }
}

/// One list page, borrowed from the store: serialize it (see [`Presented`]) while the state
/// lock is held instead of copying every object out.
#[derive(Debug)]
pub struct ListPage<'a> {
    /// Matching objects, as stored.
    pub items: Vec<&'a Value>,
    /// The list's resourceVersion.
    pub resource_version: u64,
    /// Token for the next page, if any.
    pub continue_token: Option<String>,
    /// How many further items match.
    pub remaining: Option<usize>,
}

/// The server's mutable state: storage plus the kinds it serves.
#[derive(Debug)]
pub struct State {
    /// Objects and history.
    pub store: Store,
    /// Served kinds.
    pub registry: Registry,
}

/// `2006-01-02T15:04:05Z`, as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let n: u128 = rand::rng().random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    // Kubernetes' generateName alphabet: no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn meta_str<'v>(obj: &'v Value, field: &str) -> &'v str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

/// Whether `name` is a lowercase RFC 1123 subdomain.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn validate_name(rt: &ResourceType, name: &str) -> ApiResult<()> {
    // RBAC objects use path-segment names (`system:controller:x` is legal).
    let ok = if rt.group == "rbac.authorization.k8s.io" {
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
    } else {
        is_dns_subdomain(name)
    };
    if ok {
        return Ok(());
    }
    Err(ApiError::invalid(
        &rt.group,
        &rt.kind,
        name,
        vec![Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        )],
    ))
}

/// The object without metadata (and without status when `status` is
/// separate): what `generation` tracks.
fn spec_part(obj: &Value, without_status: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if without_status {
            m.remove("status");
        }
    }
    v
}

/// A stored object as a given served version presents it.
pub fn present(rt: &ResourceType, obj: &Value) -> Value {
    serde_json::to_value(Presented(rt, obj)).expect("a JSON value converts to a JSON value")
}

/// A stored object as clients see it, serialized straight from the store (and the one place
/// that decides what they see): listing 10,000 objects spent most of its time copying them first.
pub struct Presented<'a>(pub &'a ResourceType, pub &'a Value);

impl Serialize for Presented<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Presented(rt, stored) = *self;
        let converted = events::to_view(rt, stored);
        let obj = converted.as_ref().unwrap_or(stored);
        let Some(fields) = obj.as_object() else {
            return obj.serialize(serializer);
        };
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("apiVersion", &rt.api_version())?;
        map.serialize_entry("kind", &rt.kind)?;
        for (k, v) in fields {
            if k != "apiVersion" && k != "kind" {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

impl State {
    /// An empty server state with the default namespaces.
    pub fn new(history_limit: usize) -> Self {
        let mut st = State {
            store: Store::new(history_limit),
            registry: Registry::new(),
        };
        let rt = st
            .registry
            .lookup("", "v1", "namespaces")
            .cloned()
            .expect("namespaces are built in");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let opts = WriteOptions {
                manager: "keysmith-emulator".into(),
                ..Default::default()
            };
            st.create(&rt, "", body, &opts, &mut Vec::new())
                .expect("default namespaces are valid");
        }
        st
    }

    /// Read one object.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Value> {
        self.store
            .get(&rt.group_resource(), ns, name)
            .map(|o| present(rt, o))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// List with selectors and `limit`/`continue` paging.
    pub fn list<'a>(
        &'a self,
        rt: &ResourceType,
        ns: Option<&'a str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> ApiResult<ListPage<'a>> {
        let (list_rv, start_after) = match continue_token {
            Some(t) => decode_continue(t, self.store.compacted_rv())?,
            None => (self.store.current_rv(), None),
        };
        let matching: Vec<_> = self
            .store
            .list(&rt.group_resource(), ns)
            .filter(|(key, _)| start_after.as_ref().is_none_or(|s| *key > s))
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .collect();
        let take = limit
            .filter(|l| *l > 0)
            .map_or(matching.len(), |l| l.min(matching.len()));
        let items = matching[..take].iter().map(|(_, o)| *o).collect();
        let (continue_token, remaining) = match take.checked_sub(1).map(|i| matching[i].0) {
            Some((ns, name)) if take < matching.len() => (
                Some(encode_continue(list_rv, ns, name)),
                Some(matching.len() - take),
            ),
            _ => (None, None),
        };
        Ok(ListPage {
            items,
            resource_version: list_rv,
            continue_token,
            remaining,
        })
    }

    fn check_namespace(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<()> {
        if !rt.namespaced {
            return Ok(());
        }
        if ns.is_empty() {
            return Err(ApiError::bad_request("namespace is required"));
        }
        match self
            .store
            .get(&GroupResource::new("", "namespaces"), "", ns)
        {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if !n["metadata"]["deletionTimestamp"].is_null() => {
                Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    rt.plural
                )))
            }
            Some(_) => Ok(()),
        }
    }

    /// Schema, CEL and kind-specific admission of an object about to be
    /// stored; returns warnings.
    fn admit(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> ApiResult<Vec<String>> {
        let mut warnings = Vec::new();
        let name = meta_str(obj, "name").to_string();
        if let Some(crd) = rt.crd.as_ref()
            && let (Some(schema), Some(rules)) = (&crd.schema, &crd.rules)
        {
            let mut unknown = schema::prune(schema, obj);
            unknown.sort();
            if !unknown.is_empty() {
                match opts.field_validation {
                    FieldValidation::Strict => {
                        let list: Vec<String> = unknown
                            .iter()
                            .map(|u| format!("unknown field \"{u}\""))
                            .collect();
                        return Err(ApiError::bad_request(format!(
                            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                            rt.kind,
                            rt.api_version(),
                            rt.kind,
                            list.join(", ")
                        )));
                    }
                    FieldValidation::Warn => {
                        warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")));
                    }
                    FieldValidation::Ignore => {}
                }
            }
            *obj = schema::apply_defaults(schema, obj);
            let mut causes = schema::validate(schema, obj);
            // As the real server: schema errors of these kinds stop the CEL rules (and say so),
            // others (a pattern, a minimum) do not.
            let blocking = causes.iter().any(|c| {
                matches!(
                    c.reason.as_str(),
                    "FieldValueNotSupported"
                        | "FieldValueRequired"
                        | "FieldValueTooLong"
                        | "FieldValueTooMany"
                        | "FieldValueTypeInvalid"
                )
            });
            if blocking {
                if rules.any() {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        "<nil>",
                        "Invalid value: null: some validation rules were not checked because \
                         the object was invalid; correct the existing errors to complete validation",
                    ));
                }
            } else {
                let outcome =
                    cel::evaluate(rules, obj, old, (&rt.api_version(), &rt.group, &rt.kind));
                causes.extend(outcome.causes);
                warnings.extend(outcome.skipped.iter().map(|r| {
                    format!("x-kubernetes-validations rule not evaluated by the emulator: {r}")
                }));
            }
            if !causes.is_empty() {
                return Err(ApiError::invalid(&rt.group, &rt.kind, &name, causes));
            }
        }
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "secrets") => fold_string_data(obj),
            ("", "namespaces") => {
                obj["spec"]["finalizers"] = json!(["kubernetes"]);
                if obj["metadata"]["deletionTimestamp"].is_null() {
                    obj["status"] = json!({"phase": "Active"});
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => admit_crd(obj, &name)?,
            _ => {}
        }
        Ok(warnings)
    }

    /// Create an object (POST, or SSA of a missing object when `applied`).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_type(rt, &obj)?;
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let body_ns = meta_str(&obj, "namespace").to_string();
        if rt.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        if meta_str(&obj, "name").is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    "",
                    vec![Cause::new(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )],
                ));
            }
            obj["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
        }
        let name = meta_str(&obj, "name").to_string();
        validate_name(rt, &name)?;
        self.check_namespace(rt, ns, &name)?;
        let gr = rt.group_resource();
        if self.store.get(&gr, ns, &name).is_some() {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        if rt.status_subresource
            && let Some(m) = obj.as_object_mut()
        {
            // Status is written through /status only.
            m.remove("status");
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            for f in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                m.remove(f);
            }
        }
        warnings.extend(self.admit(rt, &mut obj, None, opts)?);
        let ts = now();
        obj["metadata"]["uid"] = json!(new_uid());
        obj["metadata"]["creationTimestamp"] = json!(ts);
        if rt.has_generation {
            obj["metadata"]["generation"] = json!(1);
        }
        if obj["metadata"]["managedFields"].is_null() {
            let shape = shape_of(rt);
            managed::record_update(
                None,
                &mut obj,
                shape,
                part_of(rt, false),
                &opts.manager,
                &ts,
            );
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let obj = self.put_versioned(rt, &gr, obj, EventType::Added);
        Ok(present(rt, &obj))
    }

    /// Store a created or replaced object (in the form `rt` serves) under a fresh
    /// resourceVersion from the global counter, in its storage form, keeping the served kinds
    /// in step when it is a CRD; returns what was stored.
    fn put_versioned(
        &mut self,
        rt: &ResourceType,
        gr: &GroupResource,
        obj: Value,
        kind: EventType,
    ) -> Value {
        let mut obj = events::to_storage(rt, obj);
        let rv = self.store.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if is_crd(rt) {
            self.registry.set_crd(&obj);
        }
        self.store.put(gr, obj.clone(), kind);
        obj
    }

    /// Replace an object (PUT), on the main resource or `/status`.
    /// `manager_applied` carries an already-computed SSA result whose
    /// managedFields must be kept as they are.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        status: bool,
        mut obj: Value,
        opts: &WriteOptions,
        managed_done: bool,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_type(rt, &obj)?;
        let gr = rt.group_resource();
        // The update happens in the form `rt` serves (managedFields and no-op detection compare
        // like with like); `put_versioned` converts the result back to the storage form.
        let old = self
            .store
            .get(&gr, ns, name)
            .map(|o| present(rt, o))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        // The API server's checkName: a PUT body must name its object (and so must
        // the result of a patch, which carries the stored name unless it removed it).
        let body_name = meta_str(&obj, "name");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_rv = meta_str(&obj, "resourceVersion");
        if !body_rv.is_empty() && body_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if status {
            // The status subresource writes status only.
            let mut merged = old.clone();
            merged["status"] = obj["status"].clone();
            if !managed_done {
                merged["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
            } else {
                merged["metadata"]["managedFields"] = obj["metadata"]["managedFields"].clone();
            }
            obj = merged;
        } else {
            if !obj["metadata"].is_object() {
                obj["metadata"] = json!({});
            }
            if rt.status_subresource {
                match old.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => {
                        if let Some(m) = obj.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old["metadata"].get(f) {
                    Some(v) => obj["metadata"][f] = v.clone(),
                    None => {
                        if let Some(m) = obj["metadata"].as_object_mut() {
                            m.remove(f);
                        }
                    }
                }
            }
            obj["metadata"]["name"] = json!(name);
            if rt.namespaced {
                obj["metadata"]["namespace"] = json!(ns);
            }
            if obj["metadata"]["managedFields"].is_null() {
                obj["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
            }
        }
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();

        if !old["metadata"]["deletionTimestamp"].is_null() {
            let before: Vec<&Value> = old["metadata"]["finalizers"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let added: Vec<String> = obj["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| !before.contains(f))
                .map(|f| f.to_string())
                .collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    name,
                    vec![Cause::new(
                        "FieldValueForbidden",
                        "metadata.finalizers",
                        format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            added.join(", ")
                        ),
                    )],
                ));
            }
        }

        warnings.extend(self.admit(rt, &mut obj, Some(&old), opts)?);
        if rt.has_generation {
            let separate_status = rt.status_subresource;
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            let changed = spec_part(&old, separate_status) != spec_part(&obj, separate_status);
            obj["metadata"]["generation"] =
                json!(if changed { generation + 1 } else { generation });
        }
        // A write that changes nothing is not a write: no new resourceVersion,
        // no event (clients rely on this to keep resyncs free).
        let mut unchanged_candidate = obj.clone();
        unchanged_candidate["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
        if unchanged_candidate == old {
            return Ok(old);
        }
        let ts = now();
        if !managed_done {
            let shape = shape_of(rt);
            managed::record_update(
                Some(&old),
                &mut obj,
                shape,
                part_of(rt, status),
                &opts.manager,
                &ts,
            );
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let obj = self.put_versioned(rt, &gr, obj, EventType::Modified);
        let deleting = !obj["metadata"]["deletionTimestamp"].is_null();
        if deleting && finalizers(&obj).is_empty() {
            gc::sweep(self);
        }
        Ok(present(rt, &obj))
    }

    /// PATCH in any of the four patch types.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        status: bool,
        patch_type: PatchType,
        body: &Value,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let gr = rt.group_resource();
        let current = self.store.get(&gr, ns, name).cloned();
        if patch_type == PatchType::Apply {
            return self.apply(rt, ns, name, status, current, body, opts, warnings);
        }
        let Some(current) = current else {
            return Err(ApiError::not_found(&rt.group, &rt.plural, name));
        };
        let mut doc = present(rt, &current);
        match patch_type {
            PatchType::Merge => patch::merge_patch(&mut doc, body),
            PatchType::Json => patch::json_patch(&mut doc, body)?,
            PatchType::Strategic => {
                if !rt.supports_strategic_merge() {
                    return Err(ApiError::unsupported_patch_type());
                }
                patch::strategic_merge(&mut doc, body)?;
            }
            PatchType::Apply => unreachable!("handled above"),
        }
        // A patch that names a resourceVersion is a precondition; one that
        // does not applies to whatever is current.
        let wanted_rv = match patch_type {
            PatchType::Json => doc["metadata"]["resourceVersion"].clone(),
            _ => body["metadata"]["resourceVersion"].clone(),
        };
        doc["metadata"]["resourceVersion"] = if wanted_rv.is_string() {
            wanted_rv
        } else {
            current["metadata"]["resourceVersion"].clone()
        };
        self.update(rt, ns, name, status, doc, opts, false, warnings)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        status: bool,
        current: Option<Value>,
        body: &Value,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        if opts.manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requires a non-empty fieldManager query parameter",
            ));
        }
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the applied configuration must be an object",
            ));
        }
        check_type(rt, body)?;
        // Like the API server, accept an applied configuration without a name when the object
        // exists: the merged result carries the stored name (kube-lease-manager applies Lease
        // changes this way). Creating an object needs the name in the body, as checkName runs
        // on the apply result.
        let body_name = meta_str(body, "name");
        if body_name != name && (current.is_none() || !body_name.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut applied = body.clone();
        applied["apiVersion"] = json!(rt.api_version());
        applied["kind"] = json!(rt.kind);
        if let Some(schema) = rt.crd.as_ref().and_then(|c| c.schema.as_ref()) {
            // Unknown fields must not become owned.
            schema::prune(schema, &mut applied);
        }
        let shape = shape_of(rt);
        let ts = now();
        let part = part_of(rt, status);
        let live = current.as_ref().map(|c| present(rt, c));
        let merged = managed::apply(
            live.as_ref(),
            &applied,
            shape,
            part,
            &opts.manager,
            opts.force,
            &ts,
        )?;
        match current {
            None => self.create(rt, ns, merged, opts, warnings),
            Some(cur) => {
                let mut merged = merged;
                let body_rv = meta_str(body, "resourceVersion").to_string();
                merged["metadata"]["resourceVersion"] = if body_rv.is_empty() {
                    cur["metadata"]["resourceVersion"].clone()
                } else {
                    json!(body_rv)
                };
                self.update(rt, ns, name, status, merged, opts, true, warnings)
            }
        }
    }

    /// DELETE of one object.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let gr = rt.group_resource();
        let mut obj = self
            .store
            .get(&gr, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if let Some(uid) = &opts.uid
            && uid != meta_str(&obj, "uid")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&obj, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != meta_str(&obj, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&obj, "resourceVersion")
                ),
            ));
        }
        if opts.dry_run {
            return Ok(present(rt, &obj));
        }
        let policy = opts.propagation.as_deref().unwrap_or("Background");
        if policy == "Orphan" {
            gc::orphan_dependents(self, meta_str(&obj, "uid"));
        }
        let mut fins = finalizers(&obj);
        if policy == "Foreground" && !fins.iter().any(|f| f == gc::FOREGROUND) {
            fins.push(gc::FOREGROUND.into());
        }
        let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
        if fins.is_empty() && !is_namespace {
            let removed = self
                .remove_final(&gr, ns, name)
                .expect("object read above under the same lock");
            gc::sweep(self);
            return Ok(present(rt, &removed));
        }
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(now());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if let Some(g) = obj["metadata"]["generation"].as_i64() {
                obj["metadata"]["generation"] = json!(g + 1);
            }
        }
        if !fins.is_empty() {
            obj["metadata"]["finalizers"] = json!(fins);
        }
        if is_namespace {
            obj["status"]["phase"] = json!("Terminating");
        }
        let rv = self.store.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.store.put(&gr, obj.clone(), EventType::Modified);
        gc::sweep(self);
        Ok(present(rt, self.store.get(&gr, ns, name).unwrap_or(&obj)))
    }

    /// Store an object exactly as given (used by the GC for its own edits),
    /// with a fresh resourceVersion.
    pub fn put_raw(&mut self, gr: &GroupResource, mut obj: Value) {
        let rv = self.store.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.store.put(gr, obj, EventType::Modified);
    }

    /// Remove an object for good, withdrawing a CRD's kinds and objects.
    pub fn remove_final(&mut self, gr: &GroupResource, ns: &str, name: &str) -> Option<Value> {
        let obj = self.store.remove(gr, ns, name)?;
        if gr.group == "apiextensions.k8s.io" && gr.resource == "customresourcedefinitions" {
            let group = obj["spec"]["group"].as_str().unwrap_or_default();
            let plural = obj["spec"]["names"]["plural"].as_str().unwrap_or_default();
            let crs = GroupResource::new(group, plural);
            let keys: Vec<(String, String)> = self
                .store
                .list(&crs, None)
                .map(|(k, _)| k.clone())
                .collect();
            for (ns, name) in keys {
                self.store.remove(&crs, &ns, &name);
            }
            self.registry.remove_crd(name);
        }
        Some(obj)
    }
}

/// The finalizers of an object.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

fn is_crd(rt: &ResourceType) -> bool {
    rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions"
}

fn shape_of(rt: &ResourceType) -> Shape<'_> {
    Shape::root(rt.crd.as_ref().and_then(|c| c.schema.as_ref()))
}

fn part_of(rt: &ResourceType, status: bool) -> Part {
    match (rt.status_subresource, status) {
        (_, true) => Part::Status,
        (true, false) => Part::Main,
        (false, false) => Part::Whole,
    }
}

fn check_type(rt: &ResourceType, obj: &Value) -> ApiResult<()> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    if !api_version.is_empty() && api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if !kind.is_empty() && kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

/// Secrets: `stringData` is write-only sugar folded into base64 `data`.
fn fold_string_data(obj: &mut Value) {
    let Some(string_data) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    if let Some(m) = string_data.as_object() {
        for (k, v) in m {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
            obj["data"][k] = json!(encoded);
        }
    }
    if obj.get("type").is_none() {
        obj["type"] = json!("Opaque");
    }
}

/// CRDs: the name must be `plural.group`; the server marks it established.
fn admit_crd(obj: &mut Value, name: &str) -> ApiResult<()> {
    let spec = obj["spec"].clone();
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    if plural.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.plural",
            "Required value",
        ));
    }
    if spec["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.kind",
            "Required value",
        ));
    }
    if name != format!("{plural}.{group}") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value",
        ));
    }
    if versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count()
        != 1
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.versions",
            "Invalid value: \"array\": must have exactly one version marked as storage version",
        ));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            causes,
        ));
    }
    let mut accepted = spec["names"].clone();
    if accepted["singular"].is_null() {
        accepted["singular"] = json!(
            spec["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase()
        );
    }
    if accepted["listKind"].is_null() {
        accepted["listKind"] = json!(format!(
            "{}List",
            spec["names"]["kind"].as_str().unwrap_or_default()
        ));
    }
    let ts = now();
    let storage: Vec<Value> = versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    obj["status"] = json!({
        "acceptedNames": accepted,
        "storedVersions": storage,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": ts},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": ts},
        ],
    });
    Ok(())
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let raw = json!({"rv": rv, "start": [ns, name]}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str, compacted: u64) -> ApiResult<(u64, Option<(String, String)>)> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    if rv < compacted {
        return Err(ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ));
    }
    let ns = v["start"][0].as_str().ok_or_else(bad)?.to_string();
    let name = v["start"][1].as_str().ok_or_else(bad)?.to_string();
    Ok((rv, Some((ns, name))))
}

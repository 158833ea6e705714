//! The `ApiKey` custom resource (`keysmith.dev/v1alpha1`), spec and status.
//!
//! Durations, cron schedules, CIDRs and timestamps are kept as strings here and parsed by
//! [`crate::validation`]: a value the schema cannot express as invalid (a `5y1m` lifetime, a cron
//! with 7 fields) must still deserialize, so the controller can report `InvalidSpec` naming the
//! field instead of failing to read the object at all.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every Keysmith resource, annotation and finalizer.
pub const GROUP: &str = "keysmith.dev";
/// Finalizer that turns deletion into revocation.
pub const FINALIZER: &str = "keysmith.dev/revoke";
/// Annotation whose new value rotates every slot once.
pub const ROTATE_ANNOTATION: &str = "keysmith.dev/rotate";
/// Prefix of the per-slot rotation annotation (`keysmith.dev/rotate-<slot>`).
pub const ROTATE_SLOT_ANNOTATION_PREFIX: &str = "keysmith.dev/rotate-";
/// Annotation on the Secret listing the ids of the tokens it holds.
pub const TOKEN_IDS_ANNOTATION: &str = "keysmith.dev/token-ids";
/// Label on the Secret naming its ApiKey.
pub const APIKEY_LABEL: &str = "keysmith.dev/apikey";
/// Label every Secret Keysmith writes carries; the controller watches only Secrets with it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "keysmith";
/// Annotation on an existing Secret consenting to its adoption by the ApiKey it names. It lives on
/// the Secret, so only someone who may write that Secret can give it.
pub const ADOPT_ANNOTATION: &str = "keysmith.dev/adopt";
/// Annotation on a workload (not its pod template) listing, comma-separated, the ApiKeys whose
/// rotations may restart it even though its pods do not read their Secrets.
pub const RESTART_ON_ANNOTATION: &str = "keysmith.dev/restart-on";
/// The token ids a workload was last restarted for (on the pod template of an apps/v1 workload,
/// on an Argo Rollout itself), which makes a restart happen once per rotation.
pub const RESTARTED_FOR_ANNOTATION: &str = "keysmith.dev/restarted-for";
/// The annotation by which a Secret lets ApiKeys (its value: their names, comma-separated)
/// publish hashes of its values. Without it a namespace editor who may create ApiKeys but not
/// read Secrets could name any Secret and read the SHA-256 of its values from status, an
/// offline oracle for guessable ones; only someone who may write the Secret can set it.
pub const HEADER_SOURCE_ANNOTATION: &str = "keysmith.dev/header-source";
/// Label on every Secret Keysmith publishes for a gateway (`spec.publish`), saying for which:
/// [`PUBLISHED_FOR_ENVOY_GATEWAY`], [`PUBLISHED_FOR_KONG`] or [`PUBLISHED_FOR_AGENTGATEWAY`].
/// The controller finds the
/// published Secrets of a key by it (with [`APIKEY_LABEL`]) to remove the ones no longer wanted.
pub const PUBLISHED_FOR_LABEL: &str = "keysmith.dev/published-for";
/// [`PUBLISHED_FOR_LABEL`] of the Envoy Gateway Secret.
pub const PUBLISHED_FOR_ENVOY_GATEWAY: &str = "envoy-gateway";
/// [`PUBLISHED_FOR_LABEL`] of a Kong credential Secret.
pub const PUBLISHED_FOR_KONG: &str = "kong";
/// [`PUBLISHED_FOR_LABEL`] of the agentgateway Secret (hashes only). An AgentgatewayPolicy may
/// select it by this label, which a key's template cannot set (`keysmith.dev/` is Keysmith's).
pub const PUBLISHED_FOR_AGENTGATEWAY: &str = "agentgateway";
/// The label by which Kong's ingress controller recognises a credential Secret, and its value
/// for key authentication (the Secret's `key` field holds the key).
pub const KONG_CREDENTIAL_LABEL: &str = "konghq.com/credential";
/// Value of [`KONG_CREDENTIAL_LABEL`] for key-auth credentials.
pub const KONG_KEY_AUTH: &str = "key-auth";
/// The annotation by which a KongConsumer lets ApiKeys (its value: their names,
/// comma-separated) keep their credentials in its `credentials` list. It lives on the consumer,
/// so only someone who may write the consumer can give it: an ApiKey alone cannot attach its
/// tokens to a consumer another team's gateway configuration uses.
pub const KONG_CONSUMER_ANNOTATION: &str = "keysmith.dev/kong-credentials-from";
/// On a Kong credential Secret Keysmith published: the KongConsumer whose `credentials` list
/// names it. A consumer that left `spec.publish` is known only from here, so its entries can
/// still be taken out of its list.
pub const KONG_CONSUMER_OF_SECRET_ANNOTATION: &str = "keysmith.dev/kong-consumer";
/// The label and annotation domains gateways Keysmith publishes to read from Secrets (Kong's
/// `konghq.com/credential` makes a Secret a credential; Envoy Gateway's are under
/// `envoyproxy.io`). A key's template may not set a key under any of them, or under a subdomain
/// of one: only Keysmith's publication, which takes the consumer's consent, makes a gateway
/// credential.
pub const GATEWAY_DOMAINS: [&str; 2] = ["konghq.com", "envoyproxy.io"];
/// Whether a label or annotation key lies under one of [`GATEWAY_DOMAINS`] (its prefix is one of
/// them or a subdomain of one).
pub fn is_gateway_key(key: &str) -> bool {
    key.split_once('/').is_some_and(|(prefix, _)| {
        GATEWAY_DOMAINS.iter().any(|domain| {
            prefix == *domain
                || prefix
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.ends_with('.'))
        })
    })
}
/// [`is_gateway_key`] as a CRD rule over a template map's keys.
const GATEWAY_KEYS_RULE: &str =
    r"self.all(k, !k.matches('^([^/]*\\.)?(konghq\\.com|envoyproxy\\.io)/'))";
/// Suffix of the Envoy Gateway Secret's default name (`<apikey>-envoy-gateway`).
pub const ENVOY_GATEWAY_SECRET_SUFFIX: &str = "-envoy-gateway";
/// Suffix of the agentgateway Secret's default name (`<apikey>-agentgateway`).
pub const AGENTGATEWAY_SECRET_SUFFIX: &str = "-agentgateway";
/// Most entries of `spec.publish`: one per gateway kind.
pub const MAX_PUBLISH: usize = 3;
/// Most entries of each list of `spec.access` (users, groups, serviceAccounts).
pub const MAX_ACCESS_ENTRIES: usize = 32;
/// Longest user or group name in `spec.access`.
pub const MAX_ACCESS_NAME_LEN: usize = 256;

/// Duration in Go syntax plus `d` (24h) and `w` (7d), e.g. `90d`, `1h30m`, `8760h`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d|w))+$";
/// `overlap` additionally accepts a bare `0`.
pub const OVERLAP_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d|w))+)$";
/// Token prefix alphabet: what secret scanners and shells handle without quoting.
pub const PREFIX_PATTERN: &str = r"^[A-Za-z0-9_]{0,32}$";
/// A DNS label (RFC 1123).
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS subdomain (RFC 1123): what Kubernetes accepts as a Secret's name.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A valid key of a Secret's `data`.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// Longest slot name: `keysmith.dev/rotate-<slot>` must stay a valid annotation key (63 after the `/`).
pub const MAX_SLOT_NAME_LEN: usize = 56;
/// Token prefix when a slot sets none.
pub const DEFAULT_PREFIX: &str = "ks_";
/// Random bytes per token when a slot sets none (256 bits).
pub const DEFAULT_BYTES: u32 = 32;
/// Most token slots one ApiKey may hold.
pub const MAX_SLOTS: usize = 8;
/// Most entries of one slot's `metadata`.
pub const MAX_METADATA_ENTRIES: usize = 16;
/// Most labels, and most annotations, a Secret template may add.
pub const MAX_TEMPLATE_ENTRIES: usize = 32;
/// Longest label or annotation key: a 253-character DNS prefix, `/` and a 63-character name.
pub const MAX_LABEL_KEY_LEN: usize = 317;
/// Longest label value (Kubernetes' own limit).
pub const MAX_LABEL_VALUE_LEN: usize = 63;
/// Longest template annotation value, and longest slot metadata value.
pub const MAX_ANNOTATION_VALUE_LEN: usize = 4096;
/// Largest spec, serialized as JSON, that the controller and the verifier accept. Each field has
/// its own bound, but together they would allow tens of megabytes; the verifier holds every key
/// in memory, so the whole is bounded too.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// An API key: one or more token slots written into a Secret, rotated and revoked by Keysmith,
/// and checked by the Keysmith verifier.
// Each `printcolumn(...)` repeats `type_`/`json_path`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "keysmith.dev",
    version = "v1alpha1",
    kind = "ApiKey",
    plural = "apikeys",
    shortname = "ak",
    namespaced,
    status = "ApiKeyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "An API key managed by Keysmith: tokens minted into a Secret, rotated, revoked on delete, verified by the Keysmith verifier.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    // Why a key is (not) ready at a glance, as cert-manager's `kubectl get certificate` shows it.
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(name = "Tokens", type_ = "string", json_path = ".status.tokens[*].id"),
    // Future times as a `date` column print as `<invalid>` (kubectl ages only the past): strings.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Next Rotation",
        type_ = "string",
        json_path = ".status.nextRotationAt"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#,
        priority = "1"
    )
)]
#[x_kube(
    validation = Rule::new(concat!(
        // CEL's duration() knows only Go units: values written with d or w are left to the controller.
        "!has(self.expiresAfter) || !has(self.rotation) || !has(self.rotation.renewBefore) || ",
        "self.expiresAfter.matches('[dw]') || self.rotation.renewBefore.matches('[dw]') || ",
        "duration(self.rotation.renewBefore) < duration(self.expiresAfter)"
    )).message("rotation.renewBefore must be shorter than expiresAfter").field_path(".rotation.renewBefore"),
    validation = Rule::new(
        "self.tokens.all(t, self.tokens.exists_one(u, (has(u.secretKey) ? u.secretKey : u.name) == (has(t.secretKey) ? t.secretKey : t.name)))"
    ).message("every token slot must write a different Secret key (secretKey, defaulting to the slot name)").field_path(".tokens"),
    // A key becomes or stops being personal only by being created or deleted: see `owner`.
    validation = Rule::new("has(self.owner) == has(oldSelf.owner)")
        .message("owner cannot be added to or removed from an existing ApiKey; create a new one")
        .field_path(".owner")
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// Free text describing what this key is for; shown by `kubectl describe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Environment the key belongs to (e.g. `production`). The verifier answers
    /// ENVIRONMENT_MISMATCH when a request names another environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), extend("pattern" = DNS_LABEL_PATTERN))]
    pub environment: Option<String>,

    /// Suspend the key: its tokens stay in the Secret but every verification answers DISABLED.
    #[serde(default, skip_serializing_if = "is_false")]
    #[schemars(extend("default" = false))]
    pub disabled: bool,

    /// Token slots (1 to 8). Each slot holds one current token (plus the previous one during an
    /// overlap window) under its own key in the Secret, and is rotated on its own.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tokens: Vec<TokenSlot>,

    /// Permissions every slot carries unless the slot sets its own `grants`. A request is allowed
    /// when an `allow` grant matches and no `deny` grant does. All the grants of a list together
    /// hold at most 128 action and resource patterns (4,096 bytes) and 256 `fields` entries,
    /// which bounds the work of one verification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub grants: Vec<Grant>,

    /// Lifetime of each token, from 1m to 5y (Go duration syntax plus `d` and `w`, e.g. `8760h`,
    /// `90d`). Unset: tokens do not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("pattern" = DURATION_PATTERN))]
    pub expires_after: Option<String>,

    /// Hard end of the whole key (RFC 3339). After it nothing verifies and nothing rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("format" = "date-time"))]
    pub expires_at: Option<String>,

    /// When tokens are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,

    /// Conditions on the request beyond the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restrictions: Option<Restrictions>,

    /// The Secret the tokens are written into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretSpec>,

    /// Gateways that check this key's tokens themselves, from Secrets in the shape each reads:
    /// at most one `envoyGateway`, one `kong` and one `agentgateway` entry. Published Secrets
    /// belong to the ApiKey and follow its tokens: a rotation adds the new token and keeps the
    /// replaced one for the overlap window, expiry, `disabled` and deletion remove them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    #[x_kube(
        merge_strategy = ListMerge::Atomic,
        validation = Rule::new("self.filter(p, has(p.envoyGateway)).size() <= 1 && self.filter(p, has(p.kong)).size() <= 1 && self.filter(p, has(p.agentgateway)).size() <= 1")
            .message("publish to each gateway kind at most once (one envoyGateway, one kong and one agentgateway entry)")
    )]
    pub publish: Vec<Publish>,

    /// What a leak report for one of this key's tokens does (`rotate` by default): `rotate`
    /// replaces the leaked token at once, without an overlap window; `revoke` stops it verifying
    /// and mints no replacement; `report` only records the report and raises the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "rotate"))]
    pub leak_response: Option<LeakResponse>,

    /// Makes this a personal key: its tokens act as this user wherever Keysmith authenticates
    /// for the Kubernetes API (a TokenReview for an audience that opts in to personal keys).
    /// Set only at creation, by that user (the chart's admission policy checks it), and never
    /// changed. At most one personal key per user and namespace is minted; its tokens live at
    /// most the platform's `--personal-key-max-lifetime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("owner is immutable; create a new ApiKey for another owner")
    )]
    pub owner: Option<Owner>,

    /// Who may read this key's Secret and its published Secrets: Keysmith keeps a Role (`get`
    /// on exactly those Secrets) and a RoleBinding to these subjects, owned by the ApiKey. Only
    /// someone who may read those Secrets may set or change it (the chart's admission policy),
    /// and the controller acts on it only when started with `--access-lists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
}

/// What Keysmith does with a token reported as leaked: `rotate` (default) replaces it at once,
/// with no overlap window; `revoke` stops it verifying without a replacement; `report` only
/// records the report.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LeakResponse {
    /// Replace the token at once; it stops verifying with no overlap window (default).
    #[default]
    Rotate,
    /// Stop the token verifying without a replacement; the slot's next rotation mints one.
    Revoke,
    /// Record the report and raise the event; the token keeps verifying.
    Report,
}

impl LeakResponse {
    /// The name the spec, events and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            LeakResponse::Rotate => "rotate",
            LeakResponse::Revoke => "revoke",
            LeakResponse::Report => "report",
        }
    }

    /// Whether a leaked token stops verifying.
    pub fn refuses(self) -> bool {
        self != LeakResponse::Report
    }
}

/// Longest `spec.owner.username` and `spec.owner.groups[]` entry.
pub const MAX_OWNER_NAME_LEN: usize = 256;
/// Most `spec.owner.groups`.
pub const MAX_OWNER_GROUPS: usize = 32;
/// Prefix of the names Kubernetes reserves for its own users and groups, which an owner may not
/// carry (see [`Owner`]).
pub const SYSTEM_PREFIX: &str = "system:";

/// The user a personal key acts as.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct Owner {
    /// The user's name as the Kubernetes API server knows it; it must be the name of the user
    /// creating the key. Not a `system:` name: a ServiceAccount or system component has its own
    /// tokens, and a personal key would outlive it.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(
        validation = Rule::new("!self.startsWith('system:')")
            .message("system: users (ServiceAccounts, Kubernetes components) cannot own personal keys")
    )]
    pub username: String,

    /// The groups the key's tokens carry (at most 32, unique): each one the creating user is in.
    /// Not `system:` groups, whose members the API server trusts beyond RBAC (`system:masters`)
    /// and which it adds itself (`system:authenticated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    #[x_kube(
        merge_strategy = ListMerge::Set,
        validation = Rule::new("self.all(g, !g.startsWith('system:'))")
            .message("system: groups cannot be carried by personal keys")
    )]
    pub groups: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// One token slot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSlot {
    /// Slot name: a DNS label of at most 56 characters, unique within the key. Used in status,
    /// in the per-slot rotation annotation `keysmith.dev/rotate-<name>`, and as the Secret key by default.
    #[schemars(length(min = 1, max = 56), extend("pattern" = DNS_LABEL_PATTERN))]
    pub name: String,

    /// Token prefix, `[A-Za-z0-9_]{0,32}` (default `ks_`). End it with `_` so scanners and
    /// `keysmith token inspect` can tell the prefix from the random part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), extend("pattern" = PREFIX_PATTERN, "default" = DEFAULT_PREFIX))]
    pub prefix: Option<String>,

    /// Random bytes in the token, 16 to 64 (default 32, i.e. 256 bits), from the OS CSPRNG.
    // `int32`: schemars writes `uint32` for a u32, a format the API server warns it does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        range(min = 16, max = 64),
        extend("default" = DEFAULT_BYTES, "format" = "int32")
    )]
    pub bytes: Option<u32>,

    /// How the random bytes are written: `base62` (default) or `hex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "base62"))]
    pub encoding: Option<Encoding>,

    /// Key in the Secret's data that holds this slot's token. Default: the slot name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), extend("pattern" = SECRET_KEY_PATTERN))]
    pub secret_key: Option<String>,

    /// Grants for this slot only; when set they replace `spec.grants` for it. Bounded in all like
    /// `spec.grants`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub grants: Option<Vec<Grant>>,

    /// Lifetime of this slot's tokens; overrides `spec.expiresAfter` (1m to 5y).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("pattern" = DURATION_PATTERN))]
    pub expires_after: Option<String>,

    /// Free-form strings returned by the verifier with every successful verification of this slot
    /// (at most 16 entries, keys up to 253 and values up to 4096 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_METADATA_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": MAX_ANNOTATION_VALUE_LEN}
    ))]
    #[x_kube(validation = Rule::new("self.all(k, k.size() >= 1 && k.size() <= 253)")
        .message("metadata keys must be 1 to 253 characters long"))]
    pub metadata: BTreeMap<String, String>,
}

/// How a token's random bytes are encoded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
// Ordered, so that scan rules come out in a stable order.
#[derive(PartialOrd, Ord)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `[0-9A-Za-z]`, the shortest form that needs no quoting anywhere (default).
    #[default]
    Base62,
    /// Lower-case hexadecimal.
    Hex,
}

/// A permission rule evaluated by the verifier.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// `allow` or `deny`; a matching deny overrides any allow.
    pub effect: Effect,

    /// Actions this grant covers, e.g. `content.read`; `*` matches any run of characters (at
    /// most 16 `*` in a pattern).
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 256)))]
    pub actions: Vec<String>,

    /// Resource patterns, e.g. `content:pages:*`; `*` matches any run of characters (segments
    /// included). Unset: any resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub resources: Option<Vec<String>>,

    /// Fields a create or update may touch. On `allow`: every requested field must be listed. On
    /// `deny`: the grant applies when any requested field is listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    pub fields: Option<Vec<String>>,

    /// Conditions on the request context; all must hold for the grant to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<GrantConditions>,
}

/// Whether a grant permits or forbids.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Permit matching requests (unless a deny matches too).
    #[default]
    Allow,
    /// Forbid matching requests, whatever any allow says.
    Deny,
}

/// Conditions on a request's context.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantConditions {
    /// The request's `context.status` must be one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    pub status: Option<Vec<String>>,

    /// The request's `context.locale` must be one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    pub locales: Option<Vec<String>>,

    /// true: the request's `context.owner` must be this key's identity (`<namespace>/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own: Option<bool>,
}

/// When and how tokens are replaced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!(has(self.every) && has(self.schedule))")
        .message("set at most one of rotation.every and rotation.schedule"),
    validation = Rule::new("!has(self.timeZone) || has(self.schedule)")
        .message("rotation.timeZone only applies to rotation.schedule").field_path(".timeZone"),
    validation = Rule::new(concat!(
        "!has(self.overlap) || !has(self.every) || self.overlap == '0' || ",
        "self.overlap.matches('[dw]') || self.every.matches('[dw]') || ",
        "duration(self.overlap) < duration(self.every)"
    )).message("rotation.overlap must be shorter than rotation.every").field_path(".overlap")
)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Rotate on a fixed interval (1m to 5y), e.g. `720h` or `90d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("pattern" = DURATION_PATTERN))]
    pub every: Option<String>,

    /// Rotate on a cron schedule (5 fields, e.g. `0 3 * * MON`), in UTC unless `timeZone` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub schedule: Option<String>,

    /// IANA time zone for `schedule`, e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// Rotate this long before a token expires. Default: one third of the token's lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("pattern" = DURATION_PATTERN))]
    pub renew_before: Option<String>,

    /// How long a replaced token keeps verifying; `0` revokes it at once. Must be shorter than
    /// `every`. Default: 1h, or half of `every` when that is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("pattern" = OVERLAP_PATTERN))]
    pub overlap: Option<String>,

    /// Any string; changing it rotates every slot once (GitOps-friendly rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub trigger: Option<String>,
}

/// Conditions on the request beyond the token.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Restrictions {
    /// CIDRs (IPv4 or IPv6); the client address must fall in one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 64)))]
    pub ip_allow_list: Vec<String>,

    /// Headers the request must carry, each with the given value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub required_headers: Vec<RequiredHeader>,
}

/// A header a request must carry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.value) != has(self.valueFrom)")
        .message("set exactly one of value and valueFrom")
)]
#[serde(rename_all = "camelCase")]
pub struct RequiredHeader {
    /// Header name (case-insensitive), e.g. `X-Client-Secret`.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    )]
    pub name: String,

    /// The literal value the header must have. Anyone who may read the ApiKey reads it: for a
    /// shared secret use `valueFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,

    /// Where to read the value the header must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<HeaderValueSource>,
}

/// Source of a required header's value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderValueSource {
    /// A key of a Secret in the ApiKey's namespace.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the ApiKey's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name (a DNS subdomain).
    // The controller reads this Secret: a path or a query is refused here, and again when the
    // controller validates.
    #[schemars(length(min = 1, max = 253), extend("pattern" = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253), extend("pattern" = SECRET_KEY_PATTERN))]
    pub key: String,
}

/// The Secret the tokens are written into.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSpec {
    /// Secret name. Default: the ApiKey's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: Option<String>,

    /// Secret type. Default: `Opaque`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub type_: Option<String>,

    /// Labels and annotations copied onto the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SecretTemplate>,

    /// true: take over an existing Secret of that name that this ApiKey does not own.
    #[serde(default, skip_serializing_if = "is_false")]
    #[schemars(extend("default" = false))]
    pub adopt: bool,

    /// Workloads to rollout-restart after a rotation (exactly once per rotation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub restart_targets: Vec<RestartTarget>,
}

/// One gateway that reads this key's tokens: set exactly one field.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("[has(self.envoyGateway), has(self.kong), has(self.agentgateway)].filter(x, x).size() == 1")
        .message("set exactly one of envoyGateway, kong and agentgateway")
)]
#[serde(rename_all = "camelCase")]
pub struct Publish {
    /// An Opaque Secret for Envoy Gateway's `SecurityPolicy.apiKeyAuth`: one entry per token,
    /// `<namespace>.<apikey>.<slot>` (the client id) to the token, and
    /// `<namespace>.<apikey>.<slot>_previous` for a replaced token during its overlap window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_gateway: Option<EnvoyGatewayPublish>,

    /// Kong key-auth credentials: one Secret per token (`<apikey>.<slot>.kong`, and
    /// `<apikey>.<slot>.kong-previous` during an overlap window) listed in a KongConsumer's
    /// `credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kong: Option<KongPublish>,

    /// An Opaque Secret for agentgateway's `AgentgatewayPolicy` `traffic.apiKeyAuthentication`
    /// holding no token: one entry per token, keyed like the Envoy Gateway client ids, whose
    /// value is `{"keyHash": "sha256:<hex>", "metadata": {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agentgateway: Option<AgentgatewayPublish>,
}

/// Where the Envoy Gateway Secret goes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyGatewayPublish {
    /// Name of the Secret in the ApiKey's namespace. Default: `<apikey>-envoy-gateway`. It must
    /// not be the name of the key's own Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
}

/// Where the agentgateway Secret goes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentgatewayPublish {
    /// Name of the Secret in the ApiKey's namespace. Default: `<apikey>-agentgateway`. It must
    /// not be the name of the key's own Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), extend("pattern" = DNS_SUBDOMAIN_PATTERN))]
    pub secret_name: Option<String>,
}

/// The KongConsumer whose credentials are this key's tokens.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KongPublish {
    /// Name of a KongConsumer (`configuration.konghq.com/v1`) in the ApiKey's namespace. Keysmith
    /// lists its credential Secrets there only if the consumer carries the annotation
    /// `keysmith.dev/kong-credentials-from` naming this ApiKey.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub consumer: String,
}

/// Who may read a key's Secret and its published Secrets (`get`, by name).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    /// Kubernetes user names, as the API server authenticates them (e.g. `alice@example.com`);
    /// at most 32, each 1 to 256 characters. `system:anonymous` is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    pub users: Vec<String>,

    /// Kubernetes group names; at most 32, each 1 to 256 characters. `system:authenticated`,
    /// `system:unauthenticated` and `system:serviceaccounts` (everyone of a kind) are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    pub groups: Vec<String>,

    /// ServiceAccounts; at most 32. The namespace defaults to the ApiKey's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub service_accounts: Vec<ServiceAccountRef>,
}

/// A ServiceAccount given read access to a key's Secrets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ServiceAccountRef {
    /// ServiceAccount name (a DNS subdomain).
    #[schemars(length(min = 1, max = 253), extend("pattern" = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Its namespace (a DNS label). Default: the ApiKey's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), extend("pattern" = DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
}

/// The read access to a key's Secrets in effect (`status.access`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessStatus {
    /// The Role granting `get` on `secrets`, in the key's namespace.
    #[schemars(length(max = 253))]
    pub role: String,
    /// The RoleBinding binding `subjects` to the Role (same name).
    #[schemars(length(max = 253))]
    pub role_binding: String,
    /// The Secrets the Role lets the subjects read: the key's Secret, then the names its
    /// published Secrets take.
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub secrets: Vec<String>,
    /// Who may read them.
    #[schemars(length(max = 128))]
    pub subjects: Vec<AccessSubject>,
}

/// One subject of a key's RoleBinding.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub struct AccessSubject {
    /// `User`, `Group` or `ServiceAccount`.
    #[schemars(length(max = 16))]
    pub kind: String,
    /// The user, group or ServiceAccount name.
    #[schemars(length(max = 256))]
    pub name: String,
    /// The ServiceAccount's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

/// Labels and annotations copied onto the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct SecretTemplate {
    /// Labels added to the Secret (at most 32; values up to 63 characters). Not Keysmith's own
    /// (`app.kubernetes.io/managed-by`, `keysmith.dev/...`), and none a gateway reads from a
    /// Secret: keys under `konghq.com/` or `envoyproxy.io/`, or a subdomain of either
    /// (`konghq.com/credential` would make the Secret a Kong credential; `spec.publish` does
    /// that, with the consumer's consent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_TEMPLATE_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": MAX_LABEL_VALUE_LEN}
    ))]
    #[x_kube(
        validation = Rule::new("self.all(k, k.size() <= 317)")
            .message("label keys are at most 317 characters long"),
        validation = Rule::new(GATEWAY_KEYS_RULE)
            .message("label keys under konghq.com/ and envoyproxy.io/ (and their subdomains) are read by gateways; publish with spec.publish instead")
    )]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Secret (at most 32; values up to 4096 characters). The same keys
    /// are reserved as for `labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_TEMPLATE_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": MAX_ANNOTATION_VALUE_LEN}
    ))]
    #[x_kube(
        validation = Rule::new("self.all(k, k.size() <= 317)")
            .message("annotation keys are at most 317 characters long"),
        validation = Rule::new(GATEWAY_KEYS_RULE)
            .message("annotation keys under konghq.com/ and envoyproxy.io/ (and their subdomains) are read by gateways; publish with spec.publish instead")
    )]
    pub annotations: BTreeMap<String, String>,
}

/// A workload in the ApiKey's namespace to restart after a rotation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct RestartTarget {
    /// `Deployment`, `StatefulSet`, `DaemonSet` or `Rollout` (Argo Rollouts).
    pub kind: WorkloadKind,
    /// Workload name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of workload Keysmith can restart.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    #[default]
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// argoproj.io/v1alpha1 Rollout (Argo Rollouts), restarted through its `spec.restartAt`.
    Rollout,
}

impl WorkloadKind {
    /// The API group and version of its objects.
    pub fn group_version(self) -> (&'static str, &'static str) {
        match self {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet | WorkloadKind::DaemonSet => {
                ("apps", "v1")
            }
            WorkloadKind::Rollout => ("argoproj.io", "v1alpha1"),
        }
    }

    /// Its resource, as URLs and RBAC rules name it.
    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
            WorkloadKind::DaemonSet => "daemonsets",
            WorkloadKind::Rollout => "rollouts",
        }
    }
}

/// What Keysmith observed and did. Never holds token plaintext: only ids and SHA-256 hashes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Name of the Secret holding the tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// `Ready` (the current tokens are issued; when False, its reason says why), `Expiring`,
    /// `Expired` and `Disabled`; all four are present once the controller has reconciled the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// When the next rotation of any slot is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<Time>,

    /// Earliest time a current token stops verifying (token expiry or the key's `expiresAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// One entry per slot: the current token's public id and hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tokens: Vec<TokenStatus>,

    /// One entry per `restrictions.requiredHeaders[].valueFrom` whose Secret key the controller
    /// read: the SHA-256 of the value, never the value. The verifier compares presented headers
    /// with these, so it needs no access to Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub required_headers: Vec<RequiredHeaderStatus>,

    /// The generation whose verification policy `servedPolicy` holds: the last spec the
    /// controller accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_generation: Option<i64>,

    /// What verifications read from the last accepted spec (environment, `expiresAt`, grants,
    /// restrictions, each slot's grants and metadata). While the spec breaks a rule
    /// (`Ready=False`, `InvalidSpec`), the verifier serves this instead, so a rejected edit
    /// changes no answer; only `disabled: true` applies at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub served_policy: Option<ApiKeySpec>,

    /// Who may read the key's Secrets through `spec.access`: the Role and RoleBinding Keysmith
    /// keeps, the Secrets and the subjects. Unset while none is in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessStatus>,
}

/// An object the API server keeps as written: the served policy repeats the spec's fields, and
/// the spec's schema (with its CEL rules) already checked them when the spec was accepted.
fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// The expected value of a required header taken from a Secret, as a hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequiredHeaderStatus {
    /// Header name, as in the spec.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The Secret key the value was read from; the verifier uses the hash only while the spec
    /// still names this key.
    pub secret_key_ref: SecretKeyRef,
    /// Hex SHA-256 of the value.
    #[schemars(length(min = 64, max = 64))]
    pub sha256: String,
}

/// The current token of one slot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenStatus {
    /// Slot name.
    pub name: String,
    /// Public identifier: prefix plus the first 6 characters of the random part.
    pub id: String,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
    /// When this token was minted.
    pub issued_at: Time,
    /// When this token stops verifying; unset when it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The `rotation.trigger` value this token answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_trigger: Option<String>,
    /// The `keysmith.dev/rotate` annotation value this token answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_annotation: Option<String>,
    /// The `keysmith.dev/rotate-<slot>` annotation value this token answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_slot_annotation: Option<String>,
    /// The token replaced last, while its overlap window lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousToken>,
    /// Tokens replaced before `previous` whose overlap windows are still open, newest first.
    /// A rotation that would make them more than three (`MAX_EARLIER`) ends the oldest window early,
    /// with a Warning event `OverlapCut`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub earlier: Vec<PreviousToken>,
    /// Last successful verification of this token, written by the verifier at most once a
    /// minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    /// A leak report for this token, recorded by the verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak: Option<Leak>,
}

/// Longest leak source (the URL a report names) kept in status.
pub const MAX_LEAK_SOURCE_LEN: usize = 2048;

/// A leak report for one token: the verifier sets it (only where it is absent), the controller
/// applies the key's `leakResponse` and sets `handledAt`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Leak {
    /// When the verifier received the report.
    pub reported_at: Time,
    /// Where the token was found, as the report says (e.g. a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub source: Option<String>,
    /// When the controller applied the `leakResponse`; a token that stays in status (`revoke`,
    /// `report`) keeps the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_at: Option<Time>,
}

/// Most replaced tokens a slot keeps besides `previous` (`status.tokens[].earlier`).
pub const MAX_EARLIER: usize = 3;

/// A replaced token that still verifies until `validUntil`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviousToken {
    /// Public identifier of the replaced token.
    pub id: String,
    /// Hex SHA-256 of the replaced token.
    pub sha256: String,
    /// End of the overlap window.
    pub valid_until: Time,
    /// Last successful verification of the replaced token (it moves here from the token's own
    /// entry when it is replaced), written by the verifier at most once a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    /// A leak report for this token (see `tokens[].leak`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak: Option<Leak>,
}

impl ApiKey {
    /// Name of the Secret this key writes: `spec.secret.name`, else the ApiKey's name.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret
            .as_ref()
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

impl Publish {
    /// The Envoy Gateway Secret's name for key `apikey`, with its default applied.
    pub fn envoy_gateway_secret(&self, apikey: &str) -> Option<String> {
        let envoy = self.envoy_gateway.as_ref()?;
        Some(
            envoy
                .secret_name
                .clone()
                .unwrap_or_else(|| format!("{apikey}{ENVOY_GATEWAY_SECRET_SUFFIX}")),
        )
    }

    /// The agentgateway Secret's name for key `apikey`, with its default applied.
    pub fn agentgateway_secret(&self, apikey: &str) -> Option<String> {
        let agentgateway = self.agentgateway.as_ref()?;
        Some(
            agentgateway
                .secret_name
                .clone()
                .unwrap_or_else(|| format!("{apikey}{AGENTGATEWAY_SECRET_SUFFIX}")),
        )
    }
}

impl TokenSlot {
    /// Prefix with its default applied.
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(DEFAULT_PREFIX)
    }
    /// Random byte count with its default applied.
    pub fn bytes(&self) -> u32 {
        self.bytes.unwrap_or(DEFAULT_BYTES)
    }
    /// Encoding with its default applied.
    pub fn encoding(&self) -> Encoding {
        self.encoding.unwrap_or_default()
    }
    /// Secret data key with its default applied.
    pub fn secret_key(&self) -> &str {
        self.secret_key.as_deref().unwrap_or(&self.name)
    }
}

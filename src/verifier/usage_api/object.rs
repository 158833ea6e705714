//! The `ApiKeyUsage` object the usage API answers, and how the answers of several replicas
//! become one: counts add up, `lastUsedAt` is the latest, recent requests are interleaved newest
//! first, each naming the replica that answered it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::verifier::activity::{Counts, TokenActivity};

/// The usage API's group.
pub const GROUP: &str = "usage.keysmith.dev";
/// Its only version.
pub const VERSION: &str = "v1alpha1";
/// `group/version`.
pub const API_VERSION: &str = "usage.keysmith.dev/v1alpha1";
/// The resource.
pub const RESOURCE: &str = "apikeyusages";
/// Its kind.
pub const KIND: &str = "ApiKeyUsage";

/// What the verifier replicas saw of one ApiKey's tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyUsage {
    /// `usage.keysmith.dev/v1alpha1`.
    pub api_version: String,
    /// `ApiKeyUsage`.
    pub kind: String,
    /// The ApiKey's namespace and name; `creationTimestamp` is when this answer was made.
    pub metadata: Metadata,
    /// Recent requests are those since this time.
    pub since: Timestamp,
    /// Per token: counts, last use and recent requests, by token name.
    pub tokens: Vec<TokenActivity>,
    /// Which replicas answered.
    pub replicas: Vec<ReplicaAnswer>,
}

/// `metadata` of an [`ApiKeyUsage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The ApiKey's name.
    pub name: String,
    /// The ApiKey's namespace.
    pub namespace: String,
    /// When the answer was put together.
    pub creation_timestamp: Timestamp,
}

/// Whether one verifier replica contributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAnswer {
    /// The replica (pod name, else its address).
    pub name: String,
    /// Whether its activity is included.
    pub answered: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ApiKeyUsage {
    /// An answer for `namespace`/`name` made at `now`.
    pub fn new(
        namespace: &str,
        name: &str,
        since: Timestamp,
        now: Timestamp,
        tokens: Vec<TokenActivity>,
        replicas: Vec<ReplicaAnswer>,
    ) -> ApiKeyUsage {
        ApiKeyUsage {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: Metadata {
                name: name.into(),
                namespace: namespace.into(),
                creation_timestamp: now,
            },
            since,
            tokens,
            replicas,
        }
    }
}

/// One answer per replica, merged: the tokens of every replica that answered (its requests
/// labelled with its name), and who answered.
pub fn merge(
    answers: Vec<(String, Result<Vec<TokenActivity>, String>)>,
) -> (Vec<TokenActivity>, Vec<ReplicaAnswer>) {
    let mut tokens: BTreeMap<(String, String), TokenActivity> = BTreeMap::new();
    let mut replicas = Vec::new();
    for (replica, answer) in answers {
        match answer {
            Ok(seen) => {
                for mut token in seen {
                    for request in &mut token.recent {
                        request.replica = replica.clone();
                    }
                    let key = (token.token.clone(), token.id.clone());
                    match tokens.get_mut(&key) {
                        Some(merged) => add(merged, token),
                        None => {
                            tokens.insert(key, token);
                        }
                    }
                }
                replicas.push(ReplicaAnswer {
                    name: replica,
                    answered: true,
                    error: None,
                });
            }
            Err(error) => replicas.push(ReplicaAnswer {
                name: replica,
                answered: false,
                error: Some(error),
            }),
        }
    }
    let mut tokens: Vec<TokenActivity> = tokens.into_values().collect();
    for token in &mut tokens {
        token
            .recent
            .sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.replica.cmp(&b.replica)));
    }
    (tokens, replicas)
}

fn add(into: &mut TokenActivity, other: TokenActivity) {
    into.last_used_at = into.last_used_at.max(other.last_used_at);
    add_counts(&mut into.last_hour, other.last_hour);
    add_counts(&mut into.last_day, other.last_day);
    into.recent.extend(other.recent);
}

fn add_counts(into: &mut Counts, other: Counts) {
    for (code, n) in other {
        *into.entry(code).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::activity::RecentRequest;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn request(time: &str, action: &str) -> RecentRequest {
        RecentRequest {
            time: at(time),
            code: "VALID".into(),
            endpoint: "authz".into(),
            client: None,
            end_user: None,
            user_agent: String::new(),
            action: action.into(),
            resource: String::new(),
            replica: String::new(),
        }
    }

    fn token(name: &str, valid: u64, last: &str, recent: Vec<RecentRequest>) -> TokenActivity {
        TokenActivity {
            token: name.into(),
            id: format!("ks_{name}"),
            last_used_at: Some(at(last)),
            last_hour: Counts::from([("VALID".into(), valid)]),
            last_day: Counts::from([("VALID".into(), valid), ("FORBIDDEN".into(), 1)]),
            recent,
        }
    }

    #[test]
    fn replicas_add_up_and_interleave_newest_first() {
        let a = vec![token(
            "primary",
            2,
            "2026-11-26T10:00:05Z",
            vec![
                request("2026-11-26T10:00:05Z", "a2"),
                request("2026-11-26T10:00:01Z", "a1"),
            ],
        )];
        let b = vec![
            token(
                "primary",
                1,
                "2026-11-26T10:00:03Z",
                vec![request("2026-11-26T10:00:03Z", "b1")],
            ),
            token("secondary", 4, "2026-11-26T09:00:00Z", vec![]),
        ];
        let (tokens, replicas) = merge(vec![
            ("a".into(), Ok(a)),
            ("b".into(), Ok(b)),
            ("c".into(), Err("connection refused".into())),
        ]);
        assert_eq!(tokens.len(), 2);
        let primary = &tokens[0];
        assert_eq!(primary.last_hour["VALID"], 3);
        assert_eq!(primary.last_day["FORBIDDEN"], 2);
        assert_eq!(primary.last_used_at, Some(at("2026-11-26T10:00:05Z")));
        let order: Vec<(&str, &str)> = primary
            .recent
            .iter()
            .map(|r| (r.action.as_str(), r.replica.as_str()))
            .collect();
        assert_eq!(order, [("a2", "a"), ("b1", "b"), ("a1", "a")]);
        assert_eq!(tokens[1].token, "secondary");
        assert_eq!(
            replicas,
            [
                ReplicaAnswer {
                    name: "a".into(),
                    answered: true,
                    error: None
                },
                ReplicaAnswer {
                    name: "b".into(),
                    answered: true,
                    error: None
                },
                ReplicaAnswer {
                    name: "c".into(),
                    answered: false,
                    error: Some("connection refused".into())
                },
            ]
        );
    }

    #[test]
    fn the_object_has_kubernetes_shape() {
        let now = at("2026-11-26T10:00:00Z");
        let usage = ApiKeyUsage::new("team", "billing", now, now, vec![], vec![]);
        let json = serde_json::to_value(&usage).unwrap();
        assert_eq!(json["apiVersion"], "usage.keysmith.dev/v1alpha1");
        assert_eq!(json["kind"], "ApiKeyUsage");
        assert_eq!(json["metadata"]["namespace"], "team");
        assert_eq!(
            json["metadata"]["creationTimestamp"],
            "2026-11-26T10:00:00Z"
        );
        let back: ApiKeyUsage = serde_json::from_value(json).unwrap();
        assert_eq!(back, usage);
    }
}

//! Leader election on a `coordination.k8s.io/v1` Lease through `kube-lease-manager` (kube 5 has
//! none built in): only the instance holding the Lease reconciles, so two replicas are safe.

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError, LeaseParams};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Default name of the Lease the controllers compete for.
pub const DEFAULT_LEASE_NAME: &str = "keysmith-controller";

/// Hex digits of the selector's hash in a derived Lease name: 40 bits, so a namespace's handful
/// of shards never collide, in a name of 30 characters.
const SELECTOR_HASH_DIGITS: usize = 10;

/// The Lease name when none is given: [`DEFAULT_LEASE_NAME`], or with a label selector (a shard)
/// that name followed by a short hash of the normalized selector, so controllers of different
/// shards in one namespace never share a Lease (and never wait for each other), while every
/// replica of one shard, however it spells the selector, derives the same name.
pub fn default_lease_name(selector: Option<&str>) -> String {
    match selector.map(normalize_selector).filter(|s| !s.is_empty()) {
        None => DEFAULT_LEASE_NAME.to_owned(),
        Some(normalized) => {
            let hash = crate::token::sha256_hex(&normalized);
            format!("{DEFAULT_LEASE_NAME}-{}", &hash[..SELECTOR_HASH_DIGITS])
        }
    }
}

/// A label selector in one spelling per meaning: its requirements sorted and deduplicated, each
/// as its words and operators joined by single spaces, `==` as `=`, and the values of `in` and
/// `notin` sorted and deduplicated. `shard = a,tier in (y, x)` and `tier in (x,y),shard==a` are
/// the same selector; `keynot in (a)` and `key notin (a)` are not.
fn normalize_selector(selector: &str) -> String {
    let mut requirements = Vec::new();
    // The current requirement's words, and the values of its open `(` list.
    let mut words: Vec<String> = Vec::new();
    let mut values: Option<Vec<String>> = None;
    for token in selector_tokens(selector) {
        match (token.as_str(), &mut values) {
            ("(", _) => values = Some(Vec::new()),
            (")", open) => {
                let mut list = open.take().unwrap_or_default();
                list.sort();
                list.dedup();
                words.push(format!("({})", list.join(",")));
            }
            (",", Some(_)) => {}
            (",", None) => requirements.push(std::mem::take(&mut words).join(" ")),
            (_, Some(list)) => list.push(token),
            (_, None) => words.push(token),
        }
    }
    requirements.push(words.join(" "));
    requirements.retain(|r| !r.is_empty());
    requirements.sort();
    requirements.dedup();
    requirements.join(",")
}

/// The words and operators of a selector: `(`, `)`, `,`, `=` (also for `==`), `!=`, `!`, and the
/// runs of other characters between them and whitespace.
fn selector_tokens(selector: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut chars = selector.chars().peekable();
    while let Some(c) = chars.next() {
        let operator = match c {
            '(' | ')' | ',' => Some(c.to_string()),
            '=' => {
                chars.next_if_eq(&'=');
                Some("=".to_owned())
            }
            '!' if chars.next_if_eq(&'=').is_some() => Some("!=".to_owned()),
            '!' => Some("!".to_owned()),
            c if c.is_whitespace() => None,
            c => {
                word.push(c);
                continue;
            }
        };
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        tokens.extend(operator);
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// Who competes for which Lease, and how long a holder's claim lasts.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Lease name.
    pub lease_name: String,
    /// Namespace of the Lease (the controller pod's).
    pub namespace: String,
    /// This instance's identity (the pod name).
    pub identity: String,
    /// How long a claim lasts without renewal; a crashed leader is replaced after at most this.
    pub lease_duration: Duration,
    /// How long before the end of its claim the holder renews it.
    pub renew_grace: Duration,
}

impl LeaderConfig {
    /// Defaults for a controller in `namespace` called `identity`: a 15 s lease renewed 5 s early.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> LeaderConfig {
        LeaderConfig {
            lease_name: DEFAULT_LEASE_NAME.to_owned(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_grace: Duration::from_secs(5),
        }
    }
}

/// Why leader election stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The renewal grace must be shorter than the lease, both at least a second.
    #[error(
        "lease duration ({duration:?}) must be longer than the renewal grace ({grace:?}), which must be at least 1s"
    )]
    Timing {
        /// Lease duration.
        duration: Duration,
        /// Renewal grace.
        grace: Duration,
    },
    /// The Lease could not be read, created or renewed.
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Lease name.
        name: String,
        /// What failed.
        #[source]
        source: LeaseManagerError,
    },
    /// The lease manager's task ended on its own.
    #[error("leader election on Lease {0} stopped unexpectedly")]
    Stopped(String),
}

/// Run `work` while this instance holds the Lease, and stop it (through the receiver it gets)
/// as soon as the Lease is lost; until `shutdown` completes. Then stop `work` and release the
/// Lease, so another replica takes over without waiting for it to expire. `leader` is 1 while
/// `work` runs, else 0.
pub async fn run_while_leader<W, F>(
    client: Client,
    config: &LeaderConfig,
    leader: &Gauge,
    shutdown: impl Future<Output = ()>,
    mut work: W,
) -> Result<(), LeaderError>
where
    W: FnMut(oneshot::Receiver<()>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let (duration, grace) = (
        config.lease_duration.as_secs(),
        config.renew_grace.as_secs(),
    );
    if grace == 0 || grace >= duration {
        return Err(LeaderError::Timing {
            duration: config.lease_duration,
            grace: config.renew_grace,
        });
    }
    let lease_error = |source| LeaderError::Lease {
        namespace: config.namespace.clone(),
        name: config.lease_name.clone(),
        source,
    };
    let params = LeaseParams::new(config.identity.clone(), duration, grace)
        .with_field_manager(format!("keysmith-leader-{}", config.identity));
    let manager = LeaseManagerBuilder::new(client, config.lease_name.clone())
        .with_namespace(config.namespace.clone())
        .with_parameters(params)
        .build()
        .await
        .map_err(lease_error)?;
    let (mut leading, lease_task) = manager.watch().await;
    tokio::pin!(shutdown);
    let mut running: Option<Running> = None;
    let outcome = loop {
        let is_leader = *leading.borrow_and_update();
        if is_leader && running.is_none() {
            info!(identity = %config.identity, lease = %config.lease_name, "became the leader: reconciling");
            let (stop, stopped) = oneshot::channel();
            running = Some(Running {
                stop,
                task: tokio::spawn(work(stopped)),
            });
            leader.set(1);
        } else if !is_leader && let Some(r) = running.take() {
            warn!(identity = %config.identity, "lost the lease: stopping reconciles");
            leader.set(0);
            r.stop().await;
        }
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            changed = leading.changed() => if changed.is_err() {
                break Err(LeaderError::Stopped(config.lease_name.clone()));
            },
        }
    };
    if let Some(r) = running.take() {
        leader.set(0);
        r.stop().await;
    }
    // Dropping the receiver makes the lease task release the Lease and finish.
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "releasing the lease failed; it expires on its own"),
        Err(e) => warn!(error = %e, "lease task failed"),
    }
    outcome
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        // The work may have ended already; then there is nobody to tell.
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            warn!(error = %e, "the controller task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_selector_the_lease_is_the_default() {
        assert_eq!(default_lease_name(None), DEFAULT_LEASE_NAME);
        assert_eq!(default_lease_name(Some(" ")), DEFAULT_LEASE_NAME);
    }

    #[test]
    fn each_shard_gets_its_own_lease_whatever_the_spelling() {
        let a = default_lease_name(Some("shard=a"));
        let b = default_lease_name(Some("shard=b"));
        assert_ne!(a, b);
        assert_ne!(a, DEFAULT_LEASE_NAME);
        for spelling in ["shard = a", "shard==a", " shard=a,shard=a "] {
            assert_eq!(default_lease_name(Some(spelling)), a, "{spelling}");
        }
        assert_eq!(
            default_lease_name(Some("tier in (y, x),shard=a,!canary")),
            default_lease_name(Some("!canary, shard==a, tier in (x,y,x)"))
        );
        // Different meanings stay apart, even where whitespace is all that separates them.
        for (one, other) in [
            ("key notin (a)", "keynot in (a)"),
            ("shard!=a", "shard=a"),
            ("tier in (x)", "tier in (x,y)"),
            ("a=b,c=d", "a=b"),
        ] {
            assert_ne!(
                default_lease_name(Some(one)),
                default_lease_name(Some(other)),
                "{one} / {other}"
            );
        }
    }

    #[test]
    fn a_derived_name_is_a_short_dns_label() {
        let name = default_lease_name(Some("shard=a"));
        assert_eq!(
            name.len(),
            DEFAULT_LEASE_NAME.len() + 1 + SELECTOR_HASH_DIGITS
        );
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        // Stable across releases: a changed derivation would move every shard to a new Lease.
        assert_eq!(name, "keysmith-controller-682003e72a");
    }
}

//! `keysmith controller`: the thin shell around [`crate::planner`] (SPEC 4). It observes once
//! (the ApiKey, its Secret, the Secrets its required headers read, its published Secrets), asks
//! the planner what to do, and applies the whole plan: status first, then the Secret (so every
//! token in the Secret verifies), then restarts, the publication for gateways and events. Deletion revokes
//! through the `keysmith.dev/revoke` finalizer.
//!
//! The controller watches ApiKeys (optionally one namespace, optionally a label selector) and the
//! metadata of the Secrets it owns, scoped by the `app.kubernetes.io/managed-by=keysmith` label so
//! it neither caches nor wakes on every Secret in the cluster.

mod access;
pub(crate) mod apply;
mod cached;
mod echoes;
mod events;
pub mod leader;
pub mod metrics;
mod publish;

use std::collections::HashMap;
use std::future::{self, Future};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{Instrument, debug, error, info, info_span, warn};

use keysmith_core::api::{
    APIKEY_LABEL, ApiKey, FINALIZER, MANAGED_BY, MANAGED_BY_LABEL, RESTART_ON_ANNOTATION,
};
use keysmith_core::personal;
use keysmith_core::planner::{self, EventKind, Plan, Revocation};
use keysmith_core::token::GenerateError;

use crate::apikeys::{self, Unreadables, Watched};
use crate::scope::Scope;
use apply::Restarted;
use cached::CachedKey;
use echoes::OwnWrites;
use events::EventWriter;
use metrics::{ControllerMetrics, ErrorReason};

/// The time source; tests inject one they can move.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// Name the controller reports events under.
pub const REPORTER: &str = "keysmith-controller";
/// First retry delay after a failed reconcile; it doubles per consecutive failure of a key.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest retry delay, so a key recovers within minutes once the API server does.
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Consecutive failures of one key (about 75 s of retries) from which each is logged as an error.
const PERSISTENT_FAILURES: u32 = 5;
/// Reconciles in flight at once unless `--max-concurrent-reconciles` says otherwise. Unbounded,
/// a start-up with 10,000 keys held 10,000 reconciles (requests, buffers, spans) in memory at the
/// same time and burst them at the API server. A reconcile is a chain of round trips, each a
/// seat of the server's priority and fairness while it is served and idle while it travels, so
/// the bound must cover the travel: see docs/BENCHMARKS.md for the figures behind the default.
pub const DEFAULT_CONCURRENCY: u16 = 64;
/// When to look again after the finalizer patch or the status write raced a newer version.
const RACE_RECHECK: Duration = Duration::from_secs(2);

/// How this installation treats personal keys (`spec.owner`).
#[derive(Debug, Clone, Copy)]
pub struct PersonalKeyPolicy {
    /// `--personal-keys`: mint them (the admission policies that check owners are installed).
    pub accepted: bool,
    /// `--personal-key-max-lifetime`: the longest their tokens live.
    pub max_lifetime: Duration,
}

impl PersonalKeyPolicy {
    /// Personal keys minted, with the default lifetime cap.
    pub const ACCEPTED: PersonalKeyPolicy = PersonalKeyPolicy {
        accepted: true,
        max_lifetime: keysmith_core::personal::DEFAULT_MAX_LIFETIME,
    };
}

/// Everything a reconcile needs, created once per controller.
pub struct Context {
    client: Client,
    events: EventWriter,
    metrics: ControllerMetrics,
    clock: Clock,
    published: publish::KeyObjects,
    /// With access lists on (`--access-lists`): which keys have a Role or RoleBinding.
    access: Option<access::Registries>,
    /// Keys (`namespace/name`) whose last reconcile failed, for the retry backoff.
    failures: Mutex<HashMap<String, Backoff>>,
    /// `--personal-keys`, `--personal-key-max-lifetime`.
    personal_keys: PersonalKeyPolicy,
    /// The running controller's ApiKey cache (metadata and `spec.owner`), which tells which of
    /// an owner's personal keys is the first.
    keys: Mutex<Option<reflector::Store<CachedKey>>>,
    /// `--max-concurrent-reconciles`: keys reconciled (or revoked unread) at once.
    concurrency: u16,
    /// The resourceVersions the controller's own writes to ApiKeys and their Secrets answered,
    /// whose watch events need no reconcile.
    own_writes: OwnWrites,
}

impl Context {
    /// A context reporting events as `instance` (the pod name); `access_lists`: act on
    /// `spec.access` (only where the chart's admission policy guards it); `concurrency`: keys
    /// reconciled at once (at least 1).
    pub fn new(
        client: Client,
        metrics: ControllerMetrics,
        clock: Clock,
        instance: Option<String>,
        personal_keys: PersonalKeyPolicy,
        access_lists: bool,
        concurrency: u16,
    ) -> Arc<Context> {
        // Reconciles free what they allocate at once; without this a fleet's start-up keeps
        // tens of MiB of it resident (the process's memory, so set where the controller starts).
        crate::allocator::return_freed_memory_promptly();
        Arc::new(Context {
            events: EventWriter::new(client.clone(), REPORTER, instance),
            client,
            metrics,
            clock,
            published: publish::KeyObjects::published(),
            access: access_lists.then(|| access::Registries {
                roles: publish::KeyObjects::labelled(),
                bindings: publish::KeyObjects::labelled(),
            }),
            failures: Mutex::default(),
            personal_keys,
            keys: Mutex::default(),
            concurrency: concurrency.max(1),
            own_writes: OwnWrites::default(),
        })
    }
}

/// Why a reconcile failed. Messages carry names and ids, never token material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the controller was doing.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The OS random number generator failed.
    #[error("minting a token failed: {0}")]
    Mint(#[from] GenerateError),
    /// `spec.publish` names something the key may not write (see [`planner::publish`]).
    #[error("{0}")]
    Publish(String),
    /// Adding or removing the finalizer failed, or the ApiKey has no name.
    #[error("finalizer {FINALIZER}: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// Whether the error is a write that found its object changed since it was observed
    /// ([`apply::raced`]).
    fn raced(&self) -> bool {
        match self {
            Error::Kube { source, .. } => apply::raced(source),
            _ => false,
        }
    }

    /// The `reason` label of `keysmith_reconcile_errors_total`.
    fn metric_reason(&self) -> ErrorReason {
        match self {
            Error::Kube { .. } => ErrorReason::Api,
            Error::Mint(_) => ErrorReason::Mint,
            Error::Publish(_) => ErrorReason::Publish,
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.metric_reason()
                }
                _ => ErrorReason::Finalizer,
            },
        }
    }
}

/// Reconcile ApiKeys in `scope` until `shutdown` completes. `resync` (optional) triggers a
/// reconcile of every ApiKey on each item, e.g. after a test moved its clock.
pub async fn run(
    ctx: Arc<Context>,
    scope: &Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    resync: Option<BoxStream<'static, ()>>,
) {
    let client = ctx.client.clone();
    let secrets: Api<PartialObjectMeta<Secret>> = scope.api(client.clone());
    let secrets_config =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    // Reconcile and cleanup read the ApiKey and its Secret fresh, so the caches only trigger and
    // route reconciles: keep ApiKeys' metadata (and owner) without managedFields and last-applied
    // copy, and only the metadata of Secrets (SPEC 10: resident memory at 10,000 keys).
    let (store, writer) = reflector::store();
    *ctx.keys.lock().unwrap_or_else(|e| e.into_inner()) = Some(store.clone());
    let (revoke, revocations) = mpsc::unbounded();
    let unreadable = ctx.metrics.unreadable.clone();
    let keys = apikeys::watch(client.clone(), scope)
        .default_backoff()
        .try_filter_map(move |event| future::ready(Ok(readable(event, &unreadable, &revoke))))
        .modify(prune_for_cache)
        .reflect(writer)
        .touched_objects()
        .try_filter({
            let ctx = ctx.clone();
            move |key| future::ready(!ctx.own_writes.echo("ApiKey", &key.metadata))
        });
    let secrets = watcher(secrets, secrets_config.clone())
        .default_backoff()
        .modify(prune_for_cache)
        .inspect_ok({
            let ctx = ctx.clone();
            move |event| ctx.published.observe(event)
        })
        .touched_objects()
        .try_filter({
            let ctx = ctx.clone();
            move |secret| future::ready(!ctx.own_writes.echo("Secret", &secret.metadata))
        });
    let mut controller = Controller::for_stream(keys, store)
        .owns_stream(secrets)
        .with_config(controller::Config::default().concurrency(ctx.concurrency));
    if ctx.access.is_some() {
        // A Role or RoleBinding edited or deleted by someone else brings its key back.
        let roles: Api<PartialObjectMeta<Role>> = scope.api(client.clone());
        let bindings: Api<PartialObjectMeta<RoleBinding>> = scope.api(client.clone());
        controller = controller
            .owns_stream(watch_owned(roles, &secrets_config, &ctx, |a| &a.roles))
            .owns_stream(watch_owned(bindings, &secrets_config, &ctx, |a| {
                &a.bindings
            }));
    }
    if let Some(resync) = resync {
        controller = controller.reconcile_all_on(resync);
    }
    info!(namespace = ?scope.namespace, selector = ?scope.selector, "controller started");
    let revoking = revocations.for_each_concurrent(usize::from(ctx.concurrency), {
        let ctx = ctx.clone();
        move |meta| {
            let ctx = ctx.clone();
            async move { ctx.revoke_unreadable(&meta).await }
        }
    });
    let running = controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // error_policy already logged it, once per attempt, with the key's backoff.
                Err(controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                // A deleted key's queued reconcile: nothing failed.
                Err(e @ controller::Error::ObjectNotFound(_)) => {
                    debug!(error = %e, "reconcile skipped")
                }
                Err(e) => warn!(category = "queue", error = %e, "controller queue failed"),
            }
        });
    // Revocations end with the controller (a new leader's list brings pending ones back).
    futures::future::select(Box::pin(running), revoking).await;
    info!("controller stopped");
}

/// The metadata of Keysmith's objects of one kind, each event counted into the registry of
/// access objects that `registry` picks.
fn watch_owned<K>(
    api: Api<PartialObjectMeta<K>>,
    config: &watcher::Config,
    ctx: &Arc<Context>,
    registry: fn(&access::Registries) -> &publish::KeyObjects,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let ctx = ctx.clone();
    watcher(api, config.clone())
        .default_backoff()
        .modify(prune_for_cache)
        .inspect_ok(move |event| ctx.access.iter().for_each(|a| registry(a).observe(event)))
        .touched_objects()
}

/// A watch event as the cache takes it: an unreadable key leaves the cache (only its name is
/// known, which a deletion needs; a stale readable version would be reconciled), and one being
/// deleted under our finalizer is queued for [`Context::revoke_unreadable`].
fn readable(
    event: watcher::Event<apikeys::ListedApiKey>,
    unreadable: &Unreadables,
    revoke: &mpsc::UnboundedSender<ObjectMeta>,
) -> Option<watcher::Event<CachedKey>> {
    let read = |object| match unreadable.read(object) {
        Watched::Readable(key) => Ok(CachedKey::from(*key)),
        Watched::Unreadable(meta) => {
            if meta.deletion_timestamp.is_some()
                && meta.finalizers.iter().flatten().any(|f| f == FINALIZER)
            {
                // Err: the controller is stopping; a new leader's list brings it back.
                let _ = revoke.unbounded_send((*meta).clone());
            }
            Err(Box::new(CachedKey::evicted(*meta)))
        }
    };
    Some(match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
        // Left out of a relist, it leaves the cache at InitDone.
        watcher::Event::InitApply(object) => watcher::Event::InitApply(read(object).ok()?),
        watcher::Event::Apply(object) => match read(object) {
            Ok(key) => watcher::Event::Apply(key),
            Err(stand_in) => watcher::Event::Delete(*stand_in),
        },
        watcher::Event::Delete(object) => {
            unreadable.deleted(&object.metadata);
            watcher::Event::Delete(CachedKey::evicted(object.metadata))
        }
    })
}

/// Drop what a cached object is never read for: managedFields and kubectl's copy of the last
/// applied manifest, which together are most of a small object.
fn prune_for_cache(object: &mut impl Resource) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

/// kubectl's client-side apply record.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Run the controller whenever this instance holds the leader Lease, until `shutdown`.
pub async fn run_elected(
    ctx: Arc<Context>,
    scope: Scope,
    leader: &leader::LeaderConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), leader::LeaderError> {
    let client = ctx.client.clone();
    let leading = ctx.metrics.leader(&leader.lease_name);
    leader::run_while_leader(client, leader, &leading, shutdown, move |stopped| {
        let (ctx, scope) = (ctx.clone(), scope.clone());
        async move {
            let stopped = async {
                // Err: the election loop is gone, which also means stop.
                let _ = stopped.await;
            };
            run(ctx.clone(), &scope, stopped, None).await;
            ctx.metrics.forget_all();
        }
    })
    .await
}

async fn reconcile(cached: Arc<CachedKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = Arc::new(cached.stand_in());
    let namespace = key.namespace().unwrap_or_default();
    let key_name = key.name_any();
    let span = info_span!("reconcile", namespace = %namespace, name = %key_name);
    async move {
        let object = object_key(&namespace, &key_name);
        // A failed reconcile may have written status, whose watch event would retry at once:
        // until its backoff ends, a live key waits (deletion is never held back).
        let waiting = ctx.failures().get(&object).and_then(Backoff::remaining);
        if let Some(wait) = waiting.filter(|_| key.metadata.deletion_timestamp.is_none()) {
            return Ok(Action::requeue(wait));
        }
        let started = Instant::now();
        let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &namespace);
        let result = async {
            let Finalized { key, fresh } = add_finalizer(&api, key).await?;
            if fresh {
                ctx.own_writes.wrote("ApiKey", &key.metadata);
            }
            // kube's helper runs the apply or, once deleting, the cleanup, and then removes the
            // finalizer. It would also add a missing one, but end the pass there and wait for
            // the patch's watch event: two passes per new key, half the minting rate.
            finalizer::finalizer(&api, FINALIZER, key, |event| async {
                match event {
                    Finalizer::Apply(key) => ctx.apply(&api, &key, fresh).await,
                    Finalizer::Cleanup(key) => ctx.cleanup(&api, &key).await,
                }
            })
            .await
        }
        .await
        .or_else(finalizer_raced);
        ctx.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            ctx.failures().remove(&object);
        }
        result
    }
    .instrument(span)
    .await
}

/// A key ready for kube's finalizer helper; `fresh`: `key` is the server's answer to our own
/// write, as current as a read.
struct Finalized {
    key: Arc<ApiKey>,
    fresh: bool,
}

/// Put the finalizer on a live key that lacks it, with the JSON patch kube's helper would send
/// (it `test`s the list the cache saw, so a concurrent change fails it with 422 instead of
/// doubling an entry), and go on in the same pass. The finalizer is on the key before the
/// Secret exists, so a crash in between leaves nothing that a deletion would fail to revoke.
async fn add_finalizer(
    api: &Api<ApiKey>,
    key: Arc<ApiKey>,
) -> Result<Finalized, finalizer::Error<Error>> {
    if key.metadata.deletion_timestamp.is_some() || key.finalizers().iter().any(|f| f == FINALIZER)
    {
        return Ok(Finalized { key, fresh: false });
    }
    let name = key
        .metadata
        .name
        .as_deref()
        .ok_or(finalizer::Error::UnnamedObject)?;
    let operations = if key.finalizers().is_empty() {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": key.finalizers()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(operations).map_err(|_| finalizer::Error::InvalidFinalizer)?;
    let patched = api
        .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(finalizer::Error::AddFinalizer)?;
    Ok(Finalized {
        key: Arc::new(patched),
        fresh: true,
    })
}

/// Adding or removing the finalizer failed its `test` (422: the list is no longer the one the
/// cache saw, or the key is being deleted), or it or a revocation's Secret deletion raced another
/// write (409): a newer version exists
/// and its watch event normally brings the key back first. A short recheck instead of the error
/// backoff covers a conflict that no event follows (a retried request, a proxy's 409).
///
/// Removing it answered 404: the key is already gone. A pass that worked from a cache still
/// holding the deleted key (queued by the Secret's deletion) repeats the revocation and finds
/// the finalizer removed by the pass before it, which is what removal wanted, not a failure.
fn finalizer_raced(e: finalizer::Error<Error>) -> Result<Action, Error> {
    match e {
        finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) if status.code == 404 => {
            debug!("the ApiKey is already gone; nothing left to revoke");
            Ok(Action::await_change())
        }
        finalizer::Error::AddFinalizer(kube::Error::Api(status))
        | finalizer::Error::RemoveFinalizer(kube::Error::Api(status))
            if status.code == 422 || status.is_conflict() =>
        {
            debug!(message = %status.message, "finalizer patch raced a newer version; rechecking");
            Ok(Action::requeue(RACE_RECHECK))
        }
        // A Secret changed or was replaced between its ownership check and its deletion: the
        // deletion did nothing and the finalizer stays; revoke again from what is there now.
        finalizer::Error::CleanupFailed(e) if e.raced() => {
            debug!(error = %e, "revocation raced a change of a Secret; revoking again");
            Ok(Action::requeue(RACE_RECHECK))
        }
        e => Err(Error::Finalizer(Box::new(e))),
    }
}

/// Retry a failed key with exponential backoff (5 s doubling to 5 min): a persistent error, such
/// as a missing permission or a rejected write, never becomes a hot loop.
fn error_policy(key: Arc<CachedKey>, error: &Error, ctx: Arc<Context>) -> Action {
    let namespace = key.namespace().unwrap_or_default();
    let (delay, failures) = {
        let mut failures = ctx.failures();
        let backoff = failures
            .entry(object_key(&namespace, &key.name_any()))
            .or_default();
        (backoff.fail(), backoff.failures)
    };
    let reason = error.metric_reason();
    let category = reason.as_str();
    // Each attempt is logged once and attempts are spaced by the backoff, so a persistent
    // failure cannot flood the log; one that outlasts a few retries is an error, not a blip.
    if failures >= PERSISTENT_FAILURES {
        error!(namespace = %namespace, name = %key.name_any(), category, failures, error = %error, retry_in = ?delay, "reconcile failed");
    } else {
        warn!(namespace = %namespace, name = %key.name_any(), category, failures, error = %error, retry_in = ?delay, "reconcile failed");
    }
    ctx.metrics.error(reason);
    Action::requeue(delay)
}

/// Consecutive failures of one key and when it may be tried again.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    /// Count a failure; the delay before the next attempt.
    fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = FIRST_RETRY
            .saturating_mul(2u32.saturating_pow(self.failures - 1))
            .min(MAX_RETRY);
        self.until = Some(Instant::now() + delay);
        delay
    }

    /// Time left before the next attempt, if any.
    fn remaining(&self) -> Option<Duration> {
        let left = self.until?.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some(left)
    }
}

fn object_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Context {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Backoff>> {
        // A poisoned map only holds retry times; keep using it.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reconcile a live ApiKey: plan, then write status, Secret, restarts and events.
    /// `fresh`: `key` came from the server just now (the finalizer patch's answer), not the cache.
    async fn apply(&self, api: &Api<ApiKey>, key: &ApiKey, fresh: bool) -> Result<Action, Error> {
        let namespace = key.namespace().unwrap_or_default();
        let name = key.name_any();
        // Read the key fresh: the watch caches of ApiKeys and Secrets are not in step, and a
        // Secret event can arrive before the status write that preceded it. Planning with a
        // stale status against the new Secret would mistake our own tokens for a hand edit.
        let read = if fresh {
            Some(key.clone())
        } else {
            api.get_opt(&name)
                .await
                .map_err(Error::kube(format!("reading ApiKey {namespace}/{name}")))?
        };
        let Some(key) = read else {
            return Ok(Action::await_change());
        };
        if key.metadata.deletion_timestamp.is_some() {
            // Deleted since the cache saw it: the deletion's own event brings revocation.
            return Ok(Action::await_change());
        }
        let key = &key;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let secret_name = key.secret_name();
        let secret = secrets
            .get_opt(&secret_name)
            .await
            .map_err(Error::kube(format!(
                "reading Secret {namespace}/{secret_name}"
            )))?;
        let header_secrets = self.header_secrets(&secrets, key).await?;
        let published = publish::observe(&secrets, &self.published, key).await?;
        let owner = key.spec.owner.as_ref();
        let personal_keys = owner.map(|_| self.personal_keys_in(&namespace));
        let first_of_owner = owner
            .zip(personal_keys.as_ref())
            .and_then(|(o, keys)| personal::first_of_owner(keys, &o.username));
        let (role, binding) = match &self.access {
            Some(registries) => access::observe(&self.client, registries, key).await?,
            None => (None, None),
        };
        let observed = planner::Observed {
            key,
            secret: secret.as_ref(),
            header_secrets: &header_secrets,
            published: &published,
            personal: planner::PersonalKeys {
                accepted: self.personal_keys.accepted,
                max_lifetime: self.personal_keys.max_lifetime,
                first_of_owner,
            },
            access: planner::access::Observed {
                enabled: self.access.is_some(),
                role: role.as_ref(),
                binding: binding.as_ref(),
            },
        };
        let plan = planner::plan(&observed, (self.clock)(), &mut planner::mint_token)?;
        for (slot, action) in &plan.slots {
            debug!(slot = %slot, action = %action, "slot decision");
        }
        self.publish(key, &plan, true).await;
        let mut written = match &plan.status {
            Some(status) => apply::status(api, key, status)
                .await
                .map(|written| self.own_writes.wrote("ApiKey", &written.metadata))
                .map_err(Error::kube(format!(
                    "writing status of ApiKey {namespace}/{name}"
                ))),
            None => Ok(()),
        };
        if written.is_ok() {
            written = self.write(key, &secrets, &plan).await;
        }
        if written.is_ok() {
            written = access::write(
                &self.client,
                key,
                &plan.access,
                role.as_ref(),
                binding.as_ref(),
            )
            .await;
        }
        if written.is_ok() {
            let publication = plan.publication.clone();
            written = publish::write(&self.client, &secrets, key, publication, &published).await;
        }
        if let Err(e) = &written
            && e.raced()
        {
            // Every write is guarded by the version planned from (status, Secrets, the Kong
            // consumer): the verifier wrote a `lastUsedAt`, someone changed or replaced a Secret
            // after its ownership check, or another write came first. That write did nothing;
            // plan again from what is there now, whose watch event usually comes sooner.
            debug!(error = %e, "a write raced a newer version; planning again");
            return Ok(Action::requeue(RACE_RECHECK));
        }
        if let Err(e) = written {
            // Best effort: the write failed, so this one may too; the retry repairs it anyway.
            let message = e.to_string();
            if let Err(report) = apply::api_error(api, key, &message, (self.clock)()).await {
                debug!(error = %report, "could not record ApiError in status");
            }
            return Err(e);
        }
        // Count mints once they are delivered, not when a failed attempt discarded them.
        for reason in plan.slots.iter().filter_map(|(_, a)| a.mint_label()) {
            self.metrics.minted(reason);
        }
        self.publish(key, &plan, false).await;
        if let Some(status) = plan.status.as_ref().or(key.status.as_ref()) {
            let previous = key.status.as_ref();
            // An unparsable spec.expiresAt is InvalidSpec, reported in status; no series for it.
            let key_end = key.spec.expires_at.as_deref().and_then(|t| t.parse().ok());
            self.metrics
                .track_expiry(&namespace, &name, key_end, previous, status);
            self.metrics
                .track_rotations(&namespace, &name, previous, status, &plan.rotations);
            self.metrics.track_ready(&namespace, &name, status);
        }
        if !plan.is_quiet() {
            info!(secret = %secret_name, status = plan.status.is_some(), secret_written = plan.secret.is_some(), restarts = plan.restarts.len(), "reconciled");
        }
        Ok(plan
            .requeue_after
            .map_or_else(Action::await_change, Action::requeue))
    }

    /// The cached personal keys (those with an owner) of `namespace`, as ApiKeys.
    fn personal_keys_in(&self, namespace: &str) -> Vec<ApiKey> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let cached = keys
            .as_ref()
            .map(reflector::Store::state)
            .unwrap_or_default();
        cached
            .iter()
            .filter(|k| k.owner.is_some() && k.metadata.namespace.as_deref() == Some(namespace))
            .map(|k| k.stand_in())
            .collect()
    }

    /// The Secrets `key`'s required headers read that exist, so the planner can publish hashes of
    /// their values. Read on every reconcile: they are the user's Secrets, not watched.
    async fn header_secrets(
        &self,
        secrets: &Api<Secret>,
        key: &ApiKey,
    ) -> Result<planner::headers::HeaderSecrets, Error> {
        let mut found = planner::headers::HeaderSecrets::new();
        for name in planner::headers::referenced(&key.spec) {
            let read = secrets.get_opt(&name).await.map_err(Error::kube(format!(
                "reading Secret {}/{name} named by requiredHeaders",
                key.namespace().unwrap_or_default()
            )))?;
            found.extend(read.map(|secret| (name, secret)));
        }
        Ok(found)
    }

    /// The plan's writes after its status, which comes first so that every token in the Secret
    /// verifies: the Secret, then the restarts.
    async fn write(&self, key: &ApiKey, secrets: &Api<Secret>, plan: &Plan) -> Result<(), Error> {
        let name = key.name_any();
        let namespace = key.namespace().unwrap_or_default();
        if let Some(secret) = &plan.secret {
            let written = apply::secret(secrets, secret)
                .await
                .map_err(Error::kube(format!(
                    "writing Secret {namespace}/{}",
                    secret.name
                )))?;
            self.own_writes.wrote("Secret", &written.metadata);
        }
        for restart in &plan.restarts {
            let target = format!(
                "{:?} {namespace}/{}",
                restart.target.kind, restart.target.name
            );
            let outcome = apply::restart(&self.client, key, restart)
                .await
                .map_err(Error::kube(format!("restarting {target}")))?;
            let (type_, reason, note) = match outcome {
                Restarted::Yes => {
                    self.metrics.rollout_restarts.inc();
                    (
                        EventKind::Normal,
                        "RestartTriggered",
                        format!("restarted {target} for tokens {}", restart.restarted_for),
                    )
                }
                Restarted::AlreadyDone => continue,
                Restarted::Missing => (
                    EventKind::Warning,
                    "RestartTriggered",
                    format!(
                        "restart target {target} does not exist; fix spec.secret.restartTargets"
                    ),
                ),
                Restarted::Refused => (
                    EventKind::Warning,
                    "RestartRefused",
                    format!(
                        "{target} not restarted: its pods read neither Secret {} (volume, projected volume, env secretKeyRef or envFrom secretRef) nor does it opt in with the annotation {RESTART_ON_ANNOTATION}: {name}",
                        key.secret_name()
                    ),
                ),
            };
            self.event(key, type_, reason, note).await;
        }
        Ok(())
    }

    /// Revoke on delete: remove the Secret this key created, or release one it adopted, and say so.
    /// The key is read fresh (the cache keeps no spec or status); gone, or replaced by a new key
    /// of the same name, it was revoked and released already.
    async fn cleanup(&self, api: &Api<ApiKey>, cached: &ApiKey) -> Result<Action, Error> {
        let namespace = cached.namespace().unwrap_or_default();
        let name = cached.name_any();
        let fresh = api
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("reading ApiKey {namespace}/{name}")))?;
        let Some(key) = fresh.filter(|key| key.uid() == cached.uid()) else {
            return Ok(Action::await_change());
        };
        let key = &key;
        if let Some(registries) = &self.access {
            // Kubernetes' garbage collector would delete them too, but only after the key is
            // gone: a new key of the same name would meanwhile find them not its own.
            let (role, binding) = access::observe(&self.client, registries, key).await?;
            let observed = planner::access::Observed {
                enabled: true,
                role: role.as_ref(),
                binding: binding.as_ref(),
            };
            let revoked = planner::access::plan(key, &[], &observed);
            access::write(&self.client, key, &revoked, None, None).await?;
        }
        let unpublished = publish::unpublish(&self.client, key).await?;
        if !unpublished.is_empty() {
            info!(secrets = ?unpublished, "published Secrets deleted");
        }
        self.revoke(key, key.secret_name()).await
    }

    /// Revoke a deleted key that cannot be read, from its metadata alone: its Secret is found by
    /// the label naming the key (`spec.secret.name` is unknown) and revoked as [`Self::cleanup`]
    /// would (the ownership checks need only the key's uid), then the finalizer is removed.
    /// Retried with the reconcile backoff until done or the key is gone.
    async fn revoke_unreadable(&self, meta: &ObjectMeta) {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let span = info_span!("revoke_unreadable", namespace = %namespace, name = %name);
        let mut backoff = Backoff::default();
        while let Err(error) = self
            .try_revoke_unreadable(meta)
            .instrument(span.clone())
            .await
        {
            let delay = backoff.fail();
            warn!(namespace = %namespace, name = %name, error = %error, retry_in = ?delay, "revoking an unreadable ApiKey failed");
            self.metrics.error(error.metric_reason());
            tokio::time::sleep(delay).await;
        }
    }

    async fn try_revoke_unreadable(&self, meta: &ObjectMeta) -> Result<(), Error> {
        let key = CachedKey::evicted(meta.clone()).stand_in();
        let namespace = key.namespace().unwrap_or_default();
        let name = key.name_any();
        let secrets: Api<PartialObjectMeta<Secret>> =
            Api::namespaced(self.client.clone(), &namespace);
        let labelled = secrets
            .list_metadata(&ListParams::default().labels(&format!("{APIKEY_LABEL}={name}")))
            .await
            .map_err(Error::kube(format!(
                "listing Secrets of ApiKey {namespace}/{name}"
            )))?;
        let mut names: Vec<String> = labelled.items.iter().map(ResourceExt::name_any).collect();
        if names.is_empty() {
            names.push(name.clone());
        }
        for secret_name in names {
            self.revoke(&key, secret_name).await?;
        }
        let Some(position) = meta
            .finalizers
            .iter()
            .flatten()
            .position(|f| f == FINALIZER)
        else {
            return Ok(());
        };
        // Like kube's finalizer helper: remove it only if the list is still the one seen.
        let path = format!("/metadata/finalizers/{position}");
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "test", "path": path, "value": FINALIZER},
            {"op": "remove", "path": path},
        ]))
        .map_err(|e| Error::Kube {
            action: "building the finalizer patch".to_owned(),
            source: kube::Error::SerdeError(e),
        })?;
        let keys = apikeys::api(self.client.clone(), &Scope::namespace(&namespace));
        match keys
            .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                debug!("the ApiKey is already gone");
                Ok(())
            }
            // The finalizer list changed (its next watch event decides again), or, as the API
            // server validates the whole stored object on any write, the spec that made it
            // unreadable fails the schema too: its tokens are revoked, but it stays until
            // someone fixes the spec (then it is read and finished as usual) or removes the
            // finalizer by hand.
            Err(kube::Error::Api(status)) if status.code == 422 => {
                warn!(
                    namespace = %namespace, name = %name, message = %status.message,
                    "tokens revoked, but the finalizer stays: the stored ApiKey fails the schema; \
                     fix its spec or remove the finalizer {FINALIZER} by hand"
                );
                Ok(())
            }
            Err(e) => Err(Error::kube(format!(
                "removing finalizer of ApiKey {namespace}/{name}"
            ))(e)),
        }
    }

    /// Revoke `key`'s tokens held in Secret `secret_name` and say so.
    async fn revoke(&self, key: &ApiKey, secret_name: String) -> Result<Action, Error> {
        let namespace = key.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let secret = secrets
            .get_opt(&secret_name)
            .await
            .map_err(Error::kube(format!(
                "reading Secret {namespace}/{secret_name}"
            )))?;
        let note = match (planner::revocation(key, secret.as_ref()), &secret) {
            (Revocation::Delete(deletion), _) => {
                apply::delete_secret(&secrets, &deletion)
                    .await
                    .map_err(Error::kube(format!(
                        "deleting Secret {namespace}/{secret_name}"
                    )))?;
                format!("tokens revoked; Secret {secret_name} deleted")
            }
            (Revocation::Release(observed), Some(secret)) => {
                apply::release_secret(&secrets, secret, &observed)
                    .await
                    .map_err(Error::kube(format!(
                        "releasing Secret {namespace}/{secret_name}"
                    )))?;
                format!(
                    "tokens revoked; adopted Secret {secret_name} kept without Keysmith's keys, labels, annotations and owner reference"
                )
            }
            (Revocation::Release(_) | Revocation::Leave, _) => {
                "tokens revoked; no Secret of this key to delete".to_owned()
            }
        };
        self.metrics
            .forget(&namespace, &key.name_any(), key.status.as_ref());
        self.event(key, EventKind::Normal, "Revoked", note).await;
        info!(secret = %secret_name, "revoked");
        Ok(Action::await_change())
    }

    /// Publish the plan's events that go before its writes, or those that go after them.
    async fn publish(&self, key: &ApiKey, plan: &Plan, before_writes: bool) {
        for event in plan
            .events
            .iter()
            .filter(|e| e.before_writes() == before_writes)
        {
            self.event(key, event.type_, event.reason, event.note.clone())
                .await;
        }
    }

    /// Publish an event; a failure is logged, not retried (events are best effort).
    async fn event(&self, key: &ApiKey, type_: EventKind, reason: &str, note: String) {
        if let Err(e) = self.events.publish(key, type_, reason, note).await {
            warn!(reason, error = %e, "could not publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn add_failed(code: u16, reason: &str) -> finalizer::Error<Error> {
        finalizer::Error::AddFinalizer(api_error(code, reason))
    }

    fn remove_failed(code: u16, reason: &str) -> finalizer::Error<Error> {
        finalizer::Error::RemoveFinalizer(api_error(code, reason))
    }

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Status::failure("rejected", reason).with_code(code).boxed())
    }

    #[test]
    fn removing_the_finalizer_of_a_key_already_gone_is_not_an_error() {
        // A pass from a stale cache repeats the revocation; the key is gone (404).
        assert!(finalizer_raced(remove_failed(404, "NotFound")).is_ok());
        for (code, reason) in [(409, "Conflict"), (422, "Invalid")] {
            assert!(
                finalizer_raced(remove_failed(code, reason)).is_ok(),
                "{code}"
            );
        }
        assert!(matches!(
            finalizer_raced(remove_failed(403, "Forbidden")),
            Err(Error::Finalizer(_))
        ));
    }

    #[test]
    fn a_revocation_whose_secret_changed_is_planned_again_with_the_finalizer_kept() {
        let cleanup_failed = |code, reason| {
            finalizer::Error::CleanupFailed(Error::Kube {
                action: "deleting Secret cms/site".to_owned(),
                source: api_error(code, reason),
            })
        };
        // The deletion's uid or resourceVersion precondition failed: look again shortly.
        assert!(finalizer_raced(cleanup_failed(409, "Conflict")).is_ok());
        // Anything else backs off.
        assert!(matches!(
            finalizer_raced(cleanup_failed(403, "Forbidden")),
            Err(Error::Finalizer(_))
        ));
    }

    #[test]
    fn a_raced_finalizer_patch_waits_for_the_newer_version() {
        // The JSON patch's `test` failed (422) or a write raced it (409): a watch event follows.
        for (code, reason) in [(409, "Conflict"), (422, "Invalid")] {
            assert!(finalizer_raced(add_failed(code, reason)).is_ok(), "{code}");
        }
        // Anything else backs off.
        assert!(matches!(
            finalizer_raced(add_failed(403, "Forbidden")),
            Err(Error::Finalizer(_))
        ));
    }
}

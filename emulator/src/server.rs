//! The shared server: state behind one lock, authentication, the request
//! log, faults, and the listener loop (plain HTTP or TLS).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::error::{ApiError, ApiResult};
use crate::faults::Faults;
use crate::rbac::{self, Attributes, UserInfo};
use crate::state::State;
use crate::tls::{Certificate, TlsMaterial};

/// One served request, as tests read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`), or the lower-case HTTP method for
    /// non-resource paths.
    pub verb: String,
    /// API group ("" for core and non-resource paths).
    pub group: String,
    /// Plural resource ("" for non-resource paths).
    pub resource: String,
    /// Subresource ("" when none).
    pub subresource: String,
    /// Namespace ("" when none).
    pub namespace: String,
    /// Object name ("" for collections).
    pub name: String,
    /// Authenticated user name.
    pub user: String,
    /// HTTP status code answered.
    pub code: u16,
    /// Request path.
    pub path: String,
}

impl LogEntry {
    /// Whether the request changed (or tried to change) state.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

/// The request log of a running emulator; cheap to clone, shared.
///
/// It keeps the newest entries up to a limit (`Config::request_log_limit`),
/// so a long `keysmith dev` session or a scale run does not grow without
/// bound, while successful writes are counted per resource without a limit,
/// so [`RequestLog::writes`] stays exact however many requests were served.
#[derive(Debug, Clone)]
pub struct RequestLog {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Debug)]
struct LogInner {
    entries: VecDeque<LogEntry>,
    limit: usize,
    writes: HashMap<String, usize>,
}

impl RequestLog {
    /// A log retaining the newest `limit` entries.
    pub(crate) fn new(limit: usize) -> Self {
        RequestLog {
            inner: Arc::new(Mutex::new(LogInner {
                entries: VecDeque::new(),
                limit,
                writes: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, entry: LogEntry) {
        let mut log = self.lock();
        if entry.is_write() && (200..300).contains(&entry.code) {
            *log.writes.entry(entry.resource.clone()).or_default() += 1;
        }
        if log.entries.len() >= log.limit {
            log.entries.pop_front();
        }
        if log.limit > 0 {
            log.entries.push_back(entry);
        }
    }

    /// Every retained request, oldest first.
    pub fn entries(&self) -> Vec<LogEntry> {
        self.lock().entries.iter().cloned().collect()
    }

    /// Retained requests matching a predicate.
    pub fn filter(&self, pred: impl Fn(&LogEntry) -> bool) -> Vec<LogEntry> {
        self.lock()
            .entries
            .iter()
            .filter(|e| pred(e))
            .cloned()
            .collect()
    }

    /// Successful writes (2xx) to a resource since the last `clear`, e.g.
    /// `writes("secrets")`; counted even once their entries are dropped.
    pub fn writes(&self, resource: &str) -> usize {
        self.lock().writes.get(resource).copied().unwrap_or(0)
    }

    /// Forget everything logged so far.
    pub fn clear(&self) {
        let mut log = self.lock();
        log.entries.clear();
        log.writes.clear();
    }
}

/// How requests are authenticated and authorised.
#[derive(Debug)]
pub struct Auth {
    /// The token of the `system:masters` administrator.
    pub admin_token: String,
    /// Whether RBAC is enforced.
    pub rbac: bool,
    /// Whether tokens that name their identity authenticate (see `Config::naming_tokens`).
    pub naming_tokens: bool,
    /// Extra tokens registered by tests.
    pub tokens: Mutex<HashMap<String, UserInfo>>,
}

impl Auth {
    /// Resolve a bearer token (or its absence) to an identity.
    pub fn authenticate(&self, bearer: Option<&str>) -> Option<UserInfo> {
        match bearer {
            None if !self.rbac => Some(UserInfo::admin()),
            None => None,
            Some(t) if t == self.admin_token => Some(UserInfo::admin()),
            Some(t) => {
                let known = self
                    .tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(t)
                    .cloned();
                known
                    .or_else(|| {
                        self.naming_tokens
                            .then(|| UserInfo::from_naming_token(t))
                            .flatten()
                    })
                    .or_else(|| (!self.rbac).then(UserInfo::admin))
            }
        }
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct Server {
    state: Mutex<State>,
    /// Fault settings.
    pub faults: Faults,
    /// Request log.
    pub log: RequestLog,
    /// Authentication and RBAC settings.
    pub auth: Auth,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
    /// `host:port` the server listens on.
    pub address: String,
    /// The aggregator's client certificate for extension API servers.
    pub front_proxy: Certificate,
}

impl Server {
    /// Build the shared server.
    pub fn new(
        state: State,
        faults: Faults,
        auth: Auth,
        bookmark_interval: Duration,
        address: String,
        log: RequestLog,
        front_proxy: Certificate,
    ) -> Self {
        Server {
            state: Mutex::new(state),
            faults,
            log,
            auth,
            bookmark_interval,
            address,
            front_proxy,
        }
    }

    /// Lock the state. Handlers never hold it across an await.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user` may do what `attrs` describe (always, with RBAC off).
    pub fn permits(&self, user: &UserInfo, attrs: &Attributes) -> bool {
        !self.auth.rbac || rbac::authorize(&self.state(), user, attrs)
    }

    /// [`Server::permits`], as the 403 the API server answers when it says no.
    pub fn require(&self, user: &UserInfo, attrs: &Attributes) -> ApiResult<()> {
        if self.permits(user, attrs) {
            Ok(())
        } else {
            Err(ApiError::forbidden(rbac::forbidden_message(user, attrs)))
        }
    }
}

/// Serve `router` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, router: Router, tls: Option<TlsMaterial>) {
    let Some(tls) = tls else {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "emulator listener failed");
        }
        return;
    };
    loop {
        let (stream, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let acceptor = tls.acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(verb: &str, code: u16) -> LogEntry {
        LogEntry {
            verb: verb.into(),
            group: String::new(),
            resource: "secrets".into(),
            subresource: String::new(),
            namespace: "default".into(),
            name: "s".into(),
            user: "system:admin".into(),
            code,
            path: "/api/v1/namespaces/default/secrets/s".into(),
        }
    }

    #[test]
    fn the_log_is_bounded_but_write_counts_stay_exact() {
        let log = RequestLog::new(2);
        for (verb, code) in [
            ("create", 201),
            ("update", 200),
            ("get", 200),
            ("patch", 409),
        ] {
            log.push(entry(verb, code));
        }
        let kept: Vec<String> = log.entries().into_iter().map(|e| e.verb).collect();
        assert_eq!(kept, ["get", "patch"]);
        assert_eq!(log.writes("secrets"), 2);
        log.clear();
        assert_eq!(log.writes("secrets"), 0);
    }
}

//! The shared server: state behind one lock, authentication, the request
//! log, faults, and the listener loop (plain HTTP or TLS).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::faults::Faults;
use crate::objects::State;
use crate::rbac::UserInfo;
use crate::tls::TlsMaterial;

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
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    entries: Arc<Mutex<Vec<LogEntry>>>,
}

impl RequestLog {
    fn lock(&self) -> MutexGuard<'_, Vec<LogEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, entry: LogEntry) {
        self.lock().push(entry);
    }

    /// Every request so far, oldest first.
    pub fn entries(&self) -> Vec<LogEntry> {
        self.lock().clone()
    }

    /// Requests matching a predicate.
    pub fn filter(&self, pred: impl Fn(&LogEntry) -> bool) -> Vec<LogEntry> {
        self.lock().iter().filter(|e| pred(e)).cloned().collect()
    }

    /// Successful writes (2xx) to a resource, e.g. `writes("secrets")`.
    pub fn writes(&self, resource: &str) -> usize {
        self.lock()
            .iter()
            .filter(|e| e.is_write() && e.resource == resource && (200..300).contains(&e.code))
            .count()
    }

    /// Forget everything logged so far.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// How requests are authenticated and authorised.
#[derive(Debug)]
pub struct Auth {
    /// The token of the `system:masters` administrator.
    pub admin_token: String,
    /// Whether RBAC is enforced.
    pub rbac: bool,
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
                    .or_else(|| UserInfo::from_naming_token(t))
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
}

impl Server {
    /// Build the shared server.
    pub fn new(
        state: State,
        faults: Faults,
        auth: Auth,
        bookmark_interval: Duration,
        address: String,
    ) -> Self {
        Server {
            state: Mutex::new(state),
            faults,
            log: RequestLog::default(),
            auth,
            bookmark_interval,
            address,
        }
    }

    /// Lock the state. Handlers never hold it across an await.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

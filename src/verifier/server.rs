//! Serving the verification API: one single-threaded runtime per core, each owning the
//! connections it is handed, like nginx's worker processes.
//!
//! Gateways keep a few dozen connections open and send small requests on each. Under tokio's
//! work-stealing runtime every request woke tasks across threads and freed memory allocated on
//! another thread, which cost more than the verification itself (`bench/load.sh`: 0.38 of nginx's
//! request rate). Here one task accepts and deals connections round-robin to the workers; a
//! connection then lives on one thread, and its requests never cross a thread.
//!
//! Every client is bounded ([`Limits`]): a request head must arrive within the header-read
//! timeout (hyper starts that clock whenever a connection waits for a request, so it also closes
//! idle keep-alive connections), it must fit in `max_header_bytes`, and past the connection cap a
//! new connection is closed as soon as it is accepted, so slow or idle clients cannot hold memory
//! and file descriptors without bound.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

/// A connection handed to a worker, counted as open until it is dropped.
type Accepted = (std::net::TcpStream, SocketAddr, Open);

/// The smallest read buffer hyper accepts.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// What one client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time for a complete request head, from when the connection waits for one (also the
    /// longest a keep-alive connection stays idle).
    pub header_read_timeout: Duration,
    /// Time for a complete request body once its head is in.
    pub body_read_timeout: Duration,
    /// Largest request head, request line included (431 beyond), at least [`MIN_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// Connections open at once; more are closed when accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            max_connections: 1024,
        }
    }
}

/// `keysmith_verifier_connections_open` and `keysmith_verifier_connections_rejected_total`.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    open: Gauge,
    rejected: Counter,
}

impl Connections {
    /// Create the metrics and register them in `registry` (whose prefix should be `keysmith`).
    pub fn register(registry: &mut Registry) -> Connections {
        let connections = Connections::default();
        registry.register(
            "verifier_connections_open",
            "Connections open to the verification API",
            connections.open.clone(),
        );
        registry.register(
            "verifier_connections_rejected",
            "Connections to the verification API closed at once because --max-connections were open",
            connections.rejected.clone(),
        );
        connections
    }

    /// Count a new connection as open, unless `max` are; then count it as rejected.
    fn admit(&self, max: usize) -> Option<Open> {
        // Only the accept loop opens connections, so nothing else raises the count meanwhile.
        if usize::try_from(self.open.get()).is_ok_and(|open| open >= max) {
            self.rejected.inc();
            return None;
        }
        self.open.inc();
        Some(Open(self.open.clone()))
    }
}

/// One open connection; dropping it counts it closed.
#[derive(Debug)]
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Answers a request, given the TCP peer it came from.
pub trait Handler: Clone + Send + 'static {
    /// The answer being worked out.
    type Answer: Future<Output = Response<Full<Bytes>>> + Send + 'static;
    /// Answer `request` from `peer`.
    fn call(&self, peer: SocketAddr, request: Request<Incoming>) -> Self::Answer;
}

impl<F, A> Handler for F
where
    F: Fn(SocketAddr, Request<Incoming>) -> A + Clone + Send + 'static,
    A: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    type Answer = A;
    fn call(&self, peer: SocketAddr, request: Request<Incoming>) -> A {
        self(peer, request)
    }
}

/// Serve `handler` on `listener` within `limits` (over TLS with `tls`), counting connections in
/// `connections`, until `shutdown` completes, then wait for open requests to finish.
pub async fn serve(
    listener: TcpListener,
    handler: impl Handler,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let mut queues = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for n in 0..workers {
        let (queue, accepted) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (handler, stopped, tls) = (handler.clone(), stopped.clone(), tls.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("keysmith-api-{n}"))
                .spawn(move || runtime.block_on(worker(accepted, handler, limits, tls, stopped)))?,
        );
        queues.push(queue);
    }

    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Dropping a connection past the cap closes it before anything is read from it.
                let Some(open) = connections.admit(limits.max_connections) else {
                    continue;
                };
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                // A worker only stops after `stop`, so its queue is open here.
                let _ = queues[next].send((stream, peer, open));
                next = (next + 1) % workers;
            }
            Err(err) if is_connection_error(&err) => {}
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning on accept.
                tracing::warn!(error = %err, "cannot accept a connection; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    let _ = stop.send(true);
    drop(queues);
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await
    .map_err(io::Error::other)
}

/// Errors of one connection that the listener survives untouched.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One worker: serve every connection it is handed until told to stop, then let open requests
/// finish.
async fn worker(
    mut connections: mpsc::UnboundedReceiver<Accepted>,
    handler: impl Handler,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // Answers are small: copied behind their head and written with one write instead of queued
    // as a second buffer for writev, which costs more to keep than the copy.
    // `max_header_size` is the exact limit (431 beyond). The read buffer limit alone is not
    // one: a head that arrives in large reads can be parsed whole before the buffer's size is
    // checked, so a 40 KB head passed a 32 KiB limit; it stays as the bound on buffered bytes.
    let max_header_bytes = limits.max_header_bytes.max(MIN_HEADER_BYTES);
    http.timer(TokioTimer::new())
        .writev(false)
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(max_header_bytes)
        .max_buf_size(max_header_bytes);
    loop {
        let (stream, peer, open) = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            connection = connections.recv() => match connection {
                Some(connection) => connection,
                None => break,
            },
        };
        let Ok(stream) = TcpStream::from_std(stream) else {
            continue;
        };
        // Answers are one small write each; do not hold them back waiting for an ACK.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let answer = handler.call(peer, request);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let (http, watcher) = (http.clone(), graceful.watcher());
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_one(&http, watcher, stream, service).await,
                // The handshake gets the header-read timeout too: a client that opens a
                // connection and never says hello holds it no longer than a silent one.
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, tls.accept(stream));
                    if let Ok(Ok(stream)) = handshake.await {
                        serve_one(&http, watcher, stream, service).await;
                    }
                }
            }
            drop(open);
        });
    }
    graceful.shutdown().await;
}

/// Serve the requests of one connection until it closes or shutdown ends it.
async fn serve_one<IO, S>(
    http: &http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    io: IO,
    service: S,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>> + Send,
    S::Future: Send,
{
    // A client hanging up mid-request is its own business.
    let _ = watcher
        .watch(http.serve_connection(TokioIo::new(io), service))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_peer(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0; 512];
        while !answer.ends_with(b"\n.") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connection closed: {:?}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn serves_keep_alive_connections_with_the_peer_and_stops_when_asked() {
        let handler = |peer: SocketAddr, _: Request<Incoming>| async move {
            Response::new(Full::new(Bytes::from(format!("{peer}\n."))))
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            handler,
            Limits::default(),
            None,
            Connections::default(),
            async {
                let _ = stopped.await;
            },
        ));

        // More connections than workers, each used twice: every one is served, and sees itself.
        let mut connections = Vec::new();
        for _ in 0..5 {
            connections.push(TcpStream::connect(addr).await.unwrap());
        }
        for _ in 0..2 {
            for stream in &mut connections {
                let local = stream.local_addr().unwrap();
                let answer = get_peer(stream).await;
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                assert!(answer.contains(&format!("\r\n\r\n{local}\n.")), "{answer}");
            }
        }

        // Idle keep-alive connections do not hold shutdown up; then nothing listens.
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        for stream in &mut connections {
            let mut buf = [0; 16];
            assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
        }
        assert!(TcpStream::connect(addr).await.is_err());
    }

    /// A server answering its peer, within `limits`, until the test ends.
    async fn limited(limits: Limits) -> (SocketAddr, Registry) {
        let handler = |peer: SocketAddr, _: Request<Incoming>| async move {
            Response::new(Full::new(Bytes::from(format!("{peer}\n."))))
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut registry = Registry::with_prefix("keysmith");
        let connections = Connections::register(&mut registry);
        tokio::spawn(serve(
            listener,
            handler,
            limits,
            None,
            connections,
            std::future::pending(),
        ));
        (addr, registry)
    }

    /// Read until the server closes the connection; how long that took.
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
        let start = std::time::Instant::now();
        let mut buf = [0; 512];
        let read_to_end = async {
            // A reset is a close too.
            while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
        };
        tokio::time::timeout(limit, read_to_end)
            .await
            .expect("the server closes the connection");
        start.elapsed()
    }

    fn metrics(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn slow_and_idle_clients_are_cut_off_at_the_header_timeout_while_others_are_served() {
        let header_read_timeout = Duration::from_millis(300);
        let (addr, _) = limited(Limits {
            header_read_timeout,
            ..Limits::default()
        })
        .await;
        // Slowloris: a head that never ends, one byte at a time.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let dribble = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(50));
            loop {
                interval.tick().await;
                if slow.write_all(b"X").await.is_err() {
                    return slow;
                }
            }
        });
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut normal = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut normal).await.starts_with("HTTP/1.1 200"));
        let took = closed_within(&mut silent, Duration::from_secs(3)).await;
        assert!(took >= header_read_timeout / 2, "{took:?}");
        let mut slow = tokio::time::timeout(Duration::from_secs(3), dribble)
            .await
            .expect("the dribbling client is cut off")
            .unwrap();
        closed_within(&mut slow, Duration::from_secs(1)).await;
        // The idle keep-alive connection is closed too; a new one is served.
        closed_within(&mut normal, Duration::from_secs(3)).await;
        let mut again = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut again).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn heads_larger_than_the_limit_are_refused() {
        let (addr, _) = limited(Limits {
            max_header_bytes: MIN_HEADER_BYTES,
            ..Limits::default()
        })
        .await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let cookie = "c".repeat(4 * MIN_HEADER_BYTES);
        let head = format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n");
        // The server may answer and close before the whole head is written.
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    /// The answer to a request head of exactly `size` bytes, sent in one write.
    async fn answer_to_head_of(addr: SocketAddr, size: usize) -> String {
        let start = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: ";
        let cookie = "c".repeat(size - start.len() - "\r\n\r\n".len());
        let head = format!("{start}{cookie}\r\n\r\n");
        assert_eq!(head.len(), size);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before the whole head is written.
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn the_head_limit_is_exact() {
        // hyper's read buffer limit let a 40 KB head through a 32 KiB limit (issue 27).
        let limit = Limits::default().max_header_bytes;
        let (addr, _) = limited(Limits::default()).await;
        for size in [limit - 1, limit] {
            let answer = answer_to_head_of(addr, size).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{size}: {answer}");
        }
        for size in [limit + 1, 40_000] {
            let answer = answer_to_head_of(addr, size).await;
            assert!(answer.starts_with("HTTP/1.1 431"), "{size}: {answer}");
        }
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once_and_counted() {
        let (addr, registry) = limited(Limits {
            max_connections: 2,
            ..Limits::default()
        })
        .await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut first).await.starts_with("HTTP/1.1 200"));
        assert!(get_peer(&mut second).await.starts_with("HTTP/1.1 200"));
        let mut third = TcpStream::connect(addr).await.unwrap();
        closed_within(&mut third, Duration::from_secs(1)).await;
        let text = metrics(&registry);
        assert!(
            text.contains("keysmith_verifier_connections_open 2"),
            "{text}"
        );
        assert!(
            text.contains("keysmith_verifier_connections_rejected_total 1"),
            "{text}"
        );
        // The open ones are still served; once one closes, a new one is admitted.
        assert!(get_peer(&mut first).await.starts_with("HTTP/1.1 200"));
        drop(second);
        eventually_open(&registry, 1).await;
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut fourth).await.starts_with("HTTP/1.1 200"));
    }

    async fn eventually_open(registry: &Registry, open: usize) {
        let expected = format!("keysmith_verifier_connections_open {open}\n");
        for _ in 0..100 {
            if metrics(registry).contains(&expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{}", metrics(registry));
    }
}

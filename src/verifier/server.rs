//! Serving the verification API and the usage API: one single-threaded runtime per core, each
//! owning the connections it is handed, like nginx's worker processes.
//!
//! Gateways keep a few dozen connections open and send small requests on each. Under tokio's
//! work-stealing runtime every request woke tasks across threads and freed memory allocated on
//! another thread, which cost more than the verification itself (`bench/load.sh`: 0.38 of nginx's
//! request rate). Here one task accepts and deals connections round-robin to the workers; a
//! connection then lives on one thread, and its requests never cross a thread.
//!
//! Every client is bounded ([`Limits`]) whatever state its connection is in, so slow or idle
//! clients cannot hold memory, file descriptors or slots without bound:
//! - TLS handshake: within `tls_handshake_timeout`;
//! - waiting for a request head: within the header-read timeout (hyper starts that clock whenever
//!   a connection waits for a request, so it also closes idle keep-alive connections), and it
//!   must fit in `max_header_bytes`;
//! - waiting for a body: the handler reads it within `body_read_timeout`;
//! - writing an answer the client does not read: within `write_timeout` ([`WriteDeadline`]);
//! - pipelined requests: hyper answers one request of a connection at a time and reads no
//!   further than its read buffer (`max_header_bytes`) while an answer is unwritten, so a client
//!   that never reads queues at most one request in the handler and a buffer of bytes;
//! - connection slots: at most `max_connections`, `max_connections_per_peer` from one address,
//!   and at the cap an idle connection of the largest holder makes room for a newcomer
//!   ([`slots`](super::slots) says why).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
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
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::slots::{Held, Slots};
use super::write_deadline::WriteDeadline;

/// A connection handed to a worker, holding its slot until it is dropped.
type Accepted = (std::net::TcpStream, SocketAddr, Open);

/// The certificate a TLS client presented (its leaf), in the extensions of each of its
/// requests.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<CertificateDer<'static>>);

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
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_peer: usize,
    /// Time to write what is pending once a write has to wait for the client to read.
    pub write_timeout: Duration,
    /// Time for a TLS handshake, from when the connection is accepted.
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            max_connections: 1024,
            // A quarter: four addresses (gateway pods, a NAT) must join to fill the cap, and
            // even then idle connections make room for newcomers.
            max_connections_per_peer: 256,
            write_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// `keysmith_verifier_connections_open`, `keysmith_verifier_connections_rejected_total` and
/// `keysmith_verifier_connections_evicted_total`.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    open: Gauge,
    rejected: Counter,
    evicted: Counter,
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
            "Connections to the verification API closed at once: the connection caps were \
             reached and every connection that could make room was busy",
            connections.rejected.clone(),
        );
        registry.register(
            "verifier_connections_evicted",
            "Idle connections to the verification API closed to make room for a new one at the \
             connection caps",
            connections.evicted.clone(),
        );
        connections
    }

    /// A slot in `slots` for a new connection from `peer`, counted as open; or none, counted
    /// as rejected.
    fn admit(&self, slots: &Slots, peer: SocketAddr) -> Option<Open> {
        let Ok((held, evicting)) = slots.admit(peer.ip()) else {
            self.rejected.inc();
            return None;
        };
        if evicting {
            self.evicted.inc();
        }
        self.open.inc();
        Some(Open {
            gauge: self.open.clone(),
            held,
        })
    }
}

/// One open connection and its slot; dropping it counts it closed and frees the slot.
#[derive(Debug)]
struct Open {
    gauge: Gauge,
    held: Held,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Answers a request with a body of type `B`, given the TCP peer it came from.
pub trait Handler<B = Incoming>: Clone + Send + 'static {
    /// The answer being worked out.
    type Answer: Future<Output = Response<Full<Bytes>>> + Send + 'static;
    /// Answer `request` from `peer`.
    fn call(&self, peer: SocketAddr, request: Request<B>) -> Self::Answer;
}

impl<F, A, B> Handler<B> for F
where
    F: Fn(SocketAddr, Request<B>) -> A + Clone + Send + 'static,
    A: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    type Answer = A;
    fn call(&self, peer: SocketAddr, request: Request<B>) -> A {
        self(peer, request)
    }
}

/// No lean path: every request goes through hyper.
pub type NoLean = fn(SocketAddr, Request<Full<Bytes>>) -> std::future::Ready<Response<Full<Bytes>>>;

/// Serve `handler` on `listener` within `limits` (over TLS with `tls`; a client certificate is
/// handed on as [`ClientCertificate`]), counting connections in `connections`, until `shutdown`
/// completes, then wait for open requests to finish.
pub async fn serve(
    listener: TcpListener,
    handler: impl Handler,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(
        listener,
        handler,
        None::<NoLean>,
        limits,
        tls,
        connections,
        shutdown,
    )
    .await
}

/// [`serve`], with the hot endpoints on plain HTTP served by `lean` ([`super::lean`]).
pub async fn serve_with(
    listener: TcpListener,
    handler: impl Handler,
    lean: Option<impl Handler<Full<Bytes>>>,
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
        let lean = lean.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("keysmith-api-{n}"))
                .spawn(move || {
                    runtime.block_on(worker(accepted, handler, lean, limits, tls, stopped))
                })?,
        );
        queues.push(queue);
    }

    let slots = Slots::new(limits.max_connections, limits.max_connections_per_peer);
    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Dropping a connection past the caps closes it before anything is read from it.
                let Some(open) = connections.admit(&slots, peer) else {
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
    lean: Option<impl Handler<Full<Bytes>>>,
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
        let stream = WriteDeadline::new(stream, limits.write_timeout);
        let (handler, http, watcher) = (handler.clone(), http.clone(), graceful.watcher());
        let (tls, lean, stopped) = (tls.clone(), lean.clone(), stopped.clone());
        tokio::spawn(async move {
            let slot = open.held.slot().clone();
            let serve = async {
                match (tls, lean) {
                    (None, Some(lean)) => {
                        // `watcher` lives as long as this connection (it is handed to hyper or
                        // dropped with it), so the wait for open requests covers the lean path.
                        let ended = super::lean::serve(
                            stream,
                            peer,
                            lean,
                            &slot,
                            limits.header_read_timeout,
                            max_header_bytes,
                            stopped,
                        )
                        .await;
                        if let super::lean::Ended::HandOver(stream) = ended {
                            let service = service(handler, peer, &open, None);
                            serve_one(&http, watcher, stream, service).await;
                        }
                    }
                    (None, None) => {
                        serve_one(&http, watcher, stream, service(handler, peer, &open, None)).await
                    }
                    (Some(tls), _) => {
                        let handshake =
                            tokio::time::timeout(limits.tls_handshake_timeout, tls.accept(stream));
                        let Ok(Ok(stream)) = handshake.await else {
                            return;
                        };
                        let certificate = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(<[_]>::first)
                            .map(|leaf| ClientCertificate(Arc::new(leaf.clone().into_owned())));
                        let service = service(handler, peer, &open, certificate);
                        serve_one(&http, watcher, stream, service).await;
                    }
                }
            };
            // An evicted connection is closed where it stands: it had no request in the handler.
            tokio::select! {
                () = serve => {}
                () = slot.evicted() => {}
            }
            drop(open);
        });
    }
    graceful.shutdown().await;
}

/// The hyper service of one connection: `handler`, told the peer, with the client's certificate
/// in each request, counting each request as work on the connection's slot.
fn service(
    handler: impl Handler,
    peer: SocketAddr,
    open: &Open,
    certificate: Option<ClientCertificate>,
) -> impl hyper::service::HttpService<Incoming, ResBody = Full<Bytes>, Future: Send> + Send {
    let slot = open.held.slot().clone();
    service_fn(move |mut request: Request<Incoming>| {
        let working = slot.working();
        if let Some(certificate) = &certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        let answer = handler.call(peer, request);
        async move {
            let answer = answer.await;
            drop(working);
            Ok::<_, Infallible>(answer)
        }
    })
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
        let (addr, registry, _) = holding(limits).await;
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

    /// A server within `limits` whose handler answers its peer, except `/hold`, which it never
    /// answers; counts the requests it is given in `seen`.
    async fn holding(limits: Limits) -> (SocketAddr, Registry, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let counted = seen.clone();
        let handler = move |peer: SocketAddr, request: Request<Incoming>| {
            let _in_flight = counted.start(peer);
            let hold = request.uri().path() == "/hold";
            async move {
                let _in_flight = _in_flight;
                if hold {
                    std::future::pending::<()>().await;
                }
                Response::new(Full::new(Bytes::from(format!("{peer}\n."))))
            }
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
        (addr, registry, seen)
    }

    /// Requests the handler was given, and the most it had at once from one connection.
    #[derive(Debug, Default)]
    struct Seen {
        calls: std::sync::atomic::AtomicUsize,
        in_flight: std::sync::Mutex<std::collections::HashMap<SocketAddr, usize>>,
        most_at_once: std::sync::atomic::AtomicUsize,
    }

    impl Seen {
        fn start(self: &Arc<Self>, peer: SocketAddr) -> InFlight {
            use std::sync::atomic::Ordering::SeqCst;
            self.calls.fetch_add(1, SeqCst);
            let mut in_flight = self.in_flight.lock().unwrap();
            let now = in_flight.entry(peer).or_default();
            *now += 1;
            self.most_at_once.fetch_max(*now, SeqCst);
            InFlight(self.clone(), peer)
        }
    }

    struct InFlight(Arc<Seen>, SocketAddr);

    impl Drop for InFlight {
        fn drop(&mut self) {
            *self.0.in_flight.lock().unwrap().get_mut(&self.1).unwrap() -= 1;
        }
    }

    /// A connection to `addr` from `from` (127.0.0.2 is loopback too on Linux: another
    /// client address on this machine), with a receive buffer of about `receive_buffer` bytes.
    async fn connect_from(
        from: [u8; 4],
        addr: SocketAddr,
        receive_buffer: Option<u32>,
    ) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// Hang guard: far longer than any configured timeout in these tests.
    const HANG_GUARD: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn slow_readers_filling_the_cap_are_cut_off_at_the_write_timeout_and_others_are_served() {
        // Issue 27, N1: clients pipeline requests and never read the answers. The head and idle
        // timeouts are long and nobody else connects meanwhile, so only the write deadline can
        // close them.
        let (addr, registry, seen) = holding(Limits {
            max_connections: 4,
            max_connections_per_peer: 4,
            header_read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        let mut readers = Vec::new();
        let mut writers = Vec::new();
        for _ in 0..4 {
            let stream = connect_from([127, 0, 0, 1], addr, Some(1024)).await;
            let (reader, mut writer) = stream.into_split();
            readers.push(reader);
            writers.push(tokio::spawn(async move {
                let requests = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1024);
                let mut sent = 0;
                // Up to 5 MB, as in the report; the write fails once the server closes.
                while sent < 5_000_000 {
                    if writer.write_all(&requests).await.is_err() {
                        break;
                    }
                    sent += 1024;
                }
                (writer, sent)
            }));
        }
        open_within(&registry, 0, HANG_GUARD).await;
        // Each was answered one request at a time, and far from all it sent: the server
        // stopped reading when the client stopped reading.
        let mut sent = 0;
        for writer in writers {
            sent += tokio::time::timeout(HANG_GUARD, writer)
                .await
                .unwrap()
                .unwrap()
                .1;
        }
        assert_eq!(
            seen.most_at_once.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        let calls = seen.calls.load(std::sync::atomic::Ordering::SeqCst);
        assert!(calls < sent, "{calls} of {sent} requests were handled");
        // The slow readers still hold their sockets; a new client is served.
        let mut other = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut other).await.starts_with("HTTP/1.1 200"));
        drop(readers);
    }

    #[tokio::test]
    async fn idle_connections_filling_the_cap_make_room_for_a_newcomer() {
        // Issue 27, N2 on this port: one address fills every slot with connections that send
        // nothing, and keeps them; the head timeout is long.
        let (addr, registry, _) = holding(Limits {
            max_connections: 4,
            max_connections_per_peer: 4,
            header_read_timeout: Duration::from_secs(60),
            ..Limits::default()
        })
        .await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(connect_from([127, 0, 0, 1], addr, None).await);
            // Admitted in this order, so the first is idle longest.
            open_within(&registry, idle.len(), HANG_GUARD).await;
        }
        let mut newcomer = connect_from([127, 0, 0, 2], addr, None).await;
        assert!(get_peer(&mut newcomer).await.starts_with("HTTP/1.1 200"));
        // The one idle longest made room; the others are still open.
        closed_within(&mut idle[0], HANG_GUARD).await;
        open_within(&registry, 4, HANG_GUARD).await;
        let text = metrics(&registry);
        assert!(
            text.contains("keysmith_verifier_connections_evicted_total 1\n"),
            "{text}"
        );
        for stream in &mut idle[1..] {
            assert!(get_peer(stream).await.starts_with("HTTP/1.1 200"));
        }
    }

    #[tokio::test]
    async fn one_address_holding_its_share_of_busy_connections_leaves_room_for_another() {
        // One address's requests never finish, so none of its connections can make room: its
        // share, not the whole cap, is what it can take.
        let (addr, registry, seen) = holding(Limits {
            max_connections: 8,
            max_connections_per_peer: 4,
            ..Limits::default()
        })
        .await;
        let mut held = Vec::new();
        for n in 1..=8 {
            let mut stream = connect_from([127, 0, 0, 1], addr, None).await;
            // Refused ones may be closed before this is written.
            let _ = stream
                .write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            if n <= 4 {
                calls_within(&seen, n).await;
            }
            held.push(stream);
        }
        // Four are in the handler; the other four were closed at once.
        metric_within(
            &registry,
            "keysmith_verifier_connections_rejected_total 4\n",
        )
        .await;
        let mut other = connect_from([127, 0, 0, 2], addr, None).await;
        assert!(get_peer(&mut other).await.starts_with("HTTP/1.1 200"));
        assert_eq!(seen.calls.load(std::sync::atomic::Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once_when_all_are_busy_and_counted() {
        let (addr, registry, seen) = holding(Limits {
            max_connections: 2,
            ..Limits::default()
        })
        .await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut first).await.starts_with("HTTP/1.1 200"));
        second
            .write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        calls_within(&seen, 2).await;
        // `first` is idle: it makes room for `third`.
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut third).await.starts_with("HTTP/1.1 200"));
        closed_within(&mut first, HANG_GUARD).await;
        // Now `second` holds a request and `third` is the one idle: it goes for `fourth`.
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut fourth).await.starts_with("HTTP/1.1 200"));
        closed_within(&mut third, HANG_GUARD).await;
        // With both busy, a new connection is closed at once.
        fourth
            .write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        calls_within(&seen, 5).await;
        let mut fifth = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0; 16];
        let answered = tokio::time::timeout(HANG_GUARD, fifth.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(answered.unwrap_or(0), 0);
        open_within(&registry, 2, HANG_GUARD).await;
        let text = metrics(&registry);
        assert!(
            text.contains("keysmith_verifier_connections_rejected_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("keysmith_verifier_connections_evicted_total 2\n"),
            "{text}"
        );
        // Once one closes, a new one is admitted.
        drop(second);
        open_within(&registry, 1, HANG_GUARD).await;
        let mut sixth = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut sixth).await.starts_with("HTTP/1.1 200"));
    }

    /// Wait until `open` connections are counted open.
    async fn open_within(registry: &Registry, open: usize, limit: Duration) {
        let expected = format!("keysmith_verifier_connections_open {open}\n");
        let deadline = tokio::time::Instant::now() + limit;
        while !metrics(registry).contains(&expected) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}",
                metrics(registry)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until the metrics hold `line`.
    async fn metric_within(registry: &Registry, line: &str) {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        while !metrics(registry).contains(line) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}",
                metrics(registry)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until the handler was given `calls` requests.
    async fn calls_within(seen: &Seen, calls: usize) {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        while seen.calls.load(std::sync::atomic::Ordering::SeqCst) < calls {
            assert!(tokio::time::Instant::now() < deadline, "{seen:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

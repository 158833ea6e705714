//! Serving the verification API: one single-threaded runtime per core, each owning the
//! connections it is handed, like nginx's worker processes.
//!
//! Gateways keep a few dozen connections open and send small requests on each. Under tokio's
//! work-stealing runtime every request woke tasks across threads and freed memory allocated on
//! another thread, which cost more than the verification itself (`bench/load.sh`: 0.38 of nginx's
//! request rate). Here one task accepts and deals connections round-robin to the workers; a
//! connection then lives on one thread, and its requests never cross a thread.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// A connection handed to a worker.
type Accepted = (std::net::TcpStream, SocketAddr);

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

/// Serve `handler` on `listener` until `shutdown` completes, then wait for open requests to
/// finish.
pub async fn serve(
    listener: TcpListener,
    handler: impl Handler,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let mut queues = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for n in 0..workers {
        let (queue, connections) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (handler, stopped) = (handler.clone(), stopped.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("keysmith-api-{n}"))
                .spawn(move || runtime.block_on(worker(connections, handler, stopped)))?,
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
        match accepted.and_then(|(stream, peer)| Ok((stream.into_std()?, peer))) {
            Ok(connection) => {
                // A worker only stops after `stop`, so its queue is open here.
                let _ = queues[next].send(connection);
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
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        let (stream, peer) = tokio::select! {
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
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client hanging up mid-request is its own business.
            let _ = connection.await;
        });
    }
    graceful.shutdown().await;
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
        let server = tokio::spawn(serve(listener, handler, async {
            let _ = stopped.await;
        }));

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
}

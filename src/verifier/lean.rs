//! A serving path of its own for `GET /v1/authz` and `POST /v1/verify` on plain HTTP/1.1: the
//! request head parsed with `httparse`, the answer written as hyper writes it, the connection
//! handed to hyper (with the bytes already read) at the first request that is anything else.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::{Body, Bytes};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::server::Handler;
use super::slots::Slot;

/// Most header lines of a request this path takes; more go to hyper.
const MAX_HEADERS: usize = 32;

/// How a connection left the lean path.
pub enum Ended<IO> {
    /// Closed (by the client, an error or a timeout): nothing more to do.
    Closed,
    /// A request this path does not serve: hyper serves the connection from here on.
    HandOver(Replay<IO>),
}

/// A request this path serves, parsed.
struct Hot {
    request: Request<Full<Bytes>>,
    /// Bytes of the buffer it took, head and body.
    len: usize,
}

// Returned by value once a request: boxing the large variant would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Hot(Hot),
    /// The head (or body) is not all in yet.
    Partial,
    /// Anything else: hyper's to serve or refuse.
    Other,
}

/// Serve `io`'s requests to the hot endpoints with `handler` while they come; hand the
/// connection over at the first other request.
pub async fn serve<IO, H>(
    mut io: IO,
    peer: SocketAddr,
    handler: H,
    slot: &std::sync::Arc<Slot>,
    header_read_timeout: Duration,
    max_header_bytes: usize,
) -> Ended<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: Handler<Full<Bytes>>,
{
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut start = 0;
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // Wait for a whole request, within the header-read timeout from when waiting started.
        let mut deadline: Option<Instant> = None;
        let hot = loop {
            if start < buf.len() {
                match parse(&buf[start..], max_header_bytes) {
                    Parsed::Hot(hot) => break hot,
                    Parsed::Other => return hand_over(io, buf, start),
                    Parsed::Partial => {}
                }
            }
            if start > 0 {
                buf.drain(..start);
                start = 0;
            }
            if buf.len() >= max_header_bytes {
                return hand_over(io, buf, start);
            }
            let at = *deadline.get_or_insert_with(|| Instant::now() + header_read_timeout);
            buf.reserve(4096);
            match tokio::time::timeout_at(at, io.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Ended::Closed,
            }
        };
        start += hot.len;
        let working = slot.working();
        let answer = handler.call(peer, hot.request).await;
        drop(working);
        out.clear();
        encode(answer, &mut out);
        if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
            return Ended::Closed;
        }
    }
}

fn hand_over<IO>(io: IO, mut buf: Vec<u8>, start: usize) -> Ended<IO> {
    buf.drain(..start);
    Ended::HandOver(Replay {
        prefix: buf,
        at: 0,
        io,
    })
}

/// The request at the start of `bytes`, if it is one this path serves.
fn parse(bytes: &[u8], max_header_bytes: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let head_len = match head.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len <= max_header_bytes => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    if head.version != Some(1) {
        return Parsed::Other;
    }
    let (Some(method), Some(path)) = (head.method, head.path) else {
        return Parsed::Other;
    };
    let route = path.split_once('?').map_or(path, |(route, _)| route);
    let method = match (method, route) {
        ("GET", "/v1/authz") => Method::GET,
        ("POST", "/v1/verify") => Method::POST,
        _ => return Parsed::Other,
    };
    let Ok(uri) = Uri::try_from(path) else {
        return Parsed::Other;
    };
    let mut map = HeaderMap::with_capacity(head.headers.len());
    let mut content_length: Option<usize> = None;
    for header in head.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(header.name.as_bytes()) else {
            return Parsed::Other;
        };
        match name {
            hyper::header::CONTENT_LENGTH => {
                let value = header.value;
                if content_length.is_some()
                    || value.is_empty()
                    || value.len() > 5
                    || !value.iter().all(u8::is_ascii_digit)
                {
                    return Parsed::Other;
                }
                content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            hyper::header::TRANSFER_ENCODING
            | hyper::header::CONNECTION
            | hyper::header::EXPECT
            | hyper::header::UPGRADE
            | hyper::header::TE => return Parsed::Other,
            _ => {}
        }
        let Ok(value) = HeaderValue::from_bytes(header.value) else {
            return Parsed::Other;
        };
        map.append(name, value);
    }
    let body_len = match (&method, content_length) {
        (&Method::GET, None) => 0,
        (&Method::POST, Some(n)) if n <= super::http::MAX_BODY => n,
        _ => return Parsed::Other,
    };
    let len = head_len + body_len;
    if bytes.len() < len {
        // A body that is not in with its head: hyper reads it with the body timeout.
        return Parsed::Other;
    }
    let body = Bytes::copy_from_slice(&bytes[head_len..len]);
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    Parsed::Hot(Hot { request, len })
}

/// `answer` as hyper writes it to an HTTP/1.1 request that keeps its connection: status line,
/// the headers in order, `content-length`, `date`, the body.
fn encode(answer: Response<Full<Bytes>>, out: &mut Vec<u8>) {
    let (parts, body) = answer.into_parts();
    if parts.status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(parts.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(
            parts
                .status
                .canonical_reason()
                .unwrap_or("<none>")
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let body = whole(body);
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    DATE.with(|date| out.extend_from_slice(&date.borrow_mut().now()));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
}

/// The data of a `Full` body, which is ready at once.
fn whole(body: Full<Bytes>) -> Bytes {
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match body.as_mut().poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

thread_local!(static DATE: std::cell::RefCell<CachedDate> = std::cell::RefCell::new(CachedDate::default()));

/// The `date` value, rendered once a second as hyper does.
#[derive(Default)]
struct CachedDate {
    second: u64,
    text: [u8; 29],
}

impl CachedDate {
    fn now(&mut self) -> [u8; 29] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            self.text
                .copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
        }
        self.text
    }
}

/// `io` whose first reads return `prefix`.
pub struct Replay<IO> {
    prefix: Vec<u8>,
    at: usize,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Replay<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Replay<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

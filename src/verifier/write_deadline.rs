//! A deadline on writing to a client: once a write has to wait for the client to read, all that
//! is pending must be written (flushed) within the write timeout, or the connection fails. A
//! client that pipelines requests and never reads the answers then loses its connection instead
//! of holding it, and a slot, for as long as it likes. Writes that go through at once never
//! start the clock, so the common case costs nothing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `io` whose blocked writes must drain within `timeout`.
#[derive(Debug)]
pub struct WriteDeadline<IO> {
    io: IO,
    timeout: Duration,
    /// Running since a write first had to wait, until everything is flushed.
    deadline: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<IO> WriteDeadline<IO> {
    /// Wrap `io`.
    pub fn new(io: IO, timeout: Duration) -> Self {
        WriteDeadline {
            io,
            timeout,
            deadline: None,
            armed: false,
        }
    }

    /// The write had to wait: start the clock unless it runs; fail once it ran out.
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            let at = Instant::now() + self.timeout;
            match &mut self.deadline {
                Some(deadline) => deadline.as_mut().reset(at),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
        let deadline = self.deadline.as_mut().expect("armed above");
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not read its answers within the write timeout",
        )))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteDeadline<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.blocked(cx),
            written => written,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.blocked(cx),
            written => written,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Whoever writes through this flushes once all it has is written: caught up.
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.blocked(cx),
            flushed => {
                self.armed = false;
                flushed
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_shutdown(cx) {
            Poll::Pending => self.blocked(cx),
            shut => shut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Far longer than the deadline: only a guard against hanging.
    const HANG_GUARD: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_write_the_reader_never_takes_fails_and_one_it_takes_does_not() {
        let (_client, server) = tokio::io::duplex(16);
        let mut writer = WriteDeadline::new(server, Duration::from_millis(100));
        // Fits in the pipe: written and flushed at once.
        writer.write_all(b"small").await.unwrap();
        writer.flush().await.unwrap();
        // More than the pipe holds, and nobody reads.
        let err = tokio::time::timeout(HANG_GUARD, writer.write_all(&[0; 64]))
            .await
            .expect("the deadline ends the write")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // A reader that takes it all: many times the pipe, written without error.
        let (mut client, server) = tokio::io::duplex(16);
        let mut writer = WriteDeadline::new(server, Duration::from_millis(100));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got)
                .await
                .unwrap();
            got.len()
        });
        writer.write_all(&[0; 4096]).await.unwrap();
        writer.flush().await.unwrap();
        writer.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), 4096);
    }
}

//! Serving connections: hyper's HTTP/1.1 connection driven directly (axum::serve does
//! not expose a header read timeout), with a bound on open connections.
//!
//! - At most `max_connections` connections are served at once (a [`Semaphore`] around
//!   accept). One more is answered `503` with `Retry-After` and the JSON error body,
//!   then closed: a flood of idle or slow connections cannot use every file descriptor.
//! - A client must send a request's headers within `header_read_timeout` (hyper's
//!   timer). One that started a request and stalled gets `408` and the JSON error
//!   body; an idle keep-alive connection is simply closed.
//! - Bodies have their own read timeout in the handlers' JSON extractor (408 too), and
//!   every request its overall timeout in the router: a slow client never holds a
//!   database transaction, which only starts once the body is read.

use super::error::error_json;
use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How connections are served.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServeOptions {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// Connections being refused at once; past this, an excess connection is closed
/// without an answer (each refusal holds its socket for up to [`REFUSAL_TIME`]).
const MAX_REFUSALS: usize = 64;
/// Longest time spent writing a refusal and letting the client read it.
const REFUSAL_TIME: Duration = Duration::from_millis(500);

/// Serves `router` on `listener` until `shutdown`, then lets open connections finish
/// their in-flight request.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept:
                    // back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let router = router.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    serve_connection(stream, router, options, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    connections.spawn(async move {
                        refuse(stream).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let io = SharedStream {
        stream: stream.clone(),
        mid_request: Arc::new(AtomicBool::new(false)),
    };
    let mid_request = io.mid_request.clone();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    let mut connection = pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    match result {
        Err(e) if e.is_timeout() && mid_request.load(Ordering::Relaxed) => {
            let answer = raw_answer(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request headers were not received in time",
                None,
            );
            let _ = tokio::time::timeout(REFUSAL_TIME, write_shared(&stream, &answer)).await;
        }
        Err(e) => tracing::debug!(error = %e, "connection closed"),
        Ok(()) => {}
    }
}

/// Answers a connection over the bound with 503, then closes it.
async fn refuse(mut stream: TcpStream) {
    let answer = raw_answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many open connections; retry later",
        Some(1),
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes: closing with unread data would
        // reset the connection and could destroy the answer before it is read.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// A complete HTTP/1.1 answer with the JSON error body, closing the connection.
fn raw_answer(status: StatusCode, code: &str, message: &str, retry_after: Option<u32>) -> Vec<u8> {
    let body = error_json(code, message).to_string();
    let retry = retry_after
        .map(|s| format!("retry-after: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{retry}\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

async fn write_shared(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The connection's socket, shared with [`serve_connection`] so that it can still
/// answer 408 after hyper gave the connection up on its header timeout. Remembers
/// whether bytes arrived since the last answer was written (a request was started).
struct SharedStream {
    stream: Arc<TcpStream>,
    mid_request: Arc<AtomicBool>,
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    if n > 0 {
                        self.mid_request.store(true, Ordering::Relaxed);
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Ok(n) => {
                    self.mid_request.store(false, Ordering::Relaxed);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The socket closes when the last holder drops it, right after the connection
    /// ends; nothing to do before.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

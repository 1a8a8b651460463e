//! walstore's S3 protocol layer on hyper: path-style routing, SigV4, XML and
//! error encoding over the narrow API of the `storage` crate (this crate never
//! names RocksDB).
//!
//! Entry point: [`serve`] takes a bound listener (port 0 in tests), the shared
//! [`AppState`] and a shutdown future, in the style of mini-redis.

pub mod admin;
pub mod auth;
pub mod authz;
pub mod body;
mod civil;
pub mod error;
pub mod headers;
pub mod metrics;
pub mod ops;
pub mod router;
pub mod service;
pub mod state;
pub mod tls;
pub mod xml;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

pub use error::{S3Code, S3Error};
pub use state::{ApiConfig, AppState, Credentials};

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long draining may take on shutdown before connections are dropped.
    pub drain_timeout: Duration,
    /// Time allowed to receive a request's headers, counted from the connection's start or
    /// the end of the previous response: it is also how long an idle keep-alive connection
    /// stays open, and it ends slowloris clients that trickle their headers.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger ones get `431` and
    /// the connection is closed. At least 8 KiB (hyper's minimum read buffer).
    pub max_header_bytes: usize,
    /// Connections served at once; beyond it a connection is answered `503 SlowDown` with
    /// `Retry-After` and closed (over TLS: closed).
    pub max_connections: usize,
    /// Serve HTTPS with this (reloadable) configuration.
    pub tls: Option<Arc<tls::TlsReloader>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 << 10,
            max_connections: 4096,
            tls: None,
        }
    }
}

/// hyper's smallest read buffer, and so the smallest `max_header_bytes`.
pub const MIN_HEADER_BYTES: usize = 8 << 10;

/// Refusals answered at once; beyond this, connections over the cap are closed silently so
/// a flood cannot turn the answers themselves into a pile of tasks.
const REFUSALS_IN_FLIGHT: usize = 64;

/// An open connection: holds its slot under the cap and is counted in the metrics.
struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<metrics::Metrics>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
    }
}

/// A connection whose first read fails with `TimedOut` if no byte arrives within the header
/// timeout. hyper's header timer starts only once hyper-util has seen enough bytes to tell
/// HTTP/1 from HTTP/2, so a client that connects (or finishes a TLS handshake) and then stays
/// silent would otherwise hold its connection slot for good.
struct FirstByteDeadline<I> {
    io: I,
    /// `None` once a byte arrived.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<I> FirstByteDeadline<I> {
    fn new(io: I, limit: Duration) -> Self {
        FirstByteDeadline { io, deadline: Some(Box::pin(tokio::time::sleep(limit))) }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request within the header timeout",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` until `shutdown` resolves, then stops
/// accepting, marks the state as shutting down (readiness fails) and drains
/// in-flight requests for up to `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper has no separate head limit in the auto builder: its read buffer bounds the head
    // (431 beyond it) and also the size of one read of a body, which stays efficient at 64 KiB.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes.max(MIN_HEADER_BYTES))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX));
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    state.metrics.connections_refused.inc();
                    tracing::debug!(%peer, max = opts.max_connections, "connection refused: too many open");
                    refuse(stream, &refusals, opts.tls.is_some());
                    continue;
                };
                state.metrics.connections_open.inc();
                let slot = ConnectionSlot { _permit: permit, metrics: state.metrics.clone() };
                let _ = stream.set_nodelay(true);
                let st = state.clone();
                let svc = service_fn(move |req| service::handle(st.clone(), req));
                match &opts.tls {
                    None => {
                        let io = TokioIo::new(FirstByteDeadline::new(stream, opts.header_read_timeout));
                        let conn = graceful.watch(builder.serve_connection(io, svc).into_owned());
                        tokio::spawn(async move {
                            let _slot = slot;
                            if let Err(e) = conn.await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Some(tls) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                        let builder = builder.clone();
                        let watcher = graceful.watcher();
                        let handshake_timeout = opts.header_read_timeout;
                        tokio::spawn(async move {
                            let _slot = slot;
                            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            let io = TokioIo::new(FirstByteDeadline::new(stream, handshake_timeout));
                            let conn = watcher.watch(builder.serve_connection(io, svc).into_owned());
                            if let Err(e) = conn.await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        });
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    state.begin_shutdown();
    drop(listener);
    tracing::info!("draining connections");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(opts.drain_timeout) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
    Ok(())
}

/// Turns away a connection over the cap. Plain HTTP gets `503 SlowDown` with `Retry-After`
/// (which WAL-G and the AWS SDKs retry with backoff) and `Connection: close`, written before
/// the request is read; then the server half-closes and reads what the client sent for up to
/// a second, so the close does not reset the connection before the client has read the answer.
/// Over TLS, and when too many refusals are already being answered, the connection is closed.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>, tls: bool) {
    let Ok(turn) = refusals.clone().try_acquire_owned() else {
        return; // dropping the stream closes it
    };
    if tls {
        return;
    }
    tokio::spawn(async move {
        let _turn = turn;
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&refusal_answer()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

/// The whole HTTP answer to a connection over the cap.
fn refusal_answer() -> Vec<u8> {
    let body = xml::error_body(
        S3Code::SlowDown.as_str(),
        "Too many connections are open; reduce your request rate and retry.",
        "",
        "",
    );
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\nserver: walstore\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_a_complete_503_slowdown_that_closes() {
        let answer = String::from_utf8(refusal_answer()).expect("ascii");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains("\r\nretry-after: 1\r\n") && head.contains("\r\nconnection: close\r\n"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
        assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
    }
}

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
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use error::{S3Code, S3Error};
pub use state::{ApiConfig, AppState, Credentials};

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long draining may take on shutdown before connections are dropped.
    pub drain_timeout: Duration,
    /// Time allowed to receive a request's headers.
    pub header_read_timeout: Duration,
    /// Serve HTTPS with this (reloadable) configuration.
    pub tls: Option<Arc<tls::TlsReloader>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self { drain_timeout: Duration::from_secs(30), header_read_timeout: Duration::from_secs(30), tls: None }
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
    builder.http1().timer(TokioTimer::new()).header_read_timeout(opts.header_read_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
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
                let _ = stream.set_nodelay(true);
                let st = state.clone();
                let svc = service_fn(move |req| service::handle(st.clone(), req));
                match &opts.tls {
                    None => {
                        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned());
                        tokio::spawn(async move {
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
                            let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned());
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

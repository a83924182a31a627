//! The listeners: accept loop, connection limit, optional TLS, graceful drain.
//!
//! ```text
//! accept (after a connection permit) → [TLS handshake] → hyper auto (HTTP/1.1 or h2)
//!   → handler (decision API or admin) → respond
//! ```
//!
//! The connection semaphore bounds concurrent connections: when it is exhausted the accept loop
//! stops accepting and clients wait in the kernel backlog. On shutdown the loop stops
//! accepting, every connection is told to finish its in-flight requests (`graceful_shutdown`:
//! HTTP/1.1 closes after the current response, h2 sends GOAWAY), and [`serve`] returns once
//! they are done or the grace period ends.

mod admin;
mod http;
pub mod respond;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use admin::Admin;
pub use http::{Api, Limits};
pub use tls::{Error as TlsError, acceptor as tls_acceptor};

use crate::metrics::Metrics;
use respond::Body;

/// Connection-level settings of one listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Most connections at once.
    pub max_connections: usize,
    /// Time to receive a request head (HTTP/1.1) or finish the TLS handshake.
    pub header_read_timeout: Duration,
    /// Time in-flight requests get at shutdown.
    pub grace_period: Duration,
}

/// Something that answers requests.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, req: hyper::Request<Incoming>) -> impl Future<Output = hyper::Response<Body>> + Send;
}

impl Handler for Api {
    fn call(&self, req: hyper::Request<Incoming>) -> impl Future<Output = hyper::Response<Body>> + Send {
        self.handle(req)
    }
}

impl Handler for Admin {
    fn call(&self, req: hyper::Request<Incoming>) -> impl Future<Output = hyper::Response<Body>> + Send {
        self.handle(req)
    }
}

/// Serves `listener` until `shutdown` turns true, then drains. Returns whether the drain
/// finished within the grace period.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Arc<H>,
    settings: Listener,
    metrics: Option<Arc<Metrics>>,
    mut shutdown: watch::Receiver<bool>,
) -> bool {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // Permits are held by connection tasks and returned when the connection closes.
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let metrics = metrics.clone();
        let tls = tls.clone();
        let header_timeout = settings.header_read_timeout;
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(m) = &metrics {
                m.connection_opened();
            }
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.call(req).await) }
            });
            let result = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        Ok(())
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            if let Some(m) = &metrics {
                m.connection_closed();
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {
            tracing::info!("all connections drained");
            true
        }
        () = tokio::time::sleep(settings.grace_period) => {
            tracing::warn!(grace_period_ms = settings.grace_period.as_millis(), "grace period ended with connections still open");
            false
        }
    }
}

/// The base URL a listener is reachable at, for the AuthZEN metadata.
pub fn base_url(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}", if tls { "https" } else { "http" })
}

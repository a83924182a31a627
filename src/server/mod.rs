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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
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
    // No hyper `header_read_timeout`: it arms and drops a timer for every request head (a
    // timer-wheel insert and removal each, ≈ 2 % of the CPU of a CEL decision). `Activity`
    // gives the same protection with one timer per connection and period.
    // (`None` is needed: with a timer, hyper otherwise applies a default of 30 s.)
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // Permits are held by connection tasks and returned when the connection closes.
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    // Every connection task holds a receiver: `send` tells them to drain, and `closed` says
    // they all ended.
    let (drain_tx, drain_rx) = watch::channel(());
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
        let drain = drain_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(m) = &metrics {
                m.connection_opened();
            }
            let activity = Arc::new(Activity::new());
            let service = {
                let activity = Arc::clone(&activity);
                hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let handler = handler.clone();
                    let busy = activity.begin(req.version());
                    async move {
                        let resp = handler.call(req).await;
                        drop(busy);
                        Ok::<_, Infallible>(resp)
                    }
                })
            };
            let result = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    activity.close_when_idle(conn.into_owned(), drain, header_timeout, peer).await
                }
                Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
                        activity.close_when_idle(conn.into_owned(), drain, header_timeout, peer).await
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
    drop(drain_rx);
    drain_tx.send_replace(());
    tokio::select! {
        () = drain_tx.closed() => {
            tracing::info!("all connections drained");
            true
        }
        () = tokio::time::sleep(settings.grace_period) => {
            tracing::warn!(grace_period_ms = settings.grace_period.as_millis(), "grace period ended with connections still open");
            false
        }
    }
}

/// What one connection is doing, for closing it when a request head does not arrive in time.
///
/// The rule hyper's HTTP/1 `header_read_timeout` applied, kept: from the moment a connection
/// opens or finishes a request, the next request must reach the handler within the header
/// timeout, or the connection is closed. That cuts off heads that never finish (slow-header
/// attacks) and idle keep-alive connections alike. A connection with a request in flight is
/// never closed for this, nor is an HTTP/2 connection once it has carried a stream (HTTP/2
/// has its own keep-alive).
#[derive(Debug)]
struct Activity {
    opened: std::time::Instant,
    /// Requests being handled.
    in_flight: std::sync::atomic::AtomicU32,
    /// When the last request finished, in ms since `opened`.
    last_done_ms: std::sync::atomic::AtomicU64,
    /// Whether the connection speaks HTTP/2.
    h2: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: std::time::Instant::now(),
            in_flight: std::sync::atomic::AtomicU32::new(0),
            last_done_ms: std::sync::atomic::AtomicU64::new(0),
            h2: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn begin(self: &Arc<Self>, version: hyper::Version) -> Busy {
        use std::sync::atomic::Ordering::Relaxed;
        if version == hyper::Version::HTTP_2 {
            self.h2.store(true, Relaxed);
        }
        self.in_flight.fetch_add(1, Relaxed);
        Busy(Arc::clone(self))
    }

    fn since_opened_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `None` once the connection should close; otherwise when to look again.
    fn next_check(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = tokio::time::Instant::now();
        if self.h2.load(Relaxed) || self.in_flight.load(Relaxed) > 0 {
            return Some(now + timeout);
        }
        let idle_ms = self.since_opened_ms().saturating_sub(self.last_done_ms.load(Relaxed));
        let idle = Duration::from_millis(idle_ms);
        (idle < timeout).then(|| now + (timeout - idle))
    }

    /// Drives `conn` until it ends, or closes it (by dropping it) once [`Activity`]'s rule says
    /// so. When `drain` changes (or its sender is gone), `conn` is told to finish what is in
    /// flight and close (`graceful_shutdown`).
    async fn close_when_idle<C: GracefulConnection>(
        &self,
        conn: C,
        mut drain: watch::Receiver<()>,
        timeout: Duration,
        peer: SocketAddr,
    ) -> Result<(), C::Error> {
        let watchdog = async {
            let mut at = tokio::time::Instant::now() + timeout;
            loop {
                tokio::time::sleep_until(at).await;
                match self.next_check(timeout) {
                    Some(next) => at = next,
                    None => return,
                }
            }
        };
        let mut conn = std::pin::pin!(conn);
        // Both wait for rare events; `select!` alone would poll them on every wake of this
        // task, several per request.
        let drained = std::pin::pin!(drain.changed());
        let mut drained = Quiet::new(drained);
        let watchdog = std::pin::pin!(watchdog);
        let mut watchdog = Quiet::new(watchdog);
        let mut draining = false;
        loop {
            tokio::select! {
                biased;
                result = conn.as_mut() => return result,
                _ = &mut drained, if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = &mut watchdog => {
                    tracing::debug!(%peer, timeout_ms = timeout.as_millis(), "no request within the header timeout; closing the connection");
                    return Ok(());
                }
            }
        }
    }
}

/// Polls `inner` only once it has been woken through its own waker (and on the first poll),
/// not on every wake of the task that polls it.
///
/// For a future that waits for something rare (a timer, a shutdown signal) beside a busy one
/// in a `select!`, which polls every branch whenever the task wakes: a connection task wakes
/// several times per request, and each poll of tokio's `Sleep` and `watch::Receiver::changed`
/// costs atomics, the latter on a lock shared by every connection.
struct Quiet<F> {
    inner: F,
    signal: Arc<QuietSignal>,
    /// The task waker last registered in `signal`, so that an unchanged one is not
    /// registered again (two atomic read-modify-writes on every poll).
    registered: Option<Waker>,
}

/// Whether [`Quiet`]'s inner future was woken, and the task to wake then.
struct QuietSignal {
    woken: AtomicBool,
    task: atomic_waker::AtomicWaker,
}

// === impl Quiet ===

impl<F> Quiet<F> {
    fn new(inner: F) -> Quiet<F> {
        let signal = QuietSignal { woken: AtomicBool::new(true), task: atomic_waker::AtomicWaker::new() };
        Quiet { inner, signal: Arc::new(signal), registered: None }
    }
}

impl<F: Future + Unpin> Future for Quiet<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // The waker is registered before the flag is read, so a wake after this point wakes
        // this task again. `signal` loses its waker only when woken, which sets the flag
        // first: while the flag is clear, the last waker registered is still there.
        if !self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.signal.task.register(cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        if !self.signal.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.signal.woken.store(false, Ordering::Release);
        // The wake took the waker: register it again before looking at `inner`, so that a
        // wake during the poll below is not lost.
        self.signal.task.register(cx.waker());
        let waker = Waker::from(Arc::clone(&self.signal));
        Pin::new(&mut self.inner).poll(&mut Context::from_waker(&waker))
    }
}

impl Wake for QuietSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// A request in flight on a connection; its end is stamped when dropped. Holds an `Arc`
/// because a service future must be `'static`.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let activity = &*self.0;
        activity.last_done_ms.store(activity.since_opened_ms(), Relaxed);
        activity.in_flight.fetch_sub(1, Relaxed);
    }
}

/// The base URL a listener is reachable at, for the AuthZEN metadata.
pub fn base_url(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}", if tls { "https" } else { "http" })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// A future that counts its polls, keeps the last waker, and is ready once told so.
    #[derive(Default)]
    struct Counting {
        polls: usize,
        waker: Option<Waker>,
        ready: bool,
    }

    impl Future for Counting {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            self.waker = Some(cx.waker().clone());
            if self.ready { Poll::Ready(()) } else { Poll::Pending }
        }
    }

    /// `Quiet` polls its future on the first poll and then only after the future's own waker
    /// was woken, however often the task around it is polled.
    #[test]
    fn quiet_polls_its_future_only_when_woken() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut quiet = Quiet::new(Counting::default());
        for _ in 0..5 {
            assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending());
        }
        assert_eq!(quiet.inner.polls, 1);
        quiet.inner.waker.take().unwrap().wake();
        assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending());
        assert_eq!(quiet.inner.polls, 2);
        quiet.inner.ready = true;
        quiet.inner.waker.take().unwrap().wake_by_ref();
        assert!(Pin::new(&mut quiet).poll(&mut cx).is_ready());
        assert_eq!(quiet.inner.polls, 3);
    }

    /// A wake of the inner future wakes the task that polled `Quiet`, every time.
    #[test]
    fn quiet_wakes_the_task_when_its_future_is_woken() {
        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let task = Waker::from(Arc::clone(&flag));
        let mut quiet = Quiet::new(Counting::default());
        assert!(Pin::new(&mut quiet).poll(&mut Context::from_waker(&task)).is_pending());
        assert!(!flag.0.load(Ordering::SeqCst));
        quiet.inner.waker.take().unwrap().wake();
        assert!(flag.0.load(Ordering::SeqCst));
        // The wake used up the registration; the next poll registers again, so the next
        // wake reaches the task too.
        flag.0.store(false, Ordering::SeqCst);
        assert!(Pin::new(&mut quiet).poll(&mut Context::from_waker(&task)).is_pending());
        assert!(Pin::new(&mut quiet).poll(&mut Context::from_waker(&task)).is_pending());
        assert!(!flag.0.load(Ordering::SeqCst));
        quiet.inner.waker.take().unwrap().wake();
        assert!(flag.0.load(Ordering::SeqCst));
    }
}

//! One shutdown signal for the whole process.
//!
//! SIGTERM and SIGINT flip a `watch` channel to `true`; every listener and background task
//! holds a receiver and stops when it changes. SIGHUP is not a shutdown: it asks the snapshot
//! store to reload. Order at shutdown (see `cli::serve`): stop accepting → drain in-flight
//! requests within the grace period → close the decision log (drain, write, fsync) → exit 0.

use std::sync::Arc;

use tokio::sync::watch;

use crate::reload::{Store, Trigger};

/// The sending side of the shutdown signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

// === impl Shutdown ===

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Shutdown {
        Shutdown { tx: Arc::new(watch::Sender::new(false)) }
    }

    /// A receiver that sees the signal.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Fires the signal.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }
}

/// Turns process signals into shutdown (SIGTERM, SIGINT) and reload (SIGHUP) until shutdown.
pub async fn handle_signals(shutdown: Shutdown, store: Arc<Store>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut stopped = shutdown.subscribe();
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: shutting down");
                shutdown.trigger();
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: shutting down");
                shutdown.trigger();
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let s = store.clone();
                if tokio::task::spawn_blocking(move || s.reload(Trigger::Signal)).await.is_err() {
                    tracing::error!("reload task panicked");
                }
                continue;
            }
            _ = stopped.changed() => {}
        }
        return Ok(());
    }
}

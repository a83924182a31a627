//! The decision log: one hash-chained JSON line per decision, written before the decision is
//! answered.
//!
//! Position in the request flow: the last step before `respond`. The server builds a
//! [`Record`] and awaits [`DecisionLog::record`]; only when that returns `Ok` may it send the
//! decision. Any `Err` becomes a 503 in `server/respond.rs`, never an unlogged decision.
//!
//! Layout:
//! - `record.rs`: the versioned line schema and how a line is hashed into the chain.
//! - `sink.rs`: the writer thread (group commit, rotation, torn-tail repair); its module
//!   doc explains the design.
//! - `verify.rs`: reads a log back and checks its chain (`verdict log verify`).
//!
//! This module must not encode JSON or touch the file anywhere but in the writer (the thread
//! with `fsync`; with `write`, the one request that holds the combiner, for a buffered `write`
//! of its whole group), wait on the disk on a tokio worker (`fsync` and `close` go to a thread;
//! the one exception is the sync before a rotation, which the flush thread keeps short), import
//! `server/` or hyper, or stand in for operational logging: `tracing` here reports only the
//! writer's own trouble.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{mpsc, oneshot, watch};

mod record;
mod sink;
mod verify;

#[cfg(test)]
mod tests;

pub use record::{
    BatchPos, Freshness, GENESIS_PREV, HookCall, Record, RequestJson, Timings, VERSION, rfc3339_millis, timestamp,
};
pub use verify::{Problem, Report, TornTail, verify};

/// Default [`Config::max_bytes`]: rotate once the active file reaches 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Default [`Config::max_files`]: keep the 16 newest rotated files.
pub const DEFAULT_MAX_FILES: usize = 16;

/// Default [`Config::queue_capacity`]: records waiting for the writer before callers wait.
///
/// A group holds at most this many records, so it also bounds one write's size.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// How long the writer waits before trying again a rotation whose rename failed (each try
/// syncs the file first, so it is not retried on every group).
pub const ROTATE_RETRY: Duration = Duration::from_secs(10);

/// Default [`Config::enqueue_timeout`]: how long a caller waits for room in a full queue
/// before it gets [`Error::QueueFull`] (a 503).
pub const DEFAULT_ENQUEUE_TIMEOUT: Duration = Duration::from_millis(200);

/// Validated decision-log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The active log file. Rotated files are `PATH.<n>`, torn tails `PATH.torn-<unix_ms>`.
    pub path: PathBuf,
    /// Whether each group is fsynced before its callers are answered.
    pub durability: Durability,
    /// Rotate once the active file reaches this many bytes; 0 never rotates.
    pub max_bytes: u64,
    /// Rotated files to keep, deleting the oldest; 0 keeps all.
    pub max_files: usize,
    /// Records that may wait for the writer; at least 1.
    pub queue_capacity: usize,
    /// How long `record` waits for room in a full queue.
    pub enqueue_timeout: Duration,
}

/// What "written" means before a decision is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The group is handed to the OS with `write`; it survives a crash of Verdict, not of the
    /// machine.
    #[default]
    Write,
    /// The group is also `fsync`ed (`sync_data`); it survives a power loss.
    Fsync,
}

/// Handle to the decision log: cheap to clone, shared by every connection.
///
/// The writer thread stops when [`DecisionLog::close`] is awaited, or when the last handle
/// is dropped (then it writes what is queued and stops without being awaited).
#[derive(Debug, Clone)]
pub struct DecisionLog {
    shared: Arc<Shared>,
}

/// Writer counters, read with [`DecisionLog::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Stats {
    /// Records written (and fsynced, when configured).
    pub records_written: u64,
    /// Groups written: one `write` (and `fsync`) each.
    pub groups_written: u64,
    /// Groups that failed; each failed every record in it.
    pub write_errors: u64,
    /// `record` calls rejected with [`Error::QueueFull`].
    pub queue_full: u64,
    /// Rotations whose rename failed; the writer goes on in the full file and retries the
    /// rotation after [`ROTATE_RETRY`].
    pub rotation_errors: u64,
    /// Size of the active file.
    pub file_bytes: u64,
}

/// Decision-log failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The queue stayed full for the whole enqueue timeout.
    #[error("decision log queue is full after waiting {waited:?}")]
    QueueFull {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The log was closed, or its writer thread is gone.
    #[error("decision log is closed")]
    Closed,
    /// The group holding the record could not be written; the writer retries with the next.
    #[error("cannot write decision log")]
    Write(#[source] Arc<io::Error>),
    /// The record could not be encoded as JSON.
    #[error("cannot encode decision record")]
    Encode(#[source] serde_json::Error),
    /// The log file could not be opened or its torn tail repaired at start.
    #[error("cannot open decision log `{}`", path.display())]
    Open {
        /// The file being opened.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A log file could not be read while verifying.
    #[error("cannot read decision log `{}`", path.display())]
    Read {
        /// The file being read.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start decision log writer thread")]
    Spawn(#[source] io::Error),
    /// `queue_capacity` was 0.
    #[error("decision log queue capacity must be at least 1")]
    ZeroCapacity,
}

/// State shared by every clone of a [`DecisionLog`].
#[derive(Debug)]
struct Shared {
    /// Queue in front of the writer thread, bounded by `queue_capacity`.
    /// Senders: every `record` call (one `Job::Record`) and `close` (`Job::Close`).
    /// Receiver: the writer thread, which drains it a group at a time.
    /// Closed by the writer when it takes a `Job::Close` (later sends fail and become
    /// `Error::Closed`), or when this sender drops with the last handle.
    /// `None` in inline mode.
    queue: Option<mpsc::Sender<sink::Job>>,
    /// Inline group commit (`durability = "write"`); `None` with a writer thread.
    inline: Option<Arc<sink::Inline>>,
    /// Set by the first `close`; later `record` calls fail fast with `Error::Closed`.
    closed: AtomicBool,
    /// Becomes `true` once the writer has written everything, fsynced and stopped.
    /// Sender: the writer thread (dropped with it, so a writer that dies also releases
    /// waiters). Waiters: `close`. `None` in inline mode.
    stopped: Option<watch::Receiver<bool>>,
    /// Written by the writer thread and `record`, read by `stats`.
    counters: Arc<sink::Counters>,
    enqueue_timeout: Duration,
    /// Decisions between [`DecisionLog::arrive`] and the end of their [`Arrival::record`].
    arriving: AtomicUsize,
}

/// A decision on its way to the log, counted from its start until its record is written (see
/// [`DecisionLog::arrive`]).
#[derive(Debug)]
#[must_use = "an arrival only helps when its record goes through `Arrival::record`"]
pub struct Arrival<'a> {
    log: &'a DecisionLog,
}

// === impl Config ===

impl Config {
    /// Settings for `path` with every other field at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Config {
            path: path.into(),
            durability: Durability::default(),
            max_bytes: DEFAULT_MAX_BYTES,
            max_files: DEFAULT_MAX_FILES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            enqueue_timeout: DEFAULT_ENQUEUE_TIMEOUT,
        }
    }
}

// === impl DecisionLog ===

impl DecisionLog {
    /// Opens the log (repairing a torn tail, continuing the chain) and sets up its writer (a
    /// thread for `fsync`, inline group commit for `write`).
    ///
    /// Does blocking file I/O: only the file's tail is read, so it is quick, but call it at
    /// startup rather than from a request.
    pub fn spawn(config: Config) -> Result<DecisionLog, Error> {
        let counters = Arc::new(sink::Counters::default());
        let (queue, inline, stopped) = match sink::spawn(&config, Arc::clone(&counters))? {
            sink::Started::Thread(queue, stopped) => (Some(queue), None, Some(stopped)),
            sink::Started::Inline(inline) => (None, Some(inline), None),
        };
        Ok(DecisionLog {
            shared: Arc::new(Shared {
                queue,
                inline,
                closed: AtomicBool::new(false),
                stopped,
                counters,
                enqueue_timeout: config.enqueue_timeout,
                arriving: AtomicUsize::new(0),
            }),
        })
    }

    /// Counts a decision from its start, before its record exists, until that record is
    /// written by [`Arrival::record`].
    ///
    /// A record waits one scheduler turn before it is written, so that the requests ready
    /// behind it join its group and share one `write`. A record is written at once when its
    /// decision was the only one under way and none of the last 16 groups held more than
    /// one record: then no one is coming (but one record in 16 still waits, as a probe). At
    /// one connection that wait, which woke a second worker for nothing, cost more CPU than
    /// the write itself. Requests that are ready but not yet read are invisible here, which
    /// is why the groups' recent sizes and the probe count too: without them, groups at 32
    /// connections fell from about 7 records to 2, and to 1 on a runtime with one worker.
    pub fn arrive(&self) -> Arrival<'_> {
        self.shared.arriving.fetch_add(1, Ordering::Relaxed);
        Arrival { log: self }
    }

    /// Logs `record` and returns once its group is written (and fsynced, if configured).
    ///
    /// Only after `Ok` may the decision be answered. The record is queued when this is
    /// called, not when the future is first polled; if the future is dropped, the record is
    /// still written: a logged but unanswered decision is harmless, the reverse is not. Needs
    /// a tokio runtime with time enabled (for the enqueue timeout).
    pub fn record(&self, record: Record) -> impl Future<Output = Result<(), Error>> + Send + '_ {
        self.enqueue(record, true).wait()
    }

    /// Hands `record` to the writer now; `company` says whether other records may be on
    /// their way (see [`DecisionLog::arrive`]).
    ///
    /// Not async, so that no future holds the record (about 400 bytes): it moves once, into
    /// its group or onto the queue, and the futures of every request stay small to build
    /// and move.
    fn enqueue(&self, record: Record, company: bool) -> Queued<'_> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Queued::Failed(Error::Closed);
        }
        if let Some(inline) = &shared.inline {
            return match inline.push(record) {
                Ok(written) => Queued::Waiting { written, group: Some((DrainOnDrop(inline), company)) },
                Err(sink::Refused::Closed) => Queued::Failed(Error::Closed),
                Err(sink::Refused::Full(record)) => Queued::Full(Box::pin(push_when_room(shared, inline, record, company))),
            };
        }
        let Some(queue) = &shared.queue else { return Queued::Failed(Error::Closed) };
        let (done, written) = oneshot::channel();
        // The fast path avoids arming a timer when there is room.
        match queue.try_send(sink::Job::Record { record, done }) {
            Ok(()) => Queued::Waiting { written, group: None },
            Err(TrySendError::Closed(_)) => Queued::Failed(Error::Closed),
            Err(TrySendError::Full(job)) => Queued::Full(Box::pin(send_when_room(shared, queue, job, written))),
        }
    }

    /// Writes everything already queued, fsyncs once and stops the writer thread.
    ///
    /// Returns when the thread is done. Idempotent; afterwards `record` returns
    /// [`Error::Closed`]. If the disk hangs, so does this: shutdown wraps it in its grace
    /// period.
    pub async fn close(&self) {
        let shared = &*self.shared;
        shared.closed.store(true, Ordering::Release);
        if let Some(inline) = &shared.inline {
            let inline = Arc::clone(inline);
            // Takes the writer lock (a combiner may be mid-write) and fsyncs: off the workers
            // when there is a tokio runtime, here otherwise.
            match tokio::runtime::Handle::try_current() {
                Ok(_) => {
                    let _panicked = tokio::task::spawn_blocking(move || inline.close()).await.is_err();
                }
                Err(_) => inline.close(),
            }
            return;
        }
        let (Some(queue), Some(stopped)) = (&shared.queue, &shared.stopped) else { return };
        // Queued behind every accepted record; an error means the writer already stopped.
        let _already_stopped = queue.send(sink::Job::Close).await.is_err();
        let mut stopped = stopped.clone();
        // An error means the writer thread is gone without saying so: stopped all the same.
        let _gone = stopped.wait_for(|stopped| *stopped).await.is_err();
    }

    /// A snapshot of the writer's counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Whether [`DecisionLog::close`] has been called (the log accepts no more records).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

// === impl Arrival ===

impl<'a> Arrival<'a> {
    /// [`DecisionLog::record`], waiting for others to join the group only when some may come
    /// (see [`DecisionLog::arrive`]).
    pub fn record(self, record: Record) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        let company = self.log.shared.arriving.load(Ordering::Relaxed) > 1;
        let queued = self.log.enqueue(record, company);
        async move {
            let written = queued.wait().await;
            // Counted until here: the record is written.
            drop(self);
            written
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.log.shared.arriving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A record handed to the writer by [`DecisionLog::enqueue`].
enum Queued<'a> {
    /// In the pending group (inline, with the guard that drains it and whether company may
    /// come) or on the writer thread's queue: its answer comes on `written`.
    Waiting {
        written: oneshot::Receiver<Result<(), Error>>,
        group: Option<(DrainOnDrop<'a>, bool)>,
    },
    /// The queue was full: waiting for room, then for the answer. Rare, so boxed, which
    /// keeps the common case small.
    Full(Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>),
    /// Refused at once.
    Failed(Error),
}

impl Queued<'_> {
    /// Waits until the record is written (see [`DecisionLog::record`]).
    async fn wait(self) -> Result<(), Error> {
        match self {
            Queued::Waiting { written, group } => {
                if let Some((drain, company)) = group {
                    // Let the other requests this worker has ready reach this point first,
                    // so one `write` carries all of them: without it, groups under load
                    // averaged 1.4 records. `drain` writes the group when dropped: after the
                    // yield, or if this future is dropped before or during it (the record is
                    // queued and must not wait for the next request to be written).
                    if company || drain.0.has_company() {
                        tokio::task::yield_now().await;
                    }
                    drop(drain);
                }
                // A dropped reply means the writer went away without answering this record.
                written.await.unwrap_or(Err(Error::Closed))
            }
            Queued::Full(waiting) => waiting.await,
            Queued::Failed(e) => Err(e),
        }
    }
}

/// Inline group commit with a full group: retries every millisecond until the enqueue
/// timeout, then waits as [`Queued::wait`] does.
async fn push_when_room(shared: &Shared, inline: &Arc<sink::Inline>, record: Box<Record>, company: bool) -> Result<(), Error> {
    let mut record = record;
    let until = tokio::time::Instant::now() + shared.enqueue_timeout;
    let written = loop {
        // Whoever holds the writer may be stuck; try to help, then wait a little.
        inline.drain();
        let now = tokio::time::Instant::now();
        if now >= until {
            shared.counters.count_queue_full();
            return Err(Error::QueueFull { waited: shared.enqueue_timeout });
        }
        tokio::time::sleep(Duration::from_millis(1).min(until - now)).await;
        match inline.push(*record) {
            Ok(written) => break written,
            Err(sink::Refused::Closed) => return Err(Error::Closed),
            Err(sink::Refused::Full(back)) => record = back,
        }
    };
    Queued::Waiting { written, group: Some((DrainOnDrop(inline), company)) }.wait().await
}

/// The writer thread's queue was full: waits up to the enqueue timeout for room, then for
/// the answer.
async fn send_when_room(
    shared: &Shared,
    queue: &mpsc::Sender<sink::Job>,
    job: sink::Job,
    written: oneshot::Receiver<Result<(), Error>>,
) -> Result<(), Error> {
    match queue.send_timeout(job, shared.enqueue_timeout).await {
        Ok(()) => written.await.unwrap_or(Err(Error::Closed)),
        Err(SendTimeoutError::Closed(_)) => Err(Error::Closed),
        Err(SendTimeoutError::Timeout(_)) => {
            shared.counters.count_queue_full();
            Err(Error::QueueFull { waited: shared.enqueue_timeout })
        }
    }
}

/// Runs [`sink::Inline::drain`] when dropped.
struct DrainOnDrop<'a>(&'a Arc<sink::Inline>);

impl Drop for DrainOnDrop<'_> {
    fn drop(&mut self) {
        self.0.drain();
    }
}


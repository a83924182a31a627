//! The hook pool: dedicated JavaScript worker threads behind one bounded queue.
//!
//! Where it sits: the decision engine calls [`Pool::call`] from a tokio task when a rule
//! hands a request to a hook. The call is queued, a worker thread runs it in a context for
//! that hook version, and the answer comes back through a oneshot channel. CEL and
//! everything else stay on the tokio workers; only hook calls pay the hop.
//!
//! # Design
//!
//! QuickJS runtimes are single-threaded (`!Send` without rquickjs's `parallel` feature), and
//! a hook may run up to its deadline, which must never stall a tokio worker. So the pool is
//! N dedicated OS threads (default: one per core), each owning one QuickJS runtime, one
//! current-thread tokio runtime (for `sdk.fetch` and timers) and a small cache of contexts,
//! one per (hook name, version) it has served. A worker runs one call at a time, start to
//! finish, including the call's awaits: a hook awaiting a fetch holds its worker.
//!
//! In front of the workers sits one bounded multi-consumer queue (`flume`). [`Pool::call`]
//! never waits for room: a full queue fails the call at once with [`Error::QueueFull`],
//! which the server maps to 503. A call whose caller has gone (the request future was
//! dropped) is skipped; one that waited in the queue longer than its deadline fails with
//! [`Error::Timeout`] without running.
//!
//! Contexts: with [`Isolation::Pooled`] a worker keeps one context per (hook, version),
//! reused by every call of that version on that worker, so module-level variables act as
//! a per-worker cache. A deployed version gets new contexts as its calls arrive, while
//! calls that started on the old version finish on it; each worker keeps at most two
//! versions per hook and [`PoolConfig::contexts_per_worker`] contexts in all, evicting the
//! least recently used. A context is discarded (and counted in
//! [`PoolStats::contexts_discarded`]) after a timeout, out-of-memory or stack overflow, and
//! all of a worker's contexts are dropped when its heap grows too much. With
//! [`Isolation::PerCall`] a context serves one call; the worker builds the next one right
//! after replying, so the build mostly stays off the latency path.
//!
//! Channels: `Pool` holds the queue's only sender (cloned with the pool); the workers hold
//! receivers and block on them (after a 50 µs spin, which saves the wake-up of a worker
//! that just finished a call). The queue closes when the last `Pool` clone drops; each worker then finishes
//! the call it has and exits (threads are detached, never joined: a call ends by its
//! deadline anyway). Each call's reply is a `tokio::sync::oneshot`: the worker sends, the
//! caller awaits; if a worker dies mid-call the sender drops and the caller gets
//! [`Error::WorkerGone`].
//!
//! # Measured
//!
//! On the 2-vCPU development VM (release build, other builds running, load average about
//! 1.3; medians; `cargo test --release --lib hooks::tests::bench -- --ignored --nocapture
//! --test-threads 1`):
//!
//! | what | median |
//! | --- | --- |
//! | trivial hook, called in the worker thread (JSON in and out, result checks) | 5.1–5.4 µs |
//! | trivial hook through [`Pool::call`], calls back to back | 14–30 µs |
//! | the same with the pool idle between calls (two thread wake-ups) | 80–160 µs |
//! | building a context: `Context::full` 0.1 ms, lockdown 0.08 ms, freeze 3.2–3.7 ms, SDK 0.42 ms, trivial module 0.02 ms | 4.1–4.6 ms |
//! | the same for a 102-line hook (5.4 KB of JavaScript, declared from source) | 4.4–4.9 ms |
//! | [`Isolation::PerCall`]: worker time per call (a build each) | 4.9–7.5 ms |
//! | measuring the heap with 4 hardened contexts | 80 µs |
//!
//! Declaring a module from source instead of loading bytecode (see `compile.rs`) costs
//! 14 µs instead of 4.5 µs for a trivial hook and 387 µs instead of 51 µs for the 102-line
//! one, once per context.
//!
//! What this module must not do: block the caller's thread, queue without bound, or run
//! two calls in one context at the same time.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::fetch::Client;
use super::sandbox::{CallInput, Sandbox, Slot};
use super::{CallError, Error, HookSpec, Isolation, MAX_STACK_BYTES, Outcome};
use crate::identity::Index;

/// Default capacity of the queue in front of the workers ([`PoolConfig::queue_capacity`]).
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// Default number of contexts a worker keeps ([`PoolConfig::contexts_per_worker`]).
pub const DEFAULT_CONTEXTS_PER_WORKER: usize = 32;

/// Versions of one hook a worker keeps contexts for.
const VERSIONS_PER_HOOK: usize = 2;

/// How long an idle worker polls the queue before blocking on it.
const SPIN: Duration = Duration::from_micros(50);

/// Native stack of a worker thread: QuickJS's own stack limit plus room for the engine and
/// our frames.
const WORKER_STACK_BYTES: usize = MAX_STACK_BYTES + (4 << 20);

/// Sizing of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Worker threads; default: the available parallelism.
    pub workers: usize,
    /// Calls that may wait for a worker before new ones fail with [`Error::QueueFull`].
    pub queue_capacity: usize,
    /// Contexts each worker keeps before evicting the least recently used.
    pub contexts_per_worker: usize,
}

/// A handle to the pool; clones share it. The workers stop when the last clone drops.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// Counters since the pool started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Calls received by [`Pool::call`].
    pub calls: u64,
    /// Calls refused because the queue was full.
    pub queue_full: u64,
    /// Calls that timed out (running or queued).
    pub timeouts: u64,
    /// Calls that ran out of memory.
    pub oom: u64,
    /// Calls that overflowed their stack.
    pub stack_overflows: u64,
    /// Calls that failed otherwise (threw, bad result, output too large, fetch, internal).
    pub errors: u64,
    /// Contexts thrown away after a limit breach or because the heap grew too much.
    pub contexts_discarded: u64,
    /// Contexts built.
    pub contexts_built: u64,
}

/// What the pool handles share.
struct Inner {
    /// The queue's sender. Dropping it (with the last `Pool`) stops the workers.
    queue: flume::Sender<Job>,
    /// Counters, shared with the workers.
    counters: Arc<Counters>,
    /// Number of workers.
    workers: usize,
}

/// Atomic counters behind [`PoolStats`]; workers and callers increment, `stats` reads.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    queue_full: AtomicU64,
    timeouts: AtomicU64,
    oom: AtomicU64,
    stack_overflows: AtomicU64,
    errors: AtomicU64,
    contexts_discarded: AtomicU64,
    contexts_built: AtomicU64,
}

/// One queued call.
struct Job {
    spec: Arc<HookSpec>,
    input: serde_json::Value,
    identity: Arc<Index>,
    enqueued: Instant,
    /// The caller awaits the receiving half.
    reply: oneshot::Sender<Result<Outcome, CallError>>,
}

/// One worker thread's state. Field order is drop order: the contexts before the sandbox
/// (whose runtime must outlive them).
struct Worker {
    cache: Cache,
    sandbox: Sandbox,
    counters: Arc<Counters>,
}

/// A worker's contexts.
struct Cache {
    slots: HashMap<Key, Entry>,
    capacity: usize,
    /// Increments per use; orders entries for eviction.
    clock: u64,
}

/// (hook name, version).
type Key = (Arc<str>, Arc<str>);

/// A cached context.
struct Entry {
    slot: Slot,
    last_used: u64,
}

// The pool is shared by request tasks on every tokio worker.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Pool>();
};

// === impl PoolConfig ===

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            contexts_per_worker: DEFAULT_CONTEXTS_PER_WORKER,
        }
    }
}

// === impl Pool ===

impl Pool {
    /// Starts the worker threads; returns once each has its JavaScript runtime (this
    /// blocks the calling thread for about a millisecond per worker).
    pub fn spawn(config: PoolConfig) -> Result<Pool, Error> {
        let workers = config.workers.max(1);
        let (queue, jobs) = flume::bounded(config.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let client = Arc::new(Client::default());
        // Each worker reports once whether it started; `spawn` waits for all of them.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), Error>>();
        for n in 0..workers {
            let jobs = jobs.clone();
            let counters = counters.clone();
            let client = client.clone();
            let ready = ready_tx.clone();
            let capacity = config.contexts_per_worker.max(1);
            std::thread::Builder::new()
                .name(format!("verdict-hook-{n}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn(move || worker_thread(jobs, counters, client, capacity, ready))
                .map_err(|e| Error::Internal(format!("cannot start hook worker {n}: {e}")))?;
        }
        drop(ready_tx);
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(Error::Internal(
                        "a hook worker exited while starting".to_owned(),
                    ));
                }
            }
        }
        Ok(Pool {
            inner: Arc::new(Inner {
                queue,
                counters,
                workers,
            }),
        })
    }

    /// Runs `decide(input, sdk)`; `input` is the AuthZEN request JSON plus a `principal`
    /// member. Fails fast with [`Error::QueueFull`] when the bounded queue is full (never
    /// waits unboundedly).
    pub async fn call(
        &self,
        spec: Arc<HookSpec>,
        input: serde_json::Value,
        identity: Arc<Index>,
    ) -> Result<Outcome, Error> {
        self.call_with_logs(spec, input, identity)
            .await
            .map_err(|e| e.error)
    }

    /// [`Pool::call`], keeping what the hook logged (and how long it ran) when it fails.
    pub async fn call_with_logs(
        &self,
        spec: Arc<HookSpec>,
        input: serde_json::Value,
        identity: Arc<Index>,
    ) -> Result<Outcome, CallError> {
        let counters = &self.inner.counters;
        counters.calls.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let job = Job {
            spec,
            input,
            identity,
            enqueued: Instant::now(),
            reply,
        };
        match self.inner.queue.try_send(job) {
            Ok(()) => {}
            Err(flume::TrySendError::Full(_)) => {
                counters.queue_full.fetch_add(1, Ordering::Relaxed);
                return Err(CallError::early(Error::QueueFull));
            }
            Err(flume::TrySendError::Disconnected(_)) => {
                return Err(CallError::early(Error::WorkerGone));
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(CallError::early(Error::WorkerGone)))
    }

    /// Counters since the pool started.
    pub fn stats(&self) -> PoolStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PoolStats {
            calls: get(&c.calls),
            queue_full: get(&c.queue_full),
            timeouts: get(&c.timeouts),
            oom: get(&c.oom),
            stack_overflows: get(&c.stack_overflows),
            errors: get(&c.errors),
            contexts_discarded: get(&c.contexts_discarded),
            contexts_built: get(&c.contexts_built),
        }
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// Calls waiting for a worker.
    pub fn queued(&self) -> usize {
        self.inner.queue.len()
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.inner.workers)
            .field("queued", &self.queued())
            .finish()
    }
}

/// A worker thread: serves jobs until the queue closes.
///
/// The thread blocks on the queue itself (a futex wait, cheaper to wake than a parked tokio
/// runtime), spinning briefly first, and enters its current-thread tokio runtime per job.
/// A panic while serving (a bug in the engine bindings) loses the call in flight (its
/// caller gets [`Error::WorkerGone`]), is counted as an error, and the worker starts over
/// with a fresh JavaScript runtime.
fn worker_thread(
    jobs: flume::Receiver<Job>,
    counters: Arc<Counters>,
    client: Arc<Client>,
    capacity: usize,
    ready: std::sync::mpsc::Sender<Result<(), Error>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(Error::Internal(format!(
                "cannot start a hook worker runtime: {e}"
            ))));
            return;
        }
    };
    let start = |counters: &Arc<Counters>| {
        runtime
            .block_on(Sandbox::new(client.clone()))
            .map(|sandbox| Worker {
                cache: Cache::new(capacity),
                sandbox,
                counters: counters.clone(),
            })
    };
    let mut worker = match start(&counters) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    while let Some(job) = next_job(&jobs) {
        let served =
            std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(worker.handle(job))));
        if served.is_err() {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("hook worker panicked; restarting it with a fresh runtime");
            worker = match start(&counters) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "hook worker cannot restart; it stops");
                    return;
                }
            };
        }
    }
}

/// The next job: spins on the queue for up to [`SPIN`] (a job arriving within it costs no
/// thread wake-up), then blocks. `None` once the queue is closed and empty.
fn next_job(jobs: &flume::Receiver<Job>) -> Option<Job> {
    let started = Instant::now();
    loop {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(flume::TryRecvError::Disconnected) => return None,
            Err(flume::TryRecvError::Empty) if started.elapsed() < SPIN => std::hint::spin_loop(),
            Err(flume::TryRecvError::Empty) => return jobs.recv().ok(),
        }
    }
}

// === impl Worker ===

impl Worker {
    /// Serves one job and replies.
    async fn handle(&mut self, job: Job) {
        if job.reply.is_closed() {
            return;
        }
        let queued = job.enqueued.elapsed();
        let limit = job.spec.limits.deadline;
        if queued >= limit {
            self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(Err(CallError::early(Error::Timeout {
                elapsed: queued,
                limit,
            })));
            return;
        }
        let spec = job.spec.clone();
        let per_call = spec.limits.isolation == Isolation::PerCall;
        let key: Key = (spec.compiled.name.clone(), spec.compiled.version.clone());
        let slot = match self.slot_for(&key, &spec).await {
            Ok(slot) => slot,
            Err(error) => {
                self.count(&error);
                let _ = job.reply.send(Err(CallError {
                    error,
                    logs: Vec::new(),
                    elapsed: Duration::ZERO,
                }));
                return;
            }
        };
        let input = CallInput {
            spec: spec.clone(),
            input: job.input,
            identity: job.identity,
            queued,
        };
        let ran = self.sandbox.run(&slot, input).await;
        if let Err(e) = &ran.result {
            self.count(&e.error);
        }
        let _ = job.reply.send(ran.result);
        if ran.poisoned {
            self.counters
                .contexts_discarded
                .fetch_add(1, Ordering::Relaxed);
            drop(slot);
            self.sandbox.contexts_changed();
        } else if per_call {
            drop(slot);
        } else if self.cache.insert(key.clone(), slot) > 0 {
            self.sandbox.contexts_changed();
        }
        if ran.heap_too_large {
            let n = self.cache.clear();
            self.counters
                .contexts_discarded
                .fetch_add(n as u64, Ordering::Relaxed);
            self.sandbox.contexts_changed();
            tracing::warn!(hook = %key.0, contexts = n, "hook worker heap grew too large; dropped its contexts");
        }
        if per_call {
            // The next call's fresh context, built now that the caller has its answer.
            if let Ok(spare) = self.build(&spec).await
                && self.cache.insert(key, spare) > 0
            {
                self.sandbox.contexts_changed();
            }
        }
    }

    /// The context for `key`, taken out of the cache, or a new one.
    async fn slot_for(&mut self, key: &Key, spec: &Arc<HookSpec>) -> Result<Slot, Error> {
        if let Some(mut slot) = self.cache.take(key) {
            if slot.serves(spec) {
                return Ok(slot);
            }
            // Same version but another config or isolation: rebuild (`sdk.config` is baked in).
            drop(slot);
        }
        let slot = self.build(spec).await?;
        if spec.limits.isolation == Isolation::Pooled {
            self.sandbox.contexts_changed();
        }
        Ok(slot)
    }

    /// Builds a context for `spec` and counts it.
    async fn build(&mut self, spec: &Arc<HookSpec>) -> Result<Slot, Error> {
        let slot = self.sandbox.build(spec).await?;
        self.counters.contexts_built.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    /// Counts a failed call.
    fn count(&self, error: &Error) {
        let counter = match error {
            Error::Timeout { .. } => &self.counters.timeouts,
            Error::MemoryExceeded { .. } => &self.counters.oom,
            Error::StackOverflow => &self.counters.stack_overflows,
            _ => &self.counters.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

// === impl Cache ===

impl Cache {
    fn new(capacity: usize) -> Cache {
        Cache {
            slots: HashMap::new(),
            capacity,
            clock: 0,
        }
    }

    /// Removes and returns the slot for `key`.
    fn take(&mut self, key: &Key) -> Option<Slot> {
        self.slots.remove(key).map(|e| e.slot)
    }

    /// Puts `slot` back (or in), evicting the least recently used beyond the capacity and
    /// old versions of the same hook beyond [`VERSIONS_PER_HOOK`]; returns how many it
    /// evicted.
    fn insert(&mut self, key: Key, slot: Slot) -> usize {
        self.clock += 1;
        let mut evicted = 0;
        let name = key.0.clone();
        self.slots.insert(
            key,
            Entry {
                slot,
                last_used: self.clock,
            },
        );
        loop {
            let versions = self.slots.keys().filter(|k| k.0 == name).count();
            let victim = if versions > VERSIONS_PER_HOOK {
                self.oldest(|k| k.0 == name)
            } else if self.slots.len() > self.capacity {
                self.oldest(|_| true)
            } else {
                None
            };
            match victim {
                Some(k) => {
                    self.slots.remove(&k);
                    evicted += 1;
                }
                None => return evicted,
            }
        }
    }

    /// The least recently used key among those matching `filter`.
    fn oldest(&self, filter: impl Fn(&Key) -> bool) -> Option<Key> {
        self.slots
            .iter()
            .filter(|(k, _)| filter(k))
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, _)| k.clone())
    }

    /// Drops every context; returns how many there were.
    fn clear(&mut self) -> usize {
        let n = self.slots.len();
        self.slots.clear();
        n
    }
}

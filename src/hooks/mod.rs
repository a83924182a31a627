//! TypeScript hooks: compiled once at load, run per request in pooled, sandboxed QuickJS
//! contexts.
//!
//! Where it sits: a rule that says `hook: NAME` hands the request to [`Pool::call`] with the
//! hook's [`HookSpec`] (compiled code, limits, config, secrets, fetch policy), the request
//! JSON plus its `principal`, and the identity index of the snapshot the request started
//! with. The pool answers with an [`Outcome`] (decision, reason, outputs, log lines) or an
//! [`Error`]; the decision engine maps errors to the rule's `on_error` outcome.
//!
//! ```text
//! load:     hooks/NAME.ts ─ compile::compile ─▶ Compiled { js, bytecode, version }   (once)
//! request:  rule `hook: NAME` ─ Pool::call ─▶ bounded queue ─▶ JS worker thread
//!             └ context for (NAME, version) ─ decide(req, sdk) ─▶ Outcome | Error ─▶ oneshot
//! ```
//!
//! Layout:
//! - `compile.rs`: TypeScript → JavaScript (oxc), syntax and load checks, version hash.
//! - `pool.rs`: the worker threads, the bounded queue in front of them, the per-worker
//!   context cache, and [`PoolStats`].
//! - `sandbox.rs`: one worker's QuickJS runtime, its limits (deadline, memory, stack),
//!   context hardening, and running one call.
//! - `sdk.rs`: the host API the hook sees as its second argument, and redaction.
//! - `fetch.rs`: the HTTP/1.1 client behind `sdk.fetch`, its allow-list and cache.
//!
//! What this module must not do: accept bytecode from outside (it never loads bytecode at
//! all, see `compile.rs`), give hook code any ambient capability (files, network, clock
//! control, code generation from strings), block a tokio worker thread, or let one call
//! change what the next call of another hook sees. Errors are data: every failure of a
//! call is an [`Error`], never a panic or a hang of the sidecar.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod compile;
mod fetch;
mod pool;
mod sandbox;
mod sdk;
#[cfg(test)]
mod tests;

pub use compile::{CompileError, Compiled, compile};
pub use pool::{DEFAULT_CONTEXTS_PER_WORKER, DEFAULT_QUEUE_CAPACITY, Pool, PoolConfig, PoolStats};

/// Default wall-clock deadline of one hook call ([`Limits::deadline`]): the whole call,
/// including time spent awaiting `sdk.fetch`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);

/// Default memory a call may allocate on top of what its worker's JS heap already holds
/// ([`Limits::memory_bytes`]): 32 MiB.
pub const DEFAULT_MEMORY_BYTES: usize = 32 << 20;

/// Default JS stack a call may use ([`Limits::stack_bytes`]): 512 KiB, about 2,000 frames
/// of a small recursive function.
pub const DEFAULT_STACK_BYTES: usize = 512 << 10;

/// Largest stack a hook may be given; larger [`Limits::stack_bytes`] are clamped to it.
/// The worker threads are spawned with a native stack comfortably above it.
pub const MAX_STACK_BYTES: usize = 4 << 20;

/// Default size cap of a result's `reason` plus its JSON-encoded `outputs`
/// ([`Limits::max_output_bytes`]): 64 KiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 << 10;

/// Default timeout of one `sdk.fetch` ([`FetchPolicy::timeout`]); the call's deadline still
/// applies on top.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Default size cap of one `sdk.fetch` response body ([`FetchPolicy::max_response_bytes`]):
/// 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Resource limits of one hook's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one call may take, from the moment a worker picks it up, including
    /// awaits. JS code is interrupted when it runs past it; a call awaiting I/O is
    /// abandoned. A call that waited in the queue longer than this is not started.
    pub deadline: Duration,
    /// Bytes the call may allocate on top of the worker's JS heap as last measured (other
    /// hooks' contexts and this hook's module-level state do not count against it).
    pub memory_bytes: usize,
    /// JS stack the call may use; clamped to [`MAX_STACK_BYTES`].
    pub stack_bytes: usize,
    /// Largest `reason` plus JSON-encoded `outputs`, in bytes.
    pub max_output_bytes: usize,
    /// Whether calls share a context per worker.
    pub isolation: Isolation,
}

/// How much state one call of a hook can leave for the next.
///
/// Every hook has contexts of its own, and built-ins and `globalThis` are frozen in all of
/// them (writing to them throws), so a call can never change what another hook sees;
/// isolation decides the fate of the hook's own module-level variables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// One context per (hook, version) per worker, reused: module-level variables persist
    /// between calls on the same worker and act as a per-worker cache. The cache is
    /// best-effort: a context is rebuilt after a limit breach, when it is evicted, and
    /// when the worker's retained heap grows too large.
    #[default]
    Pooled,
    /// A fresh context for every call: nothing survives a call. The next call's context is
    /// built right after the reply is sent, so the build (milliseconds, see the pool docs)
    /// mostly leaves the latency path but still costs worker time per call.
    PerCall,
}

/// What `sdk.fetch` may reach, for one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Hosts the hook may reach: `host` (on the scheme's default port) or `host:port`,
    /// compared case-insensitively. Empty: no network at all.
    pub allowed_hosts: Vec<String>,
    /// Timeout of one request, headers and body; the call's deadline applies on top.
    pub timeout: Duration,
    /// Largest response body accepted; a larger one fails the fetch.
    pub max_response_bytes: usize,
    /// Cache successful GET responses this long (per hook, keyed by URL and request
    /// headers); `None` disables the cache.
    pub cache_ttl: Option<Duration>,
    /// PEM certificates trusted for `https` besides the built-in roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Everything a call needs to know about its hook; built at load, shared as `Arc`.
///
/// Its `Debug` output shows secret names, never their values.
#[derive(Clone)]
pub struct HookSpec {
    /// The compiled hook.
    pub compiled: Arc<Compiled>,
    /// Its limits.
    pub limits: Limits,
    /// What the hook sees as `sdk.config` (frozen).
    pub config: serde_json::Value,
    /// Declared secret name → value, for `sdk.secrets.get`. Every value is redacted from
    /// logs, reasons, outputs and error messages.
    pub secrets: BTreeMap<String, String>,
    /// What `sdk.fetch` may reach.
    pub fetch: FetchPolicy,
}

/// A hook's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Allow (`true`) or deny.
    pub decision: bool,
    /// The hook's `reason`, secrets redacted.
    pub reason: Option<String>,
    /// The hook's `outputs` object, secrets redacted.
    pub outputs: Option<serde_json::Value>,
    /// Lines logged through `sdk.log`, as `"info: text"`, secrets redacted, bounded.
    pub logs: Vec<String>,
    /// Time on the worker, from pickup to result (queue time excluded).
    pub elapsed: Duration,
    /// Time the call waited in the queue before a worker picked it up.
    pub queued: Duration,
    /// The worker's JS heap (QuickJS `malloc_size`, all its contexts) at its most recent
    /// measurement, at most 100 ms old. Measuring walks the whole heap (tens of µs per
    /// context), so it is not done per call; QuickJS keeps no peak.
    pub memory_bytes: u64,
}

/// Why a hook call produced no [`Outcome`]. Messages are safe to log: secrets are
/// redacted from every message that carries hook text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The pool's queue is full; the call was not queued.
    #[error("hook queue is full")]
    QueueFull,
    /// The call ran (or waited) past its deadline.
    #[error("hook timed out after {} ms (limit {} ms)", elapsed.as_millis(), limit.as_millis())]
    Timeout {
        /// Time spent, queue or run.
        elapsed: Duration,
        /// The deadline.
        limit: Duration,
    },
    /// The call ran out of memory.
    #[error("hook exceeded its memory limit of {limit} bytes")]
    MemoryExceeded {
        /// The limit, [`Limits::memory_bytes`].
        limit: usize,
    },
    /// The call overflowed its stack (e.g. unbounded recursion).
    #[error("hook exceeded its stack limit")]
    StackOverflow,
    /// The hook threw (or its promise rejected).
    #[error("hook threw: {message}")]
    Threw {
        /// What was thrown, as text, secrets redacted.
        message: String,
    },
    /// The hook returned something other than `{decision: boolean, reason?: string,
    /// outputs?: object}`.
    #[error("hook returned a bad result: {message}")]
    BadResult {
        /// What is wrong with it.
        message: String,
    },
    /// The result's `reason` plus `outputs` are larger than allowed.
    #[error("hook result is {size} bytes, over the limit of {limit}")]
    OutputTooLarge {
        /// Size of `reason` plus the JSON-encoded `outputs`.
        size: usize,
        /// [`Limits::max_output_bytes`].
        limit: usize,
    },
    /// An `sdk.fetch` failed and the hook did not catch it.
    #[error("hook fetch failed: {message}")]
    Fetch {
        /// Why, naming the host; secrets redacted.
        message: String,
    },
    /// The worker that had the call is gone (the pool is shutting down, or the worker
    /// failed).
    #[error("hook worker is gone")]
    WorkerGone,
    /// Something in the runtime itself failed.
    #[error("hook runtime error: {0}")]
    Internal(String),
}

/// An [`Error`] together with what the hook logged before it failed, from
/// [`Pool::call_with_logs`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct CallError {
    /// What went wrong.
    pub error: Error,
    /// Lines logged through `sdk.log` before the failure, secrets redacted.
    pub logs: Vec<String>,
    /// Time on the worker before the failure (zero if the call never started).
    pub elapsed: Duration,
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            deadline: DEFAULT_DEADLINE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            stack_bytes: DEFAULT_STACK_BYTES,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            isolation: Isolation::Pooled,
        }
    }
}

// === impl FetchPolicy ===

impl Default for FetchPolicy {
    /// No hosts allowed, default timeout and size cap, no cache.
    fn default() -> FetchPolicy {
        FetchPolicy {
            allowed_hosts: Vec::new(),
            timeout: DEFAULT_FETCH_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            cache_ttl: None,
            ca_file: None,
        }
    }
}

// === impl HookSpec ===

impl HookSpec {
    /// A spec with default limits, no config, no secrets and no network.
    pub fn new(compiled: Arc<Compiled>) -> HookSpec {
        HookSpec {
            compiled,
            limits: Limits::default(),
            config: serde_json::Value::Object(serde_json::Map::new()),
            secrets: BTreeMap::new(),
            fetch: FetchPolicy::default(),
        }
    }
}

impl std::fmt::Debug for HookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSpec")
            .field("name", &self.compiled.name)
            .field("version", &self.compiled.version)
            .field("limits", &self.limits)
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("fetch", &self.fetch)
            .finish()
    }
}

// === impl Error ===

impl Error {
    /// A short, stable name for metrics and the decision log: `queue_full`, `timeout`,
    /// `memory`, `stack`, `threw`, `bad_result`, `output_too_large`, `fetch`,
    /// `worker_gone`, `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::QueueFull => "queue_full",
            Error::Timeout { .. } => "timeout",
            Error::MemoryExceeded { .. } => "memory",
            Error::StackOverflow => "stack",
            Error::Threw { .. } => "threw",
            Error::BadResult { .. } => "bad_result",
            Error::OutputTooLarge { .. } => "output_too_large",
            Error::Fetch { .. } => "fetch",
            Error::WorkerGone => "worker_gone",
            Error::Internal(_) => "internal",
        }
    }

    /// Whether the context that produced this error must not be reused: after an
    /// interrupt, an out-of-memory or a stack overflow, the heap may hold partial state.
    pub(crate) fn poisons_context(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::MemoryExceeded { .. }
                | Error::StackOverflow
                | Error::Internal(_)
        )
    }
}

// === impl CallError ===

impl CallError {
    /// A failure before the hook ran: no logs, no time.
    pub(crate) fn early(error: Error) -> CallError {
        CallError {
            error,
            logs: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Error {
        e.error
    }
}

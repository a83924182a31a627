//! One worker's QuickJS runtime: limits, hardened contexts, and running one call.
//!
//! Where it sits: each pool worker thread owns one [`Sandbox`] (one QuickJS runtime) and
//! the [`Slot`]s (one context per hook version) built in it. `pool.rs` decides which slot
//! serves a call and when slots are built or thrown away; this module builds them and runs
//! calls in them. Nothing here is `Send`: a sandbox lives and dies on its worker thread.
//!
//! # Deadline
//!
//! A call may take [`Limits::deadline`](super::Limits::deadline) of wall-clock time from the
//! moment its worker picks it up, and two mechanisms enforce it. While JavaScript runs,
//! QuickJS polls the runtime's interrupt handler (every 10,000 bytecode "ticks" and inside
//! the regex engine); ours compares the clock with the armed deadline and, once it has
//! passed, interrupts with an uncatchable error (`finally` blocks do not run). Measured
//! overshoot is tens of µs. While the call awaits (an `sdk.fetch`), no JavaScript runs, so
//! the await itself sits under `tokio::time::timeout_at` with the same instant. The handler
//! also interrupts any JavaScript that runs while no deadline is armed, so code left behind
//! by an earlier call (a continuation after a cancelled fetch) cannot run unbounded.
//!
//! After a call, whatever it left running is cancelled (its fetches) and drained with the
//! deadline already expired, so no work of one call ever runs during the next. A context
//! that was interrupted, ran out of memory, overflowed its stack, or had leftovers that had
//! to be interrupted may hold partial state, and the pool discards it.
//!
//! # Memory and stack
//!
//! QuickJS limits are per runtime, and one runtime holds all of a worker's contexts. Before
//! each call the limit is set to the heap as last measured plus the call's
//! [`Limits::memory_bytes`](super::Limits::memory_bytes), so other hooks' contexts do not
//! eat into a call's allowance. Out-of-memory and stack overflow are ordinary (catchable)
//! exceptions in QuickJS: an uncaught one is reported as such; one the hook catches leaves
//! it with failed allocations but nothing worse. Measuring the heap walks every object
//! (25–50 µs per hardened context on the development VM), so it happens after failed calls
//! and at most every [`CHECK_INTERVAL`] otherwise. The first measurement after the set of
//! pooled contexts changed is the reference; when a later one finds the heap grown by more
//! than a quarter of the call's allowance (module-level state piling up), the pool drops
//! all of the worker's contexts.
//!
//! # Hardening
//!
//! Each context is built from `Context::full`, then, before any hook code runs:
//! code generation from strings is disabled (`eval`, `Function` and the async, generator
//! and async-generator function constructors are replaced by functions that throw
//! `EvalError`, everywhere they are reachable: globals and each prototype's
//! `constructor`); `SharedArrayBuffer`, `Atomics`, `WeakRef` and `FinalizationRegistry`
//! are removed. Then a few prototype properties that code commonly shadows by assignment
//! (`this.name = ...` in an `Error` subclass, `o.toString = ...`) become accessors that
//! define an own property instead, so freezing does not break them, and everything
//! reachable from `globalThis` (plus the iterator and generator prototypes reachable only
//! through values built-ins return) is frozen. Module code is strict, so writing to a
//! global or a built-in prototype throws `TypeError`. Per-call contexts are frozen too,
//! although nothing outlives their call, so that a hook behaves the same under both
//! isolations (and under `verdict test`); the freeze is most of a context's build cost
//! (it reads the descriptors of about 1,900 properties on 600 objects). The engine keeps
//! its internal eval, which module declaration needs; hook code cannot reach it. There is no module loader, so `import`
//! of anything fails, and rquickjs compiles in no `std`/`os` modules, no timers, no
//! `console`. Measured costs: see the pool docs.
//!
//! What this module must not do: call runtime methods inside `with`/`async_with` (they take
//! the same lock), drop a `Persistent` after its runtime, or run JavaScript outside an
//! armed deadline.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::convert::Coerced;
use rquickjs::{
    AsyncContext, AsyncRuntime, CaughtError, Ctx, Exception, Function, Module, Persistent, Value,
};

use super::fetch::{Cancel, Client};
use super::sdk::{self, Call, Host, Logs, Redactor};
use super::{CallError, Compiled, Error, HookSpec, MAX_STACK_BYTES, Outcome};
use crate::identity::Index;

/// How long building a context (hardening, SDK, the module's top level) may take.
pub(super) const LOAD_DEADLINE: Duration = Duration::from_millis(500);

/// Longest time between two heap measurements while calls keep coming; a failed call is
/// always followed by one. Measuring costs tens of µs per context, so at most a fraction
/// of a percent of a busy worker.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long draining a call's leftovers may take before the context is given up.
const DRAIN_LIMIT: Duration = Duration::from_millis(100);

/// Longest error message kept from a hook, in characters.
const MAX_MESSAGE_CHARS: usize = 1024;

/// Heap allowance while no call runs: the build of a context and draining.
const IDLE_MEMORY_BYTES: usize = 64 << 20;

/// Run once per context, before the SDK and the hook: see "Hardening" above.
pub(super) const LOCKDOWN_JS: &str = r#"(function () {
  'use strict';
  const denied = () => new EvalError('code generation from strings is disabled');
  const protos = [
    Function.prototype,
    Object.getPrototypeOf(async function () {}),
    Object.getPrototypeOf(function* () {}),
    Object.getPrototypeOf(async function* () {}),
  ];
  for (const p of protos) {
    const fake = function () { throw denied(); };
    Object.defineProperty(fake, 'prototype', { value: p });
    Object.defineProperty(p, 'constructor', { value: fake, writable: true, configurable: true });
  }
  Object.defineProperty(globalThis, 'Function', { value: Function.prototype.constructor, writable: true, configurable: true });
  Object.defineProperty(globalThis, 'eval', { value: function () { throw denied(); }, writable: true, configurable: true });
  for (const name of ['SharedArrayBuffer', 'Atomics', 'WeakRef', 'FinalizationRegistry']) delete globalThis[name];
})()"#;

/// Run after [`LOCKDOWN_JS`]: see "Hardening" above.
pub(super) const FREEZE_JS: &str = r#"(function () {
  'use strict';
  const protos = [
    Function.prototype,
    Object.getPrototypeOf(async function () {}),
    Object.getPrototypeOf(function* () {}),
    Object.getPrototypeOf(async function* () {}),
  ];
  const tame = (obj, key) => {
    const d = Object.getOwnPropertyDescriptor(obj, key);
    if (!d || !('value' in d) || !d.configurable) return;
    const value = d.value;
    Object.defineProperty(obj, key, {
      get() { return value; },
      set(v) {
        if (this === obj) throw new TypeError(`cannot assign to read only property '${String(key)}'`);
        Object.defineProperty(this, key, { value: v, writable: true, enumerable: true, configurable: true });
      },
      enumerable: d.enumerable,
      configurable: false,
    });
  };
  for (const k of ['constructor', 'toString', 'valueOf', 'toLocaleString', 'hasOwnProperty', 'isPrototypeOf', 'propertyIsEnumerable']) tame(Object.prototype, k);
  for (const E of [Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError, AggregateError]) {
    for (const k of ['constructor', 'name', 'message', 'toString']) tame(E.prototype, k);
  }
  for (const p of protos) tame(p, 'constructor');
  tame(Function.prototype, 'toString');
  // Intrinsics not reachable through properties of globalThis, only through objects that
  // built-ins return (iterator prototypes and the like).
  const stack = [globalThis];
  const reach = (make) => { try { stack.push(make()); } catch (e) { /* absent in this engine */ } };
  reach(() => [].values());
  reach(() => new Map().values());
  reach(() => new Set().values());
  reach(() => ''[Symbol.iterator]());
  reach(() => /a/g[Symbol.matchAll]('a'));
  reach(() => (function* () {})());
  reach(() => (async function* () {})());
  reach(() => [].values().map((x) => x));
  reach(() => Iterator.from({ next() { return { done: true }; } }));
  reach(() => (function () { return arguments; })());
  // Indexed loops and cached functions: `for...of` doubles the cost of this walk in QuickJS.
  const seen = new Set();
  const freeze = Object.freeze, protoOf = Object.getPrototypeOf;
  const keysOf = Reflect.ownKeys, describe = Reflect.getOwnPropertyDescriptor;
  while (stack.length > 0) {
    const o = stack.pop();
    if (o === null || (typeof o !== 'object' && typeof o !== 'function') || seen.has(o)) continue;
    seen.add(o);
    freeze(o);
    stack.push(protoOf(o));
    const keys = keysOf(o);
    for (let i = 0; i < keys.length; i++) {
      const d = describe(o, keys[i]);
      if (d.get === undefined && d.set === undefined) stack.push(d.value); else stack.push(d.get, d.set);
    }
  }
})()"#;

/// One worker's QuickJS runtime and the state its host functions share.
///
/// Field order is drop order: everything holding JavaScript values goes before the runtime.
pub(super) struct Sandbox {
    /// The call host functions act for; shared with every context's SDK.
    host: Rc<Host>,
    /// The armed deadline; shared with the interrupt handler.
    deadline: Rc<Deadline>,
    /// Fetch client and cache, shared by the pool.
    client: Arc<Client>,
    /// The runtime's heap at the last measurement, bytes.
    heap: usize,
    /// The heap at the first measurement after the set of pooled contexts last changed:
    /// what the contexts themselves take, the reference for judging growth.
    clean_heap: usize,
    /// The set of pooled contexts changed since `clean_heap` was taken.
    changed: bool,
    /// When the heap was last measured.
    last_check: Instant,
    /// Memory and stack limits currently set on the runtime.
    limits_set: (usize, usize),
    /// The QuickJS runtime. INVARIANT: last field; every `Slot` of this sandbox is dropped
    /// before it (the pool keeps slots in a field declared before its sandbox).
    runtime: AsyncRuntime,
}

/// A context with one hook version loaded, ready to be called.
pub(super) struct Slot {
    /// `(req) => decide(req, sdk)`. INVARIANT: declared before `context` so it is dropped
    /// first; a `Persistent` outliving its runtime aborts the process.
    run: Persistent<Function<'static>>,
    /// The hardened context.
    context: AsyncContext,
    /// The spec this slot was built for (its `config` is baked into `sdk.config`).
    pub(super) spec: Arc<HookSpec>,
}

/// One call, as the worker hands it over.
pub(super) struct CallInput {
    /// The hook.
    pub(super) spec: Arc<HookSpec>,
    /// The request JSON plus `principal`.
    pub(super) input: serde_json::Value,
    /// The identity snapshot of the request.
    pub(super) identity: Arc<Index>,
    /// Time spent in the queue.
    pub(super) queued: Duration,
}

/// What a call produced, and what the worker must do with the slot.
pub(super) struct Ran {
    /// The answer for the caller.
    pub(super) result: Result<Outcome, CallError>,
    /// The slot may hold partial state: discard it.
    pub(super) poisoned: bool,
    /// The worker's heap grew too much: discard all its contexts.
    pub(super) heap_too_large: bool,
}

/// The deadline the interrupt handler enforces.
#[derive(Debug, Default)]
struct Deadline {
    /// When JavaScript must stop; `None` means none may run at all.
    until: Cell<Option<Instant>>,
    /// Set when the handler has interrupted something since the last [`Deadline::take_fired`].
    fired: Cell<bool>,
}

/// Why a call failed, before limits and redaction are applied.
#[derive(Debug)]
enum Fault {
    Interrupted,
    OutOfMemory,
    StackOverflow,
    Fetch(String),
    Threw(String),
    BadResult(String),
    TooLarge(usize),
    Internal(String),
}

/// A successful result, still as JSON text.
struct Raw {
    decision: bool,
    reason: Option<String>,
    outputs: Option<String>,
}

/// Hardens `ctx`: the code-generation lockdown, then the freeze (see "Hardening" above).
pub(super) fn harden(ctx: &Ctx<'_>) -> rquickjs::Result<()> {
    ctx.eval::<(), _>(LOCKDOWN_JS)?;
    ctx.eval::<(), _>(FREEZE_JS)
}

/// A caught error as a message and, when its stack names `module`, the (1-based) line and
/// column in the module's JavaScript.
pub(super) fn describe_caught(
    caught: &CaughtError<'_>,
    module: &str,
) -> (String, Option<(usize, usize)>) {
    match caught {
        CaughtError::Exception(e) => {
            let message = e.message().unwrap_or_default();
            let name: Option<Coerced<String>> = e.get("name").ok();
            let name = name.map_or_else(|| "Error".to_owned(), |n| n.0);
            let position = e.stack().and_then(|s| position_in(&s, module));
            (clip(format!("{name}: {message}")), position)
        }
        CaughtError::Value(v) => (clip(value_text(v)), None),
        CaughtError::Error(rquickjs::Error::WouldBlock) => {
            ("it awaits a promise that never settles".to_owned(), None)
        }
        CaughtError::Error(e) => (clip(e.to_string()), None),
    }
}

// === impl Sandbox ===

impl Sandbox {
    /// A runtime with the interrupt handler installed and no contexts.
    pub(super) async fn new(client: Arc<Client>) -> Result<Sandbox, Error> {
        let runtime = AsyncRuntime::new()
            .map_err(|e| Error::Internal(format!("cannot start the JavaScript engine: {e}")))?;
        let deadline = Rc::new(Deadline::default());
        let watch = deadline.clone();
        runtime
            .set_interrupt_handler(Some(Box::new(move || watch.expired())))
            .await;
        runtime.set_memory_limit(IDLE_MEMORY_BYTES).await;
        let mut sandbox = Sandbox {
            host: Rc::new(Host::default()),
            deadline,
            client,
            heap: 0,
            clean_heap: 0,
            changed: false,
            last_check: Instant::now(),
            limits_set: (IDLE_MEMORY_BYTES, 0),
            runtime,
        };
        sandbox.measure().await;
        sandbox.clean_heap = sandbox.heap;
        Ok(sandbox)
    }

    /// Builds a hardened context with `spec`'s hook loaded, under [`LOAD_DEADLINE`].
    pub(super) async fn build(&mut self, spec: &Arc<HookSpec>) -> Result<Slot, Error> {
        let started = Instant::now();
        self.set_limits(
            self.heap
                .saturating_add(spec.limits.memory_bytes.max(IDLE_MEMORY_BYTES)),
            spec.limits.stack_bytes,
        )
        .await;
        let context = AsyncContext::full(&self.runtime)
            .await
            .map_err(|e| Error::Internal(format!("cannot create a context: {e}")))?;
        let host = self.host.clone();
        let loading = spec.clone();
        self.deadline.arm(started + LOAD_DEADLINE);
        let built = context.with(move |ctx| load(&ctx, &host, &loading)).await;
        self.deadline.disarm();
        let fired = self.deadline.take_fired();
        match built {
            Ok(run) => Ok(Slot {
                run,
                context,
                spec: spec.clone(),
            }),
            Err(_) if fired => Err(Error::Timeout {
                elapsed: started.elapsed(),
                limit: LOAD_DEADLINE,
            }),
            Err(fault) => {
                let redactor = Redactor::new(spec);
                let error = fault_error(fault, spec, started.elapsed(), &redactor);
                Err(match error {
                    Error::Threw { message } => Error::Internal(format!(
                        "cannot load hook `{}`: {message}",
                        spec.compiled.name
                    )),
                    other => other,
                })
            }
        }
    }

    /// Notes that pooled contexts were added or dropped: the next measurement becomes the
    /// reference for judging heap growth, instead of being judged against the old one.
    pub(super) fn contexts_changed(&mut self) {
        self.changed = true;
    }

    /// Runs one call in `slot`.
    pub(super) async fn run(&mut self, slot: &Slot, call: CallInput) -> Ran {
        let started = Instant::now();
        let spec = call.spec;
        let limits = spec.limits.clone();
        let deadline_at = started + limits.deadline;
        self.set_limits(
            self.heap.saturating_add(limits.memory_bytes),
            limits.stack_bytes,
        )
        .await;
        let input = match serde_json::to_string(&call.input) {
            Ok(text) => text,
            Err(e) => {
                let error = Error::Internal(format!("cannot encode the request: {e}"));
                return Ran {
                    result: Err(CallError::early(error)),
                    poisoned: false,
                    heap_too_large: false,
                };
            }
        };
        let cancel = Rc::new(Cancel::default());
        let redactor = Rc::new(Redactor::new(&spec));
        self.host.begin(Call {
            spec: spec.clone(),
            identity: call.identity,
            cancel: cancel.clone(),
            client: self.client.clone(),
            logs: Logs::default(),
            redactor: redactor.clone(),
        });
        let run = slot.run.clone();
        let compiled = spec.compiled.clone();
        let max_output = limits.max_output_bytes;
        self.deadline.arm(deadline_at);
        let invoked = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline_at),
            slot.context
                .async_with(async move |ctx| invoke(ctx, run, input, max_output, &compiled).await),
        )
        .await;
        self.deadline.disarm();
        let interrupted = self.deadline.take_fired();
        let elapsed = started.elapsed();
        cancel.cancel();
        let logs = self
            .host
            .end()
            .map(|c| c.logs.into_lines())
            .unwrap_or_default();
        let mut poisoned = false;
        if invoked.is_err() || self.runtime.is_job_pending().await {
            poisoned = self.drain(&slot.context).await;
        }
        let result = match invoked {
            Err(_) => Err(Error::Timeout {
                elapsed,
                limit: limits.deadline,
            }),
            Ok(_) if interrupted => Err(Error::Timeout {
                elapsed,
                limit: limits.deadline,
            }),
            Ok(Err(fault)) => Err(fault_error(fault, &spec, elapsed, &redactor)),
            Ok(Ok(raw)) => outcome(raw, &redactor),
        };
        poisoned |= result.as_ref().err().is_some_and(Error::poisons_context);
        let heap_too_large = self.check_heap(result.is_err(), limits.memory_bytes).await;
        let heap = self.heap as u64;
        let result = match result {
            Ok(outcome) => Ok(Outcome {
                logs,
                elapsed,
                queued: call.queued,
                memory_bytes: heap,
                ..outcome
            }),
            Err(error) => Err(CallError {
                error,
                logs,
                elapsed,
            }),
        };
        Ran {
            result,
            poisoned,
            heap_too_large,
        }
    }

    /// Measures the heap after a failed call or when the last measurement is older than
    /// [`CHECK_INTERVAL`]; returns whether it has grown by more than a quarter of
    /// `allowance` since the contexts were last changed.
    async fn check_heap(&mut self, failed: bool, allowance: usize) -> bool {
        if !failed && self.last_check.elapsed() < CHECK_INTERVAL {
            return false;
        }
        self.measure().await;
        if self.changed {
            self.clean_heap = self.heap;
            self.changed = false;
            return false;
        }
        self.heap > self.clean_heap.saturating_add(allowance / 4)
    }

    /// Sets the runtime's memory and stack limits, if they changed.
    async fn set_limits(&mut self, memory: usize, stack: usize) {
        let stack = stack.min(MAX_STACK_BYTES);
        if self.limits_set.0 != memory {
            self.runtime.set_memory_limit(memory).await;
        }
        if self.limits_set.1 != stack {
            self.runtime.set_max_stack_size(stack).await;
        }
        self.limits_set = (memory, stack);
    }

    /// Measures the heap.
    async fn measure(&mut self) {
        let usage = self.runtime.memory_usage().await;
        self.heap = usize::try_from(usage.malloc_size).unwrap_or(0);
        self.last_check = Instant::now();
    }

    /// Runs what a call left behind (cancelled fetches settling, their continuations) with
    /// the deadline already expired. Returns whether anything had to be interrupted or
    /// could not be drained, i.e. whether the context may hold partial state.
    async fn drain(&self, context: &AsyncContext) -> bool {
        let until = Instant::now() + DRAIN_LIMIT;
        self.deadline.arm(Instant::now());
        let mut pending = self.runtime.is_job_pending().await;
        while pending && Instant::now() < until {
            context
                .async_with(async |_ctx| tokio::task::yield_now().await)
                .await;
            pending = self.runtime.is_job_pending().await;
        }
        self.deadline.disarm();
        if pending {
            tracing::warn!("hook call left work that did not settle; discarding its context");
        }
        self.deadline.take_fired() || pending
    }
}

// === impl Slot ===

impl Slot {
    /// Whether this slot can serve `spec`: same hook version, isolation and config. Remembers
    /// `spec` when only the `Arc` differs, so the next check is a pointer comparison.
    pub(super) fn serves(&mut self, spec: &Arc<HookSpec>) -> bool {
        if Arc::ptr_eq(&self.spec, spec) {
            return true;
        }
        // A per-call call must never get a context an earlier call has used.
        let same = self.spec.compiled.version == spec.compiled.version
            && self.spec.limits.isolation == spec.limits.isolation
            && self.spec.config == spec.config;
        if same {
            self.spec = spec.clone();
        }
        same
    }
}

// === impl Deadline ===

impl Deadline {
    fn arm(&self, until: Instant) {
        self.until.set(Some(until));
    }

    fn disarm(&self) {
        self.until.set(None);
    }

    /// The interrupt handler: true (interrupt) once the deadline has passed, or always
    /// when none is armed.
    fn expired(&self) -> bool {
        let expired = self.until.get().is_none_or(|until| Instant::now() >= until);
        if expired {
            self.fired.set(true);
        }
        expired
    }

    fn take_fired(&self) -> bool {
        self.fired.replace(false)
    }
}

/// Hardens `ctx`, installs the SDK, declares and evaluates the hook module, and binds its
/// default export.
fn load(
    ctx: &Ctx<'_>,
    host: &Rc<Host>,
    spec: &HookSpec,
) -> Result<Persistent<Function<'static>>, Fault> {
    let compiled = &spec.compiled;
    harden(ctx).map_err(|e| fault(ctx, e, compiled))?;
    let bind = sdk::install(ctx, host, &spec.config).map_err(|e| fault(ctx, e, compiled))?;
    let declared = Module::declare(
        ctx.clone(),
        compiled.name.as_bytes(),
        compiled.js.as_bytes(),
    )
    .map_err(|e| fault(ctx, e, compiled))?;
    let (module, promise) = declared.eval().map_err(|e| fault(ctx, e, compiled))?;
    promise
        .finish::<()>()
        .map_err(|e| fault(ctx, e, compiled))?;
    let decide: Value<'_> = module.get("default").map_err(|e| fault(ctx, e, compiled))?;
    if !decide.is_function() {
        return Err(Fault::Internal(
            "hook must `export default` a function".to_owned(),
        ));
    }
    let run: Function<'_> = bind.call((decide,)).map_err(|e| fault(ctx, e, compiled))?;
    Ok(Persistent::save(ctx, run))
}

/// Calls the hook and reads its result; awaits it if it is a promise.
async fn invoke<'js>(
    ctx: Ctx<'js>,
    run: Persistent<Function<'static>>,
    input: String,
    max_output: usize,
    compiled: &Compiled,
) -> Result<Raw, Fault> {
    // An exception left pending by a drained job must not be taken for this call's.
    if ctx.has_exception() {
        let _stale = ctx.catch();
    }
    let run = run
        .restore(&ctx)
        .map_err(|e| Fault::Internal(e.to_string()))?;
    let request = ctx
        .json_parse(input)
        .map_err(|e| fault(&ctx, e, compiled))?;
    let value: Value<'js> = run.call((request,)).map_err(|e| fault(&ctx, e, compiled))?;
    let value = match value.as_promise() {
        Some(promise) => promise
            .clone()
            .into_future::<Value<'js>>()
            .await
            .map_err(|e| fault(&ctx, e, compiled))?,
        None => value,
    };
    read_result(&ctx, &value, max_output).map_err(|e| match e {
        Failure::Js(e) => fault(&ctx, e, compiled),
        Failure::Fault(f) => f,
    })
}

/// A failure while reading a result: a JavaScript error (a throwing getter) or a judgement.
enum Failure {
    Js(rquickjs::Error),
    Fault(Fault),
}

impl From<rquickjs::Error> for Failure {
    fn from(e: rquickjs::Error) -> Failure {
        Failure::Js(e)
    }
}

/// Checks the shape `{decision: boolean, reason?: string, outputs?: object}` and the size.
fn read_result<'js>(ctx: &Ctx<'js>, value: &Value<'js>, max_output: usize) -> Result<Raw, Failure> {
    let bad = |message: String| Failure::Fault(Fault::BadResult(message));
    let object = match value.as_object() {
        Some(o) if !value.is_array() && !value.is_function() => o,
        _ => {
            return Err(bad(format!(
                "expected an object like `{{decision: boolean}}`, got {}",
                type_name(value)
            )));
        }
    };
    for key in object.keys::<String>() {
        let key = key?;
        if !matches!(key.as_str(), "decision" | "reason" | "outputs") {
            return Err(bad(format!(
                "unexpected member `{key}` (a result has `decision`, `reason` and `outputs`)"
            )));
        }
    }
    let decision: Value<'js> = object.get("decision")?;
    let Some(decision) = decision.as_bool() else {
        return Err(bad(format!(
            "`decision` must be a boolean, got {}",
            type_name(&decision)
        )));
    };
    let reason: Value<'js> = object.get("reason")?;
    let reason = if reason.is_undefined() || reason.is_null() {
        None
    } else if let Some(s) = reason.as_string() {
        Some(s.to_string()?)
    } else {
        return Err(bad(format!(
            "`reason` must be a string, got {}",
            type_name(&reason)
        )));
    };
    let outputs: Value<'js> = object.get("outputs")?;
    let outputs = if outputs.is_undefined() || outputs.is_null() {
        None
    } else if outputs.is_object() && !outputs.is_array() && !outputs.is_function() {
        let text = ctx
            .json_stringify(outputs)?
            .map(|s| s.to_string())
            .transpose()?;
        Some(text.ok_or_else(|| bad("`outputs` cannot be encoded as JSON".to_owned()))?)
    } else {
        return Err(bad(format!(
            "`outputs` must be an object, got {}",
            type_name(&outputs)
        )));
    };
    let size = reason.as_ref().map_or(0, String::len) + outputs.as_ref().map_or(0, String::len);
    if size > max_output {
        return Err(Failure::Fault(Fault::TooLarge(size)));
    }
    Ok(Raw {
        decision,
        reason,
        outputs,
    })
}

/// The outcome of a successful call, redacted; timing and logs are filled in by the caller.
fn outcome(raw: Raw, redactor: &Redactor) -> Result<Outcome, Error> {
    let outputs = match raw.outputs {
        Some(text) => {
            let mut value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Internal(format!("cannot decode outputs: {e}")))?;
            redactor.redact_json(&mut value);
            Some(value)
        }
        None => None,
    };
    Ok(Outcome {
        decision: raw.decision,
        reason: raw.reason.map(|r| redactor.redact_owned(r)),
        outputs,
        logs: Vec::new(),
        elapsed: Duration::ZERO,
        queued: Duration::ZERO,
        memory_bytes: 0,
    })
}

/// Classifies a failed engine call, taking the pending exception if there is one.
fn fault(ctx: &Ctx<'_>, error: rquickjs::Error, compiled: &Compiled) -> Fault {
    if !error.is_exception() {
        return match error {
            rquickjs::Error::Allocation => Fault::OutOfMemory,
            other => Fault::Internal(other.to_string()),
        };
    }
    let thrown = ctx.catch();
    if thrown.is_uncatchable_error() {
        return Fault::Interrupted;
    }
    let Some(exception) = thrown
        .as_object()
        .and_then(|o| Exception::from_object(o.clone()))
    else {
        return Fault::Threw(clip(value_text(&thrown)));
    };
    let name: Option<Coerced<String>> = exception.get("name").ok();
    let name = name.map_or_else(|| "Error".to_owned(), |n| n.0);
    let message = exception.message().unwrap_or_default();
    match (name.as_str(), message.as_str()) {
        ("InternalError", "out of memory") => Fault::OutOfMemory,
        ("RangeError", m) if m.contains("call stack") || m.contains("stack overflow") => {
            Fault::StackOverflow
        }
        ("FetchError", _) => Fault::Fetch(clip(message)),
        _ => {
            let line = exception
                .stack()
                .and_then(|s| position_in(&s, &compiled.name))
                .and_then(|(line, _)| compiled.source_line(line));
            let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            Fault::Threw(clip(format!("{name}: {message}{at}")))
        }
    }
}

/// The [`Error`] for a fault, with the spec's limits and secrets redacted.
fn fault_error(fault: Fault, spec: &HookSpec, elapsed: Duration, redactor: &Redactor) -> Error {
    let limits = &spec.limits;
    match fault {
        Fault::Interrupted => Error::Timeout {
            elapsed,
            limit: limits.deadline,
        },
        Fault::OutOfMemory => Error::MemoryExceeded {
            limit: limits.memory_bytes,
        },
        Fault::StackOverflow => Error::StackOverflow,
        Fault::Fetch(m) => Error::Fetch {
            message: redactor.redact_owned(m),
        },
        Fault::Threw(m) => Error::Threw {
            message: redactor.redact_owned(m),
        },
        Fault::BadResult(m) => Error::BadResult {
            message: redactor.redact_owned(m),
        },
        Fault::TooLarge(size) => Error::OutputTooLarge {
            size,
            limit: limits.max_output_bytes,
        },
        Fault::Internal(m) => Error::Internal(redactor.redact_owned(m)),
    }
}

/// A thrown non-`Error` value as text: strings as they are, others as JSON when they can
/// be, else `String(value)`.
fn value_text(value: &Value<'_>) -> String {
    if let Some(s) = value.as_string() {
        return s.to_string().unwrap_or_default();
    }
    if value.is_object()
        && let Ok(Some(json)) = value.ctx().json_stringify(value.clone())
        && let Ok(text) = json.to_string()
    {
        return text;
    }
    value
        .get::<Coerced<String>>()
        .map_or_else(|_| format!("a value of type {}", type_name(value)), |c| c.0)
}

/// JavaScript's name for the type of `value`, with arrays and `null` told apart.
fn type_name(value: &Value<'_>) -> &'static str {
    if value.is_null() {
        "null"
    } else if value.is_undefined() {
        "undefined"
    } else if value.is_array() {
        "array"
    } else if value.is_function() {
        "function"
    } else if value.is_bool() {
        "boolean"
    } else if value.is_number() {
        "number"
    } else if value.is_string() {
        "string"
    } else if value.is_big_int() {
        "bigint"
    } else if value.is_symbol() {
        "symbol"
    } else {
        "object"
    }
}

/// The first `module:line:column` in a QuickJS stack trace.
fn position_in(stack: &str, module: &str) -> Option<(usize, usize)> {
    let needle = format!("{module}:");
    stack.lines().find_map(|frame| {
        let start = frame.find(&needle)? + needle.len();
        let rest = frame.get(start..)?;
        let mut parts = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty());
        let line = parts.next()?.parse().ok()?;
        let column = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
        Some((line, column))
    })
}

/// `message` cut to [`MAX_MESSAGE_CHARS`].
fn clip(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
        message.push('…');
    }
    message
}

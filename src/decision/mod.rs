//! Deciding: one request, one snapshot, one [`Decision`].
//!
//! [`decide`] is pure and synchronous: enrich the subject from the identity index, select the
//! policy for `(action, resource.type)`, run its rules in order, first match wins. It never
//! blocks and never touches HTTP. [`Engine`] wraps it with what a served decision needs: a
//! decision id, the current snapshot, the decision log (the answer waits for the record), and
//! metrics.

mod outcome;
mod request;
pub mod search;

use std::sync::Arc;
use std::time::Instant;

pub use outcome::{DecidedBy, Decision};
pub use request::{BatchRequest, DecisionRequest, Evaluations, Problem, RequestError, Semantic};

use crate::decision_log::{self, BatchPos, DecisionLog, HookCall, Record, Timings};
use crate::hooks;
use crate::metrics::Metrics;
use crate::policy::{Effect, OnError, Outcome};
use crate::reload::{Snapshot, Store};

/// A decision as served: the decision plus its id and the revision it was made on.
#[derive(Debug, Clone)]
pub struct Served {
    /// The decision id (also the log record id).
    pub id: String,
    /// The decision.
    pub decision: Decision,
    /// The snapshot revision.
    pub revision: Arc<str>,
}

/// One batch item as served.
#[derive(Debug)]
pub enum ItemResult {
    /// Decided (allow or deny).
    Decided(Served),
    /// The item was invalid; it counts as a deny (AuthZEN §7.2.1).
    Invalid(RequestError),
}

/// Metadata of the HTTP request, for the record.
#[derive(Debug, Default, Clone)]
pub struct RequestMeta {
    /// `X-Request-ID`, when sent.
    pub request_id: Option<String>,
}

/// Failures that prevent answering at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The decision could not be logged, so it must not be answered.
    #[error("decision log unavailable: {0}")]
    Log(#[from] decision_log::Error),
    /// A rule needed a hook and the hook queue was full: fail fast rather than wait.
    #[error("hook queue is full; retry later")]
    Overloaded,
}

/// Decides and logs; shared by every connection.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<Store>,
    log: DecisionLog,
    metrics: Arc<Metrics>,
    pool: hooks::Pool,
}

/// Evaluates `request` against `snapshot`. Never fails: errors become a deny with
/// `decided_by: error` and the error in [`Decision::errors`].
///
/// Rules run in order on the calling task; only a rule whose outcome is `hook: NAME` awaits,
/// handing the request to the hook pool. A hook failure takes the rule's `on_error`: `deny`
/// ends the decision with `decided_by: error`, `skip` goes on with the next rule. Without a
/// pool (`None`), a hook rule is an error.
pub async fn decide(
    snapshot: &Snapshot,
    request: &DecisionRequest,
    now: chrono::DateTime<chrono::Utc>,
    pool: Option<&hooks::Pool>,
) -> Decision {
    let action = request.action_name();
    let resource_type = request.resource_type();
    let Some(policy) = snapshot.policies.select(action, resource_type) else {
        return Decision {
            reason: Some(format!("no policy applies to action `{action}` on resource type `{resource_type}`").into()),
            ..Decision::new(false, DecidedBy::Default)
        };
    };
    let mut principal = snapshot.principal(request.subject_id());
    // Boxed: the read-through (an HTTP exchange) is a future of about 13 KB, and held inline
    // it made every decision's future, and so every request's, that large; each request then
    // copied it several times as it was built up (measured with `-Zprint-type-sizes`).
    if let Some(scim) = snapshot.scim.as_deref()
        && principal.get("found") != Some(&serde_json::Value::Bool(true))
        && let Some(found) = Box::pin(scim.read_through(request.subject_id())).await
    {
        principal = found;
    }
    let enriched = snapshot.enrich(request);
    let bindings = match &enriched {
        Some(json) => crate::cel::Bindings::new(json, &principal, now),
        None => crate::cel::Bindings::of(request.bindable(), &principal, now),
    };
    let mut errors = Vec::new();
    let mut calls = Vec::new();
    for rule in &policy.rules {
        let on_error = rule.on_error.unwrap_or(policy.on_error);
        match rule.condition.evaluate(&snapshot.functions, &bindings) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                errors.push(format!("rule `{}`: {e}", rule.name));
                if on_error == OnError::Deny {
                    return Decision {
                        errors,
                        hooks: calls,
                        ..Decision::error(format!("rule `{}` failed to evaluate", rule.name))
                    };
                }
                continue;
            }
        }
        let name = match &rule.outcome {
            Outcome::Effect(effect) => {
                return Decision {
                    reason: rule.reason.clone(),
                    errors,
                    hooks: calls,
                    ..Decision::new(*effect == Effect::Allow, DecidedBy::Rule(rule.decided_by.clone()))
                };
            }
            Outcome::Hook(name) => name,
        };
        let json = enriched.as_ref().unwrap_or_else(|| request.json());
        match call_hook(snapshot, json, &principal, name, pool).await {
            Ok((outcome, call)) => {
                let version = call.version.clone();
                calls.push(call);
                return Decision {
                    reason: outcome.reason.map(Into::into).or_else(|| rule.reason.clone()),
                    outputs: outcome.outputs,
                    errors,
                    hooks: calls,
                    ..Decision::new(outcome.decision, DecidedBy::Hook(format!("hook:{name}@{version}").into()))
                };
            }
            Err(failed) => {
                errors.push(format!("rule `{}`: hook `{name}`: {}", rule.name, failed.cause));
                let overloaded = failed.overloaded;
                let cause = failed.cause;
                calls.extend(failed.call);
                if overloaded {
                    return Decision { errors, hooks: calls, overloaded: true, ..Decision::error("hook queue is full") };
                }
                if on_error == OnError::Deny {
                    return Decision {
                        errors,
                        hooks: calls,
                        ..Decision::error(format!("hook `{name}` failed: {cause}"))
                    };
                }
            }
        }
    }
    Decision { reason: policy.default_reason.clone(), errors, hooks: calls, ..Decision::new(policy.default == Effect::Allow, DecidedBy::Default) }
}

/// A hook that did not decide: why, its call record when it ran, and whether the pool
/// refused it outright (queue full), which the server answers with 503.
struct HookFailure {
    cause: String,
    call: Option<HookCall>,
    overloaded: bool,
}

impl HookFailure {
    fn before_call(cause: String) -> HookFailure {
        HookFailure { cause, call: None, overloaded: false }
    }
}

/// Runs one hook; on failure returns the cause and, when the hook ran, its call record.
async fn call_hook(
    snapshot: &Snapshot,
    request: &serde_json::Value,
    principal: &serde_json::Value,
    name: &str,
    pool: Option<&hooks::Pool>,
) -> Result<(hooks::Outcome, HookCall), HookFailure> {
    let Some(spec) = snapshot.hooks.get(name) else {
        return Err(HookFailure::before_call(format!("hook `{name}` is not loaded")));
    };
    let Some(pool) = pool else {
        return Err(HookFailure::before_call("no hook pool is running".to_owned()));
    };
    let mut input = request.clone();
    if let serde_json::Value::Object(map) = &mut input {
        map.insert("principal".to_owned(), principal.clone());
    }
    let started = Instant::now();
    let result = pool.call_with_logs(spec.clone(), input, snapshot.identity.clone()).await;
    let mut call = HookCall {
        name: name.to_owned(),
        version: spec.compiled.version.to_string(),
        elapsed_us: micros(started.elapsed()),
        memory_bytes: 0,
        logs: Vec::new(),
        error: None,
    };
    match result {
        Ok(mut outcome) => {
            call.memory_bytes = outcome.memory_bytes;
            call.logs = std::mem::take(&mut outcome.logs);
            Ok((outcome, call))
        }
        Err(e) => {
            let cause = e.error.to_string();
            let overloaded = matches!(e.error, hooks::Error::QueueFull);
            call.logs = e.logs;
            call.error = Some(cause.clone());
            Err(HookFailure { cause, call: Some(call), overloaded })
        }
    }
}

// === impl Engine ===

impl Engine {
    /// Wires the engine to the snapshot store, the decision log and the metrics.
    pub fn new(store: Arc<Store>, log: DecisionLog, metrics: Arc<Metrics>, pool: hooks::Pool) -> Engine {
        Engine { store, log, metrics, pool }
    }

    /// The snapshot store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Decides one request and returns once its record is written.
    pub async fn evaluate(&self, request: DecisionRequest, meta: &RequestMeta) -> Result<Served, Error> {
        let arrival = self.log.arrive();
        let snapshot = self.store.current();
        let (served, record) = self.decide_one(&snapshot, request, meta, None).await;
        if served.decision.overloaded {
            return Err(Error::Overloaded);
        }
        arrival.record(record).await?;
        Ok(served)
    }

    /// Decides a batch under its semantic; returns once every record is written.
    pub async fn evaluate_batch(&self, batch: BatchRequest, meta: &RequestMeta) -> Result<Vec<ItemResult>, Error> {
        // One snapshot for the whole batch, so its items never straddle a reload.
        let snapshot = self.store.current();
        let total = batch.items.len();
        let mut results = Vec::with_capacity(total);
        let mut records = Vec::with_capacity(total);
        for (index, item) in batch.items.into_iter().enumerate() {
            let stop = match item {
                Ok(request) => {
                    let pos = BatchPos { index, of: total };
                    let (served, record) = self.decide_one(&snapshot, request, meta, Some(pos)).await;
                    if served.decision.overloaded {
                        return Err(Error::Overloaded);
                    }
                    let allow = served.decision.allow;
                    records.push(record);
                    results.push(ItemResult::Decided(served));
                    match batch.semantic {
                        Semantic::ExecuteAll => false,
                        Semantic::DenyOnFirstDeny => !allow,
                        Semantic::PermitOnFirstPermit => allow,
                    }
                }
                Err(e) => {
                    results.push(ItemResult::Invalid(e));
                    batch.semantic == Semantic::DenyOnFirstDeny
                }
            };
            if stop {
                break;
            }
        }
        // The records go to the writer together, so they usually share one group commit.
        let mut writes = tokio::task::JoinSet::new();
        for record in records {
            let log = self.log.clone();
            writes.spawn(async move { log.record(record).await });
        }
        while let Some(joined) = writes.join_next().await {
            // A panicked writer task cannot have logged its record: treat it as a log failure.
            joined.unwrap_or(Err(decision_log::Error::Closed))?;
        }
        Ok(results)
    }

    /// Runs an AuthZEN search and logs it as one record; returns the response body.
    pub async fn search(&self, req: search::SearchRequest, meta: &RequestMeta) -> Result<(serde_json::Value, String), Error> {
        let started = Instant::now();
        let snapshot = self.store.current();
        let searched = req.searched_type().to_owned();
        let candidates: Vec<String> = match req.kind {
            search::Kind::Subject if snapshot.subject_types.contains(&searched) => {
                snapshot.identity.users().map(|u| u.id.to_string()).collect()
            }
            search::Kind::Subject => Vec::new(),
            search::Kind::Resource => snapshot
                .collections
                .get(&searched)
                .map(|c| c.records.iter().map(|(id, _)| id.clone()).collect())
                .unwrap_or_default(),
            search::Kind::Action => {
                let rtype = req.body.get("resource").and_then(|r| r.get("type")).and_then(serde_json::Value::as_str);
                snapshot.policies.actions_for(rtype.unwrap_or_default()).into_iter().map(str::to_owned).collect()
            }
        };
        let now = chrono::Utc::now();
        let mut permitted = Vec::new();
        for candidate in &candidates {
            let Ok(request) = DecisionRequest::from_json(req.candidate(candidate)) else { continue };
            let d = decide(&snapshot, &request, now, Some(&self.pool)).await;
            if d.overloaded {
                return Err(Error::Overloaded);
            }
            if d.allow {
                permitted.push(candidate.clone());
            }
        }
        let (mut body, page) = req.response(&permitted);
        let id = decision_id(&now);
        let total_us = micros(started.elapsed());
        self.metrics.decision("search", !page.is_empty(), started.elapsed());
        let record = Record {
            id: id.clone(),
            time: decision_log::rfc3339_millis(&now),
            decided_by: format!("search:{}", req.kind.as_str()),
            request: req.body.into(),
            decision: !page.is_empty(),
            reason: None,
            outputs: Some(serde_json::json!({ "results": page, "evaluated": candidates.len() })),
            revision: snapshot.revision.to_string(),
            hooks: Vec::new(),
            errors: Vec::new(),
            timings: Timings { total_us, rules_us: total_us, hooks_us: 0 },
            identity: snapshot.freshness(),
            request_id: meta.request_id.clone(),
            batch: None,
        };
        self.log.record(record).await?;
        if let serde_json::Value::Object(m) = &mut body {
            m.insert(
                "context".to_owned(),
                serde_json::json!({ "decision_id": id, "revision": &*snapshot.revision, "evaluated": candidates.len() }),
            );
        }
        Ok((body, id))
    }

    async fn decide_one(
        &self,
        snapshot: &Snapshot,
        request: DecisionRequest,
        meta: &RequestMeta,
        batch: Option<BatchPos>,
    ) -> (Served, Record) {
        let started = Instant::now();
        let now = chrono::Utc::now();
        let mut decision = decide(snapshot, &request, now, Some(&self.pool)).await;
        let total_us = micros(started.elapsed());
        let hooks_us: u64 = decision.hooks.iter().map(|h| h.elapsed_us).sum();
        self.metrics.decision(decision.decided_by.kind(), decision.allow, started.elapsed());
        let id = decision_id(&now);
        let record = Record {
            id: id.clone(),
            time: decision_log::rfc3339_millis(&now),
            request: request.into_logged(),
            decision: decision.allow,
            decided_by: decision.decided_by.as_str().into_owned(),
            reason: decision.reason.as_deref().map(str::to_owned),
            outputs: decision.outputs.clone(),
            revision: snapshot.revision.to_string(),
            hooks: std::mem::take(&mut decision.hooks),
            errors: decision.errors.clone(),
            timings: Timings { total_us, rules_us: total_us.saturating_sub(hooks_us), hooks_us },
            identity: snapshot.freshness(),
            request_id: meta.request_id.clone(),
            batch,
        };
        (Served { id, decision, revision: snapshot.revision.clone() }, record)
    }
}

/// A UUIDv7 decision id: `now` (the record's time) in Unix milliseconds, then 74 random bits
/// from a per-thread generator seeded once from the OS (`uuid::Uuid::now_v7` asks the OS for
/// randomness on every call, a system call per decision).
fn decision_id(now: &chrono::DateTime<chrono::Utc>) -> String {
    use std::cell::Cell;
    use std::hash::{BuildHasher as _, Hasher as _};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish() | 1);
    }
    // splitmix64: fast, and every seed gives a full-period sequence.
    let next = || {
        STATE.with(|s| {
            let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(x);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    };
    let (a, b) = (next().to_le_bytes(), next().to_le_bytes());
    let mut random = [0u8; 10];
    for (dst, src) in random.iter_mut().zip(a.iter().chain(b.iter())) {
        *dst = *src;
    }
    let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    // `encode_lower` writes the same text as `to_string`, without the formatting machinery.
    uuid.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned()
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// A decision id is a UUIDv7 whose time is the record's time (to the millisecond), and
    /// two ids of the same millisecond differ.
    #[test]
    fn decision_ids_carry_the_record_time() {
        let now = chrono::Utc::now();
        let ids: Vec<String> = (0..1000).map(|_| decision_id(&now)).collect();
        for id in &ids {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{id}");
            let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
            let millis = i64::try_from(secs).unwrap() * 1000 + i64::from(nanos / 1_000_000);
            assert_eq!(millis, now.timestamp_millis(), "{id}");
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}

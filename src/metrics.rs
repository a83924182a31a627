//! Prometheus metrics, kept in one registry and rendered by the admin listener.
//!
//! Counters are updated on the request path with label sets that are small and fixed (route,
//! status, decided-by kind), so lookups stay cheap; nothing here allocates per request except
//! the first use of a label set.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: Histogram,
    http: Family<HttpLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    reload_ok: Gauge,
    connections: Gauge,
    log_records: Counter<u64, AtomicU64>,
    log_errors: Counter<u64, AtomicU64>,
    log_unavailable: Counter<u64, AtomicU64>,
    hook_overloaded: Counter<u64, AtomicU64>,
    hook_calls: Family<HookLabels, Counter>,
    identity_stale: Gauge,
    identity_syncs: Family<ResultLabels, Counter>,
    identity_last_sync: Gauge,
    identity_lookups: Family<ResultLabels, Counter>,
    identity_upstream_lookups: Counter<u64, AtomicU64>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decided_by: &'static str,
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    trigger: &'static str,
    result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

// === impl Metrics ===

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("verdict");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("decisions", "Decisions made, by what decided them", decisions.clone());
        let decision_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 20));
        registry.register(
            "decision_duration_seconds",
            "Time to evaluate a decision, before logging",
            decision_seconds.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered, by route and status", http.clone());
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register("reloads", "Snapshot reloads, by trigger and result", reloads.clone());
        let reload_ok = Gauge::default();
        registry.register("reload_last_ok", "1 when the last reload succeeded, 0 when it failed", reload_ok.clone());
        let connections = Gauge::default();
        registry.register("connections_open", "Connections open on the decision listener", connections.clone());
        let log_records = Counter::default();
        registry.register("decision_log_records", "Decision records written", log_records.clone());
        let log_errors = Counter::default();
        registry.register("decision_log_write_errors", "Failed decision log writes", log_errors.clone());
        let log_unavailable = Counter::default();
        registry.register(
            "decision_log_unavailable",
            "Requests answered 503 because their record could not be logged",
            log_unavailable.clone(),
        );
        let hook_overloaded = Counter::default();
        registry.register(
            "hook_overloaded",
            "Requests answered 503 because the hook queue was full",
            hook_overloaded.clone(),
        );
        let hook_calls = Family::<HookLabels, Counter>::default();
        registry.register("hook_calls", "Hook calls by result, from the pool's counters", hook_calls.clone());
        let identity_stale = Gauge::default();
        registry.register(
            "identity_stale",
            "1 while the identity data could not be confirmed with its SCIM upstream",
            identity_stale.clone(),
        );
        let identity_syncs = Family::<ResultLabels, Counter>::default();
        registry.register("identity_syncs", "SCIM full syncs, by result", identity_syncs.clone());
        let identity_last_sync = Gauge::default();
        registry.register(
            "identity_last_sync_timestamp_seconds",
            "Unix time of the last successful SCIM sync",
            identity_last_sync.clone(),
        );
        let identity_lookups = Family::<ResultLabels, Counter>::default();
        registry.register(
            "identity_lookups",
            "Read-through lookups of subjects missing from the index, by result",
            identity_lookups.clone(),
        );
        let identity_upstream_lookups = Counter::default();
        registry.register(
            "identity_upstream_lookups",
            "Read-through lookups that went to the SCIM upstream (cache misses)",
            identity_upstream_lookups.clone(),
        );
        reload_ok.set(1);
        Metrics {
            registry,
            decisions,
            decision_seconds,
            http,
            reloads,
            reload_ok,
            connections,
            log_records,
            log_errors,
            log_unavailable,
            hook_overloaded,
            hook_calls,
            identity_stale,
            identity_syncs,
            identity_last_sync,
            identity_lookups,
            identity_upstream_lookups,
        }
    }

    /// Counts one decision.
    pub fn decision(&self, decided_by: &'static str, allow: bool, elapsed: Duration) {
        let decision = if allow { "allow" } else { "deny" };
        self.decisions.get_or_create(&DecisionLabels { decided_by, decision }).inc();
        self.decision_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts one HTTP response.
    pub fn http(&self, route: &'static str, status: u16) {
        self.http.get_or_create(&HttpLabels { route, status }).inc();
    }

    /// Counts one reload.
    pub fn reload(&self, trigger: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { trigger, result }).inc();
        self.reload_ok.set(i64::from(ok));
    }

    /// Tracks the open connection count.
    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    /// Tracks the open connection count.
    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// Counts a request refused because its record could not be logged.
    pub fn log_unavailable(&self) {
        self.log_unavailable.inc();
    }

    /// Counts a request refused because the hook queue was full.
    pub fn hook_overloaded(&self) {
        self.hook_overloaded.inc();
    }

    /// Renders the text exposition format, after copying the log writer's and the hook pool's
    /// counters in.
    pub fn render(
        &self,
        log: &crate::decision_log::Stats,
        hooks: Option<&crate::hooks::PoolStats>,
        scim: Option<&crate::identity::sync::ScimSource>,
    ) -> String {
        let bump = |c: &Counter<u64, AtomicU64>, to: u64| {
            let now = c.get();
            if to > now {
                c.inc_by(to - now);
            }
        };
        bump(&self.log_records, log.records_written);
        bump(&self.log_errors, log.write_errors);
        if let Some(h) = hooks {
            let ok = h.calls.saturating_sub(h.queue_full + h.timeouts + h.oom + h.stack_overflows + h.errors);
            for (result, n) in [
                ("ok", ok),
                ("queue_full", h.queue_full),
                ("timeout", h.timeouts),
                ("out_of_memory", h.oom),
                ("stack_overflow", h.stack_overflows),
                ("error", h.errors),
            ] {
                bump(&self.hook_calls.get_or_create(&HookLabels { result }), n);
            }
        }
        if let Some(scim) = scim {
            use std::sync::atomic::Ordering::Relaxed;
            let c = scim.counters();
            self.identity_stale.set(i64::from(scim.is_stale()));
            bump(&self.identity_syncs.get_or_create(&ResultLabels { result: "ok" }), c.syncs_ok.load(Relaxed));
            bump(&self.identity_syncs.get_or_create(&ResultLabels { result: "error" }), c.syncs_failed.load(Relaxed));
            for (result, n) in [
                ("found", &c.lookups_found),
                ("not_found", &c.lookups_not_found),
                ("error", &c.lookups_error),
                ("skipped_stale", &c.lookups_skipped),
            ] {
                bump(&self.identity_lookups.get_or_create(&ResultLabels { result }), n.load(Relaxed));
            }
            bump(&self.identity_upstream_lookups, c.upstream_lookups.load(Relaxed));
            if let Some(at) = scim.synced_at().and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()) {
                self.identity_last_sync.set(at.timestamp());
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

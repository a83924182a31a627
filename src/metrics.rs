//! Prometheus metrics, kept in one registry and rendered by the admin listener.
//!
//! The request path touches only atomics: the counters it bumps on every decision (by
//! decided-by kind and decision, and HTTP 200s by route) are created up front, every series
//! from the start, and the latency histogram is atomic buckets. A `Family` lookup (a read lock
//! and a hash of the labels) is left for rarer label sets, and prometheus-client's own
//! `Histogram` takes a write lock per observation, which both workers would contend for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    /// `decisions` for every kind in `DECIDED_BY`: `[deny, allow]` each.
    decision_counters: [(&'static str, [Counter; 2]); DECIDED_BY.len()],
    decision_seconds: LatencyHistogram,
    http: Family<HttpLabels, Counter>,
    /// `http` for status 200 of every route in `ROUTES`.
    http_ok: [(&'static str, Counter); ROUTES.len()],
    reloads: Family<ReloadLabels, Counter>,
    reload_ok: Gauge,
    connections: Gauge,
    log_records: Counter<u64, AtomicU64>,
    log_groups: Counter<u64, AtomicU64>,
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

/// The `decided_by` labels counted without a lookup (`DecidedBy::kind`, and searches).
const DECIDED_BY: [&str; 5] = ["rule", "hook", "default", "error", "search"];

/// The `route` labels whose 200s are counted without a lookup.
const ROUTES: [&str; 6] =
    ["evaluation", "evaluations", "search_subject", "search_resource", "search_action", "metadata"];

/// Buckets of `decision_duration_seconds`: 1 µs × 2^i for i < 20 (1 µs to 0.52 s), then +Inf.
const LATENCY_BUCKETS: usize = 20;

/// A latency histogram in atomics: observing is two `fetch_add`s.
#[derive(Debug, Clone, Default)]
struct LatencyHistogram(Arc<LatencyInner>);

#[derive(Debug, Default)]
struct LatencyInner {
    /// Observations per bucket, not cumulative; the last is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    /// Sum of the observations in nanoseconds.
    sum_ns: AtomicU64,
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
        let decision_counters = DECIDED_BY.map(|decided_by| {
            let by = ["deny", "allow"].map(|decision| decisions.get_or_create(&DecisionLabels { decided_by, decision }).clone());
            (decided_by, by)
        });
        let decision_seconds = LatencyHistogram::default();
        registry.register(
            "decision_duration_seconds",
            "Time to evaluate a decision, before logging",
            decision_seconds.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered, by route and status", http.clone());
        let http_ok = ROUTES.map(|route| (route, http.get_or_create(&HttpLabels { route, status: 200 }).clone()));
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register("reloads", "Snapshot reloads, by trigger and result", reloads.clone());
        let reload_ok = Gauge::default();
        registry.register("reload_last_ok", "1 when the last reload succeeded, 0 when it failed", reload_ok.clone());
        let connections = Gauge::default();
        registry.register("connections_open", "Connections open on the decision listener", connections.clone());
        let log_records = Counter::default();
        registry.register("decision_log_records", "Decision records written", log_records.clone());
        let log_groups = Counter::default();
        registry.register(
            "decision_log_groups",
            "Groups of decision records written, one write (and fsync) each",
            log_groups.clone(),
        );
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
            decision_counters,
            decision_seconds,
            http,
            http_ok,
            reloads,
            reload_ok,
            connections,
            log_records,
            log_groups,
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
        match self.decision_counters.iter().find(|(by, _)| *by == decided_by) {
            Some((_, [deny, allowed])) => if allow { allowed } else { deny }.inc(),
            None => {
                let decision = if allow { "allow" } else { "deny" };
                self.decisions.get_or_create(&DecisionLabels { decided_by, decision }).inc()
            }
        };
        self.decision_seconds.observe(elapsed);
    }

    /// Counts one HTTP response.
    pub fn http(&self, route: &'static str, status: u16) {
        match self.http_ok.iter().find(|(r, _)| status == 200 && *r == route) {
            Some((_, ok)) => ok.inc(),
            None => self.http.get_or_create(&HttpLabels { route, status }).inc(),
        };
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
        bump(&self.log_groups, log.groups_written);
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

// === impl LatencyHistogram ===

impl LatencyHistogram {
    fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_ns.fetch_add(ns, Relaxed);
        if let Some(bucket) = self.0.buckets.get(latency_bucket(ns)) {
            bucket.fetch_add(1, Relaxed);
        }
    }
}

/// The first bucket whose bound (1 µs × 2^i) is at least `ns`, or +Inf's.
fn latency_bucket(ns: u64) -> usize {
    // For ns in (1000 × 2^(i-1), 1000 × 2^i], (ns - 1) / 1000 has exactly i significant bits.
    let q = ns.saturating_sub(1) / 1000;
    let bits = (u64::BITS - q.leading_zeros()) as usize;
    bits.min(LATENCY_BUCKETS)
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut count = 0;
        let buckets: Vec<(f64, u64)> = (0i32..)
            .zip(&self.0.buckets)
            .map(|(i, n)| {
                // The exposition writes f64::MAX as +Inf.
                let bound = if i == LATENCY_BUCKETS as i32 { f64::MAX } else { 1e-6 * 2f64.powi(i) };
                let n = n.load(Relaxed);
                count += n;
                (bound, n)
            })
            .collect();
        let sum = self.0.sum_ns.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_match_their_bounds() {
        for ns in [0, 1, 999, 1_000, 1_001, 1_999, 2_000, 2_001, 4_000, 4_001, 524_288_000, 524_288_001, u64::MAX] {
            let i = latency_bucket(ns);
            let bound = |i: usize| 1_000u128 << i;
            if i < LATENCY_BUCKETS {
                assert!(u128::from(ns) <= bound(i), "{ns} in bucket {i}");
            }
            if i > 0 {
                assert!(u128::from(ns) > bound(i - 1), "{ns} belongs below bucket {i}");
            }
        }
    }

    /// The exposition of the pre-created series and the histogram, after a few observations.
    #[test]
    fn counters_and_histogram_render_as_prometheus_text() {
        let m = Metrics::new();
        m.decision("rule", true, Duration::from_nanos(500));
        m.decision("rule", true, Duration::from_micros(3));
        m.decision("default", false, Duration::from_secs(2));
        m.decision("unheard-of", false, Duration::from_micros(1));
        m.http("evaluation", 200);
        m.http("evaluation", 400);
        let text = m.render(&crate::decision_log::Stats::default(), None, None);
        for line in [
            r#"verdict_decisions_total{decided_by="rule",decision="allow"} 2"#,
            r#"verdict_decisions_total{decided_by="hook",decision="deny"} 0"#,
            r#"verdict_decisions_total{decided_by="default",decision="deny"} 1"#,
            r#"verdict_decisions_total{decided_by="unheard-of",decision="deny"} 1"#,
            r#"verdict_http_requests_total{route="evaluation",status="200"} 1"#,
            r#"verdict_http_requests_total{route="evaluation",status="400"} 1"#,
            r#"verdict_http_requests_total{route="metadata",status="200"} 0"#,
            "verdict_decision_duration_seconds_count 4",
            "verdict_decision_duration_seconds_sum 2.0000045",
            r#"verdict_decision_duration_seconds_bucket{le="0.000001"} 2"#,
            r#"verdict_decision_duration_seconds_bucket{le="0.000002"} 2"#,
            r#"verdict_decision_duration_seconds_bucket{le="0.000004"} 3"#,
            r#"verdict_decision_duration_seconds_bucket{le="0.524288"} 3"#,
            r#"verdict_decision_duration_seconds_bucket{le="+Inf"} 4"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}

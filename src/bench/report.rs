//! What a run measured: [`Tally`] (per task, merged) → [`Report`] (JSON and a table).
//!
//! Definitions: `requests` are the answers received in the measured window, whatever their
//! status; `throughput_rps` is `requests / duration`; latency covers every one of them (a
//! non-2xx answer is still an answer). Transport failures (no answer) are not in the latency
//! histogram; they are counted in `errors.by_kind`. Non-2xx answers are counted in
//! `errors.by_status`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::Load;

/// Highest latency recorded: 100 s, in nanoseconds; anything above is recorded as this.
const MAX_NANOS: u64 = 100_000_000_000;

/// Points of the percentile distribution: x = log10(1 / (1 - p)) from 0 to 4 in these steps.
const DISTRIBUTION_STEPS: u32 = 40;

/// The result of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The run's name (`--label`), used in tables and plot legends.
    pub label: String,
    /// The URL, or `in-process`.
    pub target: String,
    /// What was measured: `http`, or the in-process path with or without the decision log.
    pub measured: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Concurrent connections (tasks).
    pub connections: usize,
    /// Open loop: the requested rate, requests/s.
    pub rate: Option<f64>,
    /// Warm-up, seconds (not recorded).
    pub warmup_s: f64,
    /// Measured window, seconds.
    pub duration_s: f64,
    /// Answers received in the window (any status).
    pub requests: u64,
    /// Answers with a 2xx status.
    pub ok: u64,
    /// `requests / duration_s`.
    pub throughput_rps: f64,
    /// Latency summary, microseconds.
    pub latency_us: Latency,
    /// Failures.
    pub errors: ErrorCounts,
    /// Open loop: intended sends that could not be made before the end of the run.
    pub missed: u64,
    /// The percentile distribution, for plots.
    pub distribution: Vec<Distribution>,
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Failures by HTTP status (non-2xx answers) and by transport error kind (no answer).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Non-2xx answers plus transport failures.
    pub total: u64,
    /// Non-2xx answers by status.
    pub by_status: BTreeMap<String, u64>,
    /// Failures without an answer: `connect`, `timeout`, `closed`, `parse`, `io`, …
    pub by_kind: BTreeMap<String, u64>,
}

/// One point of the percentile distribution.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Distribution {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at that percentile, microseconds.
    pub latency_us: f64,
}

/// What the tasks record; merged at the end of a run.
#[derive(Debug, Clone)]
pub(super) struct Tally {
    hist: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    kinds: BTreeMap<&'static str, u64>,
    /// Open-loop slots never sent.
    pub(super) missed: u64,
}

/// Describes a run for its report.
pub(super) struct Meta<'a> {
    pub(super) label: String,
    pub(super) target: String,
    pub(super) measured: String,
    pub(super) load: &'a Load,
}

// === impl Tally ===

impl Tally {
    pub(super) fn new() -> Tally {
        Tally { hist: Self::histogram(), statuses: BTreeMap::new(), kinds: BTreeMap::new(), missed: 0 }
    }

    /// A histogram of nanoseconds, 1 ns to 100 s, 3 significant digits.
    #[expect(clippy::expect_used, reason = "constant bounds that the constructor accepts (low ≥ 1, high ≥ 2 × low, 3 digits)")]
    pub(super) fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, MAX_NANOS, 3).expect("valid histogram bounds")
    }

    pub(super) fn record(&mut self, status: u16, nanos: u64) {
        self.hist.saturating_record(nanos.clamp(1, MAX_NANOS));
        *self.statuses.entry(status).or_default() += 1;
    }

    pub(super) fn count_kind(&mut self, kind: &'static str) {
        *self.kinds.entry(kind).or_default() += 1;
    }

    pub(super) fn merge(&mut self, other: Tally) {
        // Both histograms have the same bounds, so adding cannot fail; a failure would only
        // lose that task's latencies, never its counts.
        let _ = self.hist.add(&other.hist);
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        for (k, n) in other.kinds {
            *self.kinds.entry(k).or_default() += n;
        }
        self.missed += other.missed;
    }

    pub(super) fn report(&self, meta: Meta<'_>) -> Report {
        let h = &self.hist;
        let us = |ns: u64| ns as f64 / 1000.0;
        let requests = h.len();
        let ok = self.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
        let by_status = super::load::errors_by_status(&self.statuses);
        let by_kind: BTreeMap<String, u64> = self.kinds.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect();
        let total = by_status.values().sum::<u64>() + by_kind.values().sum::<u64>();
        let latency = if requests == 0 {
            Latency::default()
        } else {
            Latency {
                min: us(h.min()),
                mean: h.mean() / 1000.0,
                p50: us(h.value_at_quantile(0.5)),
                p90: us(h.value_at_quantile(0.9)),
                p99: us(h.value_at_quantile(0.99)),
                p999: us(h.value_at_quantile(0.999)),
                max: us(h.max()),
            }
        };
        let distribution = if requests == 0 {
            Vec::new()
        } else {
            (0..=DISTRIBUTION_STEPS)
                .map(|i| {
                    let x = f64::from(i) * 4.0 / f64::from(DISTRIBUTION_STEPS);
                    let q = 1.0 - 10f64.powf(-x);
                    Distribution { percentile: q * 100.0, latency_us: us(h.value_at_quantile(q)) }
                })
                .collect()
        };
        let duration_s = meta.load.duration.as_secs_f64();
        Report {
            label: meta.label,
            target: meta.target,
            measured: meta.measured,
            mode: if meta.load.rate.is_some() { "open" } else { "closed" }.to_owned(),
            connections: meta.load.connections,
            rate: meta.load.rate,
            warmup_s: meta.load.warmup.as_secs_f64(),
            duration_s,
            requests,
            ok,
            throughput_rps: if duration_s > 0.0 { requests as f64 / duration_s } else { 0.0 },
            latency_us: latency,
            errors: ErrorCounts { total, by_status, by_kind },
            missed: self.missed,
            distribution,
        }
    }
}

// === impl Report ===

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let l = &self.latency_us;
        let load = match self.rate {
            Some(r) => format!("open loop at {r} req/s (latency from the intended send time)"),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(out, "{}", self.label);
        let _ = writeln!(out, "  target      {} ({})", self.target, self.measured);
        let _ = writeln!(
            out,
            "  load        {load}, {} connection(s), {} s warm-up, {} s measured",
            self.connections, self.warmup_s, self.duration_s
        );
        let _ = writeln!(out, "  requests    {} ({} 2xx)", self.requests, self.ok);
        let _ = writeln!(out, "  throughput  {:.1} req/s", self.throughput_rps);
        let _ = writeln!(out, "  latency     {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}", "p50", "p90", "p99", "p99.9", "max", "mean");
        let _ = writeln!(
            out,
            "              {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            format_us(l.p50),
            format_us(l.p90),
            format_us(l.p99),
            format_us(l.p999),
            format_us(l.max),
            format_us(l.mean)
        );
        if self.errors.total == 0 {
            let _ = writeln!(out, "  errors      none");
        } else {
            let mut parts: Vec<String> = self.errors.by_status.iter().map(|(s, n)| format!("HTTP {s}: {n}")).collect();
            parts.extend(self.errors.by_kind.iter().map(|(k, n)| format!("{k}: {n}")));
            let _ = writeln!(out, "  errors      {} ({})", self.errors.total, parts.join(", "));
        }
        if self.missed > 0 {
            let _ = writeln!(out, "  missed      {} intended sends not made before the end (the endpoint fell behind)", self.missed);
        }
        out
    }
}

/// Microseconds as `µs`, `ms` or `s` with 3 or 4 significant digits.
pub(super) fn format_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.3} ms", us / 1000.0)
    } else {
        format!("{:.3} s", us / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn report_counts_and_orders_percentiles() {
        let mut a = Tally::new();
        for i in 1..=1000u64 {
            a.record(200, i * 1000);
        }
        let mut b = Tally::new();
        b.record(404, 2_000_000);
        b.count_kind("timeout");
        a.merge(b);
        let load = Load {
            connections: 2,
            rate: None,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            progress: false,
        };
        let r = a.report(Meta { label: "x".into(), target: "t".into(), measured: "http".into(), load: &load });
        assert_eq!(r.requests, 1001);
        assert_eq!(r.ok, 1000);
        assert!((r.throughput_rps - 500.5).abs() < 1e-9);
        assert_eq!(r.errors.total, 2);
        assert_eq!(r.errors.by_status["404"], 1);
        assert_eq!(r.errors.by_kind["timeout"], 1);
        let l = r.latency_us;
        assert!((l.p50 - 501.0).abs() <= 1.0, "{l:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, "{l:?}");
        assert!((l.max - 2000.0).abs() <= 2.0, "{l:?}");
        assert_eq!(r.distribution.len(), 41);
        assert!(r.distribution.windows(2).all(|w| w[0].latency_us <= w[1].latency_us));
        let table = r.table();
        assert!(table.contains("HTTP 404: 1") && table.contains("timeout: 1"), "{table}");
    }
}

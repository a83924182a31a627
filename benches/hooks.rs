//! Hook calls in-process: a trivial hook through the pool (queue, worker thread hop, JSON in
//! and out, result check), pooled and per-call isolation, and a hook-decided `decide`.
//! Target: a trivial hook call ≤ 10 µs median.
//!
//! Run with: cargo bench --bench hooks

#![allow(missing_docs, reason = "criterion's macros generate undocumented items")]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use verdict::hooks::{self, HookSpec, Isolation, Pool, PoolConfig};

const TRIVIAL: &str = "export default function decide(req) { return { decision: req.action.name === 'read' }; }";

fn bench(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() else { return };
    let Ok(pool) = Pool::spawn(PoolConfig { workers: 1, ..PoolConfig::default() }) else { return };
    let Ok(compiled) = hooks::compile("trivial", Path::new("trivial.ts"), TRIVIAL) else { return };
    let compiled = Arc::new(compiled);
    let Ok((index, _)) = verdict::identity::load_bytes(br#"{"version":1}"#, Path::new("bench")) else { return };
    let index = Arc::new(index);
    let input = serde_json::json!({
        "subject": {"type": "user", "id": "u-bob"}, "action": {"name": "read"},
        "resource": {"type": "doc", "id": "d1"}, "principal": {"id": "u-bob", "found": true, "groups": []}
    });
    for (label, isolation) in [("pooled", Isolation::Pooled), ("per-call", Isolation::PerCall)] {
        let mut spec = HookSpec::new(compiled.clone());
        spec.limits.isolation = isolation;
        let spec = Arc::new(spec);
        c.bench_function(&format!("hooks/trivial call through the pool ({label})"), |b| {
            b.iter(|| rt.block_on(pool.call(spec.clone(), black_box(input.clone()), index.clone())).is_ok())
        });
    }

    // A whole hook-decided decision in-process: policy selection, a CEL rule handing over to
    // the `clean` hook of the hostile-hooks fixture, the pool call, the result. No HTTP, no log.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let Ok(config) = verdict::config::Config::load(Some(&root.join("verdict.toml")), &verdict::config::Env) else { return };
    let sources = verdict::reload::Sources::from_config(&config, None);
    let Ok(snapshot) = verdict::reload::Snapshot::build(&sources, &verdict::cel::Env::new()) else { return };
    let request = serde_json::json!({"subject": {"type": "user", "id": "u"}, "action": {"name": "clean"},
        "resource": {"type": "thing", "id": "t"}});
    let Ok(request) = verdict::decision::DecisionRequest::from_json(request) else { return };
    let now = chrono::Utc::now();
    c.bench_function("hooks/decide, hook-decided request (rule → pool → result)", |b| {
        b.iter(|| rt.block_on(verdict::decision::decide(&snapshot, black_box(&request), now, Some(&pool))).allow)
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

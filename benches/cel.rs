//! CEL rule evaluation with variable binding: the target is ≤ 5 µs median per evaluation,
//! binding without copying the request.
//!
//! Run with: cargo bench --bench cel

#![allow(missing_docs, reason = "criterion's macros generate undocumented items")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use verdict::cel::{Bindings, Condition, Env, Functions};

const RULE: &str = "resource.properties.monthly_cost <= 50.0 && subject.id != ''";

fn request() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/provisioning/requests/cel-allow.json");
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let env = Env::new();
    let Ok((index, _)) = verdict::identity::load_bytes(br#"{"version":1,"users":[]}"#, std::path::Path::new("bench")) else { return };
    let functions = Functions::new(&env, Arc::new(index));
    let request = request();
    let principal = serde_json::json!({"id": "u-bob", "found": true, "groups": ["engineering"]});
    let now = chrono::Utc::now();
    let Ok(condition) = Condition::compile(&env, RULE) else { return };

    c.bench_function("cel/evaluate (compiled once, borrowed bindings)", |b| {
        b.iter(|| {
            let bindings = Bindings::new(black_box(&request), &principal, now);
            black_box(condition.evaluate(&functions, &bindings))
        })
    });
    c.bench_function("cel/interpret (the same rule on the cel interpreter alone)", |b| {
        b.iter(|| {
            let bindings = Bindings::new(black_box(&request), &principal, now);
            black_box(condition.interpret(&functions, &bindings))
        })
    });
    c.bench_function("cel/parse+evaluate (request JSON text → decision)", |b| {
        let text = serde_json::to_string(&request).unwrap_or_default();
        b.iter(|| {
            let parsed = verdict::json::parse(black_box(text.as_bytes())).unwrap_or_default();
            let bindings = Bindings::new(&parsed, &principal, now);
            black_box(condition.evaluate(&functions, &bindings))
        })
    });
    // The body as the client sent it (pretty-printed), parsed the way the server does and the
    // way serde_json alone does.
    let body = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/provisioning/requests/cel-allow.json")).unwrap_or_default();
    c.bench_function("json/parse a request body (verdict::json)", |b| {
        b.iter(|| black_box(verdict::json::parse(black_box(&body)).is_ok()))
    });
    c.bench_function("json/parse a request body (serde_json::from_slice)", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).is_ok()))
    });
    c.bench_function("cel/compile per call (what Verdict avoids)", |b| {
        b.iter(|| {
            let condition = Condition::compile(&env, black_box(RULE));
            let bindings = Bindings::new(&request, &principal, now);
            black_box(condition.map(|c| c.evaluate(&functions, &bindings).is_ok()))
        })
    });
    c.bench_function("cel/eager binding (cel::to_value copies the request)", |b| {
        let Ok(program) = cel::Program::compile(RULE) else { return };
        b.iter(|| {
            let mut ctx = cel::Context::default();
            for key in ["subject", "resource"] {
                if let Ok(v) = cel::to_value(request.get(key).unwrap_or(&serde_json::Value::Null)) {
                    ctx.add_variable_from_value(key, v);
                }
            }
            black_box(program.execute(&ctx).is_ok())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

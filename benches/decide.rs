//! In-process decisions: one request through `decision::decide` against a loaded snapshot
//! (policy selection, principal lookup, rule evaluation), without HTTP or the log; and the
//! reading of a request body before it, as the server reads a single evaluation (kept as a
//! document) and as it reads a batch item (a `serde_json` tree).
//!
//! Run with: cargo bench --bench decide

#![allow(missing_docs, reason = "criterion's macros generate undocumented items")]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use verdict::decision::{self, DecisionRequest};
use verdict::reload::{HookSources, Snapshot, Sources};

fn example(name: &str) -> Option<Snapshot> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    // The hooks directory too: a policy naming a hook that is not loaded does not build.
    let hooks = HookSources { dir: Some(root.join("hooks")).filter(|d| d.is_dir()), ..Default::default() };
    let sources = Sources { policy_dir: root.join("policies"), identity_file: Some(root.join("identity.json")), hooks, search: Default::default(), scim: None };
    // Say why a bench is missing instead of skipping it silently.
    Snapshot::build(&sources, &verdict::cel::Env::new()).map_err(|e| eprintln!("example `{name}` does not build: {e}")).ok()
}

fn request(json: &str) -> Option<DecisionRequest> {
    DecisionRequest::from_json(serde_json::from_str(json).ok()?).ok()
}

fn bench(c: &mut Criterion) {
    let now = chrono::Utc::now();
    // `decide` is async because a hook rule awaits the pool; these rules never do, so the
    // future is ready at its first poll and a current-thread runtime adds only that poll.
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else { return };
    let body = bytes::Bytes::from_static(include_bytes!("../examples/provisioning/requests/cel-allow.json"));
    c.bench_function("read/provisioning request as a document (parse, validate, drop)", |b| {
        b.iter(|| black_box(DecisionRequest::from_bytes(black_box(body.clone()), 64)))
    });
    c.bench_function("read/provisioning request as serde_json (parse, validate, drop)", |b| {
        b.iter(|| black_box(verdict::json::parse(black_box(&body)).ok().map(DecisionRequest::from_json)))
    });
    if let (Some(snap), Some(req)) = (
        example("provisioning"),
        request(include_str!("../examples/provisioning/requests/cel-allow.json")),
    ) {
        c.bench_function("decide/provisioning tiny VM (rule 3 of 5)", |b| {
            b.iter(|| black_box(rt.block_on(decision::decide(&snap, black_box(&req), now, None))))
        });
        if let Some(doc) = DecisionRequest::from_bytes(body.clone(), 64) {
            c.bench_function("decide/provisioning tiny VM, request kept as a document", |b| {
                b.iter(|| black_box(rt.block_on(decision::decide(&snap, black_box(&doc), now, None))))
            });
        }
    }
    if let (Some(snap), Some(req)) = (
        example("access-requests"),
        request(include_str!("../examples/access-requests/requests/morty-github-admin.json")),
    ) {
        c.bench_function("decide/access request, all 10 rules and identity lookups", |b| {
            b.iter(|| black_box(rt.block_on(decision::decide(&snap, black_box(&req), now, None))))
        });
    }
    if let Some(snap) = example("authzen-todo") {
        let json = r#"{"subject":{"type":"user","id":"CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"},
            "action":{"name":"can_update_todo"},
            "resource":{"type":"todo","id":"t1","properties":{"ownerID":"morty@the-citadel.com"}}}"#;
        if let Some(req) = request(json) {
            c.bench_function("decide/authzen todo update own", |b| {
                b.iter(|| black_box(rt.block_on(decision::decide(&snap, black_box(&req), now, None))))
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

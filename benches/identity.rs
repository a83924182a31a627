//! Per-decision speed at company scale: the access-request policy (10 rules, identity
//! lookups through grants, groups and managers) decided in-process against the generated
//! 5,000-user (`Mid`) and 50,000-user / 1.6 M-grant (`Large`) identity profiles. The same
//! request shape at both sizes: lookups are O(1) or O(result), so the times should match.
//!
//! Setup generates both profiles into a temp directory and loads them (the Large one takes
//! tens of seconds); the load itself is measured by
//! `cargo test --release --lib -- --ignored --nocapture _profile_load --test-threads 1`.
//!
//! Run with: cargo bench --bench identity

#![allow(missing_docs, reason = "criterion's macros generate undocumented items")]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use verdict::decision::{self, DecisionRequest};
use verdict::identity::{Profile, generate};
use verdict::reload::{Snapshot, Sources};

fn snapshot(dir: &Path, profile: Profile, name: &str) -> Option<Snapshot> {
    let file = dir.join(format!("{name}.json"));
    let mut out = std::fs::File::create(&file).ok()?;
    generate(profile, 42, &mut out).ok()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/access-requests");
    let sources = Sources {
        policy_dir: root.join("policies"),
        identity_file: Some(file),
        hooks: Default::default(),
        search: Default::default(),
        scim: None,
    };
    Snapshot::build(&sources, &verdict::cel::Env::new()).ok()
}

/// A request by user `u000100` for an entitlement of an app they have an account in, which
/// they do not hold yet: every rule runs.
fn request(snap: &Snapshot) -> Option<DecisionRequest> {
    let index = &snap.identity;
    let user = index.user("u000100")?;
    let app = index.accounts_of(&user.id, None).first()?.app_id.clone();
    let ent = index
        .entitlements_of(&app)
        .into_iter()
        .find(|e| !index.has_entitlement(&user.id, &app, &e.id))?;
    let json = serde_json::json!({
        "subject": {"type": "user", "id": user.id.as_str()},
        "action": {"name": "request"},
        "resource": {"type": "entitlement", "id": ent.id.as_str(),
            "properties": {"app_id": app.as_str(), "risk": "low"}}
    });
    DecisionRequest::from_json(json).ok()
}

fn bench(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else { return };
    let now = chrono::Utc::now();
    for (profile, name) in [(Profile::Mid, "mid"), (Profile::Large, "large")] {
        let Some(snap) = snapshot(dir.path(), profile, name) else {
            eprintln!("cannot build the {name} profile");
            continue;
        };
        let Some(req) = request(&snap) else {
            eprintln!("no request for the {name} profile");
            continue;
        };
        let decided = rt.block_on(decision::decide(&snap, &req, now, None));
        eprintln!("{name}: {} by {}", decided.allow, decided.decided_by.as_str());
        c.bench_function(&format!("identity/{name} profile: access request, all rules"), |b| {
            b.iter(|| black_box(rt.block_on(decision::decide(&snap, black_box(&req), now, None))))
        });
        let user = "u000100";
        c.bench_function(&format!("identity/{name} profile: groups_of"), |b| {
            b.iter(|| black_box(snap.identity.groups_of(black_box(user)).len()))
        });
        c.bench_function(&format!("identity/{name} profile: grants_of"), |b| {
            b.iter(|| black_box(snap.identity.grants_of(black_box(user)).len()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

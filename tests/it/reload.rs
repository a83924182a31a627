//! Reload while requests flow: in-place edits, atomic renames, a Kubernetes ConfigMap symlink
//! swap and a broken file. No request may fail, and no decision may mix two revisions.
//!
//! The policy of generation N allows only subjects whose identity record says `generation: N`,
//! with reason `policy N`. A decision made on policy N with the identity data of another
//! generation would be a deny, so every answer must be `allow` with a reason that matches its
//! revision one-to-one.

use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::util::{TestServer, eval_request, wait_for};

fn policy(n: u32) -> String {
    format!(
        "policy: gen\napplies_to: {{ actions: [read] }}\nrules:\n  - name: same-generation\n    when: principal.attributes.generation == {n}\n    effect: allow\n    reason: policy {n}\n"
    )
}

fn identity(n: u32) -> String {
    serde_json::json!({"version": 1, "users": [{"id": "alice", "attributes": {"generation": n}}],
        "groups": [], "apps": [], "entitlements": [], "accounts": [], "grants": []})
    .to_string()
}

/// What one client saw: (revision, reason, decision, status) per request.
type Seen = Vec<(String, String, bool, u16)>;

struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Seen>>,
}

fn start_load(server: &TestServer, clients: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads = (0..clients)
        .map(|_| {
            let stop = stop.clone();
            let sent = sent.clone();
            let mut c = server.client();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let started = std::time::Instant::now();
                // Bounded: stops when told, or after 60 s whatever happens.
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                    let r = c.post_json("/access/v1/evaluation", &eval_request("alice", "read", "doc", "d1"));
                    sent.fetch_add(1, Ordering::Relaxed);
                    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                    seen.push((
                        v["context"]["revision"].as_str().unwrap_or_default().to_owned(),
                        v["context"]["reason"].as_str().unwrap_or_default().to_owned(),
                        v["decision"].as_bool().unwrap_or(false),
                        r.status,
                    ));
                }
                seen
            })
        })
        .collect();
    Load { stop, sent, threads }
}

impl Load {
    /// Stops the clients and checks every answer; returns the reasons seen, in order of first use.
    fn finish(self) -> Vec<String> {
        // Slow machines send fewer requests in the same time: keep the load on until enough
        // requests crossed the reloads (bounded by the clients' own 60 s limit).
        let sent = self.sent.clone();
        wait_for(Duration::from_secs(50), || sent.load(Ordering::Relaxed) > 50);
        self.stop.store(true, Ordering::Relaxed);
        let mut by_revision: HashMap<String, String> = HashMap::new();
        let mut reasons = Vec::new();
        let mut total = 0;
        for t in self.threads {
            for (revision, reason, allow, status) in t.join().unwrap() {
                total += 1;
                assert_eq!(status, 200, "a request failed during reload");
                assert!(allow, "revision {revision} decided with mixed inputs (reason {reason:?})");
                let first = by_revision.entry(revision.clone()).or_insert_with(|| reason.clone());
                assert_eq!(*first, reason, "revision {revision} gave two different answers");
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
        }
        assert!(total > 50, "only {total} requests were sent");
        reasons
    }
}

fn current_reason(server: &TestServer) -> String {
    let v = server.client().post_json("/access/v1/evaluation", &eval_request("alice", "read", "doc", "d1")).json();
    v["context"]["reason"].as_str().unwrap_or_default().to_owned()
}

fn config(dir: &Path, policies: &str, identity: &str) -> std::path::PathBuf {
    let path = dir.join("verdict.toml");
    std::fs::write(
        &path,
        format!("[policies]\ndir = \"{policies}\"\n[identity]\nfile = \"{identity}\"\n[reload]\ndebounce_ms = 20\n"),
    )
    .unwrap();
    path
}

#[test]
fn edits_and_atomic_renames_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir(root.join("policies")).unwrap();
    std::fs::create_dir(root.join("identity")).unwrap();
    // Only the policy's reason changes here; the identity stays at generation 1, so every
    // answer must still be an allow.
    std::fs::write(root.join("identity/users.json"), identity(1)).unwrap();
    std::fs::write(root.join("policies/gen.yaml"), policy(1)).unwrap();
    let cfg = config(&root, "policies", "identity/users.json");
    let server = TestServer::start(&cfg, dir, &[]);
    let load = start_load(&server, 4);

    for (i, text) in (2..=6).map(|n| (n, policy(1).replace("reason: policy 1", &format!("reason: policy 1 edit {n}")))) {
        let target = root.join("policies/gen.yaml");
        if i % 2 == 0 {
            // In-place edit (truncate + write): a reload may catch a half-written file, which
            // must fail and keep the old snapshot, never serve a partial policy.
            std::fs::write(&target, &text).unwrap();
        } else {
            // Editor-style atomic save: write a temp file, rename over.
            let tmp = root.join("policies/.gen.yaml.swp");
            std::fs::write(&tmp, &text).unwrap();
            std::fs::rename(&tmp, &target).unwrap();
        }
        let want = format!("policy 1 edit {i}");
        wait_for(Duration::from_secs(5), || current_reason(&server) == want);
    }
    let reasons = load.finish();
    assert!(reasons.len() >= 2, "{reasons:?}");
}

#[test]
fn configmap_symlink_swap_changes_policy_and_identity_together() {
    let dir = tempfile::tempdir().unwrap();
    let cm = dir.path().join("cm");
    std::fs::create_dir(&cm).unwrap();
    let write_generation = |n: u32| {
        let data = cm.join(format!("..2026_11_25_{n:02}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("gen.yaml"), policy(n)).unwrap();
        std::fs::write(data.join("users.json"), identity(n)).unwrap();
        let tmp = cm.join("..data_tmp");
        symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, cm.join("..data")).unwrap();
        if n > 1 {
            std::fs::remove_dir_all(cm.join(format!("..2026_11_25_{:02}", n - 1))).unwrap();
        }
    };
    write_generation(1);
    symlink("..data/gen.yaml", cm.join("gen.yaml")).unwrap();
    symlink("..data/users.json", cm.join("users.json")).unwrap();
    let cfg = config(dir.path(), "cm", "cm/users.json");
    let server = TestServer::start(&cfg, dir, &[]);
    assert_eq!(current_reason(&server), "policy 1");

    let load = start_load(&server, 4);
    for n in 2..=5 {
        write_generation(n);
        wait_for(Duration::from_secs(5), || current_reason(&server) == format!("policy {n}"));
    }
    let reasons = load.finish();
    assert!(reasons.contains(&"policy 5".to_owned()), "{reasons:?}");
}

#[test]
fn a_broken_file_keeps_the_old_snapshot_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir(root.join("policies")).unwrap();
    std::fs::write(root.join("users.json"), identity(1)).unwrap();
    std::fs::write(root.join("policies/gen.yaml"), policy(1)).unwrap();
    let cfg = config(&root, "policies", "users.json");
    let server = TestServer::start(&cfg, dir, &[]);
    let load = start_load(&server, 2);

    std::fs::write(root.join("policies/gen.yaml"), "policy: gen\nrules:\n  - name: x\n    when: 'principal.'\n    effect: allow\n").unwrap();
    let mut admin = server.admin_client();
    wait_for(Duration::from_secs(5), || {
        let s = admin.get("/v1/status").json();
        s["last_reload"]["ok"] == false
    });
    let status = admin.get("/v1/status").json();
    let error = status["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains("gen.yaml:4") && error.contains("rule `x`"), "{error}");
    let metrics = String::from_utf8(admin.get("/metrics").body).unwrap();
    assert!(metrics.contains("verdict_reloads_total{trigger=\"file\",result=\"error\"}"), "{metrics}");
    assert_eq!(current_reason(&server), "policy 1");
    // An explicit reload reports the same error and changes nothing.
    let r = admin.request("POST", "/v1/reload", &[], b"");
    assert_eq!(r.status, 422);
    assert!(r.json()["message"].as_str().unwrap().contains("previous snapshot keeps serving"));

    std::fs::write(root.join("policies/gen.yaml"), policy(1).replace("policy 1", "policy 1 fixed")).unwrap();
    wait_for(Duration::from_secs(5), || current_reason(&server) == "policy 1 fixed");
    load.finish();
}

#[test]
fn sighup_and_admin_reload_when_not_watching() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir(root.join("policies")).unwrap();
    std::fs::write(root.join("users.json"), identity(1)).unwrap();
    std::fs::write(root.join("policies/gen.yaml"), policy(1)).unwrap();
    let cfg = config(&root, "policies", "users.json");
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("debounce_ms = 20", "watch = false")).unwrap();
    let server = TestServer::start(&cfg, dir, &[]);

    std::fs::write(root.join("policies/gen.yaml"), policy(1).replace("policy 1", "via signal")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(current_reason(&server), "policy 1", "the watcher is off");
    std::process::Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    wait_for(Duration::from_secs(5), || current_reason(&server) == "via signal");

    std::fs::write(root.join("policies/gen.yaml"), policy(1).replace("policy 1", "via admin")).unwrap();
    let r = server.admin_client().request("POST", "/v1/reload", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(current_reason(&server), "via admin");
}

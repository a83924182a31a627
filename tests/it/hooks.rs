//! Hooks through the real server: the provisioning cost check against a stand-in billing API,
//! hostile hooks (each ends in the rule's `on_error` within its deadline and is logged while
//! other requests keep being answered), secrets redaction, and versions: deploy, reject,
//! rollback, and 100 deploys under load.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{TestServer, TlsFront, copy_dir, eval_request, log_records, repo, wait_for};

/// The stand-in billing API (examples/provisioning/billing_standin.py) on a free port.
struct Billing {
    child: Child,
    port: u16,
}

impl Billing {
    fn start(data_dir: &std::path::Path) -> Billing {
        let mut child = Command::new("python3")
            .arg(data_dir.join("billing_standin.py"))
            .arg("0")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port = line.trim().rsplit('=').next().unwrap().parse().unwrap();
        Billing { child, port }
    }
}

impl Drop for Billing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provisioning() -> (TestServer, Billing) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("examples/provisioning"), dir.path());
    let billing = Billing::start(dir.path());
    let cfg = dir.path().join("verdict.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("127.0.0.1:9300", &format!("127.0.0.1:{}", billing.port));
    std::fs::write(&cfg, text).unwrap();
    (TestServer::start(&cfg, dir, &["--decision-log", "decisions.log"]), billing)
}

fn request_file(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(repo().join("examples/provisioning/requests").join(name)).unwrap()).unwrap()
}

/// The cost check with the billing API behind HTTPS, from a CA that only the hook's
/// `ca_file` trusts: the fetch verifies the certificate and decides; without the CA the
/// handshake fails, and the rule's `on_error` denies with the cause.
#[test]
fn hook_fetch_over_https_trusts_the_configured_ca_only() {
    let billing_dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("examples/provisioning"), billing_dir.path());
    let billing = Billing::start(billing_dir.path());
    let front = TlsFront::start(billing.port);
    let server = |trust: bool| {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("examples/provisioning"), dir.path());
        std::fs::write(dir.path().join("billing-ca.pem"), &front.ca_pem).unwrap();
        let cfg = dir.path().join("verdict.toml");
        // Generous limits: the binary under test is a debug build, whose TLS is slow.
        let mut text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("http://127.0.0.1:9300", &format!("https://127.0.0.1:{}", front.port))
            .replace("127.0.0.1:9300", &format!("127.0.0.1:{}", front.port))
            .replace("deadline_ms = 500", "deadline_ms = 5000")
            .replace("fetch_timeout_ms = 300", "fetch_timeout_ms = 4000");
        if trust {
            text = text.replace("fetch_timeout_ms = 4000", "fetch_timeout_ms = 4000\nca_file = \"billing-ca.pem\"");
        }
        assert!(text.contains(&format!("https://127.0.0.1:{}", front.port)) && text.contains("deadline_ms = 5000"));
        std::fs::write(&cfg, text).unwrap();
        TestServer::start(&cfg, dir, &["--decision-log", "decisions.log"])
    };

    let trusted = server(true);
    let v = trusted.client().post_json("/access/v1/evaluation", &request_file("hook-allow.json")).json();
    assert_eq!(v["decision"], true, "{v}");
    assert!(v["context"]["decided_by"].as_str().unwrap().starts_with("hook:cost-threshold@"), "{v}");
    assert_eq!(v["context"]["outputs"]["remaining"], json!(1180));

    let untrusted = server(false);
    let v = untrusted.client().post_json("/access/v1/evaluation", &request_file("hook-allow.json")).json();
    assert_eq!(v["decision"], false, "{v}");
    assert_eq!(v["context"]["decided_by"], "error", "{v}");
    let errors = v["context"]["errors"].to_string();
    assert!(errors.contains("tls") && errors.contains("certificate"), "{v}");
    drop(billing);
}

#[test]
fn cost_threshold_hook_decides_with_the_billing_api() {
    let (server, billing) = provisioning();
    let mut c = server.client();
    let r = c.post_json("/access/v1/evaluation", &request_file("hook-allow.json"));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["decision"], true, "{v}");
    let by = v["context"]["decided_by"].as_str().unwrap();
    assert!(by.starts_with("hook:cost-threshold@"), "{by}");
    assert_eq!(v["context"]["outputs"]["remaining"], json!(1180));

    // The record names the hook version and carries its log line and timings.
    let records = log_records(&server.log_path());
    let rec = records.iter().find(|r| r["id"] == v["context"]["decision_id"]).unwrap();
    assert_eq!(rec["hooks"][0]["name"], "cost-threshold");
    assert_eq!(format!("hook:cost-threshold@{}", rec["hooks"][0]["version"].as_str().unwrap()), by);
    assert!(rec["timings"]["hooks_us"].as_u64().unwrap() > 0);

    // CEL still decides the easy cases without the hook.
    let cel = c.post_json("/access/v1/evaluation", &request_file("cel-allow.json")).json();
    assert_eq!(cel["context"]["decided_by"], "rule:provisioning/tiny-resources");

    // Over budget: a deny with the hook's reason.
    let mut over = request_file("hook-allow.json");
    over["resource"]["properties"]["project"] = json!("proj-beta");
    let v = c.post_json("/access/v1/evaluation", &over).json();
    assert_eq!(v["decision"], false);
    assert!(v["context"]["reason"].as_str().unwrap().contains("over budget"), "{v}");

    // Billing down: the hook fails, the rule's on_error (deny) applies, with the cause.
    drop(billing);
    let v = c.post_json("/access/v1/evaluation", &request_file("hook-allow.json")).json();
    assert_eq!(v["decision"], false);
    assert_eq!(v["context"]["decided_by"], "error");
    assert!(!v["context"]["errors"].as_array().unwrap().is_empty(), "{v}");
}

fn hostile() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("tests/fixtures/hostile"), dir.path());
    let cfg = dir.path().join("verdict.toml");
    TestServer::start(&cfg, dir, &["--decision-log", "decisions.log"])
}

fn ask(c: &mut crate::util::Client, action: &str) -> (Value, Duration) {
    let started = Instant::now();
    let r = c.post_json("/access/v1/evaluation", &eval_request("anyone", action, "thing", "t1"));
    assert_eq!(r.status, 200, "{action}: {}", String::from_utf8_lossy(&r.body));
    (r.json(), started.elapsed())
}

#[test]
fn hostile_hooks_end_in_on_error_and_others_keep_being_answered() {
    let server = hostile();
    // Meanwhile, CEL-decided requests must keep flowing, each answered quickly.
    let stop = Arc::new(AtomicBool::new(false));
    let bystander = {
        let stop = stop.clone();
        let mut c = server.client();
        std::thread::spawn(move || {
            let (mut n, mut slowest) = (0, Duration::ZERO);
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                let (v, took) = ask(&mut c, "ping");
                assert_eq!(v["decision"], true);
                slowest = slowest.max(took);
                n += 1;
            }
            (n, slowest)
        })
    };
    let mut c = server.client();
    // (action, deadline in ms, what the error must mention)
    let cases = [
        ("loop", 100, "timed out"),
        ("regex", 100, ""),
        ("membomb", 2000, ""),
        ("recursion", 1000, ""),
        ("throw42", 50, "42"),
        ("shape", 50, "decision"),
        ("huge", 50, ""),
        ("evil-eval", 50, ""),
        ("fetcher", 50, "example.com"),
    ];
    for (action, deadline, needle) in cases {
        let (v, took) = ask(&mut c, action);
        assert_eq!(v["decision"], false, "{action}: {v}");
        assert_eq!(v["context"]["decided_by"], "error", "{action}: {v}");
        let errors = v["context"]["errors"].to_string();
        assert!(errors.to_lowercase().contains(needle), "{action}: {errors}");
        assert!(took < Duration::from_millis(deadline + 1500), "{action} took {took:?}");
        let records = log_records(&server.log_path());
        let rec = records.iter().find(|r| r["id"] == v["context"]["decision_id"]).unwrap();
        assert!(rec["hooks"][0]["error"].is_string(), "{action}: {rec}");
    }
    // Prototype pollution and global writes fail, and leave nothing for the next call.
    for action in ["pollute", "globals"] {
        let (v, _) = ask(&mut c, action);
        assert_eq!(v["context"]["decided_by"], "error", "{action}: {v}");
    }
    for _ in 0..4 {
        let (v, _) = ask(&mut c, "clean");
        assert_eq!(v["decision"], true, "state leaked between calls: {v}");
    }
    // `on_error: skip` goes on with the next rule.
    let (v, _) = ask(&mut c, "skip");
    assert_eq!(v["context"]["decided_by"], "rule:hostile/after-skip", "{v}");

    stop.store(true, Ordering::Relaxed);
    let (n, slowest) = bystander.join().unwrap();
    assert!(n > 20, "only {n} bystander requests were answered");
    assert!(slowest < Duration::from_secs(3), "a bystander waited {slowest:?}");
}

#[test]
fn secrets_never_leave_the_hook() {
    let server = hostile();
    let secret = "s3cr3t-value-8841";
    let mut c = server.client();
    let (v, _) = ask(&mut c, "leak");
    assert_eq!(v["decision"], true, "{v}");
    let (e, _) = ask(&mut c, "leak-error");
    assert_eq!(e["context"]["decided_by"], "error");
    for body in [v.to_string(), e.to_string(), std::fs::read_to_string(server.log_path()).unwrap(), server.stderr()] {
        assert!(!body.contains(secret), "secret leaked: {body}");
    }
    assert!(v.to_string().contains("[redacted]"), "{v}");
}

#[test]
fn admin_deploys_rejects_and_rolls_back_versions() {
    let server = hostile();
    let mut admin = server.admin_client();
    let mut c = server.client();
    let (before, _) = ask(&mut c, "clean");
    let v1 = before["context"]["decided_by"].as_str().unwrap().to_owned();

    let deny = "export default function decide() { return { decision: false, reason: 'v2 says no' }; }";
    let r = admin.request("PUT", "/v1/hooks/clean", &[("content-type", "text/plain")], deny.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v2 = r.json()["deployment"]["version"].as_str().unwrap().to_owned();
    let (after, _) = ask(&mut c, "clean");
    assert_eq!(after["context"]["reason"], "v2 says no");
    assert_eq!(after["context"]["decided_by"], format!("hook:clean@{v2}"));

    // A version that does not compile is rejected with the compiler's message; v2 keeps serving.
    let bad = "export default function decide( { return {";
    let r = admin.request("PUT", "/v1/hooks/clean", &[("content-type", "text/plain")], bad.as_bytes());
    assert_eq!(r.status, 422);
    assert!(r.json()["message"].as_str().unwrap().contains("clean.ts:1:"), "{}", r.json());
    assert_eq!(ask(&mut c, "clean").0["context"]["reason"], "v2 says no");

    let history = admin.get("/v1/hooks/clean/versions").json();
    let how: Vec<&str> = history["deployments"].as_array().unwrap().iter().map(|d| d["how"].as_str().unwrap()).collect();
    assert_eq!(how, ["file", "admin"]);
    let source = admin.get(&format!("/v1/hooks/clean/versions/{v2}"));
    assert_eq!(String::from_utf8(source.body).unwrap(), deny);

    let r = admin.request("POST", "/v1/hooks/clean/rollback", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(ask(&mut c, "clean").0["context"]["decided_by"].as_str().unwrap(), v1);
    let listed = admin.get("/v1/hooks").json();
    assert!(listed["hooks"].as_array().unwrap().iter().any(|h| h["name"] == "clean"));
}

#[test]
fn a_hundred_deploys_under_load_fail_no_request() {
    let server = hostile();
    let hook_file = server.dir.path().join("hooks/clean.ts");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            let mut c = server.client();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(90) {
                    let begun = Instant::now();
                    let r = c.post_json("/access/v1/evaluation", &eval_request("anyone", "clean", "thing", "t"));
                    assert_eq!(r.status, 200);
                    let v = r.json();
                    assert_ne!(v["context"]["decided_by"], "error", "{v}");
                    seen.push((begun, v["context"]["decided_by"].as_str().unwrap().to_owned()));
                }
                seen
            })
        })
        .collect();
    let mut admin = server.admin_client();
    // Versions that went live, with when they did (a decision may use a version only after it
    // was deployed, never one that was rejected).
    let mut live: Vec<(Instant, String)> = Vec::new();
    for i in 0..100 {
        let source = format!("export default function decide() {{ return {{ decision: true, reason: 'v{i}' }}; }}");
        let deployed_at = Instant::now();
        if i % 10 == 9 {
            let bad = format!("export default function decide() {{ return {{ decision: true, reason: 'v{i}' }} ");
            let r = admin.request("PUT", "/v1/hooks/clean", &[], bad.as_bytes());
            assert_eq!(r.status, 422, "an invalid version was accepted");
        } else if i % 2 == 0 {
            let r = admin.request("PUT", "/v1/hooks/clean", &[], source.as_bytes());
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            live.push((deployed_at, r.json()["deployment"]["version"].as_str().unwrap().to_owned()));
        } else {
            std::fs::write(&hook_file, &source).unwrap();
            let want = format!("v{i}");
            wait_for(Duration::from_secs(5), || {
                let v = server.client().post_json("/access/v1/evaluation", &eval_request("a", "clean", "thing", "t")).json();
                v["context"]["reason"] == want.as_str()
            });
            let version = crate::util::version_of(&source);
            live.push((deployed_at, version));
        }
    }
    // Rollback restores the previous behaviour: v98 (admin) was last, v97 (file) before it.
    let r = admin.request("POST", "/v1/hooks/clean/rollback", &[], b"");
    assert_eq!(r.status, 200);
    let v = server.client().post_json("/access/v1/evaluation", &eval_request("a", "clean", "thing", "t")).json();
    assert_eq!(v["context"]["reason"], "v97");
    stop.store(true, Ordering::Relaxed);
    let original = crate::util::version_of(&std::fs::read_to_string(repo().join("tests/fixtures/hostile/hooks/clean.ts")).unwrap());
    let mut total = 0;
    for t in clients {
        for (begun, by) in t.join().unwrap() {
            total += 1;
            let version = by.rsplit('@').next().unwrap().to_owned();
            let ok = version == original
                || live.iter().any(|(at, v)| *v == version && *at <= begun + Duration::from_millis(1));
            assert!(ok, "a decision used version {version}, which was not live when it started");
        }
    }
    assert!(total > 100, "only {total} requests during the deploys");
}

#[test]
fn a_full_hook_queue_fails_fast_with_503() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("tests/fixtures/hostile"), dir.path());
    let cfg = dir.path().join("verdict.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("workers = 2", "workers = 1\nqueue_capacity = 1")
        .replace("[hook.loop]\ndeadline_ms = 100", "[hook.loop]\ndeadline_ms = 1500");
    std::fs::write(&cfg, text).unwrap();
    let server = TestServer::start(&cfg, dir, &["--decision-log", "decisions.log"]);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut c = server.client();
            std::thread::spawn(move || {
                let started = Instant::now();
                let r = c.post_json("/access/v1/evaluation", &eval_request("a", "loop", "thing", "t"));
                (r.status, r.header("retry-after").map(str::to_owned), String::from_utf8_lossy(&r.body).into_owned(), started.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert!(!refused.is_empty(), "no request was refused: {results:?}");
    for (_, retry, body, took) in &refused {
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(body.contains("hook queue is full"), "{body}");
        assert!(*took < Duration::from_millis(1000), "a refusal waited {took:?} (the hook runs 1500 ms)");
    }
    let metrics = String::from_utf8(server.admin_client().get("/metrics").body).unwrap();
    assert!(metrics.contains("verdict_hook_overloaded_total"), "{metrics}");
    assert!(metrics.contains("verdict_hook_calls_total{result=\"queue_full\"}"), "{metrics}");
}

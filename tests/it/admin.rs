//! The admin listener: health, readiness, metrics, status, reload, and its token rule.

use crate::util::{TestServer, bin, eval_request, repo};

#[test]
fn health_metrics_and_status() {
    let server = TestServer::example("access-requests");
    let req = serde_json::from_slice(&std::fs::read(repo().join("examples/access-requests/requests/morty-github-admin.json")).unwrap()).unwrap();
    let r = server.client().post_json("/access/v1/evaluation", &req);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["decision"], false);
    let mut admin = server.admin_client();
    assert_eq!(admin.get("/healthz").status, 200);
    assert_eq!(admin.get("/readyz").json()["ready"], true);
    let metrics = String::from_utf8(admin.get("/metrics").body).unwrap();
    assert!(metrics.contains("verdict_decisions_total{decided_by=\"default\",decision=\"deny\"} 1"), "{metrics}");
    assert!(metrics.contains("verdict_http_requests_total{route=\"evaluation\",status=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("verdict_decision_log_records_total 1"), "{metrics}");
    assert!(metrics.contains("verdict_decision_log_groups_total 1"), "{metrics}");
    let status = admin.get("/v1/status").json();
    assert_eq!(status["revision"], r.json()["context"]["revision"]);
    assert_eq!(status["identity"]["counts"]["users"], 6);
    assert_eq!(status["policies"]["count"], 1);
    assert_eq!(status["last_reload"]["trigger"], "startup");
}

#[test]
fn a_token_guards_everything_but_probes() {
    let dir = tempfile::tempdir().unwrap();
    crate::util::copy_dir(&repo().join("examples/provisioning"), dir.path());
    let cfg = dir.path().join("verdict.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("[admin]\n", "[admin]\ntoken = \"s3cret\"\n");
    std::fs::write(&cfg, text).unwrap();
    let server = TestServer::start(&cfg, dir, &[]);
    let mut admin = server.admin_client();
    assert_eq!(admin.get("/healthz").status, 200);
    let r = admin.get("/v1/status");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(admin.request("GET", "/v1/status", &[("authorization", "Bearer wrong")], b"").status, 401);
    assert_eq!(admin.request("GET", "/v1/status", &[("authorization", "Bearer s3cret")], b"").status, 200);
    assert_eq!(admin.request("POST", "/v1/reload", &[], b"").status, 401);
    // The decision API is not affected by the admin token.
    assert_eq!(server.client().post_json("/access/v1/evaluation", &eval_request("u", "a", "t", "r")).status, 200);
}

#[test]
fn a_non_loopback_admin_address_needs_a_token() {
    let out = std::process::Command::new(bin())
        .args(["serve", "--config", "examples/provisioning/verdict.toml", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.listen") && err.contains("admin.token"), "{err}");
}

//! Identity synced from a real SCIM 2.0 server (`scim2-server` 0.8.3 from PyPI, installed by
//! `.ci/run` into `target/scim-venv`), through a real `verdict serve`: users and groups change
//! upstream mid-test and decisions follow after the next sync; the upstream goes away and
//! decisions keep flowing on the last good data, marked stale; a subject created between
//! syncs is found through the read-through cache; a broken payload never replaces good data.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{TestServer, TlsFront, eval_request, log_records, repo, wait_for};

const TOKEN: &str = "scim-test-token";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// `$SCIM2_SERVER`, else the venv `.ci/run` creates, else `scim2-server` on `PATH`.
fn scim_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SCIM2_SERVER") {
        return PathBuf::from(p);
    }
    let venv = repo().join("target/scim-venv/bin/scim2-server");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("scim2-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "scim2-server is not installed: run `bash .ci/run`, or \
                 `python3 -m venv target/scim-venv && target/scim-venv/bin/pip install 'scim2-server[cursor]==0.8.3'`"
            )
        })
}

/// A running scim2-server on 127.0.0.1, killed on drop.
struct Scim {
    child: Child,
    port: u16,
}

impl Drop for Scim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Scim {
    fn start(port: u16) -> Scim {
        let child = Command::new(scim_binary())
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string(), "--bearer-token", TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start scim2-server");
        let scim = Scim { child, port };
        wait_for(Duration::from_secs(15), || scim.try_send("GET", "/v2/ServiceProviderConfig", None).is_ok_and(|(s, _)| s == 200));
        scim
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v2", self.port)
    }

    fn try_send(&self, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
        http(self.port, method, path, body, Some(TOKEN))
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, body) = self.try_send(method, path, body).unwrap();
        assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
        body
    }

    /// Creates a user and returns its SCIM id.
    fn user(&self, name: &str, active: bool) -> String {
        let body = json!({"schemas": [USER], "userName": name, "active": active,
            "emails": [{"value": format!("{name}@example.com"), "primary": true}],
            "name": {"givenName": name}});
        self.send("POST", "/v2/Users", Some(&body))["id"].as_str().unwrap().to_owned()
    }

    fn group(&self, name: &str, members: &[&str]) -> String {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m, "type": "User"})).collect();
        let body = json!({"schemas": [GROUP], "displayName": name, "members": members});
        self.send("POST", "/v2/Groups", Some(&body))["id"].as_str().unwrap().to_owned()
    }

    fn patch_members(&self, group: &str, op: &str, user: &str) {
        let body = match op {
            "add" => json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": user}]}]}),
            _ => json!({"schemas": [PATCH], "Operations": [{"op": "remove", "path": format!("members[value eq \"{user}\"]")}]}),
        };
        self.send("PATCH", &format!("/v2/Groups/{group}"), Some(&body));
    }
}

/// One HTTP/1.1 exchange on a fresh connection (scim2-server answers HTTP/1.0 and closes).
fn http(port: u16, method: &str, path: &str, body: Option<&Value>, token: Option<&str>) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/scim+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

const POLICY: &str = r#"policy: docs
applies_to:
  resource_types: [doc]
default: deny
rules:
  - name: admins-write
    when: action.name == 'write' && 'admins' in principal.groups
    effect: allow
  - name: active-read
    when: action.name == 'read' && principal.found && has(principal.status) && principal.status == 'enabled'
    effect: allow
  - name: licensed-use
    when: action.name == 'use' && identity.hasEntitlement(subject.id, 'figma', 'editor')
    effect: allow
"#;

/// The file's part: an app, an entitlement, and accounts owned by file users that name people
/// by email only (SCIM ids are unknown to the file); plus a service identity SCIM cannot carry.
const IDENTITY: &str = r#"{
  "version": 1,
  "users": [
    {"id": "file-alice", "email": "alice@example.com", "type": "human"},
    {"id": "file-gone", "email": "gone@example.com"},
    {"id": "svc-ci", "username": "ci-bot", "type": "service"}
  ],
  "apps": [{"id": "figma", "name": "Figma"}],
  "entitlements": [{"id": "figma-editor", "app_id": "figma", "slug": "editor", "name": "Editor"}],
  "accounts": [
    {"id": "acct-alice", "app_id": "figma", "user_id": "file-alice"},
    {"id": "acct-gone", "app_id": "figma", "user_id": "file-gone"},
    {"id": "acct-ci", "app_id": "figma", "user_id": "svc-ci"}
  ],
  "grants": [
    {"account_id": "acct-alice", "entitlement_id": "figma-editor"},
    {"account_id": "acct-gone", "entitlement_id": "figma-editor"},
    {"account_id": "acct-ci", "entitlement_id": "figma-editor"}
  ]
}"#;

/// A deployment directory: policy, identity file, the token as a secret file, and a config
/// pointing at `base_url` with `extra` lines appended to `[identity.scim]`.
fn deployment(base_url: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("policies")).unwrap();
    std::fs::create_dir_all(d.join("secrets")).unwrap();
    std::fs::write(d.join("policies/docs.yaml"), POLICY).unwrap();
    std::fs::write(d.join("identity.json"), IDENTITY).unwrap();
    std::fs::write(d.join("secrets/SCIM_TOKEN"), format!("{TOKEN}\n")).unwrap();
    let config = d.join("verdict.toml");
    std::fs::write(
        &config,
        format!(
            "[policies]\ndir = \"policies\"\n[hooks]\ndir = \"hooks\"\nstate_dir = \"state\"\nsecrets_dir = \"secrets\"\n\
             [identity]\nfile = \"identity.json\"\n[identity.scim]\nbase_url = \"{base_url}\"\n\
             token_secret = \"SCIM_TOKEN\"\n{extra}\n"
        ),
    )
    .unwrap();
    (dir, config)
}

fn start(dir: tempfile::TempDir, config: &Path) -> TestServer {
    TestServer::start(config, dir, &["--decision-log", "decisions.log"])
}

fn allowed(server: &TestServer, subject: &str, action: &str) -> bool {
    let r = server.client().post_json("/access/v1/evaluation", &eval_request(subject, action, "doc", "d1"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["decision"].as_bool().unwrap()
}

fn status(server: &TestServer) -> Value {
    server.admin_client().get("/v1/status").json()
}

fn metric(server: &TestServer, line_start: &str) -> f64 {
    let text = String::from_utf8(server.admin_client().get("/metrics").body).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric `{line_start}` in\n{text}"))
}

#[test]
fn decisions_follow_scim_changes_and_survive_an_outage() {
    let port = free_port();
    let mut scim = Scim::start(port);
    let alice = scim.user("alice", true);
    let bob = scim.user("bob", true);
    let admins = scim.group("admins", &[&alice]);

    let (dir, config) = deployment(&scim.base_url(), "interval_ms = 300\nretry_min_ms = 100\nretry_max_ms = 300");
    let server = start(dir, &config);

    // The first sync happened before the listener opened.
    assert!(allowed(&server, "alice", "write"), "alice is in admins");
    assert!(!allowed(&server, "bob", "write"), "bob is not");
    assert!(allowed(&server, &bob, "read"), "bob by SCIM id, active");
    // The file's account joined to alice by email, so her SCIM id and username hold the grant.
    assert!(allowed(&server, &alice, "use"));
    assert!(allowed(&server, "alice@example.com", "use"));
    // A file person SCIM does not know is dropped; a service identity is kept.
    assert!(!allowed(&server, "file-gone", "use"));
    assert!(allowed(&server, "ci-bot", "use"));
    let s = status(&server);
    let merge = &s["identity"]["scim"]["merge"];
    assert_eq!(merge["matched"]["email"], 1, "{s}");
    assert_eq!(merge["dropped_users"], 1, "{s}");
    assert_eq!(merge["kept_non_human"], 1, "{s}");
    assert_eq!(s["identity"]["scim"]["stale"], false);

    // A user added upstream and put in admins: allowed after the next sync.
    let carol = scim.user("carol", true);
    scim.patch_members(&admins, "add", &carol);
    wait_for(Duration::from_secs(10), || allowed(&server, "carol", "write"));
    // A reload for another reason (here the admin API) rebuilds with the last synced data.
    let r = server.admin_client().request("POST", "/v1/reload", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(allowed(&server, "carol", "write"));
    // A user removed from the group: denied after the next sync.
    scim.patch_members(&admins, "remove", &alice);
    wait_for(Duration::from_secs(10), || !allowed(&server, "alice", "write"));
    // A user deleted upstream: no longer found, so no longer reads.
    scim.send("DELETE", &format!("/v2/Users/{bob}"), None);
    wait_for(Duration::from_secs(10), || !allowed(&server, &bob, "read"));

    let records = log_records(&server.log_path());
    let last = records.last().unwrap();
    assert_eq!(last["identity"]["source"], "scim", "{last}");
    assert_eq!(last["identity"]["stale"], false, "{last}");
    assert!(last["identity"]["synced_at"].is_string(), "{last}");
    assert_eq!(metric(&server, "verdict_identity_stale "), 0.0);
    assert!(metric(&server, "verdict_identity_syncs_total{result=\"ok\"}") >= 4.0);

    // Outage: decisions keep flowing on the last good data, marked stale everywhere.
    drop(scim);
    wait_for(Duration::from_secs(10), || status(&server)["identity"]["scim"]["stale"] == true);
    for _ in 0..20 {
        assert!(allowed(&server, "carol", "write"));
        assert!(!allowed(&server, "alice", "write"));
        assert!(allowed(&server, "alice", "use"));
    }
    let records = log_records(&server.log_path());
    let last = records.last().unwrap();
    assert_eq!(last["identity"]["stale"], true, "{last}");
    assert_eq!(metric(&server, "verdict_identity_stale "), 1.0);
    let s = status(&server);
    let health = &s["identity"]["scim"]["health"];
    assert!(health["consecutive_failures"].as_u64().unwrap() >= 1, "{s}");
    assert!(health["last_error"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")), "{s}");
    // Stale data counts as ready by default.
    let ready = server.admin_client().get("/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["identity_stale"], true);
    // The read-through cache does not ask a failing upstream.
    assert!(!allowed(&server, "nobody-new", "read"));
    assert!(metric(&server, "verdict_identity_lookups_total{result=\"skipped_stale\"}") >= 1.0);

    // The upstream comes back (empty, then with dave): the retry succeeds, data is fresh again.
    scim = Scim::start(port);
    let _dave = scim.user("dave", true);
    wait_for(Duration::from_secs(10), || status(&server)["identity"]["scim"]["stale"] == false);
    wait_for(Duration::from_secs(10), || allowed(&server, "dave", "read"));
    // carol is gone with the old server's data.
    assert!(!allowed(&server, "carol", "write"));
    drop(scim);
}

#[test]
fn subjects_created_between_syncs_are_read_through_a_cache() {
    let scim = Scim::start(free_port());
    scim.user("erin", true);
    // No periodic sync during the test: only the first one, then read-through.
    let (dir, config) = deployment(&scim.base_url(), "interval_ms = 600000\ncache_ttl_ms = 5000\nnegative_ttl_ms = 2500");
    let server = start(dir, &config);
    assert!(allowed(&server, "erin", "read"));

    // Unknown now: a miss, asked upstream once, then answered from the negative cache.
    assert!(!allowed(&server, "frank", "read"));
    let upstream = metric(&server, "verdict_identity_upstream_lookups_total");
    assert!(!allowed(&server, "frank", "read"));
    assert_eq!(metric(&server, "verdict_identity_upstream_lookups_total"), upstream, "negative entry cached");
    // Created upstream: found once the short negative entry expired, by username and by email.
    let frank = scim.user("frank", true);
    scim.group("admins", &[&frank]);
    wait_for(Duration::from_secs(10), || allowed(&server, "frank", "read"));
    assert!(allowed(&server, "frank@example.com", "read"));
    assert!(allowed(&server, &frank, "read"));
    let found = metric(&server, "verdict_identity_lookups_total{result=\"found\"}");
    assert!(found >= 3.0, "{found}");
    // A hit is cached: more requests, no more upstream lookups for it.
    let upstream = metric(&server, "verdict_identity_upstream_lookups_total");
    for _ in 0..10 {
        assert!(allowed(&server, "frank", "read"));
    }
    assert_eq!(metric(&server, "verdict_identity_upstream_lookups_total"), upstream);
    // Groups come only with full syncs: frank is in `admins` upstream, but a looked-up user
    // is in no group until the next sync.
    assert!(!allowed(&server, "frank", "write"));
    // Deleted upstream: still cached until the hit expires, then gone.
    scim.send("DELETE", &format!("/v2/Users/{frank}"), None);
    wait_for(Duration::from_secs(15), || !allowed(&server, "frank", "read"));
}

#[test]
fn an_unreachable_upstream_at_startup_is_not_ready_until_a_sync_succeeds() {
    let port = free_port();
    let (dir, config) = deployment(
        &format!("http://127.0.0.1:{port}/v2"),
        "interval_ms = 300\nretry_min_ms = 100\nretry_max_ms = 400\nstale_is_ready = false\ntimeout_ms = 2000",
    );
    let server = start(dir, &config);
    let ready = server.admin_client().get("/readyz");
    assert_eq!(ready.status, 503);
    assert!(ready.json()["reasons"][0].as_str().unwrap().contains("no successful scim sync"), "{}", ready.json());
    // Decisions still flow, from the identity file alone, marked stale.
    assert!(allowed(&server, "alice@example.com", "use"));
    let last = log_records(&server.log_path()).pop().unwrap();
    assert_eq!(last["identity"]["stale"], true);
    assert!(last["identity"].get("synced_at").is_none(), "{last}");

    let scim = Scim::start(port);
    scim.user("alice", true);
    wait_for(Duration::from_secs(10), || server.admin_client().get("/readyz").status == 200);
    assert!(allowed(&server, "alice", "use"));
    // With stale_is_ready = false, an outage makes the sidecar unready but still answering.
    drop(scim);
    wait_for(Duration::from_secs(10), || server.admin_client().get("/readyz").status == 503);
    assert!(allowed(&server, "alice", "use"));
}

/// The real SCIM server behind HTTPS, from a CA that only `ca_file` trusts: the sync
/// verifies the certificate and succeeds; without the CA it fails, naming TLS and the
/// certificate, and the sidecar is not ready.
#[test]
fn syncs_over_https_trusting_the_configured_ca() {
    let scim = Scim::start(free_port());
    scim.user("alice", true);
    let front = TlsFront::start(scim.port);
    let url = format!("https://127.0.0.1:{}/v2", front.port);

    let (dir, config) = deployment(&url, "ca_file = \"scim-ca.pem\"\ntimeout_ms = 10000");
    std::fs::write(dir.path().join("scim-ca.pem"), &front.ca_pem).unwrap();
    let server = start(dir, &config);
    assert!(allowed(&server, "alice", "use"));
    let s = status(&server);
    assert_eq!(s["identity"]["scim"]["stale"], false, "{s}");
    assert_eq!(s["identity"]["scim"]["data"]["users"], 1, "{s}");
    drop(server);

    let (dir, config) = deployment(&url, "stale_is_ready = false\nretry_min_ms = 100\nretry_max_ms = 200");
    let server = start(dir, &config);
    assert_eq!(server.admin_client().get("/readyz").status, 503);
    let s = status(&server);
    let error = s["identity"]["scim"]["health"]["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("tls") && error.contains("certificate"), "{s}");
}

/// A broken upstream payload (here from a static-file stand-in, since a real SCIM server
/// will not serve one) is reported with its URL and JSON path and never replaces good data.
#[test]
fn a_broken_payload_never_replaces_good_data() {
    let root = tempfile::tempdir().unwrap();
    let v2 = root.path().join("v2");
    std::fs::create_dir_all(&v2).unwrap();
    // Cursor paging: a static file without `nextCursor` is one complete page.
    std::fs::write(v2.join("ServiceProviderConfig"), r#"{"pagination": {"cursor": true}}"#).unwrap();
    let list = |users: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "Resources": users});
    let good = list(json!([{"id": "u1", "userName": "alice", "active": true, "emails": [{"value": "alice@example.com"}]}]));
    std::fs::write(v2.join("Users"), good.to_string()).unwrap();
    std::fs::write(v2.join("Groups"), list(json!([{"id": "g1", "displayName": "admins", "members": [{"value": "u1"}]}])).to_string())
        .unwrap();
    let port = free_port();
    let mut files = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), || http(port, "GET", "/v2/Users", None, None).is_ok_and(|(s, _)| s == 200));

    let (dir, config) = deployment(&format!("http://127.0.0.1:{port}/v2"), "interval_ms = 200\nretry_min_ms = 100\nretry_max_ms = 200");
    let server = start(dir, &config);
    assert!(allowed(&server, "alice", "write"));
    // This stand-in ignores `filter` and lists alice for any query: a read-through lookup of
    // an unknown subject must not take her record for it.
    assert!(!allowed(&server, "mallory", "read"));
    assert!(metric(&server, "verdict_identity_upstream_lookups_total") >= 1.0);
    let revision = status(&server)["revision"].clone();

    // Wrong type deep inside a record.
    let bad = list(json!([{"id": "u1", "userName": "alice", "active": "yes"}]));
    std::fs::write(v2.join("Users"), bad.to_string()).unwrap();
    wait_for(Duration::from_secs(10), || status(&server)["identity"]["scim"]["stale"] == true);
    let error = status(&server)["identity"]["scim"]["health"]["last_error"].as_str().unwrap().to_owned();
    assert!(error.contains(&format!("127.0.0.1:{port}/v2/Users")) && error.contains("active"), "{error}");
    assert!(allowed(&server, "alice", "write"), "the last good data keeps serving");
    assert_eq!(status(&server)["revision"], revision);

    // Two users with one id: the index refuses it, naming the upstream and the position.
    let dup = list(json!([{"id": "u1", "userName": "alice"}, {"id": "u1", "userName": "mallory"}]));
    std::fs::write(v2.join("Users"), dup.to_string()).unwrap();
    wait_for(Duration::from_secs(10), || {
        status(&server)["identity"]["scim"]["health"]["last_error"].as_str().is_some_and(|e| e.contains("duplicate id"))
    });
    let error = status(&server)["identity"]["scim"]["health"]["last_error"].as_str().unwrap().to_owned();
    assert!(error.contains(&format!("127.0.0.1:{port}/v2")) && error.contains("users[1]"), "{error}");
    assert!(allowed(&server, "alice", "write"));
    assert!(!allowed(&server, "mallory", "read"));
    assert_eq!(status(&server)["revision"], revision);

    // Fixed upstream: fresh again.
    std::fs::write(v2.join("Users"), good.to_string()).unwrap();
    wait_for(Duration::from_secs(10), || status(&server)["identity"]["scim"]["stale"] == false);
    let _ = files.kill();
    let _ = files.wait();
}

//! Bad input: each gets its status and a JSON error that names the problem, and the server
//! keeps serving.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::util::{Client, TestServer, eval_request};

const EVAL: &str = "/access/v1/evaluation";

#[track_caller]
fn expect_error(resp: crate::util::Response, status: u16, needle: &str) {
    assert_eq!(resp.status, status, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json();
    let message = v["message"].as_str().unwrap_or_default();
    assert!(v["error"].is_string(), "{v}");
    assert!(message.contains(needle), "message {message:?} lacks {needle:?}");
}

fn still_serving(server: &TestServer) {
    let ok = server.client().post_json(EVAL, &eval_request("u-bob", "provision", "cloud.vm", "vm"));
    assert_eq!(ok.status, 200);
}

#[test]
fn malformed_and_misshapen_json() {
    let server = TestServer::example("provisioning");
    let mut c = server.client();
    let json = [("content-type", "application/json")];
    expect_error(c.request("POST", EVAL, &json, b"{\"subject\":"), 400, "malformed JSON");
    expect_error(c.request("POST", EVAL, &json, b"[1,2]"), 400, "must be a JSON object");
    expect_error(c.request("POST", EVAL, &json, b""), 400, "malformed JSON");
    let mut v = eval_request("u", "a", "t", "r");
    v["subject"]["id"] = serde_json::json!(42);
    expect_error(c.post_json(EVAL, &v), 400, "subject.id: must be a string");
    let mut v = eval_request("u", "a", "t", "r");
    v.as_object_mut().unwrap().remove("action");
    expect_error(c.post_json(EVAL, &v), 400, "action: missing required member");
    let mut v = eval_request("u", "a", "t", "r");
    v["resource"]["properties"] = serde_json::json!("x");
    expect_error(c.post_json(EVAL, &v), 400, "resource.properties: must be an object");
    let mut v = eval_request("u", "a", "t", "r");
    v["context"] = serde_json::json!([1]);
    expect_error(c.post_json(EVAL, &v), 400, "context: must be an object");
    // Unknown members are ignored (AuthZEN §10.1.1).
    let mut v = eval_request("u-bob", "provision", "cloud.vm", "vm");
    v["subject"]["_note"] = serde_json::json!("ignored");
    v["extra"] = serde_json::json!({"x": 1});
    assert_eq!(c.post_json(EVAL, &v).status, 200);
    // Invalid UTF-8 inside a string.
    let mut raw = br#"{"subject":{"type":"user","id":""#.to_vec();
    raw.extend_from_slice(&[0xff, 0xfe]);
    raw.extend_from_slice(br#""},"action":{"name":"a"},"resource":{"type":"t","id":"r"}}"#);
    expect_error(c.request("POST", EVAL, &json, &raw), 400, "malformed JSON");
    still_serving(&server);
}

#[test]
fn content_type_size_and_depth_limits() {
    let server = TestServer::example("provisioning");
    let mut c = server.client();
    let body = serde_json::to_vec(&eval_request("u", "a", "t", "r")).unwrap();
    expect_error(c.request("POST", EVAL, &[("content-type", "text/plain")], &body), 415, "application/json");
    expect_error(Client::connect(server.addr).request("POST", EVAL, &[], &body), 415, "application/json");
    // A body declared larger than the limit is refused from its head. The test sends only the
    // head: the server answers and closes without reading the body, and a client still writing
    // 2 MiB into that connection could get a reset instead of the answer (it did, on a busy
    // machine, in 6 runs of 8).
    let mut big = Client::connect(server.addr);
    let head = format!("POST {EVAL} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", 2 << 20);
    big.send_raw(head.as_bytes()).unwrap();
    expect_error(big.read_response().unwrap(), 413, "exceeds");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    expect_error(c.request("POST", EVAL, &[("content-type", "application/json")], deep.as_bytes()), 400, "nesting");
    still_serving(&server);
}

/// A body sent in chunks, with no declared length, is held to the same limit as one with a
/// `content-length`: within it, it decides; past it, 413 as soon as the limit is crossed.
#[test]
fn chunked_bodies_are_decided_and_held_to_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    crate::util::copy_dir(&crate::util::repo().join("examples/provisioning"), dir.path());
    let config = dir.path().join("verdict.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("[server]\n", "[server]\nmax_body_bytes = 1024\n");
    std::fs::write(&config, text).unwrap();
    let server = TestServer::start(&config, dir, &[]);
    let head = format!("POST {EVAL} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
    let chunk = |bytes: &[u8]| [format!("{:x}\r\n", bytes.len()).as_bytes(), bytes, b"\r\n"].concat();

    // A request the rule allows, in three chunks.
    let body = std::fs::read(crate::util::repo().join("examples/provisioning/requests/cel-allow.json")).unwrap();
    let (a, rest) = body.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut ok = Client::connect(server.addr);
    ok.send_raw(&[head.as_bytes(), &chunk(a), &chunk(b), &chunk(c), b"0\r\n\r\n"].concat()).unwrap();
    let r = ok.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["decision"], true);

    // 600 + 600 bytes: the second chunk crosses the 1,024-byte limit. No terminating chunk is
    // sent, so the server has read everything the client wrote when it answers and closes.
    let mut big = Client::connect(server.addr);
    let filler = vec![b' '; 600];
    big.send_raw(&[head.as_bytes(), &chunk(&filler), &chunk(&filler)].concat()).unwrap();
    expect_error(big.read_response().unwrap(), 413, "exceeds");
    still_serving(&server);
}

#[test]
fn unknown_routes_and_methods() {
    let server = TestServer::example("provisioning");
    let mut c = server.client();
    expect_error(c.get("/nope"), 404, "/nope");
    let r = c.get(EVAL);
    assert_eq!(r.header("allow"), Some("POST"));
    expect_error(r, 405, "POST");
    expect_error(c.request("DELETE", "/.well-known/authzen-configuration", &[], b""), 405, "GET");
    still_serving(&server);
}

/// The provisioning example with these header and body timeouts.
fn server_with_timeouts(header_ms: u64, body_ms: u64) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    crate::util::copy_dir(&crate::util::repo().join("examples/provisioning"), dir.path());
    let config = dir.path().join("verdict.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[server]\n",
        &format!("[server]\nheader_read_timeout_ms = {header_ms}\nbody_read_timeout_ms = {body_ms}\n"),
    );
    std::fs::write(&config, text).unwrap();
    TestServer::start(&config, dir, &[])
}

#[test]
fn slow_clients_are_cut_off() {
    let server = server_with_timeouts(300, 300);

    // A head that never finishes: the connection is closed after the header timeout.
    let mut slow = Client::connect(server.addr);
    slow.send_raw(b"POST /access/v1/evaluation HTTP/1.1\r\nhost: x\r\n").unwrap();
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    std::io::Write::write_all(&mut stream, b"POST /access/v1/evaluation HTTP/1.1\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(3), "slow head was not cut off");

    // A body that never arrives: 408 after the body timeout.
    let mut c = Client::connect(server.addr);
    c.send_raw(b"POST /access/v1/evaluation HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"sub")
        .unwrap();
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 408);
    assert!(resp.json()["message"].as_str().unwrap().contains("not received"));
    still_serving(&server);
}

/// The header timeout also closes keep-alive connections left idle, but never one whose
/// request is still being handled, however long that takes.
#[test]
fn idle_connections_are_closed_but_requests_in_flight_are_not() {
    let server = server_with_timeouts(300, 5000);
    let body = std::fs::read(crate::util::repo().join("examples/provisioning/requests/cel-allow.json")).unwrap();

    // A request whose body arrives well after the header timeout is still answered.
    let mut slow_body = Client::connect(server.addr);
    let head = format!("POST {EVAL} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
    slow_body.send_raw(head.as_bytes()).unwrap();
    slow_body.send_raw(&body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(900));
    slow_body.send_raw(&body[10..]).unwrap();
    let resp = slow_body.read_response().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.json());

    // Then, idle on the same keep-alive connection: closed after the header timeout.
    let started = Instant::now();
    let closed = slow_body.read_response();
    assert!(closed.is_err(), "an idle connection got {:?}", closed.map(|r| r.status));
    assert!(started.elapsed() < Duration::from_secs(3), "idle connection was not closed");
    still_serving(&server);
}

#[test]
fn x_request_id_is_echoed_on_errors_too() {
    let server = TestServer::example("provisioning");
    let r = server.client().request("POST", EVAL, &[("content-type", "application/json"), ("x-request-id", "abc-1")], b"{");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-request-id"), Some("abc-1"));
}

/// Bodies that are valid but unusual decide as `serde_json` reads them: a repeated member
/// counts once, the last (`u-carol` is disabled, so her requests are denied by a rule; a
/// repeated `monthly_cost` decides which cost rule applies), an
/// escaped string is its text, a `null` context is no context; the record logs the bytes as
/// sent. A body nested one level deeper than `server.max_json_depth` (64) is refused even
/// though it is otherwise a valid request, and one at the limit is decided.
#[test]
fn unusual_valid_bodies_decide_as_parsed_and_the_depth_limit_holds() {
    let server = TestServer::example("provisioning");
    let mut c = server.client();
    let json = [("content-type", "application/json")];
    let rest = r#""action":{"name":"provision"},"resource":{"type":"cloud.vm","id":"vm-1","properties":{"project":"proj-alpha","monthly_cost":35.0}}"#;
    let bob = r#""subject":{"type":"user","id":"u-bob"}"#;
    let carol = r#""subject":{"type":"user","id":"u-carol"}"#;
    let decide = |c: &mut Client, body: &str| {
        let resp = c.request("POST", EVAL, &json, body.as_bytes());
        assert_eq!(resp.status, 200, "{body}: {}", String::from_utf8_lossy(&resp.body));
        resp.json()
    };
    let cases = [
        (format!("{{{bob},{rest}}}"), "rule:provisioning/tiny-resources"),
        (format!("{{{carol},{rest}}}"), "rule:provisioning/inactive-requester"),
        (format!("{{{bob},{carol},{rest}}}"), "rule:provisioning/inactive-requester"),
        (format!("{{{carol},{bob},{rest}}}"), "rule:provisioning/tiny-resources"),
        (format!(r#"{{"subject":{{"type":"user","id":"u-\u0063arol"}},{rest}}}"#), "rule:provisioning/inactive-requester"),
        (format!(r#"{{"subject":{{"type":"user","id":"u-carol","id":"u-bob"}},{rest},"context":null}}"#), "rule:provisioning/tiny-resources"),
        (format!(r#"{{{bob},{rest},"resource":{{"type":"cloud.vm","id":"vm-2","properties":{{"project":"p","monthly_cost":30000.0}}}}}}"#), "rule:provisioning/over-hard-cap"),
        (format!(r#"{{{bob},"action":{{"name":"provision"}},"resource":{{"type":"cloud.vm","id":"vm-3","properties":{{"monthly_cost":30000.0,"project":"p","monthly_cost":35.0}}}}}}"#), "rule:provisioning/tiny-resources"),
    ];
    for (body, decided_by) in &cases {
        let v = decide(&mut c, body);
        assert_eq!(v["context"]["decided_by"], *decided_by, "{body}");
        let records = crate::util::log_records(&server.log_path());
        let record = records.iter().find(|r| r["id"] == v["context"]["decision_id"]).unwrap();
        // The record's request is the body as sent (a JSON reader keeps the last of repeated keys).
        assert_eq!(record["request"], serde_json::from_str::<serde_json::Value>(body).unwrap(), "{body}");
    }
    let nested = |levels: usize| format!(r#"{{{bob},{rest},"context":{{"x":{}1{}}}}}"#, "[".repeat(levels), "]".repeat(levels));
    // Root, context, then the arrays: 64 levels in all is the limit.
    assert_eq!(decide(&mut c, &nested(62))["decision"], true);
    expect_error(c.request("POST", EVAL, &json, nested(63).as_bytes()), 400, "nesting exceeds the limit of 64");
    still_serving(&server);
}

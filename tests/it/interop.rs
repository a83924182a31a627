//! The public AuthZEN interop vectors (Todo and API gateway: 108 cases) against
//! `examples/authzen-todo`, by our own runner and by the reference runner in strict mode.

use serde_json::Value;

use crate::util::{TestServer, repo};

fn cases(file: &str) -> Value {
    let path = repo().join("tests/fixtures/authzen-interop/cases").join(file);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn todo_and_gateway_vectors_all_pass() {
    let server = TestServer::example("authzen-todo");
    let mut client = server.client();
    let (mut passed, mut failures) = (0, Vec::new());
    for file in ["todo/decisions-authorization-api-1_0-01.json", "todo/decisions-authorization-api-1_0-02.json", "gateway/decisions.json"] {
        let doc = cases(file);
        for (i, case) in doc["evaluation"].as_array().into_iter().flatten().enumerate() {
            let rid = format!("{file}-{i}");
            let body = serde_json::to_vec(&case["request"]).unwrap();
            let resp = client.request(
                "POST",
                "/access/v1/evaluation",
                &[("content-type", "application/json"), ("x-request-id", &rid)],
                &body,
            );
            let json = resp.json();
            let ok = resp.status == 200
                && json["decision"] == case["expected"]
                && resp.header("x-request-id") == Some(rid.as_str())
                && resp.header("content-type") == Some("application/json")
                && json["context"]["decision_id"].as_str() == resp.header("x-decision-id");
            if ok { passed += 1 } else { failures.push(format!("{file}[{i}]: {} {json}", resp.status)) }
        }
        for (i, case) in doc["evaluations"].as_array().into_iter().flatten().enumerate() {
            let resp = client.post_json("/access/v1/evaluations", &case["request"]);
            // Strict: the items must equal the expected items exactly (no extra members).
            if resp.status == 200 && resp.json()["evaluations"] == case["expected"] {
                passed += 1;
            } else {
                failures.push(format!("{file} batch[{i}]: {} {}", resp.status, resp.json()));
            }
        }
    }
    assert!(failures.is_empty(), "{} passed, {} failed:\n{}", passed, failures.len(), failures.join("\n"));
    assert_eq!(passed, 108);
}

#[test]
fn reference_runner_strict_passes() {
    let server = TestServer::example("authzen-todo");
    let runner = repo().join("tests/fixtures/authzen-interop/run_interop.py");
    for dir in ["todo", "gateway"] {
        let out = std::process::Command::new("python3")
            .arg(&runner)
            .arg(format!("http://{}", server.addr))
            .arg(repo().join("tests/fixtures/authzen-interop/cases").join(dir))
            .arg("--strict")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{dir}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.trim_end().ends_with("0 failed"), "{stdout}");
    }
}

#[test]
fn batch_semantics_short_circuit() {
    let server = TestServer::example("authzen-todo");
    let mut c = server.client();
    let rick = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
    let jerry = "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
    let items = serde_json::json!([
        {"subject": {"type": "user", "id": rick}},
        {"subject": {"type": "user", "id": jerry}},
        {"subject": {"type": "user", "id": rick}}
    ]);
    let body = |semantic: &str| {
        serde_json::json!({
            "action": {"name": "can_create_todo"},
            "resource": {"type": "todo", "id": "todo-1"},
            "evaluations": items,
            "options": {"evaluations_semantic": semantic}
        })
    };
    let decisions = |v: Value| -> Vec<bool> {
        v["evaluations"].as_array().unwrap().iter().map(|e| e["decision"].as_bool().unwrap()).collect()
    };
    assert_eq!(decisions(c.post_json("/access/v1/evaluations", &body("execute_all")).json()), [true, false, true]);
    assert_eq!(decisions(c.post_json("/access/v1/evaluations", &body("deny_on_first_deny")).json()), [true, false]);
    assert_eq!(decisions(c.post_json("/access/v1/evaluations", &body("permit_on_first_permit")).json()), [true]);
    let bad = c.post_json("/access/v1/evaluations", &body("sometimes"));
    assert_eq!(bad.status, 400);
    assert!(bad.json()["message"].as_str().unwrap().contains("evaluations_semantic"));

    // A failed item is a deny with its error; the others still run.
    let mixed = serde_json::json!({
        "subject": {"type": "user", "id": rick}, "action": {"name": "can_create_todo"},
        "evaluations": [{"resource": {"type": "todo", "id": "a"}}, {"resource": {"type": "todo"}}]
    });
    let v = c.post_json("/access/v1/evaluations", &mixed).json();
    assert_eq!(v["evaluations"][0]["decision"], true);
    assert_eq!(v["evaluations"][1]["decision"], false);
    assert_eq!(v["evaluations"][1]["context"]["error"]["status"], 400);
    // Per-item context is available behind an option, and every item was logged.
    let mut with_ctx = body("execute_all");
    with_ctx["options"]["verdict_item_context"] = Value::Bool(true);
    let v = c.post_json("/access/v1/evaluations", &with_ctx).json();
    assert_eq!(v["evaluations"][0]["context"]["decided_by"], "rule:todo/create");
    assert_eq!(v["evaluations"][1]["context"]["decided_by"], "default");
    assert_eq!(v["context"]["decisions"].as_array().unwrap().len(), 3);
}

#[test]
fn metadata_advertises_the_endpoints() {
    let server = TestServer::example("authzen-todo");
    let resp = server.client().get("/.well-known/authzen-configuration");
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(v["policy_decision_point"], format!("http://{}", server.addr));
    assert!(v["access_evaluation_endpoint"].as_str().unwrap().ends_with("/access/v1/evaluation"));
}

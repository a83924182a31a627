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

/// Runs the public reference runner in strict mode over case folders, against an example.
fn reference_runner_strict(example: &str, dirs: &[&str]) {
    let server = TestServer::example(example);
    let runner = repo().join("tests/fixtures/authzen-interop/run_interop.py");
    for dir in dirs {
        let out = std::process::Command::new("python3")
            .arg(&runner)
            .arg(format!("http://{}", server.addr))
            .arg(repo().join("tests/fixtures/authzen-interop/cases").join(dir))
            .arg("--strict")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{dir}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let last = stdout.trim_end().lines().last().unwrap_or_default();
        assert!(last.ends_with(" 0 failed") && !last.starts_with("0 passed"), "{dir}: {stdout}");
    }
}

#[test]
fn reference_runner_strict_passes() {
    reference_runner_strict("authzen-todo", &["todo", "gateway"]);
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

fn ident(v: &Value) -> String {
    match (v.get("type"), v.get("id"), v.get("name")) {
        (Some(t), Some(i), _) => format!("{}/{}", t.as_str().unwrap(), i.as_str().unwrap()),
        (_, _, Some(n)) => n.as_str().unwrap().to_owned(),
        _ => panic!("bad result item {v}"),
    }
}

#[test]
fn search_and_idp_vectors_all_pass() {
    let server = TestServer::example("authzen-search");
    let mut client = server.client();
    let (mut passed, mut failures) = (0, Vec::new());
    for (file, endpoint) in [
        ("search/subject/results.json", "subject"),
        ("search/resource/results.json", "resource"),
        ("search/action/results.json", "action"),
        ("idp/results.json", "resource"),
    ] {
        let doc = cases(file);
        for list in doc.as_object().unwrap().values() {
            for (i, case) in list.as_array().unwrap().iter().enumerate() {
                let resp = client.post_json(&format!("/access/v1/search/{endpoint}"), &case["request"]);
                let got = resp.json();
                // Strict: exactly the expected items, no extra members, as a set.
                let mut want: Vec<String> = case["expected"]["results"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
                let mut have: Vec<String> = got["results"].as_array().map_or(Vec::new(), |a| a.iter().map(|v| v.to_string()).collect());
                want.sort();
                have.sort();
                if resp.status == 200 && want == have {
                    passed += 1;
                } else {
                    failures.push(format!("{file}[{i}]: {} {got}", resp.status));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} passed, {} failed:\n{}", passed, failures.len(), failures.join("\n"));
    assert_eq!(passed, 204);
}

#[test]
fn reference_runner_strict_passes_search() {
    reference_runner_strict("authzen-search", &["search", "idp"]);
}

#[test]
fn search_pages_validates_and_is_logged() {
    let server = TestServer::example("authzen-search");
    let mut c = server.client();
    let base = serde_json::json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}});
    let all = c.post_json("/access/v1/search/resource", &base).json();
    let all: Vec<String> = all["results"].as_array().unwrap().iter().map(ident).collect();
    assert!(all.len() > 5);
    // Pages of 3 add up to the whole result, and the last page's next_token is "".
    let mut paged = Vec::new();
    let mut token = String::new();
    for _ in 0..20 {
        let mut req = base.clone();
        req["page"] = serde_json::json!({"limit": 3, "token": token});
        let v = c.post_json("/access/v1/search/resource", &req).json();
        paged.extend(v["results"].as_array().unwrap().iter().map(ident));
        assert_eq!(v["page"]["total"], all.len());
        token = v["page"]["next_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(paged, all);
    // An input entity without its id is a 400; unknown types and ids are empty results.
    let bad = serde_json::json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {"type": "record"}});
    let r = c.post_json("/access/v1/search/subject", &bad);
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("resource.id"));
    let unknown = serde_json::json!({"subject": {"type": "robot"}, "action": {"name": "view"}, "resource": {"type": "record", "id": "101"}});
    assert_eq!(c.post_json("/access/v1/search/subject", &unknown).json()["results"], serde_json::json!([]));
    let unknown = serde_json::json!({"subject": {"type": "user", "id": "alice"}, "resource": {"type": "record", "id": "999"}});
    assert_eq!(c.post_json("/access/v1/search/action", &unknown).json()["results"], serde_json::json!([]));
    // "Who may delete record 104?" is one logged record naming the answer.
    let who = serde_json::json!({"subject": {"type": "user"}, "action": {"name": "delete"}, "resource": {"type": "record", "id": "104"}});
    let r = c.post_json("/access/v1/search/subject", &who);
    let v = r.json();
    assert_eq!(v["results"], serde_json::json!([{"type": "user", "id": "dan"}]));
    let records = crate::util::log_records(&server.log_path());
    let rec = records.iter().find(|x| x["id"] == v["context"]["decision_id"]).unwrap();
    assert_eq!(rec["decided_by"], "search:subject");
    assert_eq!(rec["outputs"]["results"], v["results"]);
    // An evaluation on the same record is enriched from the collection too.
    let e = c.post_json("/access/v1/evaluation", &crate::util::eval_request("dan", "delete", "record", "104")).json();
    assert_eq!(e["decision"], true);
    assert_eq!(e["context"]["decided_by"], "rule:records/owner");
}

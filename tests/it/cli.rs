//! The CLI as a user runs it: `check`, `test`, `eval`, `log verify`.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::{TestServer, bin, copy_dir, eval_request, repo};

fn run(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).current_dir(dir).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_accepts_every_example_and_the_default() {
    for example in ["authzen-todo", "authzen-search", "provisioning", "access-requests", "onboarding"] {
        let (ok, out, err) = run(&["check", "--config", &format!("examples/{example}/verdict.toml")], &repo());
        assert!(ok, "{example}: {out}{err}");
        assert!(out.starts_with("ok: "), "{out}");
    }
    let (ok, out, err) = run(&["check"], &repo());
    assert!(ok, "{out}{err}");
}

/// A config file that cannot be read is named, with its cause printed once.
#[test]
fn a_missing_config_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["check", "serve"] {
        let (ok, _, err) = run(&[command, "--config", "no-such.toml"], dir.path());
        assert!(!ok, "{command}");
        assert!(err.contains("cannot read config `no-such.toml`: No such file or directory"), "{command}: {err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{command}: {err}");
    }
}

#[test]
fn check_prints_every_error_with_file_line_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/a.yaml"),
        "policy: a\napplies_to: { actions: [read] }\nrules:\n  - name: typo\n    when: subjct.id == 'x'\n    effect: allow\n  - name: bad-effect\n    when: 'true'\n    effect: permit\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("policies/b.yaml"), "policy: b\nrules: [\n").unwrap();
    std::fs::write(
        dir.path().join("policies/c.yaml"),
        "policy: c\napplies_to: { actions: [write] }\nrules:\n  - name: ask\n    when: 'true'\n    hook: nowhere\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("verdict.toml"), "[identity]\nfile = \"\"\n").unwrap();
    let (ok, _, err) = run(&["check"], dir.path());
    assert!(!ok);
    assert!(err.contains("policies/a.yaml:5: rule `typo`: unknown variable `subjct`"), "{err}");
    assert!(err.contains("policies/a.yaml:9: rule `bad-effect`: effect must be `allow` or `deny`"), "{err}");
    assert!(err.contains("policies/b.yaml:") && err.contains("invalid YAML"), "{err}");
    assert!(err.contains("policies/c.yaml:4: rule `ask`: unknown hook `nowhere`"), "{err}");
    assert!(err.contains("4 error(s)"), "{err}");
}

#[test]
fn test_runs_the_cases_beside_the_policies() {
    for config in [
        "examples/provisioning/verdict.toml",
        "examples/access-requests/verdict.toml",
        "examples/authzen-todo/verdict.toml",
        "tests/fixtures/semantics/verdict.toml",
        "examples/onboarding/verdict.toml",
        "verdict.toml",
    ] {
        let (ok, out, err) = run(&["test", "--config", config], &repo());
        assert!(ok, "{config}: {out}{err}");
        assert!(out.contains(" passed, 0 failed") && !out.contains("\n0 passed"), "{out}");
    }
    // A failing case says what differed and fails the command.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("examples/provisioning"), dir.path());
    let cases = dir.path().join("policies/provisioning_test.yaml");
    let text = std::fs::read_to_string(&cases).unwrap().replacen("decision: true", "decision: false", 1);
    std::fs::write(&cases, text).unwrap();
    let (ok, out, _) = run(&["test"], dir.path());
    assert!(!ok);
    assert!(out.contains("FAIL") && out.contains("decision: want false, got true"), "{out}");
    assert!(out.contains("1 failed"), "{out}");
}

#[test]
fn eval_decides_one_request_from_stdin() {
    let mut child = Command::new(bin())
        .args(["eval", "--config", "examples/provisioning/verdict.toml"])
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let req = std::fs::read(repo().join("examples/provisioning/requests/cel-allow.json")).unwrap();
    child.stdin.take().unwrap().write_all(&req).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], true);
    assert_eq!(v["context"]["decided_by"], "rule:provisioning/tiny-resources");
}

/// A single evaluation's body is logged as the client sent it, on one line: a pretty-printed
/// body loses its line breaks and indentation, other spaces and a string's spaces stay,
/// `35.0` stays `35.0` (a parsed-and-encoded value would read `35.0` too, but `1e3` would
/// become `1000.0`), and the log still verifies.
#[test]
fn the_request_is_logged_as_sent_on_one_line() {
    let server = TestServer::example("provisioning");
    let mut c = server.client();
    let body = "{\n  \"subject\": {\"type\": \"user\", \"id\": \"u-bob\"},\r\n  \"action\": {\"name\": \"provision\"},\n  \"resource\": {\"type\": \"cloud.vm\", \"id\": \"vm-1\",\n    \"properties\": {\"project\": \"proj-alpha\", \"monthly_cost\": 35.0, \"cpus\": 1e3}},\n  \"context\": {\"why\": \"a b  c\"}\n}\n";
    let r = c.request("POST", "/access/v1/evaluation", &[("content-type", "application/json")], body.as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["decision"], true);
    let log = server.log_path();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let request = r#""request":{"subject": {"type": "user", "id": "u-bob"},"action": {"name": "provision"},"resource": {"type": "cloud.vm", "id": "vm-1","properties": {"project": "proj-alpha", "monthly_cost": 35.0, "cpus": 1e3}},"context": {"why": "a b  c"}},"#;
    assert!(lines[0].contains(request), "{}", lines[0]);
    let record: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(record["request"]["subject"]["id"], "u-bob");
    assert_eq!(record["decided_by"], "rule:provisioning/tiny-resources");
    let (ok, out, err) = run(&["log", "verify", log.to_str().unwrap()], &repo());
    assert!(ok && out.contains("1 records"), "{out}{err}");
}

#[test]
fn log_verify_detects_tampering() {
    let server = TestServer::example("provisioning");
    let mut c = server.client();
    for _ in 0..20 {
        assert_eq!(c.post_json("/access/v1/evaluation", &eval_request("u-bob", "provision", "cloud.vm", "v")).status, 200);
    }
    let log = server.log_path();
    let (ok, out, _) = run(&["log", "verify", log.to_str().unwrap()], &repo());
    assert!(ok && out.contains("20 records"), "{out}");

    let text = std::fs::read_to_string(&log).unwrap();
    let tampered = text.replacen("\"decision\":false", "\"decision\":true", 1);
    assert_ne!(text, tampered);
    std::fs::write(&log, tampered).unwrap();
    let (ok, out, err) = run(&["log", "verify", log.to_str().unwrap()], &repo());
    assert!(!ok, "{out}{err}");
    assert!(out.contains("hash mismatch"), "{out}");
}

#[test]
fn hook_new_scaffolds_a_hook_that_passes_its_own_test() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/p.yaml"),
        "policy: p\nrules:\n  - name: ask\n    when: 'true'\n    hook: greeter\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("verdict.toml"), "[identity]\nfile = \"\"\n").unwrap();
    let (ok, out, err) = run(&["hook", "new", "greeter"], dir.path());
    assert!(ok, "{out}{err}");
    assert!(dir.path().join("hooks/greeter.ts").exists());
    let toml = std::fs::read_to_string(dir.path().join("verdict.toml")).unwrap();
    assert!(toml.contains("[hook.greeter]"), "{toml}");
    let (ok, out, err) = run(&["check"], dir.path());
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&["test"], dir.path());
    assert!(ok && out.contains("1 passed, 0 failed"), "{out}{err}");
    // A second scaffold of the same name refuses to overwrite.
    let (ok, _, err) = run(&["hook", "new", "greeter"], dir.path());
    assert!(!ok && err.contains("already exists"), "{err}");
}

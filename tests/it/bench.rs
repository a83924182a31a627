//! `verdict bench` as a user runs it, against a real `verdict serve` on 127.0.0.1: closed and
//! open loop, errors by status, replaying a decision log, plots, in-process mode, and two quick
//! runs of the comparison harness: the floor, Verdict and the Node.js hook webhook; then
//! Verdict, the Node.js CEL webhook and Cerbos (which `.ci/run` installs from npm).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{TestServer, bin, repo};

const CEL: &str = "examples/provisioning/requests/cel-allow.json";

/// Runs `verdict ARGS` in the repository root; returns (success, stdout, stderr).
fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).arg("bench").args(args).current_dir(repo()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[track_caller]
fn bench_json(args: &[&str]) -> (Value, String) {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = bench(&all);
    assert!(ok, "verdict bench {args:?} failed:\n{out}\n{err}");
    (serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}")), err)
}

fn url(server: &TestServer, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

#[track_caller]
fn assert_sane(r: &Value) {
    let requests = r["requests"].as_u64().unwrap();
    assert!(requests > 0, "{r}");
    let l = &r["latency_us"];
    let (p50, p90, p99, p999, max) = (
        l["p50"].as_f64().unwrap(),
        l["p90"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["p99.9"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max, "{l}");
    let throughput = r["throughput_rps"].as_f64().unwrap();
    let expected = requests as f64 / r["duration_s"].as_f64().unwrap();
    assert!((throughput - expected).abs() < 1e-6, "{r}");
}

#[track_caller]
fn assert_no_errors(r: &Value) {
    assert_eq!(r["errors"]["total"], 0, "{}", r["errors"]);
    assert_eq!(r["ok"], r["requests"], "{r}");
}

#[test]
fn closed_and_open_loop_against_a_real_server() {
    let server = TestServer::example("provisioning");
    let target = url(&server, "/access/v1/evaluation");
    let (closed, progress) = bench_json(&[
        "--url", &target, "--body", CEL, "--connections", "2", "--warmup", "0.2", "--duration", "1", "--label", "closed", "--progress",
    ]);
    assert_sane(&closed);
    assert_no_errors(&closed);
    assert_eq!(closed["mode"], "closed");
    assert_eq!(closed["label"], "closed");
    assert_eq!(closed["connections"], 2);
    assert!(progress.contains("req/s") && progress.contains("p99"), "no progress line: {progress}");

    // Open loop at 200 requests/s: about 200 answers in the measured second, none missed on a
    // server that keeps up, and latency measured from the intended send times.
    let (open, _) = bench_json(&[
        "--url", &target, "--body", CEL, "--connections", "2", "--rate", "200", "--warmup", "0.2", "--duration", "1",
    ]);
    assert_sane(&open);
    assert_no_errors(&open);
    assert_eq!(open["mode"], "open");
    let n = open["requests"].as_u64().unwrap();
    assert!((150..=201).contains(&n), "open loop at 200/s gave {n} requests: {open}");

    // Every request the bench sent was logged by the server.
    let logged = crate::util::log_records(&server.log_path()).len() as u64;
    assert!(logged >= closed["requests"].as_u64().unwrap() + n, "{logged} records");
}

#[test]
fn errors_are_counted_by_status_and_bad_input_is_named() {
    let server = TestServer::example("provisioning");
    let (r, _) = bench_json(&["--url", &url(&server, "/access/v1/nowhere"), "--body", CEL, "--warmup", "0", "--duration", "0.5"]);
    assert_sane(&r);
    let requests = r["requests"].as_u64().unwrap();
    assert_eq!(r["ok"], 0);
    assert_eq!(r["errors"]["by_status"]["404"].as_u64(), Some(requests), "{}", r["errors"]);
    assert_eq!(r["errors"]["total"].as_u64(), Some(requests));

    // The table says the same.
    let (ok, out, _) = bench(&["--url", &url(&server, "/access/v1/nowhere"), "--body", CEL, "--warmup", "0", "--duration", "0.3"]);
    assert!(ok && out.contains("HTTP 404: "), "{out}");

    // Nothing listens on port 1: an error message, not a panic, and a failing exit.
    let (ok, _, err) = bench(&["--url", "http://127.0.0.1:1/access/v1/evaluation", "--body", CEL, "--duration", "1"]);
    assert!(!ok);
    assert!(err.contains("cannot connect to `http://127.0.0.1:1/access/v1/evaluation`"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A bad line of a request mix is named with its file and line.
    let dir = tempfile::tempdir().unwrap();
    let mix = dir.path().join("mix.jsonl");
    std::fs::write(&mix, format!("{}\n\n{{not json\n", std::fs::read_to_string(repo().join(CEL)).unwrap().replace('\n', " "))).unwrap();
    let (ok, _, err) = bench(&["--url", &url(&server, "/access/v1/evaluation"), "--requests", mix.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("mix.jsonl` line 3: not JSON"), "{err}");

    // A missing body file, and no input at all.
    let (ok, _, err) = bench(&["--url", &url(&server, "/"), "--body", "no/such/file.json"]);
    assert!(!ok && err.contains("cannot read `no/such/file.json`"), "{err}");
    // The cause once, not repeated by the error chain.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let (ok, _, err) = bench(&["--url", &url(&server, "/")]);
    assert!(!ok && err.contains("--body FILE"), "{err}");
}

#[test]
fn from_log_replays_the_requests_of_a_real_log() {
    let server = TestServer::example("provisioning");
    let mut c = server.client();
    let mut bodies = Vec::new();
    for (subject, cost) in [("u-bob", 20), ("u-carol", 10), ("u-alice", 30000)] {
        let body = serde_json::json!({
            "subject": {"type": "user", "id": subject},
            "action": {"name": "provision"},
            "resource": {"type": "cloud.vm", "id": "vm-1", "properties": {"project": "proj-alpha", "monthly_cost": cost}}
        });
        assert_eq!(c.post_json("/access/v1/evaluation", &body).status, 200);
        bodies.push(body);
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("replay.jsonl");
    std::fs::copy(server.log_path(), &log).unwrap();

    let (r, _) = bench_json(&[
        "--url", &url(&server, "/access/v1/evaluation"), "--from-log", log.to_str().unwrap(), "--warmup", "0", "--duration", "0.5",
    ]);
    assert_sane(&r);
    assert_no_errors(&r);
    // The replayed requests are the logged ones, all three of them, round-robin.
    let records = crate::util::log_records(&server.log_path());
    assert!(records.len() as u64 >= 3 + r["requests"].as_u64().unwrap());
    for body in &bodies {
        let n = records.iter().filter(|rec| &rec["request"] == body).count();
        assert!(n >= 2, "{body} replayed {} times", n - 1);
    }

    // A file that is not a decision log is refused with its line.
    std::fs::write(&log, "{\"subject\": {}}\n").unwrap();
    let (ok, _, err) = bench(&["--url", &url(&server, "/"), "--from-log", log.to_str().unwrap()]);
    assert!(!ok && err.contains("replay.jsonl` line 1: not a decision record"), "{err}");
}

fn svg_polylines(path: &Path) -> usize {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    svg.matches("<polyline ").count()
}

#[test]
fn plot_draws_one_line_per_run() {
    let server = TestServer::example("provisioning");
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    let one = dir.path().join("one.svg");
    let target = url(&server, "/access/v1/evaluation");
    let (ok, out, err) = bench(&[
        "--url", &target, "--body", CEL, "--warmup", "0", "--duration", "0.4", "--label", "run a",
        "--json-out", a.to_str().unwrap(), "--plot", one.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("run a") && out.contains("p99.9"), "the table is the default output: {out}");
    assert_eq!(svg_polylines(&one), 1);
    let saved: Value = serde_json::from_slice(&std::fs::read(&a).unwrap()).unwrap();
    assert_sane(&saved);

    let (ok, out, err) = bench(&[
        "--url", &target, "--body", CEL, "--warmup", "0", "--duration", "0.4", "--connections", "3", "--label", "run b",
        "--json-out", b.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");

    // Plot-only: earlier results together, with a legend naming each.
    let both = dir.path().join("both.svg");
    let (ok, out, err) = bench(&["--plot", both.to_str().unwrap(), "--compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert_eq!(svg_polylines(&both), 2);
    let svg = std::fs::read_to_string(&both).unwrap();
    assert!(svg.contains(">run a</text>") && svg.contains(">run b</text>"), "{svg}");
    assert!(svg.contains(">99.99%</text>"), "{svg}");
}

#[test]
fn in_process_drives_the_engine_with_and_without_the_log() {
    let config = "examples/provisioning/verdict.toml";
    let (r, _) = bench_json(&["--in-process", "--config", config, "--body", CEL, "--connections", "2", "--warmup", "0", "--duration", "0.5"]);
    assert_sane(&r);
    assert_no_errors(&r);
    assert_eq!(r["target"], "in-process");
    assert!(r["measured"].as_str().unwrap().contains("no decision log"), "{r}");

    let dir = tempfile::tempdir().unwrap();
    let (r, _) = bench_json(&[
        "--in-process", "--config", config, "--body", CEL, "--warmup", "0", "--duration", "0.5", "--log-dir", dir.path().to_str().unwrap(),
    ]);
    assert_sane(&r);
    assert_no_errors(&r);
    assert!(r["measured"].as_str().unwrap().contains("decision log (durability write"), "{r}");
    let records = crate::util::log_records(&dir.path().join("decisions.log"));
    assert!(records.len() as u64 >= r["requests"].as_u64().unwrap(), "{} records", records.len());
    assert_eq!(records[0]["decided_by"], "rule:provisioning/tiny-resources");

    // A request the engine rejects counts as a 400.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"subject\": {}}").unwrap();
    let (r, _) = bench_json(&["--in-process", "--config", config, "--body", bad.to_str().unwrap(), "--warmup", "0", "--duration", "0.2"]);
    assert_eq!(r["errors"]["by_status"]["400"], r["requests"], "{r}");
}

#[test]
fn compare_harness_quick_run_without_cerbos() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let (ok, out, err) = bench(&[
        "compare", "--quick", "--contenders", "floor,verdict-cel,verdict-hook,node-hook", "--connections", "4",
        "--warmup", "0.2", "--duration", "0.5", "--rounds", "2", "--out", out_dir,
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("all contenders answer the expected allow"), "{err}");
    assert!(out.contains("| verdict-cel / floor throughput | 4 |"), "{out}");
    assert!(out.contains("| verdict-hook / node-hook p99 | 4 |"), "{out}");

    let json: Value = serde_json::from_slice(&std::fs::read(dir.path().join("compare.json")).unwrap()).unwrap();
    let rows = json["summary"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["contender"].as_str().unwrap()).collect();
    assert_eq!(names, ["floor", "verdict-cel", "verdict-hook", "node-hook"]);
    for row in rows {
        assert!(row["throughput_rps"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["p50_us"].as_f64().unwrap() <= row["p99_us"].as_f64().unwrap(), "{row}");
        assert!(row["cpu_us_per_request"].as_f64().unwrap() >= 0.0, "{row}");
        // Resident memory of the server under load: a real process is more than a megabyte.
        assert!(row["server_rss_mb"].as_f64().unwrap() > 1.0, "{row}");
        assert_eq!(row["errors"], 0, "{row}");
    }
    for run in json["runs"].as_array().unwrap() {
        assert_sane(&run["report"]);
    }
    // With two rounds each median is the mean of two runs, so the ratio of medians lies
    // between the two rounds' own ratios.
    let ratios = json["ratios"].as_array().unwrap();
    assert!(ratios.len() >= 4, "{ratios:?}");
    for r in ratios {
        let (value, lo, hi) = (r["value"].as_f64().unwrap(), r["round_min"].as_f64().unwrap(), r["round_max"].as_f64().unwrap());
        assert!(lo <= value * (1.0 + 1e-9) && value <= hi * (1.0 + 1e-9), "{r}");
    }
    assert!(json["machine"]["nproc"].as_str().is_some());
    assert_eq!(svg_polylines(&dir.path().join("compare-4.svg")), 4);
    // Every server it started (floor, billing stand-in, verdict, node) is gone.
    let servers = json["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 4, "{servers:?}");
    for s in servers {
        let pid = s["pid"].as_u64().unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{s} still running");
        assert!(std::net::TcpStream::connect(s["addr"].as_str().unwrap()).is_err(), "{s} still listening");
    }
    assert!(!dir.path().join("work").exists());
}

/// The peers the other quick run leaves out: Cerbos (the npm package `.ci/run` installs into
/// `target/cerbos`) with its CEL policy, and the same rule as a Node.js webhook, each asked the
/// CEL-decided request and checked to answer allow before they are measured.
#[test]
fn compare_harness_quick_run_against_cerbos_and_the_node_rule() {
    let cerbos = repo().join("target/cerbos/node_modules/@cerbos/cerbos-linux-x64/cerbos-linux-x64");
    assert!(
        cerbos.is_file(),
        "no Cerbos at {}; `.ci/run` installs it: `npm install --prefix target/cerbos @cerbos/cerbos-linux-x64@0.55.0`",
        cerbos.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = bench(&[
        "compare", "--quick", "--contenders", "verdict-cel,node-cel,cerbos", "--connections", "4", "--warmup", "0.2",
        "--duration", "0.5", "--cerbos", cerbos.to_str().unwrap(), "--out", dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("all contenders answer the expected allow"), "{err}");
    let json: Value = serde_json::from_slice(&std::fs::read(dir.path().join("compare.json")).unwrap()).unwrap();
    let rows = json["summary"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["contender"].as_str().unwrap()).collect();
    assert_eq!(names, ["verdict-cel", "node-cel", "cerbos"]);
    for row in rows {
        assert!(row["throughput_rps"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["errors"], 0, "{row}");
        assert!(row["server_rss_mb"].as_f64().unwrap() > 1.0, "{row}");
    }
    let ratio = |what: &str| {
        let ratios = json["ratios"].as_array().unwrap();
        let r = ratios.iter().find(|r| r["what"] == what).unwrap_or_else(|| panic!("no `{what}` in {ratios:?}"));
        r["value"].as_f64().unwrap()
    };
    assert!(ratio("verdict-cel / cerbos throughput") > 0.0);
    assert!(ratio("verdict-cel / node-cel throughput") > 0.0);
    assert!(out.contains("| cerbos | 4 |"), "{out}");
    for s in json["servers"].as_array().unwrap() {
        let pid = s["pid"].as_u64().unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{s} still running");
    }
}

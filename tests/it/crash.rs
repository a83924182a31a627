//! `kill -9` under load: every decision a client received is in the log, and the chain
//! verifies (a torn last line is reported as such, not as tampering). A restart repairs the
//! tail and continues the chain.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::util::{TestServer, bin, eval_request, log_records};

#[test]
fn kill_9_loses_no_answered_decision() {
    let server = TestServer::example("provisioning");
    let stop = Arc::new(AtomicBool::new(false));
    let answered_so_far = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let stop = stop.clone();
            let count = answered_so_far.clone();
            let mut c = server.client();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                    let req = eval_request(if i % 2 == 0 { "u-bob" } else { "u-alice" }, "provision", "cloud.vm", "vm");
                    match c.try_post_json("/access/v1/evaluation", &req) {
                        Ok(r) if r.status == 200 => {
                            ids.push(r.header("x-decision-id").unwrap().to_owned());
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => panic!("status {} before the crash", r.status),
                        Err(_) => break, // the server died mid-request: nothing was answered
                    }
                }
                ids
            })
        })
        .collect();
    // Kill once the clients are in full flow (bounded: at most 20 s on a loaded machine).
    crate::util::wait_for(Duration::from_secs(20), || answered_so_far.load(Ordering::Relaxed) >= 300);
    let mut server = server;
    server.signal("-KILL");
    stop.store(true, Ordering::Relaxed);
    let answered: Vec<String> = clients.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(answered.len() > 100, "only {} decisions before the crash", answered.len());

    let log = server.log_path();
    let text = std::fs::read_to_string(&log).unwrap();
    let logged: HashSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<_> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(missing.is_empty(), "{} answered decisions are not in the log: {:?}", missing.len(), &missing[..missing.len().min(5)]);

    let verify = std::process::Command::new(bin()).args(["log", "verify"]).arg(&log).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));

    // Restart on the same log: the chain continues and still verifies.
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    drop(server);
    let config = dir.path().join("verdict.toml");
    let again = TestServer::start(&config, dir, &["--decision-log", "decisions.log"]);
    let r = again.client().post_json("/access/v1/evaluation", &eval_request("u-bob", "provision", "cloud.vm", "vm"));
    assert_eq!(r.status, 200);
    let records = log_records(&again.log_path());
    assert_eq!(records.last().unwrap()["id"].as_str(), r.header("x-decision-id"));
    let verify = std::process::Command::new(bin()).args(["log", "verify"]).arg(again.log_path()).output().unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success() && !out.contains("torn"), "{out}");
}

#[test]
fn an_unwritable_log_means_503_never_an_unlogged_answer() {
    let server = TestServer::example("provisioning");
    let mut c = server.client();
    let req = eval_request("u-bob", "provision", "cloud.vm", "vm");
    assert_eq!(c.post_json("/access/v1/evaluation", &req).status, 200);
    // Replace the active log file with a directory: every write now fails.
    let log = server.log_path();
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    let r = c.post_json("/access/v1/evaluation", &req);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.json()["message"].as_str().unwrap().contains("decision log"), "{}", r.json());
    let metrics = String::from_utf8(server.admin_client().get("/metrics").body).unwrap();
    assert!(metrics.contains("verdict_decision_log_unavailable_total 1"), "{metrics}");
    // Once the path is writable again, decisions flow and are logged.
    std::fs::remove_dir(&log).unwrap();
    let r = c.post_json("/access/v1/evaluation", &req);
    assert_eq!(r.status, 200);
    let records = log_records(&log);
    assert_eq!(records.last().unwrap()["id"].as_str(), r.header("x-decision-id"));
}

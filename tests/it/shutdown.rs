//! SIGTERM: requests in flight are answered and logged, then the process exits 0.

use std::time::Duration;

use crate::util::{Client, TestServer, log_records};

#[test]
fn sigterm_drains_in_flight_requests() {
    let mut server = TestServer::example("provisioning");
    // A request whose body is still arriving when SIGTERM lands.
    let body = serde_json::to_vec(&crate::util::eval_request("u-bob", "provision", "cloud.vm", "vm")).unwrap();
    let (first, rest) = body.split_at(10);
    let mut c = Client::connect(server.addr);
    c.send_raw(
        format!("POST /access/v1/evaluation HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())
            .as_bytes(),
    )
    .unwrap();
    c.send_raw(first).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pid = server.child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // New connections are refused once the listener is closed...
    assert!(std::net::TcpStream::connect(server.addr).is_err(), "still accepting after SIGTERM");
    // ...but the in-flight request completes.
    c.send_raw(rest).unwrap();
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 200);
    // The connection was told to drain: it closes after this response instead of waiting
    // idle for the next request.
    assert_eq!(resp.header("connection"), Some("close"), "a draining connection must close after its response");
    let id = resp.header("x-decision-id").unwrap().to_owned();
    let status = server.wait();
    assert!(status.success(), "exit status {status:?}\n{}", server.stderr());
    let records = log_records(&server.log_path());
    assert!(records.iter().any(|r| r["id"] == id), "drained decision {id} not logged");
    assert!(server.stderr().contains("all connections drained"), "{}", server.stderr());
}

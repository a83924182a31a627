//! Test support: a real `verdict serve` process on 127.0.0.1:0 and a small HTTP/1.1 client
//! that can also send what well-behaved clients never would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the `verdict` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_verdict")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running server; killed on drop unless it already exited.
pub struct TestServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub stderr: PathBuf,
}

impl TestServer {
    /// Starts `verdict serve --config CONFIG` with ports chosen by the OS.
    pub fn start(config: &Path, dir: tempfile::TempDir, extra: &[&str]) -> TestServer {
        let stderr = dir.path().join("stderr.log");
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .env("VERDICT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        if !line.starts_with("verdict listening") {
            let _ = child.kill();
            panic!("server did not start: {line:?}\n{}", std::fs::read_to_string(&stderr).unwrap_or_default());
        }
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
        };
        TestServer { addr: field("decision").unwrap(), admin: field("admin"), child, dir, stderr }
    }

    /// Starts a server for an example directory (copied to a temp dir so logs land there).
    pub fn example(name: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("examples").join(name), dir.path());
        let config = dir.path().join("verdict.toml");
        TestServer::start(&config, dir, &["--decision-log", "decisions.log"])
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("decisions.log")
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn admin_client(&self) -> Client {
        Client::connect(self.admin.unwrap())
    }

    /// Sends a signal and waits for the exit status.
    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args([sig, &pid]).status().unwrap();
        self.wait()
    }

    /// Waits (at most 20 s) for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let sig = "exit";
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit after {sig}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "decisions.log" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// An HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    pub fn post_json(&mut self, path: &str, body: &Value) -> Response {
        self.request("POST", path, &[("content-type", "application/json")], &serde_json::to_vec(body).unwrap())
    }

    pub fn try_post_json(&mut self, path: &str, body: &Value) -> std::io::Result<Response> {
        self.try_request("POST", path, &[("content-type", "application/json")], &serde_json::to_vec(body).unwrap())
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.try_request(method, path, headers, body).unwrap()
    }

    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        self.stream.write_all(&msg)?;
        self.read_response()
    }

    /// Writes raw bytes (for malformed requests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn read_response(&mut self) -> std::io::Result<Response> {
        let mut status_line = String::new();
        if self.reader.read_line(&mut status_line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(Response { status, headers, body })
    }
}

/// A minimal AuthZEN request.
pub fn eval_request(subject: &str, action: &str, rtype: &str, rid: &str) -> Value {
    serde_json::json!({
        "subject": {"type": "user", "id": subject},
        "action": {"name": action},
        "resource": {"type": rtype, "id": rid}
    })
}

/// Reads the decision log's lines as JSON.
pub fn log_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `f` is true or panics after `timeout`.
#[track_caller]
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "condition not met within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A hook version: the first 12 hex digits of the SHA-256 of its source.
pub fn version_of(source: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(source.as_bytes()))[..12].to_owned()
}

/// A test certificate authority.
pub struct Pki {
    pub ca: rcgen::CertifiedKey,
}

/// A fresh CA that nothing trusts unless told to.
pub fn pki() -> Pki {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pki { ca: rcgen::CertifiedKey { cert, key_pair: key } }
}

/// A certificate for `names` (DNS names or IP addresses) issued by `pki`: DER certificate and
/// key, then both as PEM.
pub fn issue(
    pki: &Pki,
    names: Vec<String>,
) -> (
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
    String,
    String,
) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let params = rcgen::CertificateParams::new(names).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &pki.ca.cert, &pki.ca.key_pair).unwrap();
    let der = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (der, key_der, cert.pem(), key.serialize_pem())
}

/// A TLS front on 127.0.0.1, as a terminating proxy stands in front of a real upstream: it
/// accepts TLS with a certificate for `127.0.0.1` and `localhost` issued by a CA of its own
/// (so nothing trusts it unless told to, with [`TlsFront::ca_pem`]) and relays the plain
/// bytes to `127.0.0.1:upstream`. Stops when dropped.
pub struct TlsFront {
    pub port: u16,
    /// The issuing CA's certificate, PEM.
    pub ca_pem: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsFront {
    pub fn start(upstream: u16) -> TlsFront {
        let pki = pki();
        let (cert, key, _, _) = issue(&pki, vec!["127.0.0.1".to_owned(), "localhost".to_owned()]);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { port, ca_pem: pki.ca.cert.pem(), runtime: Some(runtime) }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

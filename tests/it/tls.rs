//! HTTP/2 and TLS: h2 with prior knowledge on the plain listener, HTTPS with ALPN (HTTP/1.1 and
//! h2), and mTLS that refuses clients without a certificate from the configured CA.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::util::{Pki, TestServer, copy_dir, issue, pki, repo};

fn request() -> hyper::Request<Full<Bytes>> {
    let body = std::fs::read(repo().join("examples/provisioning/requests/cel-allow.json")).unwrap();
    hyper::Request::post("/access/v1/evaluation")
        .header("content-type", "application/json")
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn decide<T>(io: T, h2: bool) -> serde_json::Value
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
        tokio::spawn(conn);
        send.send_request(request()).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
        tokio::spawn(conn);
        send.send_request(request()).await.unwrap()
    };
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn h2_prior_knowledge_on_plain_tcp() {
    let server = TestServer::example("provisioning");
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(decide(tcp, true).await["decision"], true);
}

fn client_config(pki: &Pki, client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>, alpn: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

fn tls_server(pki: &Pki, mtls: bool) -> TestServer {
    let (_, _, cert_pem, key_pem) = issue(pki, vec!["127.0.0.1".to_owned(), "localhost".to_owned()]);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("examples/provisioning"), dir.path());
    std::fs::write(dir.path().join("cert.pem"), cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), key_pem).unwrap();
    std::fs::write(dir.path().join("ca.pem"), pki.ca.cert.pem()).unwrap();
    let cfg = dir.path().join("verdict.toml");
    let tls = if mtls {
        "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nclient_ca = \"ca.pem\"\n"
    } else {
        "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"
    };
    let text = std::fs::read_to_string(&cfg).unwrap() + tls;
    std::fs::write(&cfg, text).unwrap();
    TestServer::start(&cfg, dir, &[])
}

async fn connect(server: &TestServer, config: rustls::ClientConfig) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(server.addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await
}

#[tokio::test]
async fn https_with_alpn_h1_and_h2() {
    let pki = pki();
    let server = tls_server(&pki, false);
    let tls = connect(&server, client_config(&pki, None, b"http/1.1")).await.unwrap();
    assert_eq!(decide(tls, false).await["decision"], true);
    let tls = connect(&server, client_config(&pki, None, b"h2")).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(decide(tls, true).await["decision"], true);
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    let server = tls_server(&pki, true);
    // Without a client certificate the handshake (or the first read) fails.
    let refused = match connect(&server, client_config(&pki, None, b"http/1.1")).await {
        Err(_) => true,
        Ok(mut tls) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let mut buf = [0u8; 16];
            !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without a certificate was served");
    let (cert, key, _, _) = issue(&pki, vec!["client".to_owned()]);
    let tls = connect(&server, client_config(&pki, Some((cert, key)), b"http/1.1")).await.unwrap();
    assert_eq!(decide(tls, false).await["decision"], true);
}

/// `verdict bench` measures the HTTPS listener when told to trust its CA (`--ca-file`);
/// without it the run fails before any load, naming TLS and the certificate.
#[test]
fn bench_measures_an_https_endpoint() {
    let pki = pki();
    let server = tls_server(&pki, false);
    let ca = server.dir.path().join("ca.pem");
    let url = format!("https://127.0.0.1:{}/access/v1/evaluation", server.addr.port());
    let body = repo().join("examples/provisioning/requests/cel-allow.json");
    let run = |trust: bool| {
        let mut cmd = std::process::Command::new(crate::util::bin());
        cmd.args(["bench", "--url", &url, "--connections", "2", "--warmup", "0", "--duration", "1", "--json", "--body"]).arg(&body);
        if trust {
            cmd.arg("--ca-file").arg(&ca);
        }
        cmd.output().unwrap()
    };
    let trusted = run(true);
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    let r: serde_json::Value = serde_json::from_slice(&trusted.stdout).unwrap();
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"]["total"], 0, "{r}");
    assert_eq!(r["ok"], r["requests"], "{r}");

    let untrusted = run(false);
    assert!(!untrusted.status.success());
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("tls") && err.contains("certificate"), "{err}");
}

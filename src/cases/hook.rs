//! Test cases kept beside each hook (`hooks/NAME_test.yaml`), run by `verdict test`.
//!
//! ```yaml
//! hook: cost-threshold
//! identity: ../identity.json             # optional, relative to this file
//! config: { billing_url: "http://billing.test" }
//! secrets: { BILLING_TOKEN: "test-token" }
//! cases:
//!   - name: within budget
//!     request: { subject: …, action: …, resource: … }
//!     config: { … }                        # optional: replaces the file's config for this case
//!     fetch:                               # stubbed responses, matched by method and URL
//!       - { method: GET, url: "http://billing.test/projects/p/spend", status: 200, body: {…} }
//!     expect: { decision: true, reason: "…", outputs: { remaining: 1180 } }   # or { error: true }
//! ```
//!
//! No outside service is reachable from a test, so each case starts a stub HTTP server on
//! 127.0.0.1 that answers with the case's `fetch` stubs; every URL origin a stub names
//! (`http://billing.test`) is rewritten to the stub server wherever it appears in the hook's
//! config, and only the stub server is allow-listed. A fetch that matches no stub gets a 599
//! answer and fails the case. `outputs` is a subset match: every key listed must be equal,
//! numbers compared as numbers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{CaseResult, Error};
use crate::config::HookSettings;
use crate::hooks::{self, HookSpec};
use crate::policy::yaml::{self, Node};

/// One stubbed response.
#[derive(Debug, Clone)]
struct Stub {
    method: String,
    origin: String,
    path: String,
    status: u16,
    body: String,
}

/// Runs one hook test file against the hook source beside it.
pub async fn run_file(
    file: &Path,
    settings: &BTreeMap<String, HookSettings>,
    default_identity: Option<&Path>,
    pool: &hooks::Pool,
) -> Result<Vec<CaseResult>, Error> {
    let err = |line: usize, message: String| Error { file: file.to_path_buf(), line, message };
    let text = std::fs::read_to_string(file).map_err(|e| err(1, format!("cannot read: {e}")))?;
    let root = yaml::parse(&text).map_err(|e| err(e.line, format!("invalid YAML: {}", e.message)))?;
    let Some(doc @ Node::Map { .. }) = root else {
        return Err(err(1, "expected a mapping with `hook` and `cases`".to_owned()));
    };
    let doc = doc.to_json();
    let base = file.parent().unwrap_or(Path::new("."));
    let name = doc.get("hook").and_then(Value::as_str).ok_or_else(|| err(1, "missing `hook: NAME`".to_owned()))?;
    let source_path = base.join(format!("{name}.ts"));
    let source = std::fs::read_to_string(&source_path)
        .map_err(|e| err(1, format!("cannot read hook `{}`: {e}", source_path.display())))?;
    let compiled = Arc::new(hooks::compile(name, &source_path, &source).map_err(|e| err(1, e.to_string()))?);
    let identity_path = match doc.get("identity").and_then(Value::as_str) {
        Some(rel) => Some(base.join(rel)),
        None => default_identity.map(Path::to_path_buf),
    };
    let index = Arc::new(match &identity_path {
        Some(p) => crate::identity::load(p).map_err(|e| err(1, e.to_string()))?.0,
        None => crate::identity::load_bytes(br#"{"version":1}"#, Path::new("(none)")).map_err(|e| err(1, e.to_string()))?.0,
    });
    let settings = settings.get(name).cloned().unwrap_or_default();
    let secrets: BTreeMap<String, String> = doc
        .get("secrets")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect())
        .unwrap_or_default();
    let file_config = doc.get("config").cloned().unwrap_or_else(|| settings.config.clone());
    let cases = doc.get("cases").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut results = Vec::new();
    let label = file.display().to_string();
    for (i, case) in cases.iter().enumerate() {
        let case_name = case.get("name").and_then(Value::as_str).unwrap_or("unnamed").to_owned();
        let name_line = format!("{label}: case {}: {case_name}", i + 1);
        let failure = run_case(case, &compiled, &settings, &file_config, &secrets, &index, pool).await.err();
        results.push(CaseResult { name: name_line, failure });
    }
    Ok(results)
}

async fn run_case(
    case: &Value,
    compiled: &Arc<hooks::Compiled>,
    settings: &HookSettings,
    file_config: &Value,
    secrets: &BTreeMap<String, String>,
    index: &Arc<crate::identity::Index>,
    pool: &hooks::Pool,
) -> Result<(), String> {
    let stubs = parse_stubs(case.get("fetch"))?;
    let server = StubServer::start(stubs.clone()).await.map_err(|e| format!("cannot start the stub server: {e}"))?;
    let local = format!("http://{}", server.addr);
    let mut config = case.get("config").cloned().unwrap_or_else(|| file_config.clone());
    for stub in &stubs {
        rewrite(&mut config, &stub.origin, &local);
    }
    let spec = Arc::new(HookSpec {
        compiled: compiled.clone(),
        limits: hooks::Limits {
            deadline: settings.deadline,
            memory_bytes: settings.memory_bytes,
            stack_bytes: settings.stack_bytes,
            max_output_bytes: settings.max_output_bytes,
            isolation: hooks::Isolation::PerCall,
        },
        config,
        secrets: secrets.clone(),
        fetch: hooks::FetchPolicy {
            allowed_hosts: vec![server.addr.to_string()],
            timeout: settings.fetch_timeout,
            max_response_bytes: settings.max_response_bytes,
            cache_ttl: None,
            ca_file: None,
        },
    });
    let mut input = case.get("request").cloned().ok_or("case needs a `request`")?;
    let request = crate::decision::DecisionRequest::from_json(input.clone()).map_err(|e| format!("invalid request: {e}"))?;
    let principal = match index.resolve_user(request.subject_id()) {
        Some(u) => crate::cel::env::principal_json(index, u),
        None => crate::cel::env::unknown_principal(request.subject_id()),
    };
    if let Value::Object(m) = &mut input {
        m.insert("principal".to_owned(), principal);
    }
    let result = pool.call(spec, input, index.clone()).await;
    drop(server);
    let expect = case.get("expect").ok_or("case needs an `expect`")?;
    let want_error = expect.get("error").and_then(Value::as_bool).unwrap_or(false);
    let outcome = match (result, want_error) {
        (Err(_), true) => return Ok(()),
        (Err(e), false) => return Err(format!("hook failed: {e}")),
        (Ok(o), true) => return Err(format!("want an error, got decision {} ({:?})", o.decision, o.reason)),
        (Ok(o), false) => o,
    };
    let mut diffs = Vec::new();
    if let Some(want) = expect.get("decision").and_then(Value::as_bool)
        && want != outcome.decision {
            diffs.push(format!("decision: want {want}, got {}", outcome.decision));
        }
    if let Some(want) = expect.get("reason").and_then(Value::as_str)
        && outcome.reason.as_deref() != Some(want) {
            diffs.push(format!("reason: want {want:?}, got {:?}", outcome.reason));
        }
    if let Some(Value::Object(want)) = expect.get("outputs") {
        let got = outcome.outputs.unwrap_or(Value::Null);
        for (k, v) in want {
            match got.get(k) {
                Some(g) if same(g, v) => {}
                other => diffs.push(format!("outputs.{k}: want {v}, got {}", other.map_or("nothing".to_owned(), Value::to_string))),
            }
        }
    }
    if diffs.is_empty() { Ok(()) } else { Err(diffs.join(", ")) }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

fn rewrite(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) if s.contains(from) => *s = s.replace(from, to),
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, from, to)),
        Value::Object(m) => m.values_mut().for_each(|x| rewrite(x, from, to)),
        _ => {}
    }
}

fn parse_stubs(v: Option<&Value>) -> Result<Vec<Stub>, String> {
    let mut out = Vec::new();
    for s in v.and_then(Value::as_array).into_iter().flatten() {
        let url = s.get("url").and_then(Value::as_str).ok_or("a fetch stub needs a `url`")?;
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).ok_or("stub urls are http(s)")?;
        let scheme_len = url.len() - rest.len();
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let body = match s.get("body") {
            None => String::new(),
            Some(Value::String(t)) => t.clone(),
            Some(other) => other.to_string(),
        };
        out.push(Stub {
            method: s.get("method").and_then(Value::as_str).unwrap_or("GET").to_ascii_uppercase(),
            origin: format!("{}{host}", url.get(..scheme_len).unwrap_or("http://")),
            path: if path.is_empty() { "/".to_owned() } else { path.to_owned() },
            status: s.get("status").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()).unwrap_or(200),
            body,
        });
    }
    Ok(out)
}

/// A one-case HTTP server on 127.0.0.1 answering with the stubs; stops when told or dropped.
struct StubServer {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl StubServer {
    async fn start(stubs: Vec<Stub>) -> std::io::Result<StubServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stubs = Arc::new(stubs);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let stubs = stubs.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let stubs = stubs.clone();
                        async move {
                            let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                            let method = req.method().as_str().to_owned();
                            let (status, body) = stubs
                                .iter()
                                .find(|s| s.method == method && s.path == path)
                                .map_or((599, format!("no stub for {method} {path}")), |s| (s.status, s.body.clone()));
                            let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(StubServer { addr, task })
    }

}

impl Drop for StubServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! Test cases kept beside policies, run by `verdict test`.
//!
//! A case file is `policies/**/NAME_test.yaml`:
//!
//! ```yaml
//! identity: ../identity/fixture.json   # optional; default: the configured identity file
//! cases:
//!   - name: tiny VMs are allowed
//!     request:                         # an AuthZEN evaluation request
//!       subject: { type: user, id: alice }
//!       action: { name: provision }
//!       resource: { type: cloud.vm, id: vm-1, properties: { monthly_cost: 20 } }
//!     expect:
//!       decision: true
//!       reason: small resources are always allowed   # optional, exact
//!       decided_by: rule:provisioning/tiny-resources # optional, exact
//! ```
//!
//! Cases run against a snapshot built exactly as the server builds it, so a passing suite means
//! the served decisions are the same.

pub mod hook;

use std::path::{Path, PathBuf};

use crate::cel;
use crate::decision::{self, DecisionRequest};
use crate::hooks;
use crate::policy::yaml::{self, Node};
use crate::reload::{Snapshot, Sources};

/// One case's outcome.
#[derive(Debug)]
pub struct CaseResult {
    /// `file: case name`.
    pub name: String,
    /// `None` when the case passed; otherwise what differed.
    pub failure: Option<String>,
}

/// A case file that could not be read or a snapshot that could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct Error {
    /// The case file.
    pub file: PathBuf,
    /// Line of the problem.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

struct Case {
    name: String,
    line: usize,
    request: serde_json::Value,
    decision: bool,
    reason: Option<String>,
    decided_by: Option<String>,
}

/// Finds every case file under `dir`.
pub fn find(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, out);
        } else if crate::policy::is_test_file(&path) {
            out.push(path);
        }
    }
}

/// Runs one case file against the policies in `sources` (its own `identity:` overrides).
pub async fn run_file(file: &Path, sources: &Sources, pool: &hooks::Pool) -> Result<Vec<CaseResult>, Error> {
    let err = |line: usize, message: String| Error { file: file.to_path_buf(), line, message };
    let text = std::fs::read_to_string(file).map_err(|e| err(1, format!("cannot read: {e}")))?;
    let root = yaml::parse(&text).map_err(|e| err(e.line, format!("invalid YAML: {}", e.message)))?;
    let Some(Node::Map { entries, .. }) = root else {
        return Err(err(1, "expected a mapping with `cases`".to_owned()));
    };
    let mut sources = sources.clone();
    let mut cases = Vec::new();
    for (k, v) in &entries {
        match k.as_str() {
            Some("identity") => {
                let rel = v.as_str().ok_or_else(|| err(v.line(), "`identity` must be a path".to_owned()))?;
                let base = file.parent().unwrap_or(Path::new("."));
                sources.identity_file = Some(base.join(rel));
            }
            Some("cases") => {
                let Node::Seq { items, .. } = v else {
                    return Err(err(v.line(), "`cases` must be a list".to_owned()));
                };
                for item in items {
                    cases.push(parse_case(item).map_err(|m| err(item.line(), m))?);
                }
            }
            other => return Err(err(k.line(), format!("unknown key `{}`", other.unwrap_or("?")))),
        }
    }
    let snapshot = Snapshot::build(&sources, &cel::Env::new()).map_err(|e| err(1, e.to_string()))?;
    let name = file.display().to_string();
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        results.push(run_case(&snapshot, &name, case, pool).await);
    }
    Ok(results)
}

fn parse_case(node: &Node) -> Result<Case, String> {
    let Node::Map { entries, .. } = node else { return Err("a case must be a mapping".to_owned()) };
    let get = |key: &str| entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v);
    if let Some((k, _)) = entries
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), Some("name" | "request" | "expect")))
    {
        return Err(format!("unknown key `{}` in case", k.as_str().unwrap_or("?")));
    }
    let name = get("name").and_then(Node::as_str).ok_or("case needs a `name`")?.to_owned();
    let request = get("request").ok_or_else(|| format!("case `{name}` needs a `request`"))?.to_json();
    let expect = get("expect").ok_or_else(|| format!("case `{name}` needs an `expect`"))?.to_json();
    let decision = expect
        .get("decision")
        .and_then(serde_json::Value::as_bool)
        .ok_or_else(|| format!("case `{name}`: `expect.decision` must be true or false"))?;
    let text = |k: &str| expect.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
    Ok(Case { line: node.line(), reason: text("reason"), decided_by: text("decided_by"), name, request, decision })
}

async fn run_case(snapshot: &Snapshot, file: &str, case: Case, pool: &hooks::Pool) -> CaseResult {
    let name = format!("{file}:{}: {}", case.line, case.name);
    let request = match DecisionRequest::from_json(case.request) {
        Ok(r) => r,
        Err(e) => return CaseResult { name, failure: Some(format!("invalid request: {e}")) },
    };
    let d = decision::decide(snapshot, &request, chrono::Utc::now(), Some(pool)).await;
    let mut diffs = Vec::new();
    if d.allow != case.decision {
        diffs.push(format!("decision: want {}, got {}", case.decision, d.allow));
    }
    let got_reason = d.reason.as_deref();
    if let Some(want) = &case.reason
        && got_reason != Some(want.as_str()) {
            diffs.push(format!("reason: want {want:?}, got {got_reason:?}"));
        }
    let got_by = d.decided_by.as_str();
    if let Some(want) = &case.decided_by
        && got_by != want.as_str() {
            diffs.push(format!("decided_by: want {want:?}, got {got_by:?}"));
        }
    if !diffs.is_empty() && !d.errors.is_empty() {
        diffs.push(format!("errors: {}", d.errors.join("; ")));
    }
    CaseResult { name, failure: (!diffs.is_empty()).then(|| diffs.join(", ")) }
}

//! The admin listener: health, readiness, metrics, status and reload.
//!
//! It binds 127.0.0.1 by default; config refuses a non-loopback address unless a bearer token
//! is set, and with a token every route except `/healthz` and `/readyz` requires it (probes
//! stay simple, everything that reveals or changes state is guarded).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;

use super::respond::{self, ApiError, Body};
use crate::decision_log::DecisionLog;
use crate::metrics::Metrics;
use crate::hookstate::Versions;
use crate::reload::{Store, Trigger};

/// The admin handler.
#[derive(Debug, Clone)]
pub struct Admin {
    store: Arc<Store>,
    log: DecisionLog,
    metrics: Arc<Metrics>,
    token: Option<String>,
    versions: Option<Arc<Versions>>,
    pool: Option<crate::hooks::Pool>,
}

/// Largest hook source accepted by `PUT /v1/hooks/NAME`.
const MAX_HOOK_SOURCE_BYTES: usize = 1 << 20;

// === impl Admin ===

impl Admin {
    /// Builds the handler.
    pub fn new(
        store: Arc<Store>,
        log: DecisionLog,
        metrics: Arc<Metrics>,
        token: Option<String>,
        versions: Option<Arc<Versions>>,
        pool: Option<crate::hooks::Pool>,
    ) -> Admin {
        Admin { store, log, metrics, token, versions, pool }
    }

    /// Answers one admin request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match self.dispatch(req).await {
            Ok(r) => r,
            Err(e) => respond::error(&e),
        }
    }

    async fn dispatch(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_owned();
        let open = matches!(path.as_str(), "/healthz" | "/readyz");
        if !open && !self.authorized(&req) {
            return Err(ApiError::Unauthorized);
        }
        let method = req.method().clone();
        let want = |m: Method, allow: &'static str| -> Result<(), ApiError> {
            if method == m { Ok(()) } else { Err(ApiError::MethodNotAllowed { method: method.to_string(), allow }) }
        };
        match path.as_str() {
            "/healthz" => {
                want(Method::GET, "GET")?;
                Ok(respond::json(StatusCode::OK, &json!({"status": "ok"})))
            }
            "/readyz" => {
                want(Method::GET, "GET")?;
                let snap = self.store.current();
                let mut reasons = Vec::new();
                if self.log.is_closed() {
                    reasons.push("decision log closed".to_owned());
                }
                if let Some(scim) = &snap.scim
                    && !scim.ready()
                {
                    reasons.push(if scim.data().is_none() {
                        "identity: no successful scim sync yet".to_owned()
                    } else {
                        "identity: scim data is stale and `identity.scim.stale_is_ready` is false".to_owned()
                    });
                }
                let ready = reasons.is_empty();
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                let mut body = serde_json::Map::new();
                body.insert("ready".to_owned(), json!(ready));
                body.insert("revision".to_owned(), json!(&*snap.revision));
                if let Some(scim) = &snap.scim {
                    body.insert("identity_stale".to_owned(), json!(scim.is_stale()));
                }
                if !ready {
                    body.insert("reasons".to_owned(), json!(reasons));
                }
                Ok(respond::json(status, &serde_json::Value::Object(body)))
            }
            "/metrics" => {
                want(Method::GET, "GET")?;
                let scim = self.store.sources().scim.clone();
                let text = self.metrics.render(
                    &self.log.stats(),
                    self.pool.as_ref().map(crate::hooks::Pool::stats).as_ref(),
                    scim.as_deref(),
                );
                Ok(respond::with_type(
                    StatusCode::OK,
                    Bytes::from(text),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ))
            }
            "/v1/status" => {
                want(Method::GET, "GET")?;
                Ok(respond::json(StatusCode::OK, &self.status()))
            }
            "/v1/reload" => {
                want(Method::POST, "POST")?;
                let revision = self.reload().await?;
                Ok(respond::json(StatusCode::OK, &json!({"ok": true, "revision": &*revision, "status": self.store.status()})))
            }
            p if p == "/v1/hooks" || p.starts_with("/v1/hooks/") => {
                let rest: Vec<String> = p.trim_start_matches("/v1/hooks").split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
                self.hooks(method, &rest, req).await
            }
            _ => Err(ApiError::NotFound(path)),
        }
    }

    /// `/v1/hooks…`: list, history, sources, deploy and rollback.
    async fn hooks(&self, method: Method, rest: &[String], req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let versions = self.versions.as_ref().ok_or_else(|| ApiError::Internal("no hook state directory".to_owned()))?;
        let not_allowed = |allow: &'static str| ApiError::MethodNotAllowed { method: method.to_string(), allow };
        let parts: Vec<&str> = rest.iter().map(String::as_str).collect();
        match parts.as_slice() {
            [] => {
                if method != Method::GET {
                    return Err(not_allowed("GET"));
                }
                let snap = self.store.current();
                let mut hooks: Vec<_> = snap
                    .hooks
                    .values()
                    .map(|h| json!({"name": &*h.compiled.name, "version": &*h.compiled.version,
                        "deployments": versions.history(&h.compiled.name).map(|v| v.len()).unwrap_or(0)}))
                    .collect();
                hooks.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                Ok(respond::json(StatusCode::OK, &json!({"hooks": hooks, "revision": &*snap.revision})))
            }
            [name] => {
                if method != Method::PUT {
                    return Err(not_allowed("PUT"));
                }
                let bytes = read_limited(req).await?;
                let source = String::from_utf8(bytes.to_vec())
                    .map_err(|_| ApiError::BadJson("hook source is not valid UTF-8".to_owned()))?;
                // Compile before anything is recorded: a bad version never replaces a good one.
                // Compiling takes milliseconds (a hostile top level up to its interrupt): off the reactor.
                let (hook, text) = ((*name).to_owned(), source.clone());
                tokio::task::spawn_blocking(move || {
                    crate::hooks::compile(&hook, &std::path::PathBuf::from(format!("{hook}.ts")), &text).map(drop)
                })
                .await
                .map_err(|e| ApiError::Internal(format!("compile task failed: {e}")))?
                .map_err(|e| ApiError::ReloadFailed(format!("hook rejected: {e}")))?;
                let deployment = versions.deploy(name, &source).map_err(|e| ApiError::Invalid(bad_hook(e.to_string())))?;
                let revision = self.reload().await?;
                Ok(respond::json(StatusCode::OK, &json!({"name": name, "deployment": deployment, "revision": &*revision})))
            }
            [name, "versions"] => {
                if method != Method::GET {
                    return Err(not_allowed("GET"));
                }
                let history = versions.history(name).map_err(|e| ApiError::Invalid(bad_hook(e.to_string())))?;
                if history.is_empty() {
                    return Err(ApiError::NotFound(format!("/v1/hooks/{name}")));
                }
                let active = self.store.current().hooks.get(*name).map(|h| h.compiled.version.to_string());
                Ok(respond::json(StatusCode::OK, &json!({"name": name, "active": active, "deployments": history})))
            }
            [name, "versions", version] => {
                if method != Method::GET {
                    return Err(not_allowed("GET"));
                }
                let source = versions.source(name, version).map_err(|e| match e {
                    crate::hookstate::Error::UnknownVersion { .. } => ApiError::NotFound(format!("/v1/hooks/{name}/versions/{version}")),
                    other => ApiError::Invalid(bad_hook(other.to_string())),
                })?;
                Ok(respond::with_type(StatusCode::OK, Bytes::from(source), "text/plain; charset=utf-8"))
            }
            [name, "rollback"] => {
                if method != Method::POST {
                    return Err(not_allowed("POST"));
                }
                let bytes = read_limited(req).await?;
                let to = if bytes.is_empty() {
                    None
                } else {
                    let v: serde_json::Value =
                        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadJson(e.to_string()))?;
                    v.get("version").and_then(serde_json::Value::as_str).map(str::to_owned)
                };
                let deployment = versions.rollback(name, to.as_deref()).map_err(|e| match e {
                    crate::hookstate::Error::UnknownVersion { .. } | crate::hookstate::Error::NothingToRollBack(_) => {
                        ApiError::ReloadFailed(e.to_string())
                    }
                    other => ApiError::Invalid(bad_hook(other.to_string())),
                })?;
                let revision = self.reload().await?;
                Ok(respond::json(StatusCode::OK, &json!({"name": name, "deployment": deployment, "revision": &*revision})))
            }
            _ => Err(ApiError::NotFound(format!("/v1/hooks/{}", rest.join("/")))),
        }
    }

    async fn reload(&self) -> Result<Arc<str>, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.reload(Trigger::Admin))
            .await
            .map_err(|e| ApiError::Internal(format!("reload task failed: {e}")))?
            .map_err(|e| ApiError::ReloadFailed(format!("reload failed, previous snapshot keeps serving: {e}")))
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else { return true };
        let sent = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some(sent) = sent.strip_prefix("Bearer ") else { return false };
        constant_time_eq(sent.as_bytes(), token.as_bytes())
    }

    fn status(&self) -> serde_json::Value {
        let snap = self.store.current();
        let counts = snap.identity.counts();
        json!({
            "revision": &*snap.revision,
            "loaded_at": snap.loaded_at,
            "last_reload": self.store.status(),
            "policies": {
                "dir": self.store.sources().policy_dir,
                "count": snap.policies.policies().len(),
                "rules": snap.policies.rule_count(),
            },
            "identity": {
                "file": self.store.sources().identity_file,
                "revision": &*snap.identity_revision,
                "counts": counts,
                "report": snap.identity_report,
                "freshness": snap.freshness(),
                "scim": snap.scim.as_ref().map(|s| json!({
                    "base_url": s.settings().base_url,
                    "stale": s.is_stale(),
                    "ready": s.ready(),
                    "interval_ms": u64::try_from(s.settings().interval.as_millis()).unwrap_or(u64::MAX),
                    "health": s.health(),
                    "data": s.data().map(|d| json!({"hash": d.hash, "fetched_at": d.fetched_at,
                        "users": d.users.len(), "groups": d.groups.len(), "paging": format!("{:?}", d.paging).to_lowercase()})),
                    "merge": snap.merge_report,
                })),
            },
            "decision_log": self.log.stats(),
            "hooks": self.pool.as_ref().map(|p| {
                let s = p.stats();
                json!({"workers": p.workers(), "queued": p.queued(), "calls": s.calls, "queue_full": s.queue_full,
                    "timeouts": s.timeouts, "out_of_memory": s.oom, "stack_overflows": s.stack_overflows,
                    "errors": s.errors, "contexts_built": s.contexts_built, "contexts_discarded": s.contexts_discarded})
            }),
        })
    }
}

fn bad_hook(message: String) -> crate::decision::RequestError {
    crate::decision::RequestError { path: "hook".to_owned(), problem: crate::decision::Problem::Invalid(message) }
}

async fn read_limited(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let body = http_body_util::Limited::new(req.into_body(), MAX_HOOK_SOURCE_BYTES);
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge(MAX_HOOK_SOURCE_BYTES as u64)),
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

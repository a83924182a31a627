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
use crate::reload::{Store, Trigger};

/// The admin handler.
#[derive(Debug, Clone)]
pub struct Admin {
    store: Arc<Store>,
    log: DecisionLog,
    metrics: Arc<Metrics>,
    token: Option<String>,
}

// === impl Admin ===

impl Admin {
    /// Builds the handler.
    pub fn new(store: Arc<Store>, log: DecisionLog, metrics: Arc<Metrics>, token: Option<String>) -> Admin {
        Admin { store, log, metrics, token }
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
                let ready = !self.log.is_closed();
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                Ok(respond::json(
                    status,
                    &json!({"ready": ready, "revision": &*self.store.current().revision}),
                ))
            }
            "/metrics" => {
                want(Method::GET, "GET")?;
                let text = self.metrics.render(&self.log.stats());
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
                let store = self.store.clone();
                let result = tokio::task::spawn_blocking(move || store.reload(Trigger::Admin))
                    .await
                    .map_err(|e| ApiError::Internal(format!("reload task failed: {e}")))?;
                match result {
                    Ok(revision) => Ok(respond::json(
                        StatusCode::OK,
                        &json!({"ok": true, "revision": &*revision, "status": self.store.status()}),
                    )),
                    Err(e) => Err(ApiError::ReloadFailed(format!("reload failed, previous snapshot keeps serving: {e}"))),
                }
            }
            _ => Err(ApiError::NotFound(path)),
        }
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
            },
            "decision_log": self.log.stats(),
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

//! The decision API: routing, body limits, JSON parsing, and the call into the engine.
//!
//! Order of checks for a POST: route and method (404/405) → content type (415) → declared
//! length (413) → body, read under a size cap and a deadline (413/408) → nesting depth (400)
//! → JSON syntax (400) → AuthZEN shape (400) → decide and log (503 if the log cannot take the
//! record) → 200.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::respond::{self, ApiError, Body};
use crate::decision::search::{self, SearchRequest};
use crate::decision::{DecisionRequest, Engine, Evaluations, RequestMeta};
use crate::metrics::Metrics;

/// Limits applied to every decision request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body.
    pub max_body_bytes: u64,
    /// Time to receive the body.
    pub body_read_timeout: Duration,
    /// Deepest JSON nesting.
    pub max_json_depth: usize,
    /// Most batch items.
    pub max_batch_items: usize,
}

/// The decision listener's handler.
#[derive(Debug, Clone)]
pub struct Api {
    engine: Engine,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Base URL advertised in the AuthZEN metadata.
    base_url: String,
}

#[derive(Clone, Copy)]
enum Route {
    Evaluation,
    Evaluations,
    Search(search::Kind),
    Metadata,
}

// === impl Api ===

impl Api {
    /// Builds the handler.
    pub fn new(engine: Engine, limits: Limits, metrics: Arc<Metrics>, base_url: String) -> Api {
        Api { engine, limits, metrics, base_url }
    }

    /// Answers one request; never fails (errors become JSON error responses).
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let request_id = req.headers().get("x-request-id").cloned();
        let (label, mut resp) = match route(req.method(), req.uri().path()) {
            Ok(r) => {
                let label = match r {
                    Route::Evaluation => "evaluation",
                    Route::Evaluations => "evaluations",
                    Route::Search(search::Kind::Subject) => "search_subject",
                    Route::Search(search::Kind::Resource) => "search_resource",
                    Route::Search(search::Kind::Action) => "search_action",
                    Route::Metadata => "metadata",
                };
                let meta = RequestMeta {
                    request_id: request_id.as_ref().and_then(|v| v.to_str().ok()).map(str::to_owned),
                };
                let resp = match self.dispatch(r, req, &meta).await {
                    Ok(resp) => resp,
                    Err(e) => {
                        match &e {
                            ApiError::Unavailable(crate::decision::Error::Log(_)) => self.metrics.log_unavailable(),
                            ApiError::Unavailable(crate::decision::Error::Overloaded) => self.metrics.hook_overloaded(),
                            _ => {}
                        }
                        respond::error(&e)
                    }
                };
                (label, resp)
            }
            Err(e) => ("other", respond::error(&e)),
        };
        if let Some(id) = request_id {
            resp.headers_mut().insert("x-request-id", id);
        }
        self.metrics.http(label, resp.status().as_u16());
        resp
    }

    async fn dispatch(&self, route: Route, req: Request<Incoming>, meta: &RequestMeta) -> Result<Response<Body>, ApiError> {
        match route {
            Route::Metadata => Ok(self.metadata()),
            Route::Search(kind) => {
                let body = self.read_json(req).await?;
                let request = SearchRequest::from_json(kind, body)?;
                // Boxed: a search's future is the largest of the routes, and held inline it
                // would make every request's future as large, to build and move each time.
                let (body, id) = Box::pin(self.engine.search(request, meta)).await?;
                let mut resp = respond::json(StatusCode::OK, &body);
                if let Ok(v) = HeaderValue::from_str(&id) {
                    resp.headers_mut().insert("x-decision-id", v);
                }
                Ok(resp)
            }
            Route::Evaluation => {
                let bytes = read_body(req, &self.limits).await?;
                let request = match DecisionRequest::from_bytes(bytes.clone(), self.limits.max_json_depth) {
                    Some(request) => request,
                    // Too deep, not a body the fast parser takes, or not valid: the long way
                    // gives the request or the exact error.
                    None => {
                        let body = parse_json(&bytes, self.limits.max_json_depth)?;
                        DecisionRequest::from_json(body)?.with_raw(bytes)
                    }
                };
                let served = self.engine.evaluate(request, meta).await?;
                Ok(respond::evaluation(&served))
            }
            Route::Evaluations => {
                let body = self.read_json(req).await?;
                match Evaluations::from_json(body, self.limits.max_batch_items)? {
                    Evaluations::Single(request) => {
                        let served = self.engine.evaluate(*request, meta).await?;
                        Ok(respond::evaluation(&served))
                    }
                    Evaluations::Batch(batch) => {
                        let item_context = batch.item_context;
                        // Boxed, as the search above: the largest route futures are kept off
                        // the path of single evaluations.
                        let results = Box::pin(self.engine.evaluate_batch(batch, meta)).await?;
                        Ok(respond::evaluations(&results, item_context))
                    }
                }
            }
        }
    }

    fn metadata(&self) -> Response<Body> {
        let base = &self.base_url;
        respond::json(
            StatusCode::OK,
            &serde_json::json!({
                "policy_decision_point": base,
                "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
                "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
                "search_subject_endpoint": format!("{base}/access/v1/search/subject"),
                "search_resource_endpoint": format!("{base}/access/v1/search/resource"),
                "search_action_endpoint": format!("{base}/access/v1/search/action"),
            }),
        )
    }

    async fn read_json(&self, req: Request<Incoming>) -> Result<serde_json::Value, ApiError> {
        let bytes = read_body(req, &self.limits).await?;
        parse_json(&bytes, self.limits.max_json_depth)
    }
}

/// Parses a body after checking its nesting depth.
fn parse_json(bytes: &[u8], max_depth: usize) -> Result<serde_json::Value, ApiError> {
    check_depth(bytes, max_depth)?;
    crate::json::parse(bytes).map_err(|e| ApiError::BadJson(e.to_string()))
}

fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let (route, allow) = match path {
        "/access/v1/evaluation" => (Route::Evaluation, "POST"),
        "/access/v1/evaluations" => (Route::Evaluations, "POST"),
        "/access/v1/search/subject" => (Route::Search(search::Kind::Subject), "POST"),
        "/access/v1/search/resource" => (Route::Search(search::Kind::Resource), "POST"),
        "/access/v1/search/action" => (Route::Search(search::Kind::Action), "POST"),
        "/.well-known/authzen-configuration" => (Route::Metadata, "GET"),
        _ => return Err(ApiError::NotFound(path.to_owned())),
    };
    let ok = match route {
        Route::Metadata => method == Method::GET || method == Method::HEAD,
        _ => method == Method::POST,
    };
    if ok { Ok(route) } else { Err(ApiError::MethodNotAllowed { method: method.to_string(), allow }) }
}

/// Reads a JSON body under the size cap and deadline.
pub(super) async fn read_body(req: Request<Incoming>, limits: &Limits) -> Result<Bytes, ApiError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
    if !is_json(content_type) {
        return Err(ApiError::UnsupportedMediaType(String::from_utf8_lossy(content_type).into_owned()));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(ApiError::PayloadTooLarge(limits.max_body_bytes));
    }
    let limit = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let body = Limited::new(req.into_body(), limit);
    let mut collect = std::pin::pin!(body.collect());
    // A small body usually arrives with the head: then the first poll finishes it and no
    // timer is armed (one timer-wheel insert and removal per request saved).
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match first {
        std::task::Poll::Ready(done) => Ok(done),
        std::task::Poll::Pending => tokio::time::timeout(limits.body_read_timeout, collect).await,
    };
    match collected {
        Err(_) => Err(ApiError::BodyTimeout(limits.body_read_timeout.as_millis())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge(limits.max_body_bytes)),
        Ok(Err(e)) => Err(ApiError::BodyRead(e.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type.split(|b| *b == b';').next().unwrap_or_default();
    let essence = essence.trim_ascii();
    essence.eq_ignore_ascii_case(b"application/json")
}

/// Rejects bodies nested deeper than `max` before the parser recurses into them.
fn check_depth(bytes: &[u8], max: usize) -> Result<(), ApiError> {
    // Nesting never exceeds the number of `{` and `[` bytes (inside strings or not); counting
    // them is one vectorized pass, so the exact scan below runs only for bodies that have
    // more openers than the limit.
    if bytes.iter().filter(|&&b| b == b'{' || b == b'[').count() <= max {
        return Ok(());
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(ApiError::TooDeep(max));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn depth_counts_only_structure() {
        assert!(check_depth(br#"{"a":[[["[[[[[[["]]]}"#, 4).is_ok());
        assert!(check_depth(b"[[[[[", 4).is_err());
        assert!(check_depth(b"[[[[]]]][[[[]]]]", 4).is_ok());
        assert!(check_depth(br#"["[[[[[[[[", {"a": "{{{{{{"}]"#, 4).is_ok());
        assert!(check_depth(br#"["[[[[[[[[", [[[[{}]]]]]"#, 4).is_err());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"Application/JSON; charset=utf-8"));
        assert!(!is_json(b"text/plain"));
        assert!(!is_json(b""));
    }
}

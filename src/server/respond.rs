//! The one place where errors and decisions become HTTP responses.
//!
//! Every non-2xx answer has a JSON body `{"error": CODE, "message": TEXT}` that says what was
//! wrong. Anything that is not a known client error is a 500 with a `warn!`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use crate::decision::{self, ItemResult, RequestError, Served};

/// The response body type of both listeners.
pub type Body = Full<Bytes>;

/// Why a request could not be answered with a decision.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `Content-Type` is not JSON.
    #[error("content type must be application/json, got `{0}`")]
    UnsupportedMediaType(String),
    /// The body is larger than `server.max_body_bytes`.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(u64),
    /// The client did not send the body in time.
    #[error("request body not received within {0} ms")]
    BodyTimeout(u128),
    /// The body could not be read.
    #[error("cannot read request body: {0}")]
    BodyRead(String),
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    BadJson(String),
    /// The body nests deeper than `server.max_json_depth`.
    #[error("JSON nesting exceeds the limit of {0}")]
    TooDeep(usize),
    /// The JSON does not have the required shape.
    #[error("invalid request: {0}")]
    Invalid(#[from] RequestError),
    /// No such route.
    #[error("no route for `{0}`")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method `{method}` is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// The method sent.
        method: String,
        /// The methods allowed.
        allow: &'static str,
    },
    /// The admin API needs a bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The decision could not be logged.
    #[error("{0}")]
    Unavailable(#[from] decision::Error),
    /// A reload failed.
    #[error("{0}")]
    ReloadFailed(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct EvaluationBody<'a> {
    decision: bool,
    context: DecisionContext<'a>,
}

#[derive(Serialize)]
struct DecisionContext<'a> {
    decision_id: &'a str,
    decided_by: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    revision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    errors: &'a [String],
}

#[derive(Serialize)]
struct BatchBody<'a> {
    evaluations: Vec<BatchItem<'a>>,
    context: BatchContext<'a>,
}

#[derive(Serialize)]
struct BatchItem<'a> {
    decision: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<ItemContext<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ItemContext<'a> {
    Decided(DecisionContext<'a>),
    Error { error: ItemError },
}

#[derive(Serialize)]
struct ItemError {
    status: u16,
    message: String,
}

#[derive(Serialize)]
struct BatchContext<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'a str>,
    decisions: Vec<Option<DecisionContext<'a>>>,
}

// === impl ApiError ===

impl ApiError {
    /// The status code and the machine-readable code.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::BodyRead(_) | ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::TooDeep(_) => (StatusCode::BAD_REQUEST, "too_deep"),
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::ReloadFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "reload_failed"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The response for an error.
pub fn error(e: &ApiError) -> Response<Body> {
    let (status, code) = e.status();
    if status.is_server_error() && !matches!(e, ApiError::Unavailable(_)) {
        tracing::warn!(error = %e, "internal error answered with 500");
    }
    let message = e.to_string();
    let mut resp = json(status, &ErrorBody { error: code, message: &message });
    match e {
        ApiError::MethodNotAllowed { allow, .. } => {
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        ApiError::Unauthorized => {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        ApiError::Unavailable(_) => {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    resp
}

fn context(s: &Served) -> DecisionContext<'_> {
    DecisionContext {
        decision_id: &s.id,
        decided_by: s.decision.decided_by.as_str(),
        reason: s.decision.reason.as_deref(),
        revision: &s.revision,
        outputs: s.decision.outputs.as_ref(),
        errors: &s.decision.errors,
    }
}

/// The response for one evaluation (AuthZEN §6.2), with Verdict's context.
pub fn evaluation(served: &Served) -> Response<Body> {
    let body = EvaluationBody { decision: served.decision.allow, context: context(served) };
    let mut resp = match write_evaluation(&body) {
        Some(bytes) => with_type(StatusCode::OK, Bytes::from(bytes), "application/json"),
        None => json(StatusCode::OK, &body),
    };
    if let Ok(v) = HeaderValue::from_str(&served.id) {
        resp.headers_mut().insert(&X_DECISION_ID, v);
    }
    resp
}

/// `body` as `serde_json` would write it, field by field, when it has no outputs and no errors
/// (most answers); `None` for the rest, which go through `serde_json`.
fn write_evaluation(body: &EvaluationBody<'_>) -> Option<Vec<u8>> {
    let c = &body.context;
    if c.outputs.is_some() || !c.errors.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(if body.decision { br#"{"decision":true,"context":{"decision_id":"# } else { br#"{"decision":false,"context":{"decision_id":"# });
    let text = |out: &mut Vec<u8>, key: &[u8], value: &str| {
        out.extend_from_slice(key);
        crate::json::write_str(out, value).ok()
    };
    text(&mut out, b"", c.decision_id)?;
    text(&mut out, br#","decided_by":"#, &c.decided_by)?;
    if let Some(reason) = c.reason {
        text(&mut out, br#","reason":"#, reason)?;
    }
    text(&mut out, br#","revision":"#, c.revision)?;
    out.extend_from_slice(b"}}");
    Some(out)
}

/// `X-Decision-ID`, built once rather than parsed from a string per response.
static X_DECISION_ID: http::HeaderName = http::HeaderName::from_static("x-decision-id");

/// The response for a batch (AuthZEN §7.2). Items carry only `decision` unless the request set
/// `options.verdict_item_context`, so strict interop comparisons pass; Verdict's per-item
/// context is in the top-level `context.decisions`, in item order. Invalid items always carry
/// their error (§7.2.1).
pub fn evaluations(results: &[ItemResult], item_context: bool) -> Response<Body> {
    let mut ids = Vec::new();
    let mut revision = None;
    let mut items = Vec::with_capacity(results.len());
    let mut decisions = Vec::with_capacity(results.len());
    for r in results {
        match r {
            ItemResult::Decided(s) => {
                ids.push(s.id.as_str());
                revision = Some(&*s.revision);
                items.push(BatchItem {
                    decision: s.decision.allow,
                    context: item_context.then(|| ItemContext::Decided(context(s))),
                });
                decisions.push(Some(context(s)));
            }
            ItemResult::Invalid(e) => {
                items.push(BatchItem {
                    decision: false,
                    context: Some(ItemContext::Error { error: ItemError { status: 400, message: e.to_string() } }),
                });
                decisions.push(None);
            }
        }
    }
    let mut resp =
        json(StatusCode::OK, &BatchBody { evaluations: items, context: BatchContext { revision, decisions } });
    if let Ok(v) = HeaderValue::from_str(&ids.join(",")) {
        resp.headers_mut().insert(&X_DECISION_ID, v);
    }
    resp
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    // Most answers are a decision with its context: one allocation, no regrowth.
    let mut bytes = Vec::with_capacity(256);
    match serde_json::to_writer(&mut bytes, body) {
        Ok(()) => with_type(status, Bytes::from(bytes), "application/json"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode response");
            with_type(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(br#"{"error":"internal","message":"cannot encode response"}"#),
                "application/json",
            )
        }
    }
}

/// A response with a body of the given content type.
pub fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written evaluation body is byte for byte what `serde_json` writes, and leaves
    /// bodies with outputs or errors to it.
    #[test]
    fn evaluation_bodies_are_what_serde_writes() {
        let outputs = serde_json::json!({"username": "jdoe"});
        let errors = vec!["rule r1: no such key".to_owned()];
        for decision in [true, false] {
            for reason in [None, Some("up to $50"), Some("a \"quoted\" \\ reason\n"), Some("é ∑")] {
                for decided_by in ["rule:p/r", "default", "hook:h@3 \u{1}"] {
                    let context = DecisionContext {
                        decision_id: "019ab-0",
                        decided_by: decided_by.into(),
                        reason,
                        revision: "r-1",
                        outputs: None,
                        errors: &[],
                    };
                    let body = EvaluationBody { decision, context };
                    let fast = write_evaluation(&body).unwrap();
                    assert_eq!(String::from_utf8(fast).unwrap(), serde_json::to_string(&body).unwrap());
                }
            }
        }
        let with = |outputs, errors| EvaluationBody {
            decision: true,
            context: DecisionContext { decision_id: "i", decided_by: "default".into(), reason: None, revision: "r", outputs, errors },
        };
        assert!(write_evaluation(&with(Some(&outputs), &[])).is_none());
        assert!(write_evaluation(&with(None, &errors)).is_none());
    }
}

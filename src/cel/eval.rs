//! Per-request bindings and evaluation.
//!
//! [`Bindings`] is a `VariableResolver`: CEL asks it for a variable by name when a rule reads
//! it, and it answers with a borrowed view of the request JSON (no copy of the request). The
//! `principal` (the subject's identity record) and `now` are built at most once per request,
//! on first use, and then lent out. A request kept as a [`Doc`] is read by the direct
//! evaluator as it is; only the interpreter needs its `serde_json` form, built on first use.

use std::sync::OnceLock;

use ::cel::common::value::{CowVal, Val};
use ::cel::context::VariableResolver;
use ::cel::{ExecutionError, Value};

use super::fast::Src;
use super::{Condition, Functions, json};
use crate::json::{Doc, Item};

/// The variables of one request.
pub struct Bindings<'a> {
    request: Request<'a>,
    /// `subject`, `action`, `resource`, `context` and `principal`, for the direct evaluator.
    roots: [Src<'a>; 5],
    principal: &'a serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
    principal_val: OnceLock<Box<dyn Val + 'a>>,
    now_val: OnceLock<Option<Box<dyn Val + 'a>>>,
}

/// The request the variables are read from.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// A request parsed into `serde_json`.
    Json(&'a serde_json::Value),
    /// A request kept as its document: `subject`, `action`, `resource` and `context` (when
    /// present) in it, the cell its `serde_json` form goes into when the interpreter asks for
    /// a variable, and the document.
    Doc([Option<Item<'a>>; 4], &'a OnceLock<serde_json::Value>, &'a Doc),
}

/// A condition that could not be evaluated. Kept unformatted until it is logged.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The condition produced something other than a boolean.
    #[error("condition evaluated to {0}, not a bool")]
    NotBool(&'static str),
    /// CEL failed, e.g. a missing key without `has()`.
    #[error("{0}")]
    Execution(ExecutionError),
}

static EMPTY_OBJECT: OnceLock<serde_json::Value> = OnceLock::new();

fn empty_object() -> &'static serde_json::Value {
    EMPTY_OBJECT.get_or_init(|| serde_json::Value::Object(serde_json::Map::new()))
}

// === impl Bindings ===

impl<'a> Bindings<'a> {
    /// Binds a validated AuthZEN request (`subject`, `action`, `resource`, optional `context`) and
    /// the subject's identity record (`principal`, an object).
    pub fn new(
        request: &'a serde_json::Value,
        principal: &'a serde_json::Value,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        Bindings::of(Request::Json(request), principal, now)
    }

    /// Binds a validated request in either form.
    pub fn of(request: Request<'a>, principal: &'a serde_json::Value, now: chrono::DateTime<chrono::Utc>) -> Self {
        let absent = Src::Json(empty_object());
        let [subject, action, resource, context] = match request {
            Request::Json(json) => ["subject", "action", "resource", "context"].map(|k| json.get(k).map_or(absent, Src::Json)),
            Request::Doc(entities, ..) => entities.map(|e| e.map_or(absent, Src::Doc)),
        };
        Bindings {
            request,
            roots: [subject, action, resource, context, Src::Json(principal)],
            principal,
            now,
            principal_val: OnceLock::new(),
            now_val: OnceLock::new(),
        }
    }
}

impl VariableResolver for Bindings<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value: &'b serde_json::Value = match variable {
            "subject" | "action" | "resource" | "context" => {
                let request = match self.request {
                    Request::Json(json) => json,
                    Request::Doc(_, json, doc) => json.get_or_init(|| doc.to_value()),
                };
                request.get(variable).unwrap_or(empty_object())
            }
            "principal" => {
                let v = self.principal_val.get_or_init(|| json::borrow(self.principal));
                return Some(CowVal::Borrowed(&**v));
            }
            "now" => {
                let v = self
                    .now_val
                    .get_or_init(|| Box::<dyn Val>::try_from(Value::Timestamp(self.now.fixed_offset())).ok());
                return v.as_deref().map(CowVal::Borrowed);
            }
            _ => return None,
        };
        Some(CowVal::Owned(json::borrow(value)))
    }
}

impl<'a> Bindings<'a> {
    /// The JSON behind the request variables, for the direct evaluator, in the order of
    /// `fast::Root`.
    pub(super) fn roots(&self) -> [Src<'a>; 5] {
        self.roots
    }
}

// === impl Condition ===

impl Condition {
    /// Evaluates the condition for one request.
    ///
    /// A condition with a direct plan (see `fast`) is answered by it when it can be; the
    /// interpreter answers the rest, and every error.
    pub fn evaluate(&self, functions: &Functions, bindings: &Bindings<'_>) -> Result<bool, EvalError> {
        if let Some(answer) = self.plan().and_then(|p| p.eval(bindings)) {
            return Ok(answer);
        }
        self.interpret(functions, bindings)
    }

    /// Evaluates the condition with the `cel` interpreter alone.
    pub fn interpret(&self, functions: &Functions, bindings: &Bindings<'_>) -> Result<bool, EvalError> {
        let mut scope = functions.scope();
        scope.set_variable_resolver(bindings);
        match self.program().execute(&scope) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(EvalError::NotBool(kind(&other))),
            Err(e) => Err(EvalError::Execution(e)),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Int(_) | Value::UInt(_) => "an int",
        Value::Float(_) => "a double",
        Value::String(_) => "a string",
        Value::Null => "null",
        _ => "a non-boolean value",
    }
}

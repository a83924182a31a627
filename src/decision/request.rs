//! AuthZEN request bodies: validated once, kept as JSON so CEL can borrow from them.
//!
//! Validation follows AuthZEN 1.0 §5–§7 and §10.1.1: a missing required member or a member of
//! the wrong type is an error naming its path (the server answers 400); unknown members are
//! ignored. A batch item that is invalid is an item error, not a request error (§7.2.1).

use serde_json::{Map, Value};

/// One validated evaluation request: an object with `subject`, `action`, `resource` and
/// optionally `context`, exactly as received (unknown members included, for the log).
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    body: Value,
    /// The bytes `body` was parsed from, when they are the whole request: logged as sent.
    raw: Option<bytes::Bytes>,
}

/// A validated batch (`/access/v1/evaluations`).
#[derive(Debug)]
pub struct BatchRequest {
    /// The items, after default merging; an item that failed validation is its error.
    pub items: Vec<Result<DecisionRequest, RequestError>>,
    /// How to run the items.
    pub semantic: Semantic,
    /// Whether each item's response carries Verdict's `context` (option `verdict_item_context`).
    pub item_context: bool,
}

/// What `/access/v1/evaluations` was asked to do.
#[derive(Debug)]
pub enum Evaluations {
    /// `evaluations` absent or empty: behave exactly like `/access/v1/evaluation`.
    Single(DecisionRequest),
    /// A non-empty batch.
    Batch(BatchRequest),
}

/// `options.evaluations_semantic` (AuthZEN §7.1.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantic {
    /// Run every item.
    ExecuteAll,
    /// Stop after the first deny or failure.
    DenyOnFirstDeny,
    /// Stop after the first permit.
    PermitOnFirstPermit,
}

/// A request body that does not have the required shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct RequestError {
    /// JSON path of the offending member, e.g. `subject.type` or `evaluations[2].resource`.
    pub path: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// The kinds of shape error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Problem {
    /// A required member is absent.
    #[error("missing required member")]
    Missing,
    /// A member has the wrong JSON type.
    #[error("must be {0}")]
    WrongType(&'static str),
    /// A member has a value outside its set.
    #[error("{0}")]
    Invalid(String),
}

// === impl DecisionRequest ===

impl DecisionRequest {
    /// Validates a single evaluation body.
    pub fn from_json(body: Value) -> Result<DecisionRequest, RequestError> {
        let Value::Object(map) = &body else {
            return Err(err("$", Problem::WrongType("a JSON object")));
        };
        validate(map, "")?;
        Ok(DecisionRequest { body, raw: None })
    }

    /// Keeps the bytes the request was parsed from, so the decision record logs them as sent
    /// instead of encoding the parsed value again.
    #[must_use]
    pub fn with_raw(self, raw: bytes::Bytes) -> DecisionRequest {
        DecisionRequest { raw: Some(raw), ..self }
    }

    /// The request as JSON: `{subject, action, resource, context?, …}`.
    pub fn json(&self) -> &Value {
        &self.body
    }

    /// The request for the decision record: the bytes as sent when kept, else the JSON.
    pub fn into_logged(self) -> crate::decision_log::RequestJson {
        match self.raw {
            Some(raw) => crate::decision_log::RequestJson::Raw(raw),
            None => crate::decision_log::RequestJson::Parsed(self.body),
        }
    }

    /// `subject.type`.
    pub fn subject_type(&self) -> &str {
        self.str2("subject", "type")
    }

    /// `subject.id`.
    pub fn subject_id(&self) -> &str {
        self.str2("subject", "id")
    }

    /// `action.name`.
    pub fn action_name(&self) -> &str {
        self.str2("action", "name")
    }

    /// `resource.type`.
    pub fn resource_type(&self) -> &str {
        self.str2("resource", "type")
    }

    /// `resource.id`.
    pub fn resource_id(&self) -> &str {
        self.str2("resource", "id")
    }

    // INVARIANT: `validate` checked that these members exist and are strings.
    fn str2(&self, a: &str, b: &str) -> &str {
        self.body.get(a).and_then(|v| v.get(b)).and_then(Value::as_str).unwrap_or_default()
    }
}

// === impl Evaluations ===

impl Evaluations {
    /// Validates an `/access/v1/evaluations` body and merges defaults into each item
    /// (AuthZEN §7.1.1: an item's member replaces the top-level one whole).
    pub fn from_json(body: Value, max_items: usize) -> Result<Evaluations, RequestError> {
        let Value::Object(mut map) = body else {
            return Err(err("$", Problem::WrongType("a JSON object")));
        };
        let semantic = match map.get("options") {
            None | Some(Value::Null) => Semantic::ExecuteAll,
            Some(Value::Object(o)) => match o.get("evaluations_semantic") {
                None | Some(Value::Null) => Semantic::ExecuteAll,
                Some(Value::String(s)) => match s.as_str() {
                    "execute_all" => Semantic::ExecuteAll,
                    "deny_on_first_deny" => Semantic::DenyOnFirstDeny,
                    "permit_on_first_permit" => Semantic::PermitOnFirstPermit,
                    other => {
                        return Err(err(
                            "options.evaluations_semantic",
                            Problem::Invalid(format!(
                                "`{other}` is not one of execute_all, deny_on_first_deny, permit_on_first_permit"
                            )),
                        ));
                    }
                },
                Some(_) => return Err(err("options.evaluations_semantic", Problem::WrongType("a string"))),
            },
            Some(_) => return Err(err("options", Problem::WrongType("an object"))),
        };
        let item_context = map
            .get("options")
            .and_then(|o| o.get("verdict_item_context"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let items = match map.remove("evaluations") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(err("evaluations", Problem::WrongType("an array"))),
        };
        if items.is_empty() {
            return DecisionRequest::from_json(Value::Object(map)).map(Evaluations::Single);
        }
        if items.len() > max_items {
            return Err(err(
                "evaluations",
                Problem::Invalid(format!("has {} items; at most {max_items} are accepted", items.len())),
            ));
        }
        // Defaults are checked only for type here: a missing default is fine as long as every
        // item supplies that member, which the per-item check below decides.
        for key in ["subject", "action", "resource", "context"] {
            if let Some(v) = map.get(key)
                && !v.is_object() && !v.is_null() {
                    return Err(err(key, Problem::WrongType("an object")));
                }
        }
        let items = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let prefix = format!("evaluations[{i}]");
                let Value::Object(mut item) = item else {
                    return Err(err(&prefix, Problem::WrongType("a JSON object")));
                };
                for key in ["subject", "action", "resource", "context"] {
                    if !item.contains_key(key)
                        && let Some(v) = map.get(key).filter(|v| !v.is_null()) {
                            item.insert(key.to_owned(), v.clone());
                        }
                }
                validate(&item, &prefix)?;
                Ok(DecisionRequest { body: Value::Object(item), raw: None })
            })
            .collect();
        Ok(Evaluations::Batch(BatchRequest { items, semantic, item_context }))
    }
}

fn err(path: &str, problem: Problem) -> RequestError {
    RequestError { path: path.to_owned(), problem }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

fn validate(map: &Map<String, Value>, prefix: &str) -> Result<(), RequestError> {
    entity(map, prefix, "subject", &["type", "id"])?;
    entity(map, prefix, "action", &["name"])?;
    entity(map, prefix, "resource", &["type", "id"])?;
    match map.get("context") {
        None | Some(Value::Null | Value::Object(_)) => Ok(()),
        Some(_) => Err(err(&join(prefix, "context"), Problem::WrongType("an object"))),
    }
}

fn entity(map: &Map<String, Value>, prefix: &str, key: &str, required: &[&str]) -> Result<(), RequestError> {
    // Paths are built only for an error: this runs on every request.
    let path = || join(prefix, key);
    let obj = match map.get(key) {
        None | Some(Value::Null) => return Err(err(&path(), Problem::Missing)),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(err(&path(), Problem::WrongType("an object"))),
    };
    for member in required {
        match obj.get(*member) {
            None | Some(Value::Null) => return Err(err(&join(&path(), member), Problem::Missing)),
            Some(Value::String(_)) => {}
            Some(_) => return Err(err(&join(&path(), member), Problem::WrongType("a string"))),
        }
    }
    match obj.get("properties") {
        None | Some(Value::Null | Value::Object(_)) => Ok(()),
        Some(_) => Err(err(&join(&path(), "properties"), Problem::WrongType("an object"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;
    use serde_json::json;

    fn ok() -> Value {
        json!({"subject":{"type":"user","id":"u1"},"action":{"name":"read"},"resource":{"type":"doc","id":"d1"}})
    }

    #[test]
    fn valid_request_exposes_members() {
        let r = DecisionRequest::from_json(ok()).unwrap();
        assert_eq!((r.subject_id(), r.action_name(), r.resource_type()), ("u1", "read", "doc"));
    }

    #[test]
    fn errors_name_the_path() {
        let mut v = ok();
        v["subject"].as_object_mut().unwrap().remove("type");
        assert_eq!(DecisionRequest::from_json(v).unwrap_err().to_string(), "subject.type: missing required member");
        let mut v = ok();
        v["resource"]["id"] = json!(7);
        assert_eq!(DecisionRequest::from_json(v).unwrap_err().to_string(), "resource.id: must be a string");
        assert!(DecisionRequest::from_json(json!([1])).is_err());
    }

    #[test]
    fn batch_items_inherit_defaults_whole() {
        let body = json!({
            "subject":{"type":"user","id":"u1"},"action":{"name":"read"},
            "evaluations":[{"resource":{"type":"doc","id":"a"}},{"resource":{"type":"doc"}},
                           {"subject":{"type":"user","id":"u2"},"resource":{"type":"doc","id":"c"}}]});
        let Evaluations::Batch(b) = Evaluations::from_json(body, 10).unwrap() else { panic!() };
        assert_eq!(b.items.len(), 3);
        assert_eq!(b.items[0].as_ref().unwrap().subject_id(), "u1");
        assert_eq!(b.items[1].as_ref().unwrap_err().path, "evaluations[1].resource.id");
        assert_eq!(b.items[2].as_ref().unwrap().subject_id(), "u2");
    }

    #[test]
    fn empty_batch_is_a_single_evaluation() {
        let mut body = ok();
        body["evaluations"] = json!([]);
        assert!(matches!(Evaluations::from_json(body, 10).unwrap(), Evaluations::Single(_)));
    }

    #[test]
    fn unknown_semantic_is_rejected() {
        let mut body = ok();
        body["evaluations"] = json!([{}]);
        body["options"] = json!({"evaluations_semantic":"sometimes"});
        assert!(Evaluations::from_json(body, 10).is_err());
    }
}

//! AuthZEN request bodies: validated once, kept as JSON so CEL can borrow from them.
//!
//! A single evaluation over HTTP is kept as the [`Doc`] of the bytes sent: rules read it
//! without a `serde_json` tree being built and dropped per request, and the decision log
//! writes the bytes. The tree is built only when something needs it (the CEL interpreter, a
//! hook, collection enrichment). Batches, test cases and the CLI give a `serde_json` value.
//!
//! Validation follows AuthZEN 1.0 §5–§7 and §10.1.1: a missing required member or a member of
//! the wrong type is an error naming its path (the server answers 400); unknown members are
//! ignored. A batch item that is invalid is an item error, not a request error (§7.2.1).

use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::json::{Doc, Item, Kind};

/// One validated evaluation request: an object with `subject`, `action`, `resource` and
/// optionally `context`, exactly as received (unknown members included, for the log).
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    form: Form,
}

#[derive(Debug, Clone)]
enum Form {
    Json {
        body: Value,
        /// The bytes `body` was parsed from, when they are the whole request: logged as sent.
        raw: Option<bytes::Bytes>,
    },
    Doc {
        doc: Doc,
        members: Members,
        /// `doc` as `serde_json`, once something asked for it.
        json: OnceLock<Value>,
    },
}

/// Where the members every decision reads are in a document ([`Doc::at`]), found once by
/// validation.
#[derive(Debug, Clone, Copy)]
struct Members {
    /// `subject`, `action`, `resource`, and `context` if present.
    entities: [Option<usize>; 4],
    /// `subject.type`, `subject.id`, `action.name`, `resource.type`, `resource.id`.
    strings: [usize; 5],
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
    Single(Box<DecisionRequest>),
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
        Ok(DecisionRequest { form: Form::Json { body, raw: None } })
    }

    /// A single evaluation body kept as its document, when it is valid JSON the fast parser
    /// takes, nests at most `max_depth` deep, and is a valid request. `None` otherwise: the
    /// caller's depth check, [`crate::json::parse`] and [`DecisionRequest::from_json`] then
    /// give the value, or the exact error.
    pub fn from_bytes(bytes: bytes::Bytes, max_depth: usize) -> Option<DecisionRequest> {
        let doc = Doc::parse(bytes, max_depth)?;
        let members = valid_members(doc.root())?;
        Some(DecisionRequest { form: Form::Doc { doc, members, json: OnceLock::new() } })
    }

    /// Keeps the bytes the request was parsed from, so the decision record logs them as sent
    /// instead of encoding the parsed value again.
    #[must_use]
    pub fn with_raw(self, raw: bytes::Bytes) -> DecisionRequest {
        match self.form {
            Form::Json { body, .. } => DecisionRequest { form: Form::Json { body, raw: Some(raw) } },
            form @ Form::Doc { .. } => DecisionRequest { form },
        }
    }

    /// The request as JSON: `{subject, action, resource, context?, …}`; built from the
    /// document on first call.
    pub fn json(&self) -> &Value {
        match &self.form {
            Form::Json { body, .. } => body,
            Form::Doc { doc, json, .. } => json.get_or_init(|| doc.to_value()),
        }
    }

    /// The request as CEL reads it.
    pub fn bindable(&self) -> crate::cel::Request<'_> {
        match &self.form {
            Form::Json { body, .. } => crate::cel::Request::Json(body),
            Form::Doc { doc, members, json } => {
                let entities = members.entities.map(|at| at.map(|at| doc.at(at)));
                crate::cel::Request::Doc(entities, json, doc)
            }
        }
    }

    /// The request for the decision record: the bytes as sent when kept, else the JSON.
    pub fn into_logged(self) -> crate::decision_log::RequestJson {
        match self.form {
            Form::Json { raw: Some(raw), .. } => crate::decision_log::RequestJson::Raw(raw),
            Form::Json { body, raw: None } => crate::decision_log::RequestJson::Parsed(body),
            Form::Doc { doc, .. } => crate::decision_log::RequestJson::Raw(doc.bytes().clone()),
        }
    }

    /// `subject.type`.
    pub fn subject_type(&self) -> &str {
        self.str2(0, "subject", "type")
    }

    /// `subject.id`.
    pub fn subject_id(&self) -> &str {
        self.str2(1, "subject", "id")
    }

    /// `action.name`.
    pub fn action_name(&self) -> &str {
        self.str2(2, "action", "name")
    }

    /// `resource.type`.
    pub fn resource_type(&self) -> &str {
        self.str2(3, "resource", "type")
    }

    /// `resource.id`.
    pub fn resource_id(&self) -> &str {
        self.str2(4, "resource", "id")
    }

    // INVARIANT: validation checked that these members exist and are strings; `i` is the
    // member's place in `Members::strings`.
    fn str2(&self, i: usize, a: &str, b: &str) -> &str {
        match &self.form {
            Form::Json { body, .. } => body.get(a).and_then(|v| v.get(b)).and_then(Value::as_str),
            Form::Doc { doc, members, .. } => members.strings.get(i).and_then(|&at| doc.at(at).as_str()),
        }
        .unwrap_or_default()
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
            return DecisionRequest::from_json(Value::Object(map)).map(|r| Evaluations::Single(Box::new(r)));
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
                Ok(DecisionRequest { form: Form::Json { body: Value::Object(item), raw: None } })
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

/// [`validate`] on a document: where its members are if it would pass, `None` if not (the
/// errors come from `validate`). One pass over each object; a later member with the same key
/// replaces an earlier one, as in `serde_json`.
fn valid_members(root: Item<'_>) -> Option<Members> {
    if !root.is_object() {
        return None;
    }
    let mut entities = [None; 4];
    for (key, value) in root.members() {
        let slot = match key {
            b"subject" => entities.get_mut(0),
            b"action" => entities.get_mut(1),
            b"resource" => entities.get_mut(2),
            b"context" => entities.get_mut(3),
            _ => None,
        };
        if let Some(slot) = slot {
            *slot = Some(value);
        }
    }
    let [subject, action, resource, context] = entities;
    let [subject_type, subject_id] = doc_entity(subject?, [b"type", b"id"])?;
    let [action_name] = doc_entity(action?, [b"name"])?;
    let [resource_type, resource_id] = doc_entity(resource?, [b"type", b"id"])?;
    null_or_object(context).then(|| Members {
        entities: [subject, action, resource, context].map(|e| e.map(Item::position)),
        strings: [subject_type, subject_id, action_name, resource_type, resource_id],
    })
}

/// An entity that is an object with the `required` string members and a `properties` that
/// is absent, `null` or an object: the positions of the strings.
fn doc_entity<const N: usize>(obj: Item<'_>, required: [&[u8]; N]) -> Option<[usize; N]> {
    let mut found = [None; N];
    let mut properties = None;
    for (key, value) in obj.members() {
        if key == b"properties" {
            properties = Some(value);
        } else if let Some(slot) = required.iter().position(|r| *r == key).and_then(|i| found.get_mut(i)) {
            *slot = Some(value);
        }
    }
    if !obj.is_object() || !null_or_object(properties) {
        return None;
    }
    let mut positions = [0; N];
    for (position, value) in positions.iter_mut().zip(found) {
        *position = value.filter(|v| v.as_str().is_some())?.position();
    }
    Some(positions)
}

/// Absent, `null` or an object.
fn null_or_object(item: Option<Item<'_>>) -> bool {
    item.is_none_or(|i| matches!(i.kind(), Kind::Null | Kind::Object))
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

    /// A body kept as its document is the request `from_json` makes of the parsed body: valid
    /// exactly when that is, with the same members and JSON. Repeated keys (the last wins),
    /// escapes, `null`s and wrong types included.
    #[test]
    fn documents_agree_with_parsed_requests() {
        let s = r#""subject":{"type":"user","id":"u1"}"#;
        let a = r#""action":{"name":"read"}"#;
        let r = r#""resource":{"type":"doc","id":"d1","properties":{"n":1.5,"tags":["a"]}}"#;
        let bodies = [
            format!("{{{s},{a},{r}}}"),
            format!("{{{s},{a},{r},\"context\":null}}"),
            format!("{{{s},{a},{r},\"context\":{{\"ip\":\"10.0.0.1\"}}}}"),
            format!("{{{s},{a},{r},\"context\":5}}"),
            format!("{{{s},{a},{r},\"context\":{{}},\"context\":[]}}"),
            format!("{{{s},{a},{r},\"context\":[],\"context\":{{}}}}"),
            format!("{{\"subject\":{{\"type\":\"user\"}},{s},{a},{r}}}"),
            format!("{{{s},\"subject\":{{\"type\":\"user\"}},{a},{r}}}"),
            format!("{{\"subject\":{{\"type\":\"u\\u0073er\",\"id\":\"\\\"q\\\"\",\"id\":\"u\\n2\"}},{a},{r}}}"),
            format!("{{{s},\"action\":{{\"name\":5}},{r}}}"),
            format!("{{{s},\"action\":{{\"name\":null}},{r}}}"),
            format!("{{{s},\"action\":{{\"name\":\"x\",\"properties\":3}},{r}}}"),
            format!("{{{s},\"action\":{{\"name\":\"x\",\"properties\":null}},{r}}}"),
            format!("{{{s},\"action\":[],{r}}}"),
            format!("{{{s},{r}}}"),
            format!("{{{s},{a},\"resource\":{{\"type\":\"doc\",\"id\":\"d\",\"properties\":{{}},\"properties\":7}}}}"),
            format!("{{{s},{a},{r},\"extra\":{{\"deep\":[1,{{\"x\":null}}]}}}}"),
            format!("{{{s},{a},\"resource\":{{\"type\":\"doc\",\"id\":\"d\",\"properties\":{{\"big\":1.00000000000000000001}}}}}}"),
            format!("[{s}]"),
            format!("{{{s},{a},{r}"),
            "{}".to_owned(),
            "null".to_owned(),
        ];
        for body in bodies {
            let parsed = crate::json::parse(body.as_bytes()).ok().map(DecisionRequest::from_json);
            let doc = DecisionRequest::from_bytes(body.clone().into(), 64);
            match (parsed, doc) {
                (Some(Ok(p)), Some(d)) => {
                    let members = |r: &DecisionRequest| {
                        [r.subject_type(), r.subject_id(), r.action_name(), r.resource_type(), r.resource_id()].map(str::to_owned)
                    };
                    assert_eq!(members(&p), members(&d), "{body}");
                    assert_eq!(p.json(), d.json(), "{body}");
                    let crate::decision_log::RequestJson::Raw(raw) = d.into_logged() else { panic!("{body}: not logged as sent") };
                    assert_eq!(raw, body.as_bytes(), "{body}");
                }
                // A body the fast parser leaves to serde_json goes the long way.
                (Some(Ok(_)), None) => assert!(crate::json::Doc::parse(body.clone().into(), 64).is_none(), "{body}"),
                (Some(Err(_)) | None, None) => {}
                (Some(Err(e)), Some(_)) => panic!("{body}: kept as a document, but {e}"),
                (None, Some(_)) => panic!("{body}: kept as a document, but not JSON"),
            }
        }
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

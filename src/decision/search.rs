//! AuthZEN search (§8): which subjects, resources or actions the policies permit.
//!
//! A search evaluates the same policies as `/access/v1/evaluation`, once per candidate:
//! subjects are the identity snapshot's users (for the subject types `[search]` declares),
//! resources are the records of the resource type's collection, actions are those named by
//! the policies that apply to the resource type. Results are in candidate order; `page.limit`
//! cuts them into pages with an opaque `next_token` (`""` on the last page). Unknown types,
//! ids or actions give `{"results": []}`, not an error (certification C.4.6).

use serde_json::{Map, Value, json};

use super::request::{Problem, RequestError};

/// Which search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/access/v1/search/subject`.
    Subject,
    /// `/access/v1/search/resource`.
    Resource,
    /// `/access/v1/search/action`.
    Action,
}

/// A validated search request.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// Which search.
    pub kind: Kind,
    /// The body as received.
    pub body: Value,
    /// First result to return.
    pub offset: usize,
    /// Most results to return; `None` returns all.
    pub limit: Option<usize>,
}

// === impl Kind ===

impl Kind {
    /// `subject`, `resource` or `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Subject => "subject",
            Kind::Resource => "resource",
            Kind::Action => "action",
        }
    }
}

// === impl SearchRequest ===

impl SearchRequest {
    /// Validates a search body (§8.4.1, §8.5.1, §8.6.1): the searched entity needs only its
    /// type (its `id`, if sent, is ignored); the others are required whole.
    pub fn from_json(kind: Kind, body: Value) -> Result<SearchRequest, RequestError> {
        let Value::Object(map) = &body else {
            return Err(err("$", Problem::WrongType("a JSON object")));
        };
        let (subject_id, resource_id, action) = match kind {
            Kind::Subject => (false, true, true),
            Kind::Resource => (true, false, true),
            Kind::Action => (true, true, false),
        };
        entity(map, "subject", "type", subject_id)?;
        entity(map, "resource", "type", resource_id)?;
        if action {
            match map.get("action") {
                Some(Value::Object(a)) => match a.get("name") {
                    Some(Value::String(_)) => {}
                    None | Some(Value::Null) => return Err(err("action.name", Problem::Missing)),
                    Some(_) => return Err(err("action.name", Problem::WrongType("a string"))),
                },
                None | Some(Value::Null) => return Err(err("action", Problem::Missing)),
                Some(_) => return Err(err("action", Problem::WrongType("an object"))),
            }
        }
        match map.get("context") {
            None | Some(Value::Null | Value::Object(_)) => {}
            Some(_) => return Err(err("context", Problem::WrongType("an object"))),
        }
        let (offset, limit) = match map.get("page") {
            None | Some(Value::Null) => (0, None),
            Some(Value::Object(p)) => {
                let offset = match p.get("token") {
                    None | Some(Value::Null) => 0,
                    Some(Value::String(t)) if t.is_empty() => 0,
                    Some(Value::String(t)) => t
                        .strip_prefix("o")
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| err("page.token", Problem::Invalid(format!("`{t}` is not a token this server issued"))))?,
                    Some(_) => return Err(err("page.token", Problem::WrongType("a string"))),
                };
                let limit = match p.get("limit") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(
                        v.as_u64()
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or_else(|| err("page.limit", Problem::WrongType("a non-negative integer")))?,
                    ),
                };
                (offset, limit)
            }
            Some(_) => return Err(err("page", Problem::WrongType("an object"))),
        };
        Ok(SearchRequest { kind, body, offset, limit })
    }

    /// The evaluation request for one candidate.
    pub fn candidate(&self, value: &str) -> Value {
        let mut req = self.body.clone();
        if let Value::Object(m) = &mut req {
            m.remove("page");
            let (key, member) = match self.kind {
                Kind::Subject => ("subject", "id"),
                Kind::Resource => ("resource", "id"),
                Kind::Action => ("action", "name"),
            };
            let entry = m.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(e) = entry {
                e.insert(member.to_owned(), Value::String(value.to_owned()));
                if self.kind == Kind::Resource {
                    // A searched resource is judged on its own record, not on properties sent
                    // for "the type".
                    e.remove("properties");
                }
            }
        }
        req
    }

    /// The searched type (`subject.type` or `resource.type`; empty for actions).
    pub fn searched_type(&self) -> &str {
        let key = match self.kind {
            Kind::Subject => "subject",
            Kind::Resource => "resource",
            Kind::Action => return "",
        };
        self.body.get(key).and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or_default()
    }

    /// The response body for the permitted candidates (all of them, before paging).
    pub fn response(&self, permitted: &[String]) -> (Value, Vec<Value>) {
        let all: Vec<Value> = permitted
            .iter()
            .map(|v| match self.kind {
                Kind::Action => json!({ "name": v }),
                _ => json!({ "type": self.searched_type(), "id": v }),
            })
            .collect();
        let total = all.len();
        let start = self.offset.min(total);
        let end = self.limit.map_or(total, |l| start.saturating_add(l).min(total));
        let page: Vec<Value> = all.get(start..end).map(<[Value]>::to_vec).unwrap_or_default();
        let mut body = Map::new();
        if self.body.get("page").is_some_and(|p| !p.is_null()) {
            let next = if end < total { format!("o{end}") } else { String::new() };
            body.insert("page".to_owned(), json!({ "next_token": next, "count": page.len(), "total": total }));
        }
        body.insert("results".to_owned(), Value::Array(page.clone()));
        (Value::Object(body), page)
    }
}

fn err(path: &str, problem: Problem) -> RequestError {
    RequestError { path: path.to_owned(), problem }
}

fn entity(map: &Map<String, Value>, key: &str, type_member: &str, id_required: bool) -> Result<(), RequestError> {
    let obj = match map.get(key) {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) => return Err(err(key, Problem::Missing)),
        Some(_) => return Err(err(key, Problem::WrongType("an object"))),
    };
    let mut members = vec![type_member];
    if id_required {
        members.push("id");
    }
    for m in members {
        match obj.get(m) {
            Some(Value::String(_)) => {}
            None | Some(Value::Null) => return Err(err(&format!("{key}.{m}"), Problem::Missing)),
            Some(_) => return Err(err(&format!("{key}.{m}"), Problem::WrongType("a string"))),
        }
    }
    Ok(())
}

//! The functions conditions can call, bound to one snapshot's identity index.
//!
//! CEL registers functions on a root context, not on a program, and a function must own what
//! it reads. So each snapshot builds one [`Functions`] whose closures hold an `Arc` of that
//! snapshot's identity index; every request evaluates in a child scope of it. A request can
//! therefore never see identity data from another revision than its rules.
//!
//! | function | returns |
//! | --- | --- |
//! | `identity.user(id)`, `identity.userByEmail(e)`, `identity.userByUsername(u)` | user map or `null` |
//! | `identity.groupsOf(uid)` | group names, transitive |
//! | `identity.inGroup(uid, name)` | bool |
//! | `identity.hasApp(uid, app)`, `identity.hasEntitlement(uid, app, ent)` | bool |
//! | `identity.grantsOf(uid)` | list of grant maps |
//! | `identity.entitlementsOf(app)` | list of entitlement maps |
//! | `identity.managers(uid)`, `identity.directReports(uid)` | list of user maps |
//! | `identity.accountsOf(uid)`, `identity.accountsIn(uid, app)` | list of account maps |
//! | `identity.usernameTaken(name)`, `identity.emailTaken(email)` | bool |
//!
//! A `uid` argument may be a user's id, email or username, like the request's `subject.id`.

use std::sync::Arc;


use ::cel::Value;

use super::{Env, json};
use crate::identity::{Index, Str, User};

/// A registered function body: the index, the memo and the string arguments in, a CEL value out.
type Body = Box<dyn Fn(&Index, &Memo, &[Arc<String>]) -> Value + Send + Sync>;

/// The root CEL context of one snapshot: the standard library plus `identity.*`.
pub struct Functions {
    root: ::cel::Context<'static, 'static>,
    memo: Arc<Memo>,
}

/// Per-snapshot memo of derived user records: a user's principal JSON (fields + transitive
/// groups) and its CEL value are built on first use and then shared, since the index they are
/// derived from never changes. Only users that exist are memoized, so the memo is bounded by
/// the number of users; it dies with its snapshot.
#[derive(Default)]
struct Memo {
    json: parking_lot::RwLock<crate::FastMap<Str, Arc<serde_json::Value>>>,
    cel: parking_lot::RwLock<crate::FastMap<Str, Value>>,
}

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Functions").finish_non_exhaustive()
    }
}

// === impl Functions ===

impl Functions {
    /// Registers the identity functions over `index`.
    pub fn new(env: &Env, index: Arc<Index>) -> Functions {
        let mut root = ::cel::Context::with_env(env.inner().clone());
        let memo = Arc::new(Memo::default());
        let mut add = |name: &str, f: Body| {
            let ix = index.clone();
            let memo = memo.clone();
            let r = match name {
                // CEL dispatches on arity; register the one arity each function has.
                _ if arity(name) == 1 => root.add_function(name, move |a: Arc<String>| f(&ix, &memo, &[a])),
                _ if arity(name) == 2 => {
                    root.add_function(name, move |a: Arc<String>, b: Arc<String>| f(&ix, &memo, &[a, b]))
                }
                _ => root.add_function(name, move |a: Arc<String>, b: Arc<String>, c: Arc<String>| {
                    f(&ix, &memo, &[a, b, c])
                }),
            };
            if let Err(e) = r {
                tracing::error!(function = name, error = ?e, "cannot register CEL function");
            }
        };
        add("identity.user", Box::new(|ix, m, a| user_or_null(ix, m, ix.user(arg(a, 0)))));
        add("identity.userByEmail", Box::new(|ix, m, a| user_or_null(ix, m, ix.user_by_email(arg(a, 0)))));
        add("identity.userByUsername", Box::new(|ix, m, a| user_or_null(ix, m, ix.user_by_username(arg(a, 0)))));
        add(
            "identity.groupsOf",
            Box::new(|ix, _, a| list(ix.groups_of(uid(ix, a)).into_iter().map(|g| Value::from(g.name.as_str())))),
        );
        add("identity.inGroup", Box::new(|ix, _, a| Value::Bool(ix.in_group(uid(ix, a), arg(a, 1)))));
        add("identity.hasApp", Box::new(|ix, _, a| Value::Bool(ix.has_app(uid(ix, a), arg(a, 1)))));
        add(
            "identity.hasEntitlement",
            Box::new(|ix, _, a| Value::Bool(ix.has_entitlement(uid(ix, a), arg(a, 1), arg(a, 2)))),
        );
        add("identity.grantsOf", Box::new(|ix, _, a| list(ix.grants_of(uid(ix, a)).into_iter().map(to_value))));
        add(
            "identity.entitlementsOf",
            Box::new(|ix, _, a| list(ix.entitlements_of(arg(a, 0)).into_iter().map(to_value))),
        );
        add(
            "identity.managers",
            Box::new(|ix, m, a| list(ix.managers(uid(ix, a)).into_iter().map(|u| user_value(ix, m, u)))),
        );
        add(
            "identity.directReports",
            Box::new(|ix, m, a| list(ix.direct_reports(uid(ix, a)).into_iter().map(|u| user_value(ix, m, u)))),
        );
        add(
            "identity.accountsOf",
            Box::new(|ix, _, a| list(ix.accounts_of(uid(ix, a), None).into_iter().map(to_value))),
        );
        add(
            "identity.accountsIn",
            Box::new(|ix, _, a| list(ix.accounts_of(uid(ix, a), Some(arg(a, 1))).into_iter().map(to_value))),
        );
        add("identity.usernameTaken", Box::new(|ix, _, a| Value::Bool(ix.username_taken(arg(a, 0)))));
        add("identity.emailTaken", Box::new(|ix, _, a| Value::Bool(ix.email_taken(arg(a, 0)))));
        Functions { root, memo }
    }

    /// The `principal` of a subject: its identity record (memoized), or `{found: false}`.
    pub fn principal(&self, index: &Index, subject_id: &str) -> Arc<serde_json::Value> {
        match index.resolve_user(subject_id) {
            Some(user) => self.memo.principal(index, user),
            None => Arc::new(unknown_principal(subject_id)),
        }
    }

    /// A child scope for one evaluation.
    pub(crate) fn scope<'r, 'a>(&'r self) -> ::cel::Context<'r, 'a> {
        let root: &'r ::cel::Context<'r, 'a> = &self.root;
        root.new_inner_scope()
    }
}

fn arity(name: &str) -> usize {
    match name {
        "identity.inGroup" | "identity.hasApp" | "identity.accountsIn" => 2,
        "identity.hasEntitlement" => 3,
        _ => 1,
    }
}

/// The first argument as a user id: callers may pass whatever identifier the request carried
/// (id, email or username), as the subject is matched when the principal is looked up.
fn uid<'a>(index: &'a Index, args: &'a [Arc<String>]) -> &'a str {
    let given = arg(args, 0);
    index.resolve_user(given).map_or(given, |u| u.id.as_str())
}

fn arg(args: &[Arc<String>], i: usize) -> &str {
    args.get(i).map_or("", |s| s.as_str())
}

fn list(items: impl Iterator<Item = Value>) -> Value {
    Value::List(Arc::new(items.collect()))
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).map_or(Value::Null, |j| json::to_owned_value(&j))
}

fn user_or_null(index: &Index, memo: &Memo, user: Option<&User>) -> Value {
    user.map_or(Value::Null, |u| user_value(index, memo, u))
}

fn user_value(index: &Index, memo: &Memo, user: &User) -> Value {
    if let Some(v) = memo.cel.read().get(&user.id) {
        return v.clone();
    }
    let v = json::to_owned_value(&memo.principal(index, user));
    memo.cel.write().insert(user.id.clone(), v.clone());
    v
}

// === impl Memo ===

impl Memo {
    fn principal(&self, index: &Index, user: &User) -> Arc<serde_json::Value> {
        if let Some(v) = self.json.read().get(&user.id) {
            return v.clone();
        }
        let v = Arc::new(principal_json(index, user));
        self.json.write().insert(user.id.clone(), v.clone());
        v
    }
}

/// The identity record of a user as rules see it: the snapshot's fields, plus `groups` (names,
/// transitive) and `found: true`.
pub fn principal_json(index: &Index, user: &User) -> serde_json::Value {
    let mut v = serde_json::to_value(user).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut v {
        let groups = index.groups_of(&user.id).into_iter().map(|g| serde_json::Value::from(g.name.as_str()));
        map.insert("groups".to_owned(), serde_json::Value::Array(groups.collect()));
        map.insert("found".to_owned(), serde_json::Value::Bool(true));
    }
    v
}

/// The `principal` of a subject that is not in the identity data.
pub fn unknown_principal(subject_id: &str) -> serde_json::Value {
    serde_json::json!({ "id": subject_id, "found": false, "groups": [] })
}

//! Zero-copy binding of request JSON to CEL, and the conversions back to JSON.
//!
//! A decision request arrives as one parsed `serde_json::Value`, and a rule typically
//! reads two or three of its fields. Converting the whole document into CEL values for
//! every request (`cel::to_value` then `Context::add_variable_from_value`) copies every
//! string and boxes every member, which costs more than evaluating the rule itself. This
//! module owns the bridge that avoids that copy: [`borrow`] wraps the request in CEL
//! values that borrow from it and convert a member only when an expression reaches it.
//! In the request flow it sits between `DecisionRequest` and the rules: the evaluator
//! binds `subject`, `action`, `resource` and `context` with [`borrow`] (through
//! `Context::add_variable_as_val`) and then runs the compiled programs. [`to_owned_value`]
//! serves data built once at load; [`to_json`] and [`val_to_json`] turn results back into
//! JSON for hook inputs, hook outputs and `verdict eval`.
//!
//! # What is lazy, what is not
//!
//! * A JSON object is a CEL `map` whose members are looked up in the `serde_json` map on
//!   access: `a.b`, `a["b"]`, `has(a.b)`, `a.?b`, `"b" in a`, `size(a)`, `a == b` and
//!   the comprehensions (`all`, `exists`, `map`, ...) over its keys copy nothing up
//!   front.
//! * Strings are `CelString`s borrowing the request's bytes; numbers, booleans and null
//!   are made on access.
//! * A JSON array becomes a built-in CEL list each time it is reached, one level deep:
//!   its elements are themselves borrowed, so objects inside stay lazy. Arrays are eager
//!   because CEL's own lists only compare equal to other built-in lists
//!   (`["a"] == subject.groups` must hold), and because iterating must lend out stored
//!   elements. They are not cached: the interpreter copies whatever an object it does not
//!   own lends out (a variable resolver hands out a fresh object per reference), so a
//!   cached list would be built and then cloned. A comprehension over `a` that reads
//!   `b.list` on every step rebuilds `b.list` every step.
//!
//! # Why objects are not built-in maps
//!
//! `cel` recognises its built-in types through `Val::as_builtin`, and the interpreter
//! calls it on the operand of *every* field selection (to see whether it is an
//! optional). Answering it with a map would force building that map for every object
//! on every path a rule reads, which is the copy this module exists to avoid. So a
//! borrowed object never passes for a built-in map, and three things follow. They are
//! pinned by tests below:
//!
//! * `Program::execute` fails with `UnexpectedType` when the result is, or contains, a
//!   borrowed object (`resource.properties`, `[subject]`): `cel::Value` can only hold
//!   built-in values. Evaluate such expressions with
//!   `cel::Value::resolve_val(program.expression(), &ctx)` and convert the result with
//!   [`val_to_json`], which walks any value.
//! * Equality with a map *literal* works with the request on the left
//!   (`resource.tags == {"env": "prod"}`) but is `false` (and `!=` is `true`) with the
//!   literal on the left, also inside a list (`[{"a": 1}] == resource.items`): `cel`'s
//!   built-in map only compares equal to another built-in map. Write the request side
//!   first.
//! * A custom function that takes a whole object as a `cel::Value` argument cannot
//!   receive a borrowed one; functions taking strings and numbers are unaffected.
//!
//! This module must not copy request data on the evaluation path, and must not make a
//! missing member anything but `NoSuchKey`, which is what makes `has()` false.

use std::fmt;
use std::sync::{Arc, OnceLock};

use ::cel::common::traits::{Container, Indexer, Iterable, Iterator as CelIterator, Sizer, Zeroer};
use ::cel::common::types::{
    self, CelBool, CelDouble, CelDuration, CelInt, CelList, CelNull, CelString, CelTimestamp,
    CelUInt, Kind, Type,
};
use ::cel::common::value::{CowVal, Val};
use ::cel::objects::{Key, Map};
use ::cel::{ExecutionError, Value};
use serde_json::{Map as JsonMap, Number, Value as Json};

/// Borrows `value` as a CEL value; objects are indexed lazily, strings are borrowed, not copied.
///
/// Numbers become an `int` when they are integers that fit in `i64`, a `uint` when they
/// only fit in `u64`, and a `double` otherwise (`1.0` is a `double`). CEL compares the
/// three with each other (`1500 > 1000.0`, `3 == 3.0`), so rules need not care which a
/// client sent.
pub fn borrow<'a>(value: &'a Json) -> Box<dyn Val + 'a> {
    match value {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match JsonNumber::of(n) {
            JsonNumber::Int(i) => Box::new(CelInt::from(i)),
            JsonNumber::UInt(u) => Box::new(CelUInt::from(u)),
            JsonNumber::Double(d) => Box::new(CelDouble::from(d)),
        },
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => Box::new(list(items)),
        Json::Object(map) => Box::new(JsonObject::new(map)),
    }
}

/// Converts `value` into an owned CEL value (for data that must outlive the request, e.g. built once at load).
///
/// Numbers convert as in [`borrow`]. The copy is deep; use [`borrow`] for per-request data.
pub fn to_owned_value(value: &Json) -> Value {
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match JsonNumber::of(n) {
            JsonNumber::Int(i) => Value::Int(i),
            JsonNumber::UInt(u) => Value::UInt(u),
            JsonNumber::Double(d) => Value::Float(d),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(to_owned_value).collect())),
        Json::Object(map) => Value::Map(Map {
            map: Arc::new(
                map.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_owned_value(v)))
                    .collect(),
            ),
        }),
    }
}

/// Converts a CEL result back to JSON (for hook inputs/outputs and test output); None for values JSON cannot hold.
///
/// JSON cannot hold: doubles that are NaN or infinite, maps with a key that is not a
/// string, bytes, optionals, types, structs and functions. A value containing one of
/// them anywhere converts to `None` as a whole. Timestamps and durations become the
/// strings CEL's `string()` gives them (`"2024-01-02T03:04:05.5Z"`, `"1.5s"`), as cel-go
/// does for JSON.
pub fn to_json(value: &Value) -> Option<Json> {
    Some(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(d) => Json::Number(Number::from_f64(*d)?),
        Value::String(s) => Json::String(s.as_str().to_owned()),
        Value::Timestamp(ts) => Json::String(format_timestamp(ts)),
        Value::Duration(d) => Json::String(format_duration(d)),
        Value::List(items) => Json::Array(items.iter().map(to_json).collect::<Option<_>>()?),
        Value::Map(map) => Json::Object(
            map.map
                .iter()
                .map(|(k, v)| match k {
                    Key::String(k) => Some((k.as_str().to_owned(), to_json(v)?)),
                    Key::Int(_) | Key::Uint(_) | Key::Bool(_) => None,
                })
                .collect::<Option<_>>()?,
        ),
        Value::Bytes(_) | Value::Opaque(_) | Value::Struct(_) | Value::Function(..) => return None,
    })
}

/// Converts any CEL value to JSON, including values that borrow the request.
///
/// [`to_json`] takes a `cel::Value`, which `Program::execute` cannot produce from a
/// result holding a borrowed object (see the module documentation); this takes the
/// `dyn Val` that `cel::Value::resolve_val(program.expression(), &ctx)` returns. It
/// converts exactly what [`to_json`] converts, the same way.
pub fn val_to_json(value: &dyn Val) -> Option<Json> {
    Some(match value.get_type().kind() {
        Kind::NullType => Json::Null,
        Kind::Boolean => Json::Bool(*value.downcast_ref::<CelBool>()?.inner()),
        Kind::Int => Json::from(*value.downcast_ref::<CelInt>()?.inner()),
        Kind::UInt => Json::from(*value.downcast_ref::<CelUInt>()?.inner()),
        Kind::Double => Json::Number(Number::from_f64(
            *value.downcast_ref::<CelDouble>()?.inner(),
        )?),
        Kind::String => Json::String(value.downcast_ref::<CelString<'_>>()?.inner().to_owned()),
        Kind::Timestamp => Json::String(format_timestamp(
            value.downcast_ref::<CelTimestamp>()?.inner(),
        )),
        Kind::Duration => Json::String(format_duration(
            value.downcast_ref::<CelDuration>()?.inner(),
        )),
        Kind::List => {
            let mut items = value.as_iterable()?.iter();
            let mut out = Vec::new();
            while let Some(item) = items.next() {
                out.push(val_to_json(item)?);
            }
            Json::Array(out)
        }
        Kind::Map => {
            let indexer = value.as_indexer()?;
            let mut keys = value.as_iterable()?.iter();
            let mut out = JsonMap::new();
            while let Some(key) = keys.next() {
                let name = key.downcast_ref::<CelString<'_>>()?.inner().to_owned();
                let member = indexer.get(key).ok()?;
                out.insert(name, val_to_json(member.as_ref())?);
            }
            Json::Object(out)
        }
        _ => return None,
    })
}

/// A JSON object seen as a CEL `map(string, dyn)` that reads its members on access.
struct JsonObject<'a> {
    map: &'a JsonMap<String, Json>,
    /// The keys, built the first time an expression iterates the object: the iterator
    /// lends out `&dyn Val`s, which must live as long as the object does.
    keys: OnceLock<Box<[CelString<'a>]>>,
}

/// The keys of a [`JsonObject`], as its comprehensions see them.
struct Keys<'b, 'a>(std::slice::Iter<'b, CelString<'a>>);

/// A JSON number classified the way [`borrow`] maps it to a CEL type.
pub(super) enum JsonNumber {
    Int(i64),
    UInt(u64),
    Double(f64),
}

// === impl JsonObject ===

impl<'a> JsonObject<'a> {
    fn new(map: &'a JsonMap<String, Json>) -> Self {
        Self {
            map,
            keys: OnceLock::new(),
        }
    }

    fn keys(&self) -> &[CelString<'a>] {
        self.keys.get_or_init(|| {
            self.map
                .keys()
                .map(|key| CelString::from(key.as_str()))
                .collect()
        })
    }
}

impl fmt::Debug for JsonObject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key cache is an implementation detail; the object is what it borrows.
        f.debug_tuple("JsonObject").field(self.map).finish()
    }
}

impl Val for JsonObject<'_> {
    fn get_type(&self) -> &Type {
        <Self as Val>::cel_type()
    }

    fn cel_type() -> &'static Type
    where
        Self: Sized,
    {
        &types::MAP_TYPE
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_iterable<'b, 'v>(&'b self) -> Option<&'b (dyn Iterable + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        Some(self)
    }

    fn as_zeroer(&self) -> Option<&dyn Zeroer> {
        Some(self)
    }

    fn equals(&self, other: &dyn Val) -> bool {
        object_equals(self.map, other)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        // The key cache is rebuilt on demand rather than copied: most clones (comprehension
        // variables, values put in a list) are never iterated.
        Box::new(JsonObject::new(self.map))
    }

    // `as_builtin` keeps its default, `Other`: see the module documentation for why a
    // borrowed object must not pass for a built-in map. With `Other`, the interpreter
    // indexes an owned object through `as_indexer` too, so `into_indexer` is not needed.
}

impl Indexer for JsonObject<'_> {
    fn get<'b, 'v>(&'b self, key: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let name = member_name(key).map_err(|got| ExecutionError::UnexpectedType {
            got,
            want: "map key".to_owned(),
        })?;
        let Some(value) = name.and_then(|name| self.map.get(name)) else {
            // `has()` is false on exactly this error.
            return Err(no_such_key(key));
        };
        Ok(match value {
            // Borrowed so that `true`, `false` and `null` cost no allocation.
            Json::Null => CowVal::Borrowed(&CelNull),
            Json::Bool(true) => CowVal::Borrowed(&CelBool::TRUE),
            Json::Bool(false) => CowVal::Borrowed(&CelBool::FALSE),
            Json::Number(_) | Json::String(_) | Json::Array(_) | Json::Object(_) => {
                CowVal::Owned(borrow(value))
            }
        })
    }

    fn steal<'v>(self: Box<Self>, key: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        // Only called on values that answer `as_builtin`, which this one never does.
        self.get(key).map(CowVal::into_owned)
    }
}

impl Container for JsonObject<'_> {
    fn contains(&self, key: &dyn Val) -> Result<bool, ExecutionError> {
        match member_name(key) {
            Ok(name) => Ok(name.is_some_and(|name| self.map.contains_key(name))),
            // As `cel`'s built-in map does for a key of a type no map can have.
            Err(_) => Err(ExecutionError::UnsupportedKeyType(
                Value::try_from(key).unwrap_or(Value::Null),
            )),
        }
    }
}

impl Iterable for JsonObject<'_> {
    fn iter<'b, 'v>(&'b self) -> Box<dyn CelIterator<'b, 'v> + 'b>
    where
        Self: 'v,
    {
        Box::new(Keys(self.keys().iter()))
    }
}

impl Sizer for JsonObject<'_> {
    fn size(&self) -> CelInt {
        CelInt::from(i64::try_from(self.map.len()).unwrap_or(i64::MAX))
    }
}

impl Zeroer for JsonObject<'_> {
    fn is_zero_value(&self) -> bool {
        self.map.is_empty()
    }
}

// === impl Keys ===

impl<'b, 'a: 'v, 'v> CelIterator<'b, 'v> for Keys<'b, 'a> {
    fn next(&mut self) -> Option<&'b (dyn Val + 'v)> {
        self.0.next().map(|key| key as &(dyn Val + 'v))
    }
}

// === impl JsonNumber ===

impl JsonNumber {
    pub(super) fn of(n: &Number) -> Self {
        if let Some(i) = n.as_i64() {
            Self::Int(i)
        } else if let Some(u) = n.as_u64() {
            Self::UInt(u)
        } else {
            // Without `serde_json`'s `arbitrary_precision`, every number that is not an
            // integer is an `f64`, so NaN is unreachable; with it, NaN fails every
            // comparison, which denies rather than guesses.
            Self::Double(n.as_f64().unwrap_or(f64::NAN))
        }
    }
}

/// A built-in list of the borrowed elements of a JSON array.
fn list(items: &[Json]) -> CelList<'_> {
    CelList::from(items.iter().map(borrow).collect::<Vec<_>>())
}

/// The member `key` names: `Ok(None)` for a key of another type CEL maps allow (`int`,
/// `uint`, `bool`, `double`), which no JSON object has; `Err` with the key's type name for
/// a type no map key can have.
fn member_name(key: &dyn Val) -> Result<Option<&str>, String> {
    match key.get_type().kind() {
        Kind::String => Ok(key.downcast_ref::<CelString<'_>>().map(CelString::inner)),
        Kind::Int | Kind::UInt | Kind::Boolean | Kind::Double => Ok(None),
        _ => Err(key.get_type().name().to_owned()),
    }
}

fn no_such_key(key: &dyn Val) -> ExecutionError {
    let name = match Value::try_from(key) {
        Ok(Value::String(s)) => s.as_str().to_owned(),
        Ok(Value::Int(i)) => i.to_string(),
        Ok(Value::UInt(u)) => u.to_string(),
        Ok(Value::Float(d)) => d.to_string(),
        Ok(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    };
    ExecutionError::NoSuchKey(Arc::new(name))
}

/// Whether the JSON object `map` equals `other`, any CEL map: same size, and each member
/// of `map` present in `other` with an equal value. Keys are strings on both sides, so
/// there is no numeric key conversion to mirror.
fn object_equals(map: &JsonMap<String, Json>, other: &dyn Val) -> bool {
    if other.get_type().kind() != Kind::Map {
        return false;
    }
    let (Some(sizer), Some(indexer)) = (other.as_sizer(), other.as_indexer()) else {
        return false;
    };
    same_len(map.len(), sizer)
        && map.iter().all(|(key, value)| {
            indexer
                .get(&CelString::from(key.as_str()))
                .is_ok_and(|other| json_equals(value, other.as_ref()))
        })
}

/// Whether the JSON array `items` equals `other`, any CEL list, element by element.
fn array_equals(items: &[Json], other: &dyn Val) -> bool {
    if other.get_type().kind() != Kind::List {
        return false;
    }
    let (Some(sizer), Some(iterable)) = (other.as_sizer(), other.as_iterable()) else {
        return false;
    };
    if !same_len(items.len(), sizer) {
        return false;
    }
    let mut others = iterable.iter();
    items
        .iter()
        .all(|item| others.next().is_some_and(|other| json_equals(item, other)))
}

/// CEL equality of a JSON value with `other`, without boxing the JSON side: the
/// scalars compare as the CEL values [`borrow`] would make, so `3 == 3.0` holds here too.
fn json_equals(value: &Json, other: &dyn Val) -> bool {
    match value {
        Json::Null => CelNull.equals(other),
        Json::Bool(b) => CelBool::from(*b).equals(other),
        Json::Number(n) => match JsonNumber::of(n) {
            JsonNumber::Int(i) => CelInt::from(i).equals(other),
            JsonNumber::UInt(u) => CelUInt::from(u).equals(other),
            JsonNumber::Double(d) => CelDouble::from(d).equals(other),
        },
        Json::String(s) => CelString::from(s.as_str()).equals(other),
        Json::Array(items) => array_equals(items, other),
        Json::Object(map) => object_equals(map, other),
    }
}

fn same_len(len: usize, sizer: &dyn Sizer) -> bool {
    usize::try_from(*sizer.size().inner()).is_ok_and(|size| size == len)
}

/// As CEL's `string(timestamp)`: RFC 3339 in UTC, with the fraction trimmed.
fn format_timestamp(ts: &chrono::DateTime<chrono::FixedOffset>) -> String {
    let utc = ts.with_timezone(&chrono::Utc);
    // A leap second shows as nanoseconds past 1e9; RFC 3339 has no place for it.
    let nanos = utc.timestamp_subsec_nanos() % 1_000_000_000;
    let base = utc.format("%Y-%m-%dT%H:%M:%S");
    if nanos == 0 {
        format!("{base}Z")
    } else {
        let fraction = format!("{nanos:09}");
        format!("{base}.{}Z", fraction.trim_end_matches('0'))
    }
}

/// As CEL's `string(duration)`: seconds with a trimmed fraction and an `s`, e.g. `-1.5s`.
fn format_duration(d: &chrono::Duration) -> String {
    let secs = d.num_seconds();
    let nanos = d.subsec_nanos();
    let sign = if secs < 0 || nanos < 0 { "-" } else { "" };
    let (secs, nanos) = (secs.unsigned_abs(), nanos.unsigned_abs());
    if nanos == 0 {
        format!("{sign}{secs}s")
    } else {
        let fraction = format!("{nanos:09}");
        format!("{sign}{secs}.{}s", fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;
    use ::cel::{Context, Env, Program};
    use serde_json::json;

    fn request() -> Json {
        json!({
            "subject": {
                "type": "user",
                "id": "alice@example.com",
                "groups": ["admin", "dev"],
                "attrs": {"level": 3, "mfa": true, "manager": null},
            },
            "action": {"name": "provision"},
            "resource": {
                "type": "cloud.vm",
                "id": "vm-1",
                "count": 3,
                "price": 12.5,
                "big": 18446744073709551615_u64,
                "huge": 1e300,
                "negative": -7,
                "nothing": null,
                "empty": {},
                "allowed": ["a", "c"],
                "properties": {
                    "monthly_cost": 42,
                    "region": "eu-west-1",
                    "tags": ["prod", "payments"],
                    "limits": {"cpu": 2, "mem": 4.5},
                },
                "items": [
                    {"name": "a", "price": 5},
                    {"name": "b", "price": 25.5},
                    {"name": "c", "price": 60},
                ],
            },
        })
    }

    fn env() -> Arc<Env> {
        Arc::new(Env::stdlib())
    }

    fn context<'a>(env: &Arc<Env>, request: &'a Json) -> Context<'a, 'a> {
        let mut ctx = Context::with_env(env.clone());
        for (name, value) in request.as_object().unwrap() {
            ctx.add_variable_as_val(name.as_str(), borrow(value));
        }
        ctx
    }

    fn compile(env: &Env, source: &str) -> Program {
        env.compile(source).unwrap()
    }

    /// Lends the members of a request the way `cel::eval` does: a fresh, owned view per
    /// reference, which the interpreter indexes through its owned-value path.
    struct Resolver<'a>(&'a Json);

    impl ::cel::context::VariableResolver for Resolver<'_> {
        fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
            self.0
                .get(variable)
                .map(|value| CowVal::Owned(borrow(value)))
        }
    }

    /// Evaluates `source` against the request fixture, bound both as variables (borrowed
    /// by the interpreter) and through a resolver (owned), which must agree.
    fn eval(source: &str) -> Result<Value, ExecutionError> {
        let env = env();
        let request = request();
        let program = compile(&env, source);
        let bound = program.execute(&context(&env, &request));
        let resolver = Resolver(&request);
        let mut ctx = Context::with_env(env.clone());
        ctx.set_variable_resolver(&resolver);
        let resolved = program.execute(&ctx);
        // NaN is not equal to itself, but prints the same
        assert!(
            bound == resolved || format!("{bound:?}") == format!("{resolved:?}"),
            "{source}: variables gave {bound:?}, resolver gave {resolved:?}"
        );
        bound
    }

    #[track_caller]
    fn assert_true(source: &str) {
        assert_eq!(eval(source), Ok(Value::Bool(true)), "{source}");
    }

    #[track_caller]
    fn assert_false(source: &str) {
        assert_eq!(eval(source), Ok(Value::Bool(false)), "{source}");
    }

    #[test]
    fn nested_field_access() {
        assert_true("subject.id == 'alice@example.com'");
        assert_true("resource.properties.region == 'eu-west-1'");
        assert_true(r#"resource["properties"]["region"] == "eu-west-1""#);
        assert_true("resource.properties['limits'].cpu == 2");
        assert_true("subject.attrs.mfa");
        assert_true("resource.items[1].name == 'b'");
        assert_true("resource.properties.tags[0] == 'prod'");
        assert_eq!(
            eval("resource.properties.limits.mem"),
            Ok(Value::Float(4.5))
        );
        assert_eq!(eval("resource.negative"), Ok(Value::Int(-7)));
    }

    #[test]
    fn has_is_false_for_a_missing_key_and_true_for_a_present_one() {
        assert_true("has(resource.properties)");
        assert_true("has(resource.properties.monthly_cost)");
        assert_true("has(resource.properties.limits.cpu)");
        // present with a null value is present
        assert_true("has(resource.nothing)");
        assert_false("has(resource.missing)");
        assert_false("has(resource.properties.missing)");
        assert_false("has(resource.properties.limits.gpu)");
        assert_false("has(resource.empty.anything)");
        assert_true("!has(resource.missing) || resource.missing > 1");
        assert_true("resource.?items.hasValue() && has(resource.items)");
    }

    #[test]
    fn has_on_a_missing_parent_is_an_error() {
        // as in cel-go: only the last selection is tested
        assert!(matches!(
            eval("has(resource.missing.cost)"),
            Err(ExecutionError::NoSuchKey(key)) if key.as_str() == "missing"
        ));
    }

    #[test]
    fn missing_key_without_has_is_an_error() {
        assert!(matches!(
            eval("resource.properties.missing_cost > 10"),
            Err(ExecutionError::NoSuchKey(key)) if key.as_str() == "missing_cost"
        ));
        assert!(matches!(
            eval("resource['missing'] == 1"),
            Err(ExecutionError::NoSuchKey(key)) if key.as_str() == "missing"
        ));
        // a JSON object has only string keys, so other map-key types are just missing
        assert!(matches!(
            eval("resource[1]"),
            Err(ExecutionError::NoSuchKey(_))
        ));
        // a type no map key can have has no overload
        assert!(matches!(
            eval("resource[[1]]"),
            Err(ExecutionError::NoSuchOverload { .. })
        ));
        // `&&` absorbs the error when the other side is false, as for built-in maps
        assert_false("resource.missing == 1 && false");
    }

    #[test]
    fn in_on_object_keys_and_on_arrays() {
        assert_true("'properties' in resource");
        assert_true("'nothing' in resource");
        assert_false("'missing' in resource");
        assert_false("1 in resource");
        assert!(eval("[1] in resource").is_err());
        assert_true("'admin' in subject.groups");
        assert_false("'root' in subject.groups");
        assert_true("5 in resource.items.map(i, i.price)");
        assert_true("{'name': 'a', 'price': 5} in resource.items");
        assert_true("'prod' in resource.properties.tags && 'cpu' in resource.properties.limits");
    }

    #[test]
    fn size_of_objects_and_arrays() {
        assert_eq!(eval("size(resource.properties)"), Ok(Value::Int(4)));
        assert_eq!(eval("resource.properties.size()"), Ok(Value::Int(4)));
        assert_eq!(eval("size(resource.empty)"), Ok(Value::Int(0)));
        assert_eq!(eval("size(subject.groups)"), Ok(Value::Int(2)));
        assert_eq!(eval("resource.items.size()"), Ok(Value::Int(3)));
    }

    #[test]
    fn comprehensions_over_arrays_and_objects() {
        assert_true("subject.groups.exists(g, g == 'admin')");
        assert_false("subject.groups.all(g, g == 'admin')");
        assert_true("resource.items.all(i, i.price < 100)");
        assert_true("resource.items.exists_one(i, i.price > 50)");
        assert_true("resource.items.filter(i, i.price > 10).map(i, i.name) == ['b', 'c']");
        assert_true("resource.items.exists(i, i.name in resource.allowed)");
        assert_true("resource.properties.exists(k, k == 'region')");
        assert_true("resource.properties.all(k, k != '' && has(resource.properties.monthly_cost))");
        assert_true("resource.properties.all(k, k in resource.properties)");
        assert_false("resource.empty.exists(k, true)");
        // keys are iterated in the order of `serde_json::Map`: sorted, unless `preserve_order` is on
        assert_true(
            "resource.properties.map(k, k) == ['limits', 'monthly_cost', 'region', 'tags']",
        );
        assert_true("subject.attrs.filter(k, subject.attrs[k] == null) == ['manager']");
    }

    #[test]
    fn equality_of_strings_numbers_lists_and_maps() {
        assert_true("resource.type == 'cloud.vm'");
        assert_true("resource.type != 'cloud.db'");
        assert_true("resource.count == 3 && resource.count == 3.0 && resource.count == 3u");
        assert_true("resource.price == 12.5 && resource.price != 12");
        assert_true("subject.groups == ['admin', 'dev'] && ['admin', 'dev'] == subject.groups");
        assert_false("subject.groups == ['dev', 'admin']");
        assert_true("resource.properties.limits == {'cpu': 2, 'mem': 4.5}");
        assert_true("resource.properties.limits == {'cpu': 2.0, 'mem': 4.5}");
        assert_false("resource.properties.limits == {'cpu': 2}");
        assert_false("resource.properties.limits == {'cpu': 2, 'gpu': 4.5}");
        assert_false("resource.properties.limits == ['cpu', 'mem']");
        assert_true("resource.properties == resource.properties");
        assert_true("resource.items[0] != resource.items[1]");
        assert_true("resource.empty == {}");
        assert_true("subject.attrs == {'level': 3, 'mfa': true, 'manager': null}");
        assert_true(
            "resource.properties == {'monthly_cost': 42, 'region': 'eu-west-1', \
             'tags': ['prod', 'payments'], 'limits': {'cpu': 2, 'mem': 4.5}}",
        );
        assert_true(
            "resource.items == [{'name': 'a', 'price': 5}, resource.items[1], resource.items[2]]",
        );
        assert_false("resource.properties == resource.properties.limits");
    }

    #[test]
    fn literal_map_on_the_left_does_not_equal_a_borrowed_object() {
        // Known limitation, see the module documentation: `cel`'s built-in map only
        // equals another built-in map. If this starts failing, `cel` learned to compare
        // maps generically and the limitation can be dropped from the docs.
        assert_false("{'cpu': 2, 'mem': 4.5} == resource.properties.limits");
        assert_true("{'cpu': 2, 'mem': 4.5} != resource.properties.limits");
    }

    #[test]
    fn functions_taking_a_value_cannot_receive_a_borrowed_object() {
        // Known limitation, see the module documentation.
        let env = env();
        let request = request();
        let mut ctx = context(&env, &request);
        ctx.add_function("is_map", |v: Value| matches!(v, Value::Map(_)))
            .unwrap();
        let check = |source: &str| compile(&env, source).execute(&ctx);
        assert!(check("is_map(resource.properties)").is_err());
        assert_eq!(check("is_map({'a': resource.id})"), Ok(Value::Bool(true)));
        assert_eq!(check("is_map(resource.id)"), Ok(Value::Bool(false)));
    }

    #[test]
    fn int_and_double_compare_with_each_other() {
        assert_true("resource.properties.monthly_cost <= 50.0");
        assert_true("resource.properties.monthly_cost > 41.5");
        assert_true("resource.price > 12 && resource.price < 13u");
        assert_true("1500 > 1000.0 && 1500.5 > 1000");
        assert_true("type(resource.properties.monthly_cost) == int");
        assert_true("type(resource.price) == double");
        // arithmetic does not mix them
        assert!(eval("resource.properties.monthly_cost + 1.0").is_err());
        assert_eq!(
            eval("resource.properties.monthly_cost + 1"),
            Ok(Value::Int(43))
        );
    }

    #[test]
    fn large_numbers() {
        assert_true("type(resource.big) == uint");
        assert_true("resource.big == 18446744073709551615u");
        assert_true("resource.big > 1 && resource.big > 1.0");
        assert_true("type(resource.huge) == double && resource.huge > 1e299");
        assert_eq!(eval("resource.big"), Ok(Value::UInt(u64::MAX)));
        let at_limit = json!({"max": i64::MAX, "min": i64::MIN, "above": 9223372036854775808_u64});
        let env = env();
        let mut ctx = Context::with_env(env.clone());
        ctx.add_variable_as_val("n", borrow(&at_limit));
        let check = |source: &str| compile(&env, source).execute(&ctx);
        assert_eq!(
            check("type(n.max) == int && type(n.min) == int"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            check("type(n.above) == uint && n.above > n.max"),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn null_values() {
        assert_true("resource.nothing == null");
        assert_true("type(resource.nothing) == null_type");
        assert_true("subject.attrs.manager == null && subject.attrs.mfa != null");
        assert_eq!(eval("resource.nothing"), Ok(Value::Null));
    }

    #[test]
    fn optional_selection() {
        assert_true("resource.?missing.orValue('none') == 'none'");
        assert_true("resource.?properties.?region.orValue('') == 'eu-west-1'");
        assert_true("resource.?properties.?limits.?gpu.orValue(0) == 0");
        assert_true("!resource[?'missing'].hasValue()");
        assert_true("resource.?properties.value().monthly_cost == 42");
        assert_true("optional.ofNonZeroValue(resource.empty) == optional.none()");
        assert_true("optional.ofNonZeroValue(resource.properties).hasValue()");
    }

    #[test]
    fn strings_are_borrowed_not_copied() {
        let request = request();
        let subject = borrow(&request["subject"]);
        let indexer = subject.as_indexer().unwrap();
        let id = indexer.get(&CelString::from("id")).unwrap();
        let id = id.downcast_ref::<CelString<'_>>().unwrap();
        assert!(std::ptr::eq(
            id.inner(),
            request["subject"]["id"].as_str().unwrap()
        ));

        // and through a whole evaluation, with either binding
        let env = env();
        let program = compile(&env, "resource.items[2].name");
        let want = request["resource"]["items"][2]["name"].as_str().unwrap();
        let bound = context(&env, &request);
        let resolver = Resolver(&request);
        let mut resolved = Context::with_env(env.clone());
        resolved.set_variable_resolver(&resolver);
        for ctx in [&bound, &resolved] {
            let name = Value::resolve_val(program.expression(), ctx).unwrap();
            let name = name.downcast_ref::<CelString<'_>>().unwrap();
            assert!(std::ptr::eq(name.inner(), want));
        }
    }

    #[test]
    fn results_convert_to_json() {
        let cases = [
            ("subject.groups", json!(["admin", "dev"])),
            ("resource.properties.monthly_cost", json!(42)),
            ("resource.price", json!(12.5)),
            ("resource.big", json!(u64::MAX)),
            ("resource.nothing", json!(null)),
            (
                "{'cost': resource.price, 'list': [1, 2.5, 'x', null, true]}",
                json!({"cost": 12.5, "list": [1, 2.5, "x", null, true]}),
            ),
            ("resource.items.map(i, i.price)", json!([5, 25.5, 60])),
            (
                "timestamp('2024-01-02T03:04:05.5+01:00')",
                json!("2024-01-02T02:04:05.5Z"),
            ),
            ("duration('-1.5s')", json!("-1.5s")),
            ("duration('1h')", json!("3600s")),
        ];
        for (source, want) in cases {
            let got = eval(source).unwrap();
            assert_eq!(to_json(&got), Some(want), "{source}");
        }
        for source in [
            "double('NaN')",
            "{1: 'a'}",
            "b'abc'",
            "optional.of(1)",
            "[1, double('inf')]",
        ] {
            let got = eval(source).unwrap();
            assert_eq!(to_json(&got), None, "{source}");
        }
    }

    #[test]
    fn owned_values_round_trip_through_json() {
        let request = request();
        assert_eq!(to_json(&to_owned_value(&request)), Some(request.clone()));
        let owned = to_owned_value(&request["resource"]);
        let env = env();
        let mut ctx = Context::with_env(env.clone());
        ctx.add_variable_from_value("resource", owned);
        let program = compile(
            &env,
            "resource.properties.monthly_cost <= 50.0 && resource.big > 1",
        );
        assert_eq!(program.execute(&ctx), Ok(Value::Bool(true)));
    }

    #[test]
    fn borrowed_objects_need_val_to_json_to_leave_the_interpreter() {
        // Known limitation, see the module documentation.
        assert!(matches!(
            eval("resource.properties"),
            Err(ExecutionError::UnexpectedType { .. })
        ));
        assert!(matches!(
            eval("[subject.attrs]"),
            Err(ExecutionError::UnexpectedType { .. })
        ));

        let request = request();
        let env = env();
        let ctx = context(&env, &request);
        let cases = [
            (
                "resource.properties",
                request["resource"]["properties"].clone(),
            ),
            ("resource", request["resource"].clone()),
            (
                "{'who': subject, 'cost': resource.price}",
                json!({"who": request["subject"], "cost": 12.5}),
            ),
            (
                "resource.items.filter(i, i.price > 50)",
                json!([{"name": "c", "price": 60}]),
            ),
            (
                "resource.?properties.?limits",
                request["resource"]["properties"]["limits"].clone(),
            ),
        ];
        for (source, want) in cases {
            let program = compile(&env, source);
            let got = Value::resolve_val(program.expression(), &ctx).unwrap();
            // an optional is not JSON; unwrap it the way a caller would
            let got = match got.downcast_ref::<::cel::common::types::CelOptional<'_>>() {
                Some(opt) => val_to_json(opt.option().unwrap()),
                None => val_to_json(got.as_ref()),
            };
            assert_eq!(got, Some(want), "{source}");
        }
        let program = compile(&env, "{'a': double('NaN')}");
        let got = Value::resolve_val(program.expression(), &ctx).unwrap();
        assert_eq!(val_to_json(got.as_ref()), None);
    }

    #[test]
    fn scalars_and_arrays_at_the_root() {
        let env = env();
        let root = json!(["x", {"y": 1}]);
        let name = json!("bob");
        let mut ctx = Context::with_env(env.clone());
        ctx.add_variable_as_val("list", borrow(&root));
        ctx.add_variable_as_val("name", borrow(&name));
        let program = compile(
            &env,
            "list[1].y == 1 && 'x' in list && name.startsWith('b') && size(name) == 3",
        );
        assert_eq!(program.execute(&ctx), Ok(Value::Bool(true)));
    }

    #[test]
    fn evaluates_from_several_threads() {
        let env = env();
        let request = request();
        let program = compile(
            &env,
            "resource.items.exists(i, i.price > 50) && subject.attrs.mfa",
        );
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let ctx = context(&env, &request);
                    for _ in 0..100 {
                        assert_eq!(program.execute(&ctx), Ok(Value::Bool(true)));
                    }
                });
            }
        });
    }

    /// A ~1 KB AuthZEN-shaped request for the benchmark.
    fn bench_request() -> Json {
        json!({
            "subject": {
                "type": "user",
                "id": "alice@example.com",
                "properties": {
                    "department": "engineering",
                    "groups": ["admin", "dev", "oncall", "payments-approvers"],
                    "manager": "bob@example.com",
                    "employee_type": "full_time",
                    "location": "eu-west-1",
                    "clearance": 3,
                    "mfa": true,
                },
            },
            "action": {"name": "provision", "properties": {"method": "POST", "dry_run": false}},
            "resource": {
                "type": "cloud.vm",
                "id": "vm-7f3a2c91",
                "properties": {
                    "project": "checkout",
                    "monthly_cost": 42.5,
                    "region": "eu-west-1",
                    "instance_type": "m7g.large",
                    "tags": {"team": "payments", "env": "prod", "cost_center": "cc-1234"},
                    "owners": ["alice@example.com", "carol@example.com"],
                    "disks": [{"size_gb": 100, "type": "gp3"}, {"size_gb": 500, "type": "st1"}],
                },
            },
            "context": {
                "time": "2026-05-09T07:29:33Z",
                "ip": "10.1.2.3",
                "request_id": "01HZX3J8K2M4N6P8Q0R2S4T6V8",
                "user_agent": "verdict-cli/0.1 (linux; x86_64) reqwest/0.12",
                "session": {"mfa": true, "age_seconds": 1234, "issuer": "https://idp.example.com"},
            },
        })
    }

    /// Median, over 51 batches, of the mean time per call of `f`.
    fn median_ns(mut f: impl FnMut()) -> f64 {
        const BATCH: u32 = 2_000;
        for _ in 0..BATCH * 5 {
            f();
        }
        let mut samples: Vec<f64> = (0..51)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..BATCH {
                    f();
                }
                start.elapsed().as_nanos() as f64 / f64::from(BATCH)
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    }

    #[test]
    #[ignore = "benchmark: cargo test --release -- --ignored --nocapture bench_"]
    fn bench_eager_vs_lazy_binding() {
        use std::hint::black_box;

        const NAMES: [&str; 4] = ["subject", "action", "resource", "context"];
        let env = env();
        let program = compile(
            &env,
            "resource.properties.monthly_cost <= 50.0 && subject.id != \"\"",
        );
        let text = serde_json::to_string(&bench_request()).unwrap();
        let request: Json = serde_json::from_str(&text).unwrap();

        let eager = median_ns(|| {
            let mut ctx = Context::with_env(env.clone());
            for name in NAMES {
                ctx.add_variable_from_value(
                    name,
                    ::cel::to_value(black_box(&request[name])).unwrap(),
                );
            }
            assert_eq!(black_box(program.execute(&ctx)), Ok(Value::Bool(true)));
        });
        let owned = median_ns(|| {
            let mut ctx = Context::with_env(env.clone());
            for name in NAMES {
                ctx.add_variable_from_value(name, to_owned_value(black_box(&request[name])));
            }
            assert_eq!(black_box(program.execute(&ctx)), Ok(Value::Bool(true)));
        });
        let lazy = median_ns(|| {
            let mut ctx = Context::with_env(env.clone());
            for name in NAMES {
                ctx.add_variable_as_val(name, borrow(black_box(&request[name])));
            }
            assert_eq!(black_box(program.execute(&ctx)), Ok(Value::Bool(true)));
        });
        let parse = median_ns(|| {
            black_box(serde_json::from_str::<Json>(black_box(&text)).unwrap());
        });
        let resolver = Resolver(&request);
        let lazy_resolver = median_ns(|| {
            let mut ctx = Context::with_env(env.clone());
            ctx.set_variable_resolver(black_box(&resolver));
            assert_eq!(black_box(program.execute(&ctx)), Ok(Value::Bool(true)));
        });
        let lazy_with_parse = median_ns(|| {
            let request: Json = serde_json::from_str(black_box(&text)).unwrap();
            let mut ctx = Context::with_env(env.clone());
            for name in NAMES {
                ctx.add_variable_as_val(name, borrow(&request[name]));
            }
            assert_eq!(black_box(program.execute(&ctx)), Ok(Value::Bool(true)));
        });
        let ctx = context(&env, &request);
        let execute_only = median_ns(|| {
            assert_eq!(
                black_box(program.execute(black_box(&ctx))),
                Ok(Value::Bool(true))
            );
        });
        println!("request: {} bytes of JSON", text.len());
        println!(
            "bind 4 vars + execute, eager cel::to_value + add_variable_from_value: {eager:.0} ns"
        );
        println!(
            "bind 4 vars + execute, eager to_owned_value + add_variable_from_value: {owned:.0} ns"
        );
        println!("bind 4 vars + execute, lazy borrow + add_variable_as_val: {lazy:.0} ns");
        println!(
            "lazy through a VariableResolver (borrow per reference) + execute: {lazy_resolver:.0} ns"
        );
        println!("serde_json::from_str alone: {parse:.0} ns");
        println!("from_str + lazy bind + execute: {lazy_with_parse:.0} ns");
        println!("execute alone, lazily bound context reused: {execute_only:.0} ns");
    }
}

//! The decision record: the versioned schema of one decision-log line, and the line format
//! around it (`v` first, the hash chain's `prev` last).
//!
//! Position in the request flow: once the engine has a `Decision`, the server builds a
//! [`Record`] and hands it to `DecisionLog::record`. Building a record only moves owned data;
//! encoding it ([`encode_line`]) happens when its group is committed. A single evaluation's
//! request is logged as the bytes the client sent ([`RequestJson::Raw`]), so the log is
//! exact (numbers as written) and the request is not encoded again.
//!
//! This module must not do I/O or know about files, queues or rotation. It owns exactly two
//! things: what a line contains, and how a line is hashed into the chain.
//!
//! Compatibility: renaming, removing or retyping a field bumps [`VERSION`]; adding an
//! optional field does not. Readers ignore fields they do not know.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Schema version, written as `v` at the start of every line.
pub const VERSION: u32 = 1;

/// The `prev` of the first record ever written: 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One decision as logged: everything needed to explain it later.
///
/// Serialized in field order; `Option`s that are `None` and empty `Vec`s are left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Decision id, a UUIDv7 string; also returned to the client.
    pub id: String,
    /// When the decision was made: RFC 3339, milliseconds, UTC (see [`timestamp`]).
    pub time: String,
    /// The AuthZEN request as received.
    pub request: RequestJson,
    /// The answer: `true` allows.
    pub decision: bool,
    /// What decided: `rule:<policy>/<rule>`, `default`, `error` or `hook:<name>@<version>`.
    pub decided_by: String,
    /// Human-readable reason given by the deciding rule or hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Data returned with the decision (for example a generated username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<serde_json::Value>,
    /// Revision of the policy and hook snapshot that decided.
    pub revision: String,
    /// Every hook called for this decision, in call order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookCall>,
    /// Evaluation errors (each one forced a deny or was skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Where the time went.
    pub timings: Timings,
    /// How fresh the identity data behind the decision was.
    pub identity: Freshness,
    /// The client's `X-Request-ID`, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Position in a batch request, when the decision is one item of a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchPos>,
}

/// One hook invocation within a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookCall {
    /// Hook name as configured.
    pub name: String,
    /// Hook version (content hash or deploy tag).
    pub version: String,
    /// Wall time spent in the hook, in microseconds.
    pub elapsed_us: u64,
    /// Peak memory of the hook's runtime, in bytes.
    pub memory_bytes: u64,
    /// Lines the hook logged, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// Why the hook failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Time spent deciding, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// From parsed request to decision.
    pub total_us: u64,
    /// In CEL rules.
    pub rules_us: u64,
    /// In hooks.
    pub hooks_us: u64,
}

/// Freshness of the identity data a decision used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// Revision of the identity snapshot.
    pub revision: std::sync::Arc<str>,
    /// When that snapshot was loaded (RFC 3339).
    pub loaded_at: std::sync::Arc<str>,
    /// Whether the data could not be confirmed with its upstream: the last SCIM sync failed
    /// (the decision used the last good data).
    pub stale: bool,
    /// `file` (the snapshot file alone) or `scim` (SCIM users and groups merged with it).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub source: std::borrow::Cow<'static, str>,
    /// When the SCIM data was last confirmed (RFC 3339); absent before the first sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<String>,
}

/// Position of a decision within a batch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPos {
    /// Zero-based index of the item.
    pub index: usize,
    /// Number of items in the batch.
    pub of: usize,
}

/// A logged request: the JSON value, or the exact body the client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestJson {
    /// A request built or rewritten by Verdict (batch items, searches), or read back.
    Parsed(serde_json::Value),
    /// A body that parsed as a JSON object: logged as sent, on one line (its line breaks, tabs
    /// and indentation are dropped, so a pretty-printed body costs little more log than a
    /// compact one). Every token is literal: strings keep their spaces and escapes (`"\u0061"`
    /// is not rewritten to `"a"`), numbers keep their spelling (`35.0` stays `35.0`), and a
    /// body with a duplicate key keeps both (the decision used the last, as `serde_json`
    /// does); a reader searching the log for a value should parse the line, not grep it.
    Raw(bytes::Bytes),
}

impl From<serde_json::Value> for RequestJson {
    fn from(v: serde_json::Value) -> Self {
        RequestJson::Parsed(v)
    }
}

impl RequestJson {
    /// The request as a JSON value (parses a raw body).
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            RequestJson::Parsed(v) => v.clone(),
            RequestJson::Raw(b) => serde_json::from_slice(b).unwrap_or(serde_json::Value::Null),
        }
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            RequestJson::Parsed(v) => serde_json::to_writer(&mut *out, v),
            RequestJson::Raw(b) => {
                write_one_line(out, b);
                Ok(())
            }
        }
    }
}

impl Serialize for RequestJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestJson::Parsed(v) => v.serialize(s),
            RequestJson::Raw(_) => self.to_value().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RequestJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(RequestJson::Parsed)
    }
}

/// Appends `json` (valid JSON text) on one line: its line breaks and tabs are dropped, with the
/// spaces that indent the next line. None of these bytes can occur inside a JSON string (raw
/// control characters must be escaped there), so every string stays as it is; other spaces
/// stay too, which keeps this to one vectorised scan and a copy per line.
fn write_one_line(out: &mut Vec<u8>, json: &[u8]) {
    out.reserve(json.len());
    let mut rest = json.trim_ascii();
    // Below 0x0e, valid JSON has only tab, line feed and carriage return.
    while let Some((line, tail)) = crate::json::find_below(rest, 0x0e).and_then(|at| rest.split_at_checked(at)) {
        out.extend_from_slice(line);
        let indent = tail.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')).unwrap_or(tail.len());
        rest = tail.get(indent..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
}

/// Formats `at` the way [`Record::time`] expects: RFC 3339, milliseconds, UTC.
pub fn timestamp(at: SystemTime) -> String {
    rfc3339_millis(&DateTime::<Utc>::from(at))
}

/// `at` as RFC 3339 with milliseconds and `Z`, e.g. `2026-11-26T07:12:56.368Z`: what
/// `to_rfc3339_opts(SecondsFormat::Millis, true)` writes, without the formatting machinery
/// (it runs once per decision). The text up to the second is kept per thread: within one
/// second only the milliseconds change, and working out the calendar date is most of the cost.
pub fn rfc3339_millis(at: &DateTime<Utc>) -> String {
    use std::cell::Cell;
    thread_local! {
        /// The last second formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS.` text.
        static SECOND: Cell<(i64, [u8; 20])> = const { Cell::new((i64::MIN, [0; 20])) };
    }
    let (second, millis) = (at.timestamp(), at.timestamp_subsec_millis());
    // A leap second (nanoseconds past 1e9) is left to the full formatting below.
    if millis < 1000
        && let (cached, prefix) = SECOND.get()
        && cached == second
    {
        return with_millis(prefix, millis);
    }
    let text = format_rfc3339_millis(at);
    // Only the four-digit years have the fixed layout the cache assumes.
    if millis < 1000
        && text.len() == 24
        && let Some(prefix) = text.as_bytes().get(..20).and_then(|p| <[u8; 20]>::try_from(p).ok())
    {
        SECOND.set((second, prefix));
    }
    text
}

/// `prefix` (`YYYY-MM-DDTHH:MM:SS.`) followed by `millis` (below 1000) and `Z`.
fn with_millis(prefix: [u8; 20], millis: u32) -> String {
    let mut text = [0u8; 24];
    let (head, tail) = text.split_at_mut(20);
    head.copy_from_slice(&prefix);
    tail.copy_from_slice(&[b'0' + (millis / 100) as u8, b'0' + (millis / 10 % 10) as u8, b'0' + (millis % 10) as u8, b'Z']);
    // All ASCII: never the empty fallback.
    std::str::from_utf8(&text).unwrap_or_default().to_owned()
}

/// [`rfc3339_millis`] worked out from the date and time fields.
fn format_rfc3339_millis(at: &DateTime<Utc>) -> String {
    use chrono::{Datelike as _, Timelike as _};
    let year = at.year();
    let Ok(year) = u32::try_from(year) else {
        return at.to_rfc3339_opts(SecondsFormat::Millis, true);
    };
    if year > 9999 {
        return at.to_rfc3339_opts(SecondsFormat::Millis, true);
    }
    // A leap second shows as nanoseconds past 1e9; chrono prints it as second 60.
    let (second, millis) = match at.timestamp_subsec_millis() {
        m if m >= 1000 => (at.second() + 1, m - 1000),
        m => (at.second(), m),
    };
    let mut text = *b"0000-00-00T00:00:00.000Z";
    // Each field's digits end where its separator (or the `Z`) starts.
    let fields = [(year, 4), (at.month(), 7), (at.day(), 10), (at.hour(), 13), (at.minute(), 16), (second, 19), (millis, 23)];
    for (mut n, end) in fields {
        for digit in text.iter_mut().take(end).rev().take_while(|b| b.is_ascii_digit()) {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    // All ASCII: never the empty fallback.
    std::str::from_utf8(&text).unwrap_or_default().to_owned()
}

/// Appends `record` to `out` as one line (no newline), chained to `prev`, then replaces
/// `prev` with the hex SHA-256 of the line's bytes: the `prev` of the record that follows.
/// On error `out` and `prev` are as they were.
pub(super) fn encode_line(out: &mut Vec<u8>, record: &Record, prev: &mut String) -> Result<(), serde_json::Error> {
    let start = out.len();
    if let Err(error) = write_line(out, record, prev) {
        out.truncate(start);
        return Err(error);
    }
    line_hash_into(out.get(start..).unwrap_or_default(), prev);
    Ok(())
}

/// The line's JSON, written field by field in the order `Record` declares them (the same
/// bytes `serde_json` would write for `{v, ..record, prev}`, without re-encoding the request).
fn write_line(out: &mut Vec<u8>, r: &Record, prev: &str) -> Result<(), serde_json::Error> {
    fn name(out: &mut Vec<u8>, name: &str) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    }
    fn field<T: Serialize + ?Sized>(out: &mut Vec<u8>, key: &str, value: &T) -> Result<(), serde_json::Error> {
        name(out, key);
        serde_json::to_writer(&mut *out, value)
    }
    fn text(out: &mut Vec<u8>, key: &str, value: &str) -> Result<(), serde_json::Error> {
        name(out, key);
        crate::json::write_str(out, value)
    }
    out.extend_from_slice(b"{\"v\":");
    serde_json::to_writer(&mut *out, &VERSION)?;
    text(out, "id", &r.id)?;
    text(out, "time", &r.time)?;
    out.extend_from_slice(b",\"request\":");
    r.request.write(out)?;
    out.extend_from_slice(if r.decision { b",\"decision\":true" } else { b",\"decision\":false" });
    text(out, "decided_by", &r.decided_by)?;
    if let Some(reason) = &r.reason {
        text(out, "reason", reason)?;
    }
    if let Some(outputs) = &r.outputs {
        field(out, "outputs", outputs)?;
    }
    text(out, "revision", &r.revision)?;
    if !r.hooks.is_empty() {
        field(out, "hooks", &r.hooks)?;
    }
    if !r.errors.is_empty() {
        field(out, "errors", &r.errors)?;
    }
    let t = &r.timings;
    out.extend_from_slice(b",\"timings\":{\"total_us\":");
    write_u64(out, t.total_us);
    out.extend_from_slice(b",\"rules_us\":");
    write_u64(out, t.rules_us);
    out.extend_from_slice(b",\"hooks_us\":");
    write_u64(out, t.hooks_us);
    out.push(b'}');
    let identity = &r.identity;
    out.extend_from_slice(b",\"identity\":{\"revision\":");
    crate::json::write_str(out, &identity.revision)?;
    text(out, "loaded_at", &identity.loaded_at)?;
    out.extend_from_slice(if identity.stale { b",\"stale\":true" } else { b",\"stale\":false" });
    if !identity.source.is_empty() {
        text(out, "source", &identity.source)?;
    }
    if let Some(at) = &identity.synced_at {
        text(out, "synced_at", at)?;
    }
    out.push(b'}');
    if let Some(id) = &r.request_id {
        text(out, "request_id", id)?;
    }
    if let Some(batch) = &r.batch {
        field(out, "batch", batch)?;
    }
    text(out, "prev", prev)?;
    out.push(b'}');
    Ok(())
}

/// `n` in decimal, as `serde_json` writes it.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Hex SHA-256 of one line's exact bytes, without its newline.
pub(super) fn line_hash(line: &[u8]) -> String {
    let mut hash = String::with_capacity(64);
    line_hash_into(line, &mut hash);
    hash
}

/// [`line_hash`] into `out` (cleared first), reusing its allocation: once per record, so
/// without the `hex` crate's iterator and a fresh `String`.
fn line_hash_into(line: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 64];
    for (pair, byte) in text.chunks_exact_mut(2).zip(Sha256::digest(line)) {
        for (slot, nibble) in pair.iter_mut().zip([byte >> 4, byte & 0x0f]) {
            *slot = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
        }
    }
    out.clear();
    // All ASCII: never the empty fallback.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

// === impl Record ===

#[cfg(test)]
impl Record {
    /// A small, complete record with the given id.
    pub(crate) fn for_test(id: impl Into<String>) -> Self {
        Record {
            id: id.into(),
            time: "2025-01-02T03:04:05.678Z".to_owned(),
            request: serde_json::json!({
                "subject": {"type": "user", "id": "morty"},
                "action": {"name": "provision"},
                "resource": {"type": "vm", "id": "p1", "properties": {"cost": 12}}
            })
            .into(),
            decision: true,
            decided_by: "rule:provisioning/tiny".to_owned(),
            reason: None,
            outputs: None,
            revision: "r1".to_owned(),
            hooks: Vec::new(),
            errors: Vec::new(),
            timings: Timings {
                total_us: 7,
                rules_us: 5,
                hooks_us: 0,
            },
            identity: Freshness {
                revision: "i1".into(),
                loaded_at: "2025-01-02T03:00:00.000Z".into(),
                stale: false,
                source: "file".into(),
                synced_at: None,
            },
            request_id: None,
            batch: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// The hand-written line is the line `serde_json` writes for `{v, ..record, prev}`.
    #[test]
    fn line_matches_serde() {
        #[derive(Serialize)]
        struct Line<'a> {
            v: u32,
            #[serde(flatten)]
            record: &'a Record,
            prev: &'a str,
        }
        let mut full = Record::for_test("r\"1");
        full.reason = Some("why \u{1}".into());
        full.outputs = Some(serde_json::json!({"username": "mo"}));
        full.errors = vec!["rule `x`: no such key".into()];
        full.hooks = vec![HookCall {
            name: "h".into(),
            version: "abc".into(),
            elapsed_us: 3,
            memory_bytes: 9,
            logs: vec!["l".into()],
            error: None,
        }];
        full.request_id = Some("rid\\".into());
        full.batch = Some(BatchPos { index: 1, of: 2 });
        full.decided_by = "rule:p/\u{7f}é\u{1f}".into();
        full.identity.stale = true;
        full.identity.source = "".into();
        full.identity.synced_at = Some("2025-01-02T03:04:05.000Z".into());
        full.identity.loaded_at = "\"".into();
        let mut timed = full.clone();
        timed.timings = Timings { total_us: u64::MAX, rules_us: 0, hooks_us: 1_000_000_007 };
        full.timings = Timings { total_us: 10, rules_us: 9, hooks_us: 100 };
        for r in [Record::for_test("r0"), full, timed] {
            let (mut line, mut prev) = (Vec::new(), GENESIS_PREV.to_owned());
            encode_line(&mut line, &r, &mut prev).unwrap();
            assert_eq!(prev, hex::encode(Sha256::digest(&line)));
            let expected = serde_json::to_vec(&Line { v: VERSION, record: &r, prev: GENESIS_PREV }).unwrap();
            assert_eq!(String::from_utf8(line).unwrap(), String::from_utf8(expected).unwrap());
        }
    }

    /// The hand-written timestamp is chrono's, leap seconds and small years included.
    #[test]
    fn timestamp_matches_chrono() {
        use chrono::TimeZone as _;
        let mut times = vec![Utc::now(), DateTime::<Utc>::UNIX_EPOCH];
        for (y, mo, d, h, mi, sec, ms) in [(2026, 11, 26, 7, 12, 56, 368), (999, 1, 2, 3, 4, 5, 6), (9999, 12, 31, 23, 59, 59, 999), (2000, 2, 29, 0, 0, 0, 0)] {
            let at = Utc.with_ymd_and_hms(y, mo, d, h, mi, sec).unwrap() + chrono::Duration::milliseconds(ms);
            times.push(at);
        }
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_milli_opt(23, 59, 59, 1_500).unwrap();
        times.push(leap.and_utc());
        times.push(Utc.with_ymd_and_hms(12_345, 1, 1, 0, 0, 0).unwrap());
        for at in times {
            assert_eq!(rfc3339_millis(&at), at.to_rfc3339_opts(SecondsFormat::Millis, true), "{at:?}");
        }
    }

    /// The per-thread text of the last second is used only within that second: every
    /// millisecond of a second, the seconds around it, a leap second after its second was
    /// cached, and a year the cache cannot hold, each read as chrono writes them.
    #[test]
    fn cached_seconds_match_chrono() {
        use chrono::TimeZone as _;
        let base = Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59).unwrap();
        let mut times: Vec<DateTime<Utc>> = (0..1000).map(|ms| base + chrono::Duration::milliseconds(ms)).collect();
        times.push(chrono::NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_milli_opt(23, 59, 59, 1_250).unwrap().and_utc());
        times.push(base + chrono::Duration::milliseconds(999));
        times.push(base + chrono::Duration::seconds(1));
        times.push(base - chrono::Duration::milliseconds(1));
        times.push(Utc.with_ymd_and_hms(12_345, 1, 1, 0, 0, 0).unwrap());
        times.push(Utc.with_ymd_and_hms(12_345, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::milliseconds(7));
        times.push(base + chrono::Duration::milliseconds(3));
        for at in times {
            assert_eq!(rfc3339_millis(&at), at.to_rfc3339_opts(SecondsFormat::Millis, true), "{at:?}");
        }
    }

    /// Each line is appended after what the buffer holds, and chains to the one before.
    #[test]
    fn lines_append_to_the_buffer_and_chain() {
        let (mut buf, mut prev) = (b"earlier\n".to_vec(), GENESIS_PREV.to_owned());
        encode_line(&mut buf, &Record::for_test("r0"), &mut prev).unwrap();
        let first_end = buf.len();
        let first_hash = prev.clone();
        assert_eq!(first_hash, hex::encode(Sha256::digest(&buf[8..])));
        encode_line(&mut buf, &Record::for_test("r1"), &mut prev).unwrap();
        assert!(buf.starts_with(b"earlier\n{"));
        let second = &buf[first_end..];
        assert_eq!(prev, hex::encode(Sha256::digest(second)));
        let second: serde_json::Value = serde_json::from_slice(second).unwrap();
        assert_eq!((second["id"].as_str(), second["prev"].as_str()), (Some("r1"), Some(first_hash.as_str())));
    }

    /// A raw body is logged token for token, on one line, and reads back as the same value.
    #[test]
    fn raw_request_is_logged_as_sent_on_one_line() {
        let body = "\t{\n  \"subject\": {\"type\": \"user\", \"id\": \"a\\nb \\\"q\\\\\"},\r\n  \"n\": 35.0,\n\t\"k\" : [ 1 , \"\\u0061 \" ] }\n";
        let mut r = Record::for_test("r0");
        r.request = RequestJson::Raw(bytes::Bytes::from(body));
        let mut line = Vec::new();
        encode_line(&mut line, &r, &mut GENESIS_PREV.to_owned()).unwrap();
        let text = String::from_utf8(line).unwrap();
        let want = r#""request":{"subject": {"type": "user", "id": "a\nb \"q\\"},"n": 35.0,"k" : [ 1 , "\u0061 " ] },"#;
        assert!(text.contains(want), "{text}");
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back.request.to_value(), serde_json::from_str::<serde_json::Value>(body).unwrap());
    }

    /// On generated JSON (strings with spaces, quotes, backslashes and escapes; numbers as
    /// spelled; every kind of whitespace between tokens) the line is the body without its
    /// line breaks, tabs and indentation, byte for byte, and reads back as the same value.
    #[test]
    fn one_line_drops_only_line_breaks_tabs_and_indentation() {
        let spaces = [" ", "\t", "\n", "\r\n", "\n    ", " \n\t ", "", ""];
        let strings = [r#""""#, r#"" a ""#, r#""\"""#, r#""\\""#, r#""\\\" x""#, r#""\u00e9 \n""#, "\"é ∑ \""];
        let numbers = ["0", "-1.50", "1e3", "35.0"];
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(seed >> 33).unwrap() % n
        };
        for _ in 0..2_000 {
            // The tokens of an object with a few members; whitespace (or none) before each.
            let mut tokens: Vec<String> = vec!["{".into()];
            for m in 0..1 + next(4) {
                if m > 0 {
                    tokens.push(",".into());
                }
                tokens.push(format!("\"k{m}{}", &strings[next(strings.len())][1..]));
                tokens.push(":".into());
                match next(3) {
                    0 => tokens.push(strings[next(strings.len())].into()),
                    1 => tokens.push(numbers[next(numbers.len())].into()),
                    _ => tokens.extend(["[", "true", ",", "null", "]"].map(String::from)),
                }
            }
            tokens.push("}".into());
            let spaced: String = tokens.iter().map(|t| format!("{}{t}", spaces[next(spaces.len())])).collect();
            let value: serde_json::Value = serde_json::from_str(&spaced).unwrap();
            // The reference: byte by byte, a line break or tab starts a run of dropped
            // whitespace; leading and trailing whitespace goes too.
            let mut want = Vec::new();
            let mut dropping = false;
            for &b in spaced.trim_ascii().as_bytes() {
                match b {
                    b'\t' | b'\n' | b'\r' => dropping = true,
                    b' ' if dropping => {}
                    _ => {
                        dropping = false;
                        want.push(b);
                    }
                }
            }
            let mut out = Vec::new();
            write_one_line(&mut out, spaced.as_bytes());
            assert_eq!(String::from_utf8(out.clone()).unwrap(), String::from_utf8(want).unwrap(), "{spaced:?}");
            assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap(), value);
        }
    }
}

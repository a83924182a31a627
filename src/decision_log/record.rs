//! The decision record: the versioned schema of one decision-log line, and the line format
//! around it (`v` first, the hash chain's `prev` last).
//!
//! Position in the request flow: once the engine has a `Decision`, the server builds a
//! [`Record`] and hands it to `DecisionLog::record`. Building a record only moves owned data;
//! encoding it ([`encode_line`]) happens on the writer thread, never on the request path.
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
    /// The AuthZEN request as received, with secrets already redacted by the caller.
    pub request: serde_json::Value,
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
    pub revision: String,
    /// When that snapshot was loaded (RFC 3339).
    pub loaded_at: String,
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

/// The written line: `v`, the record's fields, then `prev`.
#[derive(Serialize)]
struct Line<'a> {
    v: u32,
    #[serde(flatten)]
    record: &'a Record,
    prev: &'a str,
}

/// Formats `at` the way [`Record::time`] expects: RFC 3339, milliseconds, UTC.
pub fn timestamp(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Encodes `record` as one line into `line` (cleared first, no newline) and returns the hex
/// SHA-256 of those bytes: the `prev` of the record that follows.
pub(super) fn encode_line(
    line: &mut Vec<u8>,
    record: &Record,
    prev: &str,
) -> Result<String, serde_json::Error> {
    line.clear();
    serde_json::to_writer(
        &mut *line,
        &Line {
            v: VERSION,
            record,
            prev,
        },
    )?;
    Ok(line_hash(line))
}

/// Hex SHA-256 of one line's exact bytes, without its newline.
pub(super) fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
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
            }),
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
                revision: "i1".to_owned(),
                loaded_at: "2025-01-02T03:00:00.000Z".to_owned(),
                stale: false,
                source: "file".into(),
                synced_at: None,
            },
            request_id: None,
            batch: None,
        }
    }
}

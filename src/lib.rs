//! Verdict: a policy decision sidecar.
//!
//! An application asks, over the AuthZEN 1.0 API, whether a subject may do an action on a
//! resource. CEL rules decide; every decision is written to a hash-chained log before it is
//! answered.
//!
//! # Request flow
//!
//! ```text
//! accept (connection permit) → serve_connection (hyper, HTTP/1.1 or h2, optional TLS)
//!   → route → body limits → JSON depth → AuthZEN shape → DecisionRequest
//!   → reload::Store::current()            one Arc<Snapshot>: policies, functions, identity, revision
//!   → principal from the identity index   (subject.id matched by id, email or username)
//!   → policy::Set::select(action, resource.type)
//!   → CEL rules in order, first match     allow | deny | hook:NAME
//!   → hook:NAME → hooks::Pool             bounded queue → JS worker (QuickJS, deadline, memory cap)
//!   → Decision { allow, decided_by, reason, outputs, errors, hook calls }
//!   → decision_log.record()               returns once the record is written (group commit)
//!   → respond                             (server::respond is the only error → HTTP mapping)
//! ```
//!
//! # Layout
//!
//! `cli` → `server` → `decision` → {`cel`, `policy`, `identity`, `hooks`} ; `reload` owns the
//! snapshot, `hookstate` every deployed hook version, `decision_log` the log, `config` the
//! settings. `decision` and below never import the server. `bench` is a client: the load
//! generator and comparison harness behind `verdict bench`.
//!
//! # Glossary
//!
//! - **rule**: a named CEL condition with one outcome, inside a policy.
//! - **policy**: an ordered list of rules for a set of actions and resource types.
//! - **hook**: a TypeScript function a rule hands the request to.
//! - **principal**: the subject's identity record, looked up in the identity snapshot.
//! - **decision**: allow or deny, with who decided and why; one log record each.
//! - **reason**: a human-readable why, from the rule or default.
//! - **snapshot**: all compiled state of one revision, swapped whole on reload.

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod bench;
pub mod cases;
pub mod cel;
pub mod cli;
pub mod config;
pub mod decision;
pub mod decision_log;
pub mod hooks;
pub mod hookstate;
pub mod identity;
pub mod json;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod tls_client;

/// A `HashMap` hashed with foldhash instead of SipHash, for the maps a decision looks up:
/// their keys come from policy files and identity data, and SipHash cost about 160
/// instructions per lookup (callgrind).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

//! What a decision is: the effect, who made it, why, and what went wrong on the way.

use std::borrow::Cow;
use std::sync::Arc;

/// The result of evaluating one request against one snapshot.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Permit or not. Defaults to deny everywhere an error occurs.
    pub allow: bool,
    /// What made the decision.
    pub decided_by: DecidedBy,
    /// Why, as the rule, policy default or error puts it.
    pub reason: Option<Arc<str>>,
    /// Data returned with the decision (hooks).
    pub outputs: Option<serde_json::Value>,
    /// Evaluation errors met on the way, including skipped rules.
    pub errors: Vec<String>,
    /// Hook calls made for this decision, for the record.
    pub hooks: Vec<crate::decision_log::HookCall>,
    /// A hook could not even be queued (the pool is saturated): the server answers 503
    /// instead of a decision.
    pub overloaded: bool,
}

/// What made a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// A rule matched; holds `rule:<policy>/<rule>`.
    Rule(Arc<str>),
    /// A hook decided; holds `hook:<name>@<version>`.
    Hook(Arc<str>),
    /// No rule matched (or no policy applies): the default.
    Default,
    /// An error, mapped to the policy's `on_error`.
    Error,
}

// === impl DecidedBy ===

impl DecidedBy {
    /// The wire form used in responses and the decision log.
    pub fn as_str(&self) -> Cow<'_, str> {
        match self {
            DecidedBy::Rule(s) | DecidedBy::Hook(s) => Cow::Borrowed(s),
            DecidedBy::Default => Cow::Borrowed("default"),
            DecidedBy::Error => Cow::Borrowed("error"),
        }
    }

    /// The metric label: `rule`, `hook`, `default` or `error`.
    pub fn kind(&self) -> &'static str {
        match self {
            DecidedBy::Rule(_) => "rule",
            DecidedBy::Hook(_) => "hook",
            DecidedBy::Default => "default",
            DecidedBy::Error => "error",
        }
    }
}

// === impl Decision ===

impl Decision {
    /// A decision with no reason, outputs or errors yet.
    pub fn new(allow: bool, decided_by: DecidedBy) -> Decision {
        Decision { allow, decided_by, reason: None, outputs: None, errors: Vec::new(), hooks: Vec::new(), overloaded: false }
    }

    /// A decision that failed closed.
    pub fn error(reason: impl Into<Arc<str>>) -> Decision {
        Decision { reason: Some(reason.into()), ..Decision::new(false, DecidedBy::Error) }
    }
}

//! Compiling rule conditions. Runs at load only; a request never parses CEL.

use std::sync::Arc;

/// Variables a condition may reference.
pub const VARIABLES: &[&str] = &["subject", "action", "resource", "context", "principal", "now", "identity"];

/// The CEL environment: the standard library, shared by every condition of a snapshot.
#[derive(Clone)]
pub struct Env {
    inner: Arc<::cel::Env>,
}

/// A compiled condition.
#[derive(Debug)]
pub struct Condition {
    program: ::cel::Program,
    /// The direct evaluator's plan, for conditions of the shape it handles.
    plan: Option<super::fast::Plan>,
    source: Arc<str>,
}

/// A condition that does not compile, with its position inside the expression.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// 1-based line inside the expression.
    pub line: usize,
    /// 1-based column inside the expression.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

// === impl Env ===

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

impl Env {
    /// The standard CEL environment.
    pub fn new() -> Self {
        Env { inner: Arc::new(::cel::Env::stdlib()) }
    }

    /// The underlying environment, for building contexts.
    pub fn inner(&self) -> &Arc<::cel::Env> {
        &self.inner
    }
}

// === impl Condition ===

impl Condition {
    /// Parses `source` and checks that it references only known variables.
    pub fn compile(env: &Env, source: &str) -> Result<Condition, CompileError> {
        let program = env.inner.compile(source).map_err(|errs| {
            let first = errs.errors.first();
            let (line, column) = first.map_or((1, 1), |e| {
                (usize::try_from(e.pos.0).unwrap_or(0).max(1), usize::try_from(e.pos.1).unwrap_or(0) + 1)
            });
            let message = first.map_or_else(|| errs.to_string(), |e| e.msg.clone());
            CompileError { line, column, message: format!("invalid CEL at column {column}: {message}") }
        })?;
        let bound = comprehension_variables(source);
        let references = program.references();
        let mut unknown: Vec<&str> = references
            .variables()
            .into_iter()
            .filter(|v| !VARIABLES.contains(v) && !bound.iter().any(|b| b == v))
            .collect();
        unknown.sort_unstable();
        if let Some(first) = unknown.first() {
            return Err(CompileError {
                line: 1,
                column: 1,
                message: format!(
                    "unknown variable `{first}`; conditions can use {}",
                    VARIABLES.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let plan = super::fast::Plan::compile(program.expression());
        Ok(Condition { program, plan, source: source.into() })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The direct evaluator's plan, if the condition has one.
    pub(crate) fn plan(&self) -> Option<&super::fast::Plan> {
        self.plan.as_ref()
    }

    /// The compiled program.
    pub(crate) fn program(&self) -> &::cel::Program {
        &self.program
    }
}

/// Names bound by macros such as `list.exists(x, …)`: references to them are not free variables.
///
/// This is a lexical scan, not a parse: it may accept a name that is bound elsewhere in the
/// expression, which only weakens the typo check, never rejects a valid condition.
fn comprehension_variables(source: &str) -> Vec<String> {
    const MACROS: &[&str] = &["all(", "exists(", "exists_one(", "map(", "filter(", "transformList(", "transformMap("];
    let mut out = Vec::new();
    for m in MACROS {
        let mut rest = source;
        while let Some(i) = rest.find(m) {
            rest = rest.get(i + m.len()..).unwrap_or_default();
            for name in rest.split(')').next().unwrap_or_default().split(',').take(2) {
                let name = name.trim();
                if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    out.push(name.to_owned());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn unknown_variables_are_rejected() {
        let e = Condition::compile(&Env::new(), "subjct.id == 'x'").unwrap_err();
        assert!(e.message.contains("`subjct`"), "{e}");
    }

    #[test]
    fn comprehension_variables_are_allowed() {
        Condition::compile(&Env::new(), "resource.properties.tags.exists(t, t == 'x')").unwrap();
        Condition::compile(&Env::new(), "[1,2].all(n, n > 0)").unwrap();
    }

    #[test]
    fn syntax_errors_have_a_column() {
        let e = Condition::compile(&Env::new(), "subject.id ==").unwrap_err();
        assert!(e.message.contains("column"), "{e}");
    }
}

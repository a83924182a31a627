//! Policies: YAML files of ordered CEL rules, parsed and compiled once per snapshot.
//!
//! A policy applies to a set of actions and resource types. Exactly one policy decides a request:
//! the most specific one whose `applies_to` matches (action and resource type both listed, then
//! action only, then resource type only, then a policy that lists neither). Two policies that
//! could both match a request at the same specificity are rejected at load, naming both files,
//! so there is never a silent overlap. Within a policy the first rule whose condition is true
//! decides; when none is, the policy's `default` does.
//!
//! Loading collects every error of every file (file, line, rule) before failing, so `verdict
//! check` prints them in one pass. Nothing here runs per request except [`Set::select`].

pub mod yaml;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{FastMap, cel};
use yaml::Node;

pub use yaml::SyntaxError;

/// Suffixes of test-case files kept beside policies; the policy loader skips them.
pub const TEST_SUFFIXES: &[&str] = &["_test.yaml", "_test.yml", ".test.yaml", ".test.yml"];

/// All policies of one snapshot, indexed for selection.
#[derive(Debug, Default)]
pub struct Set {
    policies: Vec<Policy>,
    exact: FastMap<Box<str>, FastMap<Box<str>, usize>>,
    by_action: FastMap<Box<str>, usize>,
    by_type: FastMap<Box<str>, usize>,
    catch_all: Option<usize>,
}

/// One compiled policy.
#[derive(Debug)]
pub struct Policy {
    /// The policy's name.
    pub name: Arc<str>,
    /// The file it came from.
    pub file: PathBuf,
    /// Actions it applies to; empty means any.
    pub actions: Vec<String>,
    /// Resource types it applies to; empty means any.
    pub resource_types: Vec<String>,
    /// Ordered rules.
    pub rules: Vec<Rule>,
    /// Outcome when no rule matches.
    pub default: Effect,
    /// Reason given with the default outcome.
    pub default_reason: Option<Arc<str>>,
    /// What a rule whose condition fails to evaluate does.
    pub on_error: OnError,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Rule name, unique within its policy.
    pub name: Arc<str>,
    /// `rule:<policy>/<rule>`, precomputed for the response.
    pub decided_by: Arc<str>,
    /// Line of the rule in its file.
    pub line: usize,
    /// The compiled condition.
    pub condition: cel::Condition,
    /// What happens when the condition is true.
    pub outcome: Outcome,
    /// Reason given with the outcome.
    pub reason: Option<Arc<str>>,
    /// Overrides the policy's `on_error` for this rule (and, for hooks, the hook's failures).
    pub on_error: Option<OnError>,
}

/// A terminal effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Permit.
    Allow,
    /// Forbid.
    Deny,
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Decide with this effect.
    Effect(Effect),
    /// Hand the request to the named TypeScript hook.
    Hook(Arc<str>),
}

/// What an evaluation error leads to. There is deliberately no `allow`: an error never permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Deny, with `decided_by: error`.
    Deny,
    /// Record the error and go on with the next rule, as if the condition were false.
    Skip,
}

/// One load problem, located.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}: {}{message}", file.display(), rule.as_ref().map(|r| format!("rule `{r}`: ")).unwrap_or_default())]
pub struct LoadError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The rule, when the problem is inside one.
    pub rule: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Every problem found while loading a policy directory.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} policy error(s): {}", errors.len(), errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct LoadErrors {
    /// The problems, in file and line order.
    pub errors: Vec<LoadError>,
}

/// Files read while loading, for the snapshot's revision hash.
pub type SourceFiles = Vec<(PathBuf, Vec<u8>)>;

// === impl Set ===

impl Set {
    /// Loads and compiles every policy file under `dir` (hidden entries and test files skipped).
    /// With `hooks`, a rule naming a hook that is not among them is a load error.
    pub fn load(dir: &Path, env: &cel::Env, hooks: Option<&HashSet<String>>) -> Result<(Set, SourceFiles), LoadErrors> {
        let mut errors = Vec::new();
        let mut files = Vec::new();
        collect_files(dir, &mut files, &mut errors);
        files.sort();
        let mut sources = Vec::new();
        let mut policies = Vec::new();
        for path in files {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    match String::from_utf8(bytes.clone()) {
                        Ok(text) => {
                            if let Some(p) = parse_policy(&path, &text, env, &mut errors) {
                                check_hooks(&p, hooks, &mut errors);
                                policies.push(p);
                            }
                        }
                        Err(_) => errors.push(located(&path, 1, None, "file is not valid UTF-8".to_owned())),
                    }
                    sources.push((path, bytes));
                }
                Err(e) => errors.push(located(&path, 1, None, format!("cannot read: {e}"))),
            }
        }
        let set = Set::build(policies, &mut errors);
        if errors.is_empty() { Ok((set, sources)) } else { Err(LoadErrors { errors }) }
    }

    /// Compiles policies from in-memory YAML sources (used by tests and `verdict eval`).
    pub fn from_sources(sources: &[(&str, &str)], env: &cel::Env) -> Result<Set, LoadErrors> {
        let mut errors = Vec::new();
        let mut policies = Vec::new();
        for (name, text) in sources {
            if let Some(p) = parse_policy(Path::new(name), text, env, &mut errors) {
                policies.push(p);
            }
        }
        let set = Set::build(policies, &mut errors);
        if errors.is_empty() { Ok(set) } else { Err(LoadErrors { errors }) }
    }

    fn build(policies: Vec<Policy>, errors: &mut Vec<LoadError>) -> Set {
        let mut set = Set::default();
        let mut names: HashMap<Arc<str>, PathBuf> = HashMap::new();
        for (i, p) in policies.iter().enumerate() {
            if let Some(first) = names.insert(p.name.clone(), p.file.clone()) {
                errors.push(located(
                    &p.file,
                    1,
                    None,
                    format!("policy name `{}` is already used in {}", p.name, first.display()),
                ));
            }
            let mut claim = |slot: Option<usize>, what: String| -> Option<usize> {
                if let Some(other) = slot.and_then(|j| policies.get(j)) {
                    errors.push(located(
                        &p.file,
                        1,
                        None,
                        format!(
                            "policy `{}` overlaps policy `{}` ({}) on {what}; give one of them narrower `applies_to`",
                            p.name,
                            other.name,
                            other.file.display()
                        ),
                    ));
                    slot
                } else {
                    Some(i)
                }
            };
            match (p.actions.is_empty(), p.resource_types.is_empty()) {
                (false, false) => {
                    for a in &p.actions {
                        for t in &p.resource_types {
                            let inner = set.exact.entry(a.as_str().into()).or_default();
                            let prev = inner.get(t.as_str()).copied();
                            if let Some(v) = claim(prev, format!("action `{a}` with resource type `{t}`")) {
                                inner.insert(t.as_str().into(), v);
                            }
                        }
                    }
                }
                (false, true) => {
                    for a in &p.actions {
                        let prev = set.by_action.get(a.as_str()).copied();
                        if let Some(v) = claim(prev, format!("action `{a}` (any resource type)")) {
                            set.by_action.insert(a.as_str().into(), v);
                        }
                    }
                }
                (true, false) => {
                    for t in &p.resource_types {
                        let prev = set.by_type.get(t.as_str()).copied();
                        if let Some(v) = claim(prev, format!("resource type `{t}` (any action)")) {
                            set.by_type.insert(t.as_str().into(), v);
                        }
                    }
                }
                (true, true) => {
                    let prev = set.catch_all;
                    set.catch_all = claim(prev, "every request".to_owned());
                }
            }
        }
        set.policies = policies;
        set
    }

    /// The policy that decides `action` on `resource_type`, if any.
    pub fn select(&self, action: &str, resource_type: &str) -> Option<&Policy> {
        let i = self
            .exact
            .get(action)
            .and_then(|m| m.get(resource_type))
            .or_else(|| self.by_action.get(action))
            .or_else(|| self.by_type.get(resource_type))
            .copied()
            .or(self.catch_all)?;
        self.policies.get(i)
    }

    /// All policies, in file order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Number of rules across all policies.
    pub fn rule_count(&self) -> usize {
        self.policies.iter().map(|p| p.rules.len()).sum()
    }

    /// The actions named by policies that apply to `resource_type`, in file order, each once
    /// (the candidates of AuthZEN action search).
    pub fn actions_for(&self, resource_type: &str) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.policies
            .iter()
            .filter(|p| p.resource_types.is_empty() || p.resource_types.iter().any(|t| t == resource_type))
            .flat_map(|p| p.actions.iter().map(String::as_str))
            .filter(|a| seen.insert(*a))
            .collect()
    }
}

fn check_hooks(policy: &Policy, hooks: Option<&HashSet<String>>, errors: &mut Vec<LoadError>) {
    let Some(hooks) = hooks else { return };
    for rule in &policy.rules {
        if let Outcome::Hook(name) = &rule.outcome
            && !hooks.contains(&**name) {
                let mut known: Vec<&str> = hooks.iter().map(String::as_str).collect();
                known.sort_unstable();
                let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                errors.push(located(
                    &policy.file,
                    rule.line,
                    Some(&rule.name),
                    format!("unknown hook `{name}` (loaded hooks: {known})"),
                ));
            }
    }
}

/// Whether `path` is a policy test-case file rather than a policy.
pub fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    TEST_SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(located(dir, 1, None, format!("cannot read policy directory: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Hidden entries include Kubernetes ConfigMap internals (`..data`, `..2024_…`); the
        // visible names are symlinks into them, so reading both would load every policy twice.
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out, errors);
        } else if (name.ends_with(".yaml") || name.ends_with(".yml")) && !is_test_file(&path) {
            out.push(path);
        }
    }
}

fn located(file: &Path, line: usize, rule: Option<&str>, message: String) -> LoadError {
    LoadError { file: file.to_path_buf(), line, rule: rule.map(str::to_owned), message }
}

/// Reads one policy document; pushes every problem and returns the policy only when it is whole.
fn parse_policy(path: &Path, text: &str, env: &cel::Env, errors: &mut Vec<LoadError>) -> Option<Policy> {
    let before = errors.len();
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            errors.push(located(path, 1, None, "file is empty; expected a policy".to_owned()));
            return None;
        }
        Err(e) => {
            errors.push(located(path, e.line, None, format!("invalid YAML: {}", e.message)));
            return None;
        }
    };
    let mut fields = Fields::new(path, &root, None, errors)?;
    let name = fields.required_str("policy", errors);
    let applies_to = fields.take("applies_to");
    let default = fields.take("default");
    let default_reason = fields.optional_str("default_reason", errors);
    let on_error = fields.take("on_error");
    let _description = fields.optional_str("description", errors);
    let rules_node = fields.take("rules");
    fields.finish(errors);

    let (mut actions, mut resource_types) = (Vec::new(), Vec::new());
    if let Some(node) = &applies_to
        && let Some(mut f) = Fields::new(path, node, None, errors) {
            actions = f.take("actions").map(|n| string_list(path, &n, "actions", errors)).unwrap_or_default();
            resource_types = f
                .take("resource_types")
                .map(|n| string_list(path, &n, "resource_types", errors))
                .unwrap_or_default();
            f.finish(errors);
        }
    let default = default.map_or(Some(Effect::Deny), |n| parse_effect(path, &n, None, errors));
    let on_error = on_error.map_or(Some(OnError::Deny), |n| parse_on_error(path, &n, None, errors));

    let mut rules = Vec::new();
    let policy_name: Arc<str> = name.clone().unwrap_or_default().into();
    match &rules_node {
        None => {}
        Some(Node::Seq { items, .. }) => {
            let mut seen = HashSet::new();
            for item in items {
                if let Some(name) = rule_name(item)
                    && !seen.insert(name.to_owned()) {
                        errors.push(located(path, item.line(), Some(name), "duplicate rule name".to_owned()));
                    }
                if let Some(rule) = parse_rule(path, &policy_name, item, env, errors) {
                    rules.push(rule);
                }
            }
        }
        Some(other) if other.is_null() => {}
        Some(other) => errors.push(located(
            path,
            other.line(),
            None,
            format!("`rules` must be a list, found {}", other.kind()),
        )),
    }
    if errors.len() != before {
        return None;
    }
    Some(Policy {
        name: policy_name,
        file: path.to_path_buf(),
        actions,
        resource_types,
        rules,
        default: default?,
        default_reason: default_reason.map(Into::into),
        on_error: on_error?,
    })
}

fn parse_rule(
    path: &Path,
    policy: &Arc<str>,
    node: &Node,
    env: &cel::Env,
    errors: &mut Vec<LoadError>,
) -> Option<Rule> {
    let line = node.line();
    let before = errors.len();
    let mut f = Fields::new(path, node, None, errors)?;
    let name = f.required_str("name", errors);
    f.rule = name.clone();
    let rule = name.as_deref();
    let when = f.take("when");
    let effect = f.take("effect");
    let hook = f.optional_str("hook", errors);
    let reason = f.optional_str("reason", errors);
    let on_error = f.take("on_error").and_then(|n| parse_on_error(path, &n, rule, errors));
    f.finish(errors);

    let condition = match &when {
        None => {
            errors.push(located(path, line, rule, "missing `when` (use `when: \"true\"` for a catch-all)".to_owned()));
            None
        }
        Some(n) => match n.as_str() {
            None => {
                errors.push(located(path, n.line(), rule, format!("`when` must be a CEL expression, found {}", n.kind())));
                None
            }
            Some(src) => match cel::Condition::compile(env, src) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(located(path, n.line() + e.line.saturating_sub(1), rule, e.to_string()));
                    None
                }
            },
        },
    };
    let outcome = match (effect, hook) {
        (Some(e), None) => parse_effect(path, &e, rule, errors).map(Outcome::Effect),
        (None, Some(h)) if !h.is_empty() => Some(Outcome::Hook(h.into())),
        (Some(_), Some(_)) => {
            errors.push(located(path, line, rule, "has both `effect` and `hook`; a rule has one outcome".to_owned()));
            None
        }
        _ => {
            errors.push(located(path, line, rule, "needs an outcome: `effect: allow`, `effect: deny` or `hook: NAME`".to_owned()));
            None
        }
    };
    if errors.len() != before {
        return None;
    }
    let name: Arc<str> = name?.into();
    Some(Rule {
        decided_by: format!("rule:{policy}/{name}").into(),
        name,
        line,
        condition: condition?,
        outcome: outcome?,
        reason: reason.map(Into::into),
        on_error,
    })
}

fn rule_name(node: &Node) -> Option<&str> {
    let Node::Map { entries, .. } = node else { return None };
    entries.iter().find(|(k, _)| k.as_str() == Some("name")).and_then(|(_, v)| v.as_str())
}

fn parse_effect(path: &Path, node: &Node, rule: Option<&str>, errors: &mut Vec<LoadError>) -> Option<Effect> {
    match node.as_str() {
        Some("allow") => Some(Effect::Allow),
        Some("deny") => Some(Effect::Deny),
        _ => {
            errors.push(located(path, node.line(), rule, format!("effect must be `allow` or `deny`, found {}", show(node))));
            None
        }
    }
}

fn parse_on_error(path: &Path, node: &Node, rule: Option<&str>, errors: &mut Vec<LoadError>) -> Option<OnError> {
    match node.as_str() {
        Some("deny") => Some(OnError::Deny),
        Some("skip") => Some(OnError::Skip),
        _ => {
            errors.push(located(
                path,
                node.line(),
                rule,
                format!("`on_error` must be `deny` or `skip` (an error never allows), found {}", show(node)),
            ));
            None
        }
    }
}

fn string_list(path: &Path, node: &Node, key: &str, errors: &mut Vec<LoadError>) -> Vec<String> {
    match node {
        Node::Seq { items, .. } => items
            .iter()
            .filter_map(|n| match n.as_str() {
                Some(s) if !s.is_empty() => Some(s.to_owned()),
                _ => {
                    errors.push(located(path, n.line(), None, format!("`{key}` items must be non-empty strings")));
                    None
                }
            })
            .collect(),
        Node::Scalar { value, .. } if value == "*" => Vec::new(),
        other => {
            errors.push(located(path, other.line(), None, format!("`{key}` must be a list of strings or \"*\"")));
            Vec::new()
        }
    }
}

fn show(node: &Node) -> String {
    node.as_str().map_or_else(|| node.kind().to_owned(), |s| format!("`{s}`"))
}

/// The keys of one YAML mapping, consumed one by one so leftovers can be reported as unknown.
struct Fields<'a> {
    path: &'a Path,
    line: usize,
    entries: Vec<(String, usize, Node)>,
    rule: Option<String>,
}

// === impl Fields ===

impl<'a> Fields<'a> {
    fn new(path: &'a Path, node: &Node, rule: Option<&str>, errors: &mut Vec<LoadError>) -> Option<Self> {
        let Node::Map { entries, .. } = node else {
            errors.push(located(path, node.line(), rule, format!("expected a mapping, found {}", node.kind())));
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            match k.as_str() {
                Some(key) if out.iter().any(|(seen, _, _)| seen == key) => {
                    errors.push(located(path, k.line(), rule, format!("duplicate key `{key}`")));
                }
                Some(key) => out.push((key.to_owned(), k.line(), v.clone())),
                None => errors.push(located(path, k.line(), rule, "keys must be strings".to_owned())),
            }
        }
        Some(Fields { path, line: node.line(), entries: out, rule: rule.map(str::to_owned) })
    }

    fn take(&mut self, key: &str) -> Option<Node> {
        let i = self.entries.iter().position(|(k, _, _)| k == key)?;
        Some(self.entries.remove(i).2)
    }

    fn optional_str(&mut self, key: &str, errors: &mut Vec<LoadError>) -> Option<String> {
        let node = self.take(key)?;
        if node.is_null() {
            return None;
        }
        match node.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                errors.push(located(
                    self.path,
                    node.line(),
                    self.rule.as_deref(),
                    format!("`{key}` must be a string, found {}", node.kind()),
                ));
                None
            }
        }
    }

    fn required_str(&mut self, key: &str, errors: &mut Vec<LoadError>) -> Option<String> {
        let present = self.entries.iter().any(|(k, _, _)| k == key);
        let value = self.optional_str(key, errors);
        if !present {
            errors.push(located(self.path, self.line, self.rule.as_deref(), format!("missing required key `{key}`")));
        }
        value.filter(|v| !v.is_empty())
    }

    fn finish(self, errors: &mut Vec<LoadError>) {
        for (key, line, _) in self.entries {
            errors.push(located(self.path, line, self.rule.as_deref(), format!("unknown key `{key}`")));
        }
    }
}

#[cfg(test)]
mod tests;

//! The host API a hook sees as the second argument of `decide(req, sdk)`, and secret
//! redaction.
//!
//! Where it sits: `sandbox.rs` installs it once per context, when the context is built; on
//! each call the worker fills the [`Host`]'s current [`Call`] (identity snapshot, secrets,
//! fetch policy, log buffer) and empties it afterwards, so host functions always act for
//! the call that is running and never for another.
//!
//! SDK version 1, as hooks see it (`hooks/verdict.d.ts` declares the same, for `tsc`):
//!
//! | member | does |
//! | --- | --- |
//! | `sdk.identity.user(id)`, `.userByEmail(e)`, `.userByUsername(u)` | user object (snapshot fields plus `groups` and `found: true`) or `null` |
//! | `sdk.identity.groupsOf(uid)` | group names, transitive |
//! | `sdk.identity.inGroup(uid, group)`, `.hasApp(uid, app)`, `.hasEntitlement(uid, app, ent)` | boolean |
//! | `sdk.identity.grantsOf(uid)`, `.entitlementsOf(app)`, `.accountsOf(uid, app?)`, `.unmatchedAccounts()` | arrays of records |
//! | `sdk.identity.managers(uid)`, `.directReports(uid)` | arrays of user objects |
//! | `sdk.identity.usernameTaken(name)`, `.emailTaken(email)` | boolean |
//! | `sdk.secrets.get(name)` | the declared secret's value; throws for an undeclared name |
//! | `sdk.log.info/warn/error(...args)` | captured as `"info: text"` (64 lines of 2 KiB at most) |
//! | `sdk.fetch(url, {method?, headers?, body?})` | `Promise<{status, headers, text(), json()}>` (body already read); rejects with a `FetchError` |
//! | `sdk.config` | the hook's configured values, frozen |
//!
//! A `uid` may be a user's id, email or username, as for the CEL `identity.*` functions.
//! Identity lookups are synchronous and read the index the request started with.
//!
//! What this module must not do: expose any host function outside the frozen `sdk` object
//! (the raw functions stay in the shim's closure), let a secret value leave the runtime
//! unredacted in text the sidecar logs or returns, or keep per-call data after the call.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rquickjs::prelude::{Async, Opt};
use rquickjs::{Ctx, Function, Object};

use super::HookSpec;
use super::fetch::{self, Cancel, Client};
use crate::cel::env::principal_json;
use crate::identity::{Index, User};

/// Most log lines one call keeps; later lines are counted, then reported in one line.
pub(super) const MAX_LOG_LINES: usize = 64;

/// Longest log line kept, in bytes; longer lines are cut.
pub(super) const MAX_LOG_LINE_BYTES: usize = 2048;

/// What a secret value is replaced with.
pub(super) const REDACTED: &str = "[redacted]";

/// The JavaScript side of the SDK: given the raw host functions and the config JSON, it
/// builds the frozen `sdk` object and returns a binder `decide => (req => decide(req,
/// sdk))`. Evaluated once per context, after hardening.
const SDK_JS: &str = r#"(function (host, configJson) {
  'use strict';
  const freezeDeep = (root) => {
    const stack = [root];
    while (stack.length > 0) {
      const o = stack.pop();
      if (o === null || (typeof o !== 'object' && typeof o !== 'function') || Object.isFrozen(o)) continue;
      Object.freeze(o);
      for (const k of Reflect.ownKeys(o)) {
        const d = Reflect.getOwnPropertyDescriptor(o, k);
        if ('value' in d) stack.push(d.value);
      }
    }
    return root;
  };
  const text = (v, what) => {
    if (typeof v !== 'string') throw new TypeError(`${what} must be a string, got ${v === null ? 'null' : typeof v}`);
    return v;
  };
  const ask = (op, ...args) => JSON.parse(host.identity(op, ...args));
  const identity = {
    user: (id) => ask('user', text(id, 'identity.user: id')),
    userByEmail: (email) => ask('userByEmail', text(email, 'identity.userByEmail: email')),
    userByUsername: (name) => ask('userByUsername', text(name, 'identity.userByUsername: username')),
    groupsOf: (uid) => ask('groupsOf', text(uid, 'identity.groupsOf: uid')),
    inGroup: (uid, group) => ask('inGroup', text(uid, 'identity.inGroup: uid'), text(group, 'identity.inGroup: group')),
    hasApp: (uid, app) => ask('hasApp', text(uid, 'identity.hasApp: uid'), text(app, 'identity.hasApp: app')),
    hasEntitlement: (uid, app, ent) => JSON.parse(host.identity3(text(uid, 'identity.hasEntitlement: uid'),
      text(app, 'identity.hasEntitlement: app'), text(ent, 'identity.hasEntitlement: entitlement'))),
    grantsOf: (uid) => ask('grantsOf', text(uid, 'identity.grantsOf: uid')),
    entitlementsOf: (app) => ask('entitlementsOf', text(app, 'identity.entitlementsOf: app')),
    managers: (uid) => ask('managers', text(uid, 'identity.managers: uid')),
    directReports: (uid) => ask('directReports', text(uid, 'identity.directReports: uid')),
    accountsOf: (uid, app) => app === undefined
      ? ask('accountsOf', text(uid, 'identity.accountsOf: uid'))
      : ask('accountsOf', text(uid, 'identity.accountsOf: uid'), text(app, 'identity.accountsOf: app')),
    unmatchedAccounts: () => ask('unmatchedAccounts'),
    usernameTaken: (name) => ask('usernameTaken', text(name, 'identity.usernameTaken: username')),
    emailTaken: (email) => ask('emailTaken', text(email, 'identity.emailTaken: email')),
  };
  const secrets = {
    get: (name) => {
      const value = host.secret(text(name, 'secrets.get: name'));
      if (value === undefined) throw new Error(`secret \`${name}\` is not declared for this hook`);
      return value;
    },
  };
  const show = (v) => {
    if (typeof v === 'string') return v;
    if (v instanceof Error) return String(v);
    try {
      const s = JSON.stringify(v);
      return s === undefined ? String(v) : s;
    } catch {
      return String(v);
    }
  };
  const line = (level) => (...args) => { host.log(level, args.map(show).join(' ')); };
  const log = { info: line('info'), warn: line('warn'), error: line('error') };
  class FetchError extends Error {}
  Object.defineProperty(FetchError.prototype, 'name', { value: 'FetchError' });
  const fetch = async (url, init) => {
    const options = init === undefined || init === null ? {} : init;
    const method = options.method === undefined ? 'GET' : text(options.method, 'fetch: method');
    const headers = options.headers === undefined ? {} : options.headers;
    if (headers === null || typeof headers !== 'object') throw new TypeError('fetch: headers must be an object');
    const names = Object.keys(headers);
    const pairs = names.map((k) => [k, text(headers[k], `fetch: header \`${k}\``)]);
    const body = options.body === undefined ? undefined : text(options.body, 'fetch: body');
    const target = text(url, 'fetch: url');
    const sent = body === undefined
      ? host.fetch(target, method, JSON.stringify(pairs))
      : host.fetch(target, method, JSON.stringify(pairs), body);
    const raw = JSON.parse(await sent);
    if (raw.error !== undefined) throw new FetchError(raw.error);
    const got = raw.body;
    return freezeDeep({
      status: raw.status,
      headers: raw.headers,
      text: () => got,
      json: () => JSON.parse(got),
    });
  };
  const sdk = freezeDeep({ identity, secrets, log, fetch, config: JSON.parse(configJson) });
  return (decide) => (req) => decide(req, sdk);
})"#;

/// The per-worker link between host functions and the call that is running.
///
/// Shared (`Rc`) by every context of one worker; the worker thread is its only user.
/// [`Host::begin`] fills it before a call, [`Host::end`] empties it after; host functions
/// called in between act for that call. Outside a call (a module's top level, a drained
/// job) they find nothing and refuse.
#[derive(Default)]
pub(super) struct Host {
    current: RefCell<Option<Call>>,
}

/// What host functions need from the call that is running.
pub(super) struct Call {
    /// The hook's spec: secrets, fetch policy.
    pub(super) spec: Arc<HookSpec>,
    /// The identity snapshot the request started with.
    pub(super) identity: Arc<Index>,
    /// Cancels the call's fetches when the call ends early.
    pub(super) cancel: Rc<Cancel>,
    /// Fetch client and cache, shared by the pool.
    pub(super) client: Arc<Client>,
    /// Lines logged so far.
    pub(super) logs: Logs,
    /// Replaces secret values.
    pub(super) redactor: Rc<Redactor>,
}

/// Log lines of one call, bounded in count and size, redacted as they arrive.
#[derive(Debug, Default)]
pub(super) struct Logs {
    lines: Vec<String>,
    dropped: usize,
}

/// Replaces every declared secret value with [`REDACTED`].
#[derive(Debug, Default)]
pub(super) struct Redactor {
    /// Non-empty secret values, longest first, so a secret containing another is replaced
    /// whole.
    values: Vec<String>,
}

/// Installs the SDK in `ctx` and returns the binder that turns the hook's `decide` into the
/// one-argument function the worker calls.
pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    host: &Rc<Host>,
    config: &serde_json::Value,
) -> rquickjs::Result<Function<'js>> {
    let factory: Function<'js> = ctx.eval(SDK_JS)?;
    let raw = Object::new(ctx.clone())?;
    let h = host.clone();
    raw.set(
        "identity",
        Function::new(
            ctx.clone(),
            move |op: String, a: Opt<String>, b: Opt<String>| {
                h.identity(&op, a.0.as_deref().unwrap_or(""), b.0.as_deref())
            },
        )?,
    )?;
    let h = host.clone();
    raw.set(
        "identity3",
        Function::new(ctx.clone(), move |uid: String, app: String, ent: String| {
            h.has_entitlement(&uid, &app, &ent)
        })?,
    )?;
    let h = host.clone();
    raw.set(
        "secret",
        Function::new(ctx.clone(), move |name: String| h.secret(&name))?,
    )?;
    let h = host.clone();
    raw.set(
        "log",
        Function::new(ctx.clone(), move |level: String, text: String| {
            h.log(&level, &text)
        })?,
    )?;
    let h = host.clone();
    raw.set(
        "fetch",
        Function::new(
            ctx.clone(),
            Async(
                move |url: String, method: String, headers: String, body: Opt<String>| {
                    let request = h.fetch_request(url, method, &headers, body.0);
                    async move {
                        match request {
                            Ok((client, request)) => fetch::to_json(client.fetch(request).await),
                            Err(message) => fetch::to_json(Err(message)),
                        }
                    }
                },
            ),
        )?,
    )?;
    let config_json = serde_json::to_string(config).unwrap_or_else(|_| "{}".to_owned());
    factory.call((raw, config_json))
}

// === impl Host ===

impl Host {
    /// Makes `call` the current call.
    pub(super) fn begin(&self, call: Call) {
        if let Ok(mut current) = self.current.try_borrow_mut() {
            *current = Some(call);
        }
    }

    /// Ends the current call and returns it (with its logs).
    pub(super) fn end(&self) -> Option<Call> {
        self.current
            .try_borrow_mut()
            .ok()
            .and_then(|mut current| current.take())
    }

    /// Runs `f` on the current call, if there is one.
    fn with_call<R>(&self, f: impl FnOnce(&mut Call) -> R) -> Option<R> {
        let mut current = self.current.try_borrow_mut().ok()?;
        current.as_mut().map(f)
    }

    /// `sdk.identity.*`, except `hasEntitlement`: the answer as JSON text.
    fn identity(&self, op: &str, a: &str, b: Option<&str>) -> String {
        self.with_call(|call| identity_json(&call.identity, op, a, b))
            .unwrap_or_else(|| "null".to_owned())
    }

    /// `sdk.identity.hasEntitlement`, as JSON text.
    fn has_entitlement(&self, uid: &str, app: &str, entitlement: &str) -> String {
        self.with_call(|call| {
            let ix = &call.identity;
            bool_json(ix.has_entitlement(resolve(ix, uid), app, entitlement))
        })
        .unwrap_or_else(|| "false".to_owned())
    }

    /// `sdk.secrets.get`: the value of a declared secret.
    fn secret(&self, name: &str) -> Option<String> {
        self.with_call(|call| call.spec.secrets.get(name).cloned())
            .flatten()
    }

    /// `sdk.log.*`.
    fn log(&self, level: &str, text: &str) {
        self.with_call(|call| {
            let redactor = call.redactor.clone();
            call.logs.push(level, text, &redactor);
        });
    }

    /// Checks a `sdk.fetch` against the call's policy and prepares it; the request
    /// carries its own copies of everything, so it outlives neither its call's deadline
    /// nor its cancellation.
    fn fetch_request(
        &self,
        url: String,
        method: String,
        headers: &str,
        body: Option<String>,
    ) -> Result<(Arc<Client>, fetch::Request), String> {
        let headers: Vec<(String, String)> =
            serde_json::from_str(headers).map_err(|e| format!("fetch: bad headers: {e}"))?;
        self.with_call(|call| {
            let request = fetch::Request {
                hook: call.spec.compiled.name.clone(),
                url,
                method,
                headers,
                body,
                policy: call.spec.fetch.clone(),
                cancel: call.cancel.clone(),
            };
            (call.client.clone(), request)
        })
        .ok_or_else(|| "fetch is only available while `decide` runs".to_owned())
    }
}

// === impl Logs ===

impl Logs {
    /// Adds `"level: text"`, redacted, cut to [`MAX_LOG_LINE_BYTES`]; counts it as dropped
    /// past [`MAX_LOG_LINES`].
    pub(super) fn push(&mut self, level: &str, text: &str, redactor: &Redactor) {
        if self.lines.len() >= MAX_LOG_LINES {
            self.dropped += 1;
            return;
        }
        let level = match level {
            "warn" | "error" => level,
            _ => "info",
        };
        let mut line = format!("{level}: {}", redactor.redact(text));
        if line.len() > MAX_LOG_LINE_BYTES {
            let mut cut = MAX_LOG_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        self.lines.push(line);
    }

    /// The lines, plus a final line counting the dropped ones, if any.
    pub(super) fn into_lines(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.lines
                .push(format!("warn: {} more log lines dropped", self.dropped));
        }
        self.lines
    }
}

// === impl Redactor ===

impl Redactor {
    /// A redactor for the spec's secret values.
    pub(super) fn new(spec: &HookSpec) -> Redactor {
        let mut values: Vec<String> = spec
            .secrets
            .values()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Redactor { values }
    }

    /// `text` with every secret value replaced.
    pub(super) fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), REDACTED));
            }
        }
        out
    }

    /// `text` with every secret value replaced, owned.
    pub(super) fn redact_owned(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(changed) => changed,
        }
    }

    /// Replaces secret values in every string and key of `value`.
    pub(super) fn redact_json(&self, value: &mut serde_json::Value) {
        if self.values.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => {
                if let Cow::Owned(changed) = self.redact(s) {
                    *s = changed;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => {
                let old = std::mem::take(map);
                for (key, mut v) in old {
                    self.redact_json(&mut v);
                    map.insert(self.redact_owned(key), v);
                }
            }
            _ => {}
        }
    }
}

/// The answer of one `sdk.identity` lookup as JSON text.
fn identity_json(ix: &Index, op: &str, a: &str, b: Option<&str>) -> String {
    let users = |list: Vec<&User>| {
        json_text(
            &list
                .into_iter()
                .map(|u| principal_json(ix, u))
                .collect::<Vec<_>>(),
        )
    };
    let user = |u: Option<&User>| {
        u.map_or_else(|| "null".to_owned(), |u| json_text(&principal_json(ix, u)))
    };
    match op {
        "user" => user(ix.user(a)),
        "userByEmail" => user(ix.user_by_email(a)),
        "userByUsername" => user(ix.user_by_username(a)),
        "groupsOf" => json_text(
            &ix.groups_of(resolve(ix, a))
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>(),
        ),
        "inGroup" => bool_json(ix.in_group(resolve(ix, a), b.unwrap_or(""))),
        "hasApp" => bool_json(ix.has_app(resolve(ix, a), b.unwrap_or(""))),
        "grantsOf" => json_text(&ix.grants_of(resolve(ix, a))),
        "entitlementsOf" => json_text(&ix.entitlements_of(a)),
        "managers" => users(ix.managers(resolve(ix, a))),
        "directReports" => users(ix.direct_reports(resolve(ix, a))),
        "accountsOf" => json_text(&ix.accounts_of(resolve(ix, a), b)),
        "unmatchedAccounts" => json_text(&ix.unmatched_accounts().collect::<Vec<_>>()),
        "usernameTaken" => bool_json(ix.username_taken(a)),
        "emailTaken" => bool_json(ix.email_taken(a)),
        _ => "null".to_owned(),
    }
}

/// The user id a caller means by `key` (id, email or username), else `key` itself.
fn resolve<'a>(ix: &'a Index, key: &'a str) -> &'a str {
    ix.resolve_user(key).map_or(key, |u| u.id.as_str())
}

fn bool_json(b: bool) -> String {
    if b { "true" } else { "false" }.to_owned()
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

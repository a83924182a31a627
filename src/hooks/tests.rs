//! Tests of the hook runtime against real QuickJS: compilation errors, the SDK, fetch
//! against a local server, hostile hooks ending in the right error within their deadline,
//! context recycling, isolation, and back-pressure. The `#[ignore]`d `bench_*` tests print
//! medians; run them in release mode:
//! `cargo test --release --lib hooks::tests::bench -- --ignored --nocapture --test-threads 1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::fetch::Client;
use super::sandbox::{CallInput, Sandbox};
use super::{Error, FetchPolicy, HookSpec, Isolation, Limits, Outcome, Pool, PoolConfig, compile};
use crate::identity::{self, Index};

/// Slack allowed past a deadline: the interrupt's overshoot plus a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(150);

const IDENTITY: &str = r#"{
  "version": 1,
  "users": [
    {"id": "u1", "username": "asmith", "email": "alice@example.com", "display_name": "Alice", "manager_id": "u2"},
    {"id": "u2", "username": "bjones", "email": "bob@example.com"},
    {"id": "u3", "username": "cwu", "email": "carol@example.com", "manager_id": "u2"}
  ],
  "groups": [
    {"id": "g1", "name": "Engineering", "member_ids": ["u1"]},
    {"id": "g2", "name": "all-staff", "member_ids": ["u2"], "member_group_ids": ["g1"]}
  ],
  "apps": [{"id": "app-gh", "name": "GitHub"}],
  "entitlements": [{"id": "gh-admin", "app_id": "app-gh", "slug": "admin"}],
  "accounts": [
    {"id": "acct-1", "app_id": "app-gh", "user_id": "u1", "username": "alice-gh"},
    {"id": "acct-2", "app_id": "app-gh", "user_id": null, "username": "deploy-bot"}
  ],
  "grants": [{"account_id": "acct-1", "entitlement_id": "gh-admin"}]
}"#;

fn index() -> Arc<Index> {
    let (index, _) = identity::load_bytes(IDENTITY.as_bytes(), Path::new("identity.json")).unwrap();
    Arc::new(index)
}

fn request() -> Value {
    json!({
        "subject": {"type": "user", "id": "alice@example.com"},
        "action": {"name": "read"},
        "resource": {"type": "doc", "id": "d1"},
        "context": {},
        "principal": {"id": "u1", "found": true, "groups": ["Engineering", "all-staff"]},
    })
}

fn with_context(context: Value) -> Value {
    let mut r = request();
    r["context"] = context;
    r
}

fn spec(name: &str, source: &str) -> HookSpec {
    let compiled = compile(name, Path::new(&format!("hooks/{name}.ts")), source).unwrap();
    HookSpec::new(Arc::new(compiled))
}

fn hook(name: &str, source: &str) -> Arc<HookSpec> {
    Arc::new(spec(name, source))
}

fn hook_with(name: &str, source: &str, f: impl FnOnce(&mut HookSpec)) -> Arc<HookSpec> {
    let mut s = spec(name, source);
    f(&mut s);
    Arc::new(s)
}

fn pool(workers: usize) -> Pool {
    Pool::spawn(PoolConfig {
        workers,
        queue_capacity: 64,
        ..PoolConfig::default()
    })
    .unwrap()
}

async fn call(pool: &Pool, spec: &Arc<HookSpec>, input: Value) -> Result<Outcome, Error> {
    pool.call(spec.clone(), input, index()).await
}

#[track_caller]
fn within_deadline(started: Instant, limit: Duration) {
    let took = started.elapsed();
    assert!(took <= limit + SLACK, "took {took:?}, deadline {limit:?}");
}

// --- compile ---

#[test]
fn syntax_error_points_into_the_typescript() {
    let source = "type Req = { action: { name: string } };\n\nexport default function decide(req: Req) {\n  const x: number = ;\n  return { decision: true };\n}\n";
    let e = compile("broken", Path::new("hooks/broken.ts"), source).unwrap_err();
    assert_eq!((e.line, e.column), (4, 21), "{e}");
    assert!(e.to_string().starts_with("hooks/broken.ts:4:21: "), "{e}");
    assert!(e.message.chars().next().unwrap().is_lowercase(), "{e}");
}

#[test]
fn missing_default_export_is_refused() {
    for source in [
        "export function decide() { return { decision: true }; }",
        "export default 42;",
        "const x = 1;",
    ] {
        let e = compile("nodefault", Path::new("hooks/nodefault.ts"), source).unwrap_err();
        assert_eq!(
            e.message, "hook must `export default` a function",
            "{source}"
        );
    }
}

#[test]
fn top_level_errors_and_loops_fail_the_compile() {
    let e = compile(
        "t",
        Path::new("t.ts"),
        "\n\nthrow new Error('boom');\nexport default () => ({decision: true});",
    )
    .unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("boom"), "{e}");
    let started = Instant::now();
    let e = compile(
        "t",
        Path::new("t.ts"),
        "for (;;) {}\nexport default () => ({decision: true});",
    )
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{e}");
    assert!(e.message.contains("interrupted"), "{e}");
}

#[test]
fn top_level_await_that_never_settles_fails_the_compile() {
    let e = compile(
        "t",
        Path::new("t.ts"),
        "await new Promise(() => {});\nexport default () => ({decision: true});",
    )
    .unwrap_err();
    assert_eq!(
        e.message,
        "module top level failed: it awaits a promise that never settles"
    );
}

#[test]
fn compile_strips_types_and_hashes_the_source() {
    let source = "interface R { ok: boolean }\nexport default function (req: unknown): R & { decision: boolean } {\n  return { ok: true, decision: true } as any;\n}\n";
    let c = compile("types", Path::new("types.ts"), source).unwrap();
    assert_eq!(c.version.len(), 12);
    assert!(c.version.chars().all(|ch| ch.is_ascii_hexdigit()));
    assert!(!c.js.contains("interface"), "{}", c.js);
    assert!(!c.bytecode.is_empty());
    assert_eq!(c.source_line(1), Some(2), "{}", c.js);
}

// --- calls ---

#[tokio::test]
async fn trivial_hook_allows() {
    let pool = pool(1);
    let h = hook(
        "allow",
        "export default function decide(req: any) { return { decision: true, reason: `ok ${req.action.name}` }; }",
    );
    let out = call(&pool, &h, request()).await.unwrap();
    assert!(out.decision);
    assert_eq!(out.reason.as_deref(), Some("ok read"));
    assert_eq!(out.outputs, None);
    assert!(out.memory_bytes > 0);
}

#[tokio::test]
async fn async_hook_is_awaited() {
    let pool = pool(1);
    let h = hook(
        "async",
        "export default async function (req: any) {\n  await null;\n  const n = await Promise.resolve(2);\n  return { decision: req.action.name === 'read', outputs: { n } };\n}",
    );
    let out = call(&pool, &h, request()).await.unwrap();
    assert!(out.decision);
    assert_eq!(out.outputs, Some(json!({"n": 2})));
}

#[tokio::test]
async fn identity_lookups_read_the_snapshot() {
    let pool = pool(1);
    let h = hook(
        "who",
        r#"export default function (req: any, sdk: any) {
  const id = sdk.identity;
  const me = id.userByEmail(req.subject.id);
  return { decision: true, outputs: {
    name: me.display_name,
    found: me.found,
    byId: id.user('u2').username,
    byUsername: id.userByUsername('CWU').id,
    missing: id.user('nobody'),
    groups: id.groupsOf('alice@example.com'),
    inGroup: id.inGroup('asmith', 'all-staff'),
    notInGroup: id.inGroup('u3', 'Engineering'),
    hasApp: id.hasApp('u1', 'app-gh'),
    admin: id.hasEntitlement('u1', 'app-gh', 'admin'),
    grants: id.grantsOf('u1').map((g: any) => g.entitlement_id),
    ents: id.entitlementsOf('app-gh').map((e: any) => e.slug),
    managers: id.managers('u1').map((u: any) => u.id),
    reports: id.directReports('u2').map((u: any) => u.id),
    accounts: id.accountsOf('u1', 'app-gh').map((a: any) => a.id),
    unmatched: id.unmatchedAccounts().map((a: any) => a.id),
    taken: id.usernameTaken('Alice-GH'),
    emailTaken: id.emailTaken('nobody@example.com'),
  } };
}"#,
    );
    let out = call(&pool, &h, request()).await.unwrap();
    assert_eq!(
        out.outputs.unwrap(),
        json!({
            "name": "Alice", "found": true, "byId": "bjones", "byUsername": "u3", "missing": null,
            "groups": ["Engineering", "all-staff"], "inGroup": true, "notInGroup": false, "hasApp": true,
            "admin": true, "grants": ["gh-admin"], "ents": ["admin"], "managers": ["u2"],
            "reports": ["u1", "u3"], "accounts": ["acct-1"], "unmatched": ["acct-2"], "taken": true,
            "emailTaken": false,
        })
    );
}

#[tokio::test]
async fn identity_arguments_must_be_strings() {
    let pool = pool(1);
    let h = hook(
        "badarg",
        "export default (req: any, sdk: any) => ({ decision: sdk.identity.user(42) !== null });",
    );
    let e = call(&pool, &h, request()).await.unwrap_err();
    assert_eq!(
        e,
        Error::Threw {
            message: "TypeError: identity.user: id must be a string, got number (line 1)"
                .to_owned()
        }
    );
}

#[tokio::test]
async fn config_is_visible_and_frozen() {
    let pool = pool(1);
    let h = hook_with(
        "cfg",
        r#"export default (req: any, sdk: any) => {
  let frozen = false;
  try { sdk.config.limit = 1; } catch (e) { frozen = e instanceof TypeError; }
  try { sdk.config.nested.list.push(3); } catch (e) { frozen = frozen && e instanceof TypeError; }
  return { decision: sdk.config.limit > 10, outputs: { limit: sdk.config.limit, frozen } };
}"#,
        |s| s.config = json!({"limit": 100, "nested": {"list": [1, 2]}}),
    );
    let out = call(&pool, &h, request()).await.unwrap();
    assert!(out.decision);
    assert_eq!(out.outputs, Some(json!({"limit": 100, "frozen": true})));
}

#[tokio::test]
async fn config_change_rebuilds_the_context() {
    let pool = pool(1);
    let source = "export default (req: any, sdk: any) => ({ decision: true, reason: String(sdk.config.v) });";
    let a = hook_with("cfg2", source, |s| s.config = json!({"v": 1}));
    let b = hook_with("cfg2", source, |s| s.config = json!({"v": 2}));
    assert_eq!(
        call(&pool, &a, request()).await.unwrap().reason.as_deref(),
        Some("1")
    );
    assert_eq!(
        call(&pool, &b, request()).await.unwrap().reason.as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn secrets_are_readable_and_redacted_everywhere() {
    let pool = pool(1);
    let source = r#"export default (req: any, sdk: any) => {
  const token = sdk.secrets.get('api_token');
  sdk.log.info('token is', token, { token });
  if (req.context.fail) throw new Error(`bad token ${token}`);
  return { decision: true, reason: `used ${token}`, outputs: { token, [token]: 1, nested: [token + '!'] } };
}"#;
    let h = hook_with("secret", source, |s| {
        s.secrets = BTreeMap::from([("api_token".to_owned(), "s3cr3t-value".to_owned())]);
    });
    let out = call(&pool, &h, request()).await.unwrap();
    assert_eq!(out.reason.as_deref(), Some("used [redacted]"));
    assert_eq!(
        out.outputs,
        Some(json!({"token": "[redacted]", "[redacted]": 1, "nested": ["[redacted]!"]}))
    );
    assert_eq!(
        out.logs,
        vec![r#"info: token is [redacted] {"token":"[redacted]"}"#.to_owned()]
    );

    let failed = pool
        .call_with_logs(h.clone(), with_context(json!({"fail": true})), index())
        .await
        .unwrap_err();
    assert_eq!(
        failed.error,
        Error::Threw {
            message: "Error: bad token [redacted] (line 4)".to_owned()
        }
    );
    assert_eq!(failed.logs.len(), 1);
    assert!(!failed.logs[0].contains("s3cr3t"));
}

#[tokio::test]
async fn undeclared_secret_throws() {
    let pool = pool(1);
    let h = hook(
        "nosecret",
        "export default (req: any, sdk: any) => ({ decision: sdk.secrets.get('other') === 'x' });",
    );
    let e = call(&pool, &h, request()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Threw { message } if message.contains("secret `other` is not declared")),
        "{e:?}"
    );
}

#[tokio::test]
async fn logs_are_captured_and_bounded() {
    let pool = pool(1);
    let h = hook(
        "logs",
        r#"export default (req: any, sdk: any) => {
  sdk.log.info('hello', 1, [2], null);
  sdk.log.warn('careful');
  sdk.log.error(new Error('oops'));
  if (req.context.flood) { for (let i = 0; i < 100; i++) sdk.log.info('x'.repeat(5000)); }
  return { decision: true };
}"#,
    );
    let out = call(&pool, &h, request()).await.unwrap();
    assert_eq!(
        out.logs,
        vec![
            "info: hello 1 [2] null",
            "warn: careful",
            "error: Error: oops"
        ]
    );
    let out = call(&pool, &h, with_context(json!({"flood": true})))
        .await
        .unwrap();
    assert_eq!(out.logs.len(), super::sdk::MAX_LOG_LINES + 1);
    assert!(out.logs[3].len() <= super::sdk::MAX_LOG_LINE_BYTES + 4);
    assert_eq!(out.logs.last().unwrap(), "warn: 39 more log lines dropped");
}

#[tokio::test]
async fn bad_results_are_named() {
    let pool = pool(1);
    let cases = [
        (
            "undefined",
            "expected an object like `{decision: boolean}`, got undefined",
        ),
        (
            "true",
            "expected an object like `{decision: boolean}`, got boolean",
        ),
        (
            "[1]",
            "expected an object like `{decision: boolean}`, got array",
        ),
        (
            "{ allow: true }",
            "unexpected member `allow` (a result has `decision`, `reason` and `outputs`)",
        ),
        (
            "{ decision: 'yes' }",
            "`decision` must be a boolean, got string",
        ),
        (
            "{ decision: true, reason: 5 }",
            "`reason` must be a string, got number",
        ),
        (
            "{ decision: true, outputs: [1] }",
            "`outputs` must be an object, got array",
        ),
        (
            "{ decision: true, outputs: 'x' }",
            "`outputs` must be an object, got string",
        ),
    ];
    for (i, (result, message)) in cases.iter().enumerate() {
        let h = hook(
            &format!("bad{i}"),
            &format!("export default () => ({result});"),
        );
        let e = call(&pool, &h, request()).await.unwrap_err();
        assert_eq!(
            e,
            Error::BadResult {
                message: (*message).to_owned()
            },
            "{result}"
        );
    }
    let h = hook(
        "nullish",
        "export default () => ({ decision: false, reason: null, outputs: null });",
    );
    let out = call(&pool, &h, request()).await.unwrap();
    assert!(!out.decision);
    assert_eq!((out.reason, out.outputs), (None, None));
}

#[tokio::test]
async fn thrown_non_errors_are_described() {
    let pool = pool(1);
    for (i, (throw, message)) in [
        ("42", "42"),
        ("'plain'", "plain"),
        ("{ code: 7 }", r#"{"code":7}"#),
    ]
    .iter()
    .enumerate()
    {
        let h = hook(
            &format!("throw{i}"),
            &format!("export default () => {{ throw {throw}; }};"),
        );
        let e = call(&pool, &h, request()).await.unwrap_err();
        assert_eq!(
            e,
            Error::Threw {
                message: (*message).to_owned()
            }
        );
    }
    let h = hook(
        "reject",
        "export default async () => { await null; throw new RangeError('nope'); };",
    );
    let e = call(&pool, &h, request()).await.unwrap_err();
    assert_eq!(
        e,
        Error::Threw {
            message: "RangeError: nope (line 1)".to_owned()
        }
    );
}

// --- hostile hooks ---

/// Runs `spec` on a 2-worker pool while a trivial hook is called in a loop; checks the
/// hostile call ends in an error matching `expected` within its deadline and that the
/// trivial calls kept succeeding meanwhile.
async fn hostile(name: &str, source: &str, expected: fn(&Error) -> bool) -> Error {
    let pool = pool(2);
    let limit = Duration::from_millis(200);
    let bad = hook_with(name, source, |s| s.limits.deadline = limit);
    let good = hook("good", "export default () => ({ decision: true });");
    call(&pool, &good, request()).await.unwrap();
    let started = Instant::now();
    let hostile_call = call(&pool, &bad, request());
    let others = async {
        let mut ok = 0;
        while started.elapsed() < limit / 2 {
            call(&pool, &good, request()).await.unwrap();
            ok += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ok
    };
    let (result, ok) = tokio::join!(hostile_call, others);
    let error = result.unwrap_err();
    within_deadline(started, limit);
    assert!(expected(&error), "{name}: {error:?}");
    assert!(ok >= 3, "{name}: only {ok} other calls succeeded meanwhile");
    // The pool still serves the hostile hook's worker afterwards.
    for _ in 0..4 {
        call(&pool, &good, request()).await.unwrap();
    }
    error
}

#[tokio::test]
async fn infinite_loop_times_out() {
    let e = hostile("spin", "export default () => { for (;;) {} };", |e| {
        matches!(e, Error::Timeout { .. })
    })
    .await;
    let Error::Timeout { elapsed, limit } = e else {
        unreachable!()
    };
    assert!(elapsed >= limit);
}

#[tokio::test]
async fn infinite_loop_with_finally_times_out() {
    hostile(
        "spinfinally",
        "export default () => { try { for (;;) {} } finally { return { decision: true }; } };",
        |e| matches!(e, Error::Timeout { .. }),
    )
    .await;
}

#[tokio::test]
async fn catastrophic_regex_times_out() {
    hostile(
        "regex",
        "export default () => ({ decision: /^(a+)+$/.test('a'.repeat(40) + 'b') });",
        |e| matches!(e, Error::Timeout { .. }),
    )
    .await;
}

#[tokio::test]
async fn memory_bomb_exceeds_memory() {
    hostile(
        "bomb",
        "export default () => { const a: string[][] = []; for (;;) { a.push(new Array(100000).fill('x')); } };",
        |e| matches!(e, Error::MemoryExceeded { limit } if *limit == super::DEFAULT_MEMORY_BYTES),
    )
    .await;
}

#[tokio::test]
async fn string_doubling_bomb_fails() {
    hostile(
        "doubling",
        "export default () => { let s = 'x'; for (;;) { s = s + s; } };",
        |e| matches!(e, Error::MemoryExceeded { .. } | Error::Threw { .. }),
    )
    .await;
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack() {
    hostile(
        "recurse",
        "function f(n: number): number { return f(n + 1) + 1; }\nexport default () => ({ decision: f(0) > 0 });",
        |e| *e == Error::StackOverflow,
    )
    .await;
}

#[tokio::test]
async fn async_hook_awaiting_forever_times_out() {
    hostile(
        "forever",
        "export default async () => { await new Promise(() => {}); return { decision: true }; };",
        |e| matches!(e, Error::Timeout { .. }),
    )
    .await;
}

#[tokio::test]
async fn loop_after_await_times_out() {
    hostile(
        "awaitspin",
        "export default async () => { await null; for (;;) {} };",
        |e| matches!(e, Error::Timeout { .. }),
    )
    .await;
}

#[tokio::test]
async fn huge_output_is_refused() {
    let pool = pool(1);
    let h = hook(
        "huge",
        "export default () => ({ decision: true, outputs: { blob: 'x'.repeat(100000) } });",
    );
    let e = call(&pool, &h, request()).await.unwrap_err();
    assert_eq!(
        e,
        Error::OutputTooLarge {
            size: 100_011,
            limit: super::DEFAULT_MAX_OUTPUT_BYTES
        }
    );
}

#[tokio::test]
async fn caught_stack_overflow_leaves_a_working_context() {
    let pool = pool(1);
    let h = hook(
        "caughtstack",
        "function f(n: number): number { return f(n + 1) + 1; }\nexport default () => { try { f(0); } catch (e) { return { decision: false, reason: String(e) }; } return { decision: true }; };",
    );
    for _ in 0..3 {
        let out = call(&pool, &h, request()).await.unwrap();
        assert_eq!(
            out.reason.as_deref(),
            Some("RangeError: Maximum call stack size exceeded")
        );
    }
}

#[tokio::test]
async fn prototype_pollution_throws_and_does_not_leak() {
    let pool = pool(1);
    let polluter = hook(
        "polluter",
        r#"export default () => {
  const tried: string[] = [];
  for (const f of [
    () => { (Object.prototype as any).x = 1; },
    () => { (Array.prototype as any).includes = () => true; },
    () => { Object.defineProperty(Object.prototype, 'y', { value: 1 }); },
    () => { (JSON as any).parse = () => 1; },
    () => { Object.setPrototypeOf(Object.prototype, {}); },
    () => { Object.getPrototypeOf([].values()).next = () => ({ done: true }); },
    () => { Object.getPrototypeOf(Object.getPrototypeOf((function* () {})())).next = () => ({ done: true }); },
    () => { (Object.getPrototypeOf(Int8Array).prototype as any).at = () => 0; },
  ]) {
    try { f(); tried.push('ok'); } catch (e) { tried.push((e as Error).name); }
  }
  return { decision: true, outputs: { tried } };
}"#,
    );
    let out = call(&pool, &polluter, request()).await.unwrap();
    assert_eq!(out.outputs, Some(json!({"tried": vec!["TypeError"; 8]})));
    let victim = hook(
        "victim",
        "export default () => ({ decision: ({} as any).x === undefined && ![1].includes(2) && (Object.prototype as any).y === undefined && [...[1, 2]].length === 2 });",
    );
    assert!(call(&pool, &victim, request()).await.unwrap().decision);
    assert!(call(&pool, &polluter, request()).await.is_ok());
    assert!(call(&pool, &victim, request()).await.unwrap().decision);
}

#[tokio::test]
async fn global_mutation_throws() {
    let pool = pool(1);
    let h = hook(
        "globals",
        r#"export default () => {
  const tried: string[] = [];
  for (const f of [
    () => { (globalThis as any).leak = 1; },
    () => { (globalThis as any).Math = null; },
    () => { delete (globalThis as any).JSON; },
    () => { (Math as any).random = () => 4; },
  ]) {
    try { f(); tried.push('ok'); } catch (e) { tried.push((e as Error).name); }
  }
  return { decision: (globalThis as any).leak === undefined, outputs: { tried } };
}"#,
    );
    let out = call(&pool, &h, request()).await.unwrap();
    assert!(out.decision);
    assert_eq!(
        out.outputs,
        Some(json!({"tried": ["TypeError", "TypeError", "TypeError", "TypeError"]}))
    );
}

#[tokio::test]
async fn code_generation_is_denied() {
    let pool = pool(1);
    for isolation in [Isolation::Pooled, Isolation::PerCall] {
        let h = hook_with(
            "codegen",
            r#"export default () => {
  const tried: string[] = [];
  for (const f of [
    () => eval('1'),
    () => (0, eval)('1'),
    () => new Function('return 1')(),
    () => Function('return 1')(),
    () => (function () {}).constructor('return 1')(),
    () => (async function () {}).constructor('return 1'),
    () => (function* () {}).constructor('yield 1'),
    () => (async function* () {}).constructor('yield 1'),
    () => Reflect.construct(Object.getPrototypeOf(() => 1).constructor, ['return 1']),
  ]) {
    try { f(); tried.push('ok'); } catch (e) { tried.push((e as Error).name); }
  }
  class Custom extends Error { constructor() { super('m'); this.name = 'Custom'; } }
  const o: any = {};
  o.toString = () => 'shadowed';
  return { decision: true, outputs: {
    tried,
    custom: new Custom().name,
    shadowed: String(o),
    isFunction: (() => 1) instanceof Function,
    sab: typeof (globalThis as any).SharedArrayBuffer,
  } };
}"#,
            |s| s.limits.isolation = isolation,
        );
        let out = call(&pool, &h, request()).await.unwrap();
        assert_eq!(
            out.outputs,
            Some(json!({
                "tried": vec!["EvalError"; 9], "custom": "Custom", "shadowed": "shadowed", "isFunction": true, "sab": "undefined",
            })),
            "{isolation:?}"
        );
    }
}

#[tokio::test]
async fn per_call_contexts_are_frozen_too() {
    let pool = pool(1);
    let h = hook_with(
        "pcpollute",
        "export default () => { try { (Object.prototype as any).x = 1; } catch (e) { return { decision: e instanceof TypeError }; } return { decision: false }; };",
        |s| s.limits.isolation = Isolation::PerCall,
    );
    for _ in 0..3 {
        assert!(call(&pool, &h, request()).await.unwrap().decision);
    }
}

#[tokio::test]
async fn imports_fail() {
    let e = compile(
        "imp",
        Path::new("imp.ts"),
        "import os from 'os';\nexport default () => ({ decision: os !== undefined });",
    )
    .unwrap_err();
    assert!(e.message.contains("os"), "{e}");
    let pool = pool(1);
    let h = hook(
        "dynimp",
        "export default async () => { await import('os'); return { decision: true }; };",
    );
    let e = call(&pool, &h, request()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Threw { message } if message.contains("os")),
        "{e:?}"
    );
}

// --- contexts ---

const STATEFUL: &str = r#"let calls = 0;
const partial: number[] = [];
export default (req: any) => {
  calls += 1;
  if (req.context.spin) { for (;;) { partial.push(calls); } }
  return { decision: true, outputs: { calls, partial: partial.length } };
};"#;

#[tokio::test]
async fn context_is_discarded_after_an_interrupt() {
    let pool = pool(1);
    let h = hook_with("stateful", STATEFUL, |s| {
        s.limits.deadline = Duration::from_millis(100)
    });
    assert_eq!(
        call(&pool, &h, request()).await.unwrap().outputs,
        Some(json!({"calls": 1, "partial": 0}))
    );
    assert_eq!(
        call(&pool, &h, request()).await.unwrap().outputs,
        Some(json!({"calls": 2, "partial": 0}))
    );
    let e = call(&pool, &h, with_context(json!({"spin": true})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Timeout { .. } | Error::MemoryExceeded { .. }),
        "{e:?}"
    );
    assert_eq!(
        call(&pool, &h, request()).await.unwrap().outputs,
        Some(json!({"calls": 1, "partial": 0}))
    );
    let stats = pool.stats();
    assert_eq!(stats.contexts_discarded, 1, "{stats:?}");
    assert_eq!(stats.contexts_built, 2, "{stats:?}");
}

#[tokio::test]
async fn pooled_keeps_module_state_per_call_does_not() {
    let pool = pool(1);
    let pooled = hook("counter", STATEFUL);
    let per_call = hook_with("counter", STATEFUL, |s| {
        s.limits.isolation = Isolation::PerCall
    });
    for n in 1..=3 {
        assert_eq!(
            call(&pool, &pooled, request()).await.unwrap().outputs,
            Some(json!({"calls": n, "partial": 0}))
        );
    }
    let other = hook_with("counter2", STATEFUL, |s| {
        s.limits.isolation = Isolation::PerCall
    });
    for _ in 1..=3 {
        assert_eq!(
            call(&pool, &other, request()).await.unwrap().outputs,
            Some(json!({"calls": 1, "partial": 0}))
        );
    }
    // Same version as `pooled` but per-call: it takes the pooled context once, then fresh ones.
    let _ = call(&pool, &per_call, request()).await.unwrap();
    for _ in 1..=2 {
        assert_eq!(
            call(&pool, &per_call, request()).await.unwrap().outputs,
            Some(json!({"calls": 1, "partial": 0}))
        );
    }
}

#[tokio::test]
async fn new_version_gets_its_own_context_and_old_calls_still_work() {
    let pool = pool(1);
    let v1 = hook(
        "swap",
        "let n = 0;\nexport default () => ({ decision: true, reason: `v1 ${++n}` });",
    );
    let v2 = hook(
        "swap",
        "let n = 0;\nexport default () => ({ decision: false, reason: `v2 ${++n}` });",
    );
    assert_ne!(v1.compiled.version, v2.compiled.version);
    assert_eq!(
        call(&pool, &v1, request()).await.unwrap().reason.as_deref(),
        Some("v1 1")
    );
    assert_eq!(
        call(&pool, &v2, request()).await.unwrap().reason.as_deref(),
        Some("v2 1")
    );
    assert_eq!(
        call(&pool, &v1, request()).await.unwrap().reason.as_deref(),
        Some("v1 2")
    );
    assert_eq!(
        call(&pool, &v2, request()).await.unwrap().reason.as_deref(),
        Some("v2 2")
    );
}

#[tokio::test]
async fn queue_full_fails_fast() {
    let pool = Pool::spawn(PoolConfig {
        workers: 1,
        queue_capacity: 1,
        ..PoolConfig::default()
    })
    .unwrap();
    let slow = hook_with(
        "slow",
        "export default () => { const end = Date.now() + 300; while (Date.now() < end) {} return { decision: true }; };",
        |s| s.limits.deadline = Duration::from_secs(2),
    );
    let first = tokio::spawn({
        let (pool, slow) = (pool.clone(), slow.clone());
        async move { call(&pool, &slow, request()).await }
    });
    // Let the worker take the first call off the queue.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn({
        let (pool, slow) = (pool.clone(), slow.clone());
        async move { call(&pool, &slow, request()).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let third = call(&pool, &slow, request()).await;
    assert_eq!(third.unwrap_err(), Error::QueueFull);
    assert!(started.elapsed() < Duration::from_millis(20));
    assert!(first.await.unwrap().is_ok());
    assert!(second.await.unwrap().is_ok());
    assert_eq!(pool.stats().queue_full, 1);
}

#[tokio::test]
async fn call_that_waited_past_its_deadline_is_not_run() {
    let pool = pool(1);
    let slow = hook_with(
        "slow2",
        "export default () => { const end = Date.now() + 150; while (Date.now() < end) {} return { decision: true }; };",
        |s| s.limits.deadline = Duration::from_secs(1),
    );
    let quick = hook_with("quick", "export default () => ({ decision: true });", |s| {
        s.limits.deadline = Duration::from_millis(50)
    });
    let (a, b) = tokio::join!(call(&pool, &slow, request()), async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        call(&pool, &quick, request()).await
    });
    assert!(a.is_ok());
    assert!(
        matches!(b, Err(Error::Timeout { elapsed, limit }) if elapsed >= limit),
        "{b:?}"
    );
}

// --- fetch ---

/// A tiny HTTP/1.1 server on 127.0.0.1: `/ok` answers JSON, `/big` 10 kB, `/slow` never,
/// `/echo` the request's method, `x-token` header and body. Counts requests.
async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body_in = String::from_utf8_lossy(&buf[head_end..]).to_string();
                let mut first = head.split_whitespace();
                let method = first.next().unwrap_or("").to_owned();
                let path = first.next().unwrap_or("").to_owned();
                let token = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .starts_with("x-token:")
                            .then(|| l[8..].trim().to_owned())
                    })
                    .unwrap_or_default();
                let body = match path.as_str() {
                    "/ok" => r#"{"spend": 1200, "currency": "EUR"}"#.to_owned(),
                    "/big" => "y".repeat(10_000),
                    "/echo" => {
                        json!({"method": method, "token": token, "body": body_in}).to_string()
                    }
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        String::new()
                    }
                    _ => "not found".to_owned(),
                };
                let status = if path == "/missing" {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    });
    (addr, hits)
}

const FETCHER: &str = r#"export default async (req: any, sdk: any) => {
  try {
    const r = await sdk.fetch(req.context.url, req.context.init);
    const body = req.context.json ? r.json() : r.text().length;
    return { decision: r.status === 200, outputs: { status: r.status, body, type: r.headers['content-type'] ?? null } };
  } catch (e) {
    return { decision: false, reason: `${(e as Error).name}: ${(e as Error).message}` };
  }
};"#;

fn fetcher(addr: SocketAddr, f: impl FnOnce(&mut FetchPolicy)) -> Arc<HookSpec> {
    hook_with("fetcher", FETCHER, |s| {
        s.fetch.allowed_hosts = vec![addr.to_string()];
        s.limits.deadline = Duration::from_secs(2);
        f(&mut s.fetch);
    })
}

#[tokio::test]
async fn fetch_reaches_an_allowed_host() {
    let (addr, hits) = server().await;
    let pool = pool(1);
    let h = fetcher(addr, |_| {});
    let out = call(
        &pool,
        &h,
        with_context(json!({"url": format!("http://{addr}/ok"), "json": true})),
    )
    .await
    .unwrap();
    assert!(out.decision, "{out:?}");
    assert_eq!(
        out.outputs,
        Some(
            json!({"status": 200, "body": {"spend": 1200, "currency": "EUR"}, "type": "application/json"})
        )
    );
    let out = call(
        &pool,
        &h,
        with_context(json!({"url": format!("http://{addr}/missing")})),
    )
    .await
    .unwrap();
    assert!(!out.decision);
    assert_eq!(out.outputs.unwrap()["status"], 404);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn fetch_sends_method_headers_and_body() {
    let (addr, _) = server().await;
    let pool = pool(1);
    let h = hook_with(
        "poster",
        r#"export default async (req: any, sdk: any) => {
  const r = await sdk.fetch(req.context.url, { method: 'POST', headers: { 'x-token': sdk.secrets.get('t') }, body: '{"a":1}' });
  return { decision: true, outputs: r.json() };
};"#,
        |s| {
            s.fetch.allowed_hosts = vec![addr.to_string()];
            s.secrets = BTreeMap::from([("t".to_owned(), "tok-123".to_owned())]);
            s.limits.deadline = Duration::from_secs(2);
        },
    );
    let out = call(
        &pool,
        &h,
        with_context(json!({"url": format!("http://{addr}/echo")})),
    )
    .await
    .unwrap();
    assert_eq!(
        out.outputs,
        Some(json!({"method": "POST", "token": "[redacted]", "body": "{\"a\":1}"}))
    );
}

/// A keep-alive HTTPS server (hyper over rustls) with a certificate for 127.0.0.1 issued by a
/// CA of its own: its address, the CA as PEM, and how many TLS handshakes it completed.
async fn tls_server() -> (SocketAddr, String, Arc<AtomicUsize>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counter = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|_request| async {
                    let body = http_body_util::Full::new(bytes::Bytes::from_static(br#"{"spend": 1200}"#));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca.pem(), handshakes)
}

/// An https fetch checks the certificate against the hook's `ca_file`, keeps the connection
/// for the hook's next call, and never lends it to a hook that does not trust that CA.
#[tokio::test]
async fn https_fetch_trusts_only_the_hooks_ca_and_never_shares_its_connection() {
    let (addr, ca_pem, handshakes) = tls_server().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let pool = pool(1);
    let ask = with_context(json!({"url": format!("https://{addr}/ok"), "json": true}));
    let trusting = fetcher(addr, |f| f.ca_file = Some(ca.clone()));
    for _ in 0..2 {
        let out = call(&pool, &trusting, ask.clone()).await.unwrap();
        assert!(out.decision, "{out:?}");
        assert_eq!(out.outputs.unwrap()["body"]["spend"], 1200);
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 1, "the second call reused the connection");

    // Same worker, same host and port, no CA: its own handshake, which fails.
    let other = hook_with("other", FETCHER, |s| {
        s.fetch.allowed_hosts = vec![addr.to_string()];
        s.limits.deadline = Duration::from_secs(2);
    });
    let out = call(&pool, &other, ask.clone()).await.unwrap();
    assert!(!out.decision, "{out:?}");
    let reason = out.reason.unwrap();
    assert!(reason.contains("tls") && reason.contains("certificate"), "{reason}");
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn fetch_to_other_hosts_is_rejected() {
    let (addr, hits) = server().await;
    let pool = pool(1);
    let h = fetcher(addr, |_| {});
    for (url, message) in [
        (
            "http://127.0.0.1:9/ok".to_owned(),
            "FetchError: fetch: host `127.0.0.1:9` is not allowed for this hook",
        ),
        (
            "http://example.com/ok".to_owned(),
            "FetchError: fetch: host `example.com:80` is not allowed for this hook",
        ),
        (
            "https://example.com/ok".to_owned(),
            "FetchError: fetch: host `example.com:443` is not allowed for this hook",
        ),
        ("ftp://example.com/x".to_owned(), "is not an http or https URL"),
        ("not a url".to_owned(), "is not a valid URL"),
    ] {
        let out = call(&pool, &h, with_context(json!({"url": url})))
            .await
            .unwrap();
        assert!(!out.decision);
        assert!(
            out.reason.as_deref().unwrap().contains(message),
            "{url}: {out:?}"
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // Uncaught, the rejection is a fetch error.
    let h = hook(
        "uncaught",
        "export default async (req: any, sdk: any) => { await sdk.fetch('http://example.com/'); return { decision: true }; };",
    );
    let e = call(&pool, &h, request()).await.unwrap_err();
    assert_eq!(
        e,
        Error::Fetch {
            message: "fetch: host `example.com:80` is not allowed for this hook".to_owned()
        }
    );
}

#[tokio::test]
async fn fetch_response_size_and_timeout_are_capped() {
    let (addr, _) = server().await;
    let pool = pool(1);
    let h = fetcher(addr, |f| {
        f.max_response_bytes = 1000;
        f.timeout = Duration::from_millis(100);
    });
    let out = call(
        &pool,
        &h,
        with_context(json!({"url": format!("http://{addr}/big")})),
    )
    .await
    .unwrap();
    assert!(
        out.reason
            .as_deref()
            .unwrap()
            .contains("response is larger than 1000 bytes"),
        "{out:?}"
    );
    let started = Instant::now();
    let out = call(
        &pool,
        &h,
        with_context(json!({"url": format!("http://{addr}/slow")})),
    )
    .await
    .unwrap();
    assert!(
        out.reason.as_deref().unwrap().ends_with("timed out"),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(100) + SLACK);
}

#[tokio::test]
async fn call_deadline_cuts_a_slow_fetch() {
    let (addr, _) = server().await;
    let pool = pool(1);
    let h = hook_with("slowfetch", FETCHER, |s| {
        s.fetch.allowed_hosts = vec![addr.to_string()];
        s.limits.deadline = Duration::from_millis(100);
    });
    let started = Instant::now();
    let e = call(
        &pool,
        &h,
        with_context(json!({"url": format!("http://{addr}/slow")})),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    within_deadline(started, Duration::from_millis(100));
    // The worker is free again, and the hook works on the next call.
    let fast = fetcher(addr, |_| {});
    assert!(
        call(
            &pool,
            &fast,
            with_context(json!({"url": format!("http://{addr}/ok")}))
        )
        .await
        .unwrap()
        .decision
    );
}

#[tokio::test]
async fn fetch_cache_serves_repeated_gets() {
    let (addr, hits) = server().await;
    let pool = pool(1);
    let h = fetcher(addr, |f| f.cache_ttl = Some(Duration::from_secs(60)));
    let input = with_context(json!({"url": format!("http://{addr}/ok"), "json": true}));
    for _ in 0..3 {
        assert!(call(&pool, &h, input.clone()).await.unwrap().decision);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let uncached = fetcher(addr, |_| {});
    assert!(call(&pool, &uncached, input).await.unwrap().decision);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unawaited_fetch_does_not_outlive_its_call() {
    let (addr, _) = server().await;
    let pool = pool(1);
    let h = hook_with(
        "fireandforget",
        r#"let last = 'none';
export default (req: any, sdk: any) => {
  const seen = last;
  sdk.fetch(req.context.url).then(() => { last = 'settled'; }, (e: Error) => { last = e.message; });
  return { decision: true, reason: seen };
};"#,
        |s| s.fetch.allowed_hosts = vec![addr.to_string()],
    );
    let input = with_context(json!({"url": format!("http://{addr}/slow")}));
    let started = Instant::now();
    assert_eq!(
        call(&pool, &h, input.clone())
            .await
            .unwrap()
            .reason
            .as_deref(),
        Some("none")
    );
    // The fetch left behind was cancelled when the call ended; its rejection handler ran
    // then (with an expired deadline), not during this call.
    let reason = call(&pool, &h, input).await.unwrap().reason.unwrap();
    assert!(
        reason.ends_with("cancelled: the call has ended"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

// --- benchmarks ---

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

const TRIVIAL: &str =
    "export default function decide(req: any) { return { decision: req.action.name === 'read' }; }";

#[tokio::test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn bench_pool_call() {
    let pool = pool(1);
    let h = hook("trivial", TRIVIAL);
    let ix = index();
    let input = request();
    for _ in 0..1000 {
        pool.call(h.clone(), input.clone(), ix.clone())
            .await
            .unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..20_000 {
        let started = Instant::now();
        let out = pool
            .call(h.clone(), input.clone(), ix.clone())
            .await
            .unwrap();
        times.push(started.elapsed());
        assert!(out.decision);
    }
    let mut spaced = Vec::new();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let started = Instant::now();
        pool.call(h.clone(), input.clone(), ix.clone())
            .await
            .unwrap();
        spaced.push(started.elapsed());
    }
    println!(
        "pool call, trivial hook: back-to-back median {:?}, with 2 ms gaps median {:?}",
        median(times),
        median(spaced)
    );
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn bench_direct_call_and_builds() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sandbox = Sandbox::new(Arc::new(Client::default())).await.unwrap();
        let h = hook("trivial", TRIVIAL);
        let ix = index();
        let input = request();
        let slot = sandbox.build(&h).await.unwrap();
        let mut times = Vec::new();
        for i in 0..21_000 {
            let call = CallInput {
                spec: h.clone(),
                input: input.clone(),
                identity: ix.clone(),
                queued: Duration::ZERO,
            };
            let started = Instant::now();
            let ran = sandbox.run(&slot, call).await;
            if i >= 1000 {
                times.push(started.elapsed());
            }
            assert!(ran.result.unwrap().decision);
        }
        println!(
            "direct call in the worker thread, trivial hook: median {:?}",
            median(times)
        );
        let mut builds = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            let s = sandbox.build(&h).await.unwrap();
            builds.push(started.elapsed());
            drop(s);
        }
        println!(
            "context build (full + harden + sdk + declare + top level): median {:?}",
            median(builds)
        );
        let big = hook("big", &big_hook());
        let mut builds = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            let s = sandbox.build(&big).await.unwrap();
            builds.push(started.elapsed());
            drop(s);
        }
        println!(
            "context build, {}-line hook: median {:?}",
            big.compiled.source.lines().count(),
            median(builds)
        );
        let per_call = hook_with("trivialpc", TRIVIAL, |s| {
            s.limits.isolation = Isolation::PerCall
        });
        let mut builds = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            let s = sandbox.build(&per_call).await.unwrap();
            builds.push(started.elapsed());
            drop(s);
        }
        println!(
            "context build for a per-call hook: median {:?}",
            median(builds)
        );
        let source = big_hook();
        let mut compiles = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            compile("big", Path::new("big.ts"), &source).unwrap();
            compiles.push(started.elapsed());
        }
        println!(
            "compile, {}-line hook (strip + check + top level): median {:?}",
            source.lines().count(),
            median(compiles)
        );
        drop(slot);
    });
}

#[tokio::test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn bench_per_call_isolation() {
    let pool = pool(1);
    let h = hook_with("trivialpc", TRIVIAL, |s| {
        s.limits.isolation = Isolation::PerCall
    });
    let ix = index();
    let input = request();
    let mut back_to_back = Vec::new();
    let mut spaced = Vec::new();
    for i in 0..400 {
        let started = Instant::now();
        pool.call(h.clone(), input.clone(), ix.clone())
            .await
            .unwrap();
        if i >= 20 {
            back_to_back.push(started.elapsed());
        }
    }
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        pool.call(h.clone(), input.clone(), ix.clone())
            .await
            .unwrap();
        spaced.push(started.elapsed());
    }
    let started = Instant::now();
    let n = 400;
    for _ in 0..n {
        pool.call(h.clone(), input.clone(), ix.clone())
            .await
            .unwrap();
    }
    println!(
        "per-call isolation: latency back-to-back median {:?}, with 5 ms gaps median {:?}, worker time per call {:?}",
        median(back_to_back),
        median(spaced),
        started.elapsed() / n
    );
}

fn big_hook() -> String {
    let mut s = String::from("type R = { action: { name: string } };\n");
    for i in 0..100 {
        s.push_str(&format!(
            "function f{i}(r: R): number {{ return r.action.name.length + {i}; }}\n"
        ));
    }
    s.push_str("export default function decide(req: R) { return { decision: f3(req) > 0 }; }\n");
    s
}

#[test]
fn limits_default_to_the_documented_constants() {
    let l = Limits::default();
    assert_eq!(l.deadline, Duration::from_millis(50));
    assert_eq!(l.memory_bytes, 32 << 20);
    assert_eq!(l.stack_bytes, 512 << 10);
    assert_eq!(l.max_output_bytes, 64 << 10);
    assert_eq!(l.isolation, Isolation::Pooled);
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn bench_build_phases() {
    use rquickjs::{Context, Module, Runtime};
    let rt = Runtime::new().unwrap();
    rt.set_memory_limit(256 << 20);
    let host = std::rc::Rc::new(super::sdk::Host::default());
    let h = hook("trivial", TRIVIAL);
    let (mut full, mut lock, mut freeze, mut sdk, mut module) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..40 {
        let t = Instant::now();
        let ctx = Context::full(&rt).unwrap();
        full.push(t.elapsed());
        ctx.with(|ctx| {
            let t = Instant::now();
            ctx.eval::<(), _>(super::sandbox::LOCKDOWN_JS).unwrap();
            lock.push(t.elapsed());
            let t = Instant::now();
            ctx.eval::<(), _>(super::sandbox::FREEZE_JS).unwrap();
            freeze.push(t.elapsed());
            let t = Instant::now();
            let bind = super::sdk::install(&ctx, &host, &json!({})).unwrap();
            sdk.push(t.elapsed());
            let t = Instant::now();
            let m = Module::declare(ctx.clone(), "trivial", h.compiled.js.as_bytes()).unwrap();
            let (m, p) = m.eval().unwrap();
            p.finish::<()>().unwrap();
            let f: rquickjs::Function<'_> = m.get("default").unwrap();
            let _run: rquickjs::Function<'_> = bind.call((f,)).unwrap();
            module.push(t.elapsed());
        });
    }
    let mut usage = vec![];
    let keep: Vec<Context> = (0..4)
        .map(|_| {
            let c = Context::full(&rt).unwrap();
            c.with(|ctx| super::sandbox::harden(&ctx).unwrap());
            c
        })
        .collect();
    for _ in 0..50 {
        let t = Instant::now();
        let _ = rt.memory_usage();
        usage.push(t.elapsed());
    }
    drop(keep);
    println!(
        "build phases: Context::full {:?}, lockdown {:?}, freeze {:?}, sdk {:?}, declare + top level + bind {:?}; memory_usage with 4 hardened contexts {:?}",
        median(full),
        median(lock),
        median(freeze),
        median(sdk),
        median(module),
        median(usage)
    );
}

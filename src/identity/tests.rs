//! Unit tests for the identity module: parsing and its errors, validation, every index
//! lookup, and the generator. The `#[ignore]`d `mid_profile_load_time_and_memory` prints the
//! load time and resident-memory growth for the 5,000-user profile; run it in release mode:
//! `cargo test --release -- --ignored --nocapture mid_profile`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::io::Write as _;

use super::snapshot::Interning;
use super::{Error, Index, Profile, Snapshot, generate, load};

/// A small company: a manager chain u3 → u2 → u1/u4, three nested groups, two apps, a
/// service user, one unmatched account, and a user holding one entitlement twice.
const FIXTURE: &str = r#"{
  "version": 1,
  "generated_at": "2026-11-25T06:00:00Z",
  "source": "file:identity.json",
  "users": [
    {"id": "u1", "username": "ASmith", "email": "Alice.Smith@Example.com",
     "emails": ["alice.smith@example.com", "asmith@corp.example.com"],
     "display_name": "Alice Smith", "type": "human", "status": "enabled",
     "manager_id": "u2", "attributes": {"cost_center": "CC-042", "location": "BER"},
     "favourite_colour": "ignored"},
    {"id": "u2", "username": "bjones", "email": "bob.jones@example.com", "manager_id": "u3"},
    {"id": "u3", "username": "cwu", "email": "carol.wu@example.com"},
    {"id": "u4", "username": "dkim", "email": "dave.kim@example.com", "manager_id": "u2"},
    {"id": "svc1", "username": "svc-deploy-12", "email": "svc-deploy-12@example.com",
     "type": "service", "attributes": {"owner_team": "Platform"}}
  ],
  "groups": [
    {"id": "g1", "name": "Engineering", "member_ids": ["u1", "u4"]},
    {"id": "g2", "name": "all-staff", "member_ids": ["u3"], "member_group_ids": ["g1"]},
    {"id": "g3", "name": "Everyone", "member_ids": ["svc1"], "member_group_ids": ["g2"]},
    {"id": "g4", "name": "empty", "member_ids": null}
  ],
  "apps": [
    {"id": "app-github", "name": "GitHub", "owner_ids": ["u3"]},
    {"id": "app-slack", "name": "Slack"}
  ],
  "entitlements": [
    {"id": "app-github:org:acme:admin", "app_id": "app-github", "slug": "admin", "risk": "high"},
    {"id": "app-github:org:acme:member", "app_id": "app-github", "slug": "member"},
    {"id": "app-slack:member", "app_id": "app-slack", "slug": "member"}
  ],
  "accounts": [
    {"id": "acct-gh-1", "app_id": "app-github", "user_id": "u1", "username": "alice-gh", "email": "alice.smith@example.com"},
    {"id": "acct-gh-2", "app_id": "app-github", "user_id": "u4", "username": "dkim"},
    {"id": "acct-sl-1", "app_id": "app-slack", "user_id": "u1", "username": "alice"},
    {"id": "acct-gh-3", "app_id": "app-github", "user_id": null, "username": "Deploy-Bot", "type": "service",
     "email": "deploy-bot@ci.example.com"},
    {"id": "acct-gh-4", "app_id": "app-github", "user_id": "u1", "username": "alice-admin"}
  ],
  "grants": [
    {"account_id": "acct-gh-1", "entitlement_id": "app-github:org:acme:member", "source": "direct"},
    {"account_id": "acct-gh-1", "entitlement_id": "app-github:org:acme:admin", "source": "group:g1"},
    {"account_id": "acct-gh-4", "entitlement_id": "app-github:org:acme:admin", "expires_at": null},
    {"account_id": "acct-gh-2", "entitlement_id": "app-github:org:acme:member"},
    {"account_id": "acct-sl-1", "entitlement_id": "app-slack:member"},
    {"account_id": "acct-gh-3", "entitlement_id": "app-github:org:acme:admin"}
  ]
}"#;

fn fixture() -> Index {
    Index::build(Snapshot::parse("identity.json", FIXTURE).unwrap()).unwrap()
}

fn account_ids<'a>(accounts: impl IntoIterator<Item = &'a super::Account>) -> Vec<&'a str> {
    accounts.into_iter().map(|a| a.id.as_str()).collect()
}

fn ids<'a>(users: impl IntoIterator<Item = &'a super::User>) -> Vec<&'a str> {
    users.into_iter().map(|u| u.id.as_str()).collect()
}

#[track_caller]
fn parse_err(text: &str) -> String {
    Snapshot::parse("identity.json", text)
        .unwrap_err()
        .to_string()
}

#[track_caller]
fn build_err(text: &str) -> String {
    Index::build(Snapshot::parse("identity.json", text).unwrap())
        .unwrap_err()
        .to_string()
}

// --- parsing ---

#[test]
fn parse_error_names_file_line_column_and_path() {
    let text = "{\"version\": 1,\n\"users\": [\n  {\"id\": \"u1\"},\n  {\"id\": \"u2\",\n   \"email\": 5}\n]}";
    let err = Snapshot::parse("identity.json", text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "identity.json: line 5, column 13: users[1].email: invalid type: integer `5`, expected a string"
    );
    let Error::Parse {
        line, column, path, ..
    } = err
    else {
        panic!("not a parse error: {err:?}")
    };
    assert_eq!((line, column, path.as_str()), (5, 13, "users[1].email"));
}

#[test]
fn parse_errors() {
    let cases = [
        (
            r#"{"version": 1, "users": [], "extra": true}"#,
            "identity.json: line 1, column 35: extra: unknown field `extra`, expected one of `version`, `generated_at`, `source`, `users`, `groups`, `apps`, `entitlements`, `accounts`, `grants`",
        ),
        (
            r#"{"version": 2}"#,
            "identity.json: line 1, column 14: version: unsupported snapshot version `2`, expected 1",
        ),
        (
            r#"{"users": []}"#,
            "identity.json: line 1, column 13: missing field `version`",
        ),
        (
            r#"{"version": 1, "groups": [{"id": "g1"}]}"#,
            "identity.json: line 1, column 38: groups[0]: missing field `name`",
        ),
        (
            r#"{"version": 1, "users": [{"id": "u1", "attributes": [1]}]}"#,
            "identity.json: line 1, column 56: users[0].attributes: invalid type: sequence, expected a JSON object",
        ),
        (
            r#"{"version": 1} {"#,
            "identity.json: line 1, column 16: trailing characters",
        ),
        (
            r#"{"version": 1, "users": [{"id": "u1"}"#,
            "identity.json: line 1, column 37: users: EOF while parsing a list",
        ),
        (
            "",
            "identity.json: line 1, column 0: EOF while parsing a value",
        ),
    ];
    let got: Vec<String> = cases.iter().map(|(text, _)| parse_err(text)).collect();
    let want: Vec<&str> = cases.iter().map(|(_, want)| *want).collect();
    assert_eq!(got, want);
}

#[test]
fn unknown_fields_inside_objects_are_ignored_and_optional_fields_default() {
    let snapshot = Snapshot::parse("identity.json", FIXTURE).unwrap();
    let alice = &snapshot.users[0];
    assert_eq!(alice.display_name.as_deref(), Some("Alice Smith"));
    assert_eq!(snapshot.users[1].kind, None);
    assert!(
        snapshot.groups[3].member_ids.is_empty(),
        "null member_ids is an empty list"
    );
    let attributes = alice.attributes.as_ref().unwrap();
    assert_eq!(attributes.get("location"), Some(serde_json::json!("BER")));
    assert_eq!(attributes.to_map().len(), 2);
    assert_eq!(snapshot.origin, "identity.json");
    let minimal = Snapshot::parse("m", r#"{"version": 1}"#).unwrap();
    assert!(minimal.users.is_empty() && minimal.grants.is_empty());
}

#[test]
fn serializes_back_to_an_equal_snapshot() {
    let snapshot = Snapshot::parse("a", FIXTURE).unwrap();
    let text = serde_json::to_string(&snapshot).unwrap();
    let mut again = Snapshot::parse("b", &text).unwrap();
    again.origin = snapshot.origin.clone();
    assert_eq!(again, snapshot);
}

#[test]
fn parsing_interns_repeated_strings() {
    let snapshot = Snapshot::parse("identity.json", FIXTURE).unwrap();
    assert!(
        snapshot.grants[0]
            .account_id
            .shares_allocation(&snapshot.accounts[0].id)
    );
    assert!(
        snapshot.grants[2]
            .entitlement_id
            .shares_allocation(&snapshot.entitlements[0].id)
    );
    // Outside a parse nothing is remembered, and the table is gone afterwards.
    let a = super::Str::from("u1");
    assert!(!a.shares_allocation(&snapshot.users[0].id));
    let _outer = Interning::begin();
    let inner = Interning::begin();
    let b = super::Str::from("x");
    drop(inner);
    assert!(
        b.shares_allocation(&super::Str::from("x")),
        "an inner guard leaves the outer table"
    );
}

#[test]
fn read_from_file_in_memory_and_streaming() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(FIXTURE.as_bytes()).unwrap();
    let whole = Snapshot::read(file.path()).unwrap();
    let streamed = Snapshot::read_with_limit(file.path(), 0).unwrap();
    assert_eq!(whole, streamed);
    assert_eq!(whole.origin, file.path().display().to_string());

    let (index, report) = load(file.path()).unwrap();
    assert_eq!(index.counts().users, 5);
    assert_eq!(&report, index.report());
}

#[test]
fn read_errors_name_the_file() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"{\"version\": 1,\n \"users\": [{\"id\": 7}]}")
        .unwrap();
    let name = file.path().display().to_string();
    let want = |column| {
        format!(
            "{name}: line 2, column {column}: users[0].id: invalid type: integer `7`, expected a string"
        )
    };
    assert_eq!(
        Snapshot::read(file.path()).unwrap_err().to_string(),
        want(19)
    );
    // serde_json's reader-based parser reports positions one byte further on.
    assert_eq!(
        Snapshot::read_with_limit(file.path(), 0)
            .unwrap_err()
            .to_string(),
        want(20)
    );

    let missing = file.path().with_extension("missing");
    let err = load(&missing).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display())),
        "{err}"
    );
}

#[test]
fn load_bytes_names_the_path() {
    let path = std::path::Path::new("identity/users.json");
    let (index, report) = super::load_bytes(FIXTURE.as_bytes(), path).unwrap();
    assert_eq!(index.counts().users, 5);
    assert_eq!(index.origin(), "identity/users.json");
    assert!(!report.has_warnings());
    let err =
        super::load_bytes(b"{\"version\": 1, \"users\": [{\"id\": \"\xff\"}]}", path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "identity/users.json: line 1, column 34: users[0].id: invalid unicode code point"
    );
}

#[test]
fn the_default_index_is_empty() {
    let index = Index::default();
    assert!(index.resolve_user("u1").is_none() && index.user_by_email("a@b").is_none());
    assert!(index.groups_of("u1").is_empty() && !index.in_group("u1", "g1"));
    assert!(index.managers("u1").is_empty() && index.grants_of("u1").is_empty());
    assert!(!index.has_entitlement("u1", "a", "e") && !index.username_taken("u1"));
    assert_eq!(index.counts(), super::Counts::default());
    assert!(!index.report().has_warnings());
}

#[test]
fn records_serialize_as_rules_see_them() {
    let index = fixture();
    let alice = serde_json::to_value(index.user("u1").unwrap()).unwrap();
    assert_eq!(alice["attributes"]["cost_center"], "CC-042");
    assert_eq!(alice["type"], "human");
    assert_eq!(alice["emails"][1], "asmith@corp.example.com");
    assert!(
        alice.get("given_name").is_none(),
        "absent fields stay absent"
    );
    let grant = serde_json::to_value(index.grants_of("u4")[0]).unwrap();
    assert_eq!(
        grant,
        serde_json::json!({"account_id": "acct-gh-2", "entitlement_id": "app-github:org:acme:member", "expires_at": null})
    );
    let name = index.group("g1").unwrap().name.clone();
    assert_eq!(serde_json::Value::from(name.clone()), "Engineering");
    assert_eq!(String::from(name), "Engineering");
}

// --- validation ---

#[test]
fn duplicate_ids_are_errors() {
    let cases = [
        (
            r#"{"version": 1, "users": [{"id": "u1"}, {"id": "u2"}, {"id": "u1"}]}"#,
            "users[2]: duplicate id `u1`, first used by users[0]",
        ),
        (
            r#"{"version": 1, "groups": [{"id": "g", "name": "a"}, {"id": "g", "name": "b"}]}"#,
            "groups[1]: duplicate id `g`, first used by groups[0]",
        ),
        (
            r#"{"version": 1, "apps": [{"id": "a"}, {"id": "a"}]}"#,
            "apps[1]: duplicate id `a`, first used by apps[0]",
        ),
        (
            r#"{"version": 1, "entitlements": [{"id": "e", "app_id": "a"}, {"id": "e", "app_id": "b"}]}"#,
            "entitlements[1]: duplicate id `e`, first used by entitlements[0]",
        ),
        (
            r#"{"version": 1, "accounts": [{"id": "x", "app_id": "a"}, {"id": "x", "app_id": "a"}]}"#,
            "accounts[1]: duplicate id `x`, first used by accounts[0]",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(build_err(text), format!("identity.json: {want}"));
    }
}

#[test]
fn dangling_references_are_counted_not_fatal() {
    let text = r#"{"version": 1,
      "users": [{"id": "u1", "manager_id": "nobody"}],
      "groups": [{"id": "g1", "name": "g", "member_ids": ["u1", "ghost", "ghost2"], "member_group_ids": ["g404"]}],
      "apps": [{"id": "a1", "owner_ids": ["ghost"]}],
      "entitlements": [{"id": "e1", "app_id": "a1"}, {"id": "e2", "app_id": "a404"}],
      "accounts": [{"id": "x1", "app_id": "a1", "user_id": "ghost"}, {"id": "x2", "app_id": "a404", "user_id": "u1"}],
      "grants": [{"account_id": "x404", "entitlement_id": "e1"}, {"account_id": "x2", "entitlement_id": "e404"},
                 {"account_id": "x2", "entitlement_id": "e1"}]
    }"#;
    let index = Index::build(Snapshot::parse("t", text).unwrap()).unwrap();
    let d = index.report().dangling;
    assert_eq!(
        d.by_kind(),
        [
            ("group_member_user", 2),
            ("group_member_group", 1),
            ("manager", 1),
            ("app_owner", 1),
            ("entitlement_app", 1),
            ("account_user", 1),
            ("account_app", 1),
            ("grant_account", 1),
            ("grant_entitlement", 1),
        ]
    );
    assert_eq!(d.total(), 10);
    assert!(index.report().has_warnings());
    assert!(
        index
            .report()
            .to_string()
            .starts_with("10 dangling references (group_member_user 2, ")
    );
    // What does resolve still works, and dangling parts are skipped.
    assert_eq!(index.grants_of("u1").len(), 2);
    assert!(!index.has_entitlement("u1", "a404", "e1"));
    assert_eq!(index.managers("u1").len(), 0);
    assert_eq!(ids(index.entitlement_members("a1", "e1")), ["u1"]);
    assert_eq!(index.groups_of("u1").len(), 1);
    assert_eq!(
        index.counts().memberships,
        3,
        "memberships count member_ids as written"
    );
}

#[test]
fn nested_groups_are_transitive() {
    let index = fixture();
    let names = |uid| {
        index
            .groups_of(uid)
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("u1"), ["Engineering", "all-staff", "Everyone"]);
    assert_eq!(names("u3"), ["all-staff", "Everyone"]);
    assert_eq!(names("svc1"), ["Everyone"]);
    assert!(names("nobody").is_empty());
    assert_eq!(index.report().group_cycles, 0);
}

#[test]
fn group_cycles_are_counted_and_closed_over() {
    let text = r#"{"version": 1,
      "users": [{"id": "u1"}, {"id": "u2"}],
      "groups": [
        {"id": "a", "name": "A", "member_ids": ["u1"], "member_group_ids": ["b"]},
        {"id": "b", "name": "B", "member_group_ids": ["c"]},
        {"id": "c", "name": "C", "member_group_ids": ["a"]},
        {"id": "d", "name": "D", "member_ids": ["u2"], "member_group_ids": ["d"]}
      ]}"#;
    let index = Index::build(Snapshot::parse("t", text).unwrap()).unwrap();
    assert_eq!(index.report().group_cycles, 2);
    let groups = |uid| {
        index
            .groups_of(uid)
            .iter()
            .map(|g| g.id.as_str())
            .collect::<Vec<_>>()
    };
    // a ⊂ c ⊂ b ⊂ a: a member of any is a member of all three.
    assert_eq!(groups("u1"), ["a", "b", "c"]);
    assert_eq!(groups("u2"), ["d"]);
}

#[test]
fn manager_chains_and_cycles() {
    let index = fixture();
    assert_eq!(ids(index.managers("u1")), ["u2", "u3"]);
    assert_eq!(ids(index.managers("u3")), Vec::<&str>::new());
    assert_eq!(ids(index.direct_reports("u2")), ["u1", "u4"]);
    assert_eq!(ids(index.direct_reports("u1")), Vec::<&str>::new());
    assert!(index.managers("nobody").is_empty() && index.direct_reports("nobody").is_empty());
    assert_eq!(index.report().manager_cycles, 0);

    // x → a → b → c → b (a loop under a chain), and s manages itself.
    let text = r#"{"version": 1, "users": [
        {"id": "x", "manager_id": "a"}, {"id": "a", "manager_id": "b"}, {"id": "b", "manager_id": "c"},
        {"id": "c", "manager_id": "b"}, {"id": "s", "manager_id": "s"}, {"id": "y", "manager_id": "s"}]}"#;
    let index = Index::build(Snapshot::parse("t", text).unwrap()).unwrap();
    assert_eq!(index.report().manager_cycles, 2);
    assert_eq!(ids(index.managers("x")), ["a", "b", "c"]);
    assert_eq!(ids(index.managers("a")), ["b", "c"]);
    assert_eq!(ids(index.managers("b")), ["c"]);
    assert_eq!(ids(index.managers("c")), ["b"]);
    assert_eq!(ids(index.managers("s")), Vec::<&str>::new());
    assert_eq!(ids(index.managers("y")), ["s"]);
    assert_eq!(ids(index.direct_reports("b")), ["a", "c"]);
    assert_eq!(
        ids(index.direct_reports("s")),
        ["y"],
        "a self-manager is not its own report"
    );
}

// --- lookups ---

#[test]
fn user_lookups() {
    let index = fixture();
    assert_eq!(
        index.user("u1").unwrap().username.as_deref(),
        Some("ASmith")
    );
    assert!(index.user("U1").is_none(), "ids are case-sensitive");
    for email in [
        "alice.smith@example.com",
        "ALICE.SMITH@EXAMPLE.COM",
        "asmith@Corp.Example.com",
    ] {
        assert_eq!(
            index.user_by_email(email).map(|u| u.id.as_str()),
            Some("u1"),
            "{email}"
        );
    }
    assert!(index.user_by_email("alice@example.com").is_none());
    assert_eq!(
        index.user_by_username("asmith").map(|u| u.id.as_str()),
        Some("u1")
    );
    assert_eq!(
        index
            .user_by_username("SVC-DEPLOY-12")
            .map(|u| u.id.as_str()),
        Some("svc1")
    );
    assert!(
        index.user_by_username("alice").is_none(),
        "account usernames are not user usernames"
    );
    for key in ["u2", "Bob.Jones@example.com", "BJONES"] {
        assert_eq!(
            index.resolve_user(key).map(|u| u.id.as_str()),
            Some("u2"),
            "{key}"
        );
    }
    assert!(index.resolve_user("nobody").is_none());
    assert_eq!(ids(index.users()), ["u1", "u2", "u3", "u4", "svc1"]);
    assert_eq!(index.group("g2").unwrap().name, "all-staff");
    assert_eq!(index.groups().len(), 4);
    assert_eq!(
        index.app("app-slack").unwrap().name.as_deref(),
        Some("Slack")
    );
    assert_eq!(
        index.entitlement("app-slack:member").unwrap().app_id,
        "app-slack"
    );
    assert_eq!(index.account("acct-gh-3").unwrap().user_id, None);
    assert_eq!(index.generated_at(), Some("2026-11-25T06:00:00Z"));
    assert_eq!(index.source(), Some("file:identity.json"));
    assert_eq!(index.origin(), "identity.json");
}

#[test]
fn in_group_by_id_or_name() {
    let index = fixture();
    assert!(index.in_group("u1", "g1"));
    assert!(index.in_group("u1", "engineering"));
    assert!(
        index.in_group("u1", "ALL-STAFF"),
        "transitive, and names ignore case"
    );
    assert!(index.in_group("u1", "g3"));
    assert!(
        !index.in_group("u3", "Engineering"),
        "membership flows up, not down"
    );
    assert!(!index.in_group("u1", "G1"), "ids are case-sensitive");
    assert!(!index.in_group("u1", "empty"));
    assert!(!index.in_group("nobody", "g1"));
    assert!(!index.in_group("u1", "no-such-group"));
}

#[test]
fn account_and_grant_lookups() {
    let index = fixture();
    assert_eq!(
        account_ids(index.accounts_of("u1", None)),
        ["acct-gh-1", "acct-sl-1", "acct-gh-4"]
    );
    assert_eq!(
        account_ids(index.accounts_of("u1", Some("app-github"))),
        ["acct-gh-1", "acct-gh-4"]
    );
    assert!(index.accounts_of("u1", Some("app-none")).is_empty());
    assert!(index.accounts_of("u3", None).is_empty());
    assert_eq!(account_ids(index.unmatched_accounts()), ["acct-gh-3"]);

    let grants: Vec<_> = index
        .grants_of("u1")
        .iter()
        .map(|g| g.entitlement_id.as_str())
        .collect();
    // Grouped by account, accounts in file order: acct-gh-1, acct-sl-1, acct-gh-4.
    assert_eq!(
        grants,
        [
            "app-github:org:acme:member",
            "app-github:org:acme:admin",
            "app-slack:member",
            "app-github:org:acme:admin"
        ]
    );
    assert!(index.grants_of("u3").is_empty());

    assert!(index.has_app("u1", "app-slack"));
    assert!(!index.has_app("u4", "app-slack"));
    assert!(!index.has_app("nobody", "app-github"));

    assert!(index.has_entitlement("u1", "app-github", "admin"));
    assert!(index.has_entitlement("u1", "app-github", "app-github:org:acme:admin"));
    assert!(index.has_entitlement("u1", "app-slack", "member"));
    assert!(index.has_entitlement("u4", "app-github", "member"));
    assert!(!index.has_entitlement("u4", "app-github", "admin"));
    assert!(!index.has_entitlement("u4", "app-slack", "member"));
    assert!(
        !index.has_entitlement("u1", "app-slack", "app-github:org:acme:admin"),
        "id of another app"
    );
    assert!(
        !index.has_entitlement("u1", "app-github", "Admin"),
        "slugs are case-sensitive"
    );
    assert!(!index.has_entitlement("u1", "app-none", "admin"));

    let slugs: Vec<_> = index
        .entitlements_of("app-github")
        .iter()
        .filter_map(|e| e.slug.as_deref())
        .collect();
    assert_eq!(slugs, ["admin", "member"]);
    assert!(index.entitlements_of("app-none").is_empty());

    // u1 holds admin through two accounts but is listed once; the unmatched account has no user.
    assert_eq!(
        ids(index.entitlement_members("app-github", "admin")),
        ["u1"]
    );
    assert_eq!(
        ids(index.entitlement_members("app-github", "app-github:org:acme:member")),
        ["u1", "u4"]
    );
    assert!(index.entitlement_members("app-slack", "admin").is_empty());
}

#[test]
fn username_and_email_taken() {
    let index = fixture();
    for taken in [
        "asmith",
        "ASMITH",
        "bjones",
        "alice.smith",
        "svc-deploy-12",
        "alice-gh",
        "alice",
        "deploy-bot",
        "DKIM",
    ] {
        assert!(index.username_taken(taken), "{taken}");
    }
    for free in ["asmith2", "alice.smith2", "carol", "dave"] {
        assert!(!index.username_taken(free), "{free}");
    }
    for taken in [
        "alice.smith@example.com",
        "ASMITH@corp.example.com",
        "deploy-bot@ci.example.com",
    ] {
        assert!(index.email_taken(taken), "{taken}");
    }
    assert!(!index.email_taken("asmith@example.com"));
}

#[test]
fn shared_emails_and_usernames_are_reported_first_wins() {
    let text = r#"{"version": 1, "users": [
        {"id": "a", "username": "Sam", "email": "sam@example.com"},
        {"id": "b", "username": "sam", "email": "SAM@example.com", "emails": ["sam@example.com", "b@example.com"]}]}"#;
    let index = Index::build(Snapshot::parse("t", text).unwrap()).unwrap();
    assert_eq!(
        (
            index.report().shared_emails,
            index.report().shared_usernames
        ),
        (1, 1)
    );
    assert_eq!(index.user_by_email("sam@example.com").unwrap().id, "a");
    assert_eq!(index.user_by_username("SAM").unwrap().id, "a");
    assert_eq!(index.user_by_email("b@example.com").unwrap().id, "b");
}

#[test]
fn non_ascii_case_insensitivity() {
    let text = r#"{"version": 1, "users": [{"id": "a", "username": "ÖZTÜRK", "email": "Łukasz@Example.com"}]}"#;
    let index = Index::build(Snapshot::parse("t", text).unwrap()).unwrap();
    assert!(index.user_by_username("öztürk").is_some());
    assert!(index.user_by_email("łukasz@example.com").is_some());
    assert!(index.username_taken("ŁUKASZ"));
}

#[test]
fn counts_and_report() {
    let index = fixture();
    let counts = index.counts();
    assert_eq!(
        (
            counts.users,
            counts.groups,
            counts.memberships,
            counts.apps,
            counts.entitlements,
            counts.accounts,
            counts.grants
        ),
        (5, 4, 4, 2, 3, 5, 6)
    );
    assert!(!index.report().has_warnings(), "{}", index.report());
    assert!(format!("{index:?}").starts_with("Index { origin: \"identity.json\""));
}

// --- generator ---

#[test]
fn generator_is_deterministic() {
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut c = Vec::new();
    let counts_a = generate(Profile::Small, 7, &mut a).unwrap();
    let counts_b = generate(Profile::Small, 7, &mut b).unwrap();
    generate(Profile::Small, 8, &mut c).unwrap();
    assert_eq!(counts_a, counts_b);
    assert!(a == b, "same seed, same bytes");
    assert!(a != c, "another seed, other bytes");
}

#[test]
fn small_profile_loads_clean_with_expected_counts() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let written = generate(Profile::Small, 42, file.as_file_mut()).unwrap();
    let (index, report) = load(file.path()).unwrap();
    assert_eq!(index.counts(), written);
    assert!(!report.has_warnings(), "{report}");
    let c = written;
    assert_eq!(
        (c.users, c.groups, c.apps, c.entitlements),
        (300, 40, 20, 200)
    );
    assert!((1_000..1_400).contains(&c.memberships), "{c}");
    assert!((1_600..2_100).contains(&c.accounts), "{c}");
    assert!((3_200..4_000).contains(&c.grants), "{c}");
    assert!(index.unmatched_accounts().count() > 0);
    // Grants are written in a second pass over the same accounts: each must land in its
    // account's app.
    let snapshot = Snapshot::read(file.path()).unwrap();
    for grant in &snapshot.grants {
        let account = index.account(&grant.account_id).unwrap();
        let entitlement = index.entitlement(&grant.entitlement_id).unwrap();
        assert_eq!(account.app_id, entitlement.app_id, "{grant:?}");
    }
    assert!(index.users().any(|u| u.kind.as_deref() == Some("service")
        && u.username.as_deref().is_some_and(|n| n.starts_with("svc-"))));
    assert!(
        index
            .users()
            .any(|u| u.username.as_deref().is_some_and(|n| n.ends_with('2'))),
        "username collisions get a number"
    );
    // Every person but the first has a manager, and the chain reaches the top.
    let top = index.users().next().unwrap();
    let some_person = index
        .users()
        .filter(|u| u.kind.as_deref() == Some("human"))
        .last()
        .unwrap();
    assert_eq!(
        index.managers(&some_person.id).last().map(|u| &u.id),
        Some(&top.id)
    );
    // Department groups nest into all-employees.
    assert!(index.in_group(&some_person.id, "all-employees"));
}

/// Prints load time and resident-memory growth for the mid profile. Numbers, not a pass
/// or fail: run `cargo test --release -- --ignored --nocapture mid_profile`.
#[test]
#[ignore = "slow; a measurement, run in release mode"]
fn mid_profile_load_time_and_memory() {
    profile_load_time_and_memory(Profile::Mid, "mid");
}

/// The same for the 50,000-user profile (about 350 MB of JSON):
/// `cargo test --release -- --ignored --nocapture large_profile`.
#[test]
#[ignore = "slow; a measurement, run in release mode"]
fn large_profile_load_time_and_memory() {
    profile_load_time_and_memory(Profile::Large, "large");
}

fn profile_load_time_and_memory(profile: Profile, name: &str) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let started = std::time::Instant::now();
    let written = generate(profile, 42, file.as_file_mut()).unwrap();
    let generated = started.elapsed();
    let size = file.as_file().metadata().unwrap().len();

    let before = rss_kib();
    let started = std::time::Instant::now();
    let (index, _) = load(file.path()).unwrap();
    let loaded = started.elapsed();
    let after = rss_kib();
    assert_eq!(index.counts(), written);
    let growth = after.saturating_sub(before) * 1024;
    println!(
        "{name} profile: {written}\n  json {:.1} MB, generated in {generated:.2?}\n  load + index {loaded:.2?}\n  \
         VmRSS {before} kB -> {after} kB: +{:.1} MB = {:.2} x the json size",
        size as f64 / 1e6,
        growth as f64 / 1e6,
        growth as f64 / size as f64,
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

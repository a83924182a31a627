//! Joining SCIM users and groups with the snapshot file's apps, entitlements, accounts and
//! grants.
//!
//! When SCIM is configured it owns users and groups: the merged snapshot's users are the SCIM
//! users and its groups the SCIM groups. The file supplies everything SCIM has no model for
//! (apps, entitlements, accounts, grants) and may also list users, for two reasons:
//!
//! - to **join** its accounts to SCIM users when the file does not know SCIM ids: each file
//!   user is matched to a SCIM user by the configured [`MatchRule`]s, tried in order (by
//!   default `id`, `external_id`, `email`, `username`; emails and usernames compare
//!   case-insensitively), and every reference to the file user's id (`accounts[].user_id`,
//!   `users[].manager_id`) is rewritten to the SCIM id;
//! - to **add** what SCIM lacks: a matched user takes the file's `type`, and any field SCIM
//!   left empty; attributes are merged with SCIM's keys winning.
//!
//! A file user that matches no SCIM user is dropped when it is a person (no `type`, or
//! `human`): SCIM is the authority on who exists, so a person deleted upstream loses access
//! even though the file still names them. Non-human identities (`service`, `system`,
//! `agent`), which SCIM has no way to carry, are kept. File groups are ignored. Everything
//! dropped or ignored is counted in the [`MergeReport`].

use std::collections::HashMap;

use serde::Serialize;

use super::{Attributes, Snapshot, Str, User, VERSION};

/// How a file user is matched to a SCIM user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchRule {
    /// The file user's `id` is the SCIM `id`.
    Id,
    /// The file user's `external_id` is the SCIM `externalId`.
    ExternalId,
    /// One of the file user's emails is one of the SCIM user's emails (case-insensitive).
    Email,
    /// The usernames are equal, case-insensitively (SCIM `userName` is case-insensitive).
    Username,
}

/// What a merge did, for the admin status and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MergeReport {
    /// Users that came from SCIM.
    pub scim_users: usize,
    /// Groups that came from SCIM.
    pub scim_groups: usize,
    /// File users joined to a SCIM user, by the rule that matched.
    pub matched: HashMap<MatchRule, usize>,
    /// File users that are people and matched no SCIM user: dropped.
    pub dropped_users: usize,
    /// File users that are non-human identities and matched no SCIM user: kept as they are.
    pub kept_non_human: usize,
    /// Non-human file users that matched no SCIM user but carry the id of one (possible when
    /// `id` is not a match rule). Neither dropping nor renaming them is safe (the file's
    /// accounts and grants name that id and would pass to the SCIM user), so they are kept:
    /// the index then refuses the duplicate id, the merged data is not served, and the last
    /// good data stays. Counted here and logged so the cause is visible.
    pub conflicting_ids: usize,
    /// File groups ignored because SCIM owns groups.
    pub ignored_groups: usize,
}

// === impl MatchRule ===

impl MatchRule {
    /// The default order: the most specific key first.
    pub const DEFAULT: [MatchRule; 4] = [MatchRule::Id, MatchRule::ExternalId, MatchRule::Email, MatchRule::Username];

    /// Parses a config name (`id`, `external_id`, `email`, `username`).
    pub fn parse(name: &str) -> Result<MatchRule, String> {
        match name {
            "id" => Ok(MatchRule::Id),
            "external_id" => Ok(MatchRule::ExternalId),
            "email" => Ok(MatchRule::Email),
            "username" => Ok(MatchRule::Username),
            other => Err(format!("`{other}` is not one of `id`, `external_id`, `email`, `username`")),
        }
    }
}

/// Lowercase lookups into the SCIM users, one map per rule.
struct Keys {
    id: HashMap<Str, usize>,
    external_id: HashMap<Str, usize>,
    email: HashMap<String, usize>,
    username: HashMap<String, usize>,
}

impl Keys {
    fn new(users: &[User]) -> Keys {
        let mut keys = Keys { id: HashMap::new(), external_id: HashMap::new(), email: HashMap::new(), username: HashMap::new() };
        // The first user with a key keeps it, as in the index.
        for (i, u) in users.iter().enumerate() {
            keys.id.entry(u.id.clone()).or_insert(i);
            if let Some(x) = &u.external_id {
                keys.external_id.entry(x.clone()).or_insert(i);
            }
            for e in u.all_emails() {
                keys.email.entry(e.to_lowercase()).or_insert(i);
            }
            if let Some(n) = &u.username {
                keys.username.entry(n.to_lowercase()).or_insert(i);
            }
        }
        keys
    }

    fn find(&self, rule: MatchRule, user: &User) -> Option<usize> {
        match rule {
            MatchRule::Id => self.id.get(user.id.as_str()).copied(),
            MatchRule::ExternalId => user.external_id.as_ref().and_then(|x| self.external_id.get(x.as_str()).copied()),
            MatchRule::Email => user.all_emails().find_map(|e| self.email.get(&e.to_lowercase()).copied()),
            MatchRule::Username => user.username.as_ref().and_then(|n| self.username.get(&n.to_lowercase()).copied()),
        }
    }
}

/// The snapshot serving when SCIM owns users and groups: `scim_users` and `scim_groups` from
/// the upstream, the rest from `file`. `origin` names both in error messages.
pub fn merge(
    file: Snapshot,
    scim_users: Vec<User>,
    scim_groups: Vec<super::Group>,
    rules: &[MatchRule],
    origin: String,
) -> (Snapshot, MergeReport) {
    let mut report = MergeReport {
        scim_users: scim_users.len(),
        scim_groups: scim_groups.len(),
        ignored_groups: file.groups.len(),
        ..MergeReport::default()
    };
    let mut users = scim_users;
    let keys = Keys::new(&users);
    // File id → SCIM id, for every joined file user whose id differs.
    let mut renamed: HashMap<Str, Str> = HashMap::new();
    let mut extra = Vec::new();
    for file_user in file.users {
        let found = rules.iter().find_map(|rule| keys.find(*rule, &file_user).map(|i| (*rule, i)));
        match found {
            Some((rule, i)) => {
                *report.matched.entry(rule).or_default() += 1;
                if let Some(scim_user) = users.get_mut(i) {
                    if scim_user.id != file_user.id {
                        renamed.insert(file_user.id.clone(), scim_user.id.clone());
                    }
                    overlay(scim_user, file_user);
                }
            }
            None if is_person(&file_user) => report.dropped_users += 1,
            None if keys.id.contains_key(file_user.id.as_str()) => {
                tracing::warn!(
                    id = %file_user.id,
                    "a non-human file user matched no SCIM user but has a SCIM user's id; the merged data will be refused"
                );
                report.conflicting_ids += 1;
                extra.push(file_user);
            }
            None => {
                report.kept_non_human += 1;
                extra.push(file_user);
            }
        }
    }
    users.extend(extra);
    let rename = |id: &mut Str| {
        if let Some(to) = renamed.get(id.as_str()) {
            *id = to.clone();
        }
    };
    for user in &mut users {
        if let Some(m) = user.manager_id.as_mut() {
            rename(m);
        }
    }
    let mut accounts = file.accounts;
    for account in &mut accounts {
        if let Some(u) = account.user_id.as_mut() {
            rename(u);
        }
    }
    let mut apps = file.apps;
    for app in &mut apps {
        app.owner_ids.iter_mut().for_each(rename);
    }
    let snapshot = Snapshot {
        version: VERSION,
        generated_at: file.generated_at,
        source: file.source,
        users,
        groups: scim_groups,
        apps,
        entitlements: file.entitlements,
        accounts,
        grants: file.grants,
        origin,
    };
    (snapshot, report)
}

fn is_person(user: &User) -> bool {
    user.kind.as_deref().is_none_or(|k| k.eq_ignore_ascii_case("human"))
}

/// Fills the SCIM user's empty fields from the file's; the file's `type` always wins (SCIM
/// has none), attributes are merged with SCIM's keys winning.
fn overlay(scim: &mut User, file: User) {
    fn fill(to: &mut Option<Str>, from: Option<Str>) {
        if to.is_none() {
            *to = from;
        }
    }
    if file.kind.is_some() {
        scim.kind = file.kind;
    }
    fill(&mut scim.username, file.username);
    fill(&mut scim.email, file.email);
    if scim.emails.is_empty() {
        scim.emails = file.emails;
    }
    fill(&mut scim.display_name, file.display_name);
    fill(&mut scim.given_name, file.given_name);
    fill(&mut scim.family_name, file.family_name);
    fill(&mut scim.status, file.status);
    fill(&mut scim.department, file.department);
    fill(&mut scim.job_title, file.job_title);
    fill(&mut scim.manager_id, file.manager_id);
    fill(&mut scim.employee_id, file.employee_id);
    fill(&mut scim.external_id, file.external_id);
    scim.attributes = match (scim.attributes.take(), file.attributes) {
        (Some(s), Some(f)) => {
            let mut map = f.to_map();
            map.extend(s.to_map());
            serde_json::to_string(&map).ok().and_then(|t| serde_json::from_str::<Attributes>(&t).ok()).or(Some(s))
        }
        (s, f) => s.or(f),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(json: &str) -> Snapshot {
        Snapshot::parse("test.json", json).unwrap()
    }

    fn scim_users() -> Vec<User> {
        snapshot(
            r#"{"version":1,"users":[
                {"id":"s1","username":"Alice","email":"alice@x.io","external_id":"emp-1","attributes":{"team":"scim"}},
                {"id":"s2","username":"bob","emails":["bob@x.io","robert@x.io"]}]}"#,
        )
        .users
    }

    #[test]
    fn joins_by_the_first_matching_rule_and_renames_references() {
        let file = snapshot(
            r#"{"version":1,
            "users":[
              {"id":"f-alice","email":"ALICE@x.io","type":"contractor","attributes":{"team":"file","site":"lyon"}},
              {"id":"f-bob","username":"BOB","external_id":"nope","manager_id":"f-alice"},
              {"id":"s2","email":"someone-else@x.io"},
              {"id":"f-gone","email":"gone@x.io"},
              {"id":"f-bot","username":"deploy-bot","type":"service"}],
            "groups":[{"id":"g","name":"local","member_ids":["f-alice"]}],
            "apps":[{"id":"a","owner_ids":["f-bob"]}],
            "accounts":[{"id":"acc1","app_id":"a","user_id":"f-alice"},{"id":"acc2","app_id":"a","user_id":"f-gone"}]}"#,
        );
        let (merged, report) = merge(file, scim_users(), Vec::new(), &MatchRule::DEFAULT, "scim".to_owned());
        // f-bob matched s2 by username; the third file user matched s2 by id first.
        assert_eq!(report.matched.get(&MatchRule::Email), Some(&1));
        assert_eq!(report.matched.get(&MatchRule::Username), Some(&1));
        assert_eq!(report.matched.get(&MatchRule::Id), Some(&1));
        assert_eq!((report.dropped_users, report.kept_non_human, report.ignored_groups), (1, 1, 1));
        let ids: Vec<&str> = merged.users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["s1", "s2", "f-bot"]);
        let alice = &merged.users[0];
        assert_eq!(alice.kind.as_deref(), Some("contractor"), "the file's type wins");
        let attrs = alice.attributes.as_ref().unwrap().to_map();
        assert_eq!(attrs["team"], "scim", "SCIM's attribute wins");
        assert_eq!(attrs["site"], "lyon", "the file adds what SCIM lacks");
        assert_eq!(merged.users[1].manager_id.as_deref(), Some("s1"), "manager renamed");
        assert_eq!(merged.accounts[0].user_id.as_deref(), Some("s1"));
        assert_eq!(merged.accounts[1].user_id.as_deref(), Some("f-gone"), "left dangling");
        assert_eq!(merged.apps[0].owner_ids[0].as_str(), "s2");
        assert!(merged.groups.is_empty());
    }

    #[test]
    fn only_the_configured_rules_join() {
        let file = snapshot(r#"{"version":1,"users":[{"id":"f","external_id":"emp-1","email":"alice@x.io"}]}"#);
        let (_, report) = merge(file.clone(), scim_users(), Vec::new(), &[MatchRule::ExternalId], String::new());
        assert_eq!(report.matched.get(&MatchRule::ExternalId), Some(&1));
        let (merged, report) = merge(file, scim_users(), Vec::new(), &[MatchRule::Username], String::new());
        assert_eq!(report.dropped_users, 1);
        assert_eq!(merged.users.len(), 2);
    }

    /// A file user joined by email takes its references to the SCIM user it joined.
    #[test]
    fn references_follow_the_join_when_id_is_not_a_rule() {
        let file = snapshot(
            r#"{"version":1,
            "users":[{"id":"s1","email":"bob@x.io"}],
            "apps":[{"id":"a"}],
            "accounts":[{"id":"acc","app_id":"a","user_id":"s1"}]}"#,
        );
        let (merged, report) = merge(file, scim_users(), Vec::new(), &[MatchRule::Email, MatchRule::Username], String::new());
        assert_eq!(report.matched.get(&MatchRule::Email), Some(&1));
        assert_eq!(merged.accounts[0].user_id.as_deref(), Some("s2"));
        crate::identity::Index::build(merged).unwrap();
    }

    /// Without the `id` rule, an unmatched service account can carry a SCIM user's id. Its
    /// account and grant must not pass to that SCIM user: the merged data is refused (so the
    /// last good data keeps serving) and the conflict is counted.
    #[test]
    fn an_id_conflict_is_refused_not_handed_to_the_scim_user() {
        let file = snapshot(
            r#"{"version":1,
            "users":[{"id":"s2","type":"service","username":"ci-bot"}],
            "apps":[{"id":"prod"}],
            "entitlements":[{"id":"admin","app_id":"prod"}],
            "accounts":[{"id":"acc-ci","app_id":"prod","user_id":"s2"}],
            "grants":[{"account_id":"acc-ci","entitlement_id":"admin"}]}"#,
        );
        let (merged, report) = merge(file, scim_users(), Vec::new(), &[MatchRule::Email, MatchRule::Username], String::new());
        assert_eq!((report.conflicting_ids, report.kept_non_human), (1, 0));
        let e = crate::identity::Index::build(merged).unwrap_err();
        assert!(e.to_string().contains("s2"), "{e}");
    }

    #[test]
    fn rule_names_parse() {
        assert_eq!(MatchRule::parse("external_id"), Ok(MatchRule::ExternalId));
        assert!(MatchRule::parse("phone").unwrap_err().contains("`phone`"));
    }
}

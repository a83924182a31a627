//! [`Index`]: one snapshot's identity data plus the lookup tables built from it.
//!
//! Built once per reload, off the hot path, by [`Index::build`]; then immutable, shared as an
//! `Arc<Index>` and replaced whole by the next reload, so a request never sees two snapshots.
//! On the request path the server calls [`Index::resolve_user`] to enrich the subject, and CEL
//! functions and hooks call the other lookups.
//!
//! # Layout
//!
//! Records stay in one `Vec` per collection, in file order, and are addressed by dense `u32`
//! positions (`UserIdx`, `GroupIdx`, ...). Id and name lookups are `HashMap`s from [`Str`] to
//! a position; the keys share their allocation with the records. One-to-many relations
//! (user → groups, account → grants, ...) are `Rows` tables: all lists packed into one vector
//! plus row offsets, which costs two allocations per relation instead of one per row.
//! Everything a lookup needs is computed here, so lookups are O(1) or O(result):
//! - group membership is stored transitively per user (a user in group A, A a member of
//!   B, is in B), sorted, so `in_group` is a binary search;
//! - the manager chain length is stored per user, so `managers` walks exactly that many
//!   links and needs no visited set even when the data has a loop.
//!
//! Building is also where the snapshot is validated: a duplicate id is an [`Error`]; dangling
//! references and cycles are counted in the [`LoadReport`] and the tables leave them out.
//!
//! This module must not change an index after `build` returns, do I/O, or filter by time or
//! status: it answers with the data as it is (a disabled account is still an account, an
//! expired grant still a grant) and leaves such judgements to rules.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashSet;
use std::fmt;

use super::Error;
use super::snapshot::{
    Account, App, Counts, Entitlement, Grant, Group, LoadReport, Snapshot, Str, User,
};

/// The index's maps are looked up on every decision (see [`crate::FastMap`]).
type HashMap<K, V> = crate::FastMap<K, V>;

/// The identity data of one snapshot with its lookup tables; immutable once built.
///
/// `Send + Sync`: it is meant to be shared as `Arc<Index>` and swapped whole on reload.
/// `Index::default()` is the empty index (no identity data configured): every lookup misses.
#[derive(Default)]
pub struct Index {
    /// Where the snapshot came from, for messages.
    origin: String,
    /// `generated_at` from the snapshot.
    generated_at: Option<Str>,
    /// `source` from the snapshot.
    source: Option<Str>,

    users: Vec<User>,
    groups: Vec<Group>,
    apps: Vec<App>,
    entitlements: Vec<Entitlement>,
    accounts: Vec<Account>,
    grants: Vec<Grant>,

    users_by_id: HashMap<Str, UserIdx>,
    /// Lowercased emails (any of `email`/`emails`); the first user in file order wins.
    users_by_email: HashMap<Str, UserIdx>,
    /// Lowercased usernames; the first user in file order wins.
    users_by_username: HashMap<Str, UserIdx>,
    groups_by_id: HashMap<Str, GroupIdx>,
    /// Lowercased group names; names need not be unique, hence a list.
    groups_by_name: HashMap<Str, Vec<GroupIdx>>,
    apps_by_id: HashMap<Str, AppIdx>,
    entitlements_by_id: HashMap<Str, EntitlementIdx>,
    /// Per app (by `AppIdx`): slug → entitlement; the first slug in file order wins.
    entitlements_by_slug: Vec<HashMap<Str, EntitlementIdx>>,
    accounts_by_id: HashMap<Str, AccountIdx>,

    /// User → every group it is in, directly or through nesting; sorted.
    user_groups: Rows<GroupIdx>,
    /// User → its accounts, in file order.
    user_accounts: Rows<AccountIdx>,
    /// Manager → the users naming it as `manager_id`.
    user_reports: Rows<UserIdx>,
    /// User → its manager, if `manager_id` resolves.
    manager: Vec<Option<UserIdx>>,
    /// User → how many distinct users its manager chain holds (loops counted once).
    chain_len: Vec<u32>,
    /// App → its entitlements.
    app_entitlements: Rows<EntitlementIdx>,
    /// Account → its owner, if `user_id` resolves.
    account_user: Vec<Option<UserIdx>>,
    /// Account → its grants.
    account_grants: Rows<GrantIdx>,
    /// Entitlement → the accounts holding it (one entry per grant with a known account).
    entitlement_accounts: Rows<AccountIdx>,
    /// Accounts with `user_id: null`.
    unmatched: Vec<AccountIdx>,

    /// Lowercased user usernames, local parts of user emails, and account usernames.
    taken_usernames: HashSet<Str>,
    /// Lowercased user emails and account emails.
    taken_emails: HashSet<Str>,

    counts: Counts,
    report: LoadReport,
}

/// A position in one of the index's record vectors.
trait Dense: Copy + Ord {
    /// Wraps a position.
    fn new(position: u32) -> Self;
    /// The position, for `Vec::get`.
    fn at(self) -> usize;
}

/// Declares `u32` position newtypes, one per collection, so positions cannot be mixed up.
macro_rules! dense {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        struct $name(u32);

        impl Dense for $name {
            fn new(position: u32) -> Self {
                $name(position)
            }
            fn at(self) -> usize {
                self.0 as usize
            }
        }
    )*};
}

dense! {
    /// Position in `Index::users`.
    UserIdx;
    /// Position in `Index::groups`.
    GroupIdx;
    /// Position in `Index::apps`.
    AppIdx;
    /// Position in `Index::entitlements`.
    EntitlementIdx;
    /// Position in `Index::accounts`.
    AccountIdx;
    /// Position in `Index::grants`.
    GrantIdx;
}

/// A one-to-many relation from dense positions, packed: row `r` is
/// `items[starts[r]..starts[r + 1]]`.
#[derive(Debug, Default)]
struct Rows<T> {
    starts: Vec<usize>,
    items: Vec<T>,
}

/// The sets behind `username_taken` and `email_taken`, filled while building.
#[derive(Default)]
struct Taken {
    usernames: HashSet<Str>,
    emails: HashSet<Str>,
}

/// Tables derived from `users` alone.
struct UserTables {
    by_email: HashMap<Str, UserIdx>,
    by_username: HashMap<Str, UserIdx>,
    manager: Vec<Option<UserIdx>>,
    chain_len: Vec<u32>,
    reports: Rows<UserIdx>,
}

/// Tables derived from `groups`.
struct GroupTables {
    by_name: HashMap<Str, Vec<GroupIdx>>,
    user_groups: Rows<GroupIdx>,
}

/// Tables derived from `entitlements`.
struct EntitlementTables {
    by_slug: Vec<HashMap<Str, EntitlementIdx>>,
    app_entitlements: Rows<EntitlementIdx>,
}

/// Tables derived from `accounts`.
struct AccountTables {
    account_user: Vec<Option<UserIdx>>,
    user_accounts: Rows<AccountIdx>,
    unmatched: Vec<AccountIdx>,
}

/// Tables derived from `grants`.
struct GrantTables {
    account_grants: Rows<GrantIdx>,
    entitlement_accounts: Rows<AccountIdx>,
}

// The index is shared across request tasks; make a field that breaks this a compile error
// here rather than at the reload code's `Arc`.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Index>();
};

// === impl Index ===

impl Index {
    /// Validates `snapshot` and builds every lookup table.
    ///
    /// Fails on a duplicate id within a collection, or a collection too large for 32-bit
    /// positions. Dangling references and cycles are counted in [`Index::report`].
    pub fn build(snapshot: Snapshot) -> Result<Index, Error> {
        let counts = snapshot.counts();
        let Snapshot {
            version: _,
            generated_at,
            source,
            mut users,
            mut groups,
            mut apps,
            mut entitlements,
            mut accounts,
            mut grants,
            origin,
        } = snapshot;
        // The parser grew these by doubling; give back the unused tail before they are kept
        // for the life of the index.
        users.shrink_to_fit();
        groups.shrink_to_fit();
        apps.shrink_to_fit();
        entitlements.shrink_to_fit();
        accounts.shrink_to_fit();
        grants.shrink_to_fit();
        check_sizes(&origin, &counts)?;
        let users_by_id = id_map(&origin, "users", users.iter().map(|u| &u.id))?;
        let groups_by_id = id_map(&origin, "groups", groups.iter().map(|g| &g.id))?;
        let apps_by_id = id_map(&origin, "apps", apps.iter().map(|a| &a.id))?;
        let entitlements_by_id =
            id_map(&origin, "entitlements", entitlements.iter().map(|e| &e.id))?;
        let accounts_by_id = id_map(&origin, "accounts", accounts.iter().map(|a| &a.id))?;

        let mut report = LoadReport::default();
        let mut taken = Taken::default();
        let user_tables = user_tables(&users, &users_by_id, &mut taken, &mut report);
        let group_tables = group_tables(
            &groups,
            users.len(),
            &users_by_id,
            &groups_by_id,
            &mut report,
        );
        report.dangling.app_owner = apps
            .iter()
            .flat_map(|app| &app.owner_ids)
            .filter(|id| !users_by_id.contains_key(id.as_str()))
            .count();
        let entitlement_tables =
            entitlement_tables(&entitlements, apps.len(), &apps_by_id, &mut report);
        let account_tables = account_tables(
            &accounts,
            users.len(),
            &users_by_id,
            &apps_by_id,
            &mut taken,
            &mut report,
        );
        let grant_tables = grant_tables(
            &grants,
            &accounts_by_id,
            &entitlements_by_id,
            accounts.len(),
            entitlements.len(),
            &mut report,
        );

        Ok(Index {
            origin,
            generated_at,
            source,
            users,
            groups,
            apps,
            entitlements,
            accounts,
            grants,
            users_by_id,
            users_by_email: user_tables.by_email,
            users_by_username: user_tables.by_username,
            groups_by_id,
            groups_by_name: group_tables.by_name,
            apps_by_id,
            entitlements_by_id,
            entitlements_by_slug: entitlement_tables.by_slug,
            accounts_by_id,
            user_groups: group_tables.user_groups,
            user_accounts: account_tables.user_accounts,
            user_reports: user_tables.reports,
            manager: user_tables.manager,
            chain_len: user_tables.chain_len,
            app_entitlements: entitlement_tables.app_entitlements,
            account_user: account_tables.account_user,
            account_grants: grant_tables.account_grants,
            entitlement_accounts: grant_tables.entitlement_accounts,
            unmatched: account_tables.unmatched,
            taken_usernames: taken.usernames,
            taken_emails: taken.emails,
            counts,
            report,
        })
    }

    // --- users ---

    /// The user with this id.
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users_by_id.get(id).and_then(|&u| self.user_at(u))
    }

    /// The user with this email (any of `email`/`emails`), compared case-insensitively.
    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        self.users_by_email
            .get(&*lowercase(email))
            .and_then(|&u| self.user_at(u))
    }

    /// The user with this username, compared case-insensitively.
    pub fn user_by_username(&self, username: &str) -> Option<&User> {
        self.users_by_username
            .get(&*lowercase(username))
            .and_then(|&u| self.user_at(u))
    }

    /// The user a caller means by `key`: by id, else by email, else by username.
    ///
    /// This is how the AuthZEN subject is enriched, whichever identifier the caller sent.
    pub fn resolve_user(&self, key: &str) -> Option<&User> {
        self.user(key)
            .or_else(|| self.user_by_email(key))
            .or_else(|| self.user_by_username(key))
    }

    /// All users, in file order.
    pub fn users(&self) -> impl ExactSizeIterator<Item = &User> {
        self.users.iter()
    }

    /// The user's manager chain, nearest first; each manager appears once even if the
    /// data loops. Empty for an unknown user.
    pub fn managers(&self, uid: &str) -> Vec<&User> {
        let Some(&start) = self.users_by_id.get(uid) else {
            return Vec::new();
        };
        let steps = self.chain_len.get(start.at()).copied().unwrap_or(0);
        let mut chain = Vec::with_capacity(steps as usize);
        let mut next = self.manager_of(start);
        // INVARIANT: `chain_len` counts the distinct users on the chain, so `steps` links
        // visit each of them exactly once, loop or not.
        for _ in 0..steps {
            let Some(m) = next else { break };
            chain.extend(self.user_at(m));
            next = self.manager_of(m);
        }
        chain
    }

    /// The users whose `manager_id` is this user, in file order.
    pub fn direct_reports(&self, uid: &str) -> Vec<&User> {
        let Some(&u) = self.users_by_id.get(uid) else {
            return Vec::new();
        };
        self.user_reports
            .row(u.at())
            .iter()
            .filter_map(|&r| self.user_at(r))
            .collect()
    }

    /// Whether `username` is in use, case-insensitively: as a user's username, as the local
    /// part of a user's email, or as an account's username in any app.
    ///
    /// Authoritative for this snapshot, since the index holds all of it.
    pub fn username_taken(&self, username: &str) -> bool {
        self.taken_usernames.contains(&*lowercase(username))
    }

    /// Whether `email` is in use, case-insensitively, by a user (any of `email`/`emails`) or
    /// an account.
    pub fn email_taken(&self, email: &str) -> bool {
        self.taken_emails.contains(&*lowercase(email))
    }

    // --- groups ---

    /// The group with this id.
    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups_by_id
            .get(id)
            .and_then(|&g| self.groups.get(g.at()))
    }

    /// All groups, in file order.
    pub fn groups(&self) -> impl ExactSizeIterator<Item = &Group> {
        self.groups.iter()
    }

    /// Every group the user is in, directly or through nested groups, in file order.
    pub fn groups_of(&self, uid: &str) -> Vec<&Group> {
        self.user_group_row(uid)
            .iter()
            .filter_map(|&g| self.groups.get(g.at()))
            .collect()
    }

    /// Whether the user is in the group, directly or through nesting. `group` is a group
    /// id, or a group name compared case-insensitively (any group of that name counts).
    pub fn in_group(&self, uid: &str, group: &str) -> bool {
        let row = self.user_group_row(uid);
        if row.is_empty() {
            return false;
        }
        let by_id = self
            .groups_by_id
            .get(group)
            .is_some_and(|g| row.binary_search(g).is_ok());
        by_id
            || self
                .groups_by_name
                .get(&*lowercase(group))
                .is_some_and(|gs| gs.iter().any(|g| row.binary_search(g).is_ok()))
    }

    // --- apps, entitlements, accounts, grants ---

    /// The app with this id.
    pub fn app(&self, id: &str) -> Option<&App> {
        self.apps_by_id.get(id).and_then(|&a| self.apps.get(a.at()))
    }

    /// The entitlement with this id.
    pub fn entitlement(&self, id: &str) -> Option<&Entitlement> {
        self.entitlements_by_id
            .get(id)
            .and_then(|&e| self.entitlements.get(e.at()))
    }

    /// The account with this id.
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts_by_id
            .get(id)
            .and_then(|&a| self.accounts.get(a.at()))
    }

    /// The user's accounts, in file order; only those in `app` (an app id) when given.
    pub fn accounts_of(&self, uid: &str, app: Option<&str>) -> Vec<&Account> {
        self.user_account_iter(uid)
            .filter(|account| app.is_none_or(|app| account.app_id == app))
            .collect()
    }

    /// Every grant held by any of the user's accounts.
    pub fn grants_of(&self, uid: &str) -> Vec<&Grant> {
        let Some(&u) = self.users_by_id.get(uid) else {
            return Vec::new();
        };
        self.user_accounts
            .row(u.at())
            .iter()
            .flat_map(|a| self.account_grants.row(a.at()))
            .filter_map(|g| self.grants.get(g.at()))
            .collect()
    }

    /// Whether the user has an account in the app (`app` is an app id).
    pub fn has_app(&self, uid: &str, app: &str) -> bool {
        self.user_account_iter(uid)
            .any(|account| account.app_id == app)
    }

    /// Whether one of the user's accounts in `app` holds the entitlement `entitlement`,
    /// given as its id or as its slug within that app.
    pub fn has_entitlement(&self, uid: &str, app: &str, entitlement: &str) -> bool {
        let Some(e) = self.find_entitlement(app, entitlement) else {
            return false;
        };
        let Some(&u) = self.users_by_id.get(uid) else {
            return false;
        };
        self.user_accounts.row(u.at()).iter().any(|&a| {
            self.accounts
                .get(a.at())
                .is_some_and(|account| account.app_id == app)
                && self.account_grants.row(a.at()).iter().any(|g| {
                    self.grants.get(g.at()).is_some_and(|grant| {
                        self.entitlements
                            .get(e.at())
                            .is_some_and(|ent| grant.entitlement_id == ent.id)
                    })
                })
        })
    }

    /// The entitlements of the app, in file order.
    pub fn entitlements_of(&self, app: &str) -> Vec<&Entitlement> {
        let Some(&a) = self.apps_by_id.get(app) else {
            return Vec::new();
        };
        self.app_entitlements
            .row(a.at())
            .iter()
            .filter_map(|e| self.entitlements.get(e.at()))
            .collect()
    }

    /// The users holding the entitlement (its id or slug within `app`) through any account,
    /// each once, in file order.
    pub fn entitlement_members(&self, app: &str, entitlement: &str) -> Vec<&User> {
        let Some(e) = self.find_entitlement(app, entitlement) else {
            return Vec::new();
        };
        let mut members: Vec<UserIdx> = self
            .entitlement_accounts
            .row(e.at())
            .iter()
            .filter_map(|a| self.account_user.get(a.at()).copied().flatten())
            .collect();
        members.sort_unstable();
        members.dedup();
        members
            .into_iter()
            .filter_map(|u| self.user_at(u))
            .collect()
    }

    /// Accounts with no owner (`user_id: null`), in file order.
    pub fn unmatched_accounts(&self) -> impl Iterator<Item = &Account> {
        self.unmatched
            .iter()
            .filter_map(|a| self.accounts.get(a.at()))
    }

    // --- about the snapshot ---

    /// How many records of each kind the snapshot held.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// What was found wrong but tolerated while building.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Where the snapshot came from (a path, or the name given to in-memory text).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The snapshot's `generated_at`, for recording how fresh a decision's data was.
    pub fn generated_at(&self) -> Option<&str> {
        self.generated_at.as_deref()
    }

    /// The snapshot's `source`.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    // --- private helpers ---

    fn user_at(&self, u: UserIdx) -> Option<&User> {
        self.users.get(u.at())
    }

    fn manager_of(&self, u: UserIdx) -> Option<UserIdx> {
        self.manager.get(u.at()).copied().flatten()
    }

    fn user_group_row(&self, uid: &str) -> &[GroupIdx] {
        self.users_by_id
            .get(uid)
            .map_or(&[], |u| self.user_groups.row(u.at()))
    }

    fn user_account_iter(&self, uid: &str) -> impl Iterator<Item = &Account> {
        let row = self
            .users_by_id
            .get(uid)
            .map_or(&[][..], |u| self.user_accounts.row(u.at()));
        row.iter().filter_map(|a| self.accounts.get(a.at()))
    }

    /// The entitlement of `app` named by id, else by slug.
    fn find_entitlement(&self, app: &str, entitlement: &str) -> Option<EntitlementIdx> {
        let by_id = self
            .entitlements_by_id
            .get(entitlement)
            .copied()
            .filter(|e| {
                self.entitlements
                    .get(e.at())
                    .is_some_and(|ent| ent.app_id == app)
            });
        by_id.or_else(|| {
            let a = self.apps_by_id.get(app)?;
            self.entitlements_by_slug
                .get(a.at())?
                .get(entitlement)
                .copied()
        })
    }
}

impl fmt::Debug for Index {
    /// Summarizes instead of dumping: an index holds up to millions of records.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("origin", &self.origin)
            .field("generated_at", &self.generated_at)
            .field("counts", &self.counts)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

// === building ===

/// Converts a record position to `u32`.
// INVARIANT: `Index::build` refuses collections longer than `u32::MAX` before any position
// is converted, so the fallback is never used.
fn pos(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// Refuses collections whose positions do not fit the `u32` newtypes.
fn check_sizes(origin: &str, counts: &Counts) -> Result<(), Error> {
    let sizes = [
        ("users", counts.users),
        ("groups", counts.groups),
        ("apps", counts.apps),
        ("entitlements", counts.entitlements),
        ("accounts", counts.accounts),
        ("grants", counts.grants),
    ];
    match sizes
        .into_iter()
        .find(|(_, len)| u32::try_from(*len).is_err())
    {
        Some((collection, len)) => Err(Error::TooLarge {
            origin: origin.to_owned(),
            collection,
            len,
            max: u32::MAX,
        }),
        None => Ok(()),
    }
}

/// Maps each id to its position, refusing the first duplicate.
fn id_map<'a, I: Dense>(
    origin: &str,
    collection: &'static str,
    ids: impl ExactSizeIterator<Item = &'a Str>,
) -> Result<HashMap<Str, I>, Error> {
    let mut map = HashMap::with_capacity_and_hasher(ids.len(), Default::default());
    for (index, id) in ids.enumerate() {
        match map.entry(id.clone()) {
            Entry::Occupied(first) => {
                let first: &I = first.get();
                return Err(Error::DuplicateId {
                    origin: origin.to_owned(),
                    collection,
                    id: id.to_string(),
                    index,
                    first: first.at(),
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(I::new(pos(index)));
            }
        }
    }
    Ok(map)
}

/// Email and username maps, the manager links and chains, and the user part of `taken`.
fn user_tables(
    users: &[User],
    by_id: &HashMap<Str, UserIdx>,
    taken: &mut Taken,
    report: &mut LoadReport,
) -> UserTables {
    let mut by_email: HashMap<Str, UserIdx> = HashMap::with_capacity_and_hasher(users.len(), Default::default());
    let mut by_username: HashMap<Str, UserIdx> = HashMap::with_capacity_and_hasher(users.len(), Default::default());
    let mut manager = Vec::with_capacity(users.len());
    let mut reports = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let u = UserIdx::new(pos(i));
        let mut shares_email = false;
        for email in user.all_emails() {
            let key = lower_key(email);
            if let Some((local, _)) = key.split_once('@') {
                taken.usernames.insert(Str::from(local));
            }
            taken.emails.insert(key.clone());
            let owner = *by_email.entry(key).or_insert(u);
            shares_email |= owner != u;
        }
        report.shared_emails += usize::from(shares_email);
        if let Some(username) = &user.username {
            let key = lower_key(username);
            taken.usernames.insert(key.clone());
            report.shared_usernames += usize::from(*by_username.entry(key).or_insert(u) != u);
        }
        let boss = user.manager_id.as_ref().and_then(|m| {
            let found = by_id.get(m.as_str()).copied();
            report.dangling.manager += usize::from(found.is_none());
            found
        });
        // A user naming itself is a loop for `managers`, but not its own report.
        if let Some(b) = boss.filter(|&b| b != u) {
            reports.push((b.0, u));
        }
        manager.push(boss);
    }
    let (chain_len, cycles) = manager_chains(&manager);
    report.manager_cycles = cycles;
    UserTables {
        by_email,
        by_username,
        manager,
        chain_len,
        reports: Rows::from_pairs(users.len(), &reports),
    }
}

/// For each user, the number of distinct users on its manager chain, and the number of
/// loops found.
///
/// Each user has at most one manager, so the chains form a functional graph: every walk
/// ends at a user without a manager or runs into a loop. One pass walks each user's chain
/// until it meets a user already measured, the end, or a user already on the current walk
/// (a new loop); then fills the lengths in backwards. Every user is walked once: O(users).
fn manager_chains(manager: &[Option<UserIdx>]) -> (Vec<u32>, usize) {
    const UNKNOWN: u32 = u32::MAX;
    let mut len = vec![UNKNOWN; manager.len()];
    // Position on the current walk, or UNKNOWN when not on it.
    let mut on_walk = vec![UNKNOWN; manager.len()];
    let mut walk: Vec<UserIdx> = Vec::new();
    let mut cycles = 0;
    for start in 0..manager.len() {
        if len.get(start) != Some(&UNKNOWN) {
            continue;
        }
        walk.clear();
        let mut next = Some(UserIdx::new(pos(start)));
        // The chain length of whatever the last user on `walk` points at, if anything.
        let mut after: Option<u32> = None;
        while let Some(u) = next {
            let known = len.get(u.at()).copied().unwrap_or(0);
            if known != UNKNOWN {
                after = Some(known);
                break;
            }
            let seen_at = on_walk.get(u.at()).copied().unwrap_or(0);
            if seen_at != UNKNOWN {
                // A loop: everyone on it has all the others above them.
                cycles += 1;
                let loop_start = seen_at as usize;
                let loop_len = pos(walk.len().saturating_sub(loop_start));
                for m in walk.get(loop_start..).unwrap_or_default() {
                    if let Some(slot) = len.get_mut(m.at()) {
                        *slot = loop_len.saturating_sub(1);
                    }
                    if let Some(slot) = on_walk.get_mut(m.at()) {
                        *slot = UNKNOWN;
                    }
                }
                walk.truncate(loop_start);
                after = Some(loop_len.saturating_sub(1));
                break;
            }
            if let Some(slot) = on_walk.get_mut(u.at()) {
                *slot = pos(walk.len());
            }
            walk.push(u);
            next = manager.get(u.at()).copied().flatten();
        }
        for u in walk.iter().rev() {
            let this = after.map_or(0, |a| a.saturating_add(1));
            if let Some(slot) = len.get_mut(u.at()) {
                *slot = this;
            }
            // Measured users are never walked again, so the mark can go now.
            if let Some(slot) = on_walk.get_mut(u.at()) {
                *slot = UNKNOWN;
            }
            after = Some(this);
        }
    }
    (len, cycles)
}

/// Group names, nested membership, cycle count, and each user's transitive groups.
fn group_tables(
    groups: &[Group],
    user_count: usize,
    users_by_id: &HashMap<Str, UserIdx>,
    groups_by_id: &HashMap<Str, GroupIdx>,
    report: &mut LoadReport,
) -> GroupTables {
    let mut by_name: HashMap<Str, Vec<GroupIdx>> = HashMap::with_capacity_and_hasher(groups.len(), Default::default());
    let mut direct: Vec<(u32, GroupIdx)> = Vec::new();
    let mut children: Vec<(u32, GroupIdx)> = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let g = GroupIdx::new(pos(i));
        by_name.entry(lower_key(&group.name)).or_default().push(g);
        for member in &group.member_ids {
            match users_by_id.get(member.as_str()) {
                Some(u) => direct.push((u.0, g)),
                None => report.dangling.group_member_user += 1,
            }
        }
        for member in &group.member_group_ids {
            match groups_by_id.get(member.as_str()) {
                Some(child) => children.push((g.0, *child)),
                None => report.dangling.group_member_group += 1,
            }
        }
    }
    let children = Rows::from_pairs(groups.len(), &children);
    report.group_cycles = count_cycles(&children);
    let parents_pairs: Vec<(u32, GroupIdx)> = (0..groups.len())
        .flat_map(|p| {
            children
                .row(p)
                .iter()
                .map(move |c| (c.0, GroupIdx::new(pos(p))))
        })
        .collect();
    let parents = Rows::from_pairs(groups.len(), &parents_pairs);
    let direct = Rows::from_pairs(user_count, &direct);
    GroupTables {
        by_name,
        user_groups: transitive_groups(&direct, &parents, groups.len()),
    }
}

/// Each user's groups closed over "a member of a member is a member", sorted.
///
/// A depth-first walk up the parent links per user, with a visited mark stamped with the
/// user's number so it never needs clearing; a cycle just meets a stamped group and stops.
/// Total work is proportional to the size of the result.
fn transitive_groups(
    direct: &Rows<GroupIdx>,
    parents: &Rows<GroupIdx>,
    group_count: usize,
) -> Rows<GroupIdx> {
    let mut stamp = vec![0usize; group_count];
    let mut starts = Vec::with_capacity(direct.len() + 1);
    let mut items = Vec::with_capacity(direct.items.len());
    let mut stack: Vec<GroupIdx> = Vec::new();
    starts.push(0);
    for user in 0..direct.len() {
        let mark = user + 1;
        let row_start = items.len();
        stack.extend_from_slice(direct.row(user));
        while let Some(g) = stack.pop() {
            let Some(slot) = stamp.get_mut(g.at()) else {
                continue;
            };
            if *slot == mark {
                continue;
            }
            *slot = mark;
            items.push(g);
            stack.extend_from_slice(parents.row(g.at()));
        }
        if let Some(row) = items.get_mut(row_start..) {
            row.sort_unstable();
        }
        starts.push(items.len());
    }
    Rows { starts, items }
}

/// Counts the links that close a cycle in the nested-group graph (back edges of a
/// depth-first search, iterative so a deep nesting cannot overflow the stack).
fn count_cycles(children: &Rows<GroupIdx>) -> usize {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        Unvisited,
        OnPath,
        Done,
    }
    let mut color = vec![Color::Unvisited; children.len()];
    let mut path: Vec<(GroupIdx, usize)> = Vec::new();
    let mut cycles = 0;
    for root in 0..children.len() {
        if color.get(root) != Some(&Color::Unvisited) {
            continue;
        }
        let root = GroupIdx::new(pos(root));
        if let Some(c) = color.get_mut(root.at()) {
            *c = Color::OnPath;
        }
        path.push((root, 0));
        while let Some((g, next)) = path.last_mut() {
            let Some(&child) = children.row(g.at()).get(*next) else {
                if let Some(c) = color.get_mut(g.at()) {
                    *c = Color::Done;
                }
                path.pop();
                continue;
            };
            *next += 1;
            match color.get(child.at()) {
                Some(Color::Unvisited) => {
                    if let Some(c) = color.get_mut(child.at()) {
                        *c = Color::OnPath;
                    }
                    path.push((child, 0));
                }
                Some(Color::OnPath) => cycles += 1,
                _ => {}
            }
        }
    }
    cycles
}

/// App → entitlements, and per-app slug maps.
fn entitlement_tables(
    entitlements: &[Entitlement],
    app_count: usize,
    apps_by_id: &HashMap<Str, AppIdx>,
    report: &mut LoadReport,
) -> EntitlementTables {
    let mut by_slug: Vec<HashMap<Str, EntitlementIdx>> =
        (0..app_count).map(|_| HashMap::default()).collect();
    let mut pairs = Vec::with_capacity(entitlements.len());
    for (i, entitlement) in entitlements.iter().enumerate() {
        let e = EntitlementIdx::new(pos(i));
        let Some(&a) = apps_by_id.get(entitlement.app_id.as_str()) else {
            report.dangling.entitlement_app += 1;
            continue;
        };
        pairs.push((a.0, e));
        if let (Some(slug), Some(map)) = (&entitlement.slug, by_slug.get_mut(a.at())) {
            map.entry(slug.clone()).or_insert(e);
        }
    }
    EntitlementTables {
        by_slug,
        app_entitlements: Rows::from_pairs(app_count, &pairs),
    }
}

/// Account owners, user → accounts, unmatched accounts, and the account part of `taken`.
fn account_tables(
    accounts: &[Account],
    user_count: usize,
    users_by_id: &HashMap<Str, UserIdx>,
    apps_by_id: &HashMap<Str, AppIdx>,
    taken: &mut Taken,
    report: &mut LoadReport,
) -> AccountTables {
    let mut account_user = Vec::with_capacity(accounts.len());
    let mut pairs = Vec::with_capacity(accounts.len());
    let mut unmatched = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        let a = AccountIdx::new(pos(i));
        report.dangling.account_app +=
            usize::from(!apps_by_id.contains_key(account.app_id.as_str()));
        let owner = match &account.user_id {
            None => {
                unmatched.push(a);
                None
            }
            Some(uid) => {
                let found = users_by_id.get(uid.as_str()).copied();
                report.dangling.account_user += usize::from(found.is_none());
                found
            }
        };
        if let Some(u) = owner {
            pairs.push((u.0, a));
        }
        account_user.push(owner);
        if let Some(username) = &account.username {
            taken.usernames.insert(lower_key(username));
        }
        if let Some(email) = &account.email {
            taken.emails.insert(lower_key(email));
        }
    }
    AccountTables {
        account_user,
        user_accounts: Rows::from_pairs(user_count, &pairs),
        unmatched,
    }
}

/// Account → grants and entitlement → accounts, leaving out dangling references.
fn grant_tables(
    grants: &[Grant],
    accounts_by_id: &HashMap<Str, AccountIdx>,
    entitlements_by_id: &HashMap<Str, EntitlementIdx>,
    account_count: usize,
    entitlement_count: usize,
    report: &mut LoadReport,
) -> GrantTables {
    let mut by_account = Vec::with_capacity(grants.len());
    let mut by_entitlement = Vec::with_capacity(grants.len());
    for (i, grant) in grants.iter().enumerate() {
        let g = GrantIdx::new(pos(i));
        let account = accounts_by_id.get(grant.account_id.as_str()).copied();
        match account {
            Some(a) => by_account.push((a.0, g)),
            None => report.dangling.grant_account += 1,
        }
        match (
            entitlements_by_id.get(grant.entitlement_id.as_str()),
            account,
        ) {
            (Some(e), Some(a)) => by_entitlement.push((e.0, a)),
            (Some(_), None) => {}
            (None, _) => report.dangling.grant_entitlement += 1,
        }
    }
    GrantTables {
        account_grants: Rows::from_pairs(account_count, &by_account),
        entitlement_accounts: Rows::from_pairs(entitlement_count, &by_entitlement),
    }
}

/// Lowercases for case-insensitive keys, without allocating when nothing changes (the
/// common case on the request path). Unicode lowercase, not full case folding: `ß` and
/// `SS` stay different.
fn lowercase(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(text.to_ascii_lowercase())
        } else {
            Cow::Borrowed(text)
        }
    } else {
        let lower = text.to_lowercase();
        if lower == text {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(lower)
        }
    }
}

/// The lowercase key for `text`, sharing its allocation when it is already lowercase.
fn lower_key(text: &Str) -> Str {
    match lowercase(text) {
        Cow::Borrowed(_) => text.clone(),
        Cow::Owned(lower) => Str::from(lower),
    }
}

// === impl Rows ===

impl<T: Copy + Default> Rows<T> {
    /// Groups `(row, item)` pairs by row, keeping their order within a row (a counting
    /// sort: two passes, no per-row allocation). Pairs naming a row past `rows` are dropped.
    fn from_pairs(rows: usize, pairs: &[(u32, T)]) -> Rows<T> {
        let mut starts = vec![0usize; rows + 1];
        for (row, _) in pairs {
            if let Some(count) = starts.get_mut(*row as usize + 1) {
                *count += 1;
            }
        }
        let mut total = 0;
        for start in &mut starts {
            total += *start;
            *start = total;
        }
        let mut items = vec![T::default(); total];
        let mut fill = starts.clone();
        for &(row, item) in pairs {
            if let Some(next) = fill.get_mut(row as usize) {
                if let Some(slot) = items.get_mut(*next) {
                    *slot = item;
                }
                *next += 1;
            }
        }
        Rows { starts, items }
    }

    /// Number of rows.
    fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// The items of row `r`; empty for a row out of range.
    fn row(&self, r: usize) -> &[T] {
        match (self.starts.get(r), self.starts.get(r + 1)) {
            (Some(&start), Some(&end)) => self.items.get(start..end).unwrap_or_default(),
            _ => &[],
        }
    }
}

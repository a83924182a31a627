//! The identity snapshot file (format v1): its serde types, the string type they share,
//! and reading one from a file or from memory.
//!
//! This is the first step of an identity reload: a source (today a file on disk) is parsed
//! here into a [`Snapshot`], which [`Index::build`](super::Index::build) then checks and
//! indexes. Requests never call into this module; they read these structs through the index.
//!
//! This module only parses. It must not resolve references or judge their consistency (the
//! index does that, with the maps it builds anyway), and it never borrows from the input
//! text: everything it returns is owned, so the file buffer can be dropped after parsing.
//!
//! # Strings and interning
//!
//! Ids repeat heavily (every grant names an account and an entitlement, every account an
//! app), and so do short values such as `status`, `type` and timestamps. All strings are
//! therefore [`Str`], a shared `Arc<str>`. While a parse is running, [`Interning`] keeps a
//! per-thread set of the strings seen so far, so each distinct value is allocated once and
//! the index keys can share the same allocation. Fields that are unique by nature
//! (timestamps, display names, external ids) skip the set: for them it would only cost time.
//! Outside a parse, `Str` simply allocates.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, Read as _};
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::Error;

/// The only snapshot format version this module reads.
pub const VERSION: u32 = 1;

/// Files up to this size are read whole and parsed from memory, which is about twice as fast
/// as parsing from a reader; larger ones are streamed so that the text never sits in memory
/// next to the parsed records.
const IN_MEMORY_LIMIT: u64 = 64 * 1024 * 1024;

/// Input bytes per distinct string, roughly, in snapshots like the generated ones; sizes the
/// interning table up front so it is not rehashed (each rehash rereads every string).
const BYTES_PER_DISTINCT_STRING: usize = 256;

/// Read buffer for streamed snapshot files.
const READ_BUFFER: usize = 256 * 1024;

/// A parsed identity snapshot, exactly as the file states it.
///
/// References between collections are not checked here; [`Index::build`](super::Index::build)
/// does that and reports what it found in a [`LoadReport`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Format version; always [`VERSION`] once parsed.
    #[serde(deserialize_with = "version_1")]
    pub version: u32,
    /// When the producer took the snapshot (free text, usually RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<Str>,
    /// Where the producer took it from, e.g. `file:identity.json` or a SCIM base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Str>,
    /// People and non-human identities.
    #[serde(default, deserialize_with = "null_as_default")]
    pub users: Vec<User>,
    /// Identity-provider groups, possibly nested.
    #[serde(default, deserialize_with = "null_as_default")]
    pub groups: Vec<Group>,
    /// Connected applications.
    #[serde(default, deserialize_with = "null_as_default")]
    pub apps: Vec<App>,
    /// Grantable permissions, each belonging to one app.
    #[serde(default, deserialize_with = "null_as_default")]
    pub entitlements: Vec<Entitlement>,
    /// Per-app accounts, owned by a user or unmatched.
    #[serde(default, deserialize_with = "null_as_default")]
    pub accounts: Vec<Account>,
    /// Entitlements held by accounts.
    #[serde(default, deserialize_with = "null_as_default")]
    pub grants: Vec<Grant>,
    /// Where this snapshot was read from (a path, or a name given for in-memory text); used in
    /// error messages, never serialized.
    #[serde(skip)]
    pub origin: String,
}

/// A user (identity): a person, or a service, system or agent identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Opaque id, unique among users.
    pub id: Str,
    /// Login name; compared case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<Str>,
    /// Primary email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Str>,
    /// All email addresses, usually including the primary one.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub emails: Vec<Str>,
    /// Name to show.
    #[serde(
        default,
        deserialize_with = "unshared",
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<Str>,
    /// Given (first) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<Str>,
    /// Family (last) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<Str>,
    /// `enabled`, `disabled` or `deleted`; other values are kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Str>,
    /// `human`, `service`, `system` or `agent` (the `type` key in the file).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Str>,
    /// Department name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<Str>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<Str>,
    /// Id of this user's manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_id: Option<Str>,
    /// HR employee number.
    #[serde(
        default,
        deserialize_with = "unshared",
        skip_serializing_if = "Option::is_none"
    )]
    pub employee_id: Option<Str>,
    /// Id in the upstream system (IdP or SCIM `externalId`).
    #[serde(
        default,
        deserialize_with = "unshared",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<Str>,
    /// Free-form attributes (cost center, location, owner team, ...): a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
}

/// A group of users, which may also contain other groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Opaque id, unique among groups.
    pub id: Str,
    /// Group name; compared case-insensitively and not necessarily unique.
    pub name: Str,
    /// Free text.
    #[serde(
        default,
        deserialize_with = "unshared",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<Str>,
    /// Ids of the users that are direct members.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub member_ids: Vec<Str>,
    /// Ids of the groups that are direct members: their members are members of this group too.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub member_group_ids: Vec<Str>,
}

/// A connected application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// Opaque id, unique among apps.
    pub id: Str,
    /// Name to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Str>,
    /// Ids of the users who own the app.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub owner_ids: Vec<Str>,
}

/// A permission that can be granted within one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Opaque id, unique among entitlements (across all apps).
    pub id: Str,
    /// Id of the app it belongs to.
    pub app_id: Str,
    /// Short name, unique within its app (e.g. `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<Str>,
    /// Name to show.
    #[serde(
        default,
        deserialize_with = "unshared",
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<Str>,
    /// Kind of resource it applies to within the app (e.g. `org`, `repo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<Str>,
    /// The resource it applies to (e.g. `acme`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<Str>,
    /// Risk label (e.g. `low`, `high`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Str>,
}

/// An account in one app, owned by a user or unmatched (`user_id` is null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Opaque id, unique among accounts.
    pub id: Str,
    /// Id of the app the account lives in.
    pub app_id: Str,
    /// Id of the owning user; `None` marks an unmatched account.
    #[serde(default)]
    pub user_id: Option<Str>,
    /// Login name in the app; counts as taken for username generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<Str>,
    /// Email address in the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Str>,
    /// `user`, `service` or `system` (the `type` key in the file).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Str>,
    /// `enabled`, `disabled` or `deleted`; other values are kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Str>,
}

/// An entitlement held by an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// Id of the account holding the entitlement.
    pub account_id: Str,
    /// Id of the entitlement held.
    pub entitlement_id: Str,
    /// `direct` or `group:<group_id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Str>,
    /// When it was granted (free text, usually RFC 3339).
    #[serde(
        default,
        deserialize_with = "unshared",
        skip_serializing_if = "Option::is_none"
    )]
    pub granted_at: Option<Str>,
    /// When it expires, if ever. The index does not filter on it: it has no clock.
    #[serde(default, deserialize_with = "unshared")]
    pub expires_at: Option<Str>,
}

/// How many records of each kind a snapshot holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Users.
    pub users: usize,
    /// Groups.
    pub groups: usize,
    /// Direct user memberships: all `member_ids` entries, dangling ones included.
    pub memberships: usize,
    /// Apps.
    pub apps: usize,
    /// Entitlements.
    pub entitlements: usize,
    /// Accounts.
    pub accounts: usize,
    /// Grants.
    pub grants: usize,
}

/// What [`Index::build`](super::Index::build) found wrong but tolerated.
///
/// Dangling references are kept in the data and counted here (SCIM servers do leave
/// dangling member ids); the lookups simply skip them. Cycles are counted and the traversals
/// that meet them stop instead of looping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Dangling references, per kind.
    pub dangling: Dangling,
    /// Nested-group links (`member_group_ids`) that close a cycle. Membership is still the
    /// full transitive closure: every group on a cycle contains the others.
    pub group_cycles: usize,
    /// Manager chains that loop back on themselves (including a user managing itself).
    /// [`Index::managers`](super::Index::managers) lists each manager on a loop once.
    pub manager_cycles: usize,
    /// Users whose email (any of `email`/`emails`, case-insensitively) is already another
    /// user's; email lookups return the first user in file order.
    pub shared_emails: usize,
    /// Users whose username (case-insensitively) is already another user's; username
    /// lookups return the first user in file order.
    pub shared_usernames: usize,
}

/// Counts of references to records that do not exist, one field per kind of reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dangling {
    /// `groups[].member_ids` naming no user.
    pub group_member_user: usize,
    /// `groups[].member_group_ids` naming no group.
    pub group_member_group: usize,
    /// `users[].manager_id` naming no user.
    pub manager: usize,
    /// `apps[].owner_ids` naming no user.
    pub app_owner: usize,
    /// `entitlements[].app_id` naming no app.
    pub entitlement_app: usize,
    /// `accounts[].user_id` naming no user (null is not dangling: it is unmatched).
    pub account_user: usize,
    /// `accounts[].app_id` naming no app.
    pub account_app: usize,
    /// `grants[].account_id` naming no account.
    pub grant_account: usize,
    /// `grants[].entitlement_id` naming no entitlement.
    pub grant_entitlement: usize,
}

/// A user's free-form attributes: a JSON object, kept as its JSON text.
///
/// Kept as text because a parsed `serde_json::Map` costs about fifteen times the memory
/// (a B-tree node and four allocations for a two-key object), and most users' attributes
/// are never read. Reading one parses the object; it is small.
#[derive(Clone)]
pub struct Attributes(Box<serde_json::value::RawValue>);

/// An immutable, cheaply cloned string shared between the records and the index keys.
///
/// Equality, ordering and hashing are those of the text, so maps keyed by `Str` can be
/// queried with a `&str`.
#[derive(Clone)]
pub struct Str(Arc<str>);

/// Keeps string interning on for the current thread while it lives.
///
/// Re-entrant: only the outermost guard creates and finally drops the table, so
/// [`super::load`] can keep one table across parsing and index building.
pub(super) struct Interning {
    /// Whether this guard created the table and so must drop it.
    owner: bool,
}

/// The interning table's hash: FxHash (from rustc) with a final mix, several times faster
/// than the default SipHash on short strings. It is not resistant to crafted collisions,
/// which is acceptable for a table that lives only while a trusted snapshot is parsed; the
/// index's own maps keep the default, keyed hasher.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

/// Builds [`FxHasher`]s.
type BuildFxHasher = BuildHasherDefault<FxHasher>;

/// The strings seen so far by one parse.
type Interner = HashSet<Arc<str>, BuildFxHasher>;

thread_local! {
    /// The strings seen by the parse running on this thread, or `None` when no parse is.
    /// Filled by `Str` deserialization, emptied when the outermost [`Interning`] drops.
    static INTERNER: RefCell<Option<Interner>> = const { RefCell::new(None) };
}

// === impl Snapshot ===

impl Snapshot {
    /// Reads and parses the snapshot file at `path`.
    ///
    /// Files over 64 MiB are parsed as they stream in, so a 300 MB snapshot never sits in
    /// memory as text; smaller ones are read whole first, which parses faster.
    pub fn read(path: &Path) -> Result<Snapshot, Error> {
        Snapshot::read_with_limit(path, IN_MEMORY_LIMIT)
    }

    /// [`Snapshot::read`], streaming files over `in_memory_limit` bytes; tests pass 0 to
    /// exercise the streaming path with small files.
    pub(super) fn read_with_limit(path: &Path, in_memory_limit: u64) -> Result<Snapshot, Error> {
        let origin = path.display().to_string();
        let read_error = |error| Error::Read {
            origin: path.display().to_string(),
            error,
        };
        let _interning = Interning::begin();
        let mut file = File::open(path).map_err(read_error)?;
        let len = file.metadata().map_err(read_error)?.len();
        Interning::reserve(usize::try_from(len).unwrap_or(0));
        if len <= in_memory_limit {
            let mut text = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.read_to_end(&mut text).map_err(read_error)?;
            let again = || Some(serde_json::Deserializer::from_slice(&text));
            return parse(origin, serde_json::Deserializer::from_slice(&text), again);
        }
        // The reader type stays concrete: std reads single bytes straight from a `BufReader`'s
        // buffer, while behind `dyn Read` every byte would be a call.
        let stream = |file| {
            serde_json::Deserializer::from_reader(BufReader::with_capacity(READ_BUFFER, file))
        };
        // Reading again, only to locate a parse error, opens the file anew; if that fails,
        // the error is reported without its path.
        parse(origin, stream(file), || File::open(path).ok().map(stream))
    }

    /// Parses snapshot JSON held in memory as bytes (checked to be UTF-8 as they are parsed);
    /// `origin` names it in error messages.
    pub fn parse_bytes(origin: &str, bytes: &[u8]) -> Result<Snapshot, Error> {
        let _interning = Interning::begin();
        Interning::reserve(bytes.len());
        let again = || Some(serde_json::Deserializer::from_slice(bytes));
        parse(
            origin.to_owned(),
            serde_json::Deserializer::from_slice(bytes),
            again,
        )
    }

    /// Parses snapshot JSON held in memory; `origin` names it in error messages.
    pub fn parse(origin: &str, text: &str) -> Result<Snapshot, Error> {
        let _interning = Interning::begin();
        Interning::reserve(text.len());
        let again = || Some(serde_json::Deserializer::from_str(text));
        parse(
            origin.to_owned(),
            serde_json::Deserializer::from_str(text),
            again,
        )
    }

    /// How many records of each kind the snapshot holds.
    pub fn counts(&self) -> Counts {
        Counts {
            users: self.users.len(),
            groups: self.groups.len(),
            memberships: self.groups.iter().map(|g| g.member_ids.len()).sum(),
            apps: self.apps.len(),
            entitlements: self.entitlements.len(),
            accounts: self.accounts.len(),
            grants: self.grants.len(),
        }
    }
}

/// Deserializes one snapshot from `de`, and rejects anything after it.
///
/// Tracking the JSON path of every value costs about as much as the parse itself, so this
/// pass does not; only when it fails is the input parsed again from `again`, with tracking,
/// to name the path of the error.
fn parse<'de, R: serde_json::de::Read<'de>>(
    origin: String,
    mut de: serde_json::Deserializer<R>,
    again: impl FnOnce() -> Option<serde_json::Deserializer<R>>,
) -> Result<Snapshot, Error> {
    let parsed = Snapshot::deserialize(&mut de).and_then(|snapshot| de.end().map(|()| snapshot));
    match parsed {
        Ok(mut snapshot) => {
            snapshot.origin = origin;
            Ok(snapshot)
        }
        Err(error) => {
            let path = again()
                .and_then(|de| error_path(de, &error))
                .unwrap_or_default();
            Err(parse_error(origin, path, error))
        }
    }
}

/// The JSON path of `error`, found by parsing again with path tracking; `None` if the second
/// pass fails elsewhere (the input changed) or the error is not inside the document.
fn error_path<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    error: &serde_json::Error,
) -> Option<String> {
    let tracked = serde_path_to_error::deserialize::<_, Snapshot>(&mut de).err()?;
    let same = tracked.inner().line() == error.line() && tracked.inner().column() == error.column();
    same.then(|| tracked.path().to_string())
}

/// Turns a serde_json error into [`Error::Parse`] (or [`Error::Read`] for I/O failures),
/// moving serde_json's trailing "at line L column C" to the front where it reads better.
fn parse_error(origin: String, path: String, error: serde_json::Error) -> Error {
    if error.is_io() {
        return Error::Read {
            origin,
            error: std::io::Error::other(error),
        };
    }
    let (line, column) = (error.line(), error.column());
    let text = error.to_string();
    let position = format!(" at line {line} column {column}");
    let message = text.strip_suffix(&position).unwrap_or(&text).to_owned();
    // An empty path or serde_path_to_error's "." means the document root: nothing to add.
    let path = if path == "." { String::new() } else { path };
    Error::Parse {
        origin,
        line,
        column,
        path,
        message,
    }
}

/// Accepts only [`VERSION`], so a future format is refused with a clear message instead of
/// being half-read.
fn version_1<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let version = u64::deserialize(deserializer)?;
    if version == u64::from(VERSION) {
        Ok(VERSION)
    } else {
        Err(de::Error::custom(format_args!(
            "unsupported snapshot version `{version}`, expected {VERSION}"
        )))
    }
}

/// Treats an explicit `null` like an absent key; producers write both for empty lists.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

// === impl Counts ===

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} users, {} groups, {} memberships, {} apps, {} entitlements, {} accounts, {} grants",
            self.users,
            self.groups,
            self.memberships,
            self.apps,
            self.entitlements,
            self.accounts,
            self.grants
        )
    }
}

// === impl LoadReport ===

impl LoadReport {
    /// Whether anything was found wrong (and tolerated).
    pub fn has_warnings(&self) -> bool {
        *self != LoadReport::default()
    }
}

impl fmt::Display for LoadReport {
    /// One line for logs, e.g. `2 dangling references (grant_account 2), 1 group cycle`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.dangling.total();
        write!(f, "{total} dangling references")?;
        if total > 0 {
            let parts: Vec<String> = self
                .dangling
                .by_kind()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        write!(
            f,
            ", {} group cycles, {} manager cycles, {} shared emails, {} shared usernames",
            self.group_cycles, self.manager_cycles, self.shared_emails, self.shared_usernames
        )
    }
}

// === impl Dangling ===

impl Dangling {
    /// All dangling references, of every kind.
    pub fn total(&self) -> usize {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }

    /// Each kind with its count, in a fixed order; the names are the field names.
    pub fn by_kind(&self) -> [(&'static str, usize); 9] {
        [
            ("group_member_user", self.group_member_user),
            ("group_member_group", self.group_member_group),
            ("manager", self.manager),
            ("app_owner", self.app_owner),
            ("entitlement_app", self.entitlement_app),
            ("account_user", self.account_user),
            ("account_app", self.account_app),
            ("grant_account", self.grant_account),
            ("grant_entitlement", self.grant_entitlement),
        ]
    }
}

// === impl User ===

impl User {
    /// Every email address of the user: `email`, then `emails` (which may repeat it).
    pub fn all_emails(&self) -> impl Iterator<Item = &Str> {
        self.email.iter().chain(self.emails.iter())
    }
}

// === impl Attributes ===

impl Attributes {
    /// The object as JSON text, as it appeared in the snapshot.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// The object, parsed.
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        // INVARIANT: the text was checked to be a JSON object when deserialized, so the
        // fallback is never used.
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }

    /// One attribute's value, parsed; `None` if the object has no such key.
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        self.to_map().remove(key)
    }
}

impl PartialEq for Attributes {
    /// Compares the JSON text, so the same object written differently is not equal.
    fn eq(&self, other: &Attributes) -> bool {
        self.0.get() == other.0.get()
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Attributes, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        // The raw text is valid JSON, so its first byte tells the type.
        let found = match raw.get().trim_start().bytes().next() {
            Some(b'{') => return Ok(Attributes(raw)),
            Some(b'[') => de::Unexpected::Seq,
            Some(b'"') => de::Unexpected::Other("string"),
            Some(b't' | b'f') => de::Unexpected::Other("boolean"),
            Some(b'n') => de::Unexpected::Unit,
            _ => de::Unexpected::Other("number"),
        };
        Err(de::Error::invalid_type(found, &"a JSON object"))
    }
}

// === impl Str ===

impl Str {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether both share one allocation, i.e. interning worked.
    #[cfg(test)]
    pub(super) fn shares_allocation(&self, other: &Str) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Str) -> bool {
        // Interned strings usually share one allocation, which makes most comparisons a
        // pointer check.
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for Str {}

impl std::hash::Hash for Str {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash exactly like `str`, so maps keyed by `Str` can be queried with `&str`.
        (*self.0).hash(state);
    }
}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Str) -> std::cmp::Ordering {
        (*self.0).cmp(&*other.0)
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Str {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Str {
    fn from(text: &str) -> Str {
        Str(intern(text))
    }
}

impl From<String> for Str {
    fn from(text: String) -> Str {
        Str(intern(&text))
    }
}

impl From<Str> for String {
    fn from(text: Str) -> String {
        String::from(&*text.0)
    }
}

impl From<Str> for serde_json::Value {
    fn from(text: Str) -> serde_json::Value {
        serde_json::Value::String(String::from(text))
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Str {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Str, D::Error> {
        deserializer.deserialize_str(StrVisitor { intern: true })
    }
}

/// A [`Str`] deserialized without interning.
struct Unshared(Str);

impl<'de> Deserialize<'de> for Unshared {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unshared, D::Error> {
        deserializer
            .deserialize_str(StrVisitor { intern: false })
            .map(Unshared)
    }
}

/// Deserializes an optional string without interning, for values unique by nature
/// (timestamps, external ids, display names): looking those up would only cost time, and
/// keeping them in the table would cost more at its drop.
fn unshared<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Str>, D::Error> {
    Option::<Unshared>::deserialize(deserializer).map(|text| text.map(|Unshared(text)| text))
}

/// Builds a [`Str`] from any string the parser hands over, borrowed or not.
struct StrVisitor {
    /// Whether to go through the interner.
    intern: bool,
}

impl Visitor<'_> for StrVisitor {
    type Value = Str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Str, E> {
        Ok(if self.intern {
            Str::from(text)
        } else {
            Str(Arc::from(text))
        })
    }
}

// === impl Interning ===

impl Interning {
    /// Turns interning on for this thread, unless an outer guard already did.
    pub(super) fn begin() -> Interning {
        let owner = INTERNER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut table) if table.is_none() => {
                *table = Some(Interner::default());
                true
            }
            _ => false,
        });
        Interning { owner }
    }

    /// Makes room in this thread's table, if interning is on, for the strings of
    /// `input_len` bytes of JSON.
    fn reserve(input_len: usize) {
        INTERNER.with(|cell| {
            if let Ok(mut table) = cell.try_borrow_mut()
                && let Some(table) = table.as_mut()
            {
                table.reserve(input_len / BYTES_PER_DISTINCT_STRING);
            }
        });
    }
}

impl Drop for Interning {
    fn drop(&mut self) {
        if self.owner {
            INTERNER.with(|cell| {
                if let Ok(mut table) = cell.try_borrow_mut() {
                    *table = None;
                }
            });
        }
    }
}

/// Returns the shared copy of `text` if interning is on and it was seen before; otherwise a
/// new allocation (remembered when interning is on).
fn intern(text: &str) -> Arc<str> {
    INTERNER.with(|cell| {
        // The table is only borrowed inside this function, so the borrow cannot fail; if it
        // ever did, a private allocation is still correct, just not shared.
        let Ok(mut interner) = cell.try_borrow_mut() else {
            return Arc::from(text);
        };
        let Some(table) = interner.as_mut() else {
            return Arc::from(text);
        };
        if let Some(shared) = table.get(text) {
            return Arc::clone(shared);
        }
        let fresh: Arc<str> = Arc::from(text);
        table.insert(Arc::clone(&fresh));
        fresh
    })
}

// === impl FxHasher ===

impl FxHasher {
    /// Multiplier from rustc's FxHash.
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            for (slot, byte) in word.iter_mut().zip(rest) {
                *slot = *byte;
            }
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // FxHash's low bits depend only on the low bytes of each word, and the table picks
        // buckets by the low bits: ids differing only near their end ("acct-0029631" and
        // "acct-0029632") would all collide. A murmur3 finalizer spreads every bit.
        let mut z = self.hash;
        z ^= z >> 33;
        z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^ (z >> 33)
    }
}

//! Identity data: users, groups, apps, entitlements, accounts and grants, loaded from a
//! snapshot and indexed for the questions rules and hooks ask about a subject.
//!
//! Where it sits: a reload reads a snapshot file ([`Snapshot::read`]), builds an [`Index`]
//! from it off the hot path, and the reload machinery swaps the `Arc<Index>` in whole. On the
//! request path the server enriches the AuthZEN subject with [`Index::resolve_user`], and CEL
//! functions and hooks call the other lookups; every lookup is O(1) or O(result), never
//! blocks, and allocates nothing but its result (and a lowercased copy of a key that has
//! capitals).
//!
//! What it must not do: fetch anything over the network, mutate an index after it is built,
//! or cache the authoritative "is this username taken" answer anywhere that can evict it
//! (the index answers it from the complete data). Parsing and indexing never panic; a
//! snapshot with duplicate ids is refused with an [`Error`], while dangling references and
//! cycles are tolerated and counted in a [`LoadReport`].
//!
//! Layout:
//! - `snapshot.rs`: the file format (serde types), [`Str`], reading and parsing.
//! - `index.rs`: [`Index`], its validation at build time, and the lookups.
//! - `generate.rs`: deterministic synthetic snapshots for tests and benchmarks.
//!
//! Measured on the 2-core development VM (release build, 5,000-user `Mid` profile, 29 MB of
//! JSON): load and index in about 0.3–0.45 s, resident memory up by about 41 MB (1.4× the
//! JSON). The 50,000-user `Large` profile (344 MB) streams in about 10 s and takes about
//! 450 MB.

use std::path::Path;

pub mod generate;
mod index;
mod merge;
pub mod scim;
pub mod sync;
mod snapshot;
#[cfg(test)]
mod tests;

pub use generate::{Profile, generate};
pub use index::Index;
pub use merge::{MatchRule, MergeReport, merge};
pub use snapshot::{
    Account, App, Attributes, Counts, Dangling, Entitlement, Grant, Group, LoadReport, Snapshot,
    Str, User, VERSION,
};

/// Why a snapshot could not be read, parsed or indexed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The snapshot file cannot be opened or read.
    #[error("{origin}: cannot read: {error}")]
    Read {
        /// The file, as given.
        origin: String,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The text is not valid JSON or does not have the snapshot's shape.
    #[error(
        "{origin}: line {line}, column {column}: {}{message}",
        PathPrefix(path)
    )]
    Parse {
        /// The file, or the name given to in-memory text.
        origin: String,
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, from 1.
        column: usize,
        /// JSON path of the offending value, like `users[3].email`; empty at the top level.
        path: String,
        /// What is wrong, in serde's words.
        message: String,
    },
    /// Two records of one collection have the same id.
    #[error(
        "{origin}: {collection}[{index}]: duplicate id `{id}`, first used by {collection}[{first}]"
    )]
    DuplicateId {
        /// The file, or the name given to in-memory text.
        origin: String,
        /// The collection, as named in the file (`users`, `groups`, ...).
        collection: &'static str,
        /// The repeated id.
        id: String,
        /// Position of the repeat.
        index: usize,
        /// Position of the first record with that id.
        first: usize,
    },
    /// A collection is too large for the index's 32-bit positions.
    #[error("{origin}: {collection} has {len} records, more than the index supports ({max})")]
    TooLarge {
        /// The file, or the name given to in-memory text.
        origin: String,
        /// The collection, as named in the file.
        collection: &'static str,
        /// How many records it has.
        len: usize,
        /// The most the index supports.
        max: u32,
    },
}

/// Writes a JSON path followed by `: `, or nothing for the document root.
struct PathPrefix<'a>(&'a str);

/// Reads the snapshot file at `path` and indexes it.
///
/// The [`LoadReport`] is also kept in the index ([`Index::report`]); it is returned here so
/// the caller can log it before deciding to swap the index in.
pub fn load(path: &Path) -> Result<(Index, LoadReport), Error> {
    // One interning table across parse and build, so the lowercased keys the index derives
    // share allocations with the parsed strings they equal.
    let _interning = snapshot::Interning::begin();
    let snapshot = Snapshot::read(path)?;
    let index = Index::build(snapshot)?;
    let report = index.report().clone();
    Ok((index, report))
}

/// Parses snapshot bytes already read from `path` (which names them in errors) and indexes
/// them; for callers that also need the bytes, e.g. to hash them into a revision id.
pub fn load_bytes(bytes: &[u8], path: &Path) -> Result<(Index, LoadReport), Error> {
    let _interning = snapshot::Interning::begin();
    let snapshot = Snapshot::parse_bytes(&path.display().to_string(), bytes)?;
    let index = Index::build(snapshot)?;
    let report = index.report().clone();
    Ok((index, report))
}

/// Indexes the identity file (`file`: its bytes and path, or none) merged with the users and
/// groups of a SCIM sync from `base_url` (see [`merge`]). Errors name both origins.
pub fn load_merged(
    file: Option<(&[u8], &Path)>,
    synced: &sync::Synced,
    rules: &[MatchRule],
    base_url: &str,
) -> Result<(Index, LoadReport, MergeReport), Error> {
    let _interning = snapshot::Interning::begin();
    let (file_snapshot, origin) = match file {
        Some((bytes, path)) => {
            let origin = path.display().to_string();
            (Snapshot::parse_bytes(&origin, bytes)?, format!("{base_url} merged with {origin}"))
        }
        None => (Snapshot { version: VERSION, ..Snapshot::default() }, base_url.to_owned()),
    };
    let (merged, merge_report) = merge(file_snapshot, synced.users.clone(), synced.groups.clone(), rules, origin);
    let index = Index::build(merged)?;
    let report = index.report().clone();
    Ok((index, report, merge_report))
}

// === impl PathPrefix ===

impl std::fmt::Display for PathPrefix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

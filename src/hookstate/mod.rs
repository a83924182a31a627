//! Hook versions: every deployed version of every hook, kept on disk with when and how it
//! arrived, and which one is active.
//!
//! A version is the first 12 hex digits of the SHA-256 of the hook's TypeScript source, so the
//! same source is always the same version. The state directory holds, per hook:
//!
//! ```text
//! STATE/NAME/versions/<version>.ts   every source ever deployed (written once, atomically)
//! STATE/NAME/journal.jsonl           one line per deployment: {version, at, how, from?}
//! ```
//!
//! The active version is the last journal entry. Deployments arrive three ways: `file` (the
//! hook file changed: its version differs from the last version that came from the file),
//! `admin` (`PUT` on the admin API) and `rollback` (to the previous or a named version). A
//! file that has not changed since it was last deployed does not override a later admin
//! deployment or rollback, including across restarts.
//!
//! Only sources that compiled are recorded: callers compile first and record after. This
//! module does file I/O and must not run on the request path; reloads call it.

use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The state directory of all hooks.
#[derive(Debug)]
pub struct Versions {
    dir: PathBuf,
    /// Serializes journal appends and the read-modify-write of "what is active".
    lock: Mutex<()>,
}

/// One deployment of one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The version deployed.
    pub version: String,
    /// When (RFC 3339).
    pub at: String,
    /// `file`, `admin` or `rollback`.
    pub how: String,
    /// For a rollback, the version it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// A state directory problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the state directory failed.
    #[error("hook state `{}`: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error: part of the message, not a `source`, so `{:#}` prints it once.
        cause: std::io::Error,
    },
    /// A journal line is not valid.
    #[error("hook state `{}` line {line}: {message}", path.display())]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The hook has no such version.
    #[error("hook `{name}` has no version `{version}`")]
    UnknownVersion {
        /// The hook.
        name: String,
        /// The version asked for.
        version: String,
    },
    /// There is nothing to roll back to.
    #[error("hook `{0}` has no earlier version to roll back to")]
    NothingToRollBack(String),
    /// The hook name is not a safe file name.
    #[error("invalid hook name `{0}`: use letters, digits, `-` and `_`")]
    BadName(String),
}

/// The version of a source: the first 12 hex digits of its SHA-256.
pub fn version_of(source: &str) -> String {
    let hash = hex::encode(Sha256::digest(source.as_bytes()));
    hash.get(..12).unwrap_or(&hash).to_owned()
}

/// Whether `name` can be a hook name (and so a directory name).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-')
}

// === impl Versions ===

impl Versions {
    /// Opens (creating if needed) the state directory.
    pub fn open(dir: &Path) -> Result<Versions, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), cause: source })?;
        Ok(Versions { dir: dir.to_path_buf(), lock: Mutex::new(()) })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the hook file's current source; deploys it (how `file`) when it differs from
    /// the last version that came from the file. Returns the active version and its source.
    pub fn sync_file(&self, name: &str, source: &str) -> Result<(String, String), Error> {
        let _guard = self.lock.lock();
        let version = version_of(source);
        let journal = self.read_journal(name)?;
        let last_file = journal.iter().rev().find(|d| d.how == "file").map(|d| d.version.as_str());
        if last_file != Some(version.as_str()) {
            self.store_source(name, &version, source)?;
            self.append(name, Deployment { version, at: now(), how: "file".to_owned(), from: None })?;
        }
        self.active_locked(name)?.ok_or_else(|| Error::NothingToRollBack(name.to_owned()))
    }

    /// Deploys `source` (already compiled by the caller) as the active version.
    pub fn deploy(&self, name: &str, source: &str) -> Result<Deployment, Error> {
        let _guard = self.lock.lock();
        let version = version_of(source);
        self.store_source(name, &version, source)?;
        let d = Deployment { version, at: now(), how: "admin".to_owned(), from: None };
        self.append(name, d.clone())?;
        Ok(d)
    }

    /// Makes `to` (or, when `None`, the version active before the current one) active again.
    pub fn rollback(&self, name: &str, to: Option<&str>) -> Result<Deployment, Error> {
        let _guard = self.lock.lock();
        let journal = self.read_journal(name)?;
        let current = journal.last().map(|d| d.version.clone());
        let target = match to {
            Some(v) => {
                if !self.source_path(name, v)?.exists() {
                    return Err(Error::UnknownVersion { name: name.to_owned(), version: v.to_owned() });
                }
                v.to_owned()
            }
            None => journal
                .iter()
                .rev()
                .map(|d| &d.version)
                .find(|v| Some(*v) != current.as_ref())
                .cloned()
                .ok_or_else(|| Error::NothingToRollBack(name.to_owned()))?,
        };
        let d = Deployment { version: target, at: now(), how: "rollback".to_owned(), from: current };
        self.append(name, d.clone())?;
        Ok(d)
    }

    /// The active version and its source, if the hook was ever deployed.
    pub fn active(&self, name: &str) -> Result<Option<(String, String)>, Error> {
        let _guard = self.lock.lock();
        self.active_locked(name)
    }

    /// Hooks that have at least one recorded deployment.
    pub fn deployed_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| valid_name(n) && self.dir.join(n).join("journal.jsonl").is_file())
            .collect();
        names.sort();
        names
    }

    /// Every deployment of `name`, oldest first.
    pub fn history(&self, name: &str) -> Result<Vec<Deployment>, Error> {
        self.read_journal(name)
    }

    /// The source of one version.
    pub fn source(&self, name: &str, version: &str) -> Result<String, Error> {
        let path = self.source_path(name, version)?;
        std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::UnknownVersion { name: name.to_owned(), version: version.to_owned() }
            } else {
                Error::Io { path, cause: source }
            }
        })
    }

    fn active_locked(&self, name: &str) -> Result<Option<(String, String)>, Error> {
        let Some(last) = self.read_journal(name)?.pop() else { return Ok(None) };
        let source = self.source(name, &last.version)?;
        Ok(Some((last.version, source)))
    }

    fn hook_dir(&self, name: &str) -> Result<PathBuf, Error> {
        if !valid_name(name) {
            return Err(Error::BadName(name.to_owned()));
        }
        Ok(self.dir.join(name))
    }

    fn source_path(&self, name: &str, version: &str) -> Result<PathBuf, Error> {
        if !version.chars().all(|c| c.is_ascii_hexdigit()) || version.is_empty() {
            return Err(Error::UnknownVersion { name: name.to_owned(), version: version.to_owned() });
        }
        Ok(self.hook_dir(name)?.join("versions").join(format!("{version}.ts")))
    }

    fn store_source(&self, name: &str, version: &str, source: &str) -> Result<(), Error> {
        let path = self.source_path(name, version)?;
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), cause: source })?;
        let tmp = dir.join(format!(".{version}.tmp"));
        std::fs::write(&tmp, source).map_err(|source| Error::Io { path: tmp.clone(), cause: source })?;
        std::fs::rename(&tmp, &path).map_err(|source| Error::Io { path, cause: source })
    }

    fn append(&self, name: &str, d: Deployment) -> Result<(), Error> {
        let dir = self.hook_dir(name)?;
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), cause: source })?;
        let path = dir.join("journal.jsonl");
        let mut line = serde_json::to_string(&d).unwrap_or_default();
        line.push('\n');
        let io = |source| Error::Io { path: path.clone(), cause: source };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        f.write_all(line.as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)
    }

    fn read_journal(&self, name: &str) -> Result<Vec<Deployment>, Error> {
        let path = self.hook_dir(name)?.join("journal.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::Io { path, cause: source }),
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(d) => out.push(d),
                // A torn last line (crash mid-append) is ignored; anything else is corruption.
                Err(_) if i + 1 == text.lines().count() && !text.ends_with('\n') => {}
                Err(e) => return Err(Error::Corrupt { path, line: i + 1, message: e.to_string() }),
            }
        }
        Ok(out)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_admin_and_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let v = Versions::open(dir.path()).unwrap();
        let (a, _) = v.sync_file("h", "export default () => ({decision: true})").unwrap();
        // The same file again deploys nothing.
        assert_eq!(v.sync_file("h", "export default () => ({decision: true})").unwrap().0, a);
        assert_eq!(v.history("h").unwrap().len(), 1);
        let b = v.deploy("h", "export default () => ({decision: false})").unwrap().version;
        assert_ne!(a, b);
        // An unchanged file does not override the admin deployment, even after a "restart".
        let v = Versions::open(dir.path()).unwrap();
        assert_eq!(v.sync_file("h", "export default () => ({decision: true})").unwrap().0, b);
        let r = v.rollback("h", None).unwrap();
        assert_eq!((r.version.as_str(), r.from.as_deref()), (a.as_str(), Some(b.as_str())));
        assert_eq!(v.active("h").unwrap().unwrap().0, a);
        assert_eq!(v.rollback("h", Some(&b)).unwrap().version, b);
        assert!(matches!(v.rollback("h", Some("abcdef")), Err(Error::UnknownVersion { .. })));
        assert!(v.source("h", &a).unwrap().contains("decision: true"));
        let how: Vec<_> = v.history("h").unwrap().into_iter().map(|d| d.how).collect();
        assert_eq!(how, ["file", "admin", "rollback", "rollback"]);
    }

    #[test]
    fn names_and_versions_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let v = Versions::open(dir.path()).unwrap();
        assert!(matches!(v.deploy("../x", "x"), Err(Error::BadName(_))));
        assert!(matches!(v.source("h", "../../etc"), Err(Error::UnknownVersion { .. })));
        assert!(matches!(v.rollback("h", None), Err(Error::NothingToRollBack(_))));
    }
}

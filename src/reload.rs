//! The snapshot: every piece of compiled state a decision reads, swapped whole.
//!
//! A [`Snapshot`] holds the policies, the CEL functions bound to one identity index, the index
//! itself, and a revision id (a hash of every input file). Requests call [`Store::current`]
//! once and pass `&Snapshot` down, so a decision never mixes two revisions.
//!
//! A reload takes the startup path: read the sources → parse → compile → validate → swap. It
//! runs off the request path (callers use `spawn_blocking`), one at a time (`reload_lock`), and
//! a reload that fails leaves the old snapshot serving: the error goes to the log, the
//! `verdict_reloads_total{result="error"}` metric and the admin status.
//!
//! Triggers: file changes ([`watch`], debounced; robust to editors' atomic renames and to the
//! Kubernetes ConfigMap `..data` symlink swap because it watches directories, not files),
//! SIGHUP, and `POST /v1/reload` on the admin listener. Sources are "a directory of files"
//! today; a bundle source would produce the same [`Sources`] and slot in beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::cel;
use crate::config::{Config, HookSettings};
use crate::hooks::{self, HookSpec};
use crate::hookstate::Versions;
use crate::identity::{self, Index};
use crate::metrics::Metrics;
use crate::policy;

/// Where a snapshot's inputs come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Policy directory.
    pub policy_dir: PathBuf,
    /// Identity snapshot file.
    pub identity_file: Option<PathBuf>,
    /// Hook directory, settings and secrets.
    pub hooks: HookSources,
    /// Resource collections and searchable subject types.
    pub search: crate::config::Search,
    /// SCIM upstream owning users and groups, with its last good data.
    pub scim: Option<Arc<identity::sync::ScimSource>>,
}

/// The records of one resource type, for resource enrichment and search.
#[derive(Debug, Default)]
pub struct Collection {
    /// `(id, record)` in file order.
    pub records: Vec<(String, serde_json::Value)>,
    by_id: HashMap<String, usize>,
}

// === impl Collection ===

impl Collection {
    /// The record with this id.
    pub fn get(&self, id: &str) -> Option<&serde_json::Value> {
        self.by_id.get(id).and_then(|i| self.records.get(*i)).map(|(_, r)| r)
    }
}

/// Where hooks come from.
#[derive(Debug, Clone, Default)]
pub struct HookSources {
    /// Directory of `*.ts` hooks (absent: no file hooks).
    pub dir: Option<PathBuf>,
    /// Every deployed version; `None` compiles the files as they are (check, test, eval).
    pub versions: Option<Arc<Versions>>,
    /// `[hook.NAME]` settings.
    pub settings: std::collections::BTreeMap<String, HookSettings>,
    /// Secret files directory.
    pub secrets_dir: Option<PathBuf>,
    /// Secret values given directly (test files); checked before the environment.
    pub secrets: std::collections::BTreeMap<String, String>,
}

/// All compiled state of one revision.
#[derive(Debug)]
pub struct Snapshot {
    /// Revision id: `r-` and 12 hex digits of the inputs' hash.
    pub revision: Arc<str>,
    /// Policies.
    pub policies: policy::Set,
    /// CEL functions over this snapshot's identity index.
    pub functions: cel::Functions,
    /// Identity index.
    pub identity: Arc<Index>,
    /// Hash of the identity file alone.
    pub identity_revision: Arc<str>,
    /// When this snapshot was built (RFC 3339).
    pub loaded_at: Arc<str>,
    /// Dangling references and other warnings from the identity data.
    pub identity_report: identity::LoadReport,
    /// Compiled hooks at their active versions, by name.
    pub hooks: HashMap<Arc<str>, Arc<HookSpec>>,
    /// Resource collections by resource type.
    pub collections: HashMap<String, Collection>,
    /// Subject types whose subjects are the identity users (AuthZEN subject search).
    pub subject_types: Vec<String>,
    /// The SCIM upstream, for read-through lookups and freshness.
    pub scim: Option<Arc<identity::sync::ScimSource>>,
    /// How the SCIM data was joined with the identity file, when it was.
    pub merge_report: Option<identity::MergeReport>,
}

/// Builds in a row whose inputs may move before [`Snapshot::build_with`] gives up.
const SETTLE_ATTEMPTS: usize = 5;

/// An input's real path, inode, length and modification time (seconds, nanoseconds).
type InputStamp = (PathBuf, u64, u64, i64, i64);

/// Where every input of a snapshot really is, symlinks resolved, with its inode, length and
/// modification time (`None`: it cannot be resolved): the identity file, the visible entries
/// of the policy and hook directories, and the collection files. Two equal lists mean no input
/// was swapped (a ConfigMap update: a new directory, then the `..data` link renamed over) or
/// rewritten in between.
fn resolved_inputs(sources: &Sources) -> Vec<Option<InputStamp>> {
    use std::os::unix::fs::MetadataExt as _;
    let mut paths: Vec<PathBuf> = sources.identity_file.iter().cloned().collect();
    for dir in std::iter::once(&sources.policy_dir).chain(sources.hooks.dir.as_ref()) {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut visible: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        visible.sort();
        paths.extend(visible);
    }
    paths.extend(sources.search.collections.iter().map(|c| c.file.clone()));
    paths
        .iter()
        .map(|p| {
            let real = std::fs::canonicalize(p).ok()?;
            let meta = std::fs::metadata(&real).ok()?;
            Some((real, meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec()))
        })
        .collect()
}

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The inputs kept moving (being replaced) while they were read, this many builds in a row.
    #[error("the policy, identity or hook files kept changing while being read ({0} tries); the next change reloads again")]
    Unsettled(usize),
    /// One or more hooks do not compile or are misconfigured.
    #[error("{} hook error(s): {}", .0.len(), .0.join("; "))]
    Hooks(Vec<String>),
    /// A resource collection file is invalid.
    #[error("resource collection `{}`: {message}", path.display())]
    Collection {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// One or more policies are invalid.
    #[error(transparent)]
    Policies(#[from] policy::LoadErrors),
    /// The identity file is invalid.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// The identity file could not be read.
    #[error("cannot read identity file `{}`: {cause}", path.display())]
    ReadIdentity {
        /// The file.
        path: PathBuf,
        /// The I/O error: part of the message, not a `source`, so `{:#}` prints it once.
        cause: std::io::Error,
    },
}

/// What started a reload, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A watched file changed.
    File,
    /// SIGHUP.
    Signal,
    /// `POST /v1/reload`.
    Admin,
    /// A SCIM sync brought new identity data.
    Scim,
}

/// The outcome of the last reload attempt, for the admin status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// When it ran (RFC 3339).
    pub at: String,
    /// `file`, `signal`, `admin` or `startup`.
    pub trigger: &'static str,
    /// Whether a new snapshot is serving (or the inputs were unchanged).
    pub ok: bool,
    /// The revision serving after the attempt.
    pub revision: String,
    /// Whether the inputs had changed.
    pub changed: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The current snapshot and the reload machinery around it.
#[derive(Debug)]
pub struct Store {
    /// Read by every request (`load_full`, no lock); written only by [`Store::reload`].
    current: ArcSwap<Snapshot>,
    sources: Sources,
    env: cel::Env,
    metrics: Arc<Metrics>,
    /// Serializes reloads so two triggers never build and swap concurrently.
    reload_lock: Mutex<()>,
    status: Mutex<Status>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Reads and compiles every source.
    pub fn build(sources: &Sources, env: &cel::Env) -> Result<Snapshot, BuildError> {
        let synced = sources.scim.as_ref().and_then(|s| s.data());
        Snapshot::build_with(sources, env, synced.as_deref())
    }

    /// Like [`Snapshot::build`], with `synced` as the SCIM data (a sync's candidate, or none).
    ///
    /// The inputs are files read one after another, so a swap of them all at once (a
    /// Kubernetes ConfigMap update renames its `..data` symlink) can land between two reads
    /// and mix two generations into one snapshot. So the build notes where each input really
    /// is (symlinks resolved) and its inode, length and mtime before and after reading, and
    /// builds again if any of that changed; after
    /// [`SETTLE_ATTEMPTS`] moving builds it gives up with [`BuildError::Unsettled`] (the old
    /// snapshot keeps serving, and the watcher sees the next change).
    pub fn build_with(
        sources: &Sources,
        env: &cel::Env,
        synced: Option<&identity::sync::Synced>,
    ) -> Result<Snapshot, BuildError> {
        for _ in 0..SETTLE_ATTEMPTS {
            let before = resolved_inputs(sources);
            let built = Snapshot::build_once(sources, env, synced);
            if resolved_inputs(sources) == before {
                return built;
            }
            tracing::debug!("snapshot inputs moved while being read; building again");
        }
        Err(BuildError::Unsettled(SETTLE_ATTEMPTS))
    }

    /// One build from the files as they are now.
    fn build_once(
        sources: &Sources,
        env: &cel::Env,
        synced: Option<&identity::sync::Synced>,
    ) -> Result<Snapshot, BuildError> {
        let file = match &sources.identity_file {
            Some(path) => Some((
                std::fs::read(path).map_err(|source| BuildError::ReadIdentity { path: path.clone(), cause: source })?,
                path,
            )),
            None => None,
        };
        let file_hash = file.as_ref().map_or_else(|| "none".to_owned(), |(bytes, _)| hex::encode(Sha256::digest(bytes)));
        let scim = sources.scim.as_ref().map(|s| s.settings());
        let (index, identity_report, identity_hash, merge_report) = match (synced, scim) {
            (Some(synced), Some(settings)) => {
                let file = file.as_ref().map(|(bytes, path)| (bytes.as_slice(), path.as_path()));
                let (index, report, merged) =
                    identity::load_merged(file, synced, &settings.match_rules, &settings.base_url)?;
                let hash = hex::encode(Sha256::digest(format!("{file_hash}+scim:{}", synced.hash)));
                (index, report, hash, Some(merged))
            }
            _ => match &file {
                Some((bytes, path)) => {
                    let (index, report) = identity::load_bytes(bytes, path)?;
                    (index, report, file_hash, None)
                }
                None => {
                    let (index, report) =
                        identity::load_bytes(EMPTY_SNAPSHOT.as_bytes(), Path::new("(no identity file)"))?;
                    (index, report, file_hash, None)
                }
            },
        };
        let hooks = build_hooks(&sources.hooks)?;
        let (collections, collection_hash) = load_collections(&sources.search.collections)?;
        let hook_names: std::collections::HashSet<String> = hooks.keys().map(|k| k.to_string()).collect();
        let (policies, files) = policy::Set::load(&sources.policy_dir, env, Some(&hook_names))?;
        let mut hash = Sha256::new();
        for (path, bytes) in &files {
            let rel = path.strip_prefix(&sources.policy_dir).unwrap_or(path);
            hash.update(rel.to_string_lossy().as_bytes());
            hash.update([0]);
            hash.update(Sha256::digest(bytes));
        }
        hash.update(identity_hash.as_bytes());
        hash.update(collection_hash);
        let mut versions: Vec<_> = hooks.values().map(|h| format!("{}@{}", h.compiled.name, h.compiled.version)).collect();
        versions.sort();
        for v in versions {
            hash.update(v.as_bytes());
            hash.update([0]);
        }
        let revision = format!("r-{}", short(&hex::encode(hash.finalize())));
        let identity = Arc::new(index);
        Ok(Snapshot {
            revision: revision.into(),
            functions: cel::Functions::new(env, identity.clone()),
            policies,
            identity,
            identity_revision: short(&identity_hash).into(),
            loaded_at: now_rfc3339().into(),
            identity_report,
            hooks,
            collections,
            subject_types: sources.search.subject_types.clone(),
            scim: sources.scim.clone(),
            merge_report,
        })
    }

    /// How fresh the identity data is, for a decision record made now.
    pub fn freshness(&self) -> crate::decision_log::Freshness {
        crate::decision_log::Freshness {
            revision: Arc::clone(&self.identity_revision),
            loaded_at: Arc::clone(&self.loaded_at),
            stale: self.scim.as_ref().is_some_and(|s| s.is_stale()),
            source: if self.scim.is_some() { "scim" } else { "file" }.into(),
            synced_at: self.scim.as_ref().and_then(|s| s.synced_at()),
        }
    }

    /// The request with `resource.properties` filled from the resource's collection record,
    /// when there is one (members the request sent win). `None`: use the request as it is.
    pub fn enrich(&self, request: &crate::decision::DecisionRequest) -> Option<serde_json::Value> {
        let record = self.collections.get(request.resource_type())?.get(request.resource_id())?;
        let request = request.json();
        let resource = request.get("resource")?;
        let mut properties = record.as_object().cloned().unwrap_or_default();
        if let Some(sent) = resource.get("properties").and_then(serde_json::Value::as_object) {
            properties.extend(sent.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut out = request.clone();
        if let Some(r) = out.get_mut("resource").and_then(serde_json::Value::as_object_mut) {
            r.insert("properties".to_owned(), serde_json::Value::Object(properties));
        }
        Some(out)
    }

    /// The `principal` of a subject: its identity record, or `{found: false}`.
    pub fn principal(&self, subject_id: &str) -> Arc<serde_json::Value> {
        self.functions.principal(&self.identity, subject_id)
    }
}

// === impl Sources ===

impl Sources {
    /// The sources a config names; `versions` is the hook state (serve) or `None` (CLI tools).
    pub fn from_config(config: &Config, versions: Option<Arc<Versions>>) -> Sources {
        Sources {
            policy_dir: config.policy_dir.clone(),
            identity_file: config.identity_file.clone(),
            hooks: HookSources {
                dir: Some(config.hooks.dir.clone()),
                versions,
                settings: config.hooks.settings.clone(),
                secrets_dir: config.hooks.secrets_dir.clone(),
                secrets: std::collections::BTreeMap::new(),
            },
            search: config.search.clone(),
            scim: config
                .scim
                .clone()
                .map(|settings| Arc::new(identity::sync::ScimSource::new(settings, config.hooks.secrets_dir.clone()))),
        }
    }
}

/// Reads every collection file; ids are strings (numbers are written as strings).
fn load_collections(
    specs: &[crate::config::Collection],
) -> Result<(HashMap<String, Collection>, [u8; 32]), BuildError> {
    let mut out: HashMap<String, Collection> = HashMap::new();
    let mut hash = Sha256::new();
    for spec in specs {
        let err = |message: String| BuildError::Collection { path: spec.file.clone(), message };
        let bytes = std::fs::read(&spec.file).map_err(|e| err(format!("cannot read: {e}")))?;
        hash.update(&bytes);
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        let items = value.as_array().ok_or_else(|| err("must be a JSON array of objects".to_owned()))?;
        let collection = out.entry(spec.resource_type.clone()).or_default();
        for (i, item) in items.iter().enumerate() {
            let id = match item.get(&spec.id_field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => return Err(err(format!("[{i}]: `{}` must be a string or a number", spec.id_field))),
            };
            if collection.by_id.insert(id.clone(), collection.records.len()).is_some() {
                return Err(err(format!("[{i}]: duplicate id `{id}`")));
            }
            let mut record = item.clone();
            if let Some(obj) = record.as_object_mut() {
                obj.insert(spec.id_field.clone(), serde_json::Value::String(id.clone()));
            }
            collection.records.push((id, record));
        }
    }
    Ok((out, hash.finalize().into()))
}

/// Compiles every hook: the `*.ts` files of the hook directory and any hook deployed only
/// through the admin API. With a version store, each file is recorded (only once it
/// compiled) and the store's active version is the one served.
fn build_hooks(src: &HookSources) -> Result<HashMap<Arc<str>, Arc<HookSpec>>, BuildError> {
    let mut errors = Vec::new();
    let mut files = std::collections::BTreeMap::new();
    if let Some(dir) = src.dir.as_deref().filter(|d| d.is_dir()) {
        for path in hook_files(dir) {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            if !crate::hookstate::valid_name(&name) {
                errors.push(format!("{}: hook names use letters, digits, `-` and `_`", path.display()));
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    files.insert(name, (path, text));
                }
                Err(e) => errors.push(format!("{}: cannot read: {e}", path.display())),
            }
        }
    }
    let mut names: std::collections::BTreeSet<String> = files.keys().cloned().collect();
    if let Some(v) = &src.versions {
        names.extend(v.deployed_names());
    }
    let mut out = HashMap::new();
    for name in names {
        let file = files.get(&name);
        let compiled = match (file, &src.versions) {
            (Some((path, text)), None) => hooks::compile(&name, path, text).map_err(|e| e.to_string()),
            (file, Some(versions)) => {
                // The file's source must compile before it is recorded as a version.
                let file_ok = match file {
                    Some((path, text)) => match hooks::compile(&name, path, text) {
                        Ok(c) => versions.sync_file(&name, text).map(|_| Some(c)).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                    None => Ok(None),
                };
                file_ok.and_then(|from_file| match versions.active(&name) {
                    Ok(Some((version, source))) => match from_file {
                        Some(c) if *c.version == *version => Ok(c),
                        _ => {
                            let path = versions.dir().join(&name).join("versions").join(format!("{version}.ts"));
                            hooks::compile(&name, &path, &source).map_err(|e| e.to_string())
                        }
                    },
                    Ok(None) => from_file.ok_or_else(|| format!("hook `{name}` has no deployed version")),
                    Err(e) => Err(e.to_string()),
                })
            }
            (None, None) => continue,
        };
        let compiled = match compiled {
            Ok(c) => Arc::new(c),
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let settings = src.settings.get(&name).cloned().unwrap_or_default();
        let mut secrets = std::collections::BTreeMap::new();
        for secret in &settings.secrets {
            match secret_value(src, secret) {
                Some(v) => {
                    secrets.insert(secret.clone(), v);
                }
                None => errors.push(format!(
                    "hook `{name}`: secret `{secret}` is declared but not set (VERDICT_SECRET_{secret}{})",
                    src.secrets_dir.as_ref().map(|d| format!(" or {}/{secret}", d.display())).unwrap_or_default()
                )),
            }
        }
        let spec = HookSpec {
            compiled,
            limits: hooks::Limits {
                deadline: settings.deadline,
                memory_bytes: settings.memory_bytes,
                stack_bytes: settings.stack_bytes,
                max_output_bytes: settings.max_output_bytes,
                isolation: if settings.per_call { hooks::Isolation::PerCall } else { hooks::Isolation::Pooled },
            },
            config: settings.config.clone(),
            secrets,
            fetch: hooks::FetchPolicy {
                allowed_hosts: settings.allowed_hosts.clone(),
                timeout: settings.fetch_timeout,
                max_response_bytes: settings.max_response_bytes,
                cache_ttl: settings.cache_ttl,
                ca_file: settings.ca_file.clone(),
            },
        };
        out.insert(Arc::from(name.as_str()), Arc::new(spec));
    }
    if errors.is_empty() { Ok(out) } else { Err(BuildError::Hooks(errors)) }
}

/// `*.ts` files directly in `dir`, without declarations (`*.d.ts`), tests and hidden files.
pub fn hook_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".ts") && !name.ends_with(".d.ts") && !name.starts_with('.') && p.is_file()
        })
        .collect();
    out.sort();
    out
}

/// A secret from the test file, the environment (`VERDICT_SECRET_NAME`) or the secrets directory.
fn secret_value(src: &HookSources, name: &str) -> Option<String> {
    if let Some(v) = src.secrets.get(name) {
        return Some(v.clone());
    }
    secret(name, src.secrets_dir.as_deref())
}

/// A secret from the environment (`VERDICT_SECRET_NAME`) or the file `NAME` in `dir` (a
/// Kubernetes secret mount), without its trailing newline.
pub fn secret(name: &str, dir: Option<&Path>) -> Option<String> {
    if let Ok(v) = std::env::var(format!("VERDICT_SECRET_{name}")) {
        return Some(v);
    }
    let text = std::fs::read_to_string(dir?.join(name)).ok()?;
    Some(text.trim_end_matches(['\n', '\r']).to_owned())
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// === impl Trigger ===

impl Trigger {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::File => "file",
            Trigger::Signal => "signal",
            Trigger::Admin => "admin",
            Trigger::Scim => "scim",
        }
    }
}

// === impl Store ===

impl Store {
    /// Builds the first snapshot; fails if it cannot (the process must not start without one).
    pub fn open(sources: Sources, metrics: Arc<Metrics>) -> Result<Store, BuildError> {
        let env = cel::Env::new();
        let snapshot = Snapshot::build(&sources, &env)?;
        let status = Status {
            at: snapshot.loaded_at.to_string(),
            trigger: "startup",
            ok: true,
            revision: snapshot.revision.to_string(),
            changed: true,
            error: None,
        };
        Ok(Store {
            current: ArcSwap::from_pointee(snapshot),
            sources,
            env,
            metrics,
            reload_lock: Mutex::new(()),
            status: Mutex::new(status),
        })
    }

    /// The snapshot serving now. Call once per request and pass the `Arc` down.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The last reload's outcome.
    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    /// The sources snapshots are built from.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Rebuilds from the sources and swaps if the build succeeds and the inputs changed.
    /// Blocking: call from `spawn_blocking` or a plain thread.
    pub fn reload(&self, trigger: Trigger) -> Result<Arc<str>, Arc<BuildError>> {
        self.rebuild(trigger, None)
    }

    /// Rebuilds with `synced` as the SCIM data instead of the source's last good data.
    fn rebuild(&self, trigger: Trigger, synced: Option<Arc<identity::sync::Synced>>) -> Result<Arc<str>, Arc<BuildError>> {
        let _guard = self.reload_lock.lock();
        let result = match &synced {
            Some(data) => Snapshot::build_with(&self.sources, &self.env, Some(data)),
            None => Snapshot::build(&self.sources, &self.env),
        };
        // New SCIM data becomes the last good data only once a snapshot built with it is
        // serving, and before the lock lets another rebuild read it.
        if result.is_ok()
            && let (Some(data), Some(scim)) = (synced, &self.sources.scim)
        {
            scim.keep(data);
        }
        let mut status = Status {
            at: now_rfc3339(),
            trigger: trigger.as_str(),
            ok: true,
            revision: String::new(),
            changed: false,
            error: None,
        };
        let outcome = match result {
            Ok(snapshot) => {
                let old = self.current.load();
                if old.revision == snapshot.revision {
                    tracing::debug!(revision = %old.revision, trigger = trigger.as_str(), "reload: inputs unchanged");
                } else {
                    tracing::info!(
                        from = %old.revision, to = %snapshot.revision, trigger = trigger.as_str(),
                        "reload: new snapshot serving"
                    );
                    status.changed = true;
                    self.current.store(Arc::new(snapshot));
                }
                Ok(self.current.load().revision.clone())
            }
            Err(e) => {
                tracing::warn!(error = %e, trigger = trigger.as_str(), "reload failed; previous snapshot keeps serving");
                status.ok = false;
                status.error = Some(e.to_string());
                Err(Arc::new(e))
            }
        };
        status.revision = self.current.load().revision.to_string();
        self.metrics.reload(trigger.as_str(), status.ok);
        *self.status.lock() = status;
        outcome
    }
}

impl identity::sync::Apply for Store {
    fn apply(&self, data: Arc<identity::sync::Synced>) -> Result<(), String> {
        self.rebuild(Trigger::Scim, Some(data)).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Watches the sources and reloads after each burst of changes; stops when `shutdown` fires.
///
/// Directories are watched rather than files: an editor's save-by-rename and a ConfigMap update
/// (a new `..2024_…` directory, then an atomic rename of the `..data` symlink) both replace the
/// file a file-watch would be holding. Events are filtered to the policy directory and the
/// identity file (plus `..`-prefixed ConfigMap entries beside it), so a decision log written in
/// the same directory does not cause reloads.
pub fn watch(
    store: Arc<Store>,
    debounce: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    use notify::Watcher;
    // Sender: the notify thread, one message per relevant event. Receiver: the debounce task
    // below. Closed when the watcher (owned by the task) is dropped at shutdown.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(64);
    let sources = store.sources().clone();
    let filter = sources.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && event.paths.iter().any(|p| relevant(&filter, p)) {
                // A full channel already holds a pending reload; dropping this event is fine.
                let _ = tx.try_send(());
            }
    })?;
    watcher.watch(&sources.policy_dir, notify::RecursiveMode::Recursive)?;
    if let Some(dir) = sources.identity_file.as_deref().and_then(Path::parent) {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if !dir.starts_with(&sources.policy_dir) {
            watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
        }
    }
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { break },
                _ = shutdown.changed() => break,
            }
            // Debounce: wait until no event arrives for `debounce`.
            while let Ok(Some(())) = tokio::time::timeout(debounce, rx.recv()).await {}
            let s = store.clone();
            if tokio::task::spawn_blocking(move || s.reload(Trigger::File)).await.is_err() {
                tracing::error!("reload task panicked");
            }
        }
    }))
}

fn relevant(sources: &Sources, path: &Path) -> bool {
    if path.starts_with(&sources.policy_dir) {
        return true;
    }
    let Some(identity) = &sources.identity_file else { return false };
    if path == identity {
        return true;
    }
    let same_dir = path.parent().map(normalize) == identity.parent().map(normalize);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    same_dir && name.starts_with("..")
}

fn normalize(p: &Path) -> PathBuf {
    if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() }
}

/// The identity data of a deployment without an identity file: no users, so every subject's
/// `principal.found` is false.
const EMPTY_SNAPSHOT: &str =
    r#"{"version":1,"users":[],"groups":[],"apps":[],"entitlements":[],"accounts":[],"grants":[]}"#;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Writes `generation`'s policy and identity into a new directory `cm/..NAME` and points
    /// the ConfigMap's `..data` at it, atomically (a new link renamed over the old), as the
    /// kubelet does.
    fn publish(cm: &Path, name: &str, generation: u32) {
        let data = cm.join(format!("..{name}"));
        std::fs::create_dir(&data).unwrap();
        let policy = format!(
            "policy: gen\napplies_to: {{ actions: [read] }}\nrules:\n  - name: same\n    when: principal.attributes.generation == {generation}\n    effect: allow\n    reason: policy {generation}\n"
        );
        std::fs::write(data.join("gen.yaml"), policy).unwrap();
        let users = format!(
            r#"{{"version":1,"users":[{{"id":"alice","attributes":{{"generation":{generation}}}}}],"groups":[],"apps":[],"entitlements":[],"accounts":[],"grants":[]}}"#
        );
        std::fs::write(data.join("users.json"), users).unwrap();
        let tmp = cm.join("..data_tmp");
        symlink(format!("..{name}"), &tmp).unwrap();
        std::fs::rename(&tmp, cm.join("..data")).unwrap();
    }

    /// A ConfigMap that keeps swapping between two generations while snapshots are built:
    /// every snapshot that builds is one generation's, policy and identity together, never a
    /// mix (a mix has a revision of its own).
    #[test]
    fn a_configmap_swap_during_a_build_never_mixes_generations() {
        let dir = tempfile::tempdir().unwrap();
        let cm = dir.path().join("cm");
        std::fs::create_dir(&cm).unwrap();
        publish(&cm, "first-1", 1);
        symlink("..data/gen.yaml", cm.join("gen.yaml")).unwrap();
        symlink("..data/users.json", cm.join("users.json")).unwrap();
        let sources = Sources {
            policy_dir: cm.clone(),
            identity_file: Some(cm.join("users.json")),
            hooks: HookSources::default(),
            search: crate::config::Search::default(),
            scim: None,
        };
        let env = cel::Env::new();
        let mut pure = vec![Snapshot::build(&sources, &env).unwrap().revision];
        publish(&cm, "first-2", 2);
        pure.push(Snapshot::build(&sources, &env).unwrap().revision);

        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, cm) = (stop.clone(), cm.clone());
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let mut previous = "first-2".to_owned();
                // Bounded: until told, or 20 s. Each update is a new directory, the old one
                // deleted after the swap.
                for i in 0u32.. {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(20) {
                        break;
                    }
                    let name = format!("v{i}");
                    publish(&cm, &name, 1 + i % 2);
                    std::fs::remove_dir_all(cm.join(format!("..{previous}"))).unwrap();
                    previous = name;
                    std::thread::sleep(Duration::from_micros(300));
                }
            })
        };
        let (mut built, mut unsettled) = (0, 0);
        for _ in 0..400 {
            match Snapshot::build(&sources, &env) {
                Ok(snapshot) => {
                    assert!(pure.contains(&snapshot.revision), "a snapshot mixed two generations: {}", snapshot.revision);
                    built += 1;
                }
                Err(BuildError::Unsettled(_)) => unsettled += 1,
                // A read through a link that moved on mid-build; the next build settles.
                Err(_) => {}
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(built > 0, "no build settled ({unsettled} unsettled)");
    }
}

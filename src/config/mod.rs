//! Validated configuration: every limit with a documented default, paths resolved against the
//! config file's directory, and `VERDICT_*` environment overrides.
//!
//! Loading is two-phase (raw TOML → [`Config`]). Neither phase compiles policies, binds ports or
//! spawns tasks; `verdict check` and `verdict serve` share it.

mod error;
mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{Error, Problem};
pub use raw::RawConfig;

use crate::decision_log::Durability;

/// Default decision listener address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8180";
/// Default admin listener address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8181";
/// Default largest request body: 1 MiB, far above any AuthZEN request.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
/// Default time to receive the request head: slow-loris clients are cut off after it.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time to receive the whole body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deepest JSON nesting accepted (AuthZEN requests need about 6).
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// Default most connections served at once; further clients wait in the accept backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Default most items in one `/access/v1/evaluations` request.
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 1000;
/// Default decision log file.
pub const DEFAULT_DECISION_LOG: &str = "decisions.log";
/// Default policy directory.
pub const DEFAULT_POLICY_DIR: &str = "policies";
/// Default identity snapshot.
pub const DEFAULT_IDENTITY_FILE: &str = "identity/fixture.json";
/// Default hook directory.
pub const DEFAULT_HOOK_DIR: &str = "hooks";
/// Default hook state directory (every deployed version).
pub const DEFAULT_HOOK_STATE_DIR: &str = ".verdict/hooks";
/// Default hook calls queued before new calls fail fast with 503.
pub const DEFAULT_HOOK_QUEUE_CAPACITY: usize = 1024;
/// Default quiet time after a file event before reloading.
pub const DEFAULT_RELOAD_DEBOUNCE: Duration = Duration::from_millis(50);

/// The validated configuration of one Verdict process.
#[derive(Debug, Clone)]
pub struct Config {
    /// The decision listener.
    pub server: Server,
    /// The admin listener.
    pub admin: Admin,
    /// Policy directory.
    pub policy_dir: PathBuf,
    /// Identity snapshot file, if any.
    pub identity_file: Option<PathBuf>,
    /// SCIM upstream for users and groups, if any.
    pub scim: Option<Scim>,
    /// Decision log settings.
    pub decision_log: crate::decision_log::Config,
    /// Reload settings.
    pub reload: Reload,
    /// Hook settings.
    pub hooks: Hooks,
    /// AuthZEN search settings.
    pub search: Search,
}

/// `[identity.scim]`: a SCIM 2.0 service provider that owns users and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scim {
    /// Base URL (`/Users` and `/Groups` are appended); `https://` or `http://`.
    pub base_url: String,
    /// PEM certificates trusted for an `https` upstream besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Secret holding the bearer token, if the upstream wants one.
    pub token_secret: Option<String>,
    /// Time between full syncs.
    pub interval: Duration,
    /// Bound on one SCIM request.
    pub timeout: Duration,
    /// Resources asked for per page.
    pub page_size: usize,
    /// How file users are joined to SCIM users, tried in order.
    pub match_rules: Vec<crate::identity::MatchRule>,
    /// First retry delay after a failure.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Whether stale data (upstream failing) still counts as ready.
    pub stale_is_ready: bool,
    /// Read-through lookups for subjects missing from the index.
    pub read_through: bool,
    /// Lifetime of a read-through hit.
    pub cache_ttl: Duration,
    /// Lifetime of a read-through miss.
    pub negative_ttl: Duration,
    /// Most read-through entries kept.
    pub cache_capacity: u64,
}

/// Default time between full SCIM syncs.
pub const DEFAULT_SCIM_INTERVAL: Duration = Duration::from_secs(300);
/// Default bound on one SCIM request.
pub const DEFAULT_SCIM_TIMEOUT: Duration = Duration::from_secs(30);
/// Default first retry delay after a failed sync.
pub const DEFAULT_SCIM_RETRY_MIN: Duration = Duration::from_secs(1);
/// Default longest retry delay.
pub const DEFAULT_SCIM_RETRY_MAX: Duration = Duration::from_secs(60);
/// Default lifetime of a read-through hit.
pub const DEFAULT_SCIM_CACHE_TTL: Duration = Duration::from_secs(60);
/// Default lifetime of a read-through miss: short, so a user created upstream is seen soon.
pub const DEFAULT_SCIM_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Default most read-through entries kept.
pub const DEFAULT_SCIM_CACHE_CAPACITY: u64 = 10_000;

/// What AuthZEN search can enumerate.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Subject types whose subjects are the identity users.
    pub subject_types: Vec<String>,
    /// Resource collections.
    pub collections: Vec<Collection>,
}

/// One resource collection.
#[derive(Debug, Clone)]
pub struct Collection {
    /// Resource type.
    pub resource_type: String,
    /// JSON file of records.
    pub file: PathBuf,
    /// Id member.
    pub id_field: String,
}

/// Hook pool and per-hook settings.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// Directory of `*.ts` hooks.
    pub dir: PathBuf,
    /// Directory keeping every deployed version.
    pub state_dir: PathBuf,
    /// JS worker threads.
    pub workers: usize,
    /// Queue capacity in front of the workers.
    pub queue_capacity: usize,
    /// Secret files directory, if any.
    pub secrets_dir: Option<PathBuf>,
    /// `[hook.NAME]` tables; hooks without one get the defaults.
    pub settings: std::collections::BTreeMap<String, HookSettings>,
}

/// The settings of one hook.
#[derive(Debug, Clone)]
pub struct HookSettings {
    /// Deadline of one call.
    pub deadline: Duration,
    /// Memory limit.
    pub memory_bytes: usize,
    /// Stack limit.
    pub stack_bytes: usize,
    /// Largest result.
    pub max_output_bytes: usize,
    /// A fresh context for every call.
    pub per_call: bool,
    /// Hosts `sdk.fetch` may reach.
    pub allowed_hosts: Vec<String>,
    /// PEM certificates `sdk.fetch` trusts for `https` besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Timeout of one fetch.
    pub fetch_timeout: Duration,
    /// Largest fetch response.
    pub max_response_bytes: usize,
    /// GET cache lifetime.
    pub cache_ttl: Option<Duration>,
    /// Declared secret names.
    pub secrets: Vec<String>,
    /// `sdk.config`.
    pub config: serde_json::Value,
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            deadline: crate::hooks::DEFAULT_DEADLINE,
            memory_bytes: crate::hooks::DEFAULT_MEMORY_BYTES,
            stack_bytes: crate::hooks::DEFAULT_STACK_BYTES,
            max_output_bytes: crate::hooks::DEFAULT_MAX_OUTPUT_BYTES,
            per_call: false,
            allowed_hosts: Vec::new(),
            ca_file: None,
            fetch_timeout: crate::hooks::DEFAULT_FETCH_TIMEOUT,
            max_response_bytes: crate::hooks::DEFAULT_MAX_RESPONSE_BYTES,
            cache_ttl: None,
            secrets: Vec::new(),
            config: serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

/// Decision listener settings.
#[derive(Debug, Clone)]
pub struct Server {
    /// Bind address.
    pub listen: SocketAddr,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Time to receive the request head.
    pub header_read_timeout: Duration,
    /// Time to receive the body.
    pub body_read_timeout: Duration,
    /// Deepest JSON nesting.
    pub max_json_depth: usize,
    /// Most connections at once.
    pub max_connections: usize,
    /// Drain time at shutdown.
    pub shutdown_grace_period: Duration,
    /// Most items in one batch.
    pub max_batch_items: usize,
    /// TLS, when configured.
    pub tls: Option<Tls>,
}

/// TLS files.
#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates; `Some` turns on mTLS.
    pub client_ca: Option<PathBuf>,
}

/// Admin listener settings.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Bind address; `None` disables the listener.
    pub listen: Option<SocketAddr>,
    /// Bearer token, required for a non-loopback address.
    pub token: Option<String>,
}

/// Reload settings.
#[derive(Debug, Clone)]
pub struct Reload {
    /// Watch files for changes.
    pub watch: bool,
    /// Quiet time after the last event.
    pub debounce: Duration,
}

/// A source of `VERDICT_*` variables, so tests can pass a map instead of the process environment.
pub trait Strings {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy)]
pub struct Env;

// === impl Env ===

impl Strings for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Strings for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// Environment overrides: variable name → dotted TOML key.
const ENV_KEYS: &[(&str, &str)] = &[
    ("VERDICT_LISTEN", "server.listen"),
    ("VERDICT_MAX_BODY_BYTES", "server.max_body_bytes"),
    ("VERDICT_HEADER_READ_TIMEOUT_MS", "server.header_read_timeout_ms"),
    ("VERDICT_BODY_READ_TIMEOUT_MS", "server.body_read_timeout_ms"),
    ("VERDICT_MAX_JSON_DEPTH", "server.max_json_depth"),
    ("VERDICT_MAX_CONNECTIONS", "server.max_connections"),
    ("VERDICT_SHUTDOWN_GRACE_PERIOD_MS", "server.shutdown_grace_period_ms"),
    ("VERDICT_MAX_BATCH_ITEMS", "server.max_batch_items"),
    ("VERDICT_ADMIN_LISTEN", "admin.listen"),
    ("VERDICT_ADMIN_TOKEN", "admin.token"),
    ("VERDICT_POLICY_DIR", "policies.dir"),
    ("VERDICT_IDENTITY_FILE", "identity.file"),
    ("VERDICT_SCIM_BASE_URL", "identity.scim.base_url"),
    ("VERDICT_DECISION_LOG", "decision_log.path"),
    ("VERDICT_DECISION_LOG_DURABILITY", "decision_log.durability"),
    ("VERDICT_DECISION_LOG_MAX_BYTES", "decision_log.max_bytes"),
    ("VERDICT_DECISION_LOG_MAX_FILES", "decision_log.max_files"),
    ("VERDICT_RELOAD_WATCH", "reload.watch"),
    ("VERDICT_RELOAD_DEBOUNCE_MS", "reload.debounce_ms"),
    ("VERDICT_HOOK_DIR", "hooks.dir"),
    ("VERDICT_HOOK_STATE_DIR", "hooks.state_dir"),
    ("VERDICT_HOOK_WORKERS", "hooks.workers"),
    ("VERDICT_SECRETS_DIR", "hooks.secrets_dir"),
];

// === impl Config ===

impl Config {
    /// Reads `path` (or the defaults when `None`), applies environment overrides, and validates.
    ///
    /// Relative paths in the file are resolved against the file's directory; without a file,
    /// against the current directory.
    pub fn load(path: Option<&Path>, env: &dyn Strings) -> Result<Config, Error> {
        Config::load_with(path, env, &[])
    }

    /// Like [`Config::load`], with command-line overrides (dotted key, value) applied last.
    pub fn load_with(path: Option<&Path>, env: &dyn Strings, overrides: &[(&str, String)]) -> Result<Config, Error> {
        let (text, base, source_name) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|cause| Error::Read {
                    path: p.to_path_buf(),
                    cause,
                })?;
                let base = p.parent().map(Path::to_path_buf).unwrap_or_default();
                (text, base, p.display().to_string())
            }
            None => (String::new(), PathBuf::new(), "defaults".to_owned()),
        };
        let parse_path = path.map(Path::to_path_buf).unwrap_or_default();
        // Parsing the text as written first gives unknown keys and type errors their line.
        toml::from_str::<RawConfig>(&text)
            .map_err(|e| Error::Parse { path: parse_path.clone(), message: e.to_string() })?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| Error::Parse {
            path: parse_path.clone(),
            message: e.to_string(),
        })?;
        for (var, key) in ENV_KEYS {
            if let Some(value) = env.get(var) {
                set_key(&mut table, key, value);
            }
        }
        for (key, value) in overrides {
            set_key(&mut table, key, value.clone());
        }
        let raw: RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Parse { path: parse_path, message: e.to_string() })?;
        Config::from_raw(raw, &base, &source_name)
    }

    /// Checks every value of `raw` and fills in defaults; reports all problems together.
    pub fn from_raw(raw: RawConfig, base: &Path, source_name: &str) -> Result<Config, Error> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(Problem::Invalid { key: key.to_owned(), message });
        };
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
        };
        // A `ca_file` resolved like every path, and checked now: a missing or empty file is a
        // config error naming its key, not a failure at the first https request.
        let checked_ca_file = |p: Option<&str>, key: &str, bad: &mut dyn FnMut(&str, String)| {
            let path = p.map(resolve)?;
            if let Err(e) = crate::tls_client::config(Some(&path)) {
                bad(key, e.to_string());
            }
            Some(path)
        };

        let s = raw.server;
        let listen = parse_addr(s.listen.as_deref().unwrap_or(DEFAULT_LISTEN))
            .unwrap_or_else(|m| {
                bad("server.listen", m);
                fallback_addr()
            });
        let positive = |v: Option<u64>, default: u64, key: &str, bad: &mut dyn FnMut(&str, String)| {
            match v {
                Some(0) => {
                    bad(key, "must be greater than 0".to_owned());
                    default
                }
                Some(v) => v,
                None => default,
            }
        };
        let max_body_bytes = positive(s.max_body_bytes, DEFAULT_MAX_BODY_BYTES, "server.max_body_bytes", &mut bad);
        let header_read_timeout = Duration::from_millis(positive(
            s.header_read_timeout_ms,
            millis(DEFAULT_HEADER_READ_TIMEOUT),
            "server.header_read_timeout_ms",
            &mut bad,
        ));
        let body_read_timeout = Duration::from_millis(positive(
            s.body_read_timeout_ms,
            millis(DEFAULT_BODY_READ_TIMEOUT),
            "server.body_read_timeout_ms",
            &mut bad,
        ));
        let max_json_depth =
            positive(s.max_json_depth, DEFAULT_MAX_JSON_DEPTH as u64, "server.max_json_depth", &mut bad);
        let max_connections =
            positive(s.max_connections, DEFAULT_MAX_CONNECTIONS as u64, "server.max_connections", &mut bad);
        let max_batch_items =
            positive(s.max_batch_items, DEFAULT_MAX_BATCH_ITEMS as u64, "server.max_batch_items", &mut bad);
        let shutdown_grace_period = Duration::from_millis(
            s.shutdown_grace_period_ms.unwrap_or(millis(DEFAULT_SHUTDOWN_GRACE_PERIOD)),
        );
        let tls = match s.tls {
            None => None,
            Some(t) => match (t.cert, t.key) {
                (Some(cert), Some(key)) => Some(Tls {
                    cert: resolve(&cert),
                    key: resolve(&key),
                    client_ca: t.client_ca.as_deref().map(resolve),
                }),
                _ => {
                    bad("server.tls", "needs both `cert` and `key`".to_owned());
                    None
                }
            },
        };

        let a = raw.admin;
        let admin_listen = match a.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN) {
            "" => None,
            addr => match parse_addr(addr) {
                Ok(addr) => Some(addr),
                Err(m) => {
                    bad("admin.listen", m);
                    None
                }
            },
        };
        let token = a.token.filter(|t| !t.is_empty());
        if let Some(addr) = admin_listen
            && !addr.ip().is_loopback() && token.is_none() {
                bad(
                    "admin.listen",
                    format!("`{addr}` is not a loopback address; set `admin.token` to expose the admin API"),
                );
            }

        let l = raw.decision_log;
        let durability = match l.durability.as_deref().unwrap_or("write") {
            "write" => Durability::Write,
            "fsync" => Durability::Fsync,
            other => {
                bad("decision_log.durability", format!("`{other}` is not one of `write`, `fsync`"));
                Durability::Write
            }
        };
        let queue_capacity = positive(
            l.queue_capacity,
            crate::decision_log::DEFAULT_QUEUE_CAPACITY as u64,
            "decision_log.queue_capacity",
            &mut bad,
        );
        let decision_log = crate::decision_log::Config {
            path: resolve(l.path.as_deref().unwrap_or(DEFAULT_DECISION_LOG)),
            durability,
            max_bytes: l.max_bytes.unwrap_or(crate::decision_log::DEFAULT_MAX_BYTES),
            max_files: to_usize(l.max_files.unwrap_or(crate::decision_log::DEFAULT_MAX_FILES as u64)),
            queue_capacity: to_usize(queue_capacity),
            enqueue_timeout: l
                .enqueue_timeout_ms
                .map_or(crate::decision_log::DEFAULT_ENQUEUE_TIMEOUT, Duration::from_millis),
        };

        let policy_dir = resolve(raw.policies.dir.as_deref().unwrap_or(DEFAULT_POLICY_DIR));
        let identity_file = match raw.identity.file.as_deref() {
            Some("") => None,
            Some(f) => Some(resolve(f)),
            None => Some(resolve(DEFAULT_IDENTITY_FILE)),
        };
        let scim = raw.identity.scim.map(|r| {
            let base_url = r.base_url.unwrap_or_default();
            if base_url.is_empty() {
                bad("identity.scim.base_url", "is required (e.g. `http://127.0.0.1:8080/v2`)".to_owned());
            } else if !base_url.starts_with("http://") && !base_url.starts_with("https://") {
                bad("identity.scim.base_url", format!("`{base_url}`: only `https://` and `http://` upstreams are supported"));
            }
            let ca_file = checked_ca_file(r.ca_file.as_deref(), "identity.scim.ca_file", &mut bad);
            if let Some(s) = &r.token_secret
                && (s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            {
                bad("identity.scim.token_secret", format!("`{s}` is not a secret name (letters, digits, `_`)"));
            }
            let match_rules = match r.match_rules {
                None => crate::identity::MatchRule::DEFAULT.to_vec(),
                Some(names) => names
                    .iter()
                    .filter_map(|n| {
                        crate::identity::MatchRule::parse(n)
                            .map_err(|m| bad("identity.scim.match", m))
                            .ok()
                    })
                    .collect(),
            };
            let ms = |v: Option<u64>, d: Duration, key: &str, bad: &mut dyn FnMut(&str, String)| {
                Duration::from_millis(positive(v, u64::try_from(d.as_millis()).unwrap_or(u64::MAX), key, bad))
            };
            let retry_min = ms(r.retry_min_ms, DEFAULT_SCIM_RETRY_MIN, "identity.scim.retry_min_ms", &mut bad);
            let retry_max = ms(r.retry_max_ms, DEFAULT_SCIM_RETRY_MAX, "identity.scim.retry_max_ms", &mut bad);
            if retry_max < retry_min {
                bad("identity.scim.retry_max_ms", "must not be less than `retry_min_ms`".to_owned());
            }
            Scim {
                base_url,
                ca_file,
                token_secret: r.token_secret,
                interval: ms(r.interval_ms, DEFAULT_SCIM_INTERVAL, "identity.scim.interval_ms", &mut bad),
                timeout: ms(r.timeout_ms, DEFAULT_SCIM_TIMEOUT, "identity.scim.timeout_ms", &mut bad),
                page_size: to_usize(positive(r.page_size, 100, "identity.scim.page_size", &mut bad)),
                match_rules,
                retry_min,
                retry_max,
                stale_is_ready: r.stale_is_ready.unwrap_or(true),
                read_through: r.read_through.unwrap_or(true),
                cache_ttl: ms(r.cache_ttl_ms, DEFAULT_SCIM_CACHE_TTL, "identity.scim.cache_ttl_ms", &mut bad),
                negative_ttl: ms(r.negative_ttl_ms, DEFAULT_SCIM_NEGATIVE_TTL, "identity.scim.negative_ttl_ms", &mut bad),
                cache_capacity: positive(r.cache_capacity, DEFAULT_SCIM_CACHE_CAPACITY, "identity.scim.cache_capacity", &mut bad),
            }
        });
        let reload = Reload {
            watch: raw.reload.watch.unwrap_or(true),
            debounce: raw.reload.debounce_ms.map_or(DEFAULT_RELOAD_DEBOUNCE, Duration::from_millis),
        };

        let h = raw.hooks;
        let mut settings = std::collections::BTreeMap::new();
        for (name, r) in raw.hook {
            let key = |k: &str| format!("hook.{name}.{k}");
            if !crate::hookstate::valid_name(&name) {
                bad(&format!("hook.{name}"), "hook names use letters, digits, `-` and `_`".to_owned());
            }
            let d = HookSettings::default();
            let per_call = match r.isolation.as_deref() {
                None | Some("pooled") => false,
                Some("per-call") => true,
                Some(other) => {
                    bad(&key("isolation"), format!("`{other}` is not one of `pooled`, `per-call`"));
                    false
                }
            };
            let mut secrets = r.secrets.unwrap_or_default();
            for s in &secrets {
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    bad(&key("secrets"), format!("`{s}` is not a secret name (letters, digits, `_`)"));
                }
            }
            secrets.sort();
            secrets.dedup();
            let config = match r.config {
                None => d.config.clone(),
                Some(t) => serde_json::to_value(t).unwrap_or_else(|e| {
                    bad(&key("config"), e.to_string());
                    serde_json::Value::Null
                }),
            };
            let ca_file = checked_ca_file(r.ca_file.as_deref(), &key("ca_file"), &mut bad);
            settings.insert(
                name.clone(),
                HookSettings {
                    deadline: r.deadline_ms.map_or(d.deadline, Duration::from_millis),
                    memory_bytes: r.memory_mb.map_or(d.memory_bytes, |m| to_usize(m.saturating_mul(1 << 20))),
                    stack_bytes: r.stack_kb.map_or(d.stack_bytes, |k| to_usize(k.saturating_mul(1 << 10))),
                    max_output_bytes: r.max_output_bytes.map_or(d.max_output_bytes, to_usize),
                    per_call,
                    allowed_hosts: r.allowed_hosts.unwrap_or_default(),
                    ca_file,
                    fetch_timeout: r.fetch_timeout_ms.map_or(d.fetch_timeout, Duration::from_millis),
                    max_response_bytes: r.max_response_bytes.map_or(d.max_response_bytes, to_usize),
                    cache_ttl: r.cache_ttl_ms.filter(|t| *t > 0).map(Duration::from_millis),
                    secrets,
                    config,
                },
            );
        }
        let workers = match h.workers {
            None | Some(0) => std::thread::available_parallelism().map_or(2, usize::from),
            Some(n) => to_usize(n),
        };
        let hooks = Hooks {
            dir: resolve(h.dir.as_deref().unwrap_or(DEFAULT_HOOK_DIR)),
            state_dir: resolve(h.state_dir.as_deref().unwrap_or(DEFAULT_HOOK_STATE_DIR)),
            workers,
            queue_capacity: to_usize(positive(
                h.queue_capacity,
                DEFAULT_HOOK_QUEUE_CAPACITY as u64,
                "hooks.queue_capacity",
                &mut bad,
            )),
            secrets_dir: h.secrets_dir.as_deref().map(resolve),
            settings,
        };

        let search = Search {
            subject_types: raw.search.subject_types.unwrap_or_else(|| vec!["user".to_owned()]),
            collections: raw
                .search
                .collections
                .into_iter()
                .map(|c| Collection {
                    resource_type: c.resource_type,
                    file: resolve(&c.file),
                    id_field: c.id_field.unwrap_or_else(|| "id".to_owned()),
                })
                .collect(),
        };

        if !problems.is_empty() {
            return Err(Error::Invalid { source_name: source_name.to_owned(), problems });
        }
        Ok(Config {
            server: Server {
                listen,
                max_body_bytes,
                header_read_timeout,
                body_read_timeout,
                max_json_depth: to_usize(max_json_depth),
                max_connections: to_usize(max_connections),
                shutdown_grace_period,
                max_batch_items: to_usize(max_batch_items),
                tls,
            },
            admin: Admin { listen: admin_listen, token },
            policy_dir,
            identity_file,
            scim,
            decision_log,
            reload,
            hooks,
            search,
        })
    }
}

/// Writes an override into the TOML table at its dotted key; numbers and booleans are parsed as
/// TOML literals so `VERDICT_MAX_CONNECTIONS=10` is an integer.
fn set_key(table: &mut toml::Table, key: &str, value: String) {
    const STRING_KEYS: &[&str] =
        &["listen", "token", "dir", "file", "path", "durability", "state_dir", "secrets_dir", "base_url"];
    let last = key.rsplit('.').next().unwrap_or(key);
    let mut literal = Some(if STRING_KEYS.contains(&last) {
        toml::Value::String(value)
    } else {
        value
            .parse::<i64>()
            .map(toml::Value::Integer)
            .or_else(|_| value.parse::<bool>().map(toml::Value::Boolean))
            .unwrap_or(toml::Value::String(value))
    });
    let mut node = table;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            if let Some(l) = literal.take() {
                node.insert(part.to_owned(), l);
            }
            return;
        }
        let entry = node.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry {
            toml::Value::Table(t) => node = t,
            _ => return,
        }
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("`{s}` is not an address like 127.0.0.1:8180: {e}"))
}

fn fallback_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &HashMap::new()).unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn env_overrides_file_values() {
        let env: HashMap<String, String> = [
            ("VERDICT_LISTEN".to_owned(), "127.0.0.1:9999".to_owned()),
            ("VERDICT_MAX_CONNECTIONS".to_owned(), "7".to_owned()),
        ]
        .into();
        let c = Config::load(None, &env).unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.server.max_connections, 7);
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.toml");
        std::fs::write(
            &p,
            "[server]\nlisten = \"nope\"\nmax_body_bytes = 0\n[admin]\nlisten = \"0.0.0.0:9\"\n[decision_log]\ndurability = \"maybe\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&p), &HashMap::new()).unwrap_err().to_string();
        for needle in ["server.listen", "server.max_body_bytes", "admin.listen", "decision_log.durability"] {
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn scim_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.toml");
        std::fs::write(
            &p,
            "[identity.scim]\nbase_url = \"ldap://idp.example/scim/v2\"\ntoken_secret = \"bad name\"\n\
             ca_file = \"missing-ca.pem\"\n\
             match = [\"email\", \"phone\"]\nretry_min_ms = 5000\nretry_max_ms = 10\ninterval_ms = 0\n",
        )
        .unwrap();
        let err = Config::load(Some(&p), &HashMap::new()).unwrap_err().to_string();
        for needle in [
            "identity.scim.base_url",
            "identity.scim.ca_file",
            "missing-ca.pem",
            "identity.scim.token_secret",
            "`phone`",
            "identity.scim.retry_max_ms",
            "identity.scim.interval_ms",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        std::fs::write(&p, "[identity.scim]\nbase_url = \"https://idp.example/v2\"\nmatch = [\"username\"]\n").unwrap();
        let c = Config::load(Some(&p), &HashMap::new()).unwrap();
        let scim = c.scim.unwrap();
        assert_eq!((scim.base_url.as_str(), scim.ca_file), ("https://idp.example/v2", None));
        assert_eq!(scim.match_rules, [crate::identity::MatchRule::Username]);
        assert_eq!(scim.interval, DEFAULT_SCIM_INTERVAL);
        assert!(scim.stale_is_ready && scim.read_through);
    }

    #[test]
    fn unknown_keys_are_rejected_with_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.toml");
        std::fs::write(&p, "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap();
        let err = Config::load(Some(&p), &HashMap::new()).unwrap_err().to_string();
        assert!(err.contains("lisen") && err.contains("line 3"), "{err}");
    }
}

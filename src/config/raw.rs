//! The configuration as users write it: one TOML file, every field optional.
//!
//! Nothing here checks values or fills in defaults; `Config::from_raw` does that in one pass so
//! that `verdict check` can print every problem at once.

use serde::Deserialize;

/// The whole TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The decision listener.
    #[serde(default)]
    pub server: RawServer,
    /// The admin listener.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Where policies come from.
    #[serde(default)]
    pub policies: RawPolicies,
    /// Where identity data comes from.
    #[serde(default)]
    pub identity: RawIdentity,
    /// The decision log.
    #[serde(default)]
    pub decision_log: RawDecisionLog,
    /// How reloads are triggered.
    #[serde(default)]
    pub reload: RawReload,
    /// The hook pool and where hooks come from.
    #[serde(default)]
    pub hooks: RawHooks,
    /// Per-hook settings, `[hook.NAME]`.
    #[serde(default)]
    pub hook: std::collections::BTreeMap<String, RawHook>,
    /// AuthZEN search: which subjects and resources can be enumerated.
    #[serde(default)]
    pub search: RawSearch,
}

/// `[search]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSearch {
    /// AuthZEN subject types whose subjects are the identity snapshot's users.
    pub subject_types: Option<Vec<String>>,
    /// Resource collections, `[[search.collections]]`.
    #[serde(default)]
    pub collections: Vec<RawCollection>,
}

/// `[[search.collections]]`: a JSON file of records of one resource type.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollection {
    /// The AuthZEN resource type of the records.
    pub resource_type: String,
    /// JSON file: an array of objects.
    pub file: String,
    /// Member holding each record's id (default `id`; numbers become strings).
    pub id_field: Option<String>,
}

/// `[hooks]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHooks {
    /// Directory of `*.ts` hooks.
    pub dir: Option<String>,
    /// Directory keeping every deployed hook version.
    pub state_dir: Option<String>,
    /// JS worker threads; 0 means one per core.
    pub workers: Option<u64>,
    /// Hook calls queued before new ones fail fast with 503.
    pub queue_capacity: Option<u64>,
    /// Directory of secret files (a Kubernetes secret mount); `VERDICT_SECRET_<NAME>` otherwise.
    pub secrets_dir: Option<String>,
}

/// `[hook.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    /// Wall-clock deadline of one call, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Memory limit of the hook's runtime, in MiB.
    pub memory_mb: Option<u64>,
    /// Stack limit, in KiB.
    pub stack_kb: Option<u64>,
    /// Largest result (reason and outputs), in bytes.
    pub max_output_bytes: Option<u64>,
    /// `pooled` (default) or `per-call`.
    pub isolation: Option<String>,
    /// Hosts (`host` or `host:port`) `sdk.fetch` may reach.
    pub allowed_hosts: Option<Vec<String>>,
    /// PEM certificates `sdk.fetch` trusts for `https` besides the built-in roots.
    pub ca_file: Option<String>,
    /// Timeout of one fetch, in milliseconds.
    pub fetch_timeout_ms: Option<u64>,
    /// Largest fetch response, in bytes.
    pub max_response_bytes: Option<u64>,
    /// Cache GET responses for this long, in milliseconds; 0 turns the cache off.
    pub cache_ttl_ms: Option<u64>,
    /// Secret names the hook may read with `sdk.secrets.get`.
    pub secrets: Option<Vec<String>>,
    /// Values the hook sees as `sdk.config`.
    pub config: Option<toml::Table>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address of the decision listener.
    pub listen: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: Option<u64>,
    /// Time a client has to send the request head, in milliseconds.
    pub header_read_timeout_ms: Option<u64>,
    /// Time a client has to send the whole body, in milliseconds.
    pub body_read_timeout_ms: Option<u64>,
    /// Deepest accepted JSON nesting.
    pub max_json_depth: Option<u64>,
    /// Most connections served at once.
    pub max_connections: Option<u64>,
    /// Time in-flight requests get to finish at shutdown, in milliseconds.
    pub shutdown_grace_period_ms: Option<u64>,
    /// Most items in one batch evaluation.
    pub max_batch_items: Option<u64>,
    /// Optional TLS.
    pub tls: Option<RawTls>,
}

/// `[server.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain.
    pub cert: Option<String>,
    /// PEM private key.
    pub key: Option<String>,
    /// PEM bundle of CAs whose client certificates are accepted (mTLS).
    pub client_ca: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener; `""` disables it.
    pub listen: Option<String>,
    /// Bearer token required on every admin request.
    pub token: Option<String>,
}

/// `[policies]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicies {
    /// Directory of `*.yaml` policy files.
    pub dir: Option<String>,
}

/// `[identity]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// Identity snapshot file (JSON).
    pub file: Option<String>,
    /// A SCIM 2.0 service provider that owns users and groups.
    pub scim: Option<RawScim>,
}

/// `[identity.scim]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScim {
    /// Base URL of the SCIM endpoints (`https://host/scim/v2`, or `http://`).
    pub base_url: Option<String>,
    /// PEM certificates trusted for an `https` upstream besides the built-in roots.
    pub ca_file: Option<String>,
    /// Name of the secret holding the bearer token (`VERDICT_SECRET_<NAME>` or the secrets dir).
    pub token_secret: Option<String>,
    /// Time between full syncs, in milliseconds.
    pub interval_ms: Option<u64>,
    /// Bound on one SCIM request, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Resources asked for per page.
    pub page_size: Option<u64>,
    /// How file users are joined to SCIM users, in order: `id`, `external_id`, `email`, `username`.
    #[serde(rename = "match")]
    pub match_rules: Option<Vec<String>>,
    /// First retry delay after a failed sync, in milliseconds (doubles up to `retry_max_ms`).
    pub retry_min_ms: Option<u64>,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: Option<u64>,
    /// Whether `/readyz` says ready while the data is stale (the upstream is failing).
    pub stale_is_ready: Option<bool>,
    /// Read-through lookups of subjects missing from the index: cache lifetime of a hit, ms.
    pub cache_ttl_ms: Option<u64>,
    /// Cache lifetime of a miss (no such user), ms.
    pub negative_ttl_ms: Option<u64>,
    /// Most read-through entries kept.
    pub cache_capacity: Option<u64>,
    /// Turn read-through lookups off (misses wait for the next full sync).
    pub read_through: Option<bool>,
}

/// `[decision_log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecisionLog {
    /// Active log file.
    pub path: Option<String>,
    /// `write` or `fsync`.
    pub durability: Option<String>,
    /// Rotate when the active file reaches this size; 0 never rotates.
    pub max_bytes: Option<u64>,
    /// Rotated files to keep; 0 keeps all.
    pub max_files: Option<u64>,
    /// Records queued for the writer before callers wait.
    pub queue_capacity: Option<u64>,
    /// How long a caller waits for queue space before the request fails with 503.
    pub enqueue_timeout_ms: Option<u64>,
}

/// `[reload]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    /// Watch the policy directory and identity file for changes.
    pub watch: Option<bool>,
    /// Quiet time after the last file event before reloading, in milliseconds.
    pub debounce_ms: Option<u64>,
}

//! Keeping identity data in step with a SCIM upstream: periodic full syncs, freshness, and a
//! read-through cache for subjects the last sync did not know.
//!
//! Where it sits: a [`ScimSource`] is one of the snapshot's sources. It holds the last good
//! SCIM data (users and groups); the snapshot build merges that data with the identity file
//! ([`super::merge`]) and indexes the result. [`run`] fetches everything every
//! `interval`, and when the data changed asks the store to rebuild and swap the snapshot, off
//! the request path. A fetch or build that fails keeps the last good data serving, marks it
//! stale (metric, admin status, readiness if so configured, and the `identity.stale` field of
//! every decision record), and retries with exponential backoff (`retry_min` doubling up to
//! `retry_max`), until a sync succeeds.
//!
//! Between syncs, a subject that is not in the index is looked up upstream through a moka
//! cache (one upstream request per key at a time; hits kept `cache_ttl`, misses kept the
//! short `negative_ttl`). A looked-up user is a principal with its SCIM fields and no
//! groups, since group membership comes only from full syncs. Lookups are skipped while the
//! data is stale so a failing upstream never slows decisions down. The cache never answers
//! "is this username taken": that stays with the complete index.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::scim::{self, Lookup, Paging, ScimClient, ScimConfig};
use super::{Group, User};
use crate::config::Scim as Settings;

/// The longest a read-through lookup may hold up a decision (less if `timeout` is shorter).
const LOOKUP_DEADLINE: Duration = Duration::from_secs(1);

/// The users and groups of one successful full sync.
#[derive(Debug)]
pub struct Synced {
    /// Users, in server order.
    pub users: Vec<User>,
    /// Groups, in server order.
    pub groups: Vec<Group>,
    /// 12 hex digits of the data's hash, for the snapshot's revision.
    pub hash: String,
    /// How the listings were paged.
    pub paging: Paging,
    /// When it was fetched (RFC 3339).
    pub fetched_at: String,
}

/// The SCIM upstream of one process, its last good data and its health.
pub struct ScimSource {
    settings: Settings,
    secrets_dir: Option<std::path::PathBuf>,
    data: ArcSwapOption<Synced>,
    /// True while the upstream is failing (or before the first sync succeeded).
    stale: AtomicBool,
    health: Mutex<Health>,
    /// Time of the last successful sync, as seen by decision records.
    synced_at: ArcSwapOption<String>,
    cache: moka::future::Cache<String, Option<Arc<serde_json::Value>>>,
    counters: Counters,
}

/// Sync outcomes, for the admin status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// When the last sync attempt ended (RFC 3339).
    pub last_attempt: Option<String>,
    /// When a sync last succeeded (RFC 3339).
    pub last_success: Option<String>,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Delay before the next attempt, in milliseconds.
    pub next_attempt_ms: u64,
    /// Whether the last successful sync changed the data.
    pub last_changed: bool,
}

/// Counters copied into the Prometheus registry when it is rendered.
#[derive(Debug, Default)]
pub struct Counters {
    /// Successful syncs.
    pub syncs_ok: AtomicU64,
    /// Failed syncs.
    pub syncs_failed: AtomicU64,
    /// Read-through lookups that found a user (from the cache or upstream).
    pub lookups_found: AtomicU64,
    /// Read-through lookups that found no user.
    pub lookups_not_found: AtomicU64,
    /// Upstream read-through lookups that failed or timed out (cached and counted as not found).
    pub lookups_error: AtomicU64,
    /// Read-through lookups skipped because the data is stale.
    pub lookups_skipped: AtomicU64,
    /// Requests the read-through cache sent upstream.
    pub upstream_lookups: AtomicU64,
}

/// What a sync attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The data had not changed.
    Unchanged,
    /// New data is serving.
    Changed,
}

/// Something that rebuilds the snapshot from new SCIM data and swaps it in, or says why not.
pub trait Apply: Send + Sync + 'static {
    /// Builds with `data` and swaps the snapshot in; on success (and before any other rebuild
    /// can start) calls [`ScimSource::keep`] with `data`.
    fn apply(&self, data: Arc<Synced>) -> Result<(), String>;
}

/// Cache lifetimes: hits and misses expire after different times.
struct Expiry {
    hit: Duration,
    miss: Duration,
}

impl moka::Expiry<String, Option<Arc<serde_json::Value>>> for Expiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Option<Arc<serde_json::Value>>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() { self.hit } else { self.miss })
    }
}

// === impl ScimSource ===

impl ScimSource {
    /// A source that has not synced yet (so it is stale until the first sync succeeds).
    pub fn new(settings: Settings, secrets_dir: Option<std::path::PathBuf>) -> ScimSource {
        let cache = moka::future::Cache::builder()
            .max_capacity(settings.cache_capacity)
            .expire_after(Expiry { hit: settings.cache_ttl, miss: settings.negative_ttl })
            .build();
        ScimSource {
            settings,
            secrets_dir,
            data: ArcSwapOption::empty(),
            stale: AtomicBool::new(true),
            health: Mutex::new(Health::default()),
            synced_at: ArcSwapOption::empty(),
            cache,
            counters: Counters::default(),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The last good data, if a sync ever succeeded.
    pub fn data(&self) -> Option<Arc<Synced>> {
        self.data.load_full()
    }

    /// Makes `data` the last good data; called by the store once a snapshot built with it is
    /// serving, while it still holds its reload lock.
    pub fn keep(&self, data: Arc<Synced>) {
        self.data.store(Some(data));
    }

    /// Whether decisions are being made on data the upstream could not confirm.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// When a sync last succeeded.
    pub fn synced_at(&self) -> Option<String> {
        self.synced_at.load().as_deref().cloned()
    }

    /// Whether `/readyz` should say ready: some data was synced, and it is fresh or stale
    /// data is configured to count.
    pub fn ready(&self) -> bool {
        self.data.load().is_some() && (self.settings.stale_is_ready || !self.is_stale())
    }

    /// Sync outcomes so far.
    pub fn health(&self) -> Health {
        self.health.lock().clone()
    }

    /// Counters for the metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A client with the current token (read on every sync, so a rotated secret is used).
    fn client(&self) -> Result<ScimClient, String> {
        let token = match &self.settings.token_secret {
            None => None,
            Some(name) => Some(crate::reload::secret(name, self.secrets_dir.as_deref()).ok_or_else(|| {
                format!("scim token secret `{name}` is not set (VERDICT_SECRET_{name} or the secrets directory)")
            })?),
        };
        Ok(ScimClient::new(ScimConfig {
            base_url: self.settings.base_url.clone(),
            ca_file: self.settings.ca_file.clone(),
            token,
            page_size: self.settings.page_size,
            timeout: self.settings.timeout,
        }))
    }

    /// One full sync: fetch everything and, if it changed, have `apply` build and swap a
    /// snapshot with it. Failures keep the last good data and mark it stale.
    pub async fn sync(&self, apply: &Arc<dyn Apply>) -> Result<Outcome, String> {
        let result = self.fetch_and_apply(apply).await;
        let now = now_rfc3339();
        let mut health = self.health.lock();
        health.last_attempt = Some(now.clone());
        match &result {
            Ok(outcome) => {
                self.counters.syncs_ok.fetch_add(1, Ordering::Relaxed);
                health.last_success = Some(now.clone());
                health.last_error = None;
                health.consecutive_failures = 0;
                health.last_changed = *outcome == Outcome::Changed;
                self.synced_at.store(Some(Arc::new(now)));
                self.stale.store(false, Ordering::Relaxed);
                // The index now answers for everyone the upstream has; cached lookups would
                // only hide later changes.
                self.cache.invalidate_all();
            }
            Err(e) => {
                self.counters.syncs_failed.fetch_add(1, Ordering::Relaxed);
                health.last_error = Some(e.clone());
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                self.stale.store(true, Ordering::Relaxed);
            }
        }
        health.next_attempt_ms = millis(self.next_delay(health.consecutive_failures));
        result
    }

    async fn fetch_and_apply(&self, apply: &Arc<dyn Apply>) -> Result<Outcome, String> {
        let client = self.client()?;
        let mut fetched = client.fetch_all().await.map_err(|e| e.to_string())?;
        // By id, so a server that lists in no stable order does not look changed every time.
        fetched.users.sort_by(|a, b| a.id.cmp(&b.id));
        fetched.groups.sort_by(|a, b| a.id.cmp(&b.id));
        let hash = hash(&fetched.users, &fetched.groups);
        if self.data.load().as_ref().is_some_and(|d| d.hash == hash) {
            return Ok(Outcome::Unchanged);
        }
        let synced = Arc::new(Synced {
            users: fetched.users,
            groups: fetched.groups,
            hash,
            paging: fetched.paging,
            fetched_at: now_rfc3339(),
        });
        let apply = apply.clone();
        // `apply` keeps `synced` as the last good data itself, under the store's reload lock,
        // so a file reload running at the same time cannot rebuild with the older data after
        // this swap.
        tokio::task::spawn_blocking(move || apply.apply(synced))
            .await
            .map_err(|e| format!("snapshot build task failed: {e}"))??;
        Ok(Outcome::Changed)
    }

    /// The wait before the next sync: the interval after a success, otherwise `retry_min`
    /// doubled per consecutive failure, capped at `retry_max` (and never above the interval).
    pub fn next_delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.settings.interval;
        }
        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.settings
            .retry_min
            .saturating_mul(factor)
            .min(self.settings.retry_max)
            .min(self.settings.interval)
    }

    /// The principal of a subject the index does not know, looked up upstream through the
    /// cache; `None` when the upstream has no such user, read-through is off, or the data is
    /// stale.
    pub async fn read_through(&self, key: &str) -> Option<Arc<serde_json::Value>> {
        if !self.settings.read_through || key.is_empty() {
            return None;
        }
        if self.is_stale() {
            self.counters.lookups_skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // One upstream lookup per key at a time, bounded by LOOKUP_DEADLINE; a failure is
        // cached like a miss (for `negative_ttl`), so a failing upstream is asked once per
        // key and period, not once per request.
        let found = self
            .cache
            .get_with(key.to_owned(), async {
                self.counters.upstream_lookups.fetch_add(1, Ordering::Relaxed);
                let deadline = self.settings.timeout.min(LOOKUP_DEADLINE);
                let result = match tokio::time::timeout(deadline, self.lookup(key)).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {deadline:?}")),
                };
                match result {
                    Ok(user) => user.map(|u| Arc::new(principal(&u))),
                    Err(e) => {
                        self.counters.lookups_error.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, subject = key, "scim read-through lookup failed");
                        None
                    }
                }
            })
            .await;
        if found.is_some() {
            self.counters.lookups_found.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.lookups_not_found.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// A subject key is a SCIM id, a `userName` or an email: by id first (unless it has an
    /// `@`), then `userName`, then email. A filter result counts only if it really has the
    /// key (an upstream that ignores `filter` must not map every subject to its first user).
    async fn lookup(&self, key: &str) -> Result<Option<User>, String> {
        let client = self.client()?;
        let err = |e: scim::Error| e.to_string();
        if !key.contains('@') {
            match client.user(key, None).await {
                Ok(Lookup::Found { value, .. }) if value.id.as_str() == key => return Ok(Some(value)),
                Ok(_) => {}
                // Servers answer an id that is not one of theirs in different ways; a name is
                // still worth a filter query.
                Err(scim::Error::Status { .. }) => {}
                Err(e) => return Err(err(e)),
            }
        }
        let by_name = client.user_by_username(key).await.map_err(err)?;
        if let Some(user) = by_name.filter(|u| u.username.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(key))) {
            return Ok(Some(user));
        }
        if key.contains('@') {
            let by_email = client.user_by_email(key).await.map_err(err)?;
            return Ok(by_email.filter(|u| u.all_emails().any(|e| e.eq_ignore_ascii_case(key))));
        }
        Ok(None)
    }
}

impl std::fmt::Debug for ScimSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimSource")
            .field("base_url", &self.settings.base_url)
            .field("stale", &self.is_stale())
            .field("synced", &self.data.load().as_ref().map(|d| d.hash.clone()))
            .finish_non_exhaustive()
    }
}

/// Syncs every interval (or sooner after failures, with backoff) until `shutdown` fires.
pub async fn run(source: Arc<ScimSource>, apply: Arc<dyn Apply>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let delay = source.next_delay(source.health().consecutive_failures);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        match source.sync(&apply).await {
            Ok(Outcome::Changed) => tracing::info!(base_url = %source.settings.base_url, "scim sync: new identity data serving"),
            Ok(Outcome::Unchanged) => tracing::debug!("scim sync: unchanged"),
            Err(e) => tracing::warn!(
                error = %e,
                retry_in_ms = millis(source.next_delay(source.health().consecutive_failures)),
                "scim sync failed; last good identity data keeps serving, marked stale"
            ),
        }
    }
}

/// A read-through principal: the user's fields, no groups (they come with full syncs).
fn principal(user: &User) -> serde_json::Value {
    let mut v = serde_json::to_value(user).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut v {
        map.insert("groups".to_owned(), serde_json::Value::Array(Vec::new()));
        map.insert("found".to_owned(), serde_json::Value::Bool(true));
        map.insert("source".to_owned(), serde_json::Value::from("scim-lookup"));
    }
    v
}

fn hash(users: &[User], groups: &[Group]) -> String {
    let mut h = Sha256::new();
    if let Ok(bytes) = serde_json::to_vec(&(users, groups)) {
        h.update(bytes);
    }
    let hex = hex::encode(h.finalize());
    hex.get(..12).unwrap_or(&hex).to_owned()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            base_url: "http://127.0.0.1:9/v2".to_owned(),
            ca_file: None,
            token_secret: None,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
            page_size: 100,
            match_rules: crate::identity::MatchRule::DEFAULT.to_vec(),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            stale_is_ready: true,
            read_through: true,
            cache_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            cache_capacity: 100,
        }
    }

    #[test]
    fn backoff_doubles_from_retry_min_up_to_retry_max() {
        let source = ScimSource::new(settings(), None);
        let delays: Vec<u64> = (0..7).map(|n| source.next_delay(n).as_secs()).collect();
        assert_eq!(delays, [30, 1, 2, 4, 8, 10, 10]);
        assert_eq!(source.next_delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn never_synced_is_stale_and_not_ready() {
        let source = ScimSource::new(settings(), None);
        assert!(source.is_stale());
        assert!(!source.ready());
        assert!(source.synced_at().is_none());
    }
}

//! The HTTP client behind `sdk.fetch`: allow-list, timeout, size cap, cancellation and an
//! optional per-hook GET cache.
//!
//! Where it sits: a hook calls `sdk.fetch`; `sdk.rs` turns that into a [`Request`] carrying
//! the call's [`FetchPolicy`], deadline and [`Cancel`] handle, and the future returned by
//! [`Client::fetch`] runs on the worker's current-thread tokio runtime, driven by the
//! QuickJS scheduler while the call awaits it. The answer goes back to JavaScript as JSON
//! text (`{status, headers, body}` or `{error}`).
//!
//! Deliberately small: HTTP/1.1, over TLS for `https://` URLs (trusting the built-in roots
//! and the hook's `ca_file`, see [`crate::tls_client`]), no redirects followed, no cookies.
//! Host names resolve through the system resolver. Connections are kept alive for reuse, per
//! worker thread and target (at most [`MAX_IDLE_PER_TARGET`] idle); an idle connection
//! carries no request, so nothing of a call outlives it.
//!
//! Every request ends by the earlier of its own timeout and the call's cancellation (a call
//! that times out or finishes cancels what it left running), so no host I/O outlives its
//! call. The call's deadline is enforced around the whole call, not here: a fetch still
//! running at the deadline fails the call with a timeout.
//!
//! The cache: one map for the pool, shared by the workers behind a mutex held only to look
//! up or store an entry. Keys include the hook name, the URL and the request headers, so a
//! response fetched with one hook's credentials is never served to another hook. Only
//! successful (2xx) GET responses are stored, each for its hook's `cache_ttl`; the map holds
//! at most [`MAX_CACHE_ENTRIES`], dropping expired entries first, then the oldest.
//!
//! What this module must not do: reach a host that is not allow-listed for the calling
//! hook, read an unbounded body, or block the thread.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::FetchPolicy;

/// Most responses the cache holds, over all hooks.
pub(super) const MAX_CACHE_ENTRIES: usize = 1024;

/// Methods `sdk.fetch` accepts.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Fetch state shared by the pool's workers: the response cache.
#[derive(Debug, Default)]
pub(super) struct Client {
    /// Cache key → stored response. Locked only to look up, store or evict; never across
    /// an await.
    cache: Mutex<HashMap<String, Cached>>,
}

/// One `sdk.fetch`, checked against nothing yet.
pub(super) struct Request {
    /// The calling hook, for the cache key.
    pub(super) hook: Arc<str>,
    /// The URL as the hook gave it.
    pub(super) url: String,
    /// The method as the hook gave it.
    pub(super) method: String,
    /// Request headers, in the hook's order.
    pub(super) headers: Vec<(String, String)>,
    /// Request body.
    pub(super) body: Option<String>,
    /// The hook's fetch policy.
    pub(super) policy: FetchPolicy,
    /// The call's cancellation.
    pub(super) cancel: std::rc::Rc<Cancel>,
}

/// A response as the hook sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Response {
    /// HTTP status.
    status: u16,
    /// Header names (lowercase) → values, repeated headers joined with `, `.
    headers: BTreeMap<String, String>,
    /// The body, as UTF-8 (invalid sequences replaced).
    body: String,
}

/// Cancels the fetches of one call: set when the call ends, awaited by every fetch.
///
/// The worker thread owns it (`Rc`); the call's fetches hold clones. Whoever ends the call
/// (the worker, after a result or a timeout) calls [`Cancel::cancel`]; nothing else does.
#[derive(Debug, Default)]
pub(super) struct Cancel {
    cancelled: Cell<bool>,
    notify: Notify,
}

/// A cached response and its expiry.
#[derive(Debug)]
struct Cached {
    expires: Instant,
    stored: Instant,
    response: Arc<Response>,
}

/// A checked target.
struct Target {
    /// Host as written in the URL (brackets kept for IPv6), lowercase.
    host: String,
    port: u16,
    /// `https`: TLS over the connection.
    tls: bool,
    /// Path and query to send.
    path: String,
}

/// The JSON text handed back to JavaScript for a fetch result.
pub(super) fn to_json(result: Result<Arc<Response>, String>) -> String {
    let value = match result {
        Ok(response) => serde_json::to_value(&*response).unwrap_or(serde_json::Value::Null),
        Err(error) => serde_json::json!({ "error": error }),
    };
    value.to_string()
}

// === impl Client ===

impl Client {
    /// Performs `request` under its policy, deadline and cancellation.
    pub(super) async fn fetch(&self, request: Request) -> Result<Arc<Response>, String> {
        let method = request.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(format!(
                "fetch: method `{}` is not supported",
                request.method
            ));
        }
        let target = check(&request.url, &request.policy)?;
        let key = cache_key(&request, &method);
        if let Some((key, _)) = &key
            && let Some(hit) = self.lookup(key)
        {
            return Ok(hit);
        }
        let cancel = request.cancel.clone();
        let notified = cancel.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if cancel.cancelled.get() {
            return Err(format!(
                "fetch {}: cancelled: the call has ended",
                request.url
            ));
        }
        // The call's deadline is enforced around the whole call; this is the fetch's own.
        let until = Instant::now() + request.policy.timeout;
        let url = request.url.clone();
        let exchange = tokio::time::timeout_at(
            tokio::time::Instant::from_std(until),
            exchange(&target, &method, request),
        );
        let response = tokio::select! {
            biased;
            () = &mut notified => return Err(format!("fetch {url}: cancelled: the call has ended")),
            done = exchange => match done {
                Ok(result) => Arc::new(result.map_err(|e| format!("fetch {url}: {e}"))?),
                Err(_) => return Err(format!("fetch {url}: timed out")),
            },
        };
        if let Some((key, ttl)) = key
            && (200..300).contains(&response.status)
        {
            self.store(key, ttl, response.clone());
        }
        Ok(response)
    }

    /// A fresh cached response for `key`.
    fn lookup(&self, key: &str) -> Option<Arc<Response>> {
        let cache = self.cache.lock();
        cache
            .get(key)
            .filter(|c| c.expires > Instant::now())
            .map(|c| c.response.clone())
    }

    /// Stores `response` under `key` for `ttl`, making room if the cache is full.
    fn store(&self, key: String, ttl: Duration, response: Arc<Response>) {
        let now = Instant::now();
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHE_ENTRIES && !cache.contains_key(&key) {
            cache.retain(|_, c| c.expires > now);
            if cache.len() >= MAX_CACHE_ENTRIES
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, c)| c.stored)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            key,
            Cached {
                expires: now + ttl,
                stored: now,
                response,
            },
        );
    }
}

// === impl Cancel ===

impl Cancel {
    /// Ends every fetch of the call, now and later.
    pub(super) fn cancel(&self) {
        self.cancelled.set(true);
        self.notify.notify_waiters();
    }
}

/// The cache key and TTL of a request, when it may be cached.
fn cache_key(request: &Request, method: &str) -> Option<(String, Duration)> {
    let ttl = request.policy.cache_ttl.filter(|t| !t.is_zero())?;
    if method != "GET" {
        return None;
    }
    let headers = serde_json::to_string(&request.headers).ok()?;
    Some((format!("{}\n{}\n{headers}", request.hook, request.url), ttl))
}

/// Parses `url` and checks it against the allow-list.
fn check(url: &str, policy: &FetchPolicy) -> Result<Target, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("fetch: `{url}` is not a valid URL"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("fetch: `{url}` is not an http or https URL")),
    };
    let default_port = if tls { 443 } else { 80 };
    let host = uri
        .host()
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| format!("fetch: `{url}` has no host"))?;
    let port = uri.port_u16().unwrap_or(default_port);
    let authority = format!("{host}:{port}");
    if !policy
        .allowed_hosts
        .iter()
        .any(|allowed| normalize(allowed, default_port) == authority)
    {
        return Err(format!(
            "fetch: host `{authority}` is not allowed for this hook"
        ));
    }
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok(Target { host, port, tls, path })
}

/// An allow-list entry as `host:port`, lowercase, the URL scheme's default port made explicit
/// (so `api.example` admits `https://api.example` and `http://api.example`).
fn normalize(entry: &str, default_port: u16) -> String {
    let entry = entry.trim().to_ascii_lowercase();
    let has_port = match entry.rfind(']') {
        Some(close) => entry
            .get(close + 1..)
            .is_some_and(|rest| rest.starts_with(':')),
        None => entry.contains(':'),
    };
    if has_port {
        entry
    } else {
        format!("{entry}:{default_port}")
    }
}

/// Idle keep-alive connections kept per target on one worker thread.
const MAX_IDLE_PER_TARGET: usize = 32;

/// An idle connection older than this is closed rather than reused: servers close idle
/// keep-alive connections after a few seconds, and this runtime does not watch idle ones.
const MAX_IDLE: Duration = Duration::from_secs(2);

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Idle connections to one target with the time each went idle, newest last.
type IdleList = Vec<(Instant, Sender)>;

/// What a pooled connection may be reused for: the same host and port, and for TLS the same
/// trust (`ca_file`), so a hook never rides on a connection whose certificate was checked
/// against another hook's CA. A CA file changed on disk applies to new connections; idle ones
/// live at most [`MAX_IDLE`].
type PoolKey = (Option<Option<std::path::PathBuf>>, String, u16);

fn pool_key(target: &Target, ca_file: Option<&std::path::Path>) -> PoolKey {
    let trust = target.tls.then(|| ca_file.map(std::path::Path::to_path_buf));
    (trust, target.host.clone(), target.port)
}

thread_local! {
    /// Idle HTTP/1.1 connections by [`PoolKey`], for this worker thread's runtime (a
    /// connection's task lives on the runtime that made it, so the pool is per thread).
    static IDLE: std::cell::RefCell<HashMap<PoolKey, IdleList>> = std::cell::RefCell::new(HashMap::new());
}

/// An idle connection for `key` that is still open, if the pool has one.
fn take_idle(key: &PoolKey) -> Option<Sender> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(key)?;
        // Newest last: pop until one is fresh and open; older ones are dropped (closed).
        while let Some((since, sender)) = list.pop() {
            if since.elapsed() < MAX_IDLE && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    })
}

/// Returns a connection whose exchange finished to the pool, unless it closed.
fn put_idle(key: PoolKey, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(key).or_default();
        list.retain(|(since, _)| since.elapsed() < MAX_IDLE);
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push((Instant::now(), sender));
        }
    });
}

/// A new HTTP/1.1 connection (TLS for `https`, trusting `ca_file` too); its I/O task runs on
/// this thread's runtime.
async fn connect(target: &Target, ca_file: Option<&std::path::Path>) -> Result<Sender, String> {
    let connect_host = target.host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((connect_host, target.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", target.host, target.port))?;
    let _ = stream.set_nodelay(true);
    let tls = match target.tls {
        false => None,
        true => Some((crate::tls_client::config(ca_file).map_err(|e| format!("tls: {e}"))?, target.host.as_str())),
    };
    crate::tls_client::http1(stream, tls).await.map_err(|e| e.to_string())
}

/// Sends on a pooled connection when there is one (falling back to a new connection if
/// the pooled one turns out closed before the request went out), reads the response within
/// the policy's size cap, and pools the connection again.
async fn exchange(target: &Target, method: &str, request: Request) -> Result<Response, String> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(target.path.as_str())
        .header(http::header::HOST, host_header(target));
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
    let outgoing = builder
        .body(body)
        .map_err(|e| format!("bad request: {e}"))?;
    let limit = request.policy.max_response_bytes;
    let ca_file = request.policy.ca_file.as_deref();
    let key = pool_key(target, ca_file);
    let (sender, response) = match take_idle(&key) {
        Some(mut pooled) => match pooled.try_send_request(outgoing).await {
            Ok(response) => (pooled, response),
            Err(mut failed) => match failed.take_message() {
                // Never sent: safe to send on a fresh connection, whatever the method.
                Some(outgoing) => {
                    let mut fresh = connect(target, ca_file).await?;
                    let response = fresh.send_request(outgoing).await.map_err(|e| format!("request failed: {e}"))?;
                    (fresh, response)
                }
                None => return Err(format!("request failed: {}", failed.into_error())),
            },
        },
        None => {
            let mut fresh = connect(target, ca_file).await?;
            let response = fresh.send_request(outgoing).await.map_err(|e| format!("request failed: {e}"))?;
            (fresh, response)
        }
    };
    let (parts, body) = response.into_parts();
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                format!("response is larger than {limit} bytes")
            } else {
                format!("cannot read the response: {e}")
            }
        })?
        .to_bytes();
    put_idle(key, sender);
    Ok(Response {
        status: parts.status.as_u16(),
        headers: headers_of(&parts.headers),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// The `Host` header: the host with its port unless it is the default.
fn host_header(target: &Target) -> String {
    if target.port == if target.tls { 443 } else { 80 } {
        target.host.clone()
    } else {
        format!("{}:{}", target.host, target.port)
    }
}

/// Response headers as a name → value map.
fn headers_of(headers: &http::HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

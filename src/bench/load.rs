//! The load tasks: one per connection, each a [`Caller`] driven on a schedule by [`drive`].
//!
//! An HTTP caller owns one HTTP/1.1 keep-alive connection (hyper's client `conn` API, no
//! pool), reconnecting only when the connection breaks or the server closes it. The
//! in-process caller parses the body and calls the engine, with or without the decision log.
//! Scheduling, timing and recording are the same for both (see the module doc of `bench`).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::report::{Meta, Tally};
use super::{Bodies, Error, Load, Report};
use crate::config::Config;
use crate::decision::{self, DecisionRequest, Engine, RequestMeta};
use crate::decision_log::{self, DecisionLog};
use crate::metrics::Metrics;
use crate::reload::{Sources, Store};

/// Where HTTP requests go.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The URL as given.
    pub url: String,
    method: http::Method,
    /// `host:port`, for connecting and for the `Host` header.
    authority: String,
    /// `https`: the TLS client configuration, and the host its certificate must name.
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    path: http::uri::PathAndQuery,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Verdict's engine, loaded from a config, driven without HTTP.
#[derive(Debug, Clone)]
pub struct InProcess {
    store: Arc<Store>,
    pool: crate::hooks::Pool,
    /// The engine with its decision log, when the log is measured.
    engine: Option<(Engine, DecisionLog)>,
    /// What is measured, for the report.
    pub measured: String,
}

/// What one call came to.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// An answer with this status, its body read to the end.
    Response(u16),
    /// No answer: the kind of failure.
    Transport(&'static str),
}

/// One connection's (or one in-process caller's) way of making a call.
trait Caller: Send + 'static {
    /// Sends `body` and waits at most `timeout` for the whole answer.
    fn call(&mut self, body: &Bytes, timeout: Duration) -> impl Future<Output = Outcome> + Send;
}

/// When a task sends and records.
#[derive(Debug, Clone, Copy)]
struct Plan {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    /// Open loop: this task's interval between intended sends, and its first send's offset.
    open: Option<(Duration, Duration)>,
    timeout: Duration,
}

/// Shared with the progress printer: answers so far and the latencies since its last line.
struct Live {
    done: AtomicU64,
    interval: Mutex<Histogram<u64>>,
}

// === impl HttpTarget ===

impl HttpTarget {
    /// Parses the URL (`http://host:port/path` or `https://…`), the method and `Name: value`
    /// headers. An `https` server's certificate must chain to the built-in roots or to
    /// `ca_file` (see [`crate::tls_client`]).
    pub fn parse(url: &str, method: &str, headers: &[String], ca_file: Option<&Path>) -> Result<HttpTarget, Error> {
        let bad = |message: &str| Error::Url { url: url.to_owned(), message: message.to_owned() };
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("expected http://HOST:PORT/PATH or https://…")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let tls = match https {
            false => None,
            true => {
                let config = crate::tls_client::config(ca_file).map_err(|e| Error::Settings(e.to_string()))?;
                Some((config, authority.host().to_owned()))
            }
        };
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:{}", authority.host(), if https { 443 } else { 80 }),
        };
        let path = uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::Settings(format!("method `{method}` is not an HTTP method")))?;
        let mut parsed = Vec::with_capacity(headers.len());
        for h in headers {
            let (name, value) = h.split_once(':').ok_or_else(|| Error::Header(h.clone()))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| Error::Header(h.clone()))?;
            let value = HeaderValue::from_str(value.trim()).map_err(|_| Error::Header(h.clone()))?;
            parsed.push((name, value));
        }
        Ok(HttpTarget { url: url.to_owned(), method, authority, tls, path, headers: parsed })
    }

    fn request(&self, body: Bytes) -> Result<http::Request<Full<Bytes>>, http::Error> {
        let mut builder = http::Request::builder().method(self.method.clone()).uri(self.path.clone());
        builder = builder.header(HOST, self.authority.as_str());
        if !self.headers.iter().any(|(n, _)| n == CONTENT_TYPE) {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        for (n, v) in &self.headers {
            builder = builder.header(n, v);
        }
        builder.body(Full::new(body))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.authority).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let tls = self.tls.as_ref().map(|(config, host)| (Arc::clone(config), host.as_str()));
        crate::tls_client::http1(stream, tls).await.map_err(|e| e.to_string())
    }
}

/// Sends one request and returns the status and the body; for checks before a run.
pub async fn http_once(target: &HttpTarget, body: Bytes, timeout: Duration) -> Result<(u16, Bytes), Error> {
    let connect_err = |message: String| Error::Connect { url: target.url.clone(), message };
    let exchange = async {
        let mut sender = target.connect().await?;
        let request = target.request(body).map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| connect_err(format!("no answer within {timeout:?}")))?
        .map_err(connect_err)
}

/// Runs the load against an HTTP endpoint. Fails before any load if it cannot connect.
pub async fn run_http(target: HttpTarget, bodies: Bodies, load: &Load, label: String) -> Result<Report, Error> {
    load.validate()?;
    let target = Arc::new(target);
    match tokio::time::timeout(Duration::from_secs(5), target.connect()).await {
        Ok(Ok(_)) => {}
        Ok(Err(message)) => return Err(Error::Connect { url: target.url.clone(), message }),
        Err(_) => return Err(Error::Connect { url: target.url.clone(), message: "timed out after 5 s".to_owned() }),
    }
    let callers = (0..load.connections).map(|_| HttpCaller { target: target.clone(), sender: None }).collect();
    let tally = run(callers, bodies, load).await;
    Ok(tally.report(Meta { label, target: target.url.clone(), measured: "http".to_owned(), load }))
}

/// Runs the load against the engine in-process.
pub async fn run_in_process(engine: InProcess, bodies: Bodies, load: &Load, label: String) -> Result<Report, Error> {
    load.validate()?;
    let callers = (0..load.connections).map(|_| engine.clone()).collect();
    let tally = run(callers, bodies, load).await;
    if let Some((_, log)) = &engine.engine {
        log.close().await;
    }
    Ok(tally.report(Meta { label, target: "in-process".to_owned(), measured: engine.measured.clone(), load }))
}

/// Spawns one task per caller, prints progress when asked, and merges their tallies.
async fn run<C: Caller>(callers: Vec<C>, bodies: Bodies, load: &Load) -> Tally {
    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let n = callers.len().max(1);
    let per_task = load.rate.map(|r| Duration::from_secs_f64(n as f64 / r).max(Duration::from_nanos(1)));
    let live = load.progress.then(|| {
        Arc::new(Live { done: AtomicU64::new(0), interval: Mutex::new(Tally::histogram()) })
    });
    let bodies = Arc::new(bodies);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, caller) in callers.into_iter().enumerate() {
        let open = per_task.map(|iv| (iv, iv.mul_f64(i as f64 / n as f64)));
        let plan = Plan { start, measure_from, end, open, timeout: load.timeout };
        tasks.spawn(drive(caller, plan, i, bodies.clone(), live.clone()));
    }
    let finished = Arc::new(tokio::sync::Notify::new());
    let printer = live.clone().map(|live| tokio::spawn(progress(live, start, measure_from, finished.clone())));
    let mut total = Tally::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(t) => total.merge(t),
            Err(_) => total.count_kind("task-panicked"),
        }
    }
    // A stored permit: the printer sees it even if it is not waiting right now.
    finished.notify_one();
    if let Some(p) = printer {
        let _ = p.await;
    }
    total
}

/// One task: sends on its schedule until the end of the run, recording what falls in the window.
async fn drive<C: Caller>(mut caller: C, plan: Plan, task: usize, bodies: Arc<Bodies>, live: Option<Arc<Live>>) -> Tally {
    let mut tally = Tally::new();
    let list = bodies.as_slice();
    let mut next = task % list.len().max(1);
    let mut slot: u32 = 0;
    tokio::time::sleep_until(plan.start).await;
    loop {
        let intended = match plan.open {
            Some((interval, phase)) => plan.start + phase + interval.saturating_mul(slot),
            None => Instant::now(),
        };
        if intended >= plan.end {
            break;
        }
        // Only sleep for a time in the future: tokio's timer has millisecond granularity, so
        // even an elapsed deadline would wait for its next tick.
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
        }
        let sent = Instant::now();
        if sent >= plan.end {
            // INVARIANT: only open-loop slots can be late; count those that will never be sent.
            if let Some((interval, _)) = plan.open
                && intended >= plan.measure_from
            {
                let left = (plan.end - intended).as_nanos() / interval.as_nanos().max(1);
                tally.missed += u64::try_from(left).unwrap_or(u64::MAX).saturating_add(1);
            }
            break;
        }
        slot = slot.saturating_add(1);
        let Some(body) = list.get(next) else { break };
        next = (next + 1) % list.len();
        let outcome = caller.call(body, plan.timeout).await;
        let done = Instant::now();
        let from = if plan.open.is_some() { intended } else { sent };
        if from < plan.measure_from {
            continue;
        }
        match outcome {
            Outcome::Response(status) => {
                let nanos = u64::try_from((done - from).as_nanos()).unwrap_or(u64::MAX);
                tally.record(status, nanos);
                if let Some(live) = &live {
                    live.done.fetch_add(1, Ordering::Relaxed);
                    live.interval.lock().saturating_record(nanos);
                }
            }
            Outcome::Transport(kind) => tally.count_kind(kind),
        }
    }
    tally
}

/// Prints `elapsed, req/s, p99` on stderr once a second until the run ends.
async fn progress(live: Arc<Live>, start: Instant, measure_from: Instant, finished: Arc<tokio::sync::Notify>) {
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = 0;
    let terminal = std::io::stderr().is_terminal();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = finished.notified() => break,
        }
        let done = live.done.load(Ordering::Relaxed);
        let p99 = {
            let mut h = live.interval.lock();
            let p = h.value_at_quantile(0.99);
            h.reset();
            p
        };
        let phase = if Instant::now() < measure_from { " (warm-up)" } else { "" };
        let elapsed = start.elapsed().as_secs();
        let line = format!(
            "[{elapsed:>3} s] {:>9} req/s  p99 {}{phase}",
            done.saturating_sub(last),
            super::report::format_us(p99 as f64 / 1000.0)
        );
        last = done;
        if terminal {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
    if terminal {
        eprintln!();
    }
}

/// An HTTP caller: one keep-alive connection, opened on first use and after a failure.
struct HttpCaller {
    target: Arc<HttpTarget>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Caller for HttpCaller {
    async fn call(&mut self, body: &Bytes, timeout: Duration) -> Outcome {
        let result = tokio::time::timeout(timeout, self.exchange(body.clone())).await;
        match result {
            Ok(Ok(status)) => Outcome::Response(status),
            Ok(Err(kind)) => {
                self.sender = None;
                Outcome::Transport(kind)
            }
            Err(_) => {
                self.sender = None;
                Outcome::Transport("timeout")
            }
        }
    }
}

impl HttpCaller {
    async fn exchange(&mut self, body: Bytes) -> Result<u16, &'static str> {
        // A connection the server closed (keep-alive ended) is replaced without an error.
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            self.sender = None;
            match self.target.connect().await {
                Ok(s) => self.sender = Some(s),
                Err(_) => {
                    // Do not spin on a dead endpoint; the run still ends on time.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return Err("connect");
                }
            }
        }
        let Some(sender) = self.sender.as_mut() else { return Err("connect") };
        sender.ready().await.map_err(kind)?;
        let request = self.target.request(body).map_err(|_| "request")?;
        let response = sender.send_request(request).await.map_err(kind)?;
        let status = response.status().as_u16();
        response.into_body().collect().await.map_err(kind)?;
        Ok(status)
    }
}

/// A transport error's kind, for the report.
fn kind(e: hyper::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        "closed"
    } else if e.is_parse() || e.is_parse_status() {
        "parse"
    } else if e.is_body_write_aborted() {
        "body-write"
    } else {
        "io"
    }
}

// === impl InProcess ===

impl InProcess {
    /// Loads the config's policies, identity data and hooks; with `log_dir`, decisions are
    /// also written to `log_dir/decisions.log` (the config's durability) before they count.
    ///
    /// Must run inside a tokio runtime (the decision log and the hook pool start threads).
    pub fn build(config: &Config, log_dir: Option<&Path>) -> Result<InProcess, Error> {
        let setup = |what: &str, e: &dyn std::fmt::Display| Error::Setup(format!("{what}: {e}"));
        let metrics = Arc::new(Metrics::new());
        let sources = Sources::from_config(config, None);
        let store = Arc::new(Store::open(sources, metrics.clone()).map_err(|e| setup("cannot build the snapshot", &e))?);
        let pool = crate::hooks::Pool::spawn(crate::hooks::PoolConfig {
            workers: config.hooks.workers,
            queue_capacity: config.hooks.queue_capacity,
            ..Default::default()
        })
        .map_err(|e| setup("cannot start the hook pool", &e))?;
        let (engine, measured) = match log_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| setup(&format!("cannot create `{}`", dir.display()), &e))?;
                let log_config = decision_log::Config { path: dir.join("decisions.log"), ..config.decision_log.clone() };
                let durability = match log_config.durability {
                    decision_log::Durability::Write => "write",
                    decision_log::Durability::Fsync => "fsync",
                };
                let measured = format!(
                    "in-process: JSON parse + decide + decision log (durability {durability}, {})",
                    log_config.path.display()
                );
                let log = DecisionLog::spawn(log_config).map_err(|e| setup("cannot open the decision log", &e))?;
                let engine = Engine::new(store.clone(), log.clone(), metrics, pool.clone());
                (Some((engine, log)), measured)
            }
            None => (None, "in-process: JSON parse + decide (no decision log)".to_owned()),
        };
        Ok(InProcess { store, pool, engine, measured })
    }
}

impl Caller for InProcess {
    async fn call(&mut self, body: &Bytes, timeout: Duration) -> Outcome {
        // As the server reads a single evaluation.
        let Some(request) = DecisionRequest::from_bytes(body.clone(), usize::MAX).or_else(|| {
            let json = crate::json::parse(body).ok()?;
            DecisionRequest::from_json(json).ok().map(|r| r.with_raw(body.clone()))
        }) else {
            return Outcome::Response(400);
        };
        let work = async {
            match &self.engine {
                Some((engine, _)) => match engine.evaluate(request, &RequestMeta::default()).await {
                    Ok(_) => 200,
                    Err(_) => 503,
                },
                None => {
                    let snapshot = self.store.current();
                    let d = decision::decide(&snapshot, &request, chrono::Utc::now(), Some(&self.pool)).await;
                    if d.overloaded { 503 } else { 200 }
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(status) => Outcome::Response(status),
            Err(_) => Outcome::Transport("timeout"),
        }
    }
}

/// Statuses by count, for the report (non-2xx only).
pub(super) fn errors_by_status(statuses: &BTreeMap<u16, u64>) -> BTreeMap<String, u64> {
    statuses.iter().filter(|(s, _)| !(200..300).contains(*s)).map(|(s, n)| (s.to_string(), *n)).collect()
}

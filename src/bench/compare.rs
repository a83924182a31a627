//! The comparison harness (`verdict bench compare`): Verdict against a floor and its peers,
//! on one machine, in one run.
//!
//! It starts every contender on 127.0.0.1 (ports chosen by the OS), checks with one request
//! that each answers the expected allow, then measures each with the same closed-loop load
//! at each connection count. Repeats are interleaved: every round runs every contender once,
//! the order rotated by one each round, so that drift of the (shared) machine hits all of
//! them alike. Per contender and connection count it reports the median over the rounds of
//! throughput, p50 and p99, and of the server's CPU time per request (utime + stime of the
//! server process from `/proc/PID/stat`, before and after the run, over the requests) and
//! the server's resident memory (`VmRSS`) at the end of the run.
//!
//! Contenders:
//! - `floor`: `verdict bench floor`, a bare hyper server answering `{"decision":true}`.
//! - `verdict-cel`, `verdict-hook`: `verdict serve` on a copy of `examples/provisioning`,
//!   decision log on (durability `write`), with `requests/cel-allow.json` and
//!   `requests/hook-allow.json`.
//! - `verdict-cel-fsync`: the same, a second server with `durability = "fsync"`.
//! - `verdict-cel-mid`: the CEL request on a third server with the 5,000-user / 127,000-grant
//!   identity profile (`verdict identity generate --profile mid`) as its identity file; its
//!   server RSS column is the sidecar's resident memory under load with that profile.
//! - `node-cel`, `node-hook`: `benches/compare/webhook.mjs`, the same policy and hook logic in
//!   Node.js `node:http`, with the same two requests.
//! - `cerbos`: Cerbos (npm `@cerbos/cerbos-linux-x64`) with `benches/compare/cerbos/policies`,
//!   asked `benches/compare/cerbos/cel-allow.json` on `/api/check/resources`; its log level is
//!   `warn` (no line per request) and its audit log is off (its default), so unlike Verdict it
//!   writes no decision record.
//!
//! The hook contenders fetch the project's spend from a billing stand-in: a second floor
//! server answering `proj-alpha`'s spend JSON (the Python stand-in of the example would be the
//! bottleneck of both). Its CPU time is not counted. The load generator runs in this process,
//! on the same machine, so it competes with the servers for CPU: read ratios, not absolutes.
//!
//! Every process it starts is killed when its handle drops, also on error. A `SIGKILL` of the
//! harness itself leaves them running (an interactive Ctrl-C reaches the whole process group).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::{Bodies, Error, HttpTarget, Load, Report, http_once, plot_svg, run_http};

/// Every contender, in the default order.
pub const CONTENDERS: [&str; 8] =
    ["floor", "verdict-cel", "verdict-hook", "verdict-cel-fsync", "verdict-cel-mid", "node-cel", "node-hook", "cerbos"];

/// The billing answer the hook contenders get.
const BILLING_BODY: &str = r#"{"project": "proj-alpha", "month_to_date": "1200.00", "budget": "2500.00", "currency": "USD", "as_of": "2026-11-25T06:00:00Z"}"#;

/// Harness settings.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The repository root (for `examples/` and `benches/compare/`).
    pub repo: PathBuf,
    /// Output directory: `compare.json`, `compare.txt`, `compare-<N>.svg`, and `work/`.
    pub out: PathBuf,
    /// The `verdict` binary to run as server and floor.
    pub verdict: PathBuf,
    /// Contenders to run, from [`CONTENDERS`].
    pub contenders: Vec<String>,
    /// Connection counts.
    pub connections: Vec<usize>,
    /// Warm-up per run.
    pub warmup: Duration,
    /// Measured time per run.
    pub duration: Duration,
    /// Rounds.
    pub rounds: usize,
    /// The Cerbos binary.
    pub cerbos: PathBuf,
    /// The Node.js binary.
    pub node: PathBuf,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
struct Run {
    contender: String,
    round: usize,
    /// Server CPU seconds (user + system) during the measured window (not the warm-up).
    server_cpu_s: f64,
    /// Server CPU microseconds per request.
    cpu_us_per_request: f64,
    /// CPU microseconds per request of this process, the load generator, on the same cores.
    client_cpu_us_per_request: f64,
    /// Resident memory of the server (`VmRSS`) at the end of the run, in MB.
    server_rss_mb: f64,
    report: Report,
}

/// The median over rounds for one contender and connection count.
#[derive(Debug, Clone, Serialize)]
struct Row {
    contender: String,
    connections: usize,
    rounds: usize,
    throughput_rps: f64,
    throughput_min: f64,
    throughput_max: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_request: f64,
    client_cpu_us_per_request: f64,
    server_rss_mb: f64,
    errors: u64,
}

/// A ratio between two contenders, with its target when the design states one.
#[derive(Debug, Clone, Serialize)]
struct Ratio {
    what: String,
    connections: usize,
    /// The ratio of the two contenders' medians; decides `met`.
    value: f64,
    /// The same ratio within each round (the two ran minutes apart at most): its lowest and
    /// highest, to show how much of the median ratio is the machine's drift.
    round_min: f64,
    round_max: f64,
    target: Option<String>,
    met: Option<bool>,
}

/// A server the harness started; killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    addr: String,
}

/// How to ask one contender, and what its answer must contain.
struct Ask {
    name: &'static str,
    server: usize,
    path: &'static str,
    body: Bytes,
    expect: &'static [&'static str],
}

// === impl Server ===

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `command` and waits (up to 30 s) for its first stdout line, which must contain
    /// `marker`; the address is taken from it by `addr`.
    fn start(
        name: &'static str,
        mut command: Command,
        marker: &str,
        addr: impl Fn(&str) -> Option<String>,
        log: &Path,
    ) -> Result<Server, Error> {
        let stderr = std::fs::File::create(log).map_err(|source| Error::Write { path: log.to_owned(), cause: source })?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| Error::Setup(format!("{name}: cannot start `{:?}`: {e}", command.get_program())))?;
        let stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let mut reader = std::io::BufReader::new(out);
                let _ = reader.read_line(&mut line);
                let _ = tx.send(line);
                // Keep draining so the child never blocks on a full pipe.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            }
        });
        let mut server = Server { name, child, addr: String::new() };
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        match addr(&line).filter(|_| line.contains(marker)) {
            Some(a) => {
                server.addr = a;
                Ok(server)
            }
            None => Err(Error::Setup(format!(
                "{name} did not start (first line {line:?}); see `{}`",
                log.display()
            ))),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts everything, measures, writes the results, and returns the printed table.
pub async fn compare(opts: &CompareOptions) -> Result<String, Error> {
    for c in &opts.contenders {
        if !CONTENDERS.contains(&c.as_str()) {
            return Err(Error::Settings(format!("unknown contender `{c}`; known: {}", CONTENDERS.join(", "))));
        }
    }
    let work = opts.out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|source| Error::Write { path: work.clone(), cause: source })?;
    let load_before = loadavg();
    let wants = |c: &str| opts.contenders.iter().any(|x| x == c);
    let (servers, asks) = start_all(opts, &work, &wants)?;
    for ask in &asks {
        verify(&servers, ask).await?;
    }
    eprintln!("all contenders answer the expected allow; measuring");

    let mut runs = Vec::new();
    for round in 0..opts.rounds {
        let n = asks.len().max(1);
        let order: Vec<&Ask> = (0..asks.len()).filter_map(|i| asks.get((i + round) % n)).collect();
        for &connections in &opts.connections {
            for ask in &order {
                runs.push(measure(opts, &servers, ask, connections, round).await?);
            }
        }
    }
    let started: Vec<serde_json::Value> = servers
        .iter()
        .map(|s| serde_json::json!({ "name": s.name, "addr": s.addr, "pid": s.pid() }))
        .collect();
    drop(servers);
    let _ = std::fs::remove_dir_all(&work);
    let load = format!("{load_before} at the start, {} at the end", loadavg());
    write_results(opts, &asks, &runs, started, load)
}

/// Starts the servers the chosen contenders need, and says how to ask each contender.
fn start_all(
    opts: &CompareOptions,
    work: &Path,
    wants: &dyn Fn(&str) -> bool,
) -> Result<(Vec<Server>, Vec<Ask>), Error> {
    let read = |p: PathBuf| std::fs::read(&p).map(Bytes::from).map_err(|source| Error::Read { path: p, cause: source });
    let example = opts.repo.join("examples/provisioning");
    let cel = read(example.join("requests/cel-allow.json"))?;
    let hook = read(example.join("requests/hook-allow.json"))?;
    let floor_addr = |l: &str| field(l, "addr");
    let mut servers = Vec::new();
    let mut asks = Vec::new();
    let floor = |body: &str| {
        let mut c = Command::new(&opts.verdict);
        c.args(["bench", "floor", "--listen", "127.0.0.1:0", "--body", body]);
        c
    };
    let hooks_wanted = ["verdict-hook", "node-hook"].iter().any(|c| wants(c));
    let billing = if hooks_wanted {
        servers.push(Server::start("billing", floor(BILLING_BODY), "floor listening", floor_addr, &work.join("billing.err"))?);
        servers.last().map(|s| s.addr.clone())
    } else {
        None
    };
    let billing = billing.unwrap_or_else(|| "127.0.0.1:9".to_owned());

    if wants("floor") {
        servers.push(Server::start("floor", floor(r#"{"decision":true}"#), "floor listening", floor_addr, &work.join("floor.err"))?);
        let body = cel.clone();
        asks.push(Ask { name: "floor", server: servers.len() - 1, path: "/access/v1/evaluation", body, expect: &["\"decision\":true"] });
    }
    let cel_expect: &[&str] = &["\"decision\":true", "rule:provisioning/tiny-resources"];
    let hook_expect: &[&str] = &["\"decision\":true", "hook:cost-threshold"];
    if wants("verdict-cel") || wants("verdict-hook") {
        servers.push(start_verdict(opts, work, "verdict", "write", &billing, None)?);
        let s = servers.len() - 1;
        if wants("verdict-cel") {
            asks.push(Ask { name: "verdict-cel", server: s, path: "/access/v1/evaluation", body: cel.clone(), expect: cel_expect });
        }
        if wants("verdict-hook") {
            asks.push(Ask { name: "verdict-hook", server: s, path: "/access/v1/evaluation", body: hook.clone(), expect: hook_expect });
        }
    }
    if wants("verdict-cel-fsync") {
        servers.push(start_verdict(opts, work, "verdict-fsync", "fsync", &billing, None)?);
        asks.push(Ask { name: "verdict-cel-fsync", server: servers.len() - 1, path: "/access/v1/evaluation", body: cel.clone(), expect: cel_expect });
    }
    if wants("verdict-cel-mid") {
        // The 5,000-user / 127,000-grant profile loaded, for resident memory under load.
        let mid = work.join("identity-mid.json");
        let status = Command::new(&opts.verdict)
            .args(["identity", "generate", "--profile", "mid", "-o"])
            .arg(&mid)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| Error::Setup(format!("verdict identity generate: {e}")))?;
        if !status.success() {
            return Err(Error::Setup(format!("verdict identity generate --profile mid exited with {status}")));
        }
        let mid = std::path::absolute(&mid).unwrap_or(mid);
        servers.push(start_verdict(opts, work, "verdict-mid", "write", &billing, Some(&mid))?);
        asks.push(Ask { name: "verdict-cel-mid", server: servers.len() - 1, path: "/access/v1/evaluation", body: cel.clone(), expect: cel_expect });
    }
    if wants("node-cel") || wants("node-hook") {
        let mut c = Command::new(&opts.node);
        c.arg(opts.repo.join("benches/compare/webhook.mjs"))
            .env("PORT", "0")
            .env("BILLING_URL", format!("http://{billing}"))
            .env("BILLING_TOKEN", "demo-token")
            .env("IDENTITY_FILE", example.join("identity.json"));
        let addr = |l: &str| field(l, "port").map(|p| format!("127.0.0.1:{p}"));
        servers.push(Server::start("node", c, "webhook listening", addr, &work.join("node.err"))?);
        let s = servers.len() - 1;
        if wants("node-cel") {
            asks.push(Ask { name: "node-cel", server: s, path: "/access/v1/evaluation", body: cel.clone(), expect: cel_expect });
        }
        if wants("node-hook") {
            asks.push(Ask { name: "node-hook", server: s, path: "/access/v1/evaluation", body: hook.clone(), expect: hook_expect });
        }
    }
    if wants("cerbos") {
        servers.push(start_cerbos(opts, work)?);
        let body = read(opts.repo.join("benches/compare/cerbos/cel-allow.json"))?;
        asks.push(Ask { name: "cerbos", server: servers.len() - 1, path: "/api/check/resources", body, expect: &["\"provision\":\"EFFECT_ALLOW\""] });
    }
    Ok((servers, asks))
}

/// `verdict serve` on a copy of examples/provisioning, its billing URL pointed at `billing`.
fn start_verdict(
    opts: &CompareOptions,
    work: &Path,
    name: &'static str,
    durability: &str,
    billing: &str,
    identity: Option<&Path>,
) -> Result<Server, Error> {
    let dir = work.join(name);
    copy_dir(&opts.repo.join("examples/provisioning"), &dir)?;
    let config = dir.join("verdict.toml");
    let mut text = std::fs::read_to_string(&config).map_err(|source| Error::Read { path: config.clone(), cause: source })?;
    if let Some(file) = identity {
        let file = serde_json::to_string(&file.display().to_string()).unwrap_or_default();
        text = text.replace("file = \"identity.json\"", &format!("file = {file}"));
    }
    std::fs::write(&config, text.replace("127.0.0.1:9300", billing))
        .map_err(|source| Error::Write { path: config.clone(), cause: source })?;
    let mut c = Command::new(&opts.verdict);
    c.arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", ""])
        .env("VERDICT_DECISION_LOG_DURABILITY", durability)
        // Rotation stays on (it is part of the cost); two files bound the disk used.
        .env("VERDICT_DECISION_LOG_MAX_FILES", "2")
        .env("VERDICT_LOG", "warn");
    Server::start(name, c, "verdict listening", |l| field(l, "decision"), &work.join(format!("{name}.err")))
}

/// Cerbos with the policy directory on disk, HTTP on a free 127.0.0.1 port.
fn start_cerbos(opts: &CompareOptions, work: &Path) -> Result<Server, Error> {
    if !opts.cerbos.is_file() {
        return Err(Error::Setup(format!(
            "cerbos: no binary at `{}`; install it with `npm install --prefix target/cerbos @cerbos/cerbos-linux-x64@0.55.0`, or leave `cerbos` out of --contenders",
            opts.cerbos.display()
        )));
    }
    let http = free_port()?;
    let grpc = free_port()?;
    let config = work.join("cerbos.yaml");
    let policies = opts.repo.join("benches/compare/cerbos/policies");
    let text = format!(
        "server:\n  httpListenAddr: \"127.0.0.1:{http}\"\n  grpcListenAddr: \"127.0.0.1:{grpc}\"\nstorage:\n  driver: disk\n  disk:\n    directory: \"{}\"\n    watchForChanges: false\naudit:\n  enabled: false\n",
        policies.display()
    );
    std::fs::write(&config, text).map_err(|source| Error::Write { path: config.clone(), cause: source })?;
    let log = work.join("cerbos.err");
    let stderr = std::fs::File::create(&log).map_err(|source| Error::Write { path: log.clone(), cause: source })?;
    let stdout = stderr.try_clone().map_err(|source| Error::Write { path: log.clone(), cause: source })?;
    // `--log-level=warn`: no line per request, as `verdict serve` logs none (VERDICT_LOG=warn).
    // Cerbos's audit log (its decision log) stays off, its default.
    let child = Command::new(&opts.cerbos)
        .arg("server")
        .arg(format!("--config={}", config.display()))
        .arg("--log-level=warn")
        .env("CERBOS_NO_TELEMETRY", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error::Setup(format!("cerbos: cannot start `{}`: {e}", opts.cerbos.display())))?;
    let server = Server { name: "cerbos", child, addr: format!("127.0.0.1:{http}") };
    // Cerbos prints no address line; wait until it accepts connections.
    for _ in 0..300 {
        if std::net::TcpStream::connect(&server.addr).is_ok() {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::Setup(format!("cerbos did not listen on {} within 30 s; see `{}`", server.addr, log.display())))
}

/// One request to a contender; its answer must be 200 and contain every `expect` string.
async fn verify(servers: &[Server], ask: &Ask) -> Result<(), Error> {
    let target = target(servers, ask)?;
    let (status, body) = http_once(&target, ask.body.clone(), Duration::from_secs(10)).await?;
    let text = String::from_utf8_lossy(&body);
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if status != 200 || ask.expect.iter().any(|e| !compact.contains(&e.replace(' ', ""))) {
        return Err(Error::Setup(format!(
            "{}: expected HTTP 200 with {:?}, got HTTP {status}: {text}",
            ask.name, ask.expect
        )));
    }
    Ok(())
}

fn target(servers: &[Server], ask: &Ask) -> Result<HttpTarget, Error> {
    let server = servers.get(ask.server).ok_or_else(|| Error::Setup(format!("{}: no server", ask.name)))?;
    HttpTarget::parse(&format!("http://{}{}", server.addr, ask.path), "POST", &[], None)
}

/// One run of one contender, with the server's CPU time around it.
async fn measure(opts: &CompareOptions, servers: &[Server], ask: &Ask, connections: usize, round: usize) -> Result<Run, Error> {
    let target = target(servers, ask)?;
    let server = servers.get(ask.server).ok_or_else(|| Error::Setup(format!("{}: no server", ask.name)))?;
    let load = Load {
        connections,
        rate: None,
        warmup: Duration::ZERO,
        duration: opts.duration,
        timeout: super::DEFAULT_TIMEOUT,
        progress: false,
    };
    let bodies = Bodies::new(vec![ask.body.clone()]).ok_or_else(|| Error::Setup("no body".to_owned()))?;
    // The warm-up is a run of its own, so the CPU times below cover the measured window only.
    if !opts.warmup.is_zero() {
        let warmup = Load { duration: opts.warmup, ..load.clone() };
        run_http(target.clone(), bodies.clone(), &warmup, "warm-up".to_owned()).await?;
    }
    let before = cpu_seconds(server.pid()).map_err(|e| Error::Setup(format!("{}: {e}", server.name)))?;
    let client_before = cpu_seconds(std::process::id())?;
    let label = format!("{} c{connections}", ask.name);
    let mut report = run_http(target, bodies, &load, label).await?;
    report.warmup_s = opts.warmup.as_secs_f64();
    let after = cpu_seconds(server.pid())?;
    let client_after = cpu_seconds(std::process::id())?;
    let server_cpu_s = after - before;
    let per_request = |seconds: f64| if report.requests > 0 { seconds * 1e6 / report.requests as f64 } else { f64::NAN };
    let cpu_us_per_request = per_request(server_cpu_s);
    let client_cpu_us_per_request = per_request(client_after - client_before);
    let server_rss_mb = rss_mb(server.pid()).unwrap_or(f64::NAN);
    eprintln!(
        "round {} {:<18} c{connections:<3} {:>9.0} req/s  p99 {:>9.1} µs  cpu {:>7.1} µs/req  errors {}",
        round + 1,
        ask.name,
        report.throughput_rps,
        report.latency_us.p99,
        cpu_us_per_request,
        report.errors.total
    );
    Ok(Run { contender: ask.name.to_owned(), round, server_cpu_s, cpu_us_per_request, client_cpu_us_per_request, server_rss_mb, report })
}

/// Summarizes, prints and writes `compare.json`, `compare.txt` and one SVG per connection count.
fn write_results(
    opts: &CompareOptions,
    asks: &[Ask],
    runs: &[Run],
    servers: Vec<serde_json::Value>,
    load: String,
) -> Result<String, Error> {
    let rows = summarize(opts, asks, runs);
    let ratios = ratios(&rows, runs, &opts.connections);
    let mut machine = machine();
    machine.insert("loadavg", load);
    let table = render(opts, &machine, &rows, &ratios);
    let json = serde_json::json!({
        "machine": machine,
        "settings": {
            "contenders": opts.contenders,
            "connections": opts.connections,
            "warmup_s": opts.warmup.as_secs_f64(),
            "duration_s": opts.duration.as_secs_f64(),
            "rounds": opts.rounds,
            "mode": "closed",
        },
        "servers": servers,
        "summary": rows,
        "ratios": ratios,
        "runs": runs,
    });
    let write = |name: &str, text: &str| {
        let path = opts.out.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Write { path, cause: source })
    };
    write("compare.json", &serde_json::to_string_pretty(&json).unwrap_or_default())?;
    write("compare.txt", &table)?;
    for &connections in &opts.connections {
        // Per contender, the round with the median throughput.
        let mut chosen = Vec::new();
        for ask in asks {
            let mut mine = runs_of(runs, ask.name, connections);
            mine.sort_by(|a, b| a.report.throughput_rps.total_cmp(&b.report.throughput_rps));
            if let Some(run) = mine.get(mine.len() / 2) {
                chosen.push(run.report.clone());
            }
        }
        let title = format!("latency by percentile, {connections} connection(s), closed loop");
        write(&format!("compare-{connections}.svg"), &plot_svg(&chosen, &title))?;
    }
    Ok(table)
}

fn runs_of<'a>(runs: &'a [Run], contender: &str, connections: usize) -> Vec<&'a Run> {
    runs.iter().filter(|r| r.contender == contender && r.report.connections == connections).collect()
}

/// One row per contender and connection count: each column's median over the rounds.
fn summarize(opts: &CompareOptions, asks: &[Ask], runs: &[Run]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &connections in &opts.connections {
        for ask in asks {
            let mine = runs_of(runs, ask.name, connections);
            if mine.is_empty() {
                continue;
            }
            let pick = |f: &dyn Fn(&Run) -> f64| median(mine.iter().map(|r| f(r)).collect());
            let tps: Vec<f64> = mine.iter().map(|r| r.report.throughput_rps).collect();
            rows.push(Row {
                contender: ask.name.to_owned(),
                connections,
                rounds: mine.len(),
                throughput_rps: pick(&|r| r.report.throughput_rps),
                throughput_min: tps.iter().copied().fold(f64::INFINITY, f64::min),
                throughput_max: tps.iter().copied().fold(0.0, f64::max),
                p50_us: pick(&|r| r.report.latency_us.p50),
                p99_us: pick(&|r| r.report.latency_us.p99),
                cpu_us_per_request: pick(&|r| r.cpu_us_per_request),
                client_cpu_us_per_request: pick(&|r| r.client_cpu_us_per_request),
                server_rss_mb: pick(&|r| r.server_rss_mb),
                errors: mine.iter().map(|r| r.report.errors.total).sum(),
            });
        }
    }
    rows
}

/// The printed result: a header, the rows and the ratios, as Markdown tables.
fn render(opts: &CompareOptions, machine: &BTreeMap<&'static str, String>, rows: &[Row], ratios: &[Ratio]) -> String {
    let get = |k: &str| machine.get(k).map_or("?", String::as_str);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "verdict bench compare: {} ({} CPU(s), {}); {} round(s), {} s warm-up + {} s per run, closed loop; each column is its own median over the rounds",
        get("date"),
        get("nproc"),
        get("cpu"),
        opts.rounds,
        opts.warmup.as_secs_f64(),
        opts.duration.as_secs_f64()
    );
    let _ = writeln!(table, "load average (1, 5, 15 min): {}", get("loadavg"));
    let _ = writeln!(table);
    let _ = writeln!(
        table,
        "| contender | conns | req/s (min–max) | p50 µs | p99 µs | server CPU µs/req | load generator CPU µs/req | server RSS MB | errors |"
    );
    let _ = writeln!(table, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        let _ = writeln!(
            table,
            "| {} | {} | {:.0} ({:.0}–{:.0}) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.contender,
            r.connections,
            r.throughput_rps,
            r.throughput_min,
            r.throughput_max,
            r.p50_us,
            r.p99_us,
            r.cpu_us_per_request,
            r.client_cpu_us_per_request,
            r.server_rss_mb,
            r.errors
        );
    }
    let _ = writeln!(table);
    let _ = writeln!(table, "| ratio | conns | measured | per round (min–max) | target | met |");
    let _ = writeln!(table, "| --- | ---: | ---: | ---: | --- | --- |");
    for r in ratios {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**NOT MET**",
            None => "-",
        };
        let _ = writeln!(
            table,
            "| {} | {} | {:.3} | {:.3}–{:.3} | {} | {met} |",
            r.what,
            r.connections,
            r.value,
            r.round_min,
            r.round_max,
            r.target.as_deref().unwrap_or("-")
        );
    }
    table
}

/// The design's ratios, where both contenders ran.
fn ratios(rows: &[Row], runs: &[Run], connections: &[usize]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for &c in connections {
        let get = |name: &str| rows.iter().find(|r| r.contender == name && r.connections == c);
        let targeted = c == 32;
        let mut push = |what: &str, value: f64, target: Option<(&str, bool)>| {
            let target = target.filter(|_| targeted);
            let (round_min, round_max) = per_round(runs, what, c);
            out.push(Ratio {
                what: what.to_owned(),
                connections: c,
                value,
                round_min,
                round_max,
                target: target.map(|(t, _)| t.to_owned()),
                met: target.map(|(_, m)| m),
            });
        };
        if let (Some(v), Some(f)) = (get("verdict-cel"), get("floor")) {
            let t = v.throughput_rps / f.throughput_rps;
            push("verdict-cel / floor throughput", t, Some(("≥ 0.8", t >= 0.8)));
            let p = v.p99_us / f.p99_us;
            push("verdict-cel / floor p99", p, Some(("≤ 1.5", p <= 1.5)));
        }
        if let (Some(v), Some(n)) = (get("verdict-hook"), get("node-hook")) {
            let t = v.throughput_rps / n.throughput_rps;
            push("verdict-hook / node-hook throughput", t, Some(("≥ 0.8", t >= 0.8)));
            let p = v.p99_us / n.p99_us;
            push("verdict-hook / node-hook p99", p, Some(("≤ 1.0", p <= 1.0)));
        }
        if let (Some(v), Some(n)) = (get("verdict-cel"), get("node-cel")) {
            push("verdict-cel / node-cel throughput", v.throughput_rps / n.throughput_rps, None);
        }
        if let (Some(v), Some(cb)) = (get("verdict-cel"), get("cerbos")) {
            let t = v.throughput_rps / cb.throughput_rps;
            push("verdict-cel / cerbos throughput", t, Some(("≥ 8", t >= 8.0)));
            push("verdict-cel / cerbos p99", v.p99_us / cb.p99_us, None);
        }
        if let (Some(s), Some(v)) = (get("verdict-cel-fsync"), get("verdict-cel")) {
            push("verdict-cel-fsync / verdict-cel throughput", s.throughput_rps / v.throughput_rps, None);
        }
    }
    out
}

/// Lowest and highest of a ratio named `A / B throughput` or `A / B p99` computed within each
/// round at `connections`; NaN when no round ran both.
fn per_round(runs: &[Run], what: &str, connections: usize) -> (f64, f64) {
    let Some((pair, measure)) = what.rsplit_once(' ') else { return (f64::NAN, f64::NAN) };
    let Some((a, b)) = pair.split_once(" / ") else { return (f64::NAN, f64::NAN) };
    let value = |r: &Run| if measure == "p99" { r.report.latency_us.p99 } else { r.report.throughput_rps };
    let find = |name: &str, round: usize| runs.iter().find(|r| r.contender == name && r.round == round && r.report.connections == connections);
    let per_round: Vec<f64> = runs
        .iter()
        .filter(|r| r.contender == a && r.report.connections == connections)
        .filter_map(|ra| find(b, ra.round).map(|rb| value(ra) / value(rb)))
        .collect();
    if per_round.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (per_round.iter().copied().fold(f64::INFINITY, f64::min), per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(f64::NAN),
        n => (v.get(n / 2 - 1).copied().unwrap_or(f64::NAN) + v.get(n / 2).copied().unwrap_or(f64::NAN)) / 2.0,
    }
}

/// `nproc`, the CPU model and the date.
fn machine() -> BTreeMap<&'static str, String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned());
    let nproc = std::thread::available_parallelism().map_or_else(|_| "?".to_owned(), |n| n.to_string());
    BTreeMap::from([
        ("cpu", cpu),
        ("nproc", nproc),
        ("date", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()),
    ])
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// Resident memory of a process, from `VmRSS` in `/proc/PID/status`, in MB.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / 1e6)
}

/// User + system CPU seconds of a process, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read { path: path.clone(), cause: source })?;
    // Fields after the command name (which is in parentheses and may contain spaces):
    // state is field 3, utime 14 and stime 15, so indexes 11 and 12 here.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => Ok((u + s) as f64 / clock_ticks()),
        _ => Err(Error::File { path, message: "unexpected format".to_owned() }),
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when it cannot be asked).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// A free 127.0.0.1 port (bound, then released for the server to take).
fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Setup(format!("cannot find a free port: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| Error::Setup(format!("cannot find a free port: {e}")))
}

/// `name=value` in a line of words.
fn field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('=')).map(str::to_owned)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Read { path, cause: source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let target = to.join(entry.file_name());
        let name = entry.file_name();
        if name == "decisions.log" || name == ".verdict" {
            continue;
        }
        if entry.file_type().map_err(io(from))?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(io(&target))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_fields() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(field("verdict listening decision=127.0.0.1:5 admin=-", "decision").as_deref(), Some("127.0.0.1:5"));
        assert_eq!(field("webhook listening port=77", "port").as_deref(), Some("77"));
    }

    #[test]
    fn cpu_seconds_of_this_process() {
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
    }
}

//! `verdict bench`: load an HTTP decision endpoint (or the engine in-process) and report
//! throughput and HDR latency percentiles; `bench compare` runs the comparison harness.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::bench::{self, Bodies, CompareOptions, HttpTarget, InProcess, Load, Report};

/// `bench` options, or one of its subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// A subcommand instead of a run.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// `bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Compare Verdict with a bare hyper server, a Node.js webhook and Cerbos on this machine.
    Compare(CompareArgs),
    /// A bare hyper server answering a constant JSON body (the harness's floor).
    #[command(hide = true)]
    Floor(FloorArgs),
}

/// One benchmark run.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The endpoint, e.g. http://127.0.0.1:8180/access/v1/evaluation.
    #[arg(long, conflicts_with = "in_process")]
    pub url: Option<String>,
    /// Drive Verdict's engine directly, without HTTP (needs --config or ./verdict.toml).
    #[arg(long)]
    pub in_process: bool,
    /// In-process: the TOML config to load.
    #[arg(long, requires = "in_process")]
    pub config: Option<PathBuf>,
    /// In-process: also write every decision to DIR/decisions.log before it counts.
    #[arg(long, requires = "in_process")]
    pub log_dir: Option<PathBuf>,
    /// With an https:// URL: PEM certificates trusted besides the built-in roots (e.g. the
    /// CA of a test server's certificate).
    #[arg(long, requires = "url")]
    pub ca_file: Option<PathBuf>,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// One JSON request body, sent every time.
    #[arg(long, group = "input")]
    pub body: Option<PathBuf>,
    /// A request mix: one JSON body per line, sent round-robin.
    #[arg(long, group = "input")]
    pub requests: Option<PathBuf>,
    /// Replay the `request` of every evaluation record of a Verdict decision log.
    #[arg(long, group = "input")]
    pub from_log: Option<PathBuf>,
    /// Concurrent connections (closed loop: each sends back to back).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Open loop: this many requests/s in total, latency from the intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of load before measuring (sent, not recorded).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait for one answer before counting a timeout.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Name of the run, in tables, JSON and plot legends.
    #[arg(long)]
    pub label: Option<String>,
    /// Print the result as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON result to FILE.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Write a percentile plot (SVG) of this run and of any --compare results.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Earlier --json results to draw on the same plot (needs --plot).
    #[arg(long, num_args = 1.., requires = "plot")]
    pub compare: Vec<PathBuf>,
    /// Print a progress line on stderr every second (default: when stderr is a terminal and
    /// the run lasts more than 3 s).
    #[arg(long)]
    pub progress: bool,
}

/// `bench compare` options.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Output directory.
    #[arg(long, default_value = "target/compare")]
    pub out: PathBuf,
    /// Quick mode (1 s runs, 0.5 s warm-up, 1 round), for tests and smoke checks.
    #[arg(long, env = "VERDICT_BENCH_QUICK")]
    pub quick: bool,
    /// Contenders, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', default_value = "floor,verdict-cel,verdict-hook,verdict-cel-fsync,verdict-cel-mid,node-cel,node-hook,cerbos")]
    pub contenders: Vec<String>,
    /// Connection counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub connections: Vec<usize>,
    /// Seconds measured per run (default 5; quick: 1).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of warm-up per run (default 1; quick: 0.5).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Rounds; each runs every contender once, in a rotated order (default 3; quick: 1).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// The repository root (examples/ and benches/compare/).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The Cerbos binary.
    #[arg(long, default_value = "target/cerbos/node_modules/@cerbos/cerbos-linux-x64/cerbos-linux-x64")]
    pub cerbos: PathBuf,
    /// The Node.js binary.
    #[arg(long, default_value = "node")]
    pub node: PathBuf,
}

/// `bench floor` options.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The body of every answer.
    #[arg(long, default_value = r#"{"decision":true}"#)]
    pub body: String,
}

/// Runs `bench`, `bench compare` or `bench floor`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The same runtime settings as `verdict serve`, so the floor and the load are comparable.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.command {
        Some(Command::Floor(f)) => runtime.block_on(floor(f)),
        Some(Command::Compare(c)) => runtime.block_on(compare(c)),
        None => runtime.block_on(run_one(args.run)),
    }
}

async fn floor(args: FloorArgs) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("floor listening addr={}", listener.local_addr()?);
    bench::serve_floor(listener, args.body.into()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let (duration, warmup, rounds) = if args.quick { (1.0, 0.5, 1) } else { (5.0, 1.0, 3) };
    let opts = CompareOptions {
        repo: args.repo.clone(),
        out: args.out.clone(),
        verdict: std::env::current_exe().context("cannot find the verdict binary")?,
        contenders: args.contenders,
        connections: args.connections,
        warmup: seconds("--warmup", args.warmup.unwrap_or(warmup))?,
        duration: seconds("--duration", args.duration.unwrap_or(duration))?,
        rounds: args.rounds.unwrap_or(rounds).max(1),
        cerbos: args.repo.join(&args.cerbos),
        node: args.node,
    };
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create `{}`", opts.out.display()))?;
    let table = bench::compare(&opts).await?;
    print!("{table}");
    eprintln!("wrote {}/compare.json, compare.txt and compare-<connections>.svg", opts.out.display());
    Ok(ExitCode::SUCCESS)
}

async fn run_one(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut earlier = Vec::new();
    for path in &args.compare {
        let text = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
        let report: Report = serde_json::from_slice(&text)
            .with_context(|| format!("`{}` is not a `verdict bench --json` result", path.display()))?;
        earlier.push(report);
    }
    if args.url.is_none() && !args.in_process {
        // Plot-only: draw earlier results.
        let Some(plot) = &args.plot else {
            anyhow::bail!("nothing to do: give --url URL or --in-process (or --plot FILE --compare A.json B.json)");
        };
        if earlier.is_empty() {
            anyhow::bail!("--plot without a run needs --compare with at least one result file");
        }
        write_plot(plot, &earlier)?;
        return Ok(ExitCode::SUCCESS);
    }
    let bodies = match (&args.body, &args.requests, &args.from_log) {
        (Some(p), _, _) => Bodies::from_file(p)?,
        (_, Some(p), _) => Bodies::from_jsonl(p)?,
        (_, _, Some(p)) => Bodies::from_decision_log(p)?,
        _ => anyhow::bail!("give the request body: --body FILE, --requests FILE.jsonl or --from-log DECISIONS.jsonl"),
    };
    let warmup = seconds("--warmup", args.warmup)?;
    let duration = seconds("--duration", args.duration)?;
    let load = Load {
        connections: args.connections,
        rate: args.rate,
        warmup,
        duration,
        timeout: seconds("--timeout", args.timeout)?,
        progress: args.progress || (std::io::stderr().is_terminal() && warmup + duration > Duration::from_secs(3)),
    };
    load.validate()?;
    let report = match &args.url {
        Some(url) => {
            let target = HttpTarget::parse(url, &args.method, &args.headers, args.ca_file.as_deref())?;
            let label = args.label.clone().unwrap_or_else(|| url.clone());
            bench::run_http(target, bodies, &load, label).await?
        }
        None => {
            let config = super::load_config(args.config.as_deref(), &[])?;
            let engine = InProcess::build(&config, args.log_dir.as_deref())?;
            let label = args.label.clone().unwrap_or_else(|| "in-process".to_owned());
            bench::run_in_process(engine, bodies, &load, label).await?
        }
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, format!("{json}\n")).with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    if let Some(plot) = &args.plot {
        earlier.push(report);
        write_plot(plot, &earlier)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_plot(path: &std::path::Path, reports: &[Report]) -> anyhow::Result<()> {
    let svg = bench::plot_svg(reports, "latency by percentile");
    std::fs::write(path, svg).with_context(|| format!("cannot write `{}`", path.display()))
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| anyhow::anyhow!("{flag} must be a number of seconds ≥ 0, not `{value}`"))
}

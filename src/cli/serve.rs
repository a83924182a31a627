//! `verdict serve`: start both listeners, reload on change, drain on SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::decision::Engine;
use crate::decision_log::DecisionLog;
use crate::metrics::Metrics;
use crate::reload::{self, Sources, Store};
use crate::server::{self, Admin, Api, Limits, Listener};
use crate::shutdown::{self, Shutdown};

/// `serve` options; each overrides the config file and the environment.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML config file (default: `verdict.toml` in the current directory, if present).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Decision listener address, e.g. 127.0.0.1:8180.
    #[arg(long)]
    pub listen: Option<String>,
    /// Admin listener address; "" disables it.
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Decision log file.
    #[arg(long)]
    pub decision_log: Option<String>,
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut overrides = Vec::new();
    if let Some(v) = args.listen {
        overrides.push(("server.listen", v));
    }
    if let Some(v) = args.admin_listen {
        overrides.push(("admin.listen", v));
    }
    if let Some(v) = args.decision_log {
        overrides.push(("decision_log.path", v));
    }
    let config = super::load_config(args.config.as_deref(), &overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: crate::config::Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let versions = Arc::new(
        crate::hookstate::Versions::open(&config.hooks.state_dir).context("cannot open the hook state directory")?,
    );
    let sources = Sources::from_config(&config, Some(versions.clone()));
    let pool = crate::hooks::Pool::spawn(crate::hooks::PoolConfig {
        workers: config.hooks.workers,
        queue_capacity: config.hooks.queue_capacity,
        ..Default::default()
    })?;
    let store = Arc::new(Store::open(sources, metrics.clone()).context("cannot build the first snapshot")?);
    let log = DecisionLog::spawn(config.decision_log.clone()).context("cannot open the decision log")?;
    // SCIM: one sync before listening, so a healthy upstream's users serve from the first
    // request; a failing one leaves the file's data serving, stale and not ready.
    let scim = store.sources().scim.clone();
    let apply: Arc<dyn crate::identity::sync::Apply> = store.clone();
    if let Some(source) = &scim {
        // Bounded: a slow upstream must not keep the listeners (and probes) down; the sync
        // loop retries.
        match tokio::time::timeout(source.settings().timeout, source.sync(&apply)).await {
            Ok(Ok(_)) => tracing::info!(base_url = %source.settings().base_url, revision = %store.current().revision, "scim: first sync done"),
            Ok(Err(e)) => tracing::warn!(error = %e, "scim: first sync failed; serving the identity file alone until a sync succeeds"),
            Err(_) => tracing::warn!("scim: first sync still running after the timeout; serving the identity file alone until a sync succeeds"),
        }
    }
    let tls = match &config.server.tls {
        Some(t) => Some(server::tls_acceptor(t)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let admin_listener = match config.admin.listen {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("cannot listen on {a}"))?),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().map(|l| l.local_addr()).transpose()?;

    let shutdown = Shutdown::new();
    let signals = tokio::spawn(shutdown::handle_signals(shutdown.clone(), store.clone()));
    let watcher = if config.reload.watch {
        Some(reload::watch(store.clone(), config.reload.debounce, shutdown.subscribe())?)
    } else {
        None
    };

    let syncer = scim.map(|source| tokio::spawn(crate::identity::sync::run(source, apply, shutdown.subscribe())));

    let engine = Engine::new(store.clone(), log.clone(), metrics.clone(), pool.clone());
    let limits = Limits {
        max_body_bytes: config.server.max_body_bytes,
        body_read_timeout: config.server.body_read_timeout,
        max_json_depth: config.server.max_json_depth,
        max_batch_items: config.server.max_batch_items,
    };
    let api = Arc::new(Api::new(engine, limits, metrics.clone(), server::base_url(addr, tls.is_some())));
    let settings = Listener {
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
        grace_period: config.server.shutdown_grace_period,
    };
    let admin_task = admin_listener.map(|l| {
        let admin = Arc::new(Admin::new(
            store.clone(),
            log.clone(),
            metrics.clone(),
            config.admin.token.clone(),
            Some(versions.clone()),
            Some(pool.clone()),
        ));
        let settings = Listener { max_connections: 64, ..settings.clone() };
        tokio::spawn(server::serve(l, None, admin, settings, None, shutdown.subscribe()))
    });

    let snapshot = store.current();
    tracing::info!(%addr, admin = ?admin_addr, revision = %snapshot.revision, "verdict serving");
    // One machine-readable line on stdout, so scripts and tests can find ports chosen with :0.
    println!(
        "verdict listening decision={addr} admin={} revision={}",
        admin_addr.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        snapshot.revision
    );
    drop(snapshot);

    let drained = server::serve(listener, tls, api, settings, Some(metrics), shutdown.subscribe()).await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(s) = syncer {
        s.abort();
    }
    signals.abort();
    // Every answered decision was written before its answer; this flushes any record whose
    // request was cut off by the grace period and fsyncs the tail.
    log.close().await;
    tracing::info!(drained, "decision log closed; exiting");
    Ok(())
}

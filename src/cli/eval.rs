//! `verdict eval`: one decision from JSON on stdin, no server and no decision log.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context as _;

use super::ConfigArgs;
use crate::decision::{self, DecisionRequest};
use crate::reload::{Snapshot, Sources};

/// Reads an AuthZEN evaluation request and prints `{decision, context}`.
pub fn run(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref(), &[])?;
    let sources = Sources::from_config(&config, None);
    let snapshot = Snapshot::build(&sources, &crate::cel::Env::new())?;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("cannot read stdin")?;
    let body: serde_json::Value = serde_json::from_str(&input).context("stdin is not JSON")?;
    let request = DecisionRequest::from_json(body).context("invalid request")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let pool = crate::hooks::Pool::spawn(crate::hooks::PoolConfig { workers: 1, queue_capacity: 8, ..Default::default() })?;
    let d = runtime.block_on(decision::decide(&snapshot, &request, chrono::Utc::now(), Some(&pool)));
    let out = serde_json::json!({
        "decision": d.allow,
        "context": {
            "decided_by": d.decided_by.as_str(),
            "reason": d.reason.as_deref(),
            "revision": &*snapshot.revision,
            "outputs": d.outputs,
            "errors": d.errors,
            "hooks": d.hooks,
        }
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

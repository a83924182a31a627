//! The `verdict` command line: one file per subcommand, `anyhow` for errors, printed with `{:#}`.

mod bench;
mod check;
mod eval;
mod hook;
mod identity;
mod log;
mod serve;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

/// Verdict: a policy decision sidecar (AuthZEN API, CEL rules, decision log).
#[derive(Debug, Parser)]
#[command(name = "verdict", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the decision and admin listeners.
    Serve(serve::Args),
    /// Compile every policy and the identity data; print every error.
    Check(ConfigArgs),
    /// Decide one request (JSON on stdin) without a server; print the response.
    Eval(ConfigArgs),
    /// Run the test cases kept beside the policies (`*_test.yaml`).
    Test(ConfigArgs),
    /// Decision log tools.
    #[command(subcommand)]
    Log(log::Command),
    /// Identity data tools.
    #[command(subcommand)]
    Identity(identity::Command),
    /// Hook tools.
    #[command(subcommand)]
    Hook(hook::Command),
    /// Load-test a decision endpoint (or the engine in-process): throughput, HDR percentiles.
    Bench(Box<bench::Args>),
}

/// Selecting the configuration.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// TOML config file (default: `verdict.toml` in the current directory, if present).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

// === impl Cli ===

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(args) => serve::run(args),
            Command::Check(args) => check::run(&args),
            Command::Eval(args) => eval::run(&args),
            Command::Test(args) => test::run(&args),
            Command::Log(cmd) => log::run(cmd),
            Command::Identity(cmd) => identity::run(cmd),
            Command::Hook(cmd) => hook::run(cmd),
            Command::Bench(args) => bench::run(*args),
        }
    }
}

/// Loads the config named by `--config`, or `./verdict.toml`, or the defaults.
pub(crate) fn load_config(path: Option<&Path>, overrides: &[(&str, String)]) -> anyhow::Result<Config> {
    let default = Path::new("verdict.toml");
    let path = path.or_else(|| default.exists().then_some(default));
    Ok(Config::load_with(path, &config::Env, overrides)?)
}

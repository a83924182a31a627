//! `verdict identity generate`: write a synthetic identity snapshot for tests and benchmarks.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::identity::{self, Profile};

/// Identity subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a deterministic synthetic snapshot (small: 300 users; mid: 5,000 users / ~127k
    /// grants; large: 50,000 users / ~1.6M grants).
    Generate {
        /// `small`, `mid` or `large`.
        #[arg(long, default_value = "mid")]
        profile: String,
        /// PRNG seed; the same seed writes the same bytes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file.
        #[arg(long, short = 'o')]
        out: PathBuf,
    },
}

/// Runs an identity subcommand.
pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Generate { profile, seed, out } => {
            let profile = match profile.as_str() {
                "small" => Profile::Small,
                "mid" => Profile::Mid,
                "large" => Profile::Large,
                other => anyhow::bail!("unknown profile `{other}`; use small, mid or large"),
            };
            let file = std::fs::File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let counts = identity::generate(profile, seed, &mut w)?;
            w.flush()?;
            println!("wrote {}: {counts:?}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! `verdict log verify PATH`: check a decision log's hash chain across its rotated files.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::decision_log;

/// Decision log subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify the hash chain; exit 0 when intact (a torn last line is a warning), 1 otherwise.
    Verify {
        /// The active log file (rotated files `PATH.N` are found beside it).
        path: PathBuf,
    },
}

/// Runs a log subcommand.
pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Verify { path } => {
            let report = decision_log::verify(&path)?;
            println!("{report}");
            if let Some(torn) = &report.torn_tail {
                println!("warning: {torn}");
            }
            match &report.problem {
                None => {
                    println!("chain intact");
                    Ok(ExitCode::SUCCESS)
                }
                Some(problem) => {
                    println!("TAMPERED: {problem}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

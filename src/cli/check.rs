//! `verdict check`: build the snapshot exactly as `serve` would and print every error.

use std::process::ExitCode;

use super::ConfigArgs;
use crate::reload::{BuildError, Snapshot, Sources};

/// Prints `ok …` or every error, one per line.
pub fn run(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref(), &[])?;
    let sources = Sources::from_config(&config, None);
    match Snapshot::build(&sources, &crate::cel::Env::new()) {
        Ok(s) => {
            let c = s.identity.counts();
            println!(
                "ok: {} policies, {} rules, {} users, {} groups, {} grants; revision {}",
                s.policies.policies().len(),
                s.policies.rule_count(),
                c.users,
                c.groups,
                c.grants,
                s.revision
            );
            let report = &s.identity_report;
            if report.has_warnings() {
                println!("identity warnings: {report}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(BuildError::Policies(errors)) => {
            for e in &errors.errors {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.errors.len());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

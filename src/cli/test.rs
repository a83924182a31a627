//! `verdict test`: run every `*_test.yaml` beside the policies; ends with `N passed, M failed`.

use std::process::ExitCode;

use super::ConfigArgs;
use crate::cases;
use crate::reload::Sources;

/// Runs every case file; exit status 1 when a case fails or a file is broken.
pub fn run(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref(), &[])?;
    let sources = Sources { policy_dir: config.policy_dir.clone(), identity_file: config.identity_file.clone() };
    let files = cases::find(&config.policy_dir);
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        match cases::run_file(file, &sources) {
            Ok(results) => {
                for r in results {
                    match r.failure {
                        None => {
                            passed += 1;
                            println!("ok   {}", r.name);
                        }
                        Some(why) => {
                            failed += 1;
                            println!("FAIL {}: {why}", r.name);
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {e}");
            }
        }
    }
    if files.is_empty() {
        println!("no test files (*_test.yaml) under {}", config.policy_dir.display());
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

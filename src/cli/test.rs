//! `verdict test`: run every `*_test.yaml` beside the policies; ends with `N passed, M failed`.

use std::process::ExitCode;

use super::ConfigArgs;
use crate::cases;
use crate::reload::Sources;

/// Runs every case file; exit status 1 when a case fails or a file is broken.
pub fn run(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref(), &[])?;
    let sources = Sources::from_config(&config, None);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let pool = crate::hooks::Pool::spawn(crate::hooks::PoolConfig { workers: 1, queue_capacity: 64, ..Default::default() })?;
    let policy_files = cases::find(&config.policy_dir);
    let hook_files = if config.hooks.dir.is_dir() { cases::find(&config.hooks.dir) } else { Vec::new() };
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut tally = |outcome: Result<Vec<cases::CaseResult>, cases::Error>| match outcome {
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
    };
    for file in &policy_files {
        tally(runtime.block_on(cases::run_file(file, &sources, &pool)));
    }
    for file in &hook_files {
        let identity = config.identity_file.as_deref();
        tally(runtime.block_on(cases::hook::run_file(file, &config.hooks.settings, identity, &pool)));
    }
    if policy_files.is_empty() && hook_files.is_empty() {
        println!("no test files (*_test.yaml) under {} or {}", config.policy_dir.display(), config.hooks.dir.display());
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

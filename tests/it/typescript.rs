//! `tsc --noEmit` over every hook in the repository, so `hooks/verdict.d.ts` and the example
//! hooks cannot drift apart. TypeScript comes from npm into `target/ts` (`.ci/run` installs it
//! there first; this test installs it on first use if it is missing).

use std::process::Command;

use crate::util::repo;

/// The TypeScript version the hooks are checked with (`erasableSyntaxOnly` needs ≥ 5.8).
const TYPESCRIPT: &str = "typescript@5.9.3";

#[test]
fn every_hook_type_checks() {
    let prefix = repo().join("target/ts");
    let tsc = prefix.join("node_modules/.bin/tsc");
    if !tsc.exists() {
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(TYPESCRIPT)
            .output()
            .expect("npm is needed to install TypeScript");
        assert!(out.status.success(), "npm install failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new(&tsc).args(["--noEmit", "-p", "hooks/tsconfig.json"]).current_dir(repo()).output().unwrap();
    assert!(
        out.status.success(),
        "tsc found type errors:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

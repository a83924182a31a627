//! `verdict hook new NAME`: scaffold a hook, its test cases and its config entry.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

/// Hook subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write `hooks/NAME.ts`, `hooks/NAME_test.yaml` and a `[hook.NAME]` entry in the config.
    New {
        /// The hook's name (letters, digits, `-`, `_`).
        name: String,
        /// TOML config file to add the entry to (default: `verdict.toml`).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
    },
}

/// Runs a hook subcommand.
pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::New { name, config } => {
            anyhow::ensure!(crate::hookstate::valid_name(&name), "invalid hook name `{name}`: use letters, digits, `-` and `_`");
            let config_path = config.unwrap_or_else(|| PathBuf::from("verdict.toml"));
            let cfg = super::load_config(Some(&config_path).filter(|p| p.exists()).map(PathBuf::as_path), &[])?;
            let dir = cfg.hooks.dir;
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let source = dir.join(format!("{name}.ts"));
            let tests = dir.join(format!("{name}_test.yaml"));
            for p in [&source, &tests] {
                anyhow::ensure!(!p.exists(), "{} already exists", p.display());
            }
            std::fs::write(&source, SOURCE.replace("NAME", &name))?;
            std::fs::write(&tests, TESTS.replace("NAME", &name))?;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&config_path)?;
            write!(f, "{}", ENTRY.replace("NAME", &name))?;
            println!("wrote {}, {} and [hook.{name}] in {}", source.display(), tests.display(), config_path.display());
            println!("use it from a rule with `hook: {name}`; `verdict test` runs its cases");
            Ok(ExitCode::SUCCESS)
        }
    }
}

const SOURCE: &str = r#"// The NAME hook. A rule hands a request over with `hook: NAME`; the result decides.
// Types: hooks/verdict.d.ts. Limits, allowed hosts, secrets and config: [hook.NAME].
import type { DecisionRequest, HookResult, Sdk } from "./verdict";

export default async function decide(req: DecisionRequest, sdk: Sdk): Promise<HookResult> {
  if (!req.principal.found) {
    return { decision: false, reason: "unknown subject" };
  }
  sdk.log.info(`NAME: ${req.action.name} on ${req.resource.type}/${req.resource.id}`);
  return { decision: true, reason: "allowed by NAME", outputs: { subject: req.subject.id } };
}
"#;

const TESTS: &str = r#"# Test cases for hooks/NAME.ts, run by `verdict test`.
hook: NAME
cases:
  - name: an unknown subject is denied
    request:
      subject: { type: user, id: nobody }
      action: { name: read }
      resource: { type: doc, id: d1 }
    expect: { decision: false, reason: unknown subject }
"#;

const ENTRY: &str = r#"
[hook.NAME]
deadline_ms = 50
memory_mb = 32
isolation = "pooled"          # or "per-call": a fresh context for every call
allowed_hosts = []            # hosts sdk.fetch may reach, e.g. ["billing.internal:443"]
secrets = []                  # names readable with sdk.secrets.get (VERDICT_SECRET_<NAME>)

[hook.NAME.config]
"#;

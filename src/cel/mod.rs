//! CEL for rule conditions: compiled once at load, evaluated per request against borrowed
//! request data.
//!
//! - [`compile`]: source → [`Condition`], with positions and a check of referenced variables.
//! - [`env`]: the functions rules may call (`identity.*`), registered once per snapshot on a
//!   root context that every request's scope borrows.
//! - [`eval`]: the per-request variable bindings (`subject`, `action`, `resource`, `context`,
//!   `principal`, `now`), resolved lazily so a rule pays only for what it reads.
//! - [`json`]: zero-copy views of `serde_json` values as CEL values.
//!
//! Nothing in this module does I/O or knows about HTTP.

mod compile;
pub mod env;
pub mod eval;
mod fast;
pub mod json;

pub use compile::{CompileError, Condition, Env, VARIABLES};
pub use env::Functions;
pub use eval::{Bindings, EvalError, Request};

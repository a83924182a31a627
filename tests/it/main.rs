//! The integration tests: each starts the real `verdict` binary on 127.0.0.1:0 and drives it
//! through HTTP or the CLI, as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs, reason = "tests")]

mod admin;
mod bad_input;
mod bench;
mod cli;
mod crash;
mod hooks;
mod interop;
mod reload;
mod scim;
mod shutdown;
mod tls;
mod typescript;
mod util;

//! Configuration errors: every problem found in one pass, each naming the key at fault.

use std::path::PathBuf;

/// One problem in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A value that does not parse or is out of range.
    #[error("`{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `server.listen`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Loading or validating the configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config `{}`: {cause}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error: part of the message, not a `source`, so `{:#}` prints it once.
        cause: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("{}: {}", path.display(), message.trim_end().replace('\n', " "))]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One or more values are invalid.
    #[error("{}: {}", source_name, problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The config file, or `defaults`.
        source_name: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

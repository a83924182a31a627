//! Checking a decision log's hash chain, for `verdict log verify`.
//!
//! Position: outside the request flow. The CLI calls [`verify`] on a log that a running or
//! stopped server wrote; it reads the rotated files oldest first, then the active file.
//!
//! This module must not modify, repair or lock any file (a server may be appending while it
//! reads), and must not depend on the writer: it knows only the line format from
//! `record.rs` and the file naming from `sink.rs`.
//!
//! What a chain proves, and what it does not: a changed, dropped or reordered line breaks the
//! link to the line after it. An edit to the very last line, or dropping lines from the end,
//! leaves no broken link; comparing the record count or last hash with a copy kept elsewhere
//! is the way to catch that.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Error;
use super::record::{self, GENESIS_PREV};
use super::sink::rotated_files;

/// The outcome of [`verify`].
///
/// `problem` is a sign of tampering or corruption (the CLI exits non-zero); `torn_tail` is a
/// warning (a crash while writing); `chain_start` is information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records whose line parsed and whose `prev` matched, up to the first problem.
    pub records: u64,
    /// Files read: the rotated files that exist, then the active file.
    pub files: usize,
    /// The first record's `prev`, when it is not all zeros: older files were deleted (by
    /// `max_files`) and checking starts from that record as given.
    pub chain_start: Option<String>,
    /// A last line without its newline at the end of the active file.
    pub torn_tail: Option<TornTail>,
    /// The first problem found; checking stops there.
    pub problem: Option<Problem>,
}

/// A last line without its newline: a crash while writing, never an answered decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The file that ends torn.
    pub file: PathBuf,
    /// Its line number (1-based).
    pub line: u64,
    /// Bytes after the last newline.
    pub bytes: u64,
}

/// A sign that the log was changed or corrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A line's `prev` is not the hash of the line before it.
    HashMismatch {
        /// The file holding the line.
        file: PathBuf,
        /// Its line number (1-based).
        line: u64,
        /// Hash of the line before it.
        expected: String,
        /// The `prev` it carries.
        found: String,
    },
    /// A line is not a JSON object with a string `prev`.
    InvalidJson {
        /// The file holding the line.
        file: PathBuf,
        /// Its line number (1-based).
        line: u64,
        /// The parser's message.
        message: String,
    },
    /// A rotated file ends without a newline; the writer never leaves one like that.
    UnterminatedRotated {
        /// The rotated file.
        file: PathBuf,
        /// The unterminated line's number (1-based).
        line: u64,
        /// Bytes after the last newline.
        bytes: u64,
    },
}

/// The only field a check needs; the parse still validates the whole line.
#[derive(Deserialize)]
struct Chained {
    prev: String,
}

/// Where the check has got to.
struct Walk {
    report: Report,
    /// Hash of the last line checked; `None` before the first record.
    prev: Option<String>,
}

/// Checks the hash chain of the log at `path` and its rotated files.
///
/// Blocking: call it from the CLI or `spawn_blocking`. `Err` means a file could not be read
/// at all (for example, `path` and its rotated files do not exist); everything about the
/// content is in the [`Report`].
pub fn verify(path: &Path) -> Result<Report, Error> {
    let read_error = |file: &Path| {
        let file = file.to_owned();
        move |source| Error::Read { path: file, source }
    };
    let mut files: Vec<PathBuf> = rotated_files(path)
        .map_err(read_error(path))?
        .into_iter()
        .map(|(_, file)| file)
        .collect();
    // A crash right after rotating can leave no active file; with no files at all, the
    // missing active file is the error to report.
    if path.exists() || files.is_empty() {
        files.push(path.to_owned());
    }
    let mut walk = Walk {
        report: Report {
            records: 0,
            files: files.len(),
            chain_start: None,
            torn_tail: None,
            problem: None,
        },
        prev: None,
    };
    let last = files.len().saturating_sub(1);
    for (index, file) in files.iter().enumerate() {
        let reader = BufReader::new(File::open(file).map_err(read_error(file))?);
        let stop = walk
            .file(file, reader, index == last)
            .map_err(read_error(file))?;
        if stop {
            break;
        }
    }
    Ok(walk.report)
}

// === impl Walk ===

impl Walk {
    /// Checks one file; returns whether a problem ended the check.
    fn file(
        &mut self,
        file: &Path,
        mut reader: impl BufRead,
        is_last: bool,
    ) -> std::io::Result<bool> {
        let mut bytes = Vec::new();
        let mut line = 0_u64;
        loop {
            bytes.clear();
            let read = reader.read_until(b'\n', &mut bytes)?;
            if read == 0 {
                return Ok(false);
            }
            line += 1;
            let Some(content) = bytes.strip_suffix(b"\n") else {
                let (file, bytes) = (file.to_owned(), read as u64);
                if is_last {
                    self.report.torn_tail = Some(TornTail { file, line, bytes });
                    return Ok(false);
                }
                self.report.problem = Some(Problem::UnterminatedRotated { file, line, bytes });
                return Ok(true);
            };
            if let Some(problem) = self.line(file, line, content) {
                self.report.problem = Some(problem);
                return Ok(true);
            }
        }
    }

    /// Checks one complete line and advances the chain.
    fn line(&mut self, file: &Path, line: u64, content: &[u8]) -> Option<Problem> {
        let chained: Chained = match serde_json::from_slice(content) {
            Ok(chained) => chained,
            Err(error) => {
                let message = error.to_string();
                return Some(Problem::InvalidJson {
                    file: file.to_owned(),
                    line,
                    message,
                });
            }
        };
        match &self.prev {
            None if chained.prev != GENESIS_PREV => self.report.chain_start = Some(chained.prev),
            None => {}
            Some(expected) if *expected != chained.prev => {
                return Some(Problem::HashMismatch {
                    file: file.to_owned(),
                    line,
                    expected: expected.clone(),
                    found: chained.prev,
                });
            }
            Some(_) => {}
        }
        self.prev = Some(record::line_hash(content));
        self.report.records += 1;
        None
    }
}

// === impl Report ===

impl Report {
    /// Whether no problem was found; a torn tail alone still counts as ok.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} records in {} files", self.records, self.files)?;
        if let Some(prev) = &self.chain_start {
            write!(
                f,
                "; chain starts at prev={prev} (older files were deleted)"
            )?;
        }
        Ok(())
    }
}

// === impl TornTail ===

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` line {}: torn last line (crash while writing): {} bytes without newline",
            self.file.display(),
            self.line,
            self.bytes,
        )
    }
}

// === impl Problem ===

impl Problem {
    /// The file and 1-based line number the problem is at.
    pub fn location(&self) -> (&Path, u64) {
        match self {
            Problem::HashMismatch { file, line, .. }
            | Problem::InvalidJson { file, line, .. }
            | Problem::UnterminatedRotated { file, line, .. } => (file, *line),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, line) = self.location();
        write!(f, "`{}` line {line}: ", file.display())?;
        match self {
            Problem::HashMismatch {
                expected, found, ..
            } => write!(
                f,
                "hash mismatch: record was changed, dropped or reordered \
                 (prev is {found}, the line before hashes to {expected})",
            ),
            Problem::InvalidJson { message, .. } => write!(f, "invalid JSON: {message}"),
            Problem::UnterminatedRotated { bytes, .. } => write!(
                f,
                "rotated file ends without newline: {bytes} bytes after the last complete line",
            ),
        }
    }
}

//! Load generation and latency reporting: the library behind `verdict bench`.
//!
//! It measures any decision endpoint (Verdict's, another PDP's, a webhook) over HTTP/1.1
//! keep-alive, or Verdict's engine in-process, and reports what a user of that endpoint sees:
//! throughput and the latency distribution (HdrHistogram, 3 significant digits, recorded in
//! nanoseconds), with errors counted by HTTP status and by transport error kind.
//!
//! # How load is generated
//!
//! `connections` tokio tasks each own one connection (or, in-process, one caller) and send one
//! request at a time on it. Each task stops by itself at the end of the run: no request is
//! started after `warmup + duration`, and each request in flight is bounded by a timeout.
//! Requests started during the warm-up are sent but not recorded.
//!
//! - **Closed loop** (no rate): each task sends its next request as soon as the previous
//!   answer arrived. Latency is the time from sending to the end of the answer's body.
//!   Throughput is what the endpoint can sustain at that concurrency.
//! - **Open loop** (`rate` requests/s in total): each task has a fixed schedule of *intended*
//!   send times, `rate / connections` per second, the tasks' schedules phase-shifted so the
//!   total is evenly spread. Latency is measured from the intended send time, not from when
//!   the request actually left. This is the correction for *coordinated omission*: when the
//!   endpoint stalls, a closed loop stops sending and so never records the requests that
//!   would have waited behind the stall; here the requests that should have been sent during
//!   the stall are sent late and charged the time they waited (as in wrk2). A task that falls
//!   behind sends back to back until it catches up. Slots whose intended time passed but that
//!   could not be sent before the end of the run are counted as `missed`, not recorded.
//!
//! Each task records into its own histogram; they are merged at the end. The live progress
//! line (when enabled) reads a shared interval histogram that the tasks also record into.
//!
//! Layout: `load.rs` runs the tasks (HTTP and in-process callers), `report.rs` turns their
//! results into a [`Report`] (table and JSON), `plot.rs` draws reports as an SVG
//! percentile plot, `compare.rs` is the comparison harness (`verdict bench compare`), and
//! `floor.rs` is the bare hyper server it uses as the floor.
//!
//! This module must not be on the request path of `verdict serve`: it is a client.

mod compare;
mod floor;
mod load;
mod plot;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

pub use compare::{CompareOptions, compare};
pub use floor::serve_floor;
pub use load::{HttpTarget, InProcess, http_once, run_http, run_in_process};
pub use plot::plot_svg;
pub use report::{Distribution, ErrorCounts, Latency, Report};

/// Default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the load runs and at what pace.
#[derive(Debug, Clone)]
pub struct Load {
    /// Concurrent tasks, each with its own connection; at least 1.
    pub connections: usize,
    /// Open loop at this many requests/s in total; `None` is a closed loop.
    pub rate: Option<f64>,
    /// Sent but not recorded, before the measured window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Longest wait for one answer; a request over it counts as a `timeout` error.
    pub timeout: Duration,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
}

/// Request bodies, sent round-robin (each task starts at its own offset).
#[derive(Debug, Clone)]
pub struct Bodies {
    /// At least one body.
    bodies: Vec<Bytes>,
}

/// Why a benchmark could not run or its inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read `{}`: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error: part of the message, not a `source`, so `{:#}` prints it once.
        cause: std::io::Error,
    },
    /// A line of a JSON lines file is not what it should be.
    #[error("`{}` line {line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A whole file is not what it should be.
    #[error("`{}`: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The target URL is not usable.
    #[error("url `{url}`: {message}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A header given as `Name: value` is not one.
    #[error("header `{0}`: expected `Name: value`")]
    Header(String),
    /// The endpoint could not be reached before the run.
    #[error("cannot connect to `{url}`: {message}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// Invalid load settings.
    #[error("{0}")]
    Settings(String),
    /// The engine could not be set up (in-process mode) or the harness failed.
    #[error("{0}")]
    Setup(String),
    /// Writing an output failed.
    #[error("cannot write `{}`: {cause}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error: part of the message, not a `source`, so `{:#}` prints it once.
        cause: std::io::Error,
    },
}

// === impl Load ===

impl Load {
    /// Checks the settings before a run.
    pub fn validate(&self) -> Result<(), Error> {
        if self.connections == 0 {
            return Err(Error::Settings("--connections must be at least 1".to_owned()));
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            return Err(Error::Settings(format!("--rate must be a positive number of requests/s, not `{r}`")));
        }
        if self.duration.is_zero() {
            return Err(Error::Settings("--duration must be more than 0 s".to_owned()));
        }
        Ok(())
    }
}

// === impl Bodies ===

impl Bodies {
    /// Bodies given directly; `None` when the list is empty.
    pub fn new(bodies: Vec<Bytes>) -> Option<Bodies> {
        (!bodies.is_empty()).then_some(Bodies { bodies })
    }

    /// One body: the file's content, which must be JSON.
    pub fn from_file(path: &Path) -> Result<Bodies, Error> {
        let text = read(path)?;
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&text) {
            return Err(Error::File { path: path.to_owned(), message: format!("not JSON: {e}") });
        }
        Ok(Bodies { bodies: vec![Bytes::from(text)] })
    }

    /// A request mix: one JSON body per non-empty line.
    pub fn from_jsonl(path: &Path) -> Result<Bodies, Error> {
        Self::lines(path, |_, value| Ok(Some(value)))
    }

    /// The `request` member of every evaluation record of a Verdict decision log (batch items
    /// included; search records are skipped, their requests are not evaluations).
    pub fn from_decision_log(path: &Path) -> Result<Bodies, Error> {
        Self::lines(path, |_, mut value| {
            let search = value.get("decided_by").and_then(serde_json::Value::as_str).is_some_and(|d| d.starts_with("search:"));
            match value.get_mut("request").map(serde_json::Value::take) {
                Some(_) if search => Ok(None),
                Some(request @ serde_json::Value::Object(_)) => Ok(Some(request)),
                Some(_) => Err("`request` is not a JSON object".to_owned()),
                None => Err("not a decision record: no `request` member".to_owned()),
            }
        })
    }

    /// The bodies.
    pub fn as_slice(&self) -> &[Bytes] {
        &self.bodies
    }

    fn lines(
        path: &Path,
        mut pick: impl FnMut(usize, serde_json::Value) -> Result<Option<serde_json::Value>, String>,
    ) -> Result<Bodies, Error> {
        let text = read(path)?;
        let text = String::from_utf8(text)
            .map_err(|e| Error::File { path: path.to_owned(), message: format!("not UTF-8: {e}") })?;
        let mut bodies = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let err = |message: String| Error::Line { path: path.to_owned(), line: line_no, message };
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| err(format!("not JSON: {e}")))?;
            let Some(body) = pick(line_no, value).map_err(err)? else { continue };
            let bytes = serde_json::to_vec(&body).map_err(|e| err(e.to_string()))?;
            bodies.push(Bytes::from(bytes));
        }
        Bodies::new(bodies)
            .ok_or_else(|| Error::File { path: path.to_owned(), message: "no request in the file".to_owned() })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), cause: source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mix.jsonl");
        std::fs::write(&path, "{\"a\":1}\n\n{\"b\":2}\n{oops\n").unwrap();
        let err = Bodies::from_jsonl(&path).unwrap_err().to_string();
        assert!(err.contains("mix.jsonl` line 4: not JSON"), "{err}");

        std::fs::write(&path, "{\"a\":1}\n\n{\"b\":2}\n").unwrap();
        assert_eq!(Bodies::from_jsonl(&path).unwrap().as_slice().len(), 2);

        std::fs::write(&path, "\n\n").unwrap();
        let err = Bodies::from_jsonl(&path).unwrap_err().to_string();
        assert!(err.contains("no request"), "{err}");
    }

    #[test]
    fn decision_log_records_give_their_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        std::fs::write(&path, "{\"v\":1,\"request\":{\"subject\":{\"id\":\"x\"}}}\n{\"v\":1,\"id\":\"2\"}\n").unwrap();
        let err = Bodies::from_decision_log(&path).unwrap_err().to_string();
        assert!(err.contains("line 2: not a decision record"), "{err}");
        std::fs::write(
            &path,
            "{\"v\":1,\"request\":{\"subject\":{\"id\":\"x\"}}}\n{\"v\":1,\"decided_by\":\"search:subject\",\"request\":{\"s\":1}}\n",
        )
        .unwrap();
        let b = Bodies::from_decision_log(&path).unwrap();
        assert_eq!(b.as_slice(), [Bytes::from_static(b"{\"subject\":{\"id\":\"x\"}}")]);
    }
}

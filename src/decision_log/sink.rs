//! The writer: the only code that writes, rotates or repairs decision-log files, either on
//! its own thread (`fsync`) or inline on the callers' tasks (`write`; see [`Inline`]).
//!
//! Position in the request flow: behind the bounded queue that `DecisionLog::record` feeds.
//! Each request's task waits on a oneshot until the group holding its record is written.
//!
//! The writer thread (`fsync`) must not run on a tokio worker or call async code (it blocks
//! on the queue and on the disk). In inline mode (`write`) the combining request does the
//! buffered `write` on its tokio worker: microseconds normally. A disk that stalls holds that
//! worker, and can hold up the whole runtime for as long: if the other workers are parked on a
//! condition variable rather than on the I/O and timer driver, nothing polls the driver until
//! the write returns (seen with a FIFO nobody reads in a test). Neither may answer a caller before the caller's
//! whole group is written.
//!
//! # Design
//!
//! Answer after write. A decision that was answered but not logged is the one failure the
//! log exists to prevent, so `record` returns only once its line is in the file (`write`) or
//! on disk (`fsync`). A crash can then lose only decisions nobody received.
//!
//! Group commit. One `write` (and one `fsync`) per record would cap throughput at the
//! disk's sync rate. Instead the writer blocks for one record, then takes everything else
//! already queued (up to `queue_capacity`), encodes the group into one buffer, issues one
//! `write`, optionally one `sync_data`, and only then wakes every waiter of the group. Under
//! load groups grow by themselves, so the cost per record falls as the load rises. JSON
//! encoding and hashing happen here too, off the request path.
//!
//! Overflow. The queue is bounded. When it is full, `record` waits up to `enqueue_timeout`
//! for room, then fails with `QueueFull`, which the server answers with 503. Memory stays
//! bounded and no decision is ever answered unlogged.
//!
//! Write failure. If opening, writing or syncing fails (disk full, file removed,
//! permissions), every waiter of that group gets `Error::Write` and the file handle is
//! dropped. The next group reopens the path the way startup does. The chain continues from
//! the last complete line actually in the file, so a partly written group costs no link.
//! Before each group the writer checks that the path still names the open file (an inotify
//! watch on its directory, and a `statx` when that reports something or once a second), so
//! records are never written into a file that was removed or moved away (a move of a
//! directory above the file's own is seen within that second).
//!
//! Torn tails. A crash in the middle of a `write` can leave a last line without its newline.
//! Its caller was never answered. On open, the bytes after the last newline are copied to
//! `PATH.torn-<unix_ms>` and truncated off, with a `warn!`, and the chain continues from the
//! last complete line.
//!
//! Rotation. Once the active file reaches `max_bytes`, it is renamed to `PATH.<n>` (n grows
//! and is never reused) and a fresh `PATH` is opened. The chain runs on across files. A file
//! can exceed `max_bytes` by at most one group. The file is synced before the rename, even in
//! `write` mode, so no file chains from a rotated file that a power loss could still cut
//! short; in `write` mode a flush thread syncs the active file every 8 MiB behind the writer,
//! so that sync has little left to do. Files beyond `max_files` are deleted on a short-lived
//! thread; `close` waits for it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use super::record::{self, GENESIS_PREV, Record};
use super::{Config, Durability, Error, Stats};

/// Bytes read per step while scanning a file backwards for newlines.
const TAIL_CHUNK: u64 = 64 * 1024;

/// One message on the queue to the writer thread.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every job is a record; boxing it would add an allocation per decision"
)]
pub(super) enum Job {
    /// Write `record`, then answer on `done`. Queued by `DecisionLog::record`. `done` is a
    /// oneshot: the writer sends exactly one reply, once the record's group is written or
    /// has failed; `DecisionLog::record` waits on it. If the writer stops without replying,
    /// the dropped sender closes it and the caller sees `Error::Closed`.
    Record {
        record: Record,
        done: oneshot::Sender<Result<(), Error>>,
    },
    /// Write everything queued so far, fsync, and stop. Sender: `DecisionLog::close`.
    Close,
}

/// Writer counters behind [`Stats`]; relaxed atomics, read without locking.
#[derive(Debug, Default)]
pub(super) struct Counters {
    records_written: AtomicU64,
    groups_written: AtomicU64,
    write_errors: AtomicU64,
    queue_full: AtomicU64,
    rotation_errors: AtomicU64,
    file_bytes: AtomicU64,
}

/// State owned by the writer thread.
struct Writer {
    path: PathBuf,
    durability: Durability,
    max_bytes: u64,
    max_files: usize,
    /// Most records taken into one group.
    max_group: usize,
    /// The open active file; `None` after a failure or a failed rotation, until reopened.
    active: Option<Active>,
    /// Hash of the last line known to be complete in the log: the next record's `prev`.
    /// INVARIANT: only advanced after the group containing that line was written.
    prev: String,
    /// `n` for the next `PATH.<n>`.
    next_rotation: u64,
    /// The group being written, reused.
    buf: Vec<u8>,
    counters: Arc<Counters>,
    /// Sends `true` once everything is flushed (see `Shared::stopped`); `None` inline.
    stopped: Option<watch::Sender<bool>>,
    /// Threads deleting old rotated files (see `rotate_if_full`); joined by `finish`,
    /// finished ones dropped at each rotation.
    pruning: Vec<std::thread::JoinHandle<()>>,
    /// `write` mode: the thread that syncs the active file behind the writer (see
    /// `sync_behind`); started on first use, `None` until then or after it died.
    flusher: Option<std::sync::mpsc::SyncSender<File>>,
    /// Bytes written since the active file was last handed to the flusher.
    unsynced: u64,
    /// After a failed rename: no rotation is tried before this.
    rotate_after: Option<std::time::Instant>,
}

/// In `write` mode the active file is synced in the background every this many bytes, so the
/// sync before a rotation has at most about this much left to write.
const SYNC_EVERY: u64 = 8 * 1024 * 1024;

/// The open active file.
struct Active {
    file: File,
    id: FileId,
    len: u64,
    /// Events on the file's directory, set up before the file was opened; `None` where
    /// inotify is not available (then every group looks the path up).
    watch: Option<Watch>,
    /// When the path was last looked up (see [`Active::still_at`]).
    looked_up: std::time::Instant,
}

/// How often the path is looked up even when the directory's events say nothing happened: a
/// rename of a directory above the file's own, or a retargeted symlink among them, sends no
/// event to the watched directory.
pub(super) const LOOKUP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A record waiting in the current group.
struct Pending {
    record: Record,
    done: oneshot::Sender<Result<(), Error>>,
}

/// Result of opening the active file.
struct Opened {
    active: Active,
    /// Hash of its last complete line, if it has one.
    last_hash: Option<String>,
}

/// Where the complete lines of a file end, and the last of them.
struct Tail {
    complete: u64,
    last_line: Option<Vec<u8>>,
}

/// Identifies a file independently of its path, to notice that the path moved.
#[cfg(unix)]
type FileId = (u64, u64);
#[cfg(not(unix))]
type FileId = ();

/// How records reach the file: see [`spawn`].
pub(super) enum Started {
    /// The writer thread, behind a queue; with its "stopped" signal (see `Shared`).
    Thread(mpsc::Sender<Job>, watch::Receiver<bool>),
    /// Group commit on the callers' own tasks.
    Inline(Arc<Inline>),
}

/// Opens the log at `config.path` and sets up its writer.
///
/// With `durability = "write"` records are committed inline: the caller that finds the
/// writer free writes every record queued so far in one `write` on its own task, a few
/// microseconds of buffered I/O, and answers the others; no thread hop, no wake-up of a
/// writer thread. With `fsync`, whose `sync_data` can take milliseconds, a dedicated writer
/// thread does the committing so no tokio worker ever waits on the disk.
pub(super) fn spawn(config: &Config, counters: Arc<Counters>) -> Result<Started, Error> {
    let inline = config.durability == Durability::Write;
    let (writer, stopped) = open_writer(config, counters, !inline)?;
    if inline {
        return Ok(Started::Inline(Arc::new(Inline {
            combiner: parking_lot::Mutex::new(Combiner { writer: Some(writer), group: Vec::new() }),
            closed: std::sync::atomic::AtomicBool::new(false),
            pending: parking_lot::Mutex::new(Vec::new()),
            capacity: config.queue_capacity,
            // As after a long run of groups of one, just past a probe.
            lone_groups: std::sync::atomic::AtomicU32::new(COMPANY_MEMORY + 1),
        })));
    }
    let (queue_tx, queue_rx) = mpsc::channel(config.queue_capacity);
    std::thread::Builder::new()
        .name("decision-log".to_owned())
        .spawn(move || writer.run(queue_rx))
        .map_err(Error::Spawn)?;
    let stopped = stopped.ok_or(Error::ZeroCapacity)?;
    Ok(Started::Thread(queue_tx, stopped))
}

/// Opens the active file, finds where the chain stands, and builds the writer (with a
/// "stopped" channel when it will run on its own thread).
fn open_writer(
    config: &Config,
    counters: Arc<Counters>,
    threaded: bool,
) -> Result<(Writer, Option<watch::Receiver<bool>>), Error> {
    if config.queue_capacity == 0 {
        return Err(Error::ZeroCapacity);
    }
    let open_error = |source| Error::Open {
        path: config.path.clone(),
        source,
    };
    let opened = open_active(&config.path).map_err(open_error)?;
    let rotated = rotated_files(&config.path).map_err(open_error)?;
    let newest_rotated = rotated.last();
    // A crash between rotating and the first write leaves a fresh (or missing) `PATH`: the
    // chain then continues from the newest rotated file.
    let prev = match (opened.last_hash, newest_rotated) {
        (Some(hash), _) => hash,
        (None, Some((_, newest))) => last_line_hash(newest)
            .map_err(open_error)?
            .unwrap_or_else(|| GENESIS_PREV.to_owned()),
        (None, None) => GENESIS_PREV.to_owned(),
    };
    let next_rotation = newest_rotated.map_or(1, |(n, _)| n.saturating_add(1));
    counters
        .file_bytes
        .store(opened.active.len, Ordering::Relaxed);

    let (stopped_tx, stopped_rx) = if threaded {
        let (tx, rx) = watch::channel(false);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let writer = Writer {
        path: config.path.clone(),
        durability: config.durability,
        max_bytes: config.max_bytes,
        max_files: config.max_files,
        max_group: config.queue_capacity,
        active: Some(opened.active),
        prev,
        next_rotation,
        buf: Vec::new(),
        counters,
        stopped: stopped_tx,
        pruning: Vec::new(),
        flusher: None,
        unsynced: 0,
        rotate_after: None,
    };
    Ok((writer, stopped_rx))
}

/// Group commit without a writer thread (`durability = "write"`).
///
/// Callers push their record on `pending`, then try to take `writer`. The one that gets it
/// (the combiner) writes everything pending as one group and answers each caller's oneshot;
/// the others just wait on theirs. After releasing the writer the combiner looks at
/// `pending` once more, so a record pushed while it was writing is never stranded: either
/// its caller then finds the writer free, or the combiner sees it. A combiner writes at most
/// `MAX_PASSES` groups before handing what is left to a new task, so one request never
/// works for everyone else for long. All of it is synchronous: a dropped request future
/// cannot stop a combiner half-way.
pub(super) struct Inline {
    /// Held by the combiner while it writes.
    combiner: parking_lot::Mutex<Combiner>,
    /// Set by `close` before it takes the last pending records; `push` refuses afterwards
    /// (checked under the `pending` lock, so no record slips in behind the final group).
    closed: std::sync::atomic::AtomicBool,
    /// Records waiting for the next group, at most `capacity`.
    pending: parking_lot::Mutex<Vec<Pending>>,
    capacity: usize,
    /// Groups of one record written since the last group of several (see `has_company`).
    /// Written only by the holder of `combiner`.
    lone_groups: std::sync::atomic::AtomicU32,
}

/// Groups of one record in a row after which records stop waiting for company. One stray
/// group of one under load must not end the grouping that load depends on.
pub(super) const COMPANY_MEMORY: u32 = 16;

/// After that, one record in this many still waits, to find out whether company has come:
/// requests that are ready but not yet read cannot be seen any other way, and a runtime
/// with one worker never has two decisions under way at once.
pub(super) const COMPANY_PROBE: u32 = 16;

/// What the combiner of [`Inline`] holds.
struct Combiner {
    /// The file and the chain; `None` once closed.
    writer: Option<Writer>,
    /// The group being written, swapped with `pending` so that both keep their capacity and
    /// taking a group allocates nothing. Empty between groups (`commit` drains it).
    group: Vec<Pending>,
}

/// Why [`Inline::push`] did not queue a record.
pub(super) enum Refused {
    /// `capacity` records are waiting; the record, for a retry.
    Full(Box<Record>),
    /// The log is closed.
    Closed,
}

/// Groups one combiner writes before handing over.
const MAX_PASSES: usize = 4;

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inline").field("pending", &self.pending.lock().len()).finish_non_exhaustive()
    }
}

impl Inline {
    /// Queues `record`, or says why not (handing a full queue's record back for a retry).
    pub(super) fn push(&self, record: Record) -> Result<oneshot::Receiver<Result<(), Error>>, Refused> {
        let mut pending = self.pending.lock();
        if self.closed.load(Ordering::SeqCst) {
            return Err(Refused::Closed);
        }
        if pending.len() >= self.capacity {
            return Err(Refused::Full(Box::new(record)));
        }
        let (done, written) = oneshot::channel();
        pending.push(Pending { record, done });
        Ok(written)
    }

    /// Writes what is pending if no one else is writing (see the type's docs).
    pub(super) fn drain(self: &Arc<Self>) {
        for _ in 0..MAX_PASSES {
            let Some(mut combiner) = self.combiner.try_lock() else {
                // The holder will see our records after it releases the writer.
                return;
            };
            let written = combiner.commit_pending(&self.pending);
            if written > 0 {
                let lone = match written {
                    1 => self.lone_groups.load(Ordering::Relaxed).wrapping_add(1),
                    _ => 0,
                };
                self.lone_groups.store(lone, Ordering::Relaxed);
            } else {
                drop(combiner);
                if self.pending.lock().is_empty() {
                    return;
                }
            }
        }
        if self.pending.lock().is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let me = Arc::clone(self);
                runtime.spawn(async move { me.drain() });
            }
            // Not on a runtime (a plain thread): keep going here until nothing is left.
            Err(_) => {
                while !self.pending.lock().is_empty() {
                    let Some(mut combiner) = self.combiner.try_lock() else { return };
                    combiner.commit_pending(&self.pending);
                }
            }
        }
    }

    /// Whether one of the last [`COMPANY_MEMORY`] groups held more than one record, a sign
    /// that records arrive close together so that waiting for the next ones pays; or, failing
    /// that, whether it is time for a probe (see [`COMPANY_PROBE`]).
    pub(super) fn has_company(&self) -> bool {
        let lone = self.lone_groups.load(Ordering::Relaxed);
        lone < COMPANY_MEMORY || lone.is_multiple_of(COMPANY_PROBE)
    }

    /// Writes everything pending, fsyncs, and refuses further records. Blocking.
    pub(super) fn close(&self) {
        // First: from here on `push` refuses, so the group taken below is the last.
        self.closed.store(true, Ordering::SeqCst);
        let mut combiner = self.combiner.lock();
        combiner.commit_pending(&self.pending);
        if let Some(w) = combiner.writer.take() {
            w.finish();
        }
    }
}

impl Combiner {
    /// Takes everything pending as one group and writes it, or answers it `Closed` once the
    /// writer is gone. How many records it took.
    fn commit_pending(&mut self, pending: &parking_lot::Mutex<Vec<Pending>>) -> usize {
        std::mem::swap(&mut *pending.lock(), &mut self.group);
        let taken = self.group.len();
        if taken == 0 {
            return 0;
        }
        match &mut self.writer {
            Some(w) => w.commit(&mut self.group),
            None => {
                for p in self.group.drain(..) {
                    let _unanswered = p.done.send(Err(Error::Closed));
                }
            }
        }
        taken
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        self.close();
    }
}

/// Deletes the rotated files of `path` beyond the newest `max_files`. Runs on its own thread;
/// two of these may overlap, and each only deletes files older than the newest `max_files` it
/// listed.
fn prune(path: &Path, max_files: usize) {
    let files = match rotated_files(path) {
        Ok(files) => files,
        Err(error) => {
            warn!(path = %path.display(), %error, "cannot list rotated decision logs");
            return;
        }
    };
    let excess = files.len().saturating_sub(max_files);
    for (_, old) in files.iter().take(excess) {
        match fs::remove_file(old) {
            // An overlapping `prune` got there first.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => warn!(path = %old.display(), %error, "cannot delete old decision log"),
            Ok(()) => {}
        }
    }
}

/// Rotated files of `path` (`PATH.<n>`), oldest (smallest `n`) first.
pub(super) fn rotated_files(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let dir = dir_of(path);
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(suffix) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        // `parse` alone would accept `+1`.
        if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A directory with such a name is not a log file (and blocks rotating onto its name).
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        if let Ok(n) = suffix.parse::<u64>() {
            found.push((n, dir.join(&file_name)));
        }
    }
    found.sort_unstable_by_key(|(n, _)| *n);
    Ok(found)
}

/// The directory `path` is in (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// `PATH.<suffix>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Opens (or creates) the active file, moves a torn tail aside and finds the last line.
fn open_active(path: &Path) -> io::Result<Opened> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    // First, so that a rename or removal after the file is opened cannot go unseen.
    let watch = Watch::new(path);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let meta = file.metadata()?;
    // Devices and pipes report 0 and are never scanned.
    let len = meta.len();
    let tail = scan_tail(&mut file, len)?;
    if tail.complete < len {
        move_torn_tail(path, &mut file, tail.complete, len)?;
    }
    Ok(Opened {
        active: Active {
            file,
            id: file_id(&meta),
            len: tail.complete,
            watch,
            looked_up: std::time::Instant::now(),
        },
        last_hash: tail.last_line.map(|line| record::line_hash(&line)),
    })
}

/// Hash of the last complete line of the file at `path`, if any.
fn last_line_hash(path: &Path) -> io::Result<Option<String>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    Ok(scan_tail(&mut file, len)?
        .last_line
        .map(|line| record::line_hash(&line)))
}

/// Finds the end of the last complete line in the first `len` bytes, and reads that line.
fn scan_tail(file: &mut File, len: u64) -> io::Result<Tail> {
    let Some(last_newline) = rfind_newline(file, len)? else {
        return Ok(Tail {
            complete: 0,
            last_line: None,
        });
    };
    let start = rfind_newline(file, last_newline)?.map_or(0, |at| at + 1);
    let mut line = vec![0; to_usize(last_newline - start)?];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    Ok(Tail {
        complete: last_newline + 1,
        last_line: Some(line),
    })
}

/// Offset of the last `\n` before `end`.
fn rfind_newline(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    let mut high = end;
    while high > 0 {
        let low = high.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0; to_usize(high - low)?];
        file.seek(SeekFrom::Start(low))?;
        file.read_exact(&mut chunk)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(low + at as u64));
        }
        high = low;
    }
    Ok(None)
}

/// Copies the bytes `complete..len` to `PATH.torn-<unix_ms>`, then truncates them off.
fn move_torn_tail(path: &Path, file: &mut File, complete: u64, len: u64) -> io::Result<()> {
    let (saved_to, mut out) = create_torn_file(path)?;
    let context = |error: io::Error| {
        let message = format!("cannot move torn tail to `{}`: {error}", saved_to.display());
        io::Error::new(error.kind(), message)
    };
    file.seek(SeekFrom::Start(complete))?;
    io::copy(&mut Read::by_ref(file).take(len - complete), &mut out).map_err(context)?;
    out.sync_all().map_err(context)?;
    file.set_len(complete)?;
    file.sync_all()?;
    warn!(
        path = %path.display(),
        torn_bytes = len - complete,
        saved_to = %saved_to.display(),
        "decision log ended with a torn line (crash while writing); moved it aside",
    );
    Ok(())
}

/// Creates a new, unused `PATH.torn-<unix_ms>[-k]`.
fn create_torn_file(path: &Path) -> io::Result<(PathBuf, File)> {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    for attempt in 0..100_u32 {
        let suffix = match attempt {
            0 => format!("torn-{unix_ms}"),
            k => format!("torn-{unix_ms}-{k}"),
        };
        let candidate = sibling(path, &suffix);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(file) => return Ok((candidate, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no unused name for the torn tail file",
    ))
}

/// Adds a record to `group`; returns whether `job` asks the writer to stop.
fn take(group: &mut Vec<Pending>, job: Job) -> bool {
    match job {
        Job::Record { record, done } => {
            group.push(Pending { record, done });
            false
        }
        Job::Close => true,
    }
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::other("line too long for memory"))
}

#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_meta: &fs::Metadata) -> FileId {}

/// The [`FileId`] of whatever `path` names now.
///
/// On Linux this asks `statx` for the inode number alone. A full `stat` also reads the
/// file's change time, and since Linux 6.13 a file whose change time was read gets a fresh
/// fine-grained timestamp at its next `write`, which dirties the inode in the journal: asking
/// for the times before every group made every group's `write` pay for an inode update.
#[cfg(target_os = "linux")]
fn path_id(path: &Path) -> io::Result<FileId> {
    use rustix::fs::{AtFlags, CWD, StatxFlags, makedev, statx};
    let stat = statx(CWD, path, AtFlags::empty(), StatxFlags::INO)?;
    Ok((makedev(stat.stx_dev_major, stat.stx_dev_minor), stat.stx_ino))
}

#[cfg(not(target_os = "linux"))]
fn path_id(path: &Path) -> io::Result<FileId> {
    fs::metadata(path).map(|meta| file_id(&meta))
}

// === impl Active ===

impl Active {
    /// Whether `path` still names this file.
    ///
    /// A path lookup (`statx`) is the sure answer, but it cost about a sixth of the server's
    /// CPU per request at one connection, where every group holds one record. So the
    /// directory is watched: a rename, removal or creation of this name is queued by the
    /// kernel before the call that made it returns, and reading the queue (one non-blocking
    /// `read`) finds it. Only then, or at least every [`LOOKUP_EVERY`], is the path looked up.
    fn still_at(&mut self, path: &Path) -> bool {
        let now = std::time::Instant::now();
        let quiet = self.watch.as_mut().is_some_and(|watch| !watch.disturbed());
        if quiet && now.duration_since(self.looked_up) < LOOKUP_EVERY {
            return true;
        }
        self.looked_up = now;
        path_id(path).is_ok_and(|id| id == self.id)
    }
}

/// inotify on the active file's directory, for [`Active::still_at`].
#[cfg(target_os = "linux")]
struct Watch {
    fd: rustix::fd::OwnedFd,
    /// The file's name in the directory.
    name: std::ffi::OsString,
    buf: Vec<std::mem::MaybeUninit<u8>>,
}

#[cfg(target_os = "linux")]
impl Watch {
    /// Watches the directory of `path` for renames, removals and creations; `None` when
    /// inotify is not available (out of instances or watches).
    fn new(path: &Path) -> Option<Watch> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let name = path.file_name()?.to_owned();
        let dir = dir_of(path);
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
        let events = WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE
            | WatchFlags::CREATE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        inotify::add_watch(&fd, dir, events).ok()?;
        Some(Watch { fd, name, buf: vec![std::mem::MaybeUninit::uninit(); 4096] })
    }

    /// Whether, since the last call, anything happened to the file's name or to the
    /// directory itself (or events were lost). Reads every queued event.
    fn disturbed(&mut self) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let mut reader = rustix::fs::inotify::Reader::new(&self.fd, &mut self.buf);
        let mut disturbed = false;
        loop {
            match reader.next() {
                // Events without a name are the directory's own (moved, deleted, unwatched)
                // or a queue overflow.
                Ok(event) => {
                    disturbed |= event.file_name().is_none_or(|name| name.to_bytes() == self.name.as_bytes());
                }
                Err(rustix::io::Errno::AGAIN) => return disturbed,
                Err(_) => return true,
            }
        }
    }
}

/// Elsewhere there is no watch: every group looks the path up.
#[cfg(not(target_os = "linux"))]
struct Watch;

#[cfg(not(target_os = "linux"))]
impl Watch {
    fn new(_path: &Path) -> Option<Watch> {
        None
    }

    fn disturbed(&mut self) -> bool {
        true
    }
}

// === impl Counters ===

impl Counters {
    pub(super) fn count_queue_full(&self) {
        self.queue_full.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> Stats {
        Stats {
            records_written: self.records_written.load(Ordering::Relaxed),
            groups_written: self.groups_written.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
            rotation_errors: self.rotation_errors.load(Ordering::Relaxed),
            file_bytes: self.file_bytes.load(Ordering::Relaxed),
        }
    }
}

// === impl Writer ===

impl Writer {
    /// Commits groups until closed or until every handle is dropped, then fsyncs and signals.
    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut group = Vec::with_capacity(self.max_group);
        loop {
            // `None`: every sender (so every handle) is gone and the queue is empty.
            let Some(first) = queue.blocking_recv() else {
                break;
            };
            let mut closing = take(&mut group, first);
            while !closing && group.len() < self.max_group {
                match queue.try_recv() {
                    Ok(job) => closing = take(&mut group, job),
                    Err(_) => break,
                }
            }
            if closing {
                // Refuse new records, but write every one already accepted.
                queue.close();
                while let Ok(job) = queue.try_recv() {
                    take(&mut group, job);
                }
            }
            self.commit(&mut group);
            if closing {
                break;
            }
        }
        self.finish();
    }

    /// Writes one group and answers each of its callers.
    fn commit(&mut self, group: &mut Vec<Pending>) {
        if group.is_empty() {
            return;
        }
        if let Err(error) = self.ensure_open() {
            self.fail(group.drain(..).map(|pending| pending.done), error);
            return;
        }
        self.buf.clear();
        let mut prev = self.prev.clone();
        let mut waiters = Vec::with_capacity(group.len());
        for Pending { record, done } in group.drain(..) {
            match record::encode_line(&mut self.buf, &record, &mut prev) {
                Ok(()) => {
                    self.buf.push(b'\n');
                    waiters.push(done);
                }
                Err(error) => {
                    warn!(%error, id = %record.id, "cannot encode decision record");
                    let _unanswered = done.send(Err(Error::Encode(error)));
                }
            }
        }
        if waiters.is_empty() {
            return;
        }
        if let Err(error) = self.write_buf() {
            self.active = None;
            self.fail(waiters, error);
            return;
        }
        self.prev = prev;
        self.counters
            .records_written
            .fetch_add(waiters.len() as u64, Ordering::Relaxed);
        self.counters.groups_written.fetch_add(1, Ordering::Relaxed);
        for done in waiters {
            let _unanswered = done.send(Ok(()));
        }
        self.rotate_if_full();
    }

    /// Writes (and maybe syncs) `buf` to the active file.
    fn write_buf(&mut self) -> io::Result<()> {
        let active = self
            .active
            .as_mut()
            .ok_or_else(|| io::Error::other("log file not open"))?;
        active.file.write_all(&self.buf)?;
        if self.durability == Durability::Fsync {
            active.file.sync_data()?;
        }
        active.len += self.buf.len() as u64;
        self.counters
            .file_bytes
            .store(active.len, Ordering::Relaxed);
        self.sync_behind(self.buf.len());
        Ok(())
    }

    /// Answers every waiter with the same write error; the next group reopens the file.
    fn fail(
        &self,
        waiters: impl IntoIterator<Item = oneshot::Sender<Result<(), Error>>>,
        error: io::Error,
    ) {
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        warn!(path = %self.path.display(), %error, "cannot write decision log; failing the group");
        let error = Arc::new(error);
        for done in waiters {
            let _unanswered = done.send(Err(Error::Write(Arc::clone(&error))));
        }
    }

    /// Makes sure `active` is open and still the file at `path`.
    fn ensure_open(&mut self) -> io::Result<()> {
        if let Some(active) = &mut self.active {
            // Checked before every group: a record is never written into a file that was
            // deleted, or moved away by log rotation (which may compress and delete it right
            // after).
            if active.still_at(&self.path) {
                return Ok(());
            }
            warn!(path = %self.path.display(), "decision log file was moved or removed; reopening");
            self.active = None;
        }
        self.reopen()
    }

    /// Opens `path` the way startup does. A file that already has lines decides `prev`;
    /// a new or empty one continues the chain from memory.
    fn reopen(&mut self) -> io::Result<()> {
        let opened = open_active(&self.path)?;
        if let Some(hash) = opened.last_hash {
            self.prev = hash;
        }
        self.counters
            .file_bytes
            .store(opened.active.len, Ordering::Relaxed);
        self.active = Some(opened.active);
        Ok(())
    }

    /// Syncs a full active file, renames it to `PATH.<n>`, opens a fresh one, and leaves
    /// pruning to a thread of its own.
    fn rotate_if_full(&mut self) {
        let full = self
            .active
            .as_ref()
            .is_some_and(|active| active.len >= self.max_bytes);
        if self.max_bytes == 0 || !full {
            return;
        }
        if self.rotate_after.is_some_and(|at| std::time::Instant::now() < at) {
            return;
        }
        let target = sibling(&self.path, &self.next_rotation.to_string());
        if let Some(active) = &self.active {
            // Rotated files are complete history: durable even in `write` mode, and before the
            // next file chains from them. `sync_behind` keeps what is left small; syncing a
            // whole 256 MiB file here held every request for most of a second (778 ms measured).
            if let Err(error) = active.file.sync_data() {
                warn!(path = %self.path.display(), %error, "cannot sync decision log before rotating");
            }
        }
        self.active = None;
        self.unsynced = 0;
        if let Err(error) = fs::rename(&self.path, &target) {
            warn!(path = %self.path.display(), target = %target.display(), %error, retry_s = super::ROTATE_RETRY.as_secs(), "cannot rotate decision log; writing on");
            self.counters.rotation_errors.fetch_add(1, Ordering::Relaxed);
            self.rotate_after = Some(std::time::Instant::now() + super::ROTATE_RETRY);
        } else {
            self.rotate_after = None;
            self.next_rotation = self.next_rotation.saturating_add(1);
            self.prune_behind();
        }
        // On failure the next group retries through `ensure_open`.
        if let Err(error) = self.reopen() {
            warn!(path = %self.path.display(), %error, "cannot open decision log after rotating");
        }
    }

    /// Deletes rotated files beyond `max_files` on a thread of its own: unlinking a large
    /// file takes the file system a while, and nothing waits for it.
    fn prune_behind(&mut self) {
        if self.max_files == 0 {
            return;
        }
        let (path, max_files) = (self.path.clone(), self.max_files);
        self.pruning.retain(|thread| !thread.is_finished());
        let spawned = std::thread::Builder::new()
            .name("decision-log-prune".to_owned())
            .spawn(move || prune(&path, max_files));
        match spawned {
            Ok(thread) => self.pruning.push(thread),
            // The next rotation prunes again.
            Err(error) => warn!(path = %self.path.display(), %error, "cannot start a thread to delete old decision logs"),
        }
    }

    /// `write` mode: every [`SYNC_EVERY`] bytes, hands a handle of the active file to the
    /// flusher thread, which syncs it while the writer goes on. Nothing waits for it; it only
    /// keeps the dirty tail small for the sync that must precede a rotation.
    fn sync_behind(&mut self, written: usize) {
        if self.durability != Durability::Write || self.max_bytes == 0 {
            return;
        }
        self.unsynced = self.unsynced.saturating_add(written as u64);
        if self.unsynced < SYNC_EVERY {
            return;
        }
        let Some(active) = &self.active else { return };
        if self.flusher.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<File>(1);
            let spawned = std::thread::Builder::new()
                .name("decision-log-flush".to_owned())
                .spawn(move || {
                    for file in rx {
                        // A failure here is seen again, and reported, by the sync before rotating.
                        let _ = file.sync_data();
                    }
                });
            match spawned {
                Ok(_) => self.flusher = Some(tx),
                Err(error) => warn!(%error, "cannot start the decision log's flush thread"),
            }
        }
        let (Some(flusher), Ok(file)) = (&self.flusher, active.file.try_clone()) else { return };
        match flusher.try_send(file) {
            // Full: a sync is already queued and will cover these bytes too.
            Ok(()) | Err(std::sync::mpsc::TrySendError::Full(_)) => self.unsynced = 0,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => self.flusher = None,
        }
    }

    /// Final fsync, then tells `close` the writer is done.
    fn finish(mut self) {
        for thread in self.pruning.drain(..) {
            let _panicked = thread.join().is_err();
        }
        if let Some(active) = &self.active
            && let Err(error) = active.file.sync_data()
        {
            warn!(path = %self.path.display(), %error, "cannot sync decision log on close");
        }
        if let Some(stopped) = &self.stopped {
            stopped.send_replace(true);
        }
    }
}

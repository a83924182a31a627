//! Tests for the decision log: format, group commit, failures, rotation, verification.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use super::record::line_hash;
use super::*;

fn config(dir: &TempDir) -> Config {
    Config {
        path: dir.path().join("decisions.jsonl"),
        durability: Durability::Write,
        max_bytes: 0,
        max_files: 0,
        queue_capacity: 1024,
        enqueue_timeout: Duration::from_secs(10),
    }
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

fn prev_of(line: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    value["prev"].as_str().unwrap().to_owned()
}

/// Writes `n` records one after another (`r0`, `r1`, …) and closes the log.
async fn write_records(config: Config, n: usize) {
    let log = DecisionLog::spawn(config).unwrap();
    for i in 0..n {
        log.record(Record::for_test(format!("r{i}"))).await.unwrap();
    }
    log.close().await;
}

#[track_caller]
fn assert_clean(report: &Report, records: u64, files: usize) {
    assert_eq!(report.problem, None, "{report}");
    assert_eq!(report.torn_tail, None, "{report}");
    assert_eq!((report.records, report.files), (records, files), "{report}");
}

#[tokio::test]
async fn line_has_v_first_prev_last_and_skips_empty_fields() {
    let dir = TempDir::new().unwrap();
    let config = config(&dir);
    let mut with_extras = Record::for_test("r1");
    with_extras.reason = Some("tiny VM".to_owned());
    with_extras.batch = Some(BatchPos { index: 2, of: 3 });
    with_extras.hooks = vec![HookCall {
        name: "cost".to_owned(),
        version: "ab12cd".to_owned(),
        elapsed_us: 40,
        memory_bytes: 1024,
        logs: vec!["spend=10".to_owned()],
        error: None,
    }];
    let log = DecisionLog::spawn(config.clone()).unwrap();
    log.record(Record::for_test("r0")).await.unwrap();
    log.record(with_extras.clone()).await.unwrap();
    log.close().await;

    let lines = lines(&config.path);
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with(r#"{"v":1,"id":"r0","time":"#),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with(&format!(r#","prev":"{GENESIS_PREV}"}}"#)),
        "{}",
        lines[0]
    );
    for skipped in [
        "reason",
        "outputs",
        "hooks",
        "errors",
        "request_id",
        "batch",
    ] {
        assert!(
            !lines[0].contains(&format!("\"{skipped}\"")),
            "{skipped} in {}",
            lines[0]
        );
    }
    assert!(lines[1].contains(r#""hooks":[{"name":"cost","version":"ab12cd","elapsed_us":40,"memory_bytes":1024,"logs":["spend=10"]}]"#));
    assert!(lines[1].contains(r#""batch":{"index":2,"of":3}"#));
    assert_eq!(prev_of(&lines[1]), line_hash(lines[0].as_bytes()));
    let parsed: Record = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(parsed, with_extras);
}

#[test]
fn handle_is_cheap_to_share_and_record_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_shared<T: Clone + Send + Sync + 'static>() {}
    assert_shared::<DecisionLog>();
    let dir = TempDir::new().unwrap();
    let log = DecisionLog::spawn(config(&dir)).unwrap();
    let record = log.record(Record::for_test("r0"));
    assert_send(&record);
    let close = log.close();
    assert_send(&close);
}

#[test]
fn durability_deserializes_lowercase() {
    let parsed: Vec<Durability> = serde_json::from_str(r#"["write","fsync"]"#).unwrap();
    assert_eq!(parsed, [Durability::Write, Durability::Fsync]);
    assert!(serde_json::from_str::<Durability>(r#""Fsync""#).is_err());
}

#[test]
fn timestamp_is_rfc3339_millis_utc() {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    assert_eq!(timestamp(at), "2023-11-14T22:13:20.123Z");
}

#[test]
fn zero_queue_capacity_is_rejected() {
    let dir = TempDir::new().unwrap();
    let config = Config {
        queue_capacity: 0,
        ..config(&dir)
    };
    assert!(matches!(
        DecisionLog::spawn(config),
        Err(Error::ZeroCapacity)
    ));
}

/// A move of the file's own directory is seen at the next group, like a move of the file; a
/// move further up sends the watched directory no event and is seen within `LOOKUP_EVERY`.
#[tokio::test]
async fn moved_directories_are_followed_by_a_new_file() {
    let dir = TempDir::new().unwrap();
    let config = Config { path: dir.path().join("a/b/decisions.jsonl"), ..config(&dir) };
    let log = DecisionLog::spawn(config.clone()).unwrap();
    log.record(Record::for_test("r0")).await.unwrap();
    fs::rename(dir.path().join("a/b"), dir.path().join("a/b0")).unwrap();
    log.record(Record::for_test("r1")).await.unwrap();
    assert_eq!(lines(&dir.path().join("a/b0/decisions.jsonl")).len(), 1);
    assert_eq!(lines(&config.path).len(), 1, "the parent's move was not seen at once");

    fs::rename(dir.path().join("a"), dir.path().join("a0")).unwrap();
    log.record(Record::for_test("r2")).await.unwrap();
    tokio::time::sleep(super::sink::LOOKUP_EVERY + Duration::from_millis(100)).await;
    log.record(Record::for_test("r3")).await.unwrap();
    log.close().await;
    let moved: Vec<String> = lines(&dir.path().join("a0/b/decisions.jsonl"));
    assert!(moved.len() == 1 || moved.len() == 2, "{moved:?}");
    let after = lines(&config.path);
    assert!(after.last().unwrap().contains(r#""id":"r3""#), "{after:?}");
    assert_eq!(moved.len() + after.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_are_all_written_and_chained() {
    concurrent_records(Durability::Fsync).await;
}

/// The same with inline group commit (`write`, the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_are_all_written_and_chained_inline() {
    concurrent_records(Durability::Write).await;
}

async fn concurrent_records(durability: Durability) {
    let dir = TempDir::new().unwrap();
    let config = Config {
        durability,
        ..config(&dir)
    };
    let log = DecisionLog::spawn(config.clone()).unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(500));
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let (log, barrier) = (log.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                log.record(Record::for_test(format!("r{i}"))).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // Every awaited record is already in the file, before close.
    let written = lines(&config.path);
    assert_eq!(written.len(), 500);
    let mut ids: Vec<String> = written
        .iter()
        .map(|line| serde_json::from_str::<Record>(line).unwrap().id)
        .collect();
    ids.sort();
    let mut want: Vec<String> = (0..500).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(ids, want);

    let stats = log.stats();
    assert_eq!(stats.records_written, 500);
    assert!(stats.groups_written < 500, "no grouping: {stats:?}");
    assert_eq!(stats.file_bytes, fs::metadata(&config.path).unwrap().len());
    log.close().await;
    assert_clean(&verify(&config.path).unwrap(), 500, 1);
}

/// Whether `record` let another task run before it returned (a current-thread runtime runs
/// the spawned task only when the test's task yields).
async fn waited_a_turn(record: impl std::future::Future<Output = Result<(), Error>>) -> bool {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let other = tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    record.await.unwrap();
    let waited = ran.load(Ordering::SeqCst);
    other.await.unwrap();
    waited
}

/// A decision that is the only one under way is written at once; with another under way the
/// first waits a turn and both share one group; after a run of lone groups records stop
/// waiting again, but for an occasional probe.
#[tokio::test(flavor = "current_thread")]
async fn records_wait_for_company_only_when_there_is_some() {
    let dir = TempDir::new().unwrap();
    let log = DecisionLog::spawn(config(&dir)).unwrap();
    assert!(!waited_a_turn(log.arrive().record(Record::for_test("alone"))).await);
    assert_eq!((log.stats().records_written, log.stats().groups_written), (1, 1));

    let (first, second) = (log.arrive(), log.arrive());
    let (a, b) = tokio::join!(first.record(Record::for_test("a")), second.record(Record::for_test("b")));
    a.unwrap();
    b.unwrap();
    assert_eq!((log.stats().records_written, log.stats().groups_written), (3, 2), "not one group");

    // A group of several was just written: the next lone records still wait, in case more
    // are coming, until `COMPANY_MEMORY` groups of one in a row; then one in `COMPANY_PROBE`
    // waits, to find out whether company has come.
    let (memory, probe) = (super::sink::COMPANY_MEMORY, super::sink::COMPANY_PROBE);
    let mut waits = Vec::new();
    for i in 0..memory + 2 * probe {
        waits.push(waited_a_turn(log.arrive().record(Record::for_test(format!("r{i}")))).await);
    }
    let waited: Vec<u32> = (0..).zip(&waits).filter(|(_, w)| **w).map(|(i, _)| i).collect();
    let want: Vec<u32> = (0..memory).chain((memory..memory + 2 * probe).filter(|i| i.is_multiple_of(probe))).collect();
    assert_eq!(waited, want);
    // A plain `record` (batches, search) always waits.
    assert!(waited_a_turn(log.record(Record::for_test("plain"))).await);
    log.close().await;
    assert_clean(&verify(&config(&dir).path).unwrap(), u64::from(4 + memory + 2 * probe), 1);
}

#[tokio::test]
async fn reopening_continues_the_chain() {
    let dir = TempDir::new().unwrap();
    write_records(config(&dir), 3).await;
    write_records(config(&dir), 2).await;
    let report = verify(&config(&dir).path).unwrap();
    assert_clean(&report, 5, 1);
    assert_eq!(report.chain_start, None);
}

#[tokio::test]
async fn rotation_continues_the_chain_across_files() {
    let dir = TempDir::new().unwrap();
    let config = Config {
        max_bytes: 1000,
        ..config(&dir)
    };
    write_records(config.clone(), 20).await;

    let rotated: Vec<u64> = sink::rotated_files(&config.path)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(rotated.len() >= 3, "{rotated:?}");
    assert_eq!(rotated, (1..=rotated.len() as u64).collect::<Vec<_>>());
    let first_of_active = &lines(&config.path)[0];
    let last_of_newest = lines(&sink::rotated_files(&config.path).unwrap().last().unwrap().1)
        .pop()
        .unwrap();
    assert_eq!(
        prev_of(first_of_active),
        line_hash(last_of_newest.as_bytes())
    );

    let report = verify(&config.path).unwrap();
    assert_clean(&report, 20, rotated.len() + 1);
    assert_eq!(report.chain_start, None);
}

/// Files large enough for the background flush (every 8 MiB in `write` mode) and for
/// rotations after it: every record is there and the chain verifies across the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_flush_and_rotation_keep_every_record() {
    let dir = TempDir::new().unwrap();
    let config = Config {
        max_bytes: 9 * 1024 * 1024,
        ..config(&dir)
    };
    let log = DecisionLog::spawn(config.clone()).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let log = log.clone();
        tasks.spawn(async move {
            for i in 0..180 {
                let mut record = Record::for_test(format!("t{task}-{i}"));
                record.reason = Some("x".repeat(16 * 1024));
                log.record(record).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    log.close().await;

    let rotated = sink::rotated_files(&config.path).unwrap();
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    let report = verify(&config.path).unwrap();
    assert_clean(&report, 8 * 180, 3);
}

/// A rotation whose rename fails (here a directory holds the target name) leaves the writer
/// in the full file, losing nothing, and is not tried again on every group.
#[tokio::test]
async fn a_failed_rotation_writes_on_and_waits_before_retrying() {
    let dir = TempDir::new().unwrap();
    let config = Config {
        max_bytes: 1000,
        ..config(&dir)
    };
    // Rotated files are never directories: neither the writer nor `verify` takes it for one.
    fs::create_dir_all(dir.path().join("decisions.jsonl.1").join("in-the-way")).unwrap();
    let log = DecisionLog::spawn(config.clone()).unwrap();
    for i in 0..30 {
        log.record(Record::for_test(format!("r{i}"))).await.unwrap();
    }
    let stats = log.stats();
    log.close().await;

    assert_eq!(stats.records_written, 30);
    assert_eq!(stats.rotation_errors, 1, "{stats:?}");
    assert_eq!(lines(&config.path).len(), 30);
    assert_clean(&verify(&config.path).unwrap(), 30, 1);
}

#[tokio::test]
async fn max_files_deletes_the_oldest_and_verify_starts_from_the_first_kept() {
    let dir = TempDir::new().unwrap();
    let config = Config {
        max_bytes: 1000,
        max_files: 2,
        ..config(&dir)
    };
    write_records(config.clone(), 30).await;

    let rotated = sink::rotated_files(&config.path).unwrap();
    assert_eq!(rotated.len(), 2);
    assert!(rotated[0].0 > 1, "oldest should be gone: {rotated:?}");
    let kept = lines(&rotated[0].1).len() + lines(&rotated[1].1).len() + lines(&config.path).len();

    let report = verify(&config.path).unwrap();
    assert_clean(&report, kept as u64, 3);
    assert_eq!(report.chain_start, Some(prev_of(&lines(&rotated[0].1)[0])));
    assert!(
        report.to_string().contains("chain starts at prev="),
        "{report}"
    );
}

#[tokio::test]
async fn crash_between_rotation_and_first_write_continues_from_rotated_file() {
    let dir = TempDir::new().unwrap();
    let config = config(&dir);
    write_records(config.clone(), 3).await;
    // What a crash right after the rename leaves: `PATH.1` and no `PATH`.
    fs::rename(&config.path, dir.path().join("decisions.jsonl.1")).unwrap();
    write_records(
        Config {
            max_bytes: 1_000_000,
            ..config.clone()
        },
        2,
    )
    .await;
    assert_clean(&verify(&config.path).unwrap(), 5, 2);
}

/// A log of 5 records, for the tamper tests.
async fn five_lines(dir: &TempDir) -> (PathBuf, Vec<String>) {
    let config = config(dir);
    write_records(config.clone(), 5).await;
    let lines = lines(&config.path);
    assert_eq!(lines.len(), 5);
    (config.path, lines)
}

#[track_caller]
fn assert_mismatch_at(report: &Report, want_line: u64) {
    match &report.problem {
        Some(problem @ Problem::HashMismatch { line, .. }) => {
            assert_eq!(*line, want_line, "{problem}");
            assert!(
                problem
                    .to_string()
                    .contains("hash mismatch: record was changed, dropped or reordered")
            );
        }
        other => panic!("want a hash mismatch at line {want_line}, got {other:?}"),
    }
    assert!(!report.is_ok());
}

#[tokio::test]
async fn edited_byte_is_detected() {
    let dir = TempDir::new().unwrap();
    let (path, mut lines) = five_lines(&dir).await;
    lines[2] = lines[2].replacen(r#""id":"r2""#, r#""id":"r9""#, 1);
    write_lines(&path, &lines);
    let report = verify(&path).unwrap();
    assert_mismatch_at(&report, 4);
    assert_eq!(report.records, 3);
}

#[tokio::test]
async fn deleted_line_is_detected() {
    let dir = TempDir::new().unwrap();
    let (path, mut lines) = five_lines(&dir).await;
    lines.remove(2);
    write_lines(&path, &lines);
    assert_mismatch_at(&verify(&path).unwrap(), 3);
}

#[tokio::test]
async fn swapped_lines_are_detected() {
    let dir = TempDir::new().unwrap();
    let (path, mut lines) = five_lines(&dir).await;
    lines.swap(1, 2);
    write_lines(&path, &lines);
    assert_mismatch_at(&verify(&path).unwrap(), 2);
}

#[tokio::test]
async fn invalid_json_is_reported_with_its_line() {
    let dir = TempDir::new().unwrap();
    let (path, mut lines) = five_lines(&dir).await;
    lines[3].insert(0, '#');
    write_lines(&path, &lines);
    let report = verify(&path).unwrap();
    match &report.problem {
        Some(problem @ Problem::InvalidJson { line: 4, file, .. }) => {
            assert_eq!(file, &path);
            assert!(problem.to_string().contains("invalid JSON"), "{problem}");
        }
        other => panic!("want invalid JSON at line 4, got {other:?}"),
    }
}

#[tokio::test]
async fn torn_tail_is_a_warning_in_verify() {
    let dir = TempDir::new().unwrap();
    let (path, lines) = five_lines(&dir).await;
    let mut text = lines.join("\n");
    text.push_str("\n{\"v\":1,\"id\":\"r5\",\"ti");
    fs::write(&path, text).unwrap();
    let report = verify(&path).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.records, 5);
    let torn = report.torn_tail.unwrap();
    assert_eq!((torn.line, torn.bytes), (6, 20));
    assert!(
        torn.to_string()
            .contains("torn last line (crash while writing): 20 bytes without newline")
    );
}

#[tokio::test]
async fn torn_tail_is_moved_aside_on_open_and_the_chain_continues() {
    let dir = TempDir::new().unwrap();
    let (path, lines) = five_lines(&dir).await;
    let torn = "{\"v\":1,\"id\":\"r5\",\"ti";
    fs::write(&path, format!("{}\n{torn}", lines.join("\n"))).unwrap();

    let log = DecisionLog::spawn(config(&dir)).unwrap();
    assert_eq!(log.stats().file_bytes, fs::metadata(&path).unwrap().len());
    log.record(Record::for_test("r6")).await.unwrap();
    log.close().await;

    assert_clean(&verify(&path).unwrap(), 6, 1);
    let saved: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("decisions.jsonl.torn-")
        })
        .collect();
    assert_eq!(saved.len(), 1);
    assert_eq!(fs::read_to_string(&saved[0]).unwrap(), torn);
}

#[tokio::test]
async fn file_with_only_a_torn_line_starts_a_new_chain() {
    let dir = TempDir::new().unwrap();
    let config = config(&dir);
    fs::write(&config.path, "{\"v\":1,").unwrap();
    write_records(config.clone(), 2).await;
    let report = verify(&config.path).unwrap();
    assert_clean(&report, 2, 1);
    assert_eq!(report.chain_start, None);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn write_failure_fails_every_caller_of_the_group() {
    let config = Config {
        max_bytes: 0,
        ..Config::new("/dev/full")
    };
    let log = DecisionLog::spawn(config).unwrap();
    for i in 0..2 {
        let result = log.record(Record::for_test(format!("r{i}"))).await;
        assert!(matches!(result, Err(Error::Write(_))), "{result:?}");
    }
    let stats = log.stats();
    assert_eq!((stats.write_errors, stats.records_written), (2, 0));
    log.close().await;
}

#[tokio::test]
async fn writer_recovers_after_the_file_is_replaced_by_a_directory() {
    let dir = TempDir::new().unwrap();
    let config = config(&dir);
    let log = DecisionLog::spawn(config.clone()).unwrap();
    log.record(Record::for_test("r0")).await.unwrap();
    let before = lines(&config.path);

    fs::remove_file(&config.path).unwrap();
    fs::create_dir(&config.path).unwrap();
    let result = log.record(Record::for_test("r1")).await;
    assert!(matches!(result, Err(Error::Write(_))), "{result:?}");

    fs::remove_dir(&config.path).unwrap();
    log.record(Record::for_test("r2")).await.unwrap();
    log.close().await;

    // The new file continues the chain from the last record written before the failure.
    let after = lines(&config.path);
    assert_eq!(after.len(), 1);
    assert_eq!(prev_of(&after[0]), line_hash(before[0].as_bytes()));
    let report = verify(&config.path).unwrap();
    assert_clean(&report, 1, 1);
    assert_eq!(report.chain_start, Some(line_hash(before[0].as_bytes())));
    assert_eq!(log.stats().write_errors, 1);
}

#[tokio::test]
async fn removed_file_is_recreated_not_written_into_the_void() {
    let dir = TempDir::new().unwrap();
    let config = config(&dir);
    let log = DecisionLog::spawn(config.clone()).unwrap();
    log.record(Record::for_test("r0")).await.unwrap();
    fs::remove_file(&config.path).unwrap();
    log.record(Record::for_test("r1")).await.unwrap();
    log.close().await;
    let after = lines(&config.path);
    assert_eq!(after.len(), 1);
    assert!(after[0].contains(r#""id":"r1""#));
}

#[tokio::test]
async fn moved_file_is_followed_by_a_new_one_at_the_next_group() {
    let dir = TempDir::new().unwrap();
    let config = config(&dir);
    let moved = dir.path().join("moved.jsonl");
    let log = DecisionLog::spawn(config.clone()).unwrap();
    log.record(Record::for_test("r0")).await.unwrap();
    // Log rotation by rename: the next group goes to a new file at the path.
    fs::rename(&config.path, &moved).unwrap();
    log.record(Record::for_test("r1")).await.unwrap();
    log.close().await;
    assert_eq!(lines(&moved).len(), 1);
    let after = lines(&config.path);
    assert_eq!(after.len(), 1);
    assert!(after[0].contains(r#""id":"r1""#));
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_fails_after_the_enqueue_timeout() {
    use std::io::Read;

    let dir = TempDir::new().unwrap();
    let path = dir.path().join("pipe");
    // A FIFO nobody reads: the writer blocks once the pipe buffer (64 KiB) is full.
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let config = Config {
        path: path.clone(),
        queue_capacity: 2,
        enqueue_timeout: Duration::from_millis(50),
        ..config(&dir)
    };
    let log = DecisionLog::spawn(config).unwrap();
    let mut big = Record::for_test("big");
    big.request = serde_json::json!({ "padding": "x".repeat(256 * 1024) }).into();
    // The big record is written on a thread of its own: the combiner that takes it blocks in
    // `write`, and on a worker of this test's runtime it could stop the runtime's timers
    // altogether (when the other worker happens to be parked on a condition variable rather
    // than on the driver, nothing drives the timers until the write returns).
    let stuck = std::thread::spawn({
        let log = log.clone();
        move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(log.record(big))
        }
    });
    // Let the writer take the big record and block in `write`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stuck.is_finished(), "the big record was written into a pipe nobody reads");
    let queued: Vec<_> = (0..2)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.record(Record::for_test(format!("q{i}"))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let result = tokio::time::timeout(Duration::from_secs(10), log.record(Record::for_test("late")))
        .await
        .expect("a full queue fails after the enqueue timeout, it does not wait for the writer");
    assert!(
        matches!(result, Err(Error::QueueFull { waited }) if waited == Duration::from_millis(50)),
        "{result:?}"
    );
    assert_eq!(log.stats().queue_full, 1);

    // Drain the pipe: everything that was queued is written, then `close` ends the writer
    // and with it the last write end, so the reader sees end of file.
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        all
    });
    tokio::task::spawn_blocking(move || stuck.join().unwrap()).await.unwrap().unwrap();
    for task in queued {
        task.await.unwrap().unwrap();
    }
    log.close().await;
    let all = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert_eq!(all.iter().filter(|&&b| b == b'\n').count(), 3);
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drains_every_accepted_record_then_refuses() {
    close_drains(Durability::Fsync).await;
}

/// The same with inline group commit: `close` racing 300 records leaves none unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drains_every_accepted_record_then_refuses_inline() {
    for _ in 0..20 {
        close_drains(Durability::Write).await;
    }
}

async fn close_drains(durability: Durability) {
    let dir = TempDir::new().unwrap();
    let config = Config {
        durability,
        ..config(&dir)
    };
    let log = DecisionLog::spawn(config.clone()).unwrap();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { (i, log.record(Record::for_test(format!("r{i}"))).await) })
        })
        .collect();
    tokio::task::yield_now().await;
    log.close().await;

    let written = lines(&config.path).join("\n");
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(())) => {
                accepted += 1;
                assert!(
                    written.contains(&format!(r#""id":"r{i}""#)),
                    "r{i} answered but not written"
                );
            }
            (_, Err(Error::Closed)) => {}
            (i, Err(error)) => panic!("r{i}: {error}"),
        }
    }
    assert_eq!(log.stats().records_written, accepted);
    assert!(matches!(
        log.record(Record::for_test("after")).await,
        Err(Error::Closed)
    ));
    log.close().await; // idempotent, returns at once
    assert_clean(&verify(&config.path).unwrap(), accepted, 1);
}

#[tokio::test]
async fn dropping_every_handle_keeps_what_was_written() {
    let dir = TempDir::new().unwrap();
    let config = config(&dir);
    let log = DecisionLog::spawn(config.clone()).unwrap();
    log.record(Record::for_test("r0")).await.unwrap();
    drop(log);
    assert_clean(&verify(&config.path).unwrap(), 1, 1);
}

#[test]
fn verify_of_a_missing_log_is_a_read_error() {
    let dir = TempDir::new().unwrap();
    let result = verify(&dir.path().join("nothing.jsonl"));
    assert!(matches!(result, Err(Error::Read { .. })), "{result:?}");
}

#[test]
fn error_messages_are_lowercase_without_trailing_period() {
    let errors = [
        Error::QueueFull {
            waited: Duration::from_millis(200),
        },
        Error::Closed,
        Error::Write(Arc::new(std::io::Error::other("disk full"))),
        Error::Open {
            path: PathBuf::from("/x"),
            source: std::io::Error::other("denied"),
        },
        Error::ZeroCapacity,
    ];
    for error in errors {
        let message = error.to_string();
        assert!(message.starts_with(char::is_lowercase), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }
}

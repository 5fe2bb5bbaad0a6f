//! The kv-copy handler, built from plugins/kv-copy, through the real runtime: full lifecycle,
//! resume from checkpoints, rollback to the exact previous target, verification, and the same
//! on sled-backed buckets.

use plover_host::connectors::{KvBucket, MemoryBucket, SledBuckets};
use plover_host::model::{
    ErrorKind, LogLevel, ObjectResult, ObjectStatus, Severity, StepKind, StepOutcome,
};
use plover_host::runtime::JobEvents;
use plover_host::testing::{Crash, HarnessError, RecordingEvents, TestHarness};
use plover_tests::artifacts;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn harness_with_sessions(n: usize) -> (TestHarness, Arc<MemoryBucket>, Arc<MemoryBucket>) {
    let mut h = TestHarness::load(artifacts::KV_COPY).unwrap();
    let source = h.bucket("source");
    for i in 0..n {
        source.insert(
            format!("session/{i:05}"),
            format!("{{\"user\":{i},\"ttl\":3600}}"),
        );
    }
    source.insert("other/1", "not copied");
    let target = h.bucket("target");
    (h, source, target)
}

fn only_sessions(b: &MemoryBucket) -> BTreeMap<String, Vec<u8>> {
    b.snapshot()
        .into_iter()
        .filter(|(k, _)| k.starts_with("session/"))
        .collect()
}

#[test]
fn full_lifecycle_copies_verifies_and_rolls_back_exactly() {
    let (h, source, target) = harness_with_sessions(1234);
    // The target already holds one of the keys (with another value) and an unrelated key.
    target.insert("session/00007", "stale");
    target.insert("unrelated", "keep me");
    let before = target.snapshot();

    let mut spec = h.spec("session-store-move", json!({ "prefix": "session/" }));
    spec.options.batch_size = 100;
    let plan = h.plan(&spec).unwrap();
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["copy", "verify"]);
    assert_eq!(plan.steps[0].kind, StepKind::Migration);
    assert_eq!(plan.steps[0].expected_objects, Some(1234));
    assert_eq!(plan.steps[1].depends_on, ["copy"]);
    assert!(plan.steps[0].reversible && plan.steps[0].resumable);

    let report = h.validate(&spec, &plan).unwrap();
    assert!(report.passed(spec.options.validation_level));
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].code, "target-key-exists");
    assert_eq!(report.findings[0].severity, Severity::Warning);
    assert_eq!(
        target.snapshot(),
        before,
        "plan and validate must not write"
    );

    let copy = h.execute(&spec, &plan.steps[0], None).unwrap();
    assert_eq!(copy.summary, "copied 1234 keys");
    assert_eq!(only_sessions(&target), only_sessions(&source));
    assert_eq!(
        target.snapshot().get("unrelated").map(Vec::as_slice),
        Some(&b"keep me"[..])
    );
    assert!(!target.snapshot().contains_key("other/1"));

    let objects = h.events.objects.lock().unwrap().clone();
    assert_eq!(objects.len(), 1234);
    assert!(
        objects
            .iter()
            .all(|o| o.status == ObjectStatus::Success && o.object_type == "key")
    );
    assert_eq!(
        h.events.checkpoints.lock().unwrap().len(),
        13,
        "one checkpoint per batch of 100"
    );

    let verify = h.execute(&spec, &plan.steps[1], None).unwrap();
    assert!(
        verify.summary.starts_with("verified 1234 keys, sha256 "),
        "{}",
        verify.summary
    );

    h.rollback_all(&spec, &plan).unwrap();
    assert_eq!(
        target.snapshot(),
        before,
        "rollback must restore the target byte for byte"
    );
    assert!(
        h.job_state.snapshot().is_empty(),
        "the journal is consumed by rollback"
    );
}

/// Cancels the job once `after` checkpoints were saved, like an operator pressing cancel.
struct CancelAfter {
    inner: RecordingEvents,
    after: usize,
    saved: AtomicUsize,
}

impl JobEvents for CancelAfter {
    fn log(&self, level: LogLevel, message: String) {
        self.inner.log(level, message)
    }
    fn progress(&self, done: u64, total: Option<u64>, current: Option<String>) {
        self.inner.progress(done, total, current)
    }
    fn objects(&self, results: Vec<ObjectResult>) -> Result<(), String> {
        self.inner.objects(results)
    }
    fn checkpoint(&self, data: Vec<u8>) {
        self.saved.fetch_add(1, Ordering::SeqCst);
        self.inner.checkpoint(data)
    }
    fn is_cancelled(&self) -> bool {
        self.saved.load(Ordering::SeqCst) >= self.after
    }
}

#[test]
fn cancelled_copy_resumes_from_its_checkpoint_without_double_counting() {
    let (h, source, target) = harness_with_sessions(1000);
    let mut spec = h.spec("kv-copy", json!({ "prefix": "session/" }));
    spec.options.batch_size = 64;
    let plan = h.plan(&spec).unwrap();

    let events = Arc::new(CancelAfter {
        inner: RecordingEvents::default(),
        after: 5,
        saved: AtomicUsize::new(0),
    });
    let mut ctx = h.context(None);
    ctx.events = events.clone();
    let err = h
        .plugin
        .execute(&ctx, &spec, &plan.steps[0], None)
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Cancelled);
    assert!(err.retryable);
    assert_eq!(events.inner.object_count(), 5 * 64);
    assert_eq!(only_sessions(&target).len(), 5 * 64);

    // Resume from the last checkpoint with fresh events: only the rest is copied and counted.
    let checkpoint = events.inner.last_checkpoint();
    let report = h.execute(&spec, &plan.steps[0], checkpoint).unwrap();
    assert_eq!(report.summary, "copied 1000 keys");
    assert_eq!(h.events.object_count(), 1000 - 5 * 64);
    let mut names: Vec<String> = events
        .inner
        .objects
        .lock()
        .unwrap()
        .iter()
        .map(|o| o.name.clone())
        .collect();
    names.extend(
        h.events
            .objects
            .lock()
            .unwrap()
            .iter()
            .map(|o| o.name.clone()),
    );
    let unique: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(
        (names.len(), unique.len()),
        (1000, 1000),
        "every key counted exactly once"
    );
    assert!(
        h.events
            .log_lines()
            .iter()
            .any(|l| l == "resuming copy after 320 keys")
    );
    assert_eq!(only_sessions(&target), only_sessions(&source));
}

#[test]
fn rerun_batches_keep_the_first_journal_entry_so_rollback_restores_the_original() {
    let (h, _source, target) = harness_with_sessions(10);
    target.insert("session/00003", "original");
    let before = target.snapshot();
    let spec = h.spec("kv-copy", json!({ "prefix": "session/" }));
    let plan = h.plan(&spec).unwrap();
    // A crash before the first checkpoint means the batch runs again from the start.
    h.execute(&spec, &plan.steps[0], None).unwrap();
    h.execute(&spec, &plan.steps[0], None).unwrap();
    h.rollback(&spec, &plan.steps[0]).unwrap();
    assert_eq!(target.snapshot(), before);
}

#[test]
fn renames_prefix_and_transforms_json_values() {
    let (h, _source, target) = harness_with_sessions(20);
    let spec = h.spec(
        "kv-copy",
        json!({ "prefix": "session/", "rename_prefix": "sess:", "set_fields": { "migrated": true }, "remove_fields": ["ttl"] }),
    );
    let run = h.run_all(&spec).unwrap();
    assert_eq!(run.steps.len(), 2);
    let snap = target.snapshot();
    assert_eq!(snap.len(), 20);
    let v: serde_json::Value = serde_json::from_slice(&snap["sess:00007"]).unwrap();
    assert_eq!(v, json!({ "user": 7, "migrated": true }));
}

#[test]
fn validate_reports_values_that_cannot_be_transformed() {
    let (h, source, _target) = harness_with_sessions(3);
    source.insert("session/bad", "not json");
    let spec = h.spec(
        "kv-copy",
        json!({ "prefix": "session/", "set_fields": { "v": 2 } }),
    );
    let plan = h.plan(&spec).unwrap();
    let report = h.validate(&spec, &plan).unwrap();
    assert!(!report.passed(spec.options.validation_level));
    let errors: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].code, "value-not-transformable");
    assert!(errors[0].message.contains("session/bad"));
}

#[test]
fn verify_detects_a_tampered_target() {
    let (h, _source, target) = harness_with_sessions(300);
    let spec = h.spec("kv-copy", json!({ "prefix": "session/" }));
    let plan = h.plan(&spec).unwrap();
    h.execute(&spec, &plan.steps[0], None).unwrap();
    target.insert("session/00123", "tampered");
    match h.execute(&spec, &plan.steps[1], None) {
        Err(HarnessError::Handler(e)) => {
            assert_eq!(e.kind, ErrorKind::DataCorruption);
            assert!(
                e.message.contains("first differing key session/00123"),
                "{}",
                e.message
            );
        }
        other => panic!("expected data corruption, got {other:?}"),
    }
}

#[test]
fn missing_binding_is_an_invalid_spec_at_plan_time() {
    let mut h = TestHarness::load(artifacts::KV_COPY).unwrap();
    h.bucket("source");
    let spec = h.spec("kv-copy", json!({}));
    match h.plan(&spec) {
        Err(HarnessError::Handler(e)) => {
            assert_eq!(e.kind, ErrorKind::InvalidSpec);
            assert!(e.message.contains("target"), "{}", e.message);
        }
        other => panic!("expected invalid-spec, got {other:?}"),
    }
}

#[test]
fn unknown_parameter_is_an_invalid_spec() {
    let (h, _, _) = harness_with_sessions(1);
    let spec = h.spec("kv-copy", json!({ "prefx": "session/" }));
    match h.plan(&spec) {
        Err(HarnessError::Handler(e)) => {
            assert_eq!(e.kind, ErrorKind::InvalidSpec);
            assert!(e.message.contains("unknown field `prefx`"), "{}", e.message);
        }
        other => panic!("expected invalid-spec, got {other:?}"),
    }
}

#[test]
fn copies_between_sled_buckets_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let buckets = SledBuckets::new(sled::open(dir.path()).unwrap());
    let source = buckets.open("sessions-old").unwrap();
    let target = buckets.open("sessions-new").unwrap();
    let entries: Vec<(String, Vec<u8>)> = (0..2000)
        .map(|i| (format!("s/{i:05}"), vec![i as u8; 64]))
        .collect();
    source.set_many(&entries).unwrap();

    let mut h = TestHarness::load(artifacts::KV_COPY).unwrap();
    h.grant("source", source.clone());
    h.grant("target", target.clone());
    let mut spec = h.spec("kv-copy", json!({ "prefix": "s/" }));
    spec.options.batch_size = 250;
    let run = h.run_all(&spec).unwrap();
    assert_eq!(run.steps[0].1.summary, "copied 2000 keys");
    assert_eq!(target.count("s/").unwrap(), 2000);
    let keys: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
    let copied = target.get_many(&keys).unwrap();
    assert!(
        copied
            .iter()
            .zip(&entries)
            .all(|(got, (_, want))| got.as_ref() == Some(want))
    );

    h.rollback_all(&spec, &run.plan).unwrap();
    assert_eq!(target.count("").unwrap(), 0);
    assert_eq!(
        source.count("").unwrap(),
        2000,
        "rollback never touches the source"
    );
}

/// Names of the failed objects the harness recorded, in order.
fn failed_names(h: &TestHarness) -> Vec<String> {
    h.events
        .objects
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.status == ObjectStatus::Error)
        .map(|o| o.name.clone())
        .collect()
}

#[test]
fn a_bad_value_fails_the_copy_unless_the_job_records_it_and_then_only_it_is_retried() {
    let (h, source, target) = harness_with_sessions(250);
    source.insert("session/00100", "not json");
    target.insert("sess:00042", "old");
    let before = target.snapshot();
    let params = |on_bad: &str| json!({ "prefix": "session/", "rename_prefix": "sess:", "set_fields": { "v": 2 }, "on_bad_value": on_bad });

    // By default one bad value fails the step.
    let mut strict = h.spec("kv-copy", params("fail"));
    strict.options.batch_size = 100;
    let plan = h.plan(&strict).unwrap();
    assert!(
        !h.validate(&strict, &plan)
            .unwrap()
            .passed(strict.options.validation_level)
    );
    match h.execute(&strict, &plan.steps[0], None) {
        Err(HarnessError::Handler(e)) => {
            assert_eq!(e.kind, ErrorKind::StepFailed);
            assert!(e.message.contains("session/00100"), "{}", e.message);
        }
        other => panic!("expected the bad value to fail the step, got {other:?}"),
    }
    h.rollback(&strict, &plan.steps[0]).unwrap();
    assert_eq!(target.snapshot(), before);

    // Recording it: validation warns instead of blocking, the rest is copied, the step is
    // partial, also when it resumes from a checkpoint taken after the bad value's batch.
    let mut spec = h.spec("kv-copy", params("record"));
    spec.options.batch_size = 100;
    let plan = h.plan(&spec).unwrap();
    let report = h.validate(&spec, &plan).unwrap();
    assert!(report.passed(spec.options.validation_level), "{report:?}");
    assert_eq!(report.findings[0].severity, Severity::Warning);
    let objects_before = h.events.object_count();
    let resume_from = match h
        .execute_crashing_after(&spec, &plan.steps[0], None, 2)
        .unwrap()
    {
        Crash::Crashed { resume_from } => resume_from,
        Crash::Finished(r) => panic!("finished before its second checkpoint: {r:?}"),
    };
    let copied = h.execute(&spec, &plan.steps[0], resume_from).unwrap();
    assert_eq!(copied.outcome, StepOutcome::Partial, "{}", copied.summary);
    assert_eq!(
        copied.summary,
        "copied 249 keys, 1 bad values recorded as failed"
    );
    let failed = failed_names(&h);
    assert_eq!(failed, ["sess:00100"], "named as in the target");
    assert_eq!(
        h.events.object_count(),
        objects_before + 250,
        "each key once"
    );
    assert_eq!(target.snapshot().len(), 249, "every key but the bad one");
    assert!(!target.snapshot().contains_key("sess:00100"));
    let verified = h.execute(&spec, &plan.steps[1], None).unwrap();
    assert!(
        verified.summary.starts_with("verified 249 keys")
            && verified.summary.ends_with("left out 1 bad values"),
        "{}",
        verified.summary
    );

    // The operator fixes the value; the retry copies exactly that key.
    source.insert("session/00100", r#"{"user":100}"#);
    source.insert("session/00001", r#"{"user":"changed"}"#);
    let seen = h.events.object_count();
    let retried = h.execute_objects(&spec, &plan.steps[0], &failed).unwrap();
    assert_eq!(retried.outcome, StepOutcome::Complete);
    assert_eq!(retried.summary, "copied 1 of 1 keys again, 0 still bad");
    let objects = h.events.objects.lock().unwrap()[seen..].to_vec();
    assert_eq!(objects.len(), 1);
    assert_eq!(
        (objects[0].name.as_str(), objects[0].status),
        ("sess:00100", ObjectStatus::Success)
    );
    let now = target.snapshot();
    assert_eq!(now["sess:00100"], br#"{"user":100,"v":2}"#);
    assert_eq!(
        now["sess:00001"], br#"{"ttl":3600,"user":1,"v":2}"#,
        "keys not named stay as the first run left them"
    );
    match h.execute_objects(&spec, &plan.steps[1], &failed) {
        Err(HarnessError::Handler(e)) => assert_eq!(e.kind, ErrorKind::InvalidSpec),
        other => panic!("verify records no objects to retry, got {other:?}"),
    }

    // Rollback undoes the first run and the retry alike.
    h.rollback(&spec, &plan.steps[1]).unwrap();
    h.rollback(&spec, &plan.steps[0]).unwrap();
    assert_eq!(target.snapshot(), before);
}

#[test]
fn a_retry_records_a_value_still_bad_and_skips_a_key_gone_from_the_source() {
    let (h, source, _target) = harness_with_sessions(3);
    source.insert("session/bad1", "[1]");
    source.insert("session/bad2", "nope");
    let spec = h.spec(
        "kv-copy",
        json!({ "prefix": "session/", "set_fields": { "v": 2 }, "on_bad_value": "record" }),
    );
    let plan = h.plan(&spec).unwrap();
    h.execute(&spec, &plan.steps[0], None).unwrap();
    let failed = failed_names(&h);
    assert_eq!(failed, ["session/bad1", "session/bad2"]);
    source.delete_many(&["session/bad2".into()]).unwrap();
    let seen = h.events.object_count();
    let again = h.execute_objects(&spec, &plan.steps[0], &failed).unwrap();
    assert_eq!(again.outcome, StepOutcome::Partial);
    let objects = h.events.objects.lock().unwrap()[seen..].to_vec();
    let statuses: Vec<(&str, ObjectStatus)> = objects
        .iter()
        .map(|o| (o.name.as_str(), o.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("session/bad1", ObjectStatus::Error),
            ("session/bad2", ObjectStatus::Skipped)
        ]
    );
}

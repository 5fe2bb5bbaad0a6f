//! The session-move handler, built from plugins/session-move, moving sessions from the real
//! Redis into the real PostgreSQL: full lifecycle, conflicts, schema checks, a copy killed
//! mid-batch and resumed, and 100,000 sessions in one job.

use plover_host::model::{
    LogLevel, MigrationSpec, ObjectResult, ObjectStatus, Severity, ValidationLevel,
};
use plover_host::runtime::{ForceStop, JobEvents, PluginFailure};
use plover_host::testing::{RecordingEvents, TestHarness};
use plover_tests::artifacts;
use plover_tests::services::{RedisPrefix, Schema, redis};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Setup {
    h: TestHarness,
    schema: Schema,
    _space: RedisPrefix,
    sessions: BTreeMap<String, Vec<u8>>,
}

/// `n` sessions under `sess:` (every third with a 120 s time to live) and two keys under
/// `other:` that must not move.
fn setup(tag: &str, n: usize) -> Setup {
    let space = RedisPrefix::new(tag);
    let schema = Schema::new(tag);
    let mut conn = redis();
    let mut sessions = BTreeMap::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let mut pipe = ::redis::pipe();
        for &i in chunk {
            let key = format!("sess:{i:06}");
            let value = format!("{{\"user\":{i},\"cart\":[{}]}}", i % 7).into_bytes();
            let cmd = pipe
                .cmd("SET")
                .arg(format!("{}{key}", space.prefix))
                .arg(&value);
            if i.is_multiple_of(3) {
                cmd.arg("EX").arg(120);
            }
            cmd.ignore();
            sessions.insert(key, value);
        }
        pipe.query::<()>(&mut conn).unwrap();
    }
    for key in ["other:1", "other:2"] {
        ::redis::cmd("SET")
            .arg(format!("{}{key}", space.prefix))
            .arg("not a session")
            .query::<()>(&mut conn)
            .unwrap();
    }
    let mut h = TestHarness::load(artifacts::SESSION_MOVE).unwrap();
    h.grant("source", space.bucket());
    h.grant_connector("target", schema.connector());
    Setup {
        h,
        schema,
        _space: space,
        sessions,
    }
}

impl Setup {
    fn spec(&self, batch: u32) -> MigrationSpec {
        let mut spec = self.h.spec(
            "session-move",
            json!({ "prefix": "sess:", "table": "sessions" }),
        );
        spec.options.batch_size = batch;
        spec
    }

    fn table(&self) -> BTreeMap<String, (Vec<u8>, bool, String)> {
        self.schema
            .client()
            .query(
                "SELECT session_key, data, expires_at IS NOT NULL, moved_by_job FROM sessions",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect()
    }

    fn table_exists(&self) -> bool {
        self.schema
            .client()
            .query_one("SELECT to_regclass('sessions') IS NOT NULL", &[])
            .unwrap()
            .get(0)
    }
}

#[test]
fn full_lifecycle_creates_the_table_moves_verifies_and_rolls_back() {
    let s = setup("smlife", 3000);
    let spec = s.spec(250);
    let plan = s.h.plan(&spec).unwrap();
    let ids: Vec<&str> = plan.steps.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(ids, ["prepare-table", "copy", "verify"]);
    assert_eq!(plan.steps[1].expected_objects, Some(3000));
    let report = s.h.validate(&spec, &plan).unwrap();
    assert!(report.findings.is_empty(), "{report:?}");
    assert!(!s.table_exists(), "plan and validate create nothing");

    let run = s.h.run_all(&spec).unwrap();
    assert_eq!(run.steps[1].1.summary, "moved 3000 sessions (0 skipped)");
    assert!(
        run.steps[2]
            .1
            .summary
            .starts_with("all 3000 sessions present"),
        "{:?}",
        run.steps[2]
    );
    let table = s.table();
    assert_eq!(table.len(), 3000);
    for (key, value) in &s.sessions {
        let (data, expires, by) = &table[key];
        assert_eq!(data, value, "{key}");
        let i: usize = key[5..].parse().unwrap();
        assert_eq!(
            *expires,
            i.is_multiple_of(3),
            "{key}: TTL becomes expires_at"
        );
        assert_eq!(by, "test-job");
    }
    let in_window: bool = s
        .schema
        .client()
        .query_one(
            "SELECT bool_and(expires_at BETWEEN now() + interval '100 seconds' AND now() + interval '121 seconds') FROM sessions WHERE expires_at IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(in_window, "expires_at is now plus the remaining TTL");
    let objects = s.h.events.objects.lock().unwrap().clone();
    // plan, validate and the run's own validate recorded nothing; copy 3000 successes.
    assert_eq!(
        objects
            .iter()
            .filter(|o| o.status == ObjectStatus::Success)
            .count(),
        3000
    );

    s.h.rollback_all(&spec, &run.plan).unwrap();
    assert!(!s.table_exists(), "the table this job created is dropped");
}

#[test]
fn sessions_already_in_the_table_are_skipped_and_survive_rollback() {
    let s = setup("smconf", 500);
    s.schema
        .client()
        .batch_execute(
            "CREATE TABLE sessions (session_key text PRIMARY KEY, data bytea NOT NULL, expires_at timestamptz, moved_by_job text NOT NULL);
             INSERT INTO sessions VALUES ('sess:000005', 'theirs', NULL, 'another-job'), ('unrelated', 'x', NULL, 'another-job');",
        )
        .unwrap();
    let mut spec = s.spec(100);
    spec.options.validation_level = ValidationLevel::Full;
    let plan = s.h.plan(&spec).unwrap();
    assert!(
        plan.risk_notes.iter().any(|n| n.contains("skipped")),
        "{plan:?}"
    );
    let report = s.h.validate(&spec, &plan).unwrap();
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].code, "target-key-exists");
    assert_eq!(report.findings[0].severity, Severity::Warning);

    let run = s.h.run_all(&spec).unwrap();
    assert_eq!(run.steps[1].1.summary, "moved 499 sessions (1 skipped)");
    let objects = s.h.events.objects.lock().unwrap().clone();
    let skipped: Vec<&ObjectResult> = objects
        .iter()
        .filter(|o| o.status == ObjectStatus::Skipped)
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].name, "sess:000005");
    assert_eq!(s.table()["sess:000005"].0, b"theirs", "never overwritten");

    s.h.rollback_all(&spec, &run.plan).unwrap();
    let left: Vec<String> = s.table().into_keys().collect();
    assert_eq!(
        left,
        ["sess:000005", "unrelated"],
        "rollback deletes exactly this job's rows"
    );
}

#[test]
fn a_table_of_the_wrong_shape_fails_validation() {
    let s = setup("smshape", 10);
    s.schema
        .client()
        .batch_execute("CREATE TABLE sessions (session_key text PRIMARY KEY, data text)")
        .unwrap();
    let spec = s.spec(100);
    let plan = s.h.plan(&spec).unwrap();
    let report = s.h.validate(&spec, &plan).unwrap();
    let codes: Vec<(&str, Severity)> = report
        .findings
        .iter()
        .map(|f| (f.code.as_str(), f.severity))
        .collect();
    assert_eq!(codes, [("target-schema", Severity::Error); 3], "{report:?}");
    assert!(
        report.findings[0]
            .message
            .contains("data of type bytea (it has: text)"),
        "{report:?}"
    );
    assert!(!report.passed(spec.options.validation_level));
}

/// Forces the call to stop in the batch after the plugin's `after`-th checkpoint, once that
/// batch's rows are inserted but before they are checkpointed: a host killed mid-batch.
struct StopAfterCheckpoints {
    inner: Arc<RecordingEvents>,
    after: usize,
    seen: AtomicUsize,
    stop: ForceStop,
}

impl JobEvents for StopAfterCheckpoints {
    fn log(&self, level: LogLevel, message: String) {
        self.inner.log(level, message)
    }
    fn progress(&self, done: u64, total: Option<u64>, current: Option<String>) {
        self.inner.progress(done, total, current)
    }
    fn objects(&self, results: Vec<ObjectResult>) -> Result<(), String> {
        self.inner.objects(results)?;
        if self.seen.load(Ordering::SeqCst) == self.after {
            self.stop.trigger();
            // Outlast an epoch tick, so the plugin is stopped as soon as it is back in wasm.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(())
    }
    fn checkpoint(&self, data: Vec<u8>) {
        self.inner.checkpoint(data);
        self.seen.fetch_add(1, Ordering::SeqCst);
    }
    fn is_cancelled(&self) -> bool {
        false
    }
}

#[test]
fn a_copy_killed_mid_batch_keeps_exactly_the_checkpointed_rows_and_resumes_to_the_exact_table() {
    let s = setup("smkill", 4000);
    let spec = s.spec(200);
    let plan = s.h.plan(&spec).unwrap();
    s.h.execute(&spec, &plan.steps[0], None).unwrap();

    let recorded = Arc::new(RecordingEvents::default());
    let mut ctx = s.h.context(None);
    let stop = ForceStop::new();
    ctx.force_stop = stop.clone();
    ctx.events = Arc::new(StopAfterCheckpoints {
        inner: recorded.clone(),
        after: 3,
        seen: AtomicUsize::new(0),
        stop,
    });
    let killed =
        s.h.plugin
            .execute(&ctx, &spec, &plan.steps[1], None)
            .unwrap_err();
    assert_eq!(killed.cause, PluginFailure::ForceStopped, "{killed}");
    // Redis pages are about, not exactly, the batch size: the checkpoint says how many it covers.
    let checkpoint = recorded.checkpoints.lock().unwrap()[2].clone();
    let covered = serde_json::from_slice::<serde_json::Value>(&checkpoint).unwrap()["moved"]
        .as_u64()
        .unwrap() as usize;
    assert!((550..700).contains(&covered), "{covered}");
    assert_eq!(
        s.table().len(),
        covered,
        "the three checkpointed batches are committed; the batch in flight rolled back"
    );
    assert!(
        recorded.object_count() > covered,
        "the killed batch had reported its objects too"
    );

    let before = s.h.events.object_count();
    s.h.execute(&spec, &plan.steps[1], Some(checkpoint))
        .unwrap();
    let resumed: Vec<ObjectResult> = s.h.events.objects.lock().unwrap()[before..].to_vec();
    assert_eq!(
        resumed.len(),
        4000 - covered,
        "the resumed copy reports every session after the checkpoint, the killed batch's again"
    );
    assert!(resumed.iter().all(|o| o.status == ObjectStatus::Success));
    let table = s.table();
    assert_eq!(
        table
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect::<BTreeMap<_, _>>(),
        s.sessions,
        "the final table is exactly the source"
    );
    s.h.execute(&spec, &plan.steps[2], None).unwrap();
}

#[test]
fn one_hundred_thousand_sessions_in_one_job() {
    let s = setup("sm100k", 100_000);
    let spec = s.spec(1000);
    let run = s.h.run_all(&spec).unwrap();
    assert_eq!(run.steps[1].1.summary, "moved 100000 sessions (0 skipped)");
    let count: i64 = s
        .schema
        .client()
        .query_one(
            "SELECT count(*) FROM sessions WHERE moved_by_job = 'test-job'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(count, 100_000);
}

//! The engine with real plugins over a real job store: lifecycle, DAG scheduling, failure
//! and automatic rollback, retries, approval and dry-run gates bound to the plan identity,
//! cancel, pause and resume, timeouts, log retention and the change feed (failures and
//! retries in `failures.rs`, gates and operator control in `control.rs`, partial outcomes and
//! retries of failed objects in `object_retry.rs`). Included by
//! `engine.rs` (the embedded sled store) and `engine_on_postgres.rs` (the PostgreSQL store
//! as one node of a cluster: every change made under the job's lease), which name the store
//! in `super::STORE`.

use plover_host::cluster::{Cluster, ClusterConfig};
use plover_host::connectors::{HostConnections, JobStateSpace, KvBucket, SledBuckets};
use plover_host::engine::job::{EventBody, JobSnapshot};
use plover_host::engine::options::JobOptions;
use plover_host::engine::ownership::Forwarded;
use plover_host::engine::state::{Action, JobStatus, StepStatus};
use plover_host::engine::{DeleteMode, Engine, EngineError, NewMigration};
use plover_host::runtime::{PluginRegistry, Runtime, RuntimeConfig};
use plover_host::store::{JobStore, PgJobStore, SledJobStore};
use plover_tests::artifacts;
use plover_tests::services::Schema;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod control;
mod failures;
mod object_retry;

const WAIT: Duration = Duration::from_secs(60);

fn registry() -> Arc<PluginRegistry> {
    static REG: OnceLock<Arc<PluginRegistry>> = OnceLock::new();
    REG.get_or_init(|| {
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let reg = PluginRegistry::new();
        for path in [
            artifacts::STEPPER,
            artifacts::KV_COPY,
            artifacts::MISBEHAVE,
            artifacts::CONTRACT_V0_2_0,
        ] {
            reg.insert(rt.load_file(path.as_ref()).unwrap()).unwrap();
        }
        Arc::new(reg)
    })
    .clone()
}

/// Which job store the cases run over (each including crate names one).
#[derive(Clone, Copy)]
#[allow(dead_code)]
pub enum Store {
    Sled,
    Postgres,
}

pub(crate) struct Env {
    pub(crate) engine: Engine,
    buckets: SledBuckets,
    /// The PostgreSQL store's schema and this node's place in its cluster.
    pub(crate) cluster: Option<(Arc<Cluster>, Schema)>,
    _dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((cluster, _)) = &self.cluster {
            cluster.stop(Duration::from_secs(5));
        }
    }
}

fn env() -> Env {
    env_with_lease(Duration::from_secs(5))
}

/// With the PostgreSQL store, a node whose leases last `lease`.
pub(crate) fn env_with_lease(lease: Duration) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = plover_host::store::open_database(dir.path()).unwrap();
    let buckets = SledBuckets::new(db.clone());
    let open = |store: Arc<dyn JobStore>, job_state: Arc<dyn JobStateSpace>| {
        let connections = Arc::new(HostConnections::new(
            buckets.clone(),
            job_state,
            BTreeMap::new(),
            true,
        ));
        Engine::open(registry(), store, connections, JobOptions::default()).unwrap()
    };
    let (engine, cluster) = match super::STORE {
        Store::Sled => {
            let store = SledJobStore::open_db(&db).unwrap();
            let job_state = Arc::new(store.job_state());
            (open(Arc::new(store), job_state), None)
        }
        Store::Postgres => {
            let schema = Schema::new("engine");
            let url = schema.store_url();
            let pool = plover_host::store::connect_postgres(&url, 8).unwrap();
            plover_host::store::pg_schema::migrate(&pool).unwrap();
            let cluster = Cluster::new(
                pool.clone(),
                &url,
                ClusterConfig {
                    node_name: "engine-test".into(),
                    lease,
                    api_url: None,
                },
            );
            let store = PgJobStore::new(pool).for_node(cluster.node_id());
            let job_state = Arc::new(store.job_state());
            let engine = open(Arc::new(store), job_state);
            cluster
                .start(
                    engine.clone(),
                    Box::new(|_, _, _| Forwarded::NotTaken),
                    Box::new(|| {}),
                )
                .unwrap();
            (engine, Some((cluster, schema)))
        }
    };
    Env {
        engine,
        buckets,
        cluster,
        _dir: dir,
    }
}

#[allow(dead_code)] // some are used by one including crate only
impl Env {
    pub(crate) fn stepper(&self, steps: Value, options: Value) -> Result<JobSnapshot, EngineError> {
        self.engine.create(
            NewMigration {
                handler: "stepper@^0.1".into(),
                parameters: json!({ "steps": steps }),
                grants: [("data".to_string(), "data".to_string())].into(),
                options,
                ..Default::default()
            },
            "tester",
        )
    }

    /// Wait until the job has no background run and is in a state that waits for a person.
    pub(crate) fn settle(&self, id: &str) -> JobSnapshot {
        let snap = self
            .engine
            .wait_until(id, WAIT, |s| !s.status.is_running())
            .unwrap();
        assert!(
            !snap.status.is_running(),
            "still {} after {WAIT:?}",
            snap.status
        );
        self.engine.wait_idle(id, WAIT).unwrap()
    }

    fn data(&self) -> BTreeMap<String, Vec<u8>> {
        let b = self.buckets.open("data").unwrap();
        b.scan("", None, 10_000)
            .unwrap()
            .entries
            .into_iter()
            .collect()
    }

    fn log_messages(&self, id: &str) -> Vec<String> {
        self.engine
            .logs(id, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|l| l.message)
            .collect()
    }

    pub(crate) fn states(&self, id: &str) -> Vec<JobStatus> {
        self.engine
            .events_after(id, 0, 100_000)
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.body {
                EventBody::State { to, .. } => Some(to),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn kv_copy_job_completes_with_progress_objects_and_a_gapless_feed() {
    let env = env();
    let source = env.buckets.open("sessions-old").unwrap();
    let entries: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| (format!("s/{i:05}"), format!("v{i}").into_bytes()))
        .collect();
    source.set_many(&entries).unwrap();
    let job = env
        .engine
        .create(
            NewMigration {
                handler: "kv-copy@^1".into(),
                kind: Some("session-store-move".into()),
                parameters: json!({ "prefix": "s/" }),
                grants: [
                    ("source".into(), "sessions-old".into()),
                    ("target".into(), "sessions-new".into()),
                ]
                .into(),
                options: json!({ "batch_size": 300 }),
                ..Default::default()
            },
            "alice",
        )
        .unwrap();
    assert_eq!(job.status, JobStatus::Planned);
    assert_eq!(
        job.total_objects,
        Some(2500),
        "the objects the copy moves, counted once (verify re-reads them)"
    );
    assert_eq!(job.percentage, 0.0);
    assert_eq!(job.plugin.name, "kv-copy");
    assert_eq!(job.created_by, "alice");

    env.engine.execute(&job.id, "alice").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.errors);
    assert_eq!(done.percentage, 100.0);
    assert_eq!(done.completed_objects, 2500);
    assert_eq!((done.failed_objects, done.skipped_objects), (0, 0));
    assert!(done.steps.iter().all(|s| s.status == StepStatus::Completed));
    assert!(done.end_time.is_some() && done.duration_ms.is_some());
    assert!(!done.rollback_available || done.status == JobStatus::Completed);
    let target = env.buckets.open("sessions-new").unwrap();
    assert_eq!(target.count("s/").unwrap(), 2500);

    // The change feed: sequence numbers 1..=n without gaps, the states in order.
    let feed = env.engine.events_after(&job.id, 0, 100_000).unwrap();
    let seqs: Vec<u64> = feed.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(done.last_event_seq, seqs.len() as u64);
    assert_eq!(
        env.states(&job.id),
        [
            JobStatus::Planned,
            JobStatus::Executing,
            JobStatus::Completed
        ]
    );
    let tail = env
        .engine
        .events_after(&job.id, seqs.len() as u64 - 3, 100)
        .unwrap();
    assert_eq!(
        tail.len(),
        3,
        "reading after N gives exactly what follows N"
    );

    // Object results page through by index, each exactly once.
    let mut seen = vec![];
    let mut from = 0;
    loop {
        let page = env.engine.objects(&job.id, from, 700).unwrap();
        if page.is_empty() {
            break;
        }
        from = page.last().unwrap().index + 1;
        seen.extend(page.into_iter().map(|o| o.result.name));
    }
    assert_eq!(seen.len(), 2500);
    assert_eq!(seen.first().map(String::as_str), Some("s/00000"));
    assert_eq!(seen.last().map(String::as_str), Some("s/02499"));

    let audit: Vec<String> = feed
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Audit { actor, action, .. } => Some(format!("{actor}:{action}")),
            _ => None,
        })
        .collect();
    assert_eq!(audit, ["alice:create", "alice:execute"]);
    assert!(
        env.log_messages(&job.id)
            .iter()
            .any(|m| m.starts_with("verified 2500 keys"))
    );
}

#[test]
fn eta_and_current_object_are_reported_while_executing() {
    let env = env();
    let job = env
        .stepper(
            json!([{ "id": "long", "batches": 300, "batch_ms": 5 }]),
            json!({}),
        )
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    let mid = env
        .engine
        .wait_until(&job.id, WAIT, |s| {
            s.completed_objects >= 50 && s.estimated_seconds_remaining.is_some()
        })
        .unwrap();
    assert!(
        mid.percentage > 0.0 && mid.percentage < 100.0,
        "{}",
        mid.percentage
    );
    assert!(
        mid.estimated_seconds_remaining.is_some(),
        "no ETA at {}%",
        mid.percentage
    );
    assert_eq!(mid.current_step.as_deref(), Some("long"));
    assert!(
        mid.current_object
            .as_deref()
            .is_some_and(|o| o.starts_with("long/")),
        "{:?}",
        mid.current_object
    );
    let done = env.settle(&job.id);
    assert_eq!(done.estimated_seconds_remaining, None);
}

#[test]
fn progress_moves_with_the_work_reaches_100_only_at_the_end_and_the_eta_converges() {
    let env = env();
    // Two steps of different sizes: the bar weighs each by its work. Progress is committed
    // about four times a second, so the job lasts a few seconds.
    let job = env
        .stepper(
            json!([
                { "id": "small", "batches": 4, "batch_ms": 50 },
                { "id": "big", "after": ["small"], "batches": 32, "batch_ms": 100 }
            ]),
            json!({}),
        )
        .unwrap();
    assert_eq!(job.total_objects, Some(36));
    env.engine.execute(&job.id, "ops").unwrap();
    // (percentage, ETA, when it was read)
    let mut samples: Vec<(f64, Option<u64>, Instant)> = vec![];
    loop {
        let s = env.engine.snapshot(&job.id).unwrap();
        // Once every step completed, the job's own completion is the next commit.
        if s.status != JobStatus::Executing
            || s.steps.iter().all(|st| st.status == StepStatus::Completed)
        {
            break;
        }
        samples.push((s.percentage, s.estimated_seconds_remaining, Instant::now()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let finished = Instant::now();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.percentage, 100.0);
    let shown: Vec<(f64, Option<u64>)> = samples.iter().map(|(p, e, _)| (*p, *e)).collect();
    assert!(samples.len() > 20, "{} samples", samples.len());
    assert!(
        shown.windows(2).all(|w| w[0].0 <= w[1].0),
        "the bar never goes back: {shown:?}"
    );
    assert!(
        shown.iter().all(|(p, _)| *p < 100.0),
        "100 only once every step completed"
    );
    let distinct: std::collections::BTreeSet<u64> =
        shown.iter().map(|(p, _)| (*p * 10.0) as u64).collect();
    assert!(
        distinct.len() >= 10,
        "the bar moves with each batch, not only per step: {distinct:?}"
    );
    // The highest ETA shown near a quarter and near three quarters of the work, with the time
    // that was in fact left then. A loaded machine slows the job and its ETA alike, so the
    // accuracy is judged against the measured rest, never against a fixed number of seconds.
    let worst_eta_near = |pct: f64| {
        samples
            .iter()
            .filter(|(p, e, _)| e.is_some() && (*p - pct).abs() < 10.0)
            .map(|(_, e, at)| (e.unwrap(), finished.duration_since(*at).as_secs_f64()))
            .max_by_key(|(eta, _)| *eta)
            .unwrap_or_else(|| panic!("no ETA near {pct}%: {shown:?}"))
    };
    let ((early, early_left), (late, _)) = (worst_eta_near(25.0), worst_eta_near(75.0));
    assert!(
        late <= early,
        "the ETA rose from {early}s to {late}s: {shown:?}"
    );
    assert!(
        early as f64 <= 2.0 * early_left + 1.0,
        "{early}s shown at a quarter with {early_left:.1}s left: {shown:?}"
    );
}

#[test]
fn independent_branches_run_concurrently_up_to_the_worker_limit() {
    let env = env();
    let steps = json!([
        { "id": "prep" },
        { "id": "left", "after": ["prep"], "batches": 20, "batch_ms": 10 },
        { "id": "right", "after": ["prep"], "batches": 20, "batch_ms": 10 },
        { "id": "join", "after": ["left", "right"] }
    ]);
    let job = env
        .stepper(steps.clone(), json!({ "parallel_workers": 2 }))
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Completed);
    let step = |id: &str| done.steps.iter().find(|s| s.id == id).unwrap().clone();
    let (left, right, join, prep) = (step("left"), step("right"), step("join"), step("prep"));
    assert!(
        left.started_at.unwrap() < right.ended_at.unwrap()
            && right.started_at.unwrap() < left.ended_at.unwrap(),
        "branches overlapped"
    );
    assert!(prep.ended_at.unwrap() <= left.started_at.unwrap());
    assert!(join.started_at.unwrap() >= left.ended_at.unwrap().max(right.ended_at.unwrap()));

    let serial = env
        .stepper(steps, json!({ "parallel_workers": 1 }))
        .unwrap();
    env.engine.execute(&serial.id, "ops").unwrap();
    let done = env.settle(&serial.id);
    let step = |id: &str| done.steps.iter().find(|s| s.id == id).unwrap().clone();
    let (left, right) = (step("left"), step("right"));
    assert!(
        left.ended_at.unwrap() <= right.started_at.unwrap()
            || right.ended_at.unwrap() <= left.started_at.unwrap(),
        "one worker runs one step at a time"
    );
}

#[test]
fn plans_with_cycles_or_unknown_dependencies_are_rejected() {
    let env = env();
    let err = env
        .stepper(
            json!([{ "id": "a", "after": ["b"] }, { "id": "b", "after": ["a"] }]),
            json!({}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    let err = env
        .stepper(json!([{ "id": "a", "after": ["ghost"] }]), json!({}))
        .unwrap_err();
    assert!(err.to_string().contains("depends on 'ghost'"), "{err}");
    assert_eq!(
        env.engine.list(&Default::default()).unwrap().total,
        0,
        "nothing stored"
    );
}

#[test]
fn only_the_newest_log_lines_are_kept_and_the_rest_are_counted() {
    let env = env();
    let job = env
        .stepper(
            json!([{ "id": "a", "batches": 12, "batch_ms": 1 }]),
            json!({ "max_log_lines": 3 }),
        )
        .unwrap();
    env.engine.validate(&job.id, "ops").unwrap();
    env.engine
        .wait_until(&job.id, WAIT, |s| s.dry_run.is_some())
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.logs_kept, 3);
    let logs = env.engine.logs(&job.id, 0, 100).unwrap();
    assert_eq!(logs.len(), 3);
    // One line from the dry run and twelve from the batches were written; three are kept.
    assert_eq!(done.logs_dropped, 13 - 3);
    assert!(logs.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        logs[2].message, "step a finished batch 11",
        "the newest lines are the ones kept"
    );
}

#[test]
fn listing_filters_by_status_and_handler_and_pages() {
    let env = env();
    let a = env.stepper(json!([{ "id": "a" }]), json!({})).unwrap();
    let b = env.stepper(json!([{ "id": "a" }]), json!({})).unwrap();
    env.engine.execute(&b.id, "ops").unwrap();
    env.settle(&b.id);
    let all = env.engine.list(&Default::default()).unwrap();
    assert_eq!(all.total, 2);
    let planned = env
        .engine
        .list(&plover_host::engine::ListFilter {
            status: Some(JobStatus::Planned),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(planned.total, 1, "counted from the store's counters");
    assert_eq!(
        planned
            .items
            .iter()
            .map(|j| j.id.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&a.id)
    );
    let by_handler = env
        .engine
        .list(&plover_host::engine::ListFilter {
            handler: Some("kv-copy".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_handler.total, 0);
    let completed_stepper = env
        .engine
        .list(&plover_host::engine::ListFilter {
            handler: Some("stepper".into()),
            status: Some(JobStatus::Completed),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(completed_stepper.items.len(), 1);
    assert_eq!(completed_stepper.items[0].id, b.id);
    let page = env
        .engine
        .list(&plover_host::engine::ListFilter {
            offset: Some(1),
            limit: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, a.id, "newest first");
    // Cursor paging visits every job once, newest first, without an offset.
    let first = env
        .engine
        .list(&plover_host::engine::ListFilter {
            limit: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(first.items[0].id, b.id);
    let second = env
        .engine
        .list(&plover_host::engine::ListFilter {
            limit: Some(1),
            cursor: first.next_cursor.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(second.items[0].id, a.id);
    assert_eq!(second.next_cursor, None, "the last page says so");
    assert!(matches!(
        env.engine.delete(&a.id, "ops", DeleteMode::Safe),
        Ok(())
    ));
    assert_eq!(env.engine.list(&Default::default()).unwrap().total, 1);
    assert!(matches!(
        env.engine.snapshot(&a.id),
        Err(EngineError::NotFound(_))
    ));
}

#[test]
fn two_recoveries_at_once_resume_an_interrupted_job_once() {
    let env = env();
    let job = env
        .stepper(
            json!([{ "id": "a", "batches": 20, "batch_ms": 10, "per_batch": 3 }]),
            json!({}),
        )
        .unwrap();
    // As a crash leaves it: executing, its step running, no run anywhere.
    let lease = env.engine.hold_lease(&job.id).unwrap();
    let store = env.engine.store().clone();
    let mut record = store.get(&job.id).unwrap().unwrap();
    record.status = JobStatus::Executing;
    record.steps[0].status = StepStatus::Running;
    store
        .commit(plover_host::store::Commit {
            record: &record,
            append: &[],
            drop_oldest_logs: 0,
            segments: &[],
            fence: env.engine.job_handle(&job.id).unwrap().fence(),
        })
        .unwrap();
    drop(lease);
    let resumers: Vec<_> = (0..4)
        .map(|_| {
            let engine = env.engine.clone();
            std::thread::spawn(move || engine.recover().unwrap())
        })
        .collect();
    let resumed: usize = resumers.into_iter().map(|r| r.join().unwrap().len()).sum();
    match super::STORE {
        Store::Sled => assert_eq!(resumed, 1, "one run resumed the job"),
        // On a shared store the cluster's sweep may be the one that resumes it.
        Store::Postgres => assert!(resumed <= 1, "{resumed} runs resumed the job"),
    }
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.completed_objects, 60, "every object once");
}

#[test]
fn a_commit_of_progress_takes_the_checkpoint_waiting_in_memory_with_it() {
    use plover_host::engine::handle::RunControl;
    use plover_host::engine::tracking::{CHECKPOINT_EVERY, FLUSH_EVERY, StepEvents};
    use plover_host::model::{ObjectResult, ObjectStatus};
    use plover_host::runtime::JobEvents;

    let env = env();
    let job = env.stepper(json!([{ "id": "a" }]), json!({})).unwrap();
    let _lease = env.engine.hold_lease(&job.id).unwrap();
    let handle = env.engine.job_handle(&job.id).unwrap();
    let events = StepEvents::new(handle.clone(), Arc::new(RunControl::default()), "a");
    let result = |n: u32| ObjectResult {
        name: format!("o{n}"),
        object_type: "key".into(),
        status: ObjectStatus::Success,
        error: None,
        duration_micros: 0,
    };
    let committed = || env.engine.snapshot(&job.id).unwrap().completed_objects;
    let started = std::time::Instant::now();
    events.objects(vec![result(1)]).unwrap();
    events.checkpoint(b"1".to_vec()); // the step's first: committed at once
    events.objects(vec![result(2)]).unwrap();
    events.checkpoint(b"2".to_vec()); // too soon after it: waits in memory
    if started.elapsed() < CHECKPOINT_EVERY {
        assert_eq!(committed(), 1, "the second checkpoint waits");
    }
    std::thread::sleep(FLUSH_EVERY + Duration::from_millis(20));
    // Progress comes due and its commit carries the waiting checkpoint, instead of leaving
    // it for a second commit right after.
    events.progress(2, Some(2), Some("o2".into()));
    assert_eq!(committed(), 2);
    let step = handle.lock().step("a").cloned().unwrap();
    assert_eq!(step.checkpoint.as_deref(), Some(&b"2"[..]));
    assert_eq!(step.progress_done, 2);
}

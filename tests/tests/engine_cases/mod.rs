//! The engine with real plugins over a real job store: lifecycle, DAG scheduling, failure
//! and automatic rollback, retries, approval and dry-run gates bound to the plan identity,
//! cancel, pause and resume, timeouts, log retention and the change feed. Included by
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
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn registry() -> Arc<PluginRegistry> {
    static REG: OnceLock<Arc<PluginRegistry>> = OnceLock::new();
    REG.get_or_init(|| {
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let reg = PluginRegistry::new();
        for path in [artifacts::STEPPER, artifacts::KV_COPY, artifacts::MISBEHAVE] {
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
fn failing_step_rolls_back_completed_steps_in_reverse_order_and_restores_the_data() {
    let env = env();
    let data = env.buckets.open("data").unwrap();
    data.set_many(&[
        ("a".into(), b"original a".to_vec()),
        ("untouched".into(), b"x".to_vec()),
    ])
    .unwrap();
    let before = env.data();
    let job = env
        .stepper(json!([{ "id": "a" }, { "id": "b", "after": ["a"] }, { "id": "c", "after": ["b"], "fail": "always" }, { "id": "d", "after": ["c"] }]), json!({}))
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::RolledBack);
    assert_eq!(
        env.data(),
        before,
        "rollback leaves the data byte-identical to before"
    );
    let rolled: Vec<String> = env
        .log_messages(&job.id)
        .into_iter()
        .filter(|m| m.starts_with("rolled back"))
        .collect();
    assert_eq!(
        rolled,
        ["rolled back c", "rolled back b", "rolled back a"],
        "reverse dependency order"
    );
    assert_eq!(
        done.steps[3].status,
        StepStatus::Pending,
        "a step after the failure never ran"
    );
    assert_eq!(done.errors.len(), 1);
    assert_eq!(done.errors[0].step.as_deref(), Some("c"));
    assert_eq!(done.errors[0].kind, "step-failed");
    assert!(
        env.log_messages(&job.id)
            .iter()
            .any(|m| m == "execute of step 'c' failed (step-failed): step c was told to fail"),
        "the failure is in the job log too: {:?}",
        env.log_messages(&job.id)
    );
    assert_eq!(
        env.states(&job.id),
        [
            JobStatus::Planned,
            JobStatus::Executing,
            JobStatus::RollingBack,
            JobStatus::RolledBack
        ]
    );
}

#[test]
fn failed_rollback_keeps_both_errors() {
    let env = env();
    let job = env
        .stepper(json!([{ "id": "a", "fail_rollback": true }, { "id": "b", "after": ["a"], "fail": "always" }]), json!({}))
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::RollbackFailed);
    let phases: Vec<(&str, Option<&str>)> = done
        .errors
        .iter()
        .map(|e| (e.phase.as_str(), e.step.as_deref()))
        .collect();
    assert_eq!(phases, [("execute", Some("b")), ("rollback", Some("a"))]);
    assert!(
        done.rollback_available,
        "a failed rollback can be tried again"
    );
}

#[test]
fn without_auto_rollback_a_failure_stops_and_rollback_is_manual() {
    let env = env();
    let job = env
        .stepper(
            json!([{ "id": "a" }, { "id": "b", "after": ["a"], "fail": "always" }]),
            json!({ "auto_rollback": false }),
        )
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    let failed = env.settle(&job.id);
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.rollback_available);
    assert_eq!(
        env.data().get("a").map(Vec::as_slice),
        Some(&b"done by a"[..])
    );

    env.engine.rollback(&job.id, "ops").unwrap();
    let rolled = env.settle(&job.id);
    assert_eq!(rolled.status, JobStatus::RolledBack);
    assert!(env.data().is_empty());
    let err = env.engine.retry(&job.id, "ops").unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::IllegalTransition {
                status: JobStatus::RolledBack,
                action: Action::Retry,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn retryable_errors_are_retried_with_backoff() {
    let env = env();
    let job = env
        .stepper(
            json!([{ "id": "flaky", "fail": "retryable:2" }]),
            json!({ "retry": { "attempts": 3, "backoff_ms": 20 } }),
        )
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.errors);
    assert_eq!(done.steps[0].attempts, 3);
    assert_eq!(
        done.steps[0].summary.as_deref(),
        Some("step flaky done after 3 attempt(s)")
    );
    let retries = env
        .log_messages(&job.id)
        .into_iter()
        .filter(|m| m.contains("retrying from its checkpoint"))
        .count();
    assert_eq!(retries, 2);
}

#[test]
fn manual_retry_resumes_a_failed_step() {
    let env = env();
    let job = env
        .stepper(
            json!([{ "id": "flaky", "fail": "retryable:2" }]),
            json!({ "auto_rollback": false, "retry": { "attempts": 1 } }),
        )
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    assert_eq!(env.settle(&job.id).status, JobStatus::Failed);
    env.engine.retry(&job.id, "ops").unwrap();
    assert_eq!(
        env.settle(&job.id).status,
        JobStatus::Failed,
        "the second attempt still flakes"
    );
    env.engine.retry(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.errors);
}

#[test]
fn approval_gate_waits_and_is_bound_to_the_plan() {
    let env = env();
    let source = env.buckets.open("src").unwrap();
    source.set_many(&[("k/1".into(), b"1".to_vec())]).unwrap();
    let job = env
        .engine
        .create(
            NewMigration {
                handler: "kv-copy".into(),
                parameters: json!({ "prefix": "k/" }),
                grants: [
                    ("source".into(), "src".into()),
                    ("target".into(), "dst".into()),
                ]
                .into(),
                options: json!({ "approval_required": true }),
                ..Default::default()
            },
            "ops",
        )
        .unwrap();
    // Approve now, then the data changes and the plan is redone: the approval no longer applies.
    env.engine.approve(&job.id, "lead").unwrap();
    source.set_many(&[("k/2".into(), b"2".to_vec())]).unwrap();
    let replanned = env.engine.replan(&job.id, "ops").unwrap();
    assert_ne!(replanned.plan_hash, job.plan_hash);
    let waiting = env.engine.execute(&job.id, "ops").unwrap();
    assert_eq!(waiting.status, JobStatus::AwaitingApproval);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        env.engine.snapshot(&job.id).unwrap().status,
        JobStatus::AwaitingApproval,
        "nothing runs unapproved"
    );
    assert_eq!(env.buckets.open("dst").unwrap().count("").unwrap(), 0);

    env.engine.approve(&job.id, "lead").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Completed);
    let approval = done.approval.unwrap();
    assert_eq!(
        (approval.by.as_str(), approval.plan_hash.as_str()),
        ("lead", done.plan_hash.as_str())
    );
    assert_eq!(env.buckets.open("dst").unwrap().count("k/").unwrap(), 2);
}

#[test]
fn dry_run_gate_requires_a_passing_dry_run_of_this_plan() {
    let env = env();
    let job = env
        .stepper(json!([{ "id": "a" }]), json!({ "dry_run_required": true }))
        .unwrap();
    let err = env.engine.execute(&job.id, "ops").unwrap_err();
    assert!(
        matches!(err, EngineError::Refused(ref m) if m.contains("requires a passing dry run")),
        "{err}"
    );

    // A failing dry run does not open the gate.
    env.buckets
        .open("data")
        .unwrap()
        .set_many(&[("block-validation".into(), b"1".to_vec())])
        .unwrap();
    env.engine.validate(&job.id, "ops").unwrap();
    let after = env
        .engine
        .wait_until(&job.id, WAIT, |s| {
            s.status == JobStatus::Planned && s.dry_run.is_some()
        })
        .unwrap();
    assert!(!after.dry_run.as_ref().unwrap().passed);
    assert_eq!(
        after.dry_run.as_ref().unwrap().report.findings[0].code,
        "blocked"
    );
    assert!(
        env.engine
            .execute(&job.id, "ops")
            .unwrap_err()
            .to_string()
            .contains("did not pass")
    );

    env.buckets
        .open("data")
        .unwrap()
        .delete_many(&["block-validation".into()])
        .unwrap();
    env.engine.validate(&job.id, "ops").unwrap();
    env.engine
        .wait_until(&job.id, WAIT, |s| {
            s.dry_run.as_ref().is_some_and(|d| d.passed)
        })
        .unwrap();
    assert!(
        env.log_messages(&job.id)
            .iter()
            .any(|m| m.starts_with("validated 1 steps"))
    );
    env.engine.execute(&job.id, "ops").unwrap();
    assert_eq!(env.settle(&job.id).status, JobStatus::Completed);
}

#[test]
fn a_dry_run_job_never_executes() {
    let env = env();
    let job = env
        .stepper(json!([{ "id": "a" }]), json!({ "dry_run": true }))
        .unwrap();
    assert!(matches!(
        env.engine.execute(&job.id, "ops").unwrap_err(),
        EngineError::Refused(_)
    ));
    assert!(env.data().is_empty());
}

#[test]
fn cancel_stops_a_long_step_cooperatively_and_the_job_can_be_rolled_back() {
    let env = env();
    let job = env
        .stepper(
            json!([{ "id": "long", "batches": 3000, "batch_ms": 5 }]),
            json!({}),
        )
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    env.engine
        .wait_until(&job.id, WAIT, |s| s.completed_objects >= 5)
        .unwrap();
    env.engine.cancel(&job.id, "ops").unwrap();
    let cancelled = env.settle(&job.id);
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.steps[0].status, StepStatus::Interrupted);
    assert!(cancelled.completed_objects < 3000);
    assert!(cancelled.rollback_available);
    env.engine.rollback(&job.id, "ops").unwrap();
    assert_eq!(env.settle(&job.id).status, JobStatus::RolledBack);
    assert!(env.data().is_empty());
}

#[test]
fn cancel_stops_a_plugin_that_ignores_it_by_force_after_the_grace_period() {
    let env = env();
    let job = env
        .engine
        .create(
            NewMigration {
                handler: "misbehave".into(),
                parameters: json!({ "mode": "loop", "calls": ["execute"] }),
                options: json!({ "cancel_grace_secs": 1, "auto_rollback": false }),
                ..Default::default()
            },
            "ops",
        )
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    env.engine
        .wait_until(&job.id, WAIT, |s| s.steps[0].status == StepStatus::Running)
        .unwrap();
    let asked = std::time::Instant::now();
    env.engine.cancel(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Cancelled);
    assert_eq!(done.steps[0].status, StepStatus::Interrupted);
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "the plugin got its grace period ({took:?})"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
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
    let mut samples: Vec<(f64, Option<u64>)> = vec![];
    loop {
        let s = env.engine.snapshot(&job.id).unwrap();
        // Once every step completed, the job's own completion is the next commit.
        if s.status != JobStatus::Executing
            || s.steps.iter().all(|st| st.status == StepStatus::Completed)
        {
            break;
        }
        samples.push((s.percentage, s.estimated_seconds_remaining));
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.percentage, 100.0);
    assert!(samples.len() > 20, "{} samples", samples.len());
    assert!(
        samples.windows(2).all(|w| w[0].0 <= w[1].0),
        "the bar never goes back: {samples:?}"
    );
    assert!(
        samples.iter().all(|(p, _)| *p < 100.0),
        "100 only once every step completed"
    );
    let distinct: std::collections::BTreeSet<u64> =
        samples.iter().map(|(p, _)| (*p * 10.0) as u64).collect();
    assert!(
        distinct.len() >= 10,
        "the bar moves with each batch, not only per step: {distinct:?}"
    );
    // Early ETAs (at about a quarter) are not below late ones (at about three quarters).
    let eta_near = |pct: f64| {
        samples
            .iter()
            .filter(|(p, e)| e.is_some() && (*p - pct).abs() < 10.0)
            .map(|(_, e)| e.unwrap())
            .max()
    };
    let (early, late) = (eta_near(25.0).unwrap(), eta_near(75.0).unwrap());
    assert!(late <= early, "the ETA rose from {early}s to {late}s");
    assert!(early <= 4, "at a quarter of ~3.4s of work: {early}s");
}

#[test]
fn pause_and_resume_continue_from_the_checkpoint_without_double_counting() {
    let env = env();
    let job = env
        .stepper(
            json!([{ "id": "long", "batches": 200, "batch_ms": 5, "per_batch": 3 }]),
            json!({}),
        )
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    env.engine
        .wait_until(&job.id, WAIT, |s| s.completed_objects >= 30)
        .unwrap();
    env.engine.pause(&job.id, "ops").unwrap();
    let paused = env.settle(&job.id);
    assert_eq!(paused.status, JobStatus::Paused);
    let at_pause = paused.completed_objects;
    assert!(
        at_pause > 0 && at_pause < 600 && at_pause.is_multiple_of(3),
        "{at_pause}"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        env.engine.snapshot(&job.id).unwrap().completed_objects,
        at_pause,
        "nothing runs while paused"
    );

    env.engine.resume(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(
        done.completed_objects, 600,
        "every object counted exactly once across the pause"
    );
    assert!(
        env.log_messages(&job.id)
            .iter()
            .any(|m| m.starts_with("step long resuming at batch"))
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
fn illegal_requests_name_the_current_state_and_change_nothing() {
    let env = env();
    let job = env.stepper(json!([{ "id": "a" }]), json!({})).unwrap();
    let err = env.engine.rollback(&job.id, "ops").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot rollback migration {}: it is planned", job.id)
    );
    env.engine.execute(&job.id, "ops").unwrap();
    env.settle(&job.id);
    let before = env.engine.snapshot(&job.id).unwrap().last_event_seq;
    let err = env.engine.execute(&job.id, "ops").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot execute migration {}: it is completed", job.id)
    );
    assert_eq!(env.engine.snapshot(&job.id).unwrap().last_event_seq, before);
    assert!(matches!(
        env.engine.snapshot("no-such-job").unwrap_err(),
        EngineError::NotFound(_)
    ));
}

#[test]
fn bad_requests_are_refused_before_anything_is_stored() {
    let env = env();
    let bad = |req: NewMigration| env.engine.create(req, "ops").unwrap_err().to_string();
    let base = || NewMigration {
        handler: "stepper".into(),
        parameters: json!({ "steps": [{ "id": "a" }] }),
        grants: [("data".into(), "data".into())].into(),
        ..Default::default()
    };
    assert!(
        bad(NewMigration {
            handler: "nope".into(),
            ..base()
        })
        .contains("no plugin named 'nope'")
    );
    assert!(
        bad(NewMigration {
            handler: "stepper@^9".into(),
            ..base()
        })
        .contains("matches ^9")
    );
    assert!(
        bad(NewMigration {
            kind: Some("other".into()),
            ..base()
        })
        .contains("does not handle kind 'other'")
    );
    assert!(
        bad(NewMigration {
            options: json!({ "batch_size": 0 }),
            ..base()
        })
        .contains("batch_size")
    );
    assert!(
        bad(NewMigration {
            grants: BTreeMap::new(),
            ..base()
        })
        .contains("needs the binding(s) data")
    );
    assert!(
        bad(NewMigration {
            grants: [("data".into(), "no/such".into())].into(),
            ..base()
        })
        .contains("connection name 'no/such' must be")
    );
    assert!(
        bad(NewMigration {
            parameters: json!([1]),
            ..base()
        })
        .contains("parameters must be a JSON object")
    );
    assert_eq!(env.engine.list(&Default::default()).unwrap().total, 0);
}

#[test]
fn job_timeout_fails_the_job() {
    let env = env();
    let job = env
        .stepper(
            json!([{ "id": "long", "batches": 100000, "batch_ms": 5 }]),
            json!({ "timeout_secs": 1, "auto_rollback": false }),
        )
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(done.errors[0].kind, "timeout");
    assert!(done.errors[0].message.contains("limit of 1s"));
}

#[test]
fn step_timeout_stops_a_hung_call() {
    let env = env();
    let job = env
        .stepper(
            json!([{ "id": "slow", "batches": 1, "batch_ms": 60000 }]),
            json!({ "step_timeout_secs": 1, "auto_rollback": false, "retry": { "attempts": 1 } }),
        )
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(done.errors[0].kind, "timeout");
    assert!(
        done.errors[0]
            .message
            .contains("ran past its deadline of 1.0s"),
        "{}",
        done.errors[0].message
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

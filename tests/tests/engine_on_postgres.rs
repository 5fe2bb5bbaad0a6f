//! The engine's cases (`engine_cases/`) over the PostgreSQL store, as one node of a cluster:
//! every change is made under the job's lease and fenced by it.

const STORE: engine_cases::Store = engine_cases::Store::Postgres;

mod engine_cases;

use plover_host::engine::state::JobStatus;
use serde_json::json;
use std::time::Duration;

/// The database stalls (here: the job's lease row locked by another session) for longer than
/// the lease, so this node's clock for the lease runs out and the run stops mid-step, while the
/// renewal that was waiting goes through afterwards at the same epoch. The stopped step must
/// not count as failed (no rollback), the lease must be handed back rather than renewed for a
/// run that is gone, and the job must then resume and finish with every object done once.
#[test]
fn a_run_stopped_by_its_lease_running_out_resumes_and_finishes_once_the_database_answers() {
    let lease = Duration::from_millis(1500);
    let env = engine_cases::env_with_lease(lease);
    let job = env
        .stepper(
            json!([{ "id": "a", "batches": 60, "batch_ms": 50, "per_batch": 1 }]),
            json!({}),
        )
        .unwrap();
    env.engine.execute(&job.id, "ops").unwrap();
    let running = env
        .engine
        .wait_until(&job.id, Duration::from_secs(60), |s| {
            s.completed_objects >= 5
        })
        .unwrap();
    assert_eq!(running.status, JobStatus::Executing);

    let (_, schema) = env.cluster.as_ref().expect("a cluster");
    let mut stall = schema.client();
    let mut tx = stall.transaction().unwrap();
    tx.query_one(
        "SELECT epoch FROM job_leases WHERE job_id = $1 FOR UPDATE",
        &[&job.id],
    )
    .unwrap();
    std::thread::sleep(lease * 2);
    tx.commit().unwrap();

    let done = env.settle(&job.id);
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "errors: {:?}",
        done.errors
    );
    assert_eq!(done.completed_objects, 60, "every object once");
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    let states = env.states(&job.id);
    assert!(
        !states.iter().any(|s| matches!(
            s,
            JobStatus::RollingBack | JobStatus::Failed | JobStatus::RolledBack
        )),
        "the stop was taken for a failure: {states:?}"
    );
}

//! Failing steps and rollbacks, automatic and manual retries, and timeouts.

use super::*;

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

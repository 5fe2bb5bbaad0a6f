//! Partial outcomes and `retry-objects` (contract 0.2), with the native 0.2 fixture: a job
//! ends `partial`, a retry redoes only the failures of the latest round, and counts end exact.

use super::*;
use plover_host::model::{ObjectStatus, StepOutcome};

fn tolerant_copy(env: &Env, source: &[(&str, &str)], options: Value) -> JobSnapshot {
    let bucket = env.buckets.open("tolerant-src").unwrap();
    let entries: Vec<(String, Vec<u8>)> = source
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    bucket.set_many(&entries).unwrap();
    env.engine
        .create(
            NewMigration {
                handler: "contract-v0-2-0".into(),
                parameters: json!({}),
                options,
                grants: [
                    ("source".to_string(), "tolerant-src".to_string()),
                    ("target".to_string(), "tolerant-dst".to_string()),
                ]
                .into(),
                ..Default::default()
            },
            "tester",
        )
        .unwrap()
}

fn set(env: &Env, key: &str, value: &str) {
    let bucket = env.buckets.open("tolerant-src").unwrap();
    bucket
        .set_many(&[(key.to_string(), value.as_bytes().to_vec())])
        .unwrap();
}

/// Names of the job's results with `status` from position `from` on.
fn results(env: &Env, id: &str, from: u64, status: ObjectStatus) -> Vec<String> {
    env.engine
        .objects(id, from, 5000)
        .unwrap()
        .into_iter()
        .filter(|o| o.result.status == status)
        .map(|o| o.result.name)
        .collect()
}

#[test]
fn a_partial_job_retries_only_the_latest_failures_until_it_completes() {
    let env = env();
    let job = tolerant_copy(
        &env,
        &[("a", "1"), ("b", "bad"), ("c", "bad"), ("d", "4")],
        json!({}),
    );
    env.engine.execute(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Partial);
    assert_eq!(done.steps[0].outcome, StepOutcome::Partial);
    assert_eq!((done.completed_objects, done.failed_objects), (2, 2));
    assert!(done.allowed_actions.contains(&Action::RetryObjects));

    // Refusals change nothing.
    let err = env
        .engine
        .retry_objects(&job.id, "ops", Some("nope"))
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidRequest(_)), "{err}");
    assert_eq!(
        env.engine.snapshot(&job.id).unwrap().status,
        JobStatus::Partial
    );

    // Round 2: `b` is fixed, `c` still bad, `a` changed (it must not be copied again).
    set(&env, "b", "2");
    set(&env, "a", "changed");
    let round_2 = env
        .engine
        .retry_objects(&job.id, "ops", Some("copy"))
        .unwrap();
    let from_2 = round_2.steps[0].results_from;
    assert!(from_2 >= 4, "round 2 starts after round 1's results");
    let again = env.settle(&job.id);
    assert_eq!(again.status, JobStatus::Partial, "c is still bad");
    assert_eq!((again.completed_objects, again.failed_objects), (3, 1));
    assert_eq!(results(&env, &job.id, from_2, ObjectStatus::Success), ["b"]);
    assert_eq!(results(&env, &job.id, from_2, ObjectStatus::Error), ["c"]);

    // Round 3 takes only round 2's failure.
    set(&env, "c", "3");
    let round_3 = env.engine.retry_objects(&job.id, "ops", None).unwrap();
    let from_3 = round_3.steps[0].results_from;
    let finished = env.settle(&job.id);
    assert_eq!(finished.status, JobStatus::Completed);
    assert_eq!(finished.steps[0].outcome, StepOutcome::Complete);
    assert_eq!(
        (finished.completed_objects, finished.failed_objects),
        (4, 0)
    );
    assert_eq!(results(&env, &job.id, from_3, ObjectStatus::Success), ["c"]);
    let target = env.buckets.open("tolerant-dst").unwrap();
    let copied: BTreeMap<String, Vec<u8>> = target
        .scan("", None, 100)
        .unwrap()
        .entries
        .into_iter()
        .collect();
    assert_eq!(
        copied["a"], b"1",
        "objects not retried are left as the first run wrote them"
    );
    assert_eq!(copied["b"], b"2");
    assert_eq!(copied["c"], b"3");
    assert!(
        env.log_messages(&job.id)
            .contains(&"retrying 1 failed objects of step 'copy'".to_string())
    );
    use JobStatus as S;
    let states = env.states(&job.id);
    assert_eq!(
        states[states.len() - 4..],
        [S::Executing, S::Partial, S::Executing, S::Completed]
    );
    // Completed now: nothing left to retry.
    let err = env.engine.retry_objects(&job.id, "ops", None).unwrap_err();
    assert!(
        matches!(err, EngineError::IllegalTransition { .. }),
        "{err}"
    );
}

#[test]
fn a_retry_that_fails_midway_goes_on_with_only_the_objects_not_yet_redone() {
    let env = env();
    // 1,001 failures: the retry hands them over in two calls, 1,000 and 1.
    let keys: Vec<String> = (0..1001).map(|i| format!("k{i:04}")).collect();
    let bad: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "bad")).collect();
    let job = tolerant_copy(&env, &bad, json!({ "auto_rollback": false }));
    env.engine.execute(&job.id, "ops").unwrap();
    let done = env.settle(&job.id);
    assert_eq!(done.status, JobStatus::Partial, "{:?}", done.errors);
    assert_eq!(done.failed_objects, 1001);

    // Fixed, except the last one, which now fails the second call outright.
    for k in &keys {
        set(&env, k, "ok");
    }
    set(&env, "k1000", "boom");
    let retry = env.engine.retry_objects(&job.id, "ops", None).unwrap();
    let from = retry.steps[0].results_from;
    let failed = env.settle(&job.id);
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(
        failed.completed_objects, 1000,
        "the first call's results are kept"
    );
    assert_eq!(
        results(&env, &job.id, from, ObjectStatus::Success).len(),
        1000
    );

    set(&env, "k1000", "ok");
    env.engine.retry(&job.id, "ops").unwrap();
    let finished = env.settle(&job.id);
    assert_eq!(
        finished.status,
        JobStatus::Completed,
        "{:?}",
        finished.errors
    );
    assert_eq!(
        (finished.completed_objects, finished.failed_objects),
        (1001, 0)
    );
    let redone = results(&env, &job.id, from, ObjectStatus::Success);
    assert_eq!(redone.len(), 1001, "every object redone exactly once");
    assert_eq!(redone.last().map(String::as_str), Some("k1000"));
    let logs = env.log_messages(&job.id);
    assert_eq!(
        logs.iter()
            .filter(|l| l.starts_with("retrying 1001 failed objects"))
            .count(),
        1,
        "the failures were taken off the count once: {logs:?}"
    );
    assert!(
        logs.contains(&"re-running 1 objects".to_string()),
        "only k1000 was handed over again"
    );
}

#[test]
fn a_retry_of_failed_objects_that_fails_does_not_roll_the_job_back() {
    let env = env();
    // Default options: a failure rolls back automatically, except in a retry of objects.
    let job = tolerant_copy(&env, &[("a", "1"), ("b", "bad")], json!({}));
    env.engine.execute(&job.id, "ops").unwrap();
    assert_eq!(env.settle(&job.id).status, JobStatus::Partial);
    let copied = || {
        env.buckets
            .open("tolerant-dst")
            .unwrap()
            .scan("", None, 100)
            .unwrap()
            .entries
    };
    assert_eq!(copied().len(), 1);

    set(&env, "b", "boom");
    env.engine.retry_objects(&job.id, "ops", None).unwrap();
    let failed = env.settle(&job.id);
    assert_eq!(failed.status, JobStatus::Failed, "{:?}", failed.errors);
    assert!(
        env.states(&job.id)
            .iter()
            .all(|s| *s != JobStatus::RollingBack),
        "never rolled back"
    );
    assert_eq!(copied().len(), 1, "what the first run copied stays");
    assert!(
        failed.errors.iter().any(|e| e.message.contains("'boom'")),
        "{:?}",
        failed.errors
    );
    let reasons: Vec<String> = env
        .engine
        .events_after(&job.id, 0, 1000)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::State {
                to: JobStatus::Failed,
                reason,
                ..
            } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(
        reasons[0].contains("not rolled back automatically"),
        "{reasons:?}"
    );

    // The operator can still go on: fix the value and retry, or roll back.
    set(&env, "b", "2");
    env.engine.retry(&job.id, "ops").unwrap();
    let finished = env.settle(&job.id);
    assert_eq!(
        finished.status,
        JobStatus::Completed,
        "{:?}",
        finished.errors
    );
    assert_eq!(copied().len(), 2);
}

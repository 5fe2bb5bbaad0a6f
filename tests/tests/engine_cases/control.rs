//! The gates before execution (approval, dry run) and what an operator does to a running
//! job: cancel, pause and resume, and the requests the current state refuses.

use super::*;

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

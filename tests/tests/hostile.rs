//! Hostile plugins against the host's bounds: everything a plugin returns or reports is held
//! to a documented size (cut and marked, or refused with `limit-exceeded`), and the failures
//! that used to read as something else say what happened.

use plover_host::model::{MigrationSpec, ObjectStatus, Severity};
use plover_host::runtime::{
    Call, LoadError, PluginError, PluginFailure, Runtime, RuntimeConfig, SandboxLimits, bounds,
    stats,
};
use plover_host::testing::TestHarness;
use plover_tests::artifacts;
use serde_json::json;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn runtime() -> Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| Arc::new(Runtime::new(RuntimeConfig::default()).unwrap()))
        .clone()
}

fn misbehave(mode: &str, size: usize) -> (TestHarness, MigrationSpec) {
    let mut h =
        TestHarness::load_in(runtime(), artifacts::MISBEHAVE, SandboxLimits::default()).unwrap();
    h.bucket("data");
    let spec = h.spec("misbehave", json!({ "mode": mode, "size": size }));
    (h, spec)
}

fn the_step() -> plover_host::model::PlanStep {
    plover_host::model::PlanStep {
        id: "only".into(),
        kind: plover_host::model::StepKind::Migration,
        description: String::new(),
        depends_on: vec![],
        expected_objects: None,
        reversible: false,
        resumable: false,
        queue: None,
        estimated_duration_ms: None,
    }
}

fn execute_error(mode: &str, size: usize) -> PluginError {
    let (h, spec) = misbehave(mode, size);
    match h.plugin.execute(&h.context(None), &spec, &the_step(), None) {
        Err(e) => e,
        Ok(r) => panic!("mode {mode}: expected the sandbox to stop execute, got {r:?}"),
    }
}

fn limit_message(e: &PluginError) -> String {
    match &e.cause {
        PluginFailure::LimitExceeded { message } => message.clone(),
        other => panic!("expected limit-exceeded, got {other:?}"),
    }
}

#[test]
fn a_stack_overflow_in_linear_memory_is_named_a_stack_overflow() {
    let before = stats::kills("stack-overflow");
    let (h, spec) = misbehave("shadow-stack", 0);
    let err = h.plugin.plan(&h.context(None), &spec).unwrap_err();
    assert_eq!(err.cause, PluginFailure::StackOverflow, "{err}");
    assert!(err.to_string().contains("overflowed its stack"), "{err}");
    assert!(
        stats::kills("stack-overflow") > before,
        "and counted as one"
    );
}

#[test]
fn exit_is_reported_as_an_exit_with_its_status() {
    // The guest calls exit(3); WASI preview 2 carries only success or failure, so it is 1.
    let err = execute_error("exit", 0);
    assert_eq!(err.cause, PluginFailure::Exited { code: 1 });
    assert_eq!(
        err.to_string(),
        "plugin misbehave@0.1.0: execute of step 'only' exited with status 1 (a plugin must return, not call exit)"
    );
}

#[test]
fn oversized_texts_are_cut_and_marked() {
    let (h, spec) = misbehave("huge-error", 10 << 20);
    let e = h
        .plugin
        .execute(&h.context(None), &spec, &the_step(), None)
        .unwrap()
        .unwrap_err();
    assert!(
        e.message.len() <= bounds::MAX_MESSAGE,
        "{}",
        e.message.len()
    );
    assert!(
        e.message.ends_with(" bytes]") && e.message.contains("[cut: "),
        "marked"
    );

    let (h, spec) = misbehave("huge-summary", 10 << 20);
    let report = h
        .plugin
        .execute(&h.context(None), &spec, &the_step(), None)
        .unwrap()
        .unwrap();
    assert!(report.summary.len() <= bounds::MAX_MESSAGE);
    assert!(report.summary.contains("[cut: "));

    let (h, spec) = misbehave("long-names", 10_000);
    h.plugin
        .execute(&h.context(None), &spec, &the_step(), None)
        .unwrap()
        .unwrap();
    let objects = h.events.objects.lock().unwrap().clone();
    assert_eq!(objects.len(), 10);
    for o in objects {
        assert!(o.name.len() <= bounds::MAX_OBJECT_NAME && o.name.contains("[cut: "));
        assert!(o.object_type.len() <= bounds::MAX_IDENT);
        assert!(o.error.as_ref().unwrap().len() <= bounds::MAX_DESCRIPTION);
        assert_eq!(o.status, ObjectStatus::Error);
    }
}

#[test]
fn a_report_keeps_at_most_its_bound_of_findings_the_worst_first() {
    let (h, spec) = misbehave("many-findings", 200_000);
    let plan = h.plan(&spec).unwrap();
    let report = h
        .plugin
        .validate(&h.context(None), &spec, &plan)
        .unwrap()
        .unwrap();
    assert_eq!(report.findings.len(), bounds::MAX_FINDINGS);
    assert_eq!(
        report.findings[0].severity,
        Severity::Error,
        "the error is kept"
    );
    let last = report.findings.last().unwrap();
    assert_eq!(last.code, "findings-dropped");
    assert!(
        last.message.starts_with("190001 more findings"),
        "{}",
        last.message
    );
}

#[test]
fn plans_the_host_cannot_keep_are_refused_at_once() {
    let (h, spec) = misbehave("big-plan", 5_000);
    let started = Instant::now();
    let err = h.plugin.plan(&h.context(None), &spec).unwrap_err();
    assert_eq!(err.call, Call::Plan);
    assert!(
        limit_message(&err).contains("5000 steps; at most 1000"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    for (n, expected) in [
        (0, "\"\""),
        (1, "\"a/b\""),
        (2, "\"nul\\0here\""),
        (3, "\"line\\nbreak\""),
        (1 << 20, "\"xxxx"),
    ] {
        let (h, spec) = misbehave("bad-step-id", n);
        let err = h.plugin.plan(&h.context(None), &spec).unwrap_err();
        let message = limit_message(&err);
        assert!(message.contains(expected), "{n}: {message}");
        assert!(
            message.len() < 300,
            "a 1 MB id is not echoed: {}",
            message.len()
        );
    }
}

#[test]
fn per_call_bounds_on_reports_stop_the_call_naming_the_import() {
    let err = execute_error("many-objects", 10_001);
    assert!(
        limit_message(&err).contains("record-objects passed 10001 results in one call"),
        "{err}"
    );
    let err = execute_error("big-checkpoint", 2 << 20);
    assert!(
        limit_message(&err).contains("save-checkpoint passed 2097152 bytes"),
        "{err}"
    );
    // At the bound itself, both are fine.
    let (h, spec) = misbehave("many-objects", 10_000);
    h.plugin
        .execute(&h.context(None), &spec, &the_step(), None)
        .unwrap()
        .unwrap();
    assert_eq!(h.events.object_count(), 10_000);
}

#[test]
fn a_plugin_whose_describe_is_hostile_is_refused_clearly_and_quickly() {
    let load = |path: &str| {
        let bytes = std::fs::read(path).unwrap();
        runtime().load_bytes(&bytes).err().unwrap()
    };
    let started = Instant::now();
    match load(artifacts::DESCRIBE_LOOPS) {
        LoadError::Describe(e) => {
            assert!(matches!(e.cause, PluginFailure::Deadline { .. }), "{e}");
            let text = e.to_string();
            assert!(text.starts_with("plugin sha256:"), "{text}");
            assert!(!text.contains("plugin plugin"), "{text}");
        }
        other => panic!("{other}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "describe is held to its own short deadline: {:?}",
        started.elapsed()
    );
    let huge = load(artifacts::DESCRIBE_HUGE_NAME).to_string();
    assert!(huge.contains("must be 1-64 lower-case"), "{huge}");
    assert!(
        huge.len() < 300,
        "the 1 MB name is not echoed whole: {}",
        huge.len()
    );
    let kinds = load(artifacts::DESCRIBE_MANY_KINDS).to_string();
    assert!(kinds.contains("1000000 job kinds; at most 64"), "{kinds}");
}

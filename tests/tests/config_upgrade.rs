//! The config-upgrade handler, built from plugins/config-upgrade: upgrades through the schema
//! history, skips current documents, refuses bad ones at validation (or records them as failed
//! objects and retries them alone, when the job asks), and rolls back to the
//! original bytes.

use plover_host::model::{ErrorKind, ObjectStatus, Severity, StepOutcome};
use plover_host::testing::{Crash, HarnessError, TestHarness};
use plover_tests::artifacts;
use serde_json::{Value, json};

/// Stored with odd spacing on purpose: rollback must give back these exact bytes.
const V1: &str = r#"{ "schema_version": "1.4.0",  "name": "billing", "timeout": 2.5, "db_host": "db1", "db_port": 5432, "features": ["audit", "export"] }"#;
const V2: &str =
    r#"{"schema_version":"2.1.0","name":"search","timeout_ms":900,"features":["fuzzy"]}"#;
const V3: &str = r#"{"schema_version":"3.0.0","name":"auth","features":{"sso":true},"retries":5}"#;

fn harness() -> TestHarness {
    let mut h = TestHarness::load(artifacts::CONFIG_UPGRADE).unwrap();
    let configs = h.bucket("configs");
    configs.insert("config/billing", V1);
    configs.insert("config/search", V2);
    configs.insert("config/auth", V3);
    configs.insert("secrets/x", "not a config");
    h
}

fn doc(h: &TestHarness, key: &str) -> Value {
    serde_json::from_slice(&h.bucket_snapshot("configs")[key]).unwrap()
}

#[test]
fn upgrades_to_v3_and_rolls_back_byte_for_byte() {
    let h = harness();
    let before = h.bucket_snapshot("configs");
    let spec = h.spec("config-upgrade", json!({ "target_version": "3.0.0" }));
    let run = h.run_all(&spec).unwrap();
    let ids: Vec<&str> = run.plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["backup", "upgrade", "verify"]);
    assert_eq!(run.plan.steps[0].expected_objects, Some(3));
    assert_eq!(
        run.steps[1].1.summary,
        "upgraded 2 documents, 1 already current"
    );
    assert!(
        run.report
            .findings
            .iter()
            .any(|f| f.code == "already-current")
    );

    assert_eq!(
        doc(&h, "config/billing"),
        json!({
            "schema_version": "3.0.0", "name": "billing", "timeout_ms": 2500,
            "database": { "host": "db1", "port": 5432 },
            "features": { "audit": true, "export": true }, "retries": 3
        })
    );
    assert_eq!(
        doc(&h, "config/search"),
        json!({ "schema_version": "3.0.0", "name": "search", "timeout_ms": 900, "features": { "fuzzy": true }, "retries": 3 })
    );
    assert_eq!(
        h.bucket_snapshot("configs")["config/auth"],
        V3.as_bytes(),
        "a current document is not rewritten"
    );
    assert_eq!(h.bucket_snapshot("configs")["secrets/x"], b"not a config");

    let objects = h.events.objects.lock().unwrap().clone();
    let skipped: Vec<_> = objects
        .iter()
        .filter(|o| o.status == ObjectStatus::Skipped)
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(skipped, ["config/auth"]);
    assert_eq!(
        objects
            .iter()
            .filter(|o| o.status == ObjectStatus::Success)
            .count(),
        2
    );

    h.rollback_all(&spec, &run.plan).unwrap();
    assert_eq!(
        h.bucket_snapshot("configs"),
        before,
        "rollback restores the original bytes"
    );
    assert!(
        h.job_state.snapshot().is_empty(),
        "rolling back the backup step drops the backups"
    );
}

#[test]
fn upgrades_only_as_far_as_the_target() {
    let h = harness();
    let spec = h.spec("config-upgrade", json!({ "target_version": "2.0.0" }));
    // v2.1.0 and v3.0.0 are newer than 2.0.0: validation must refuse the job.
    let plan = h.plan(&spec).unwrap();
    let report = h.validate(&spec, &plan).unwrap();
    assert!(!report.passed(spec.options.validation_level));
    let codes: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.code.as_str())
        .collect();
    assert_eq!(codes, ["newer-than-target", "newer-than-target"]);
}

#[test]
fn validation_names_each_broken_document() {
    let mut h = harness();
    let configs = h.bucket("configs");
    configs.insert("config/broken", "{ not json");
    configs.insert("config/unversioned", r#"{"name":"x"}"#);
    configs.insert("config/list", "[1,2]");
    let spec = h.spec("config-upgrade", json!({ "target_version": "3.0.0" }));
    let plan = h.plan(&spec).unwrap();
    let report = h.validate(&spec, &plan).unwrap();
    let mut codes: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.code.as_str())
        .collect();
    codes.sort();
    assert_eq!(codes, ["no-version", "not-an-object", "not-json"]);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.message.contains("config/broken"))
    );
}

#[test]
fn unknown_target_version_is_an_invalid_spec() {
    let h = harness();
    let spec = h.spec("config-upgrade", json!({ "target_version": "4.0.0" }));
    match h.plan(&spec) {
        Err(HarnessError::Handler(e)) => {
            assert_eq!(e.kind, ErrorKind::InvalidSpec);
            assert!(e.message.contains("2.0.0, 3.0.0"), "{}", e.message);
        }
        other => panic!("expected invalid-spec, got {other:?}"),
    }
}

#[test]
fn a_job_that_records_bad_documents_upgrades_the_rest_and_retries_the_fixed_ones_alone() {
    let mut h = harness();
    let configs = h.bucket("configs");
    const BROKEN: &str = r#"{"schema_version":"1.0.0","name":"mail","features":"all"}"#;
    configs.insert("config/mail", BROKEN);
    configs.insert("config/junk", "{ not json");
    let before = h.bucket_snapshot("configs");
    let mut spec = h.spec(
        "config-upgrade",
        json!({ "target_version": "3.0.0", "on_bad_document": "record" }),
    );
    spec.options.batch_size = 2;
    let plan = h.plan(&spec).unwrap();
    let report = h.validate(&spec, &plan).unwrap();
    assert!(report.passed(spec.options.validation_level), "{report:?}");
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.code == "bad-field" && f.severity == Severity::Warning)
    );

    h.execute(&spec, &plan.steps[0], None).unwrap();
    // A crash after the second checkpoint (its batch holds both bad documents): the resumed
    // step still knows it left failed objects.
    let resume_from = match h
        .execute_crashing_after(&spec, &plan.steps[1], None, 2)
        .unwrap()
    {
        Crash::Crashed { resume_from } => resume_from,
        Crash::Finished(r) => panic!("finished before its second checkpoint: {r:?}"),
    };
    let upgraded = h.execute(&spec, &plan.steps[1], resume_from).unwrap();
    assert_eq!(
        upgraded.outcome,
        StepOutcome::Partial,
        "{}",
        upgraded.summary
    );
    assert_eq!(
        upgraded.summary, "upgraded 1 documents, 0 already current, 2 could not be upgraded",
        "the resumed call did the last batch; the bad count came with the checkpoint"
    );
    let failed: Vec<String> = h
        .events
        .objects
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.status == ObjectStatus::Error)
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(failed, ["config/junk", "config/mail"]);
    let now = h.bucket_snapshot("configs");
    assert_eq!(now["config/mail"], BROKEN.as_bytes(), "left as it was");
    assert_eq!(doc(&h, "config/search")["schema_version"], "3.0.0");
    let verified = h.execute(&spec, &plan.steps[2], None).unwrap();
    assert!(
        verified.summary.ends_with("2 left as they were"),
        "{}",
        verified.summary
    );

    // The operator fixes `mail` in place (junk stays broken) and retries the failed ones.
    const FIXED: &str = r#"{"schema_version":"1.0.0","name":"mail","features":["all"]}"#;
    configs.insert("config/mail", FIXED);
    let seen = h.events.object_count();
    let retried = h.execute_objects(&spec, &plan.steps[1], &failed).unwrap();
    assert_eq!(retried.outcome, StepOutcome::Partial);
    assert_eq!(
        retried.summary,
        "upgraded 1 of 2 documents again, 1 still bad"
    );
    let round: Vec<(String, ObjectStatus)> = h.events.objects.lock().unwrap()[seen..]
        .iter()
        .map(|o| (o.name.clone(), o.status))
        .collect();
    assert_eq!(
        round,
        [
            ("config/junk".to_string(), ObjectStatus::Error),
            ("config/mail".to_string(), ObjectStatus::Success)
        ]
    );
    assert_eq!(
        doc(&h, "config/mail"),
        json!({ "schema_version": "3.0.0", "name": "mail", "features": { "all": true }, "retries": 3 })
    );

    // Rollback gives back the operator's fixed document, and every other original byte.
    for step in plan.steps.iter().rev() {
        h.rollback(&spec, step).unwrap();
    }
    let mut expected = before;
    expected.insert("config/mail".into(), FIXED.as_bytes().to_vec());
    assert_eq!(h.bucket_snapshot("configs"), expected);
}

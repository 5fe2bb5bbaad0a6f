//! The config-upgrade handler, built from plugins/config-upgrade: upgrades through the schema
//! history, skips current documents, refuses bad ones at validation, and rolls back to the
//! original bytes.

use plover_host::model::{ErrorKind, ObjectStatus, Severity};
use plover_host::testing::{HarnessError, TestHarness};
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

//! Contract 0.2 beside 0.1 on one host: a native 0.2 plugin uses what 0.2 adds (estimates,
//! partial outcomes, named objects, recovery actions), and a 0.1 plugin keeps running through
//! the adapter, refusing by name what its contract cannot say.

use plover_host::connectors::{HttpRules, KvBucket};
use plover_host::model::{ErrorKind, ObjectStatus, StepOutcome};
use plover_host::testing::{HarnessError, TestHarness};
use plover_tests::artifacts;
use plover_tests::services::{RedisPrefix, Schema};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;

fn tolerant_copy() -> TestHarness {
    TestHarness::load(artifacts::CONTRACT_V0_2_0).unwrap()
}

#[test]
fn a_0_2_plugin_loads_as_0_2_and_its_plan_carries_estimates() {
    let mut h = tolerant_copy();
    assert_eq!(h.plugin.contract_version().to_string(), "0.2.0");
    h.bucket("source").insert("a", "1");
    h.bucket("target");
    let plan = h.plan(&h.spec("tolerant-copy", json!({}))).unwrap();
    assert_eq!(plan.estimated_duration_ms, Some(50));
    assert_eq!(plan.steps[0].estimated_duration_ms, Some(40));
    assert_eq!(plan.steps[0].expected_objects, Some(1));
    assert_eq!(plan.steps[0].queue, None);
    let queued = h
        .plan(&h.spec("tolerant-copy", json!({ "queue": "reindex" })))
        .unwrap();
    assert_eq!(queued.steps[0].queue.as_deref(), Some("reindex"));
}

#[test]
fn a_step_ends_partial_and_a_retry_touches_only_the_named_objects() {
    let mut h = tolerant_copy();
    let source = h.bucket("source");
    for (k, v) in [("a", "1"), ("b", "bad"), ("c", "3")] {
        source.insert(k, v);
    }
    let target = h.bucket("target");
    let spec = h.spec("tolerant-copy", json!({}));
    let plan = h.plan(&spec).unwrap();
    let step = &plan.steps[0];
    let report = h.execute(&spec, step, None).unwrap();
    assert_eq!(report.outcome, StepOutcome::Partial, "{}", report.summary);
    assert_eq!(report.summary, "copied 2, 1 bad");
    let failed: Vec<String> = h
        .events
        .objects
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.status == ObjectStatus::Error)
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(failed, ["b"]);
    assert_eq!(target.snapshot().len(), 2);

    // The operator fixes the value and a changed one it must not see; the retry names only `b`.
    source.insert("b", "2");
    source.insert("a", "changed");
    let before = h.events.object_count();
    let report = h.execute_objects(&spec, step, &failed).unwrap();
    assert_eq!(report.outcome, StepOutcome::Complete);
    assert_eq!(report.summary, "copied 1, 0 bad");
    let objects = h.events.objects.lock().unwrap();
    let retried: Vec<&str> = objects[before..].iter().map(|o| o.name.as_str()).collect();
    assert_eq!(retried, ["b"], "only the named object was touched");
    drop(objects);
    let copied = target.snapshot();
    assert_eq!(copied["b"], b"2");
    assert_eq!(
        copied["a"], b"1",
        "objects not named stay as the first run left them"
    );
    assert!(
        h.events
            .log_lines()
            .contains(&"re-running 1 objects".to_string())
    );
}

#[test]
fn a_0_2_error_carries_its_recovery_actions() {
    let mut h = tolerant_copy();
    h.bucket("source").insert("b", "bad");
    h.bucket("target");
    let spec = h.spec("tolerant-copy", json!({ "tolerate": false }));
    let plan = h.plan(&spec).unwrap();
    match h.execute(&spec, &plan.steps[0], None) {
        Err(HarnessError::Handler(e)) => {
            assert_eq!(e.kind, ErrorKind::DataCorruption);
            let actions: Vec<&str> = e.recovery.iter().map(|r| r.action.as_str()).collect();
            assert_eq!(actions, ["fix-source", "rollback"]);
            assert!(e.recovery[0].description.contains("'bad'"));
        }
        other => panic!("expected the handler's error, got {other:?}"),
    }
}

#[test]
fn a_0_1_plugin_runs_through_the_adapter_and_refuses_named_objects_by_contract() {
    // Built against the frozen 0.1.0 folder; the host's newest contract is 0.2.
    let mut h = TestHarness::load(artifacts::CONTRACT_V0_1_0).unwrap();
    assert_eq!(h.plugin.contract_version().to_string(), "0.1.0");
    h.bucket("source").insert("greeting", "hello");
    let target = h.bucket("target");
    let spec = h.spec("old", json!({}));
    let run = h.run_all(&spec).unwrap();
    let (_, report) = &run.steps[0];
    assert_eq!(
        report.outcome,
        StepOutcome::Complete,
        "0.1 steps are always complete"
    );
    assert_eq!(run.plan.estimated_duration_ms, None);
    assert_eq!(run.plan.steps[0].queue, None);
    assert_eq!(target.snapshot()["greeting"], b"HELLO");

    let objects = h.events.object_count();
    match h.execute_objects(&spec, &run.plan.steps[0], &["greeting".to_string()]) {
        Err(HarnessError::Handler(e)) => {
            assert_eq!(e.kind, ErrorKind::InvalidSpec);
            assert!(e.message.contains("contract 0.1"), "{}", e.message);
        }
        other => panic!("expected a refusal naming the contract, got {other:?}"),
    }
    assert_eq!(
        h.events.object_count(),
        objects,
        "the handler was not called"
    );
}

#[test]
fn sdk_built_plugins_speak_0_2_natively() {
    // The SDK moved to 0.2: the bundled handlers need no adapter any more.
    for artifact in [
        artifacts::KV_COPY,
        artifacts::CONFIG_UPGRADE,
        artifacts::SQL_SCHEMA,
    ] {
        let h = TestHarness::load(artifact).unwrap();
        assert_eq!(
            h.plugin.contract_version().to_string(),
            "0.2.0",
            "{artifact}"
        );
    }
}

/// A loopback HTTP server answering every request `200 hello`, once per connection.
fn hello_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    base
}

#[test]
fn a_0_1_1_plugin_keeps_every_0_1_1_import_through_the_adapter() {
    // Built with wit-bindgen against the frozen wit/v0.1.1: key expiry, SQL and HTTP (the
    // imports 0.1.1 added) on real Redis, PostgreSQL and a loopback server.
    let mut h = TestHarness::load(artifacts::CONTRACT_V0_1_1).unwrap();
    assert_eq!(h.plugin.contract_version().to_string(), "0.1.1");
    let (source, target) = (RedisPrefix::new("v011src"), RedisPrefix::new("v011dst"));
    source
        .bucket()
        .set_many_with_ttl(&[
            ("a".into(), b"1".to_vec(), Some(60_000)),
            ("b".into(), b"2".to_vec(), None),
            ("c".into(), b"3".to_vec(), Some(120_000)),
        ])
        .unwrap();
    h.grant("source", source.bucket());
    h.grant("target", target.bucket());
    let schema = Schema::new("v011");
    h.grant_connector("db", schema.connector());
    let base = hello_server();
    h.grant_http(
        "web",
        HttpRules {
            allow_private: true,
            ..HttpRules::allowing([base.as_str()])
        },
    )
    .unwrap();
    let mut spec = h.spec("ttl-copy", json!({ "url": format!("{base}/ping") }));
    spec.options.batch_size = 2;

    let run = h.run_all(&spec).unwrap();
    assert_eq!(run.plan.steps[0].expected_objects, Some(3));
    let (_, report) = &run.steps[0];
    assert_eq!(
        report.summary, "copied 3; db holds 3; web answered 200 hello",
        "every connector answered the 0.1.1 plugin"
    );
    assert_eq!(report.outcome, StepOutcome::Complete);
    assert_eq!(target.keys(), ["a", "b", "c"]);
    let ttls = target
        .bucket()
        .ttl_many(&["a".into(), "b".into(), "c".into()])
        .unwrap();
    assert!(
        ttls[0].is_some_and(|t| t > 50_000 && t <= 60_000),
        "{ttls:?}"
    );
    assert_eq!(ttls[1], None, "a key without expiry stays without");
    assert!(ttls[2].is_some_and(|t| t > 110_000), "{ttls:?}");
    assert_eq!(h.events.object_count(), 3, "one result per key");
    assert!(
        h.events.last_checkpoint().is_some(),
        "a checkpoint per page reached the host"
    );

    let undone = h.rollback_all(&spec, &run.plan).unwrap();
    assert_eq!(undone[0].summary, "deleted 3");
    assert!(target.keys().is_empty());
}

#[test]
fn an_sdk_handler_that_ends_partial_without_execute_objects_refuses_the_retry_by_default() {
    let h = TestHarness::load(artifacts::PROBE).unwrap();
    let spec = h.spec("probe", json!({ "partial": true }));
    let plan = h.plan(&spec).unwrap();
    let report = h.execute(&spec, &plan.steps[0], None).unwrap();
    assert_eq!(report.outcome, StepOutcome::Partial);
    let objects = h.events.object_count();
    match h.execute_objects(&spec, &plan.steps[0], &["x".to_string()]) {
        Err(HarnessError::Handler(e)) => {
            assert_eq!(e.kind, ErrorKind::InvalidSpec);
            assert!(
                e.message
                    .contains("cannot re-run single objects of step 'noop'"),
                "{}",
                e.message
            );
            assert_eq!(e.recovery[0].action, "retry-step");
        }
        other => panic!("expected the SDK's refusal, got {other:?}"),
    }
    assert_eq!(h.events.object_count(), objects, "nothing was recorded");
}

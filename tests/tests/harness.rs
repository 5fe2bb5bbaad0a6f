//! `TestHarness` as a plugin author uses it: real PostgreSQL, Redis and HTTP granted through its
//! own constructors, and a step stopped the way a host crash would stop it, then resumed.

use plover_host::connectors::{HttpRules, KvBucket};
use plover_host::testing::{Crash, TestHarness};
use plover_tests::artifacts;
use plover_tests::services::{REDIS_URL, RedisPrefix, Schema};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};

#[test]
fn kv_copy_into_redis_stopped_after_a_checkpoint_resumes_to_exactly_the_source() {
    let redis = RedisPrefix::new("harness");
    let mut h = TestHarness::load(artifacts::KV_COPY).unwrap();
    let source = h.bucket("source");
    for i in 0..500 {
        source.insert(format!("session/{i:04}"), format!("{{\"user\":{i}}}"));
    }
    h.grant_redis("target", REDIS_URL, &redis.prefix).unwrap();
    let mut spec = h.spec("kv-copy", json!({ "prefix": "session/" }));
    spec.options.batch_size = 50;
    let plan = h.plan(&spec).unwrap();
    let copy = &plan.steps[0];

    let Crash::Crashed { resume_from } = h.execute_crashing_after(&spec, copy, None, 2).unwrap()
    else {
        panic!("the copy ended before its second checkpoint");
    };
    assert_eq!(
        redis.keys().len(),
        100,
        "stopped right after the second checkpoint: two batches of 50 written"
    );
    assert_eq!(h.events.checkpoints.lock().unwrap().len(), 2);
    assert!(resume_from.is_some());

    h.execute(&spec, copy, resume_from).unwrap();
    h.execute(&spec, &plan.steps[1], None).unwrap();
    let target = redis.bucket();
    let copied: BTreeMap<String, Vec<u8>> = target
        .scan("", None, 1000)
        .unwrap()
        .entries
        .into_iter()
        .collect();
    assert!(
        copied == source.snapshot(),
        "the target is exactly the source"
    );

    h.rollback(&spec, copy).unwrap();
    assert!(
        redis.keys().is_empty(),
        "rollback removed every key it wrote"
    );
}

#[test]
fn a_step_that_saves_fewer_checkpoints_than_the_crash_point_just_finishes() {
    let mut h = TestHarness::load(artifacts::KV_COPY).unwrap();
    h.bucket("source").insert("session/1", "one");
    h.bucket("target");
    let spec = h.spec("kv-copy", json!({ "prefix": "session/" }));
    let plan = h.plan(&spec).unwrap();
    let outcome = h
        .execute_crashing_after(&spec, &plan.steps[0], None, 5)
        .unwrap();
    assert!(matches!(outcome, Crash::Finished(_)), "{outcome:?}");
    assert_eq!(h.bucket_snapshot("target").len(), 1);
}

#[test]
fn sql_schema_granted_with_grant_postgres_works_in_the_schema_named() {
    let schema = Schema::new("harness");
    let mut h = TestHarness::load(artifacts::SQL_SCHEMA).unwrap();
    h.grant_postgres("db", &schema.url(), Some(&schema.name))
        .unwrap();
    let spec = h.spec(
        "sql-schema",
        json!({ "migrations": [
            { "version": 1, "name": "t", "up": "CREATE TABLE accounts (id int PRIMARY KEY);", "down": "DROP TABLE accounts;" }
        ] }),
    );
    let run = h.run_all(&spec).unwrap();
    assert!(!run.steps.is_empty());
    let tables: i64 = schema
        .client()
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'accounts'",
            &[&schema.name],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "the table landed in the schema granted");
}

#[test]
fn grant_http_reaches_a_loopback_server_only_when_its_rules_allow_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    let mut h = TestHarness::load(artifacts::CONNECTOR_PROBE).unwrap();
    h.grant_http(
        "api",
        HttpRules {
            allow_private: true,
            ..HttpRules::allowing([base.clone()])
        },
    )
    .unwrap();
    h.grant_http("strict", HttpRules::allowing([base.clone()]))
        .unwrap();
    let op = |binding: &str| json!({ "op": "http", "binding": binding, "method": "GET", "url": format!("{base}/hi") });
    let spec = h.spec(
        "connector-probe",
        json!({ "phase": "execute", "ops": [op("api"), op("strict")] }),
    );
    let plan = h.plan(&spec).unwrap();
    let report = h.execute(&spec, &plan.steps[0], None).unwrap();
    let answers: Vec<Value> = serde_json::from_str(&report.summary).unwrap();
    assert_eq!(
        answers[0]["ok"],
        json!({ "status": 200, "body": "hello" }),
        "{answers:?}"
    );
    let refused = answers[1]["err"].as_str().unwrap();
    assert!(
        refused.contains("Denied") && refused.contains("127.0.0.1"),
        "a loopback address needs allow_private: {refused}"
    );
}

//! Connectors against the real services of this machine: Redis buckets, PostgreSQL
//! transactions and typed values; and the sandbox's refusals (a binding not granted, writes
//! in a dry run), each logged and counted. Outgoing HTTP is in `http_connector.rs`.
//!
//! Every test works in its own PostgreSQL schema or Redis key prefix.

use plover_host::connectors::{Connector, KvBucket, RedisBucket};
use plover_host::model::{ErrorKind, LogLevel};
use plover_host::runtime::{PluginFailure, stats};
use plover_host::testing::{HarnessError, TestHarness};
use plover_tests::artifacts;
use plover_tests::services::{RedisPrefix, Schema};
use serde_json::{Value, json};
use std::sync::Arc;

mod support;
use support::*;

#[test]
fn redis_bucket_scans_counts_expires_and_deletes_under_its_prefix() {
    let space = RedisPrefix::new("bucket");
    let bucket = space.bucket();
    let entries: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| (format!("s:{i:04}"), format!("v{i}").into_bytes()))
        .collect();
    bucket.set_many(&entries).unwrap();
    bucket
        .set_many_with_ttl(&[
            ("t:short".into(), b"x".to_vec(), Some(60_000)),
            ("t:forever".into(), b"y".to_vec(), None),
        ])
        .unwrap();
    // Keys of another prefix in the same Redis are invisible to this bucket.
    let other = RedisPrefix::new("other");
    other
        .bucket()
        .set_many(&[("s:9999".into(), b"not mine".to_vec())])
        .unwrap();

    assert_eq!(bucket.count("s:").unwrap(), 2500);
    assert_eq!(bucket.count("").unwrap(), 2502);
    let mut seen = std::collections::BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = bucket.scan("s:", cursor.as_deref(), 300).unwrap();
        for (k, v) in page.entries {
            seen.insert(k, v);
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        entries,
        "every key once, none of the other prefix"
    );

    let ttls = bucket
        .ttl_many(&["t:short".into(), "t:forever".into(), "t:missing".into()])
        .unwrap();
    assert!(
        ttls[0].is_some_and(|t| t > 50_000 && t <= 60_000),
        "{ttls:?}"
    );
    assert_eq!(&ttls[1..], [None, None]);
    assert_eq!(
        bucket.get_many(&["s:0007".into(), "nope".into()]).unwrap(),
        [Some(b"v7".to_vec()), None]
    );
    assert_eq!(
        bucket
            .delete_many(&["s:0001".into(), "nope".into()])
            .unwrap(),
        1
    );
    assert_eq!(bucket.count("s:").unwrap(), 2499);
    assert_eq!(
        space.keys().len(),
        2501,
        "the bucket wrote under its prefix only"
    );
}

#[test]
fn sql_values_round_trip_typed_and_queries_page() {
    let schema = Schema::new("types");
    let h = probe(&schema);
    let answers = execute_ops(
        &h,
        json!([
            { "op": "sql-query", "binding": "db",
              "statement": "SELECT $1::bool, $2::int2, $3::int4, $4::int8, $5::float8, $6::text, $7::bytea, $8::jsonb, $9::timestamptz, $10::text",
              "params": [
                { "t": "bool", "v": true }, { "t": "int", "v": -7 }, { "t": "int", "v": 70000 },
                { "t": "int", "v": 9007199254740993i64 }, { "t": "float", "v": 2.5 },
                { "t": "text", "v": "héllo" }, { "t": "bytes", "v": [0, 255, 10] },
                { "t": "json", "v": "{\"a\":[1,2]}" }, { "t": "timestamp", "v": 1700000000123456i64 },
                { "t": "null" }
              ] },
            { "op": "sql-query", "binding": "db",
              "statement": "SELECT g FROM generate_series(1, 2500) g", "page_size": 1000 },
            { "op": "sql-execute", "binding": "db", "statement": "SELECT $1::int2", "params": [{ "t": "int", "v": 70000 }] },
            { "op": "sql-query", "binding": "db", "statement": "SELECT 1.5::numeric AS amount" },
        ]),
    );
    let row = &answers[0]["ok"]["rows"][0];
    assert_eq!(
        row,
        &json!([
            { "t": "bool", "v": true }, { "t": "int", "v": -7 }, { "t": "int", "v": 70000 },
            { "t": "int", "v": 9007199254740993i64 }, { "t": "float", "v": 2.5 },
            { "t": "text", "v": "héllo" }, { "t": "bytes", "v": [0, 255, 10] },
            { "t": "json", "v": "{\"a\":[1,2]}" }, { "t": "timestamp", "v": 1700000000123456i64 },
            { "t": "null" }
        ]),
        "{answers:?}"
    );
    let pages = &answers[1]["ok"];
    assert_eq!(pages["pages"], 3, "2500 rows in pages of 1000");
    assert_eq!(pages["rows"].as_array().unwrap().len(), 2500);
    assert_eq!(pages["rows"][2499][0], json!({ "t": "int", "v": 2500 }));
    let out_of_range = answers[2]["err"].as_str().unwrap();
    assert!(out_of_range.contains("InvalidArgument"), "{out_of_range}");
    let uncarried = answers[3]["err"].as_str().unwrap();
    assert!(
        uncarried.contains("numeric") && uncarried.contains("::text"),
        "{uncarried}"
    );
}

#[test]
fn sql_database_errors_reach_the_plugin_as_data_and_abort_the_calls_transaction() {
    let schema = Schema::new("dberr");
    schema
        .client()
        .batch_execute("CREATE TABLE t (v int)")
        .unwrap();
    let h = probe(&schema);
    let ops = json!([
        { "op": "sql-execute", "binding": "db", "statement": "INSERT INTO t VALUES (1)" },
        { "op": "sql-query", "binding": "db", "statement": "SELECT 1/0" },
        { "op": "sql-execute", "binding": "db", "statement": "SELECT 1" },
    ]);
    // The handler sees the error as data and can report it (here, by failing with it).
    let mut spec = ops_spec(&h, "execute", ops.clone());
    spec.parameters["fail_after"] = json!(true);
    let plan = h.plan(&spec).unwrap();
    let Err(HarnessError::Handler(e)) = h.execute(&spec, &plan.steps[0], None) else {
        panic!("the probe fails with its answers")
    };
    let answers: Vec<Value> = serde_json::from_str(&e.message).unwrap();
    let err = answers[1]["err"].as_str().unwrap();
    assert!(err.contains("Database") && err.contains("22012"), "{err}");
    let aborted = answers[2]["err"].as_str().unwrap();
    assert!(
        aborted.contains("25P02"),
        "the transaction is aborted after an error: {aborted}"
    );

    // Returning success after that cannot commit anything: the call fails and says why.
    let spec = ops_spec(&h, "execute", ops);
    let Err(HarnessError::Plugin(e)) = h.execute(&spec, &plan.steps[0], None) else {
        panic!("success over an aborted transaction must fail the call")
    };
    assert!(
        matches!(&e.cause, PluginFailure::Connector { message } if message.contains("nothing was committed")),
        "{e}"
    );
    assert_eq!(count_rows(&schema, "t"), 0);
}

#[test]
fn sql_transaction_commits_on_success_rolls_back_on_error_and_checkpoints_commit() {
    let schema = Schema::new("txn");
    schema
        .client()
        .batch_execute("CREATE TABLE t (v int)")
        .unwrap();
    let h = probe(&schema);
    let insert = |v: i64| json!({ "op": "sql-execute", "binding": "db", "statement": "INSERT INTO t VALUES ($1)", "params": [{ "t": "int", "v": v }] });

    execute_ops(&h, json!([insert(1)]));
    assert_eq!(count_rows(&schema, "t"), 1, "a successful call commits");

    let mut spec = ops_spec(&h, "execute", json!([insert(2)]));
    spec.parameters["fail_after"] = json!(true);
    let plan = h.plan(&spec).unwrap();
    let err = h.execute(&spec, &plan.steps[0], None).unwrap_err();
    assert!(matches!(err, HarnessError::Handler(_)), "{err:?}");
    assert_eq!(count_rows(&schema, "t"), 1, "a failed call rolls back");

    // A checkpoint commits what came before it, even if the call then fails.
    let mut spec = ops_spec(
        &h,
        "execute",
        json!([insert(3), { "op": "checkpoint" }, insert(4)]),
    );
    spec.parameters["fail_after"] = json!(true);
    h.execute(&spec, &plan.steps[0], None).unwrap_err();
    let values: Vec<i32> = schema
        .client()
        .query("SELECT v FROM t ORDER BY v", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(values, [1, 3]);
}

#[test]
fn sql_writes_scripts_and_transaction_escapes_are_refused_during_validate() {
    let schema = Schema::new("dryrun");
    schema
        .client()
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .unwrap();
    let h = probe(&schema);
    let attempts = [
        json!({ "op": "sql-execute", "binding": "db", "statement": "INSERT INTO t VALUES (2)" }),
        json!({ "op": "sql-execute", "binding": "db", "statement": "DELETE FROM t" }),
        json!({ "op": "sql-batch", "binding": "db", "script": "DELETE FROM t" }),
        json!({ "op": "sql-execute", "binding": "db", "statement": "/* escape */ COMMIT" }),
        json!({ "op": "sql-execute", "binding": "db", "statement": "SET TRANSACTION READ WRITE" }),
        json!({ "op": "sql-execute", "binding": "db", "statement": "set default_transaction_read_only = off" }),
    ];
    for attempt in attempts {
        let before = stats::refusals("sql", "read-only");
        let spec = ops_spec(
            &h,
            "validate",
            json!([attempt.clone(), { "op": "sql-execute", "binding": "db", "statement": "DELETE FROM t" }]),
        );
        let plan = h.plan(&spec).unwrap();
        let err = h.validate(&spec, &plan).unwrap_err();
        let HarnessError::Plugin(e) = &err else {
            panic!("{attempt}: expected the sandbox to fail the call, got {err:?}")
        };
        assert!(
            matches!(e.cause, PluginFailure::WriteDenied { .. }),
            "{attempt}: {e}"
        );
        assert_eq!(count_rows(&schema, "t"), 1, "{attempt}: nothing changed");
        assert!(
            stats::refusals("sql", "read-only") > before,
            "{attempt}: counted"
        );
    }
    let logged = h.events.logs.lock().unwrap().clone();
    assert!(
        logged
            .iter()
            .any(|(level, line)| *level == LogLevel::Warning
                && line.starts_with("host refused (sql)")),
        "{logged:?}"
    );
}

#[test]
fn sql_dry_runs_stay_dry_whatever_the_statement_text_says() {
    let schema = Schema::new("drystays");
    schema
        .client()
        .batch_execute(
            "CREATE TABLE t (v int); INSERT INTO t VALUES (1); CREATE SEQUENCE s; \
             CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS 'UPDATE t SET v = v + 1 RETURNING v'",
        )
        .unwrap();
    let h = probe(&schema);
    let escapes = [
        json!([
            sql(";SET TRANSACTION READ WRITE"),
            sql("INSERT INTO t VALUES (2)"),
            sql(";COMMIT")
        ]),
        json!([
            sql("/*/**/*/ SET TRANSACTION READ WRITE"),
            sql("DELETE FROM t"),
            sql("/*/**/*/ COMMIT")
        ]),
        json!([sql("UPDATE t SET v = 9")]),
        json!([
            sql("SELECT set_config('transaction_read_only', 'off', true)"),
            sql("INSERT INTO t VALUES (3)")
        ]),
        json!([
            sql("SELECT set_config('default_transaction_read_only', 'off', false)"),
            sql("/* x */ end"),
            sql("INSERT INTO t VALUES (4)")
        ]),
        json!([
            sql("DO $$ BEGIN COMMIT; END $$"),
            sql("INSERT INTO t VALUES (5)")
        ]),
        json!([sql("SELECT nextval('s')")]),
        json!([sql("SELECT bump()")]),
        json!([sql("NOTIFY anyone"), sql("LISTEN here")]),
        json!([
            sql("SAVEPOINT a"),
            sql("INSERT INTO t VALUES (6)"),
            sql("ROLLBACK TO SAVEPOINT a"),
            sql("RELEASE a")
        ]),
    ];
    for ops in escapes {
        for phase in ["plan", "validate"] {
            let failure = dry_run(&h, phase, ops.clone());
            assert!(
                failure.is_some(),
                "{phase} {ops}: the dry run must fail, not pass"
            );
            assert_eq!(
                count_rows(&schema, "t"),
                1,
                "{phase} {ops}: nothing changed"
            );
            let v: i32 = schema
                .client()
                .query_one("SELECT v FROM t", &[])
                .unwrap()
                .get(0);
            assert_eq!(v, 1, "{phase} {ops}");
        }
    }
    let next: i64 = schema
        .client()
        .query_one("SELECT last_value FROM s", &[])
        .unwrap()
        .get(0);
    assert_eq!(next, 1, "the sequence was never advanced");
}

#[test]
fn a_dry_run_that_swallows_a_database_error_does_not_pass() {
    let schema = Schema::new("swallow");
    let h = probe(&schema);
    // The probe reports each error as data and returns success.
    let failure = dry_run(&h, "validate", json!([sql("SELECT * FROM no_such_table")]));
    match failure {
        Some(PluginFailure::Connector { message }) => assert!(
            message.contains("a SQL statement on 'db' failed") && message.contains("no_such_table"),
            "{message}"
        ),
        other => panic!("expected the dry run to fail, got {other:?}"),
    }
}

#[test]
fn the_call_deadline_holds_even_when_the_plugin_lifts_the_statement_timeout() {
    let schema = Schema::new("deadline");
    let mut h = probe_with_deadline(std::time::Duration::from_secs(2));
    h.grant_connector("db", schema.connector());
    let started = std::time::Instant::now();
    let failure = dry_run(
        &h,
        "validate",
        json!([
            sql("SELECT set_config('statement_timeout', '0', false)"),
            sql("SELECT pg_sleep(60)")
        ]),
    );
    let took = started.elapsed();
    assert!(
        failure.is_some(),
        "a dry run past its deadline does not pass"
    );
    assert!(
        took < std::time::Duration::from_secs(5),
        "the 2 s deadline held: {took:?}"
    );
}

#[test]
fn a_privileged_role_is_refused_and_dry_runs_can_use_a_read_only_role() {
    use plover_host::connectors::postgres::{PostgresDatabase, PostgresOptions};
    let schema = Schema::new("roles");
    schema
        .client()
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .unwrap();
    let superuser = "host=127.0.0.1 port=5432 user=postgres dbname=test";
    let mut h = TestHarness::load(artifacts::CONNECTOR_PROBE).unwrap();
    h.grant_connector(
        "db",
        Connector::Sql(Arc::new(PostgresDatabase::new(superuser, None, 1).unwrap())),
    );
    let answers = execute_ops(&h, json!([sql("SELECT 1")]));
    let refused = answers[0]["err"].as_str().unwrap();
    assert!(
        refused.contains("role 'postgres' is a superuser")
            && refused.contains("allow_privileged_role"),
        "{refused}"
    );
    let allowed = PostgresDatabase::with_options(
        superuser,
        &PostgresOptions {
            max_connections: 1,
            allow_privileged_role: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(allowed.check_roles_now().unwrap());

    // A role that may only read: dry runs connect as it.
    let reader = format!("{}_ro", schema.name);
    plover_tests::services::postgres()
        .batch_execute(&format!(
            "CREATE ROLE {reader} LOGIN; GRANT USAGE ON SCHEMA {s} TO {reader}; GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {reader}",
            s = schema.name
        ))
        .unwrap();
    let mut h = TestHarness::load(artifacts::CONNECTOR_PROBE).unwrap();
    h.grant_connector(
        "db",
        Connector::Sql(Arc::new(
            PostgresDatabase::with_options(
                &schema.url(),
                &PostgresOptions {
                    search_path: Some(schema.name.clone()),
                    max_connections: 2,
                    read_only_url: Some(format!(
                        "host=127.0.0.1 port=5432 user={reader} dbname=test"
                    )),
                    ..Default::default()
                },
            )
            .unwrap(),
        )),
    );
    let spec = ops_spec(
        &h,
        "validate",
        json!([{ "op": "sql-query", "binding": "db", "statement": "SELECT current_user::text" }]),
    );
    let plan = h.plan(&spec).unwrap();
    let report = h.validate(&spec, &plan).unwrap();
    assert!(report.findings[0].message.contains(&reader), "{report:?}");
    let answers = execute_ops(
        &h,
        json!([{ "op": "sql-query", "binding": "db", "statement": "SELECT current_user::text" }]),
    );
    assert!(
        answers[0].to_string().contains(&schema.role),
        "execute uses the main role"
    );
    let _ = plover_tests::services::postgres()
        .batch_execute(&format!("DROP OWNED BY {reader}; DROP ROLE {reader}"));
}

#[test]
fn sql_transaction_control_is_refused_in_execute_too() {
    let schema = Schema::new("control");
    let h = probe(&schema);
    let answers = execute_ops(
        &h,
        json!([
            { "op": "sql-execute", "binding": "db", "statement": "COMMIT" },
            { "op": "sql-execute", "binding": "db", "statement": "begin" },
            { "op": "sql-execute", "binding": "db", "statement": "SELECT 1" },
        ]),
    );
    for refused in &answers[..2] {
        let e = refused["err"].as_str().unwrap();
        assert!(
            e.contains("InvalidArgument") && e.contains("the host's"),
            "{e}"
        );
    }
    assert_eq!(answers[2]["ok"], 1, "the call goes on");
}

#[test]
fn bindings_not_granted_or_of_another_kind_fail_the_plan_clearly() {
    let schema = Schema::new("grants");
    let mut h = probe(&schema);
    h.bucket("cache");
    let before = stats::refusals("sql", "not-granted");
    for (ops, expected) in [
        (
            json!([{ "op": "sql-execute", "binding": "warehouse", "statement": "SELECT 1" }]),
            "no SQL connection is granted as 'warehouse'",
        ),
        (
            json!([{ "op": "sql-execute", "binding": "cache", "statement": "SELECT 1" }]),
            "'cache' is granted as a key-value connection, not a SQL one",
        ),
        (
            json!([{ "op": "kv-get", "binding": "db", "key": "k" }]),
            "'db' is granted as a SQL connection, not a key-value one",
        ),
        (
            json!([{ "op": "http", "binding": "partner", "method": "GET", "url": "http://api.example.com/" }]),
            "no HTTP connection is granted as 'partner'",
        ),
    ] {
        let spec = ops_spec(&h, "plan", ops);
        let plan = h.plan(&spec).unwrap();
        let answer = &plan.risk_notes[0];
        assert!(
            answer.contains("NotGranted") && answer.contains(expected),
            "{answer}"
        );
    }
    assert!(stats::refusals("sql", "not-granted") >= before + 2);

    // A real handler turns it into a plan error that names the binding.
    let mut h = TestHarness::load(artifacts::SQL_SCHEMA).unwrap();
    h.bucket("db");
    let spec = h.spec("sql-schema", json!({ "migrations": [] }));
    let Err(HarnessError::Handler(e)) = h.plan(&spec) else {
        panic!("the plan must fail")
    };
    assert_eq!(e.kind, ErrorKind::InvalidSpec);
    assert!(
        e.message
            .contains("'db' is granted as a key-value connection"),
        "{}",
        e.message
    );
}

/// A loopback HTTP server for the tests: `/ok` answers `hello`; `/to-ok` redirects to `/ok`;
/// `/away` redirects to a host no connection allows; `/big` answers 64 KiB. Counts requests.
#[test]
fn kv_writes_on_redis_are_refused_during_validate() {
    let space = RedisPrefix::new("kvdry");
    let mut h = TestHarness::load(artifacts::CONNECTOR_PROBE).unwrap();
    h.grant("cache", space.bucket());
    let spec = ops_spec(
        &h,
        "validate",
        json!([{ "op": "kv-set", "binding": "cache", "key": "k", "value": "v" }]),
    );
    let plan = h.plan(&spec).unwrap();
    let err = h.validate(&spec, &plan).unwrap_err();
    assert!(
        matches!(&err, HarnessError::Plugin(e) if matches!(e.cause, PluginFailure::WriteDenied { .. })),
        "{err:?}"
    );
    assert!(space.keys().is_empty(), "nothing was written");
    let answers = execute_ops(
        &h,
        json!([{ "op": "kv-set", "binding": "cache", "key": "k", "value": "v" }]),
    );
    assert_eq!(answers[0]["ok"], "ok");
    assert_eq!(space.keys(), ["k"]);
}

#[test]
fn a_force_stop_cancels_the_sql_statement_the_call_is_waiting_on() {
    let schema = Schema::new("sqlstop");
    let h = probe(&schema);
    let spec = ops_spec(
        &h,
        "execute",
        json!([{ "op": "sql-execute", "binding": "db", "statement": "SELECT pg_sleep(600)" }]),
    );
    let plan = h.plan(&spec).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let _ = done.send(h.execute(&spec, &plan.steps[0], None));
        });
        // Wait until the statement runs on the server, then stop the call by force.
        let started = std::time::Instant::now();
        while sleeping(&schema) == 0 {
            assert!(
                started.elapsed().as_secs() < 60,
                "the statement never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        h.force_stop.trigger();
        // Epoch interruption cannot reach a thread waiting on the server: only the cancel
        // request ends the ten-minute statement. A minute is a bound for a hang, not a goal.
        let outcome = finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the force stop did not end the statement");
        let Err(HarnessError::Plugin(e)) = outcome else {
            panic!("expected a force stop, got {outcome:?}")
        };
        assert_eq!(e.cause, PluginFailure::ForceStopped, "{e}");
    });
    assert_eq!(sleeping(&schema), 0);
}

fn sleeping(schema: &Schema) -> i64 {
    schema
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'plover' AND state = 'active' AND query = 'SELECT pg_sleep(600)'",
            &[],
        )
        .unwrap()
        .get(0)
}

/// A loopback https server with a self-signed certificate for 127.0.0.1 (made here with the
/// `openssl` command): answers `secure hello` to every request. Returns its base URL and the
/// certificate's PEM path.
#[test]
fn unreachable_systems_are_errors_the_plugin_sees_not_traps() {
    let port = closed_port();
    let mut h = TestHarness::load(artifacts::CONNECTOR_PROBE).unwrap();
    h.grant_connector(
        "db",
        Connector::Sql(Arc::new(
            plover_host::connectors::postgres::PostgresDatabase::new(
                &format!("host=127.0.0.1 port={port} user=postgres dbname=test connect_timeout=5"),
                None,
                1,
            )
            .unwrap(),
        )),
    );
    h.grant(
        "cache",
        Arc::new(RedisBucket::new(&format!("redis://127.0.0.1:{port}/0"), "x:").unwrap()),
    );
    let base = format!("http://127.0.0.1:{port}");
    h.grant_connector("api", http_connection(&base, true));
    let answers = execute_ops(
        &h,
        json!([
            { "op": "sql-execute", "binding": "db", "statement": "SELECT 1" },
            { "op": "kv-get", "binding": "cache", "key": "k" },
            { "op": "http", "binding": "api", "method": "GET", "url": format!("{base}/") },
        ]),
    );
    assert!(
        answers[0]["err"].as_str().unwrap().contains("Unavailable"),
        "{}",
        answers[0]
    );
    assert!(
        answers[1]["err"].as_str().unwrap().contains("Backend"),
        "{}",
        answers[1]
    );
    assert!(
        answers[2]["err"].as_str().unwrap().contains("Transport"),
        "{}",
        answers[2]
    );
}

#[test]
fn a_commit_that_fails_fails_the_call_at_a_checkpoint_or_at_its_end() {
    let schema = Schema::new("commitfail");
    // A deferred unique constraint is checked at COMMIT, so the statements succeed and the
    // commit fails.
    schema
        .client()
        .batch_execute("CREATE TABLE t (v int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        .unwrap();
    let h = probe(&schema);
    let dup = json!({ "op": "sql-execute", "binding": "db", "statement": "INSERT INTO t VALUES (1), (1)" });
    for ops in [json!([dup.clone(), { "op": "checkpoint" }]), json!([dup])] {
        let spec = ops_spec(&h, "execute", ops.clone());
        let plan = h.plan(&spec).unwrap();
        let Err(HarnessError::Plugin(e)) = h.execute(&spec, &plan.steps[0], None) else {
            panic!("{ops}: a failed commit must fail the call")
        };
        assert!(
            matches!(&e.cause, PluginFailure::Connector { message } if message.contains("23505")),
            "{ops}: {e}"
        );
        assert_eq!(count_rows(&schema, "t"), 0, "{ops}");
    }
}

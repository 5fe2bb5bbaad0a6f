//! What the connector tests share: the connector probe and ways to run its operations.
// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use plover_host::connectors::{Connector, HttpConnection, HttpRules};
use plover_host::model::MigrationSpec;
use plover_host::runtime::PluginFailure;
use plover_host::testing::{HarnessError, TestHarness};
use plover_tests::artifacts;
use plover_tests::services::Schema;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::Arc;

/// The connector probe with `db` granted as a SQL connection in `schema`.
pub fn probe(schema: &Schema) -> TestHarness {
    let mut h = TestHarness::load(artifacts::CONNECTOR_PROBE).unwrap();
    h.grant_connector("db", schema.connector());
    h
}

pub fn ops_spec(h: &TestHarness, phase: &str, ops: Value) -> MigrationSpec {
    h.spec("connector-probe", json!({ "phase": phase, "ops": ops }))
}

/// Run `ops` in `execute` and return the probe's answers.
pub fn execute_ops(h: &TestHarness, ops: Value) -> Vec<Value> {
    let spec = ops_spec(h, "execute", ops);
    let plan = h.plan(&spec).unwrap();
    let report = h.execute(&spec, &plan.steps[0], None).unwrap();
    serde_json::from_str(&report.summary).unwrap()
}

pub fn count_rows(schema: &Schema, table: &str) -> i64 {
    schema
        .client()
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

/// Run `ops` in `phase` (`plan` or `validate`); the sandbox's failure of the call, if any.
pub fn dry_run(h: &TestHarness, phase: &str, ops: Value) -> Option<PluginFailure> {
    let spec = ops_spec(h, phase, ops);
    let outcome = if phase == "plan" {
        h.plan(&spec).map(|_| ())
    } else {
        let plan = h.plan(&ops_spec(h, "execute", json!([]))).unwrap();
        h.validate(&spec, &plan).map(|_| ())
    };
    match outcome {
        Ok(()) => None,
        Err(HarnessError::Plugin(e)) => Some(e.cause),
        Err(other) => panic!("{other:?}"),
    }
}

pub fn sql(statement: &str) -> Value {
    json!({ "op": "sql-execute", "binding": "db", "statement": statement })
}

/// A loopback port nothing listens on: bound, then released (connections there are refused).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http_connection(base: &str, allow_private: bool) -> Connector {
    Connector::Http(Arc::new(
        HttpConnection::new(HttpRules {
            allow: vec![base.to_string(), "http://api.example.com".into()],
            allow_private,
            timeout_ms: 5_000,
            max_response_bytes: 16 * 1024,
            max_redirects: 3,
            ca_cert: None,
        })
        .unwrap(),
    ))
}

/// The connector probe, nothing granted yet, whose calls end at `deadline`.
pub fn probe_with_deadline(deadline: std::time::Duration) -> TestHarness {
    TestHarness::load_in(
        Arc::new(
            plover_host::runtime::Runtime::new(plover_host::runtime::RuntimeConfig::default())
                .unwrap(),
        ),
        artifacts::CONNECTOR_PROBE,
        plover_host::runtime::SandboxLimits {
            call_timeout: deadline,
            ..Default::default()
        },
    )
    .unwrap()
}

//! The sql-schema handler, built from plugins/sql-schema, against the real PostgreSQL: ordered
//! application with a checksummed history, rollback through down scripts in reverse, drift
//! detection, a failing migration leaving nothing behind, and concurrent runs applying each
//! migration exactly once.

use plover_host::model::{ErrorKind, MigrationSpec, ObjectStatus, Severity};
use plover_host::testing::{HarnessError, TestHarness};
use plover_tests::artifacts;
use plover_tests::services::Schema;
use serde_json::{Value, json};

fn harness(schema: &Schema) -> TestHarness {
    let mut h = TestHarness::load(artifacts::SQL_SCHEMA).unwrap();
    h.grant_connector("db", schema.connector());
    h
}

fn migrations() -> Value {
    json!([
        { "version": 1, "name": "users", "up": "CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);", "down": "DROP TABLE users;" },
        { "version": 2, "name": "email", "up": "ALTER TABLE users ADD COLUMN email text;", "down": "ALTER TABLE users DROP COLUMN email;" },
        { "version": 3, "name": "seed", "up": "INSERT INTO users VALUES (1, 'ada', 'ada@example.com'); INSERT INTO users VALUES (2, 'alan', NULL);", "down": "DELETE FROM users WHERE id IN (1, 2);" },
    ])
}

fn spec(h: &TestHarness, migrations: Value, id: &str) -> MigrationSpec {
    let mut spec = h.spec("sql-schema", json!({ "migrations": migrations }));
    spec.id = id.into();
    spec
}

fn history(schema: &Schema) -> Vec<(i64, String, String)> {
    schema
        .client()
        .query(
            "SELECT version, checksum, applied_by_job FROM plover_schema_history ORDER BY version",
            &[],
        )
        .map(|rows| {
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        })
        .unwrap_or_default()
}

fn users_columns(schema: &Schema) -> Vec<String> {
    schema
        .client()
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'users' ORDER BY ordinal_position",
            &[&schema.name],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn applies_in_order_with_a_history_and_rolls_back_in_reverse() {
    let schema = Schema::new("schlife");
    let h = harness(&schema);
    let spec = spec(&h, migrations(), "job-a");
    let plan = h.plan(&spec).unwrap();
    let steps: Vec<(&str, Vec<String>, bool)> = plan
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.depends_on.clone(), s.reversible))
        .collect();
    assert_eq!(
        steps,
        [
            ("ensure-history", vec![], true),
            ("apply-1", vec!["ensure-history".into()], true),
            ("apply-2", vec!["apply-1".into()], true),
            ("apply-3", vec!["apply-2".into()], true),
        ]
    );
    let run = h.run_all(&spec).unwrap();
    assert_eq!(run.steps[3].1.summary, "applied 3 seed");
    assert_eq!(users_columns(&schema), ["id", "name", "email"]);
    let applied = history(&schema);
    assert_eq!(applied.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(applied.iter().all(|a| a.1.len() == 64 && a.2 == "job-a"));

    // Planning again finds nothing pending but the new migration.
    let mut more = migrations();
    more.as_array_mut().unwrap().push(
        json!({ "version": 4, "name": "index", "up": "CREATE INDEX users_name ON users (name);" }),
    );
    let replan = h.plan(&spec_with(&h, more)).unwrap();
    let ids: Vec<&str> = replan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["ensure-history", "apply-4"]);
    assert!(!replan.steps[1].reversible, "no down script");

    h.rollback_all(&spec, &run.plan).unwrap();
    assert!(
        users_columns(&schema).is_empty(),
        "down scripts ran in reverse order"
    );
    assert!(history(&schema).is_empty());
}

fn spec_with(h: &TestHarness, migrations: Value) -> MigrationSpec {
    spec(h, migrations, "job-b")
}

#[test]
fn a_script_changed_after_it_was_applied_is_drift_and_is_refused() {
    let schema = Schema::new("schdrift");
    let h = harness(&schema);
    let first = spec(&h, migrations(), "job-a");
    h.run_all(&first).unwrap();

    let mut changed = migrations();
    changed[1]["up"] = json!("ALTER TABLE users ADD COLUMN email varchar(200);");
    let drifted = spec(&h, changed, "job-b");
    let Err(HarnessError::Handler(e)) = h.plan(&drifted) else {
        panic!("plan must refuse drift")
    };
    assert_eq!(e.kind, ErrorKind::ValidationFailed);
    assert!(
        e.message.contains("migration 2 (email)")
            && e.message.contains("changed after it was applied"),
        "{}",
        e.message
    );

    let report = h.validate(&drifted, &h.plan(&first).unwrap()).unwrap();
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(
        (
            report.findings[0].code.as_str(),
            report.findings[0].severity
        ),
        ("checksum-drift", Severity::Error)
    );
}

#[test]
fn a_failing_migration_leaves_nothing_of_itself_behind() {
    let schema = Schema::new("schfail");
    let h = harness(&schema);
    let mut broken = migrations();
    broken[1]["up"] = json!("ALTER TABLE users ADD COLUMN email text; SELECT 1/0;");
    let spec = spec(&h, broken, "job-a");
    let plan = h.plan(&spec).unwrap();
    h.execute(&spec, &plan.steps[0], None).unwrap();
    h.execute(&spec, &plan.steps[1], None).unwrap();
    let Err(HarnessError::Handler(e)) = h.execute(&spec, &plan.steps[2], None) else {
        panic!("migration 2 must fail")
    };
    assert!(e.message.contains("22012"), "{}", e.message);
    assert_eq!(
        users_columns(&schema),
        ["id", "name"],
        "its ALTER rolled back with it"
    );
    assert_eq!(history(&schema).len(), 1);
}

#[test]
fn concurrent_runs_apply_each_migration_exactly_once() {
    let schema = Schema::new("schrace");
    let mut list = vec![
        json!({ "version": 1, "name": "counter", "up": "CREATE TABLE applied (version int);" }),
    ];
    for v in 2..=8 {
        list.push(json!({ "version": v, "name": format!("m{v}"), "up": format!("INSERT INTO applied VALUES ({v}); SELECT pg_sleep(0.02);") }));
    }
    let list = Value::Array(list);
    // Both runs plan before either applies anything: each plan holds every migration.
    let runs: Vec<(TestHarness, MigrationSpec)> = ["job-a", "job-b"]
        .into_iter()
        .map(|id| {
            let h = harness(&schema);
            let spec = spec(&h, list.clone(), id);
            (h, spec)
        })
        .collect();
    let plans: Vec<_> = runs.iter().map(|(h, s)| h.plan(s).unwrap()).collect();
    assert!(plans.iter().all(|p| p.steps.len() == 9));
    std::thread::scope(|scope| {
        for ((h, spec), plan) in runs.iter().zip(&plans) {
            scope.spawn(move || {
                for step in &plan.steps {
                    h.execute(spec, step, None).unwrap();
                }
            });
        }
    });
    let applied: Vec<i32> = schema
        .client()
        .query("SELECT version FROM applied ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(applied, (2..=8).collect::<Vec<_>>(), "each script ran once");
    assert_eq!(history(&schema).len(), 8);
    let statuses: Vec<ObjectStatus> = runs
        .iter()
        .flat_map(|(h, _)| h.events.objects.lock().unwrap().clone())
        .map(|o| o.status)
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == ObjectStatus::Success)
            .count(),
        8
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == ObjectStatus::Skipped)
            .count(),
        8
    );
}

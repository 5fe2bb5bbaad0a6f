//! Connector benchmarks against the real Redis and PostgreSQL (figures in BENCHMARKS.md):
//!
//! 1. session-move's `copy` of 100,000 sessions through the plugin against a native Rust mover
//!    doing the same work with the same drivers (redis, postgres): scan a batch, read values
//!    and TTLs, insert the batch with one statement, commit per batch.
//! 2. sql-schema applying 500 migrations (plan, then every step, each its own call and
//!    transaction) against `sqlx migrate run` on the same scripts.
//!
//! `cargo bench -p plover-tests --bench connectors` (`-- --quick`: 10,000 sessions, 100
//! migrations). Needs `sqlx` (sqlx-cli) on PATH or in ~/.cargo/bin for the second comparison:
//! `cargo install sqlx-cli --locked --no-default-features --features postgres`.

use plover_host::testing::TestHarness;
use plover_tests::artifacts;
use plover_tests::services::{RedisPrefix, Schema, redis};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BATCH: usize = 1000;

use plover_tests::bench::median;

fn seed(space: &RedisPrefix, n: usize) {
    let mut conn = redis();
    for start in (0..n).step_by(5000) {
        let mut pipe = ::redis::pipe();
        for i in start..(start + 5000).min(n) {
            let cmd = pipe
                .cmd("SET")
                .arg(format!("{}sess:{i:07}", space.prefix))
                .arg(format!(
                    "{{\"user\":{i},\"roles\":[\"reader\"],\"csrf\":\"{i:016x}\"}}"
                ));
            if i.is_multiple_of(3) {
                cmd.arg("EX").arg(3600);
            }
            cmd.ignore();
        }
        pipe.query::<()>(&mut conn).unwrap();
    }
}

const TABLE: &str = "CREATE TABLE sessions (session_key text PRIMARY KEY, data bytea NOT NULL, expires_at timestamptz, moved_by_job text NOT NULL)";

/// The plugin's copy step, into an empty table.
fn plugin_copy(h: &TestHarness, schema: &Schema) -> Duration {
    schema
        .client()
        .batch_execute(&format!("DROP TABLE IF EXISTS sessions; {TABLE}"))
        .unwrap();
    let mut spec = h.spec(
        "session-move",
        json!({ "prefix": "sess:", "table": "sessions" }),
    );
    spec.options.batch_size = BATCH as u32;
    let plan = h.plan(&spec).unwrap();
    h.events.objects.lock().unwrap().clear();
    let started = Instant::now();
    h.execute(&spec, &plan.steps[1], None).unwrap();
    started.elapsed()
}

/// The same copy written natively over the same drivers.
fn native_copy(space: &RedisPrefix, schema: &Schema) -> (Duration, u64) {
    let mut pg = schema.client();
    pg.batch_execute(&format!("DROP TABLE IF EXISTS sessions; {TABLE}"))
        .unwrap();
    let mut conn = redis();
    let started = Instant::now();
    let pattern = format!("{}sess:*", space.prefix);
    let (mut cursor, mut moved) = (0u64, 0u64);
    loop {
        let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(BATCH)
            .query(&mut conn)
            .unwrap();
        if !keys.is_empty() {
            let values: Vec<Option<Vec<u8>>> =
                ::redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
            let mut pipe = ::redis::pipe();
            for k in &keys {
                pipe.cmd("PTTL").arg(k);
            }
            let ttls: Vec<i64> = pipe.query(&mut conn).unwrap();
            let mut sql = String::from(
                "INSERT INTO sessions AS t (session_key, data, expires_at, moved_by_job) VALUES ",
            );
            let mut params: Vec<Box<dyn postgres::types::ToSql + Sync>> =
                vec![Box::new("native".to_string())];
            for ((k, v), ttl) in keys.iter().zip(values).zip(ttls) {
                let Some(v) = v else { continue };
                let n = params.len();
                if n > 1 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, clock_timestamp() + ${}::bigint * interval '1 millisecond', $1)",
                    n + 1,
                    n + 2,
                    n + 3
                ));
                params.push(Box::new(k[space.prefix.len()..].to_string()));
                params.push(Box::new(v));
                params.push(Box::new((ttl >= 0).then_some(ttl)));
            }
            sql.push_str(" ON CONFLICT (session_key) DO UPDATE SET data = EXCLUDED.data, expires_at = EXCLUDED.expires_at WHERE t.moved_by_job = EXCLUDED.moved_by_job RETURNING session_key");
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p.as_ref()).collect();
            let mut tx = pg.transaction().unwrap();
            moved += tx.query(sql.as_str(), &refs).unwrap().len() as u64;
            tx.commit().unwrap();
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    (started.elapsed(), moved)
}

fn sqlx_binary() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("sqlx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([home.join(".cargo/bin/sqlx")])
        .find(|p| p.is_file())
}

fn migration_script(v: usize) -> String {
    format!(
        "CREATE TABLE t_{v:04} (id int PRIMARY KEY, v text NOT NULL);\nINSERT INTO t_{v:04} VALUES ({v}, 'seed');\n"
    )
}

fn plover_migrations(count: usize) -> Duration {
    let schema = Schema::new("benchschema");
    let mut h = TestHarness::load(artifacts::SQL_SCHEMA).unwrap();
    h.grant_connector("db", schema.connector());
    let migrations: Vec<_> = (1..=count)
        .map(|v| json!({ "version": v, "name": format!("table {v}"), "up": migration_script(v) }))
        .collect();
    let spec = h.spec("sql-schema", json!({ "migrations": migrations }));
    let started = Instant::now();
    let plan = h.plan(&spec).unwrap();
    for step in &plan.steps {
        h.execute(&spec, step, None).unwrap();
    }
    let took = started.elapsed();
    let applied: i64 = schema
        .client()
        .query_one("SELECT count(*) FROM plover_schema_history", &[])
        .unwrap()
        .get(0);
    assert_eq!(applied as usize, count);
    took
}

fn sqlx_migrations(sqlx: &PathBuf, count: usize) -> Duration {
    let schema = Schema::new("benchsqlx");
    let dir = tempfile::tempdir().unwrap();
    for v in 1..=count {
        std::fs::write(
            dir.path().join(format!("{v:04}_table_{v}.sql")),
            migration_script(v),
        )
        .unwrap();
    }
    let url = format!(
        "postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{}",
        schema.name
    );
    let started = Instant::now();
    let out = std::process::Command::new(sqlx)
        .args(["migrate", "run", "--source"])
        .arg(dir.path())
        .args(["--database-url", &url])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "sqlx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied: i64 = schema
        .client()
        .query_one("SELECT count(*) FROM _sqlx_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(applied as usize, count);
    took
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (sessions, migrations, rounds) = if quick {
        (10_000, 100, 3)
    } else {
        (100_000, 500, 5)
    };

    let space = RedisPrefix::new("benchsessions");
    let schema = Schema::new("benchmove");
    seed(&space, sessions);
    let mut h = TestHarness::load(artifacts::SESSION_MOVE).unwrap();
    h.grant("source", space.bucket());
    h.grant_connector("target", schema.connector());
    let (mut plugin, mut native) = (vec![], vec![]);
    for _ in 0..rounds {
        plugin.push(plugin_copy(&h, &schema));
        let (took, moved) = native_copy(&space, &schema);
        assert_eq!(moved as usize, sessions);
        native.push(took);
    }
    let (p, n) = (median(plugin), median(native));
    let rate = |d: Duration| sessions as f64 / d.as_secs_f64();
    println!(
        "session-move copy of {sessions} sessions, Redis -> PostgreSQL, batches of {BATCH}, medians of {rounds}:"
    );
    println!(
        "  through the plugin: {:>8.0} ms ({:.0} sessions/s)",
        p.as_secs_f64() * 1e3,
        rate(p)
    );
    println!(
        "  native mover:       {:>8.0} ms ({:.0} sessions/s)",
        n.as_secs_f64() * 1e3,
        rate(n)
    );
    println!(
        "  plugin / native throughput: {:.2}",
        n.as_secs_f64() / p.as_secs_f64()
    );

    let plover: Vec<Duration> = (0..3).map(|_| plover_migrations(migrations)).collect();
    let p = median(plover);
    println!(
        "\nsql-schema applying {migrations} migrations (plan + one call and transaction each), median of 3: {:.0} ms",
        p.as_secs_f64() * 1e3
    );
    match sqlx_binary() {
        Some(sqlx) => {
            let s = median((0..3).map(|_| sqlx_migrations(&sqlx, migrations)).collect());
            println!(
                "sqlx migrate run on the same scripts, median of 3:                       {:.0} ms",
                s.as_secs_f64() * 1e3
            );
            println!(
                "  sql-schema / sqlx time: {:.2}",
                p.as_secs_f64() / s.as_secs_f64()
            );
        }
        None => println!(
            "sqlx (sqlx-cli) not found: `cargo install sqlx-cli --locked --no-default-features --features postgres` to compare"
        ),
    }
}

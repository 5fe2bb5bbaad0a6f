//! `session-move`: moves user sessions from a key-value store (Redis, bound as `source`) into
//! a PostgreSQL table (bound as `target`): the session-storage migration.
//!
//! The table has one row per session: `session_key text primary key, data bytea, expires_at
//! timestamptz, moved_by_job text`. A session's remaining time to live becomes `expires_at`;
//! `moved_by_job` names the job that wrote the row, which is how rollback deletes exactly the
//! rows this job inserted and nothing else.
//!
//! Steps:
//! 1. `prepare-table` (preparation, reversible): create the table when it does not exist.
//! 2. `copy` (migration, resumable, reversible): scan the source in batches of `batch-size`,
//!    insert each batch with one statement, checkpoint the scan cursor. A checkpoint commits
//!    the rows before it, so a resumed copy never loses rows; rows this job already wrote are
//!    written again (idempotent) and a key that another writer already put in the table is
//!    skipped, never overwritten.
//! 3. `verify` (verification): every source key must be in the table, counts must agree, and
//!    the values of a sample of sessions must be byte-identical.

use plover_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Params {
    /// Only keys starting with this prefix are moved.
    prefix: String,
    /// The target table, optionally schema-qualified (`app.sessions`).
    table: String,
    /// How many sessions `verify` compares byte for byte.
    sample: u32,
    /// `table`, checked and quoted (filled in by `parse`).
    #[serde(skip)]
    table_sql: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            prefix: String::new(),
            table: "sessions".into(),
            sample: 100,
            table_sql: String::new(),
        }
    }
}

impl Params {
    fn parse(spec: &MigrationSpec) -> Result<Params, MigrationError> {
        let mut p: Params = spec.params()?;
        p.table_sql = sql_identifier("table", &p.table)?;
        Ok(p)
    }

    /// The table as SQL, quoted.
    fn table_sql(&self) -> &str {
        &self.table_sql
    }
}

/// The columns the table must have, with their PostgreSQL types.
const COLUMNS: [(&str, &str); 4] = [
    ("session_key", "text"),
    ("data", "bytea"),
    ("expires_at", "timestamp with time zone"),
    ("moved_by_job", "text"),
];

/// What the job-state bucket remembers for rollback.
const CREATED_TABLE: &str = "created-table";

#[derive(Serialize, Deserialize, Default)]
struct CopyCheckpoint {
    cursor: Option<String>,
    moved: u64,
    skipped: u64,
}

struct SessionMove;

impl Handler for SessionMove {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "session-move".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec!["session-move".into()],
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    }

    fn plan(spec: MigrationSpec) -> Result<MigrationPlan, MigrationError> {
        let params = Params::parse(&spec)?;
        let total = Bucket::open("source")?.count(&params.prefix)?;
        let db = SqlConnection::open("target")?;
        let exists = table_exists(&db, &params)?;
        let mut plan = MigrationPlan::low_risk(vec![
            PlanStep::new(
                "prepare-table",
                StepKind::Preparation,
                format!("Create table {} unless it exists", params.table),
            )
            .reversible()
            .resumable(),
            PlanStep::new(
                "copy",
                StepKind::Migration,
                format!(
                    "Move {total} sessions under '{}' into {}",
                    params.prefix, params.table
                ),
            )
            .after(&["prepare-table"])
            .expecting(total)
            .reversible()
            .resumable(),
            PlanStep::new(
                "verify",
                StepKind::Verification,
                "Check every session arrived; compare a sample byte for byte",
            )
            .after(&["copy"])
            .expecting(total)
            .reversible()
            .resumable(),
        ]);
        if exists {
            plan = plan.with_risk(
                RiskLevel::Medium,
                format!(
                    "{} already exists: sessions already in it are skipped, never overwritten",
                    params.table
                ),
            );
        }
        Ok(plan)
    }

    fn validate(
        spec: MigrationSpec,
        _plan: MigrationPlan,
    ) -> Result<ValidationReport, MigrationError> {
        let params = Params::parse(&spec)?;
        let db = SqlConnection::open("target")?;
        let source = Bucket::open("source")?;
        let mut findings = vec![];
        let exists = table_exists(&db, &params)?;
        if exists {
            findings.extend(schema_findings(&db, &params)?);
        }
        if spec.options.validation_level == ValidationLevel::Basic || !findings.is_empty() {
            return Ok(ValidationReport { findings });
        }
        // Full: look for sessions the target already holds (they would be skipped).
        if exists {
            let mut cursor = None;
            let mut conflicts = 0u64;
            loop {
                let page = source.scan(
                    &params.prefix,
                    cursor.as_deref(),
                    spec.options.batch_size.max(1),
                )?;
                let keys: Vec<&str> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
                conflicts += present_keys(&db, &params, &keys)?.len() as u64;
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
            if conflicts > 0 {
                findings.push(
                    Finding::new(
                        Severity::Warning,
                        "target-key-exists",
                        format!(
                            "{conflicts} sessions are already in {} and will be skipped",
                            params.table
                        ),
                    )
                    .for_step("copy"),
                );
            }
        }
        Ok(ValidationReport { findings })
    }

    fn execute(
        spec: MigrationSpec,
        step: PlanStep,
        checkpoint: Option<Vec<u8>>,
    ) -> Result<StepReport, MigrationError> {
        let params = Params::parse(&spec)?;
        match step.id.as_str() {
            "prepare-table" => prepare_table(&params),
            "copy" => copy(&spec, &params, &step, checkpoint),
            "verify" => verify(&spec, &params),
            other => Err(MigrationError::invalid_spec(format!(
                "session-move has no step '{other}'"
            ))),
        }
    }

    fn rollback(spec: MigrationSpec, step: PlanStep) -> Result<StepReport, MigrationError> {
        let params = Params::parse(&spec)?;
        let db = SqlConnection::open("target")?;
        match step.id.as_str() {
            "copy" => {
                let deleted = db.execute(
                    &format!("DELETE FROM {} WHERE moved_by_job = $1", params.table_sql()),
                    &[spec.id.as_str().into()],
                )?;
                Ok(StepReport::new(format!(
                    "deleted the {deleted} rows this job inserted"
                )))
            }
            "prepare-table" => {
                if Bucket::job_state().get(CREATED_TABLE)?.is_none() {
                    return Ok(StepReport::new("the table existed before; left as it was"));
                }
                let rows =
                    db.query_scalar(&format!("SELECT count(*) FROM {}", params.table_sql()), &[])?;
                if rows.and_then(|v| v.as_int()).unwrap_or(0) > 0 {
                    warn!("{} holds rows written by others; not dropped", params.table);
                    return Ok(StepReport::new(
                        "the table this job created holds others' rows; kept",
                    ));
                }
                db.batch(&format!("DROP TABLE IF EXISTS {}", params.table_sql()))?;
                Bucket::job_state().delete(CREATED_TABLE)?;
                Ok(StepReport::new(format!(
                    "dropped {}, which this job created",
                    params.table
                )))
            }
            "verify" => Ok(StepReport::new("verification changes nothing")),
            other => Err(MigrationError::invalid_spec(format!(
                "session-move has no step '{other}'"
            ))),
        }
    }
}

fn table_exists(db: &SqlConnection, params: &Params) -> Result<bool, MigrationError> {
    let found = db.query_scalar(
        "SELECT to_regclass($1)::text",
        &[params.table.as_str().into()],
    )?;
    Ok(found.is_some_and(|v| !v.is_null()))
}

/// Errors for every required column that is missing or of another type.
fn schema_findings(db: &SqlConnection, params: &Params) -> Result<Vec<Finding>, MigrationError> {
    let rows = db.query_all(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
         FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        &[params.table.as_str().into()],
    )?;
    let have: BTreeMap<String, String> = rows
        .iter()
        .filter_map(|r| Some((r[0].as_text()?.to_string(), r[1].as_text()?.to_string())))
        .collect();
    Ok(COLUMNS
        .iter()
        .filter(|(name, ty)| have.get(*name).map(String::as_str) != Some(*ty))
        .map(|(name, ty)| {
            Finding::new(
                Severity::Error,
                "target-schema",
                format!(
                    "{} needs column {name} of type {ty} (it has: {})",
                    params.table,
                    have.get(*name)
                        .map(String::as_str)
                        .unwrap_or("no such column")
                ),
            )
            .for_step("copy")
        })
        .collect())
}

/// The keys among `keys` that already have a row.
fn present_keys(
    db: &SqlConnection,
    params: &Params,
    keys: &[&str],
) -> Result<Vec<String>, MigrationError> {
    if keys.is_empty() {
        return Ok(vec![]);
    }
    let placeholders: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
    let statement = format!(
        "SELECT session_key FROM {} WHERE session_key IN ({})",
        params.table_sql(),
        placeholders.join(", ")
    );
    let params: Vec<SqlValue> = keys.iter().map(|k| SqlValue::from(*k)).collect();
    Ok(SqlConnection::query_all(db, &statement, &params)?
        .into_iter()
        .filter_map(|r| r.into_iter().next()?.as_text().map(str::to_string))
        .collect())
}

/// The data of the rows among `entries`' keys that job `job` wrote.
fn moved_values(
    db: &SqlConnection,
    params: &Params,
    job: &str,
    entries: &[(String, Vec<u8>)],
) -> Result<BTreeMap<String, Vec<u8>>, MigrationError> {
    let placeholders: Vec<String> = (2..entries.len() + 2).map(|i| format!("${i}")).collect();
    let statement = format!(
        "SELECT session_key, data FROM {} WHERE moved_by_job = $1 AND session_key IN ({})",
        params.table_sql(),
        placeholders.join(", ")
    );
    let mut args: Vec<SqlValue> = vec![job.into()];
    args.extend(entries.iter().map(|(k, _)| SqlValue::from(k.as_str())));
    Ok(db
        .query_all(&statement, &args)?
        .into_iter()
        .filter_map(|r| {
            Some((
                r.first()?.as_text()?.to_string(),
                r.get(1)?.as_bytes()?.to_vec(),
            ))
        })
        .collect())
}

fn prepare_table(params: &Params) -> Result<StepReport, MigrationError> {
    let db = SqlConnection::open("target")?;
    if table_exists(&db, params)? {
        return Ok(StepReport::new(format!("{} exists", params.table)));
    }
    // Noted before the table is created, so a crash in between cannot leave a table that
    // rollback does not know it may drop (dropping one that is absent is harmless).
    Bucket::job_state().set(CREATED_TABLE, b"1")?;
    db.batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (session_key text PRIMARY KEY, data bytea NOT NULL, \
         expires_at timestamptz, moved_by_job text NOT NULL)",
        params.table_sql()
    ))?;
    Ok(StepReport::new(format!("created {}", params.table)))
}

fn copy(
    spec: &MigrationSpec,
    params: &Params,
    step: &PlanStep,
    checkpoint: Option<Vec<u8>>,
) -> Result<StepReport, MigrationError> {
    let source = Bucket::open("source")?;
    let db = SqlConnection::open("target")?;
    let mut state: CopyCheckpoint = match checkpoint {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            MigrationError::data_corruption(format!("unreadable copy checkpoint: {e}"))
        })?,
        None => CopyCheckpoint::default(),
    };
    if state.moved + state.skipped > 0 {
        info!("resuming after {} sessions", state.moved + state.skipped);
    }
    let batch = spec.options.batch_size.clamp(1, 5000);
    loop {
        if is_cancelled() {
            return Err(MigrationError::cancelled().retryable());
        }
        let started = Instant::now();
        let page = source.scan(&params.prefix, state.cursor.as_deref(), batch)?;
        if !page.entries.is_empty() {
            let keys: Vec<String> = page.entries.iter().map(|(k, _)| k.clone()).collect();
            let ttls = source.ttl_many(&keys)?;
            let written = insert_batch(&db, params, &spec.id, &page.entries, &ttls)?;
            let per_object = started.elapsed().as_micros() as u64 / keys.len() as u64;
            let results: Vec<ObjectResult> = keys
                .iter()
                .map(|k| {
                    if written.contains(k) {
                        ObjectResult::success(k.clone(), "session", per_object)
                    } else {
                        ObjectResult::skipped(
                            k.clone(),
                            "session",
                            "already in the target table, written by someone else",
                        )
                    }
                })
                .collect();
            state.moved += written.len() as u64;
            state.skipped += (keys.len() - written.len()) as u64;
            record_objects(&results);
            progress(
                state.moved + state.skipped,
                step.expected_objects,
                keys.last().map(String::as_str),
            );
        }
        state.cursor = page.next_cursor;
        if state.cursor.is_none() {
            break;
        }
        // Commits the rows inserted so far, then records where to resume.
        save_checkpoint(&serde_json::to_vec(&state).expect("checkpoint serialises"));
    }
    if state.skipped > 0 {
        warn!(
            "{} sessions were already in {} and were skipped",
            state.skipped, params.table
        );
    }
    Ok(StepReport::new(format!(
        "moved {} sessions ({} skipped)",
        state.moved, state.skipped
    )))
}

/// Insert one batch; the keys this job wrote (now or in an interrupted earlier run).
fn insert_batch(
    db: &SqlConnection,
    params: &Params,
    job: &str,
    entries: &[(String, Vec<u8>)],
    ttls: &[Option<u64>],
) -> Result<std::collections::BTreeSet<String>, MigrationError> {
    let mut values = Vec::with_capacity(entries.len());
    let mut args: Vec<SqlValue> = Vec::with_capacity(entries.len() * 3 + 1);
    args.push(job.into());
    let mut seen = std::collections::BTreeSet::new();
    for ((key, data), ttl) in entries.iter().zip(ttls) {
        // A Redis scan may (rarely) repeat a key; one statement may not touch a row twice.
        if !seen.insert(key.as_str()) {
            continue;
        }
        let n = args.len();
        values.push(format!(
            "(${}, ${}, clock_timestamp() + ${}::bigint * interval '1 millisecond', $1)",
            n + 1,
            n + 2,
            n + 3
        ));
        args.push(key.as_str().into());
        args.push(data.clone().into());
        args.push(ttl.map(|t| t as i64).into());
    }
    let statement = format!(
        "INSERT INTO {table} AS t (session_key, data, expires_at, moved_by_job) VALUES {} \
         ON CONFLICT (session_key) DO UPDATE SET data = EXCLUDED.data, expires_at = EXCLUDED.expires_at \
         WHERE t.moved_by_job = EXCLUDED.moved_by_job RETURNING session_key",
        values.join(", "),
        table = params.table_sql()
    );
    Ok(db
        .query_all(&statement, &args)?
        .into_iter()
        .filter_map(|r| r.into_iter().next()?.as_text().map(str::to_string))
        .collect())
}

fn verify(spec: &MigrationSpec, params: &Params) -> Result<StepReport, MigrationError> {
    let source = Bucket::open("source")?;
    let db = SqlConnection::open("target")?;
    let batch = spec.options.batch_size.clamp(1, 5000);
    let (mut seen, mut compared) = (0u64, 0u32);
    let mut cursor = None;
    loop {
        let page = source.scan(&params.prefix, cursor.as_deref(), batch)?;
        let keys: Vec<&str> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
        if !keys.is_empty() {
            let present = present_keys(&db, params, &keys)?;
            if present.len() != keys.len() {
                let missing = keys.iter().find(|k| !present.iter().any(|p| p == *k));
                return Err(MigrationError::data_corruption(format!(
                    "{} of {} sessions in a batch are not in {} (e.g. {})",
                    keys.len() - present.len(),
                    keys.len(),
                    params.table,
                    missing.unwrap_or(&"?")
                )));
            }
            seen += keys.len() as u64;
        }
        // The sample: this page's first sessions until `sample` are compared, in one query.
        let wanted = (params.sample - compared) as usize;
        let sample = &page.entries[..wanted.min(page.entries.len())];
        if !sample.is_empty() {
            let stored = moved_values(&db, params, &spec.id, sample)?;
            for (key, value) in sample {
                if let Some(data) = stored.get(key) {
                    if data != value {
                        return Err(MigrationError::data_corruption(format!(
                            "session {key} differs between the source and {}",
                            params.table
                        )));
                    }
                    compared += 1;
                }
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let ours = db
        .query_scalar(
            &format!(
                "SELECT count(*) FROM {} WHERE moved_by_job = $1",
                params.table_sql()
            ),
            &[spec.id.as_str().into()],
        )?
        .and_then(|v| v.as_int())
        .unwrap_or(0);
    info!(
        "verified {seen} sessions present, {compared} compared byte for byte, {ours} rows written by this job"
    );
    Ok(StepReport::new(format!(
        "all {seen} sessions present; {compared} sampled values identical"
    )))
}

plover_sdk::export_handler!(SessionMove);

//! `sql-schema`: applies versioned SQL migrations to PostgreSQL (the database bound as `db`).
//!
//! The spec carries the migrations, each with a version, a name, an `up` script and an
//! optional `down` script. Applied ones are recorded in a history table with the SHA-256 of
//! their `up` script, so a script changed after it was applied (drift) is caught, at plan time
//! and again before anything runs.
//!
//! Steps: `ensure-history` (create the history table), then one `apply-<version>` per pending
//! migration, each depending on the one before. Each step is one handler call and so one
//! transaction: the script and its history row commit together or not at all.
//!
//! Concurrency: every step first takes a transaction-scoped advisory lock keyed by the history
//! table, then re-reads the history, so two runs against one database never apply a migration
//! twice. The lock ends with the transaction, also when the host running it is killed (the
//! server notices the lost client within a second), so a killed run never leaves a lock that
//! blocks the next one, unlike lock tables.
//!
//! Rollback runs `down` scripts in reverse order, only for migrations this job applied.

use plover_sdk::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Migration {
    version: i64,
    name: String,
    up: String,
    #[serde(default)]
    down: Option<String>,
}

impl Migration {
    fn checksum(&self) -> String {
        Sha256::digest(self.up.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    migrations: Vec<Migration>,
    #[serde(default = "default_history_table")]
    history_table: String,
    /// `history_table`, checked and quoted (filled in by `parse`).
    #[serde(skip)]
    history_sql: String,
}

fn default_history_table() -> String {
    "plover_schema_history".into()
}

impl Params {
    fn parse(spec: &MigrationSpec) -> Result<Params, MigrationError> {
        let mut p: Params = spec.params()?;
        p.history_sql = sql_identifier("history_table", &p.history_table)?;
        p.migrations.sort_by_key(|m| m.version);
        if let Some(w) = p
            .migrations
            .windows(2)
            .find(|w| w[0].version == w[1].version)
        {
            return Err(MigrationError::invalid_spec(format!(
                "version {} appears twice",
                w[0].version
            )));
        }
        if let Some(m) = p.migrations.iter().find(|m| m.version <= 0) {
            return Err(MigrationError::invalid_spec(format!(
                "version {} must be positive",
                m.version
            )));
        }
        Ok(p)
    }

    fn history_sql(&self) -> &str {
        &self.history_sql
    }

    fn migration(&self, step: &PlanStep) -> Result<&Migration, MigrationError> {
        let version: i64 = step
            .id
            .strip_prefix("apply-")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                MigrationError::invalid_spec(format!("sql-schema has no step '{}'", step.id))
            })?;
        self.migrations
            .iter()
            .find(|m| m.version == version)
            .ok_or_else(|| {
                MigrationError::invalid_spec(format!("the spec has no migration {version}"))
            })
    }
}

/// One applied migration, as the history table has it.
struct Applied {
    checksum: String,
    by_job: String,
}

/// The history entry of one version, if applied. Steps read only their own row: reading the
/// whole history in every step made applying n migrations cost n² row reads.
fn applied(
    db: &SqlConnection,
    params: &Params,
    version: i64,
) -> Result<Option<Applied>, MigrationError> {
    let rows = db.query_all(
        &format!(
            "SELECT checksum, applied_by_job FROM {} WHERE version = $1",
            params.history_sql()
        ),
        &[version.into()],
    )?;
    Ok(rows.into_iter().next().and_then(|r| {
        Some(Applied {
            checksum: r.first()?.as_text()?.to_string(),
            by_job: r.get(1)?.as_text()?.to_string(),
        })
    }))
}

fn history(db: &SqlConnection, params: &Params) -> Result<BTreeMap<i64, Applied>, MigrationError> {
    let exists = db
        .query_scalar(
            "SELECT to_regclass($1)::text",
            &[params.history_table.as_str().into()],
        )?
        .is_some_and(|v| !v.is_null());
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows = db.query_all(
        &format!(
            "SELECT version, checksum, applied_by_job FROM {}",
            params.history_sql()
        ),
        &[],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some((
                r.first()?.as_int()?,
                Applied {
                    checksum: r.get(1)?.as_text()?.to_string(),
                    by_job: r.get(2)?.as_text()?.to_string(),
                },
            ))
        })
        .collect())
}

/// What stands between the spec and the database: drift, out-of-order and unknown versions.
fn findings(params: &Params, applied: &BTreeMap<i64, Applied>) -> Vec<Finding> {
    let mut out = vec![];
    let newest_applied = applied.keys().next_back().copied();
    for m in &params.migrations {
        match applied.get(&m.version) {
            Some(a) if a.checksum != m.checksum() => out.push(
                Finding::new(
                    Severity::Error,
                    "checksum-drift",
                    format!(
                        "migration {} ({}) was applied with checksum {} but its script now has {}: it changed after it was applied",
                        m.version, m.name, a.checksum, m.checksum()
                    ),
                ),
            ),
            Some(_) => {}
            None if newest_applied.is_some_and(|n| n > m.version) => out.push(Finding::new(
                Severity::Error,
                "out-of-order",
                format!(
                    "migration {} ({}) is pending but {} is already applied",
                    m.version,
                    m.name,
                    newest_applied.unwrap_or_default()
                ),
            )),
            None => {}
        }
    }
    for version in applied.keys() {
        if !params.migrations.iter().any(|m| m.version == *version) {
            out.push(Finding::new(
                Severity::Warning,
                "unknown-applied",
                format!("migration {version} is applied but not in the spec"),
            ));
        }
    }
    out
}

/// Serialise every writer of one history table, until this call's transaction ends.
fn lock(db: &SqlConnection, params: &Params) -> Result<(), MigrationError> {
    db.execute(
        "SELECT pg_advisory_xact_lock(hashtext('plover-sql-schema:' || $1))",
        &[params.history_table.as_str().into()],
    )?;
    Ok(())
}

struct SqlSchema;

impl Handler for SqlSchema {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "sql-schema".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec!["sql-schema".into()],
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    }

    fn plan(spec: MigrationSpec) -> Result<MigrationPlan, MigrationError> {
        let params = Params::parse(&spec)?;
        let db = SqlConnection::open("db")?;
        let applied = history(&db, &params)?;
        if let Some(blocking) = findings(&params, &applied)
            .into_iter()
            .find(|f| f.severity == Severity::Error)
        {
            return Err(MigrationError::validation_failed(blocking.message));
        }
        let mut steps = vec![
            PlanStep::new(
                "ensure-history",
                StepKind::Preparation,
                format!("Create {} unless it exists", params.history_table),
            )
            .reversible()
            .resumable(),
        ];
        let mut previous = "ensure-history".to_string();
        for m in params
            .migrations
            .iter()
            .filter(|m| !applied.contains_key(&m.version))
        {
            let id = format!("apply-{}", m.version);
            let mut step = PlanStep::new(
                &id,
                StepKind::Migration,
                format!("Apply {} {}", m.version, m.name),
            )
            .after(&[previous.as_str()])
            .expecting(1)
            // One transaction: an interrupted step left nothing behind and simply runs again.
            .resumable();
            if m.down.is_some() {
                step = step.reversible();
            }
            steps.push(step);
            previous = id;
        }
        let pending = steps.len() - 1;
        let mut plan = MigrationPlan::low_risk(steps);
        if params
            .migrations
            .iter()
            .any(|m| m.down.is_none() && !applied.contains_key(&m.version))
        {
            plan = plan.with_risk(
                RiskLevel::Medium,
                "some pending migrations have no down script and cannot be rolled back",
            );
        }
        info!(
            "{pending} of {} migrations pending",
            params.migrations.len()
        );
        Ok(plan)
    }

    fn validate(
        spec: MigrationSpec,
        _plan: MigrationPlan,
    ) -> Result<ValidationReport, MigrationError> {
        let params = Params::parse(&spec)?;
        let db = SqlConnection::open("db")?;
        let applied = history(&db, &params)?;
        Ok(ValidationReport {
            findings: findings(&params, &applied),
        })
    }

    fn execute(
        spec: MigrationSpec,
        step: PlanStep,
        _checkpoint: Option<Vec<u8>>,
    ) -> Result<StepReport, MigrationError> {
        let params = Params::parse(&spec)?;
        let db = SqlConnection::open("db")?;
        lock(&db, &params)?;
        if step.id == "ensure-history" {
            db.batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (version bigint PRIMARY KEY, name text NOT NULL, \
                 checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), \
                 applied_by_job text NOT NULL, execution_ms bigint NOT NULL)",
                params.history_sql()
            ))?;
            return Ok(StepReport::new(format!(
                "{} is ready",
                params.history_table
            )));
        }
        let m = params.migration(&step)?;
        // Under the lock, the history is the truth: another run may have applied it meanwhile.
        if let Some(a) = applied(&db, &params, m.version)? {
            if a.checksum != m.checksum() {
                return Err(MigrationError::data_corruption(format!(
                    "migration {} was applied with another script (checksum {})",
                    m.version, a.checksum
                )));
            }
            record_object(&ObjectResult::skipped(
                m.version.to_string(),
                "migration",
                format!("already applied by job {}", a.by_job),
            ));
            return Ok(StepReport::new(format!(
                "{} {} was already applied",
                m.version, m.name
            )));
        }
        let started = Instant::now();
        db.batch(&m.up)?;
        let took = started.elapsed();
        db.execute(
            &format!(
                "INSERT INTO {} (version, name, checksum, applied_by_job, execution_ms) VALUES ($1, $2, $3, $4, $5)",
                params.history_sql()
            ),
            &[
                m.version.into(),
                m.name.as_str().into(),
                m.checksum().into(),
                spec.id.as_str().into(),
                (took.as_millis() as i64).into(),
            ],
        )?;
        record_object(&ObjectResult::success(
            m.version.to_string(),
            "migration",
            took.as_micros() as u64,
        ));
        Ok(StepReport::new(format!("applied {} {}", m.version, m.name)))
    }

    fn rollback(spec: MigrationSpec, step: PlanStep) -> Result<StepReport, MigrationError> {
        let params = Params::parse(&spec)?;
        if step.id == "ensure-history" {
            return Ok(StepReport::new(
                "the history table is kept: it is the record",
            ));
        }
        let m = params.migration(&step)?;
        let db = SqlConnection::open("db")?;
        lock(&db, &params)?;
        match applied(&db, &params, m.version)? {
            None => Ok(StepReport::new(format!(
                "{} was not applied; nothing to undo",
                m.version
            ))),
            Some(a) if a.by_job != spec.id => Ok(StepReport::new(format!(
                "{} was applied by job {}, not this one; left in place",
                m.version, a.by_job
            ))),
            Some(_) => {
                let down = m.down.as_deref().ok_or_else(|| {
                    MigrationError::step_failed(format!(
                        "migration {} has no down script",
                        m.version
                    ))
                })?;
                db.batch(down)?;
                db.execute(
                    &format!("DELETE FROM {} WHERE version = $1", params.history_sql()),
                    &[m.version.into()],
                )?;
                Ok(StepReport::new(format!(
                    "reverted {} {}",
                    m.version, m.name
                )))
            }
        }
    }
}

plover_sdk::export_handler!(SqlSchema);

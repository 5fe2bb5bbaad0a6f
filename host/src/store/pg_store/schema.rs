//! The store's schema, versioned and migrated at start-up by the binary itself (refinery,
//! migrations embedded from `migrations/`). Nodes starting together take turns through an
//! advisory lock; a database migrated by a newer binary is refused, naming both versions.

use super::{Pool, pg_error};
use crate::store::StoreError;

mod embedded {
    refinery::embed_migrations!("src/store/pg_store/migrations");
}

/// Where refinery records which migrations ran.
const HISTORY_TABLE: &str = "plover_schema_history";

/// The first half of the advisory lock nodes hold while migrating; the second half is the
/// store's schema, so stores in other schemas of one database migrate apart.
const MIGRATION_LOCK: i32 = 0x706c_7602;

/// The newest schema version this binary knows.
pub fn latest_version() -> u32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// Bring the schema of the database behind `pool` up to [`latest_version`]. Returns the
/// version it had before.
pub fn migrate(pool: &Pool) -> Result<u32, StoreError> {
    migrate_up_to(pool, None)
}

/// Bring the schema up to `version` only, as an older release left it (tests of upgrades).
pub fn migrate_to(pool: &Pool, version: u32) -> Result<u32, StoreError> {
    migrate_up_to(pool, Some(version))
}

fn migrate_up_to(pool: &Pool, target: Option<u32>) -> Result<u32, StoreError> {
    let what = "migrating the store's schema";
    let mut client = pool
        .get()
        .map_err(|e| StoreError::unavailable(format!("the store database: {e}")))?;
    client
        .execute(
            "SELECT pg_advisory_lock($1, hashtext(current_schema()))",
            &[&MIGRATION_LOCK],
        )
        .map_err(|e| pg_error(what, e))?;
    let result = (|| {
        let current = current_version(&mut client)?;
        let latest = latest_version();
        if current > latest {
            return Err(StoreError::corrupt(format!(
                "the store database's schema is version {current}, newer than this binary \
                 knows (version {latest}): run a Plover release at least as new as the one \
                 that migrated it"
            )));
        }
        let mut runner = embedded::migrations::runner().set_abort_divergent(true);
        runner.set_migration_table_name(HISTORY_TABLE);
        if let Some(v) = target {
            runner = runner.set_target(refinery::Target::Version(v));
        }
        runner
            .run(&mut *client)
            .map_err(|e| StoreError::unavailable(format!("{what}: {e}")))?;
        if current < latest {
            tracing::info!(from = current, to = latest, "store schema migrated");
        }
        Ok(current)
    })();
    // The lock ends with the session anyway; released here so the pooled connection is clean.
    let _ = client.execute(
        "SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
        &[&MIGRATION_LOCK],
    );
    result
}

/// The schema version the database is at (0 when it has none yet).
pub fn current_version(client: &mut postgres::Client) -> Result<u32, StoreError> {
    let what = "reading the store's schema version";
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
        .map_err(|e| pg_error(what, e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i32> = client
        .query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[])
        .map_err(|e| pg_error(what, e))?
        .get(0);
    Ok(version.unwrap_or(0).max(0) as u32)
}

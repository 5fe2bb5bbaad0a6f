//! The SQL connector over PostgreSQL (14 or newer), with the synchronous `postgres` client:
//! host imports are synchronous, so a blocking client needs no runtime bridge per call.
//!
//! Dry runs (`plan`, `validate`) cannot write, by what the server guarantees rather than by
//! reading statement text: their transaction is `READ ONLY` and takes its snapshot at once
//! (after which PostgreSQL refuses `SET TRANSACTION READ WRITE`), and after each statement
//! the host checks, by a transaction-local marker, that the transaction is still its own (a
//! statement that ended it is refused, and the call fails). A role with more power than
//! migrations need (superuser, or member of `pg_execute_server_program`,
//! `pg_read_server_files`, `pg_write_server_files`, `pg_signal_backend`) is refused unless the
//! operator allows it; `read_only_url` can give dry runs a role that cannot write at all.
//!
//! Every connection the pool opens asks the server to check every second whether its client
//! is still there (`client_connection_check_interval`), so the transaction (and any advisory
//! lock) of a host that was killed mid-statement ends within a second instead of when the
//! statement would have finished. Within a living host, a statement ends at the call's
//! deadline (`statement_timeout`) or, when the call is stopped by force, by a cancel request
//! from [`watch_force_stops`]: epoch interruption cannot reach a thread waiting on the server.

use super::sql::{
    CallBounds, Column, MAX_PAGE_ROWS, RowPage, SqlDatabase, SqlError, SqlTransaction, SqlValue,
    first_keyword, transaction_control_keyword,
};
use crate::stop::ForceStop;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{CancelToken, NoTls, Row};
use r2d2_postgres::PostgresConnectionManager;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
type Pooled = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

pub struct PostgresDatabase {
    pool: Pool,
    /// A pool of a role that cannot write, for read-only calls, when configured.
    read_only_pool: Option<Pool>,
    allow_privileged_role: bool,
    /// The outcome of the role check, once made (on the first connection of each pool).
    role_checked: [OnceLock<Result<(), String>>; 2],
}

/// How a [`PostgresDatabase`] is reached and what its role may be.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    pub search_path: Option<String>,
    pub max_connections: u32,
    /// A connection string for `plan` and `validate` (a role that cannot write).
    pub read_only_url: Option<String>,
    /// Accept a role with powers beyond data (superuser, server files and programs, signals).
    pub allow_privileged_role: bool,
}

/// Roles whose members can reach beyond the database's data.
const PRIVILEGED_ROLES: [&str; 4] = [
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_signal_backend",
];

impl PostgresDatabase {
    /// A database reached through `url` with the least-privilege defaults. Connects lazily: a
    /// server that is down fails the first call that opens the connection (as `unavailable`),
    /// not the host's start.
    pub fn new(url: &str, search_path: Option<&str>, max_connections: u32) -> Result<Self, String> {
        Self::with_options(
            url,
            &PostgresOptions {
                search_path: search_path.map(str::to_string),
                max_connections,
                ..Default::default()
            },
        )
    }

    pub fn with_options(url: &str, options: &PostgresOptions) -> Result<Self, String> {
        let pool = Self::pool(url, options)?;
        let read_only_pool = match &options.read_only_url {
            Some(u) => Some(Self::pool(u, options).map_err(|e| format!("read_only_url: {e}"))?),
            None => None,
        };
        Ok(PostgresDatabase {
            pool,
            read_only_pool,
            allow_privileged_role: options.allow_privileged_role,
            role_checked: Default::default(),
        })
    }

    /// Check the roles now, if the server answers within a few seconds: `Ok(false)` when it
    /// does not (the check is then made on first use).
    pub fn check_roles_now(&self) -> Result<bool, String> {
        for (i, pool) in [Some(&self.pool), self.read_only_pool.as_ref()]
            .into_iter()
            .enumerate()
        {
            let Some(pool) = pool else { continue };
            match pool.get_timeout(Duration::from_secs(3)) {
                Ok(mut conn) => self.role_checked[i]
                    .get_or_init(|| self.check_role(&mut conn))
                    .clone()?,
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Refuse a role that can reach beyond the database's data, unless allowed.
    fn check_role(&self, conn: &mut Pooled) -> Result<(), String> {
        if self.allow_privileged_role {
            return Ok(());
        }
        let row = conn
            .query_one(
                "SELECT current_user::text, rolsuper, ARRAY(SELECT r FROM unnest($1::text[]) r WHERE pg_has_role(current_user, r, 'member')) FROM pg_roles WHERE rolname = current_user",
                &[&PRIVILEGED_ROLES.to_vec()],
            )
            .map_err(|e| format!("checking the connection's role: {e}"))?;
        let (role, superuser, memberships): (String, bool, Vec<String>) =
            (row.get(0), row.get(1), row.get(2));
        let power = if superuser {
            Some("a superuser".to_string())
        } else if !memberships.is_empty() {
            Some(format!("a member of {}", memberships.join(", ")))
        } else {
            None
        };
        match power {
            None => Ok(()),
            Some(power) => Err(format!(
                "role '{role}' is {power}: plugins would act with its power (run programs, read server files, end sessions). Connect as a role that only owns the migration's data, or set allow_privileged_role = true"
            )),
        }
    }

    fn pool(url: &str, options: &PostgresOptions) -> Result<Pool, String> {
        let (search_path, max_connections) =
            (options.search_path.as_deref(), options.max_connections);
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| format!("postgres connection string: {e}"))?;
        let mut options = config.get_options().unwrap_or_default().to_string();
        options.push_str(" -c client_connection_check_interval=1000");
        if let Some(path) = search_path {
            options.push_str(&format!(" -c search_path={}", path.replace(' ', "")));
        }
        config
            .options(options.trim())
            .application_name("plover")
            .connect_timeout(Duration::from_secs(5));
        Ok(r2d2::Pool::builder()
            .max_size(max_connections.max(1))
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(10))
            .test_on_check_out(false)
            .build_unchecked(PostgresConnectionManager::new(config, NoTls)))
    }
}

impl SqlDatabase for PostgresDatabase {
    fn begin(&self, bounds: CallBounds) -> Result<Box<dyn SqlTransaction>, SqlError> {
        let which = usize::from(bounds.read_only && self.read_only_pool.is_some());
        let pool = if which == 1 {
            self.read_only_pool.as_ref().expect("checked")
        } else {
            &self.pool
        };
        let mut conn = pool
            .get()
            .map_err(|e| SqlError::Unavailable(e.to_string()))?;
        self.role_checked[which]
            .get_or_init(|| self.check_role(&mut conn))
            .clone()
            .map_err(SqlError::InvalidArgument)?;
        let mut tx = PgTransaction {
            cancel: conn.cancel_token(),
            conn: Some(conn),
            read_only: bounds.read_only,
            deadline: bounds.deadline,
            force_stop: bounds.force_stop,
            next_cursor: 0,
            cursors: BTreeMap::new(),
            buffered: BTreeMap::new(),
            aborted: None,
            marker: format!("{:016x}", rand_marker()),
        };
        tx.start()?;
        Ok(Box::new(tx))
    }
}

struct PgTransaction {
    /// `None` once finished.
    conn: Option<Pooled>,
    cancel: CancelToken,
    read_only: bool,
    deadline: Instant,
    force_stop: ForceStop,
    next_cursor: u32,
    /// Server-side cursors of `query` calls still open, each with the one row fetched ahead
    /// (fetching one more than asked tells the end, so an exhausted cursor closes at once
    /// instead of holding locks that later statements of the call would wait on).
    cursors: BTreeMap<String, Option<Vec<SqlValue>>>,
    /// Rows of statements that cannot be cursors (`INSERT ... RETURNING`) beyond the first page.
    buffered: BTreeMap<String, (Vec<Column>, VecDeque<Vec<SqlValue>>)>,
    /// The first error that aborted the transaction: PostgreSQL would silently turn a later
    /// `COMMIT` into a rollback, so the host remembers and says so.
    aborted: Option<String>,
    /// A value only this transaction holds (`plover.call`, transaction-local): when a
    /// statement leaves it gone, the statement ended the host's transaction.
    marker: String,
}

/// A value no other call is likely to hold, for the transaction marker.
fn rand_marker() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

impl PgTransaction {
    /// The connection, for one statement: while the returned guard lives, a force stop of
    /// the call cancels the statement.
    fn conn(&mut self) -> Watched<'_> {
        Watched {
            id: watch(&self.force_stop, self.deadline, &self.cancel),
            conn: self
                .conn
                .as_mut()
                .expect("a finished transaction is never used"),
        }
    }

    fn remaining_ms(&self) -> Result<u128, SqlError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(SqlError::Timeout("the call's deadline has passed".into()))
        } else {
            Ok(left.as_millis().max(1))
        }
    }

    fn start(&mut self) -> Result<(), SqlError> {
        let ms = self.remaining_ms()?;
        let sql = if self.read_only {
            // The SELECT takes the snapshot: from then on the transaction cannot be made
            // read-write, and the marker tells whether it is still this one.
            format!(
                "BEGIN READ ONLY; SET LOCAL statement_timeout = {ms}; SELECT set_config('plover.call', '{}', true)",
                self.marker
            )
        } else {
            format!("BEGIN; SET LOCAL statement_timeout = {ms}")
        };
        self.conn().batch_execute(&sql).map_err(convert)
    }

    /// In a read-only call, after a statement of the plugin's: still the host's transaction?
    /// If not, the statement ended it (a `COMMIT` however spelled): refuse, and fail the call.
    fn still_ours(&mut self) -> Result<(), SqlError> {
        if !self.read_only {
            return Ok(());
        }
        let marker = {
            let mut conn = self.conn();
            conn.query_one("SELECT current_setting('plover.call', true)", &[])
                .map(|row| row.get::<_, Option<String>>(0))
        };
        let ours = matches!(&marker, Ok(Some(m)) if *m == self.marker);
        if ours || marker.is_err() && self.aborted.is_some() {
            return Ok(());
        }
        let why = "the statement ended the host's read-only transaction".to_string();
        self.aborted.get_or_insert(why.clone());
        // Whatever runs now would run outside any transaction the host controls.
        let _ = self.conn().batch_execute("ROLLBACK");
        Err(SqlError::ReadOnly(why))
    }

    /// Refuse what must not reach the database, before sending anything.
    fn guard(&self, statement: &str) -> Result<(), SqlError> {
        if self.read_only
            && let Some(why) = self
                .aborted
                .as_ref()
                .filter(|w| w.contains("ended the host's"))
        {
            return Err(SqlError::ReadOnly(why.clone()));
        }
        if let Some(word) = transaction_control_keyword(statement, self.read_only) {
            let what = format!("'{word}' statements are the host's (one transaction per call)");
            return Err(if self.read_only {
                SqlError::ReadOnly(what)
            } else {
                SqlError::InvalidArgument(what)
            });
        }
        self.remaining_ms().map(|_| ())
    }

    /// Note errors that abort the transaction.
    fn track<T>(&mut self, r: Result<T, postgres::Error>) -> Result<T, SqlError> {
        r.map_err(|e| {
            let err = convert(e);
            if matches!(
                err,
                SqlError::Database { .. } | SqlError::ReadOnly(_) | SqlError::Timeout(_)
            ) && self.aborted.is_none()
            {
                self.aborted = Some(err.to_string());
            }
            err
        })
    }

    fn fetch_cursor(&mut self, cursor: &str, page_size: usize) -> Result<RowPage, SqlError> {
        let n = page_size.clamp(1, MAX_PAGE_ROWS);
        let ahead = self.cursors.get_mut(cursor).and_then(Option::take);
        let wanted = n + 1 - usize::from(ahead.is_some());
        let fetched = {
            let mut conn = self.conn();
            conn.prepare(&format!("FETCH FORWARD {wanted} FROM {cursor}"))
                .and_then(|st| {
                    conn.query(&st, &[])
                        .map(|rows| (columns(st.columns()), rows))
                })
        };
        let (columns, fetched) = self.track(fetched)?;
        let mut rows: Vec<Vec<SqlValue>> = ahead.into_iter().collect();
        rows.extend(decode_rows(&fetched)?);
        let cursor = if rows.len() > n {
            self.cursors.insert(cursor.to_string(), rows.pop());
            Some(cursor.to_string())
        } else {
            let closed = self.conn().batch_execute(&format!("CLOSE {cursor}"));
            self.track(closed)?;
            self.cursors.remove(cursor);
            None
        };
        Ok(RowPage {
            columns,
            rows,
            cursor,
        })
    }
}

impl SqlTransaction for PgTransaction {
    fn execute(&mut self, statement: &str, params: &[SqlValue]) -> Result<u64, SqlError> {
        self.guard(statement)?;
        let params: Vec<Param> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let r = self.conn().execute(statement, &refs);
        let r = self.track(r);
        self.still_ours()?;
        r
    }

    fn query(
        &mut self,
        statement: &str,
        params: &[SqlValue],
        page_size: usize,
    ) -> Result<RowPage, SqlError> {
        self.guard(statement)?;
        let statement = statement.trim().trim_end_matches(';');
        let params: Vec<Param> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let name = format!("plover_cursor_{}", self.next_cursor);
        self.next_cursor += 1;
        let first = first_keyword(statement)
            .unwrap_or_default()
            .to_ascii_uppercase();
        if matches!(first.as_str(), "SELECT" | "VALUES" | "TABLE") {
            // A server-side cursor: pages come from the server as asked, never all at once.
            let declare = format!("DECLARE {name} NO SCROLL CURSOR FOR {statement}");
            let r = self.conn().execute(declare.as_str(), &refs);
            let r = self.track(r);
            self.still_ours()?;
            r?;
            self.cursors.insert(name.clone(), None);
            return self.fetch_cursor(&name, page_size);
        }
        // Data-changing statements with RETURNING cannot be cursors: their rows (as many as
        // the statement changed) are kept here and paged out.
        let r = {
            let mut conn = self.conn();
            conn.prepare(statement).and_then(|st| {
                conn.query(&st, &refs)
                    .map(|rows| (columns(st.columns()), rows))
            })
        };
        let r = self.track(r);
        self.still_ours()?;
        let (columns, rows) = r?;
        let mut rows: VecDeque<Vec<SqlValue>> = decode_rows(&rows)?.into();
        let n = page_size.clamp(1, MAX_PAGE_ROWS);
        let page: Vec<_> = rows.drain(..n.min(rows.len())).collect();
        let cursor = (!rows.is_empty()).then(|| {
            self.buffered.insert(name.clone(), (columns.clone(), rows));
            name
        });
        Ok(RowPage {
            columns,
            rows: page,
            cursor,
        })
    }

    fn fetch(&mut self, cursor: &str, page_size: usize) -> Result<RowPage, SqlError> {
        if let Some((columns, rows)) = self.buffered.get_mut(cursor) {
            let n = page_size.clamp(1, MAX_PAGE_ROWS);
            let page: Vec<_> = rows.drain(..n.min(rows.len())).collect();
            let columns = columns.clone();
            let more = !rows.is_empty();
            if !more {
                self.buffered.remove(cursor);
            }
            return Ok(RowPage {
                columns,
                rows: page,
                cursor: more.then(|| cursor.to_string()),
            });
        }
        if !self.cursors.contains_key(cursor) {
            return Err(SqlError::InvalidArgument(format!(
                "no open cursor '{cursor}' in this call (cursors end with the call or at a checkpoint)"
            )));
        }
        self.remaining_ms()?;
        self.fetch_cursor(cursor, page_size)
    }

    fn batch(&mut self, script: &str) -> Result<(), SqlError> {
        if self.read_only {
            return Err(SqlError::ReadOnly(
                "scripts are refused during plan and validate".into(),
            ));
        }
        self.remaining_ms()?;
        let r = self.conn().batch_execute(script);
        self.track(r)
    }

    fn failed(&self) -> Option<String> {
        self.aborted.clone()
    }

    fn commit_and_continue(&mut self) -> Result<(), SqlError> {
        if let Some(why) = &self.aborted {
            return Err(SqlError::InvalidArgument(format!(
                "cannot commit: the transaction was aborted by an earlier error ({why})"
            )));
        }
        let r = self.conn().batch_execute("COMMIT");
        self.track(r)?;
        self.cursors.clear();
        self.buffered.clear();
        self.start()
    }

    fn finish(mut self: Box<Self>, commit: bool) -> Result<(), SqlError> {
        let mut conn = self.conn.take().expect("finish is called once");
        let outcome = match (&self.aborted, commit) {
            (None, true) => conn.batch_execute("COMMIT").map_err(convert),
            (Some(why), true) => {
                let _ = conn.batch_execute("ROLLBACK");
                Err(SqlError::InvalidArgument(format!(
                    "the call succeeded but its transaction was aborted by an earlier error ({why}); nothing was committed"
                )))
            }
            (_, false) => conn.batch_execute("ROLLBACK").map_err(convert),
        };
        reset_session(&mut conn);
        outcome
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = conn.batch_execute("ROLLBACK");
            reset_session(&mut conn);
        }
    }
}

/// A statement in flight that a force stop or the deadline of its call must cancel.
struct InFlight {
    id: u64,
    stop: ForceStop,
    deadline: Instant,
    cancel: CancelToken,
}

static IN_FLIGHT: Mutex<Vec<InFlight>> = Mutex::new(Vec::new());

/// Register a statement about to run; [`Watched`] deregisters it when it is done.
fn watch(stop: &ForceStop, deadline: Instant, cancel: &CancelToken) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static WATCHER: OnceLock<()> = OnceLock::new();
    WATCHER.get_or_init(watch_force_stops);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    IN_FLIGHT.lock().expect("in-flight lock").push(InFlight {
        id,
        stop: stop.clone(),
        deadline,
        cancel: cancel.clone(),
    });
    id
}

/// One process-wide thread: every 10 ms, send a cancel request for each statement in flight
/// whose call was stopped by force or ran past its deadline (once; the statement then fails
/// with `57014`). The deadline holds even if the plugin lifted `statement_timeout` (with
/// `set_config`, say): the server's own timeout is only the first line.
fn watch_force_stops() {
    std::thread::Builder::new()
        .name("plover-sql-cancel".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(10));
                let stopped: Vec<CancelToken> = {
                    let mut in_flight = IN_FLIGHT.lock().expect("in-flight lock");
                    let now = Instant::now();
                    let (stopped, running): (Vec<InFlight>, Vec<InFlight>) =
                        std::mem::take(&mut *in_flight)
                            .into_iter()
                            .partition(|f| f.stop.is_triggered() || now >= f.deadline);
                    *in_flight = running;
                    stopped.into_iter().map(|f| f.cancel).collect()
                };
                for token in stopped {
                    let _ = token.cancel_query(NoTls);
                }
            }
        })
        .expect("spawning the SQL cancel watcher");
}

/// A connection lent for one statement, watched for force stops.
struct Watched<'a> {
    id: u64,
    conn: &'a mut Pooled,
}

impl std::ops::Deref for Watched<'_> {
    type Target = Pooled;
    fn deref(&self) -> &Pooled {
        self.conn
    }
}

impl std::ops::DerefMut for Watched<'_> {
    fn deref_mut(&mut self) -> &mut Pooled {
        self.conn
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        IN_FLIGHT
            .lock()
            .expect("in-flight lock")
            .retain(|f| f.id != self.id);
    }
}

/// Leave nothing of one call's session (settings, advisory locks, prepared statements) for the
/// next user of the pooled connection.
fn reset_session(conn: &mut Pooled) {
    let _ = conn.batch_execute("DISCARD ALL");
}

fn convert(e: postgres::Error) -> SqlError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            return SqlError::ReadOnly(db.message().to_string());
        }
        if *code == SqlState::QUERY_CANCELED {
            return SqlError::Timeout(format!(
                "{} (statements may not run past the call's deadline)",
                db.message()
            ));
        }
        return SqlError::Database {
            code: code.code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
        };
    }
    let text = e.to_string();
    if text.starts_with("error serializing") || text.starts_with("error deserializing") {
        let source = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        SqlError::InvalidArgument(format!("{text}{source}"))
    } else {
        SqlError::Unavailable(text)
    }
}

fn columns(cols: &[postgres::Column]) -> Vec<Column> {
    cols.iter()
        .map(|c| Column {
            name: c.name().to_string(),
            type_name: c.type_().name().to_string(),
        })
        .collect()
}

fn decode_rows(rows: &[Row]) -> Result<Vec<Vec<SqlValue>>, SqlError> {
    rows.iter()
        .map(|row| (0..row.len()).map(|i| decode(row, i)).collect())
        .collect()
}

/// One column of one row as a contract value.
fn decode(row: &Row, i: usize) -> Result<SqlValue, SqlError> {
    fn get<'a, T: postgres::types::FromSql<'a>>(
        row: &'a Row,
        i: usize,
    ) -> Result<Option<T>, SqlError> {
        row.try_get(i).map_err(convert)
    }
    let ty = row.columns()[i].type_();
    let value = match *ty {
        Type::BOOL => get::<bool>(row, i)?.map(SqlValue::Bool),
        Type::INT2 => get::<i16>(row, i)?.map(|v| SqlValue::Int(v.into())),
        Type::INT4 => get::<i32>(row, i)?.map(|v| SqlValue::Int(v.into())),
        Type::INT8 => get::<i64>(row, i)?.map(SqlValue::Int),
        Type::OID => get::<u32>(row, i)?.map(|v| SqlValue::Int(v.into())),
        Type::FLOAT4 => get::<f32>(row, i)?.map(|v| SqlValue::Float(v.into())),
        Type::FLOAT8 => get::<f64>(row, i)?.map(SqlValue::Float),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            get::<String>(row, i)?.map(SqlValue::Text)
        }
        Type::BYTEA => get::<Vec<u8>>(row, i)?.map(SqlValue::Bytes),
        Type::JSON | Type::JSONB => {
            get::<serde_json::Value>(row, i)?.map(|v| SqlValue::Json(v.to_string()))
        }
        Type::TIMESTAMP => get::<chrono::NaiveDateTime>(row, i)?
            .map(|t| SqlValue::Timestamp(t.and_utc().timestamp_micros())),
        Type::TIMESTAMPTZ => get::<chrono::DateTime<chrono::Utc>>(row, i)?
            .map(|t| SqlValue::Timestamp(t.timestamp_micros())),
        _ => {
            let name = row.columns()[i].name();
            return Err(SqlError::InvalidArgument(format!(
                "column '{name}' has type {ty}, which the contract does not carry: cast it in SQL (e.g. {name}::text)"
            )));
        }
    };
    Ok(value.unwrap_or(SqlValue::Null))
}

/// A contract value as a parameter of whatever type the server inferred for it.
#[derive(Debug)]
struct Param<'a>(&'a SqlValue);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use bytes::BufMut;
        match (self.0, ty) {
            (SqlValue::Null, _) => Ok(IsNull::Yes),
            (SqlValue::Bool(b), _) => b.to_sql_checked(ty, out),
            (SqlValue::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql_checked(ty, out),
            (SqlValue::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql_checked(ty, out),
            (SqlValue::Int(i), &Type::OID) => u32::try_from(*i)?.to_sql_checked(ty, out),
            (SqlValue::Int(i), &Type::FLOAT8) => (*i as f64).to_sql_checked(ty, out),
            (SqlValue::Int(i), _) => i.to_sql_checked(ty, out),
            (SqlValue::Float(f), &Type::FLOAT4) => (*f as f32).to_sql_checked(ty, out),
            (SqlValue::Float(f), _) => f.to_sql_checked(ty, out),
            (SqlValue::Text(s) | SqlValue::Json(s), &Type::JSONB) => {
                out.put_u8(1); // jsonb's binary format version
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            (SqlValue::Text(s) | SqlValue::Json(s), &Type::JSON) => {
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            (SqlValue::Text(s) | SqlValue::Json(s), _) => s.as_str().to_sql_checked(ty, out),
            (SqlValue::Bytes(b), _) => b.as_slice().to_sql_checked(ty, out),
            (SqlValue::Timestamp(us), &Type::TIMESTAMP | &Type::TIMESTAMPTZ) => {
                out.put_i64(us - PG_EPOCH_MICROS);
                Ok(IsNull::No)
            }
            (SqlValue::Timestamp(_), _) => {
                Err(format!("a timestamp cannot be a parameter of type {ty}").into())
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked value by value in `to_sql`, which names the mismatch.
        true
    }

    to_sql_checked!();
}

//! `sql`: granted databases, one transaction per binding per call.

use super::{CallState, Refusal};
use crate::connectors::sql::{
    CallBounds, MAX_PAGE_ROWS, RowPage, SqlError, SqlTransaction, SqlValue,
};
use crate::runtime::contract::v0_2::plover::migration::sql;
use wasmtime::component::Resource;

/// A SQL connection a guest has opened: the resource behind `sql.connection`. The
/// transaction itself is the call's, kept in [`CallState::sql`] under the binding.
pub struct OpenSql {
    binding: String,
}

fn to_value(v: sql::SqlValue) -> SqlValue {
    match v {
        sql::SqlValue::Null => SqlValue::Null,
        sql::SqlValue::Boolean(b) => SqlValue::Bool(b),
        sql::SqlValue::Int(i) => SqlValue::Int(i),
        sql::SqlValue::Float(f) => SqlValue::Float(f),
        sql::SqlValue::Text(s) => SqlValue::Text(s),
        sql::SqlValue::Bytes(b) => SqlValue::Bytes(b),
        sql::SqlValue::Json(s) => SqlValue::Json(s),
        sql::SqlValue::Timestamp(t) => SqlValue::Timestamp(t),
    }
}

fn from_value(v: SqlValue) -> sql::SqlValue {
    match v {
        SqlValue::Null => sql::SqlValue::Null,
        SqlValue::Bool(b) => sql::SqlValue::Boolean(b),
        SqlValue::Int(i) => sql::SqlValue::Int(i),
        SqlValue::Float(f) => sql::SqlValue::Float(f),
        SqlValue::Text(s) => sql::SqlValue::Text(s),
        SqlValue::Bytes(b) => sql::SqlValue::Bytes(b),
        SqlValue::Json(s) => sql::SqlValue::Json(s),
        SqlValue::Timestamp(t) => sql::SqlValue::Timestamp(t),
    }
}

fn from_page(p: RowPage) -> sql::RowPage {
    sql::RowPage {
        columns: p
            .columns
            .into_iter()
            .map(|c| sql::Column {
                name: c.name,
                type_name: c.type_name,
            })
            .collect(),
        rows: p
            .rows
            .into_iter()
            .map(|r| r.into_iter().map(from_value).collect())
            .collect(),
        cursor: p.cursor,
    }
}

impl CallState {
    /// Run `op` on the transaction behind `h`, turning refusals into counted, logged errors.
    fn with_tx<T>(
        &mut self,
        h: &Resource<OpenSql>,
        op: impl FnOnce(&mut dyn SqlTransaction) -> Result<T, SqlError>,
    ) -> wasmtime::Result<Result<T, sql::SqlError>> {
        let binding = self.table.get(h)?.binding.clone();
        let tx = self
            .sql
            .get_mut(&binding)
            .ok_or_else(|| wasmtime::format_err!("SQL transaction of '{binding}' is gone"))?;
        Ok(match op(tx.as_mut()) {
            Ok(v) => Ok(v),
            Err(SqlError::ReadOnly(m)) => {
                let what = format!("on '{binding}': {m}");
                Err(sql::SqlError::ReadOnly(self.refuse(
                    "sql",
                    Refusal::ReadOnly,
                    what,
                )))
            }
            Err(e) => Err(convert_error(e)),
        })
    }
}

fn convert_error(e: SqlError) -> sql::SqlError {
    match e {
        SqlError::ReadOnly(m) => sql::SqlError::ReadOnly(m),
        SqlError::InvalidArgument(m) => sql::SqlError::InvalidArgument(m),
        SqlError::Database {
            code,
            message,
            detail,
        } => sql::SqlError::Database(sql::DatabaseError {
            code,
            message,
            detail,
        }),
        SqlError::Timeout(m) => sql::SqlError::Timeout(m),
        SqlError::Unavailable(m) => sql::SqlError::Unavailable(m),
    }
}

fn page_size(n: u32) -> usize {
    (n as usize).clamp(1, MAX_PAGE_ROWS)
}

impl sql::Host for CallState {}

impl sql::HostConnection for CallState {
    fn open(
        &mut self,
        binding: String,
    ) -> wasmtime::Result<Result<Resource<OpenSql>, sql::SqlError>> {
        let granted = match &self.job {
            Some(j) => j.grants.sql(&binding).cloned(),
            None => Err("no job: describe may not open connections".into()),
        };
        let db = match granted {
            Ok(db) => db,
            Err(why) => {
                return Ok(Err(sql::SqlError::NotGranted(self.refuse(
                    "sql",
                    Refusal::NotGranted,
                    why,
                ))));
            }
        };
        if !self.sql.contains_key(&binding) {
            let bounds = CallBounds {
                read_only: self.read_only_binding(&binding),
                deadline: self.wait_limit.deadline,
                force_stop: self.wait_limit.force_stop.clone(),
            };
            match db.begin(bounds) {
                Ok(tx) => {
                    self.sql.insert(binding.clone(), tx);
                }
                Err(e) => return Ok(Err(convert_error(e))),
            }
        }
        Ok(Ok(self.table.push(OpenSql { binding })?))
    }

    fn execute(
        &mut self,
        h: Resource<OpenSql>,
        statement: String,
        params: Vec<sql::SqlValue>,
    ) -> wasmtime::Result<Result<u64, sql::SqlError>> {
        let params: Vec<SqlValue> = params.into_iter().map(to_value).collect();
        self.with_tx(&h, |tx| tx.execute(&statement, &params))
    }

    fn query(
        &mut self,
        h: Resource<OpenSql>,
        statement: String,
        params: Vec<sql::SqlValue>,
        page: u32,
    ) -> wasmtime::Result<Result<sql::RowPage, sql::SqlError>> {
        let params: Vec<SqlValue> = params.into_iter().map(to_value).collect();
        Ok(self
            .with_tx(&h, |tx| tx.query(&statement, &params, page_size(page)))?
            .map(from_page))
    }

    fn fetch(
        &mut self,
        h: Resource<OpenSql>,
        cursor: String,
        page: u32,
    ) -> wasmtime::Result<Result<sql::RowPage, sql::SqlError>> {
        Ok(self
            .with_tx(&h, |tx| tx.fetch(&cursor, page_size(page)))?
            .map(from_page))
    }

    fn batch(
        &mut self,
        h: Resource<OpenSql>,
        script: String,
    ) -> wasmtime::Result<Result<(), sql::SqlError>> {
        self.with_tx(&h, |tx| tx.batch(&script))
    }

    fn drop(&mut self, h: Resource<OpenSql>) -> wasmtime::Result<()> {
        // The transaction stays the call's: it ends when the call does.
        self.table.delete(h)?;
        Ok(())
    }
}

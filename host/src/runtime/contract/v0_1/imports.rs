//! 0.1's imports served by the 0.2 implementations: each call converts its arguments to 0.2,
//! calls the same host code a 0.2 plugin reaches, and converts the answer back. The shapes
//! are the same in both lines; only the package version differs.

use super::latest::plover::migration as new;
use super::plover::migration::{http, job, kv, sql, types};
use crate::runtime::host_imports::{CallState, OpenBucket, OpenSql};
use wasmtime::component::Resource;

type Answer<T, E> = wasmtime::Result<Result<T, E>>;

same_cases!(job::LogLevel => new::job::LogLevel { Debug, Info, Warning, Error });
same_cases!(types::ObjectStatus => new::types::ObjectStatus { Success, Error, Skipped });
same_cases!(new::kv::KvError => kv::KvError {
    NotGranted(m), ReadOnly(m), InvalidArgument(m), Backend(m)
});
same_cases!(sql::SqlValue => new::sql::SqlValue {
    Null, Boolean(v), Int(v), Float(v), Text(v), Bytes(v), Json(v), Timestamp(v)
});
same_cases!(new::sql::SqlValue => sql::SqlValue {
    Null, Boolean(v), Int(v), Float(v), Text(v), Bytes(v), Json(v), Timestamp(v)
});
same_cases!(new::sql::SqlError => sql::SqlError {
    NotGranted(m), ReadOnly(m), InvalidArgument(m), Database(e), Timeout(m), Unavailable(m)
});
same_cases!(new::http::HttpError => http::HttpError {
    NotGranted(m), ReadOnly(m), Denied(m), InvalidArgument(m), Timeout(m), TooLarge(m),
    Transport(m)
});

impl From<new::sql::DatabaseError> for sql::DatabaseError {
    fn from(e: new::sql::DatabaseError) -> Self {
        sql::DatabaseError {
            code: e.code,
            message: e.message,
            detail: e.detail,
        }
    }
}

impl From<new::sql::RowPage> for sql::RowPage {
    fn from(p: new::sql::RowPage) -> Self {
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
                .map(|r| r.into_iter().map(Into::into).collect())
                .collect(),
            cursor: p.cursor,
        }
    }
}

impl From<types::ObjectResult> for new::types::ObjectResult {
    fn from(o: types::ObjectResult) -> Self {
        new::types::ObjectResult {
            name: o.name,
            object_type: o.object_type,
            status: o.status.into(),
            error: o.error,
            duration_micros: o.duration_micros,
        }
    }
}

/// A 0.2 answer with its error converted to 0.1's.
fn old<T, E: Into<F>, F>(r: Answer<T, E>) -> Answer<T, F> {
    Ok(r?.map_err(Into::into))
}

fn params(p: Vec<sql::SqlValue>) -> Vec<new::sql::SqlValue> {
    p.into_iter().map(Into::into).collect()
}

impl types::Host for CallState {}

impl job::Host for CallState {
    fn log(&mut self, level: job::LogLevel, message: String) -> wasmtime::Result<()> {
        new::job::Host::log(self, level.into(), message)
    }
    fn report_progress(
        &mut self,
        done: u64,
        total: Option<u64>,
        current: Option<String>,
    ) -> wasmtime::Result<()> {
        new::job::Host::report_progress(self, done, total, current)
    }
    fn record_object(&mut self, outcome: types::ObjectResult) -> wasmtime::Result<()> {
        new::job::Host::record_object(self, outcome.into())
    }
    fn record_objects(&mut self, outcomes: Vec<types::ObjectResult>) -> wasmtime::Result<()> {
        new::job::Host::record_objects(self, outcomes.into_iter().map(Into::into).collect())
    }
    fn is_cancelled(&mut self) -> wasmtime::Result<bool> {
        new::job::Host::is_cancelled(self)
    }
    fn save_checkpoint(&mut self, data: Vec<u8>) -> wasmtime::Result<()> {
        new::job::Host::save_checkpoint(self, data)
    }
    fn load_checkpoint(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        new::job::Host::load_checkpoint(self)
    }
}

impl kv::Host for CallState {}

impl kv::HostBucket for CallState {
    fn open(&mut self, binding: String) -> Answer<Resource<OpenBucket>, kv::KvError> {
        old(new::kv::HostBucket::open(self, binding))
    }
    fn job_state(&mut self) -> wasmtime::Result<Resource<OpenBucket>> {
        new::kv::HostBucket::job_state(self)
    }
    fn get(
        &mut self,
        h: Resource<OpenBucket>,
        key: String,
    ) -> Answer<Option<Vec<u8>>, kv::KvError> {
        old(new::kv::HostBucket::get(self, h, key))
    }
    fn set(
        &mut self,
        h: Resource<OpenBucket>,
        key: String,
        value: Vec<u8>,
    ) -> Answer<(), kv::KvError> {
        old(new::kv::HostBucket::set(self, h, key, value))
    }
    fn delete(&mut self, h: Resource<OpenBucket>, key: String) -> Answer<bool, kv::KvError> {
        old(new::kv::HostBucket::delete(self, h, key))
    }
    fn get_many(
        &mut self,
        h: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<Vec<u8>>>, kv::KvError> {
        old(new::kv::HostBucket::get_many(self, h, keys))
    }
    fn set_many(
        &mut self,
        h: Resource<OpenBucket>,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Answer<(), kv::KvError> {
        old(new::kv::HostBucket::set_many(self, h, entries))
    }
    fn delete_many(
        &mut self,
        h: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> Answer<u64, kv::KvError> {
        old(new::kv::HostBucket::delete_many(self, h, keys))
    }
    fn scan(
        &mut self,
        h: Resource<OpenBucket>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Answer<kv::ScanPage, kv::KvError> {
        let page = new::kv::HostBucket::scan(self, h, prefix, cursor, limit)?;
        Ok(page
            .map(|p| kv::ScanPage {
                entries: p.entries,
                next_cursor: p.next_cursor,
            })
            .map_err(Into::into))
    }
    fn count(&mut self, h: Resource<OpenBucket>, prefix: String) -> Answer<u64, kv::KvError> {
        old(new::kv::HostBucket::count(self, h, prefix))
    }
    fn ttl_many(
        &mut self,
        h: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<u64>>, kv::KvError> {
        old(new::kv::HostBucket::ttl_many(self, h, keys))
    }
    fn set_many_with_ttl(
        &mut self,
        h: Resource<OpenBucket>,
        entries: Vec<(String, Vec<u8>, Option<u64>)>,
    ) -> Answer<(), kv::KvError> {
        old(new::kv::HostBucket::set_many_with_ttl(self, h, entries))
    }
    fn drop(&mut self, h: Resource<OpenBucket>) -> wasmtime::Result<()> {
        new::kv::HostBucket::drop(self, h)
    }
}

impl sql::Host for CallState {}

impl sql::HostConnection for CallState {
    fn open(&mut self, binding: String) -> Answer<Resource<OpenSql>, sql::SqlError> {
        old(new::sql::HostConnection::open(self, binding))
    }
    fn execute(
        &mut self,
        h: Resource<OpenSql>,
        statement: String,
        p: Vec<sql::SqlValue>,
    ) -> Answer<u64, sql::SqlError> {
        old(new::sql::HostConnection::execute(
            self,
            h,
            statement,
            params(p),
        ))
    }
    fn query(
        &mut self,
        h: Resource<OpenSql>,
        statement: String,
        p: Vec<sql::SqlValue>,
        page_size: u32,
    ) -> Answer<sql::RowPage, sql::SqlError> {
        let page = new::sql::HostConnection::query(self, h, statement, params(p), page_size)?;
        Ok(page.map(Into::into).map_err(Into::into))
    }
    fn fetch(
        &mut self,
        h: Resource<OpenSql>,
        cursor: String,
        page_size: u32,
    ) -> Answer<sql::RowPage, sql::SqlError> {
        let page = new::sql::HostConnection::fetch(self, h, cursor, page_size)?;
        Ok(page.map(Into::into).map_err(Into::into))
    }
    fn batch(&mut self, h: Resource<OpenSql>, script: String) -> Answer<(), sql::SqlError> {
        old(new::sql::HostConnection::batch(self, h, script))
    }
    fn drop(&mut self, h: Resource<OpenSql>) -> wasmtime::Result<()> {
        new::sql::HostConnection::drop(self, h)
    }
}

impl http::Host for CallState {
    fn send(
        &mut self,
        binding: String,
        request: http::Request,
    ) -> Answer<http::Response, http::HttpError> {
        let request = new::http::Request {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        let sent = new::http::Host::send(self, binding, request)?;
        Ok(sent
            .map(|r| http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(Into::into))
    }
}

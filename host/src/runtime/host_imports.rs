//! The host side of the contract's imports (`job`, `kv`) and the per-call store state.
//!
//! Invariant: during a read-only call (`plan`, `validate`) no import changes anything. Every
//! write is refused with `kv-error::read-only` *and* remembered, and the call then fails with
//! `PluginFailure::WriteDenied` whatever the guest returns.

use super::contract::v0_1::plover::migration::{job, kv, types};
use super::events::JobEvents;
use super::sandbox::{CallLimiter, GuestStderr};
use crate::connectors::{Grants, KvBucket, MAX_BATCH};
use crate::model::ObjectResult;
use std::sync::Arc;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A bucket a guest has opened: the resource behind `kv.bucket`.
pub struct OpenBucket {
    binding: String,
    bucket: Arc<dyn KvBucket>,
}

/// Whether a call may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadOnly,
    ReadWrite,
}

/// The job a call works for: its grants, where its events go, its last checkpoint.
pub(crate) struct JobScope {
    pub grants: Grants,
    pub events: Arc<dyn JobEvents>,
    pub checkpoint: Option<Vec<u8>>,
    /// Only `execute` may save checkpoints.
    pub may_checkpoint: bool,
}

/// Longest log line kept; longer ones are cut (a guest cannot flood the host's memory).
const MAX_LOG_LINE: usize = 64 * 1024;

/// Everything one store holds. A fresh one is made for every call.
pub struct CallState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    pub(crate) stderr: GuestStderr,
    pub(crate) access: Access,
    /// `None` for `describe`, which works for no job.
    pub(crate) job: Option<JobScope>,
    /// Writes refused during a read-only call, described for the error.
    pub(crate) denied_writes: Vec<String>,
    /// When the guest's clock waits must end (see `runtime::clock`).
    pub(crate) wait_limit: super::clock::WaitLimit,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl CallState {
    fn refuse_if_read_only(&mut self, binding: &str, what: &str) -> Result<(), kv::KvError> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => {
                let description = format!("{what} on bucket '{binding}'");
                self.denied_writes.push(description.clone());
                Err(kv::KvError::ReadOnly(description))
            }
        }
    }

    fn bucket(
        &self,
        handle: &Resource<OpenBucket>,
    ) -> wasmtime::Result<(String, Arc<dyn KvBucket>)> {
        let open = self.table.get(handle)?;
        Ok((open.binding.clone(), open.bucket.clone()))
    }
}

fn check_batch(len: usize) -> Result<(), kv::KvError> {
    if len > MAX_BATCH {
        Err(kv::KvError::InvalidArgument(format!(
            "{len} items in one call; the limit is {MAX_BATCH}"
        )))
    } else {
        Ok(())
    }
}

fn backend_error(e: crate::connectors::KvBackendError) -> kv::KvError {
    kv::KvError::Backend(e.0)
}

impl types::Host for CallState {}

impl job::Host for CallState {
    fn log(&mut self, level: job::LogLevel, mut message: String) -> wasmtime::Result<()> {
        if message.len() > MAX_LOG_LINE {
            let cut = (0..=MAX_LOG_LINE)
                .rev()
                .find(|&i| message.is_char_boundary(i))
                .unwrap_or(0);
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        if let Some(job) = &self.job {
            job.events.log(level.into(), message);
        }
        Ok(())
    }

    fn report_progress(
        &mut self,
        done: u64,
        total: Option<u64>,
        current: Option<String>,
    ) -> wasmtime::Result<()> {
        if let Some(job) = &self.job {
            job.events.progress(done, total, current);
        }
        Ok(())
    }

    fn record_object(&mut self, outcome: types::ObjectResult) -> wasmtime::Result<()> {
        self.record_objects(vec![outcome])
    }

    fn record_objects(&mut self, outcomes: Vec<types::ObjectResult>) -> wasmtime::Result<()> {
        if let Some(job) = &self.job {
            job.events
                .objects(outcomes.into_iter().map(ObjectResult::from).collect());
        }
        Ok(())
    }

    fn is_cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.job.as_ref().is_some_and(|j| j.events.is_cancelled()))
    }

    fn save_checkpoint(&mut self, data: Vec<u8>) -> wasmtime::Result<()> {
        match &mut self.job {
            Some(job) if job.may_checkpoint && self.access == Access::ReadWrite => {
                job.checkpoint = Some(data.clone());
                job.events.checkpoint(data);
            }
            _ => self
                .denied_writes
                .push("save-checkpoint outside execute".into()),
        }
        Ok(())
    }

    fn load_checkpoint(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.job.as_ref().and_then(|j| j.checkpoint.clone()))
    }
}

impl kv::Host for CallState {}

impl kv::HostBucket for CallState {
    fn open(
        &mut self,
        binding: String,
    ) -> wasmtime::Result<Result<Resource<OpenBucket>, kv::KvError>> {
        let Some(bucket) = self
            .job
            .as_ref()
            .and_then(|j| j.grants.kv(&binding))
            .cloned()
        else {
            return Ok(Err(kv::KvError::NotGranted(format!(
                "no bucket is granted as '{binding}'"
            ))));
        };
        Ok(Ok(self.table.push(OpenBucket { binding, bucket })?))
    }

    fn job_state(&mut self) -> wasmtime::Result<Resource<OpenBucket>> {
        let Some(job) = &self.job else {
            wasmtime::bail!("job-state called outside a job (during describe)");
        };
        let bucket = job.grants.job_state().clone();
        Ok(self.table.push(OpenBucket {
            binding: "job-state".into(),
            bucket,
        })?)
    }

    fn get(
        &mut self,
        h: Resource<OpenBucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::KvError>> {
        let (_, bucket) = self.bucket(&h)?;
        Ok(bucket
            .get_many(&[key])
            .map(|mut v| v.pop().flatten())
            .map_err(backend_error))
    }

    fn set(
        &mut self,
        h: Resource<OpenBucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        self.set_many(h, vec![(key, value)])
    }

    fn delete(
        &mut self,
        h: Resource<OpenBucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kv::KvError>> {
        Ok(self.delete_many(h, vec![key])?.map(|n| n > 0))
    }

    fn get_many(
        &mut self,
        h: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, kv::KvError>> {
        let (_, bucket) = self.bucket(&h)?;
        if let Err(e) = check_batch(keys.len()) {
            return Ok(Err(e));
        }
        Ok(bucket.get_many(&keys).map_err(backend_error))
    }

    fn set_many(
        &mut self,
        h: Resource<OpenBucket>,
        entries: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        let (binding, bucket) = self.bucket(&h)?;
        if let Err(e) = self
            .refuse_if_read_only(&binding, "set")
            .and(check_batch(entries.len()))
        {
            return Ok(Err(e));
        }
        Ok(bucket.set_many(&entries).map_err(backend_error))
    }

    fn delete_many(
        &mut self,
        h: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u64, kv::KvError>> {
        let (binding, bucket) = self.bucket(&h)?;
        if let Err(e) = self
            .refuse_if_read_only(&binding, "delete")
            .and(check_batch(keys.len()))
        {
            return Ok(Err(e));
        }
        Ok(bucket.delete_many(&keys).map_err(backend_error))
    }

    fn scan(
        &mut self,
        h: Resource<OpenBucket>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<kv::ScanPage, kv::KvError>> {
        let (_, bucket) = self.bucket(&h)?;
        let limit = (limit as usize).clamp(1, MAX_BATCH);
        Ok(bucket
            .scan(&prefix, cursor.as_deref(), limit)
            .map(|p| kv::ScanPage {
                entries: p.entries,
                next_cursor: p.next_cursor,
            })
            .map_err(backend_error))
    }

    fn count(
        &mut self,
        h: Resource<OpenBucket>,
        prefix: String,
    ) -> wasmtime::Result<Result<u64, kv::KvError>> {
        let (_, bucket) = self.bucket(&h)?;
        Ok(bucket.count(&prefix).map_err(backend_error))
    }

    fn drop(&mut self, h: Resource<OpenBucket>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

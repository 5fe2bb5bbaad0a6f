//! The host side of the contract's imports and the per-call store state: `job` here, and one
//! module per connector interface (`kv`, `sql`, `http`).
//!
//! Invariants:
//! - During a read-only call (`plan`, `validate`) no import changes anything. Every write is
//!   refused *and* remembered, and the call then fails with `PluginFailure::WriteDenied`
//!   whatever the guest returns.
//! - Every refusal (a binding not granted, a write in a read-only call, an HTTP destination
//!   not allowed) is logged to the job and counted in the metrics.
//! - SQL transactions live as long as the call; `save-checkpoint` commits them first, so the
//!   data a checkpoint covers is durable before the checkpoint is.

mod http;
mod kv;
mod sql;

pub use kv::OpenBucket;
pub use sql::OpenSql;

use super::bounds;
use super::contract::v0_2::plover::migration::{job, types};
use super::events::JobEvents;
use super::guest_output::GuestOutput;
use super::sandbox::CallLimiter;
use crate::connectors::Grants;
use crate::connectors::sql::SqlTransaction;
use crate::model::{LogLevel, ObjectResult};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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

/// A connector's transaction could not be committed: the call fails, since what it reported
/// done is not durable. Raised as a trap from `save-checkpoint`, or after the call returns.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConnectorFailure(pub String);

/// The host's own database is damaged: raised as a trap so the call stops, reported as data
/// corruption rather than as something the plugin could retry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct StoreCorruption(pub String);

/// Everything one store holds. A fresh one is made for every call.
pub struct CallState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    /// The guest's stdout and stderr.
    pub(crate) output: GuestOutput,
    pub(crate) access: Access,
    /// `None` for `describe`, which works for no job.
    pub(crate) job: Option<JobScope>,
    /// Writes refused during a read-only call, described for the error.
    pub(crate) denied_writes: Vec<String>,
    /// When the guest's clock waits must end (see `runtime::clock`); also the deadline of
    /// every connector operation.
    pub(crate) wait_limit: super::clock::WaitLimit,
    /// This call's open SQL transactions, by binding.
    pub(crate) sql: BTreeMap<String, Box<dyn SqlTransaction>>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Why a connector refused an operation, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotGranted,
    ReadOnly,
    Denied,
}

impl CallState {
    pub(crate) fn read_only(&self) -> bool {
        self.access == Access::ReadOnly
    }

    /// Whether writes through `binding` are refused: in a read-only call, or because the
    /// plugin declared that it only reads it.
    pub(crate) fn read_only_binding(&self, binding: &str) -> bool {
        self.read_only()
            || self
                .job
                .as_ref()
                .is_some_and(|j| j.grants.is_read_only(binding))
    }

    /// Count, log and (for writes) remember a refusal; returns `what` for the guest's error.
    pub(crate) fn refuse(
        &mut self,
        connector: &'static str,
        refusal: Refusal,
        what: String,
    ) -> String {
        super::stats::record_refusal(connector, refusal);
        if let Some(job) = &self.job {
            job.events.log(
                LogLevel::Warning,
                format!("host refused ({connector}): {what}"),
            );
        }
        if refusal == Refusal::ReadOnly {
            self.denied_writes.push(what.clone());
        }
        what
    }

    /// End every SQL transaction of the call: commit when `commit`, else roll back. The first
    /// commit that fails is returned; the others are still ended.
    /// A call that `succeeded` but whose transaction failed (a statement failed, or ended
    /// it) fails too, read-only or not: `sql.wit` says so, and a dry run that swallowed a
    /// database error proves nothing.
    pub(crate) fn finish_transactions(
        &mut self,
        commit: bool,
        succeeded: bool,
    ) -> Result<(), ConnectorFailure> {
        let mut first_error = None;
        for (binding, tx) in std::mem::take(&mut self.sql) {
            if succeeded
                && !commit
                && let Some(why) = tx.failed()
            {
                first_error.get_or_insert(ConnectorFailure(format!(
                    "the call returned success, but a SQL statement on '{binding}' failed ({why})"
                )));
            }
            if let Err(e) = tx.finish(commit) {
                first_error.get_or_insert(ConnectorFailure(format!(
                    "committing the SQL transaction on '{binding}' failed: {e}"
                )));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl types::Host for CallState {}

impl job::Host for CallState {
    fn log(&mut self, level: job::LogLevel, mut message: String) -> wasmtime::Result<()> {
        bounds::cut(&mut message, bounds::MAX_MESSAGE, "log-line");
        if let Some(job) = &self.job {
            job.events.log(level.into(), message);
        }
        Ok(())
    }

    fn report_progress(
        &mut self,
        done: u64,
        total: Option<u64>,
        mut current: Option<String>,
    ) -> wasmtime::Result<()> {
        if let Some(c) = &mut current {
            bounds::cut(c, bounds::MAX_OBJECT_NAME, "object-name");
        }
        if let Some(job) = &self.job {
            job.events.progress(done, total, current);
        }
        Ok(())
    }

    fn record_object(&mut self, outcome: types::ObjectResult) -> wasmtime::Result<()> {
        self.record_objects(vec![outcome])
    }

    fn record_objects(&mut self, outcomes: Vec<types::ObjectResult>) -> wasmtime::Result<()> {
        if outcomes.len() > bounds::MAX_RESULTS_PER_CALL {
            crate::metrics::limit_hit("results-per-call");
            return Err(LimitExceeded(format!(
                "record-objects passed {} results in one call; the limit is {}",
                outcomes.len(),
                bounds::MAX_RESULTS_PER_CALL
            ))
            .into());
        }
        if let Some(job) = &self.job {
            let results = outcomes
                .into_iter()
                .map(|o| {
                    let mut o = ObjectResult::from(o);
                    bounds::object(&mut o);
                    o
                })
                .collect();
            job.events
                .objects(results)
                .map_err(|why| LimitExceeded(format!("record-objects: {why}")))?;
        }
        Ok(())
    }

    fn is_cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.job.as_ref().is_some_and(|j| j.events.is_cancelled()))
    }

    fn save_checkpoint(&mut self, data: Vec<u8>) -> wasmtime::Result<()> {
        if data.len() > bounds::MAX_CHECKPOINT {
            crate::metrics::limit_hit("checkpoint");
            return Err(LimitExceeded(format!(
                "save-checkpoint passed {} bytes; a checkpoint may hold {}",
                data.len(),
                bounds::MAX_CHECKPOINT
            ))
            .into());
        }
        let allowed =
            self.access == Access::ReadWrite && self.job.as_ref().is_some_and(|j| j.may_checkpoint);
        if !allowed {
            self.denied_writes
                .push("save-checkpoint outside execute".into());
            return Ok(());
        }
        // The rows this checkpoint covers must be durable before the checkpoint is.
        for (binding, tx) in &mut self.sql {
            tx.commit_and_continue().map_err(|e| {
                ConnectorFailure(format!(
                    "committing the SQL transaction on '{binding}' at a checkpoint failed: {e}"
                ))
            })?;
        }
        if let Some(job) = &mut self.job {
            job.checkpoint = Some(data.clone());
            job.events.checkpoint(data);
        }
        // A stop raised meanwhile (the one a simulated crash raises at this very checkpoint)
        // ends the call here, before the guest writes anything more.
        if self.wait_limit.force_stop.is_triggered() {
            return Err(super::plugin::Interrupted::ForceStopped.into());
        }
        Ok(())
    }

    fn load_checkpoint(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.job.as_ref().and_then(|j| j.checkpoint.clone()))
    }
}

/// A plugin passed the host more than a documented bound allows in one call (see
/// `runtime::bounds`): the call stops with this, naming the import and the bound.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LimitExceeded(pub String);

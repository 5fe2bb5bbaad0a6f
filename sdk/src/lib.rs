//! # plover-sdk: write Plover migration handlers in Rust
//!
//! A handler is a WebAssembly component that implements the `plover:migration@0.2.0`
//! contract (see `wit/v0.2.0/` in the Plover repository). With this crate you implement one
//! trait, [`Handler`], and call one macro, [`export_handler!`]; the SDK turns the contract's
//! raw bindings into ordinary Rust: typed parameters through serde, `Result` with the
//! contract's [`MigrationError`], and small helpers for logging, progress, object results,
//! checkpoints, key-value buckets, SQL connections ([`SqlConnection`]) and outgoing HTTP
//! ([`http_send`]).
//!
//! Build the crate as a `cdylib` for the `wasm32-wasip2` target and hand the `.wasm` file to
//! the Plover host.
//!
//! ## Example: a handler that upper-cases every value under a prefix
//!
//! ```no_run
//! use plover_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Params {
//!     prefix: String,
//! }
//!
//! struct Upcase;
//!
//! impl Handler for Upcase {
//!     fn describe() -> PluginInfo {
//!         PluginInfo {
//!             name: "upcase".into(),
//!             version: "1.0.0".into(),
//!             kinds: vec!["upcase".into()],
//!             description: "Upper-cases values in place".into(),
//!         }
//!     }
//!
//!     fn plan(spec: MigrationSpec) -> Result<MigrationPlan, MigrationError> {
//!         let params: Params = spec.params()?;
//!         let total = Bucket::open("data")?.count(&params.prefix)?;
//!         Ok(MigrationPlan::low_risk(vec![
//!             PlanStep::new("upcase", StepKind::Migration, "Upper-case every value")
//!                 .expecting(total)
//!                 .resumable(),
//!         ]))
//!     }
//!
//!     fn validate(spec: MigrationSpec, _plan: MigrationPlan) -> Result<ValidationReport, MigrationError> {
//!         let _: Params = spec.params()?;
//!         Ok(ValidationReport { findings: vec![] })
//!     }
//!
//!     fn execute(
//!         spec: MigrationSpec,
//!         _step: PlanStep,
//!         checkpoint: Option<Vec<u8>>,
//!     ) -> Result<StepReport, MigrationError> {
//!         let params: Params = spec.params()?;
//!         let bucket = Bucket::open("data")?;
//!         let mut cursor = checkpoint.map(|c| String::from_utf8_lossy(&c).into_owned());
//!         let mut done = 0;
//!         loop {
//!             let page = bucket.scan(&params.prefix, cursor.as_deref(), spec.options.batch_size)?;
//!             let upper: Vec<(String, Vec<u8>)> = page
//!                 .entries
//!                 .into_iter()
//!                 .map(|(k, v)| (k, v.to_ascii_uppercase()))
//!                 .collect();
//!             done += upper.len() as u64;
//!             bucket.set_many(&upper)?;
//!             cursor = page.next_cursor;
//!             match &cursor {
//!                 Some(c) => save_checkpoint(c.as_bytes()),
//!                 None => break,
//!             }
//!             progress(done, None, None);
//!         }
//!         info!("upper-cased {done} values");
//!         Ok(StepReport::new(format!("upper-cased {done} values")))
//!     }
//!
//!     fn rollback(_spec: MigrationSpec, _step: PlanStep) -> Result<StepReport, MigrationError> {
//!         Err(MigrationError::step_failed("upcase cannot be undone"))
//!     }
//! }
//!
//! plover_sdk::export_handler!(Upcase);
//! ```
//!
//! ## Contract 0.2: queues, estimates, partial steps, recovery actions
//!
//! - A step may run on a **worker queue** instead of in the handler
//!   ([`PlanStep::on_queue`]): an external tool claims it through the host's worker API and
//!   the handler's `execute` is never called for it.
//! - Plans and steps may carry an **estimated duration** ([`PlanStep::estimated_ms`],
//!   [`MigrationPlan::estimated_ms`]), shown beside the actual one.
//! - A step that recorded some objects as failed ([`ObjectResult::failed`]) and judges the
//!   rest usable returns [`StepReport::partial`]: the job ends `partial`, and the operator may
//!   ask to re-run just those objects, which calls [`Handler::execute_objects`] with their
//!   names. A handler that does not override it refuses such a retry by name.
//! - An error may say what an operator can do next ([`MigrationError::with_recovery`]).
//!
//! A handler written for the 0.1 SDK compiles unchanged: every 0.2 addition has a default.
//!
//! ## What the host guarantees, and what it asks
//!
//! - **Dry runs are dry.** During `plan` and `validate` every write (key-value, SQL, HTTP other
//!   than GET/HEAD) is refused and fails the call.
//! - **SQL commits at checkpoints.** All statements of one call run in one transaction,
//!   committed when the call succeeds *and at every [`save_checkpoint`]*, so the rows a
//!   checkpoint covers are durable before it is; a call that fails rolls back what it did
//!   since its last checkpoint.
//! - **The last batch may be redone.** The host records a step's checkpoints at most every
//!   250 ms (the newest wins) and commits object results with them. After a crash the step
//!   resumes from its last *recorded* checkpoint, so the batch after it (whose SQL may already
//!   be committed) runs again: **make every batch idempotent** (upserts, "only if absent").
//! - **The job's own bucket is durable when a write returns** ([`Bucket::job_state`]) whenever
//!   the job was granted a system outside the host's database, so a rollback journal written
//!   before a change survives any crash that the change survives. Journal each key once: a
//!   redone batch must not journal its own writes as the values to restore.
//! - **Lists to SQL**: the contract has no array value; pass a JSON array and unnest it in
//!   SQL, e.g. `WHERE id = ANY (SELECT jsonb_array_elements_text($1::jsonb)::bigint)` with
//!   `SqlValue::Json(serde_json::to_string(&ids)?)`.
//! - Whatever the handler prints goes to the job log; a panic's message becomes the error.
//!
//! ## Testing a handler
//!
//! Build it with `cargo build --release --target wasm32-wasip2`, then check it with
//! `plover plugin test target/wasm32-wasip2/release/NAME.wasm --bucket source=seed.jsonl
//! --bucket target --crash-at 2` (the whole lifecycle, a crash and its resume, no server), or
//! load the `.wasm` in a native test with `plover_host::testing::TestHarness`, which runs the
//! real host runtime in-process over in-memory buckets (see the Plover README).

/// The raw bindings generated from the contract. Prefer the re-exports at the crate root.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        // The contract is copied inside the crate so it can be published (`cargo package`);
        // tests/tests/sdk_package.rs keeps the copy equal to `wit/v0.2.0`.
        path: "wit/v0.2.0",
        world: "handler-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_handler_plugin",
        default_bindings_module: "plover_sdk::bindings",
    });
}

use bindings::exports::plover::migration::handler::Guest;
use bindings::plover::migration::job;

pub use bindings::plover::migration::http::{
    HttpError, Request as HttpRequest, Response as HttpResponse, send as http_send,
};
pub use bindings::plover::migration::job::LogLevel;
pub use bindings::plover::migration::kv::{Bucket, KvError, ScanPage};
pub use bindings::plover::migration::sql::{
    Column, Connection as SqlConnection, DatabaseError, RowPage, SqlError, SqlValue,
};
pub use bindings::plover::migration::types::{
    ErrorKind, Finding, MigrationError, MigrationOptions, MigrationPlan, MigrationSpec,
    ObjectResult, ObjectStatus, PlanStep, PluginInfo, RecoveryAction, RiskLevel, Severity,
    StepKind, StepOutcome, StepReport, ValidationLevel, ValidationReport,
};

/// Everything a handler usually needs, in one `use`.
pub mod prelude {
    pub use crate::{
        Bucket, ErrorKind, Finding, Handler, HttpError, HttpRequest, HttpResponse, KvError,
        LogLevel, MigrationError, MigrationPlan, MigrationSpec, ObjectResult, ObjectStatus,
        PlanStep, PluginInfo, RecoveryAction, RiskLevel, ScanPage, Severity, SpecExt,
        SqlConnection, SqlError, SqlExt, SqlValue, StepKind, StepOutcome, StepReport,
        ValidationLevel, ValidationReport, checkpoint_as, debug, error, http_send, info,
        is_cancelled, load_checkpoint, log, progress, record_object, record_objects,
        save_checkpoint, save_checkpoint_as, sql_identifier, warn,
    };
}

/// A migration handler. Implement it on a unit struct and export it with [`export_handler!`].
///
/// Every method receives owned values straight from the host. Return a [`MigrationError`] to
/// fail the call: the host records it and decides (by its `retryable` flag and the job's
/// options) whether to retry, roll back or stop.
pub trait Handler {
    /// Name, semver version, job kinds and a description.
    fn describe() -> PluginInfo;
    /// The steps for `spec`. Buckets are read-only here.
    fn plan(spec: MigrationSpec) -> Result<MigrationPlan, MigrationError>;
    /// A dry run of `plan`. Buckets are read-only here.
    fn validate(
        spec: MigrationSpec,
        plan: MigrationPlan,
    ) -> Result<ValidationReport, MigrationError>;
    /// Run one step, continuing from `checkpoint` when the step was interrupted before.
    fn execute(
        spec: MigrationSpec,
        step: PlanStep,
        checkpoint: Option<Vec<u8>>,
    ) -> Result<StepReport, MigrationError>;
    /// Undo one step.
    fn rollback(spec: MigrationSpec, step: PlanStep) -> Result<StepReport, MigrationError>;
    /// Re-run the step for exactly `objects` (names as recorded in [`ObjectResult::name`],
    /// at most 1,000 per call; an empty list means nothing is left): the operator asked to
    /// retry the objects a `partial` step failed. Record one result for each. The default
    /// refuses, so a handler that never ends a step partial need not implement it.
    fn execute_objects(
        spec: MigrationSpec,
        step: PlanStep,
        objects: Vec<String>,
    ) -> Result<StepReport, MigrationError> {
        let _ = (spec, objects);
        Err(MigrationError::invalid_spec(format!(
            "this handler cannot re-run single objects of step '{}'",
            step.id
        ))
        .with_recovery("retry-step", "retry or roll back the whole step instead"))
    }
}

/// Runs one call of the handler, then flushes stdout: the host logs what a plugin prints line
/// by line, and the instance ends with the call, so a last `print!` without a newline would
/// otherwise stay in the buffer and never be seen.
fn flushed<R>(call: impl FnOnce() -> R) -> R {
    let result = call();
    let _ = std::io::Write::flush(&mut std::io::stdout());
    result
}

impl<T: Handler> Guest for T {
    fn describe() -> PluginInfo {
        flushed(T::describe)
    }
    fn plan(spec: MigrationSpec) -> Result<MigrationPlan, MigrationError> {
        flushed(|| T::plan(spec))
    }
    fn validate(
        spec: MigrationSpec,
        plan: MigrationPlan,
    ) -> Result<ValidationReport, MigrationError> {
        flushed(|| T::validate(spec, plan))
    }
    fn execute(
        spec: MigrationSpec,
        step: PlanStep,
        checkpoint: Option<Vec<u8>>,
        objects: Option<Vec<String>>,
    ) -> Result<StepReport, MigrationError> {
        flushed(|| match objects {
            Some(objects) => T::execute_objects(spec, step, objects),
            None => T::execute(spec, step, checkpoint),
        })
    }
    fn rollback(spec: MigrationSpec, step: PlanStep) -> Result<StepReport, MigrationError> {
        flushed(|| T::rollback(spec, step))
    }
}

/// Export a [`Handler`] implementation as the component's `handler` interface.
#[macro_export]
macro_rules! export_handler {
    ($handler:ident) => {
        $crate::bindings::__export_handler_plugin!($handler with_types_in $crate::bindings);
    };
}

/// Typed access to a spec's JSON fields.
pub trait SpecExt {
    /// Parse `parameters` into `T`. A malformed document becomes an `invalid-spec` error that
    /// says what was wrong.
    fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, MigrationError>;
    /// Whether the job granted a binding of this name.
    fn has_binding(&self, name: &str) -> bool;
    /// Fail with `invalid-spec` unless every name in `names` was granted.
    fn require_bindings(&self, names: &[&str]) -> Result<(), MigrationError>;
}

impl SpecExt for MigrationSpec {
    fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, MigrationError> {
        let text = if self.parameters.trim().is_empty() {
            "{}"
        } else {
            &self.parameters
        };
        serde_json::from_str(text)
            .map_err(|e| MigrationError::invalid_spec(format!("parameters: {e}")))
    }

    fn has_binding(&self, name: &str) -> bool {
        self.bindings.iter().any(|b| b == name)
    }

    fn require_bindings(&self, names: &[&str]) -> Result<(), MigrationError> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !self.has_binding(n))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(MigrationError::invalid_spec(format!(
                "this handler needs the binding(s) {} but the job did not grant them",
                missing.join(", ")
            )))
        }
    }
}

impl MigrationError {
    /// An error of `kind` that is not worth retrying.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        MigrationError {
            kind,
            message: message.into(),
            retryable: false,
            recovery: vec![],
        }
    }
    pub fn invalid_spec(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidSpec, message)
    }
    pub fn validation_failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ValidationFailed, message)
    }
    pub fn step_failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::StepFailed, message)
    }
    pub fn data_corruption(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DataCorruption, message)
    }
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "the job was cancelled")
    }
    /// Mark the error as worth retrying (from the step's checkpoint).
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
    /// Add something an operator can do about the error (`action` is a short code such as
    /// `grant-binding`, `description` says it for a human); the most useful first.
    pub fn with_recovery(mut self, action: &str, description: impl Into<String>) -> Self {
        self.recovery.push(RecoveryAction {
            action: action.into(),
            description: description.into(),
        });
        self
    }
}

/// Lets `?` turn a bucket error into the contract's error: a missing grant is the spec's
/// fault, a backend failure is a dependency that may come back, the rest fail the step.
impl From<KvError> for MigrationError {
    fn from(e: KvError) -> Self {
        let message = match &e {
            KvError::NotGranted(m) => format!("binding not granted: {m}"),
            KvError::ReadOnly(m) => format!("write refused during a read-only call: {m}"),
            KvError::InvalidArgument(m) => format!("invalid argument: {m}"),
            KvError::Backend(m) => format!("backend error: {m}"),
        };
        match e {
            KvError::NotGranted(_) => MigrationError::invalid_spec(message),
            KvError::Backend(_) => {
                MigrationError::new(ErrorKind::DependencyUnavailable, message).retryable()
            }
            KvError::ReadOnly(_) | KvError::InvalidArgument(_) => {
                MigrationError::step_failed(message)
            }
        }
    }
}

/// Lets `?` turn a SQL error into the contract's error: a missing grant is the spec's fault,
/// an unreachable database or a timeout may pass (retryable), the rest fail the step.
impl From<SqlError> for MigrationError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::NotGranted(m) => {
                MigrationError::invalid_spec(format!("binding not granted: {m}"))
            }
            SqlError::ReadOnly(m) => {
                MigrationError::step_failed(format!("write refused during a read-only call: {m}"))
            }
            SqlError::InvalidArgument(m) => {
                MigrationError::step_failed(format!("invalid SQL argument: {m}"))
            }
            SqlError::Database(d) => MigrationError::step_failed(format!(
                "database error {}: {}{}",
                d.code,
                d.message,
                d.detail.map(|x| format!(" ({x})")).unwrap_or_default()
            )),
            SqlError::Timeout(m) => MigrationError::new(ErrorKind::Timeout, m).retryable(),
            SqlError::Unavailable(m) => MigrationError::new(
                ErrorKind::DependencyUnavailable,
                format!("database unavailable: {m}"),
            )
            .retryable(),
        }
    }
}

/// Lets `?` turn an HTTP error into the contract's error.
impl From<HttpError> for MigrationError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::NotGranted(m) => {
                MigrationError::invalid_spec(format!("binding not granted: {m}"))
            }
            HttpError::Denied(m) => {
                MigrationError::invalid_spec(format!("request denied by the host: {m}"))
            }
            HttpError::ReadOnly(m) => {
                MigrationError::step_failed(format!("write refused during a read-only call: {m}"))
            }
            HttpError::InvalidArgument(m) => {
                MigrationError::step_failed(format!("invalid request: {m}"))
            }
            HttpError::TooLarge(m) => MigrationError::new(ErrorKind::InsufficientResources, m),
            HttpError::Timeout(m) => MigrationError::new(ErrorKind::Timeout, m).retryable(),
            HttpError::Transport(m) => {
                MigrationError::new(ErrorKind::DependencyUnavailable, format!("HTTP: {m}"))
                    .retryable()
            }
        }
    }
}

/// `name` (a lower-case identifier, optionally schema-qualified: `app.sessions`) quoted for
/// SQL, or an `invalid-spec` error naming `what`. Parameters cannot be identifiers, so a
/// handler that takes table names from its spec checks them with this before using them.
pub fn sql_identifier(what: &str, name: &str) -> Result<String, MigrationError> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
        return Err(MigrationError::invalid_spec(format!(
            "{what} '{name}' must be a lower-case identifier, optionally schema-qualified"
        )));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

/// Conveniences on a [`SqlConnection`].
pub trait SqlExt {
    /// Every row of `statement`, fetched page by page (mind the size of what you select).
    fn query_all(
        &self,
        statement: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Vec<SqlValue>>, SqlError>;
    /// The first column of the first row, if any.
    fn query_scalar(
        &self,
        statement: &str,
        params: &[SqlValue],
    ) -> Result<Option<SqlValue>, SqlError>;
}

impl SqlExt for SqlConnection {
    fn query_all(
        &self,
        statement: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Vec<SqlValue>>, SqlError> {
        let mut page = self.query(statement, params, 1000)?;
        let mut rows = std::mem::take(&mut page.rows);
        while let Some(cursor) = page.cursor.take() {
            page = self.fetch(&cursor, 1000)?;
            rows.append(&mut page.rows);
        }
        Ok(rows)
    }

    fn query_scalar(
        &self,
        statement: &str,
        params: &[SqlValue],
    ) -> Result<Option<SqlValue>, SqlError> {
        let page = self.query(statement, params, 1)?;
        Ok(page
            .rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next()))
    }
}

impl SqlValue {
    /// The value as text, for `text` and `json` values.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            SqlValue::Text(s) | SqlValue::Json(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            SqlValue::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            SqlValue::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self, SqlValue::Null)
    }
}

impl From<&str> for SqlValue {
    fn from(s: &str) -> Self {
        SqlValue::Text(s.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(s: String) -> Self {
        SqlValue::Text(s)
    }
}
impl From<i64> for SqlValue {
    fn from(i: i64) -> Self {
        SqlValue::Int(i)
    }
}
impl From<bool> for SqlValue {
    fn from(b: bool) -> Self {
        SqlValue::Boolean(b)
    }
}
impl From<Vec<u8>> for SqlValue {
    fn from(b: Vec<u8>) -> Self {
        SqlValue::Bytes(b)
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

impl MigrationPlan {
    /// A plan with `steps` and low risk.
    pub fn low_risk(steps: Vec<PlanStep>) -> Self {
        MigrationPlan {
            steps,
            risk: RiskLevel::Low,
            risk_notes: vec![],
            estimated_duration_ms: None,
        }
    }
    /// Set the risk level and a reason.
    pub fn with_risk(mut self, risk: RiskLevel, note: impl Into<String>) -> Self {
        self.risk = risk;
        self.risk_notes.push(note.into());
        self
    }
    /// How long the whole migration is expected to take; without it the host shows the sum
    /// of the steps' estimates when every step has one.
    pub fn estimated_ms(mut self, millis: u64) -> Self {
        self.estimated_duration_ms = Some(millis);
        self
    }
}

impl PlanStep {
    /// A step with no dependencies, not reversible, not resumable; refine with the builders.
    pub fn new(id: impl Into<String>, kind: StepKind, description: impl Into<String>) -> Self {
        PlanStep {
            id: id.into(),
            kind,
            description: description.into(),
            depends_on: vec![],
            expected_objects: None,
            reversible: false,
            resumable: false,
            queue: None,
            estimated_duration_ms: None,
        }
    }
    /// Run after the steps `ids`.
    pub fn after(mut self, ids: &[&str]) -> Self {
        self.depends_on.extend(ids.iter().map(|s| s.to_string()));
        self
    }
    pub fn expecting(mut self, objects: u64) -> Self {
        self.expected_objects = Some(objects);
        self
    }
    pub fn reversible(mut self) -> Self {
        self.reversible = true;
        self
    }
    pub fn resumable(mut self) -> Self {
        self.resumable = true;
        self
    }
    /// Run the step on the worker queue `queue`: an external tool claims and executes it,
    /// and the handler's `execute` is not called for it.
    pub fn on_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    /// How long the step is expected to take, shown beside its actual duration.
    pub fn estimated_ms(mut self, millis: u64) -> Self {
        self.estimated_duration_ms = Some(millis);
        self
    }
}

impl StepReport {
    /// A step that did everything it was to do.
    pub fn new(summary: impl Into<String>) -> Self {
        StepReport {
            summary: summary.into(),
            outcome: StepOutcome::Complete,
        }
    }
    /// A step that recorded some objects as failed and judges the rest usable: the job ends
    /// `partial` and those objects can be retried alone ([`Handler::execute_objects`]).
    pub fn partial(summary: impl Into<String>) -> Self {
        StepReport {
            summary: summary.into(),
            outcome: StepOutcome::Partial,
        }
    }
    /// [`StepReport::partial`] when any of `results` failed, else [`StepReport::new`]: for a
    /// step (or a retry of its objects) whose failed objects are tolerable.
    pub fn partial_if_failed(summary: impl Into<String>, results: &[ObjectResult]) -> Self {
        if results.iter().any(|r| r.status == ObjectStatus::Error) {
            Self::partial(summary)
        } else {
            Self::new(summary)
        }
    }
}

impl Finding {
    pub fn new(severity: Severity, code: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity,
            code: code.into(),
            message: message.into(),
            step: None,
        }
    }
    pub fn for_step(mut self, step: impl Into<String>) -> Self {
        self.step = Some(step.into());
        self
    }
}

impl ObjectResult {
    pub fn success(name: impl Into<String>, object_type: &str, duration_micros: u64) -> Self {
        ObjectResult {
            name: name.into(),
            object_type: object_type.into(),
            status: ObjectStatus::Success,
            error: None,
            duration_micros,
        }
    }
    pub fn failed(name: impl Into<String>, object_type: &str, error: impl Into<String>) -> Self {
        ObjectResult {
            name: name.into(),
            object_type: object_type.into(),
            status: ObjectStatus::Error,
            error: Some(error.into()),
            duration_micros: 0,
        }
    }
    pub fn skipped(name: impl Into<String>, object_type: &str, reason: impl Into<String>) -> Self {
        ObjectResult {
            name: name.into(),
            object_type: object_type.into(),
            status: ObjectStatus::Skipped,
            error: Some(reason.into()),
            duration_micros: 0,
        }
    }
}

/// Append a line to the job's log.
pub fn log(level: LogLevel, message: &str) {
    job::log(level, message)
}

/// Report progress of the current step.
pub fn progress(done: u64, total: Option<u64>, current_object: Option<&str>) {
    job::report_progress(done, total, current_object)
}

/// Record one object's outcome; committed with the next checkpoint.
pub fn record_object(result: &ObjectResult) {
    job::record_object(result)
}

/// Record a batch of object outcomes in one host call.
pub fn record_objects(results: &[ObjectResult]) {
    job::record_objects(results)
}

/// Whether the operator asked the job to stop.
pub fn is_cancelled() -> bool {
    job::is_cancelled()
}

/// Save the current step's checkpoint (only during `execute`).
pub fn save_checkpoint(data: &[u8]) {
    job::save_checkpoint(data)
}

/// The last checkpoint saved for the current step.
pub fn load_checkpoint() -> Option<Vec<u8>> {
    job::load_checkpoint()
}

/// Save any serde value as the step's checkpoint (JSON), to read back with [`checkpoint_as`].
pub fn save_checkpoint_as<T: serde::Serialize>(state: &T) -> Result<(), MigrationError> {
    let bytes = serde_json::to_vec(state).map_err(|e| {
        MigrationError::step_failed(format!("the checkpoint does not serialise: {e}"))
    })?;
    save_checkpoint(&bytes);
    Ok(())
}

/// The checkpoint `execute` was given, as the type [`save_checkpoint_as`] saved; one that
/// does not parse is `data-corruption` (the step cannot know where it stood).
pub fn checkpoint_as<T: serde::de::DeserializeOwned>(
    checkpoint: Option<&[u8]>,
) -> Result<Option<T>, MigrationError> {
    checkpoint
        .map(|raw| {
            serde_json::from_slice(raw).map_err(|e| {
                MigrationError::new(
                    ErrorKind::DataCorruption,
                    format!("the step's checkpoint does not parse: {e}"),
                )
            })
        })
        .transpose()
}

/// A [`PluginInfo`] from the crate's own metadata (name, version, description) and the job
/// kinds given: `plugin_info!("kv-copy", "session-store-move")`.
#[macro_export]
macro_rules! plugin_info {
    ($($kind:expr),+ $(,)?) => {
        $crate::PluginInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec![$($kind.into()),+],
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    };
}

/// Declare the bindings this handler expects, so the host shows them to operators before they
/// grant anything, refuses a job that grants a binding not declared here, and refuses writes
/// through a binding declared `read` (HTTP: only GET and HEAD; SQL: a read-only transaction).
/// Kinds: `kv`, `sql`, `http`; access: `read`, `read_write`. Without a declaration a handler
/// may be granted any binding, as before.
///
/// ```no_run
/// plover_sdk::declare_bindings!("source" => kv(read), "target" => kv(read_write));
/// ```
///
/// The declaration is a custom section (`plover:bindings`) of the component: data the host
/// reads at load, never code. `plover plugin declare` writes the same for components built by
/// other means (Python), and replaces this one when used on a Rust component.
#[macro_export]
macro_rules! declare_bindings {
    ($($name:literal => $kind:ident($access:ident)),+ $(,)?) => {
        const _: () = {
            const ENTRIES: &str = concat!($(
                "{\"name\":", stringify!($name),
                ",\"kind\":\"", stringify!($kind),
                "\",\"access\":\"", stringify!($access), "\"},"
            ),+);
            const LEN: usize = ENTRIES.len() + 1;
            #[used]
            #[unsafe(link_section = "plover:bindings")]
            static DECLARED: [u8; LEN] = $crate::__json_list::<LEN>(ENTRIES);
        };
    };
}

/// `[` + `entries` without its last comma + `]`: the JSON list [`declare_bindings!`] writes.
#[doc(hidden)]
pub const fn __json_list<const N: usize>(entries: &str) -> [u8; N] {
    let bytes = entries.as_bytes();
    let mut out = [0u8; N];
    out[0] = b'[';
    let mut i = 0;
    while i + 1 < bytes.len() {
        out[i + 1] = bytes[i];
        i += 1;
    }
    out[N - 1] = b']';
    out
}

/// `info!("copied {n} keys")`: log at info level with `format!` syntax.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::LogLevel::Info, &format!($($arg)*)) };
}
/// Log at warning level with `format!` syntax.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log($crate::LogLevel::Warning, &format!($($arg)*)) };
}
/// Log at error level with `format!` syntax.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log($crate::LogLevel::Error, &format!($($arg)*)) };
}
/// Log at debug level with `format!` syntax.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log($crate::LogLevel::Debug, &format!($($arg)*)) };
}

//! Test a handler natively against the real host runtime, in-process, over in-memory buckets.
//!
//! ```no_run
//! use plover_host::testing::TestHarness;
//!
//! let mut h = TestHarness::load("target/wasm32-wasip2/release/my_handler.wasm").unwrap();
//! let source = h.bucket("source");
//! source.insert("user/1", "alice");
//! let target = h.bucket("target");
//! let spec = h.spec("kv-copy", serde_json::json!({ "prefix": "user/" }));
//! let run = h.run_all(&spec).unwrap();
//! assert!(run.report.passed(spec.options.validation_level));
//! assert_eq!(target.snapshot(), source.snapshot());
//! ```
//!
//! The harness uses the same sandbox and imports as the server; only the buckets live in
//! memory and events are kept in a [`RecordingEvents`] you can inspect.

use crate::connectors::{Connector, Grants, KvBucket, MemoryBucket};
use crate::model::{
    LogLevel, MigrationError, MigrationOptions, MigrationSpec, ObjectResult, Plan, PlanStep,
    StepReport, ValidationReport,
};
use crate::runtime::{
    ForceStop, JobContext, JobEvents, LoadedPlugin, Runtime, RuntimeConfig, SandboxLimits,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One `report-progress` call: done, total, current object.
pub type ProgressReport = (u64, Option<u64>, Option<String>);

/// Keeps every event a plugin reports, for assertions.
#[derive(Default)]
pub struct RecordingEvents {
    pub logs: Mutex<Vec<(LogLevel, String)>>,
    pub objects: Mutex<Vec<ObjectResult>>,
    pub checkpoints: Mutex<Vec<Vec<u8>>>,
    pub progress: Mutex<Vec<ProgressReport>>,
    cancelled: AtomicBool,
}

impl RecordingEvents {
    /// Make `is-cancelled` answer true from now on.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst)
    }
    pub fn log_lines(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }
    pub fn object_count(&self) -> usize {
        self.objects.lock().unwrap().len()
    }
    pub fn last_checkpoint(&self) -> Option<Vec<u8>> {
        self.checkpoints.lock().unwrap().last().cloned()
    }
}

impl JobEvents for RecordingEvents {
    fn log(&self, level: LogLevel, message: String) {
        self.logs.lock().unwrap().push((level, message));
    }
    fn progress(&self, done: u64, total: Option<u64>, current: Option<String>) {
        self.progress.lock().unwrap().push((done, total, current));
    }
    fn objects(&self, results: Vec<ObjectResult>) -> Result<(), String> {
        self.objects.lock().unwrap().extend(results);
        Ok(())
    }
    fn checkpoint(&self, data: Vec<u8>) {
        self.checkpoints.lock().unwrap().push(data);
    }
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// The grants of a job whose private bucket and granted buckets live in memory, beside other
/// connectors granted as they are (the harness and `plover plugin test` both run so).
pub(crate) fn in_memory_grants(
    job_state: &Arc<MemoryBucket>,
    buckets: &BTreeMap<String, Arc<MemoryBucket>>,
    connectors: &BTreeMap<String, Connector>,
) -> Grants {
    let mut grants = Grants::new(job_state.clone() as Arc<dyn KvBucket>);
    for (name, bucket) in buckets {
        grants = grants.with_kv(name.clone(), bucket.clone() as Arc<dyn KvBucket>);
    }
    for (name, connector) in connectors {
        grants = grants.with(name.clone(), connector.clone());
    }
    grants
}

/// Either way a harness call can fail: the sandbox stopped it, or the handler returned an error.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Plugin(#[from] crate::runtime::PluginError),
    #[error("handler returned {0}")]
    Handler(#[from] MigrationError),
    #[error("validation did not pass: {0:?}")]
    ValidationFailed(ValidationReport),
}

/// What [`TestHarness::run_all`] did.
#[derive(Debug)]
pub struct LifecycleRun {
    pub plan: Plan,
    pub report: ValidationReport,
    pub steps: Vec<(String, StepReport)>,
}

pub struct TestHarness {
    pub runtime: Arc<Runtime>,
    pub plugin: Arc<LoadedPlugin>,
    buckets: BTreeMap<String, Arc<MemoryBucket>>,
    /// Other connectors (sled or Redis buckets, SQL databases, HTTP) granted with
    /// [`TestHarness::grant`] or [`TestHarness::grant_connector`].
    granted: BTreeMap<String, Connector>,
    pub job_state: Arc<MemoryBucket>,
    pub events: Arc<RecordingEvents>,
    pub force_stop: ForceStop,
}

impl TestHarness {
    /// Load the plugin at `path` into a fresh runtime with default limits.
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
        Self::load_in(runtime, path, SandboxLimits::default())
    }

    /// Load into an existing runtime (to share one engine between harnesses) with `limits`.
    pub fn load_in(
        runtime: Arc<Runtime>,
        path: impl AsRef<Path>,
        limits: SandboxLimits,
    ) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path.as_ref())?;
        let (plugin, _) = runtime.load_with(&bytes, limits)?;
        Ok(TestHarness {
            runtime,
            plugin,
            buckets: BTreeMap::new(),
            granted: BTreeMap::new(),
            job_state: Arc::new(MemoryBucket::new()),
            events: Arc::new(RecordingEvents::default()),
            force_stop: ForceStop::new(),
        })
    }

    /// The in-memory bucket granted as `binding`, created empty on first use.
    pub fn bucket(&mut self, binding: &str) -> Arc<MemoryBucket> {
        self.buckets
            .entry(binding.to_string())
            .or_insert_with(|| Arc::new(MemoryBucket::new()))
            .clone()
    }

    /// Grant a bucket of any backend as `binding`.
    pub fn grant(&mut self, binding: &str, bucket: Arc<dyn KvBucket>) {
        self.grant_connector(binding, Connector::Kv(bucket));
    }

    /// Grant any connector (a SQL database, an HTTP connection...) as `binding`.
    pub fn grant_connector(&mut self, binding: &str, connector: Connector) {
        self.granted.insert(binding.to_string(), connector);
    }

    /// The contents of the bucket granted as `binding` (empty if there is none).
    pub fn bucket_snapshot(&self, binding: &str) -> BTreeMap<String, Vec<u8>> {
        self.buckets
            .get(binding)
            .map(|b| b.snapshot())
            .unwrap_or_default()
    }

    /// A spec of `kind` with `parameters`, granting every bucket made so far.
    pub fn spec(&self, kind: &str, parameters: serde_json::Value) -> MigrationSpec {
        MigrationSpec {
            id: "test-job".into(),
            kind: kind.into(),
            parameters,
            source: serde_json::json!({}),
            target: serde_json::json!({}),
            bindings: self
                .buckets
                .keys()
                .chain(self.granted.keys())
                .cloned()
                .collect(),
            options: MigrationOptions::default(),
        }
    }

    /// The context calls run with; `checkpoint` is the step's last one.
    pub fn context(&self, checkpoint: Option<Vec<u8>>) -> JobContext {
        JobContext {
            grants: in_memory_grants(&self.job_state, &self.buckets, &self.granted),
            events: self.events.clone(),
            checkpoint,
            force_stop: self.force_stop.clone(),
            call_timeout: None,
        }
    }

    pub fn plan(&self, spec: &MigrationSpec) -> Result<Plan, HarnessError> {
        Ok(self.plugin.plan(&self.context(None), spec)??)
    }

    pub fn validate(
        &self,
        spec: &MigrationSpec,
        plan: &Plan,
    ) -> Result<ValidationReport, HarnessError> {
        Ok(self.plugin.validate(&self.context(None), spec, plan)??)
    }

    /// Execute `step`, continuing from `checkpoint` (the step's last one) when given.
    pub fn execute(
        &self,
        spec: &MigrationSpec,
        step: &PlanStep,
        checkpoint: Option<Vec<u8>>,
    ) -> Result<StepReport, HarnessError> {
        Ok(self
            .plugin
            .execute(&self.context(checkpoint), spec, step)??)
    }

    pub fn rollback(
        &self,
        spec: &MigrationSpec,
        step: &PlanStep,
    ) -> Result<StepReport, HarnessError> {
        Ok(self.plugin.rollback(&self.context(None), spec, step)??)
    }

    /// Plan, validate (failing if the report does not pass), then execute every step in plan
    /// order. The engine runs steps by their dependency DAG; plan order is one valid order for
    /// the bundled handlers.
    pub fn run_all(&self, spec: &MigrationSpec) -> Result<LifecycleRun, HarnessError> {
        let plan = self.plan(spec)?;
        let report = self.validate(spec, &plan)?;
        if !report.passed(spec.options.validation_level) {
            return Err(HarnessError::ValidationFailed(report));
        }
        let mut steps = vec![];
        for step in &plan.steps {
            steps.push((step.id.clone(), self.execute(spec, step, None)?));
        }
        Ok(LifecycleRun {
            plan,
            report,
            steps,
        })
    }

    /// Roll back every step of `plan` in reverse order.
    pub fn rollback_all(
        &self,
        spec: &MigrationSpec,
        plan: &Plan,
    ) -> Result<Vec<StepReport>, HarnessError> {
        plan.steps
            .iter()
            .rev()
            .map(|s| self.rollback(spec, s))
            .collect()
    }
}

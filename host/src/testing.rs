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
//! memory and events are kept in a [`RecordingEvents`] you can inspect. Real systems are
//! granted too: [`TestHarness::grant_postgres`], [`TestHarness::grant_redis`],
//! [`TestHarness::grant_http`]. [`TestHarness::execute_crashing_after`] stops a step the way a
//! host crash would, to test that it resumes from its checkpoint.
//!
//! For `cargo test` in a plugin's workspace, depend on this crate without the server (which
//! leaves out the HTTP API, the CLI, the console and the job stores):
//!
//! ```toml
//! [dev-dependencies]
//! plover-host = { version = "0.1", default-features = false, features = ["testing"] }
//! ```

use crate::connectors::postgres::{PostgresDatabase, PostgresOptions};
use crate::connectors::{
    Connector, Grants, HttpConnection, HttpRules, KvBucket, MemoryBucket, RedisBucket,
};
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
/// connectors granted as they are (the harness and `plover plugin test` both run so),
/// narrowed as `plugin` declares (see [`crate::runtime::declared::narrow`]).
pub(crate) fn in_memory_grants(
    plugin: &LoadedPlugin,
    job_state: &Arc<MemoryBucket>,
    buckets: &BTreeMap<String, Arc<MemoryBucket>>,
    connectors: &BTreeMap<String, Connector>,
) -> Result<Grants, String> {
    let mut grants = Grants::new(job_state.clone() as Arc<dyn KvBucket>);
    for (name, bucket) in buckets {
        grants = grants.with_kv(name.clone(), bucket.clone() as Arc<dyn KvBucket>);
    }
    for (name, connector) in connectors {
        grants = grants.with(name.clone(), connector.clone());
    }
    crate::runtime::declared::narrow(&plugin.label(), plugin.declared_bindings(), grants)
}

/// How [`TestHarness::execute_crashing_after`] ended.
#[derive(Debug)]
pub enum Crash {
    /// Stopped right after the checkpoint asked for, which is the one to resume from.
    Crashed { resume_from: Option<Vec<u8>> },
    /// The step ended before saving that many checkpoints.
    Finished(StepReport),
}

/// Records like [`RecordingEvents`], and raises `stop` at the `after`-th checkpoint.
struct CrashingEvents {
    recording: Arc<RecordingEvents>,
    after: u64,
    seen: Mutex<u64>,
    stop: ForceStop,
}

impl JobEvents for CrashingEvents {
    fn log(&self, level: LogLevel, message: String) {
        self.recording.log(level, message)
    }
    fn progress(&self, done: u64, total: Option<u64>, current: Option<String>) {
        self.recording.progress(done, total, current)
    }
    fn objects(&self, results: Vec<ObjectResult>) -> Result<(), String> {
        self.recording.objects(results)
    }
    fn checkpoint(&self, data: Vec<u8>) {
        let mut seen = self.seen.lock().unwrap();
        if *seen >= self.after {
            return; // past the crash: nothing more is saved
        }
        *seen += 1;
        self.recording.checkpoint(data);
        if *seen == self.after {
            self.stop.trigger();
        }
    }
    fn is_cancelled(&self) -> bool {
        self.recording.is_cancelled()
    }
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

    /// Grant the PostgreSQL database at `url` (`postgres://user@host:port/db`) as `binding`,
    /// with `search_path` (e.g. a schema of the test's own, `backfill_test,public`) when
    /// given. Unlike the server, the harness accepts any role: a local test database's
    /// superuser will do.
    pub fn grant_postgres(
        &mut self,
        binding: &str,
        url: &str,
        search_path: Option<&str>,
    ) -> Result<(), String> {
        let db = PostgresDatabase::with_options(
            url,
            &PostgresOptions {
                search_path: search_path.map(str::to_string),
                max_connections: 4,
                read_only_url: None,
                allow_privileged_role: true,
            },
        )?;
        self.grant_connector(binding, Connector::Sql(Arc::new(db)));
        Ok(())
    }

    /// Grant the keys under `key_prefix` of the Redis database at `url`
    /// (`redis://127.0.0.1:6379/0`) as a bucket named `binding`; the plugin never sees the
    /// prefix, so a test can keep its keys apart from other tests'.
    pub fn grant_redis(
        &mut self,
        binding: &str,
        url: &str,
        key_prefix: &str,
    ) -> Result<(), String> {
        let bucket = RedisBucket::new(url, key_prefix)?;
        self.grant(binding, Arc::new(bucket));
        Ok(())
    }

    /// Grant outgoing HTTP under `rules` as `binding`, e.g.
    /// `HttpRules { allow_private: true, ..HttpRules::allowing(["http://127.0.0.1:8080"]) }`
    /// for a server the test started on loopback.
    pub fn grant_http(&mut self, binding: &str, rules: HttpRules) -> Result<(), String> {
        let connection = HttpConnection::new(rules)?;
        self.grant_connector(binding, Connector::Http(Arc::new(connection)));
        Ok(())
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

    /// The context calls run with; `checkpoint` is the step's last one. Panics when the
    /// plugin declares its bindings and one granted here is not declared or of another kind
    /// (the server would refuse the job).
    pub fn context(&self, checkpoint: Option<Vec<u8>>) -> JobContext {
        let grants = in_memory_grants(&self.plugin, &self.job_state, &self.buckets, &self.granted)
            .unwrap_or_else(|e| panic!("{e}"));
        JobContext {
            grants,
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
            .execute(&self.context(checkpoint), spec, step, None)??)
    }

    /// Execute `step` for only the objects named (what the server does when an operator
    /// retries a step's failed objects). Contract 0.2 handlers only: a 0.1 handler's answer
    /// is an `invalid-spec` error saying its contract cannot.
    pub fn execute_objects(
        &self,
        spec: &MigrationSpec,
        step: &PlanStep,
        objects: &[String],
    ) -> Result<StepReport, HarnessError> {
        Ok(self
            .plugin
            .execute(&self.context(None), spec, step, Some(objects))??)
    }

    /// Execute `step` from `checkpoint` and stop it the way a host crash would, right after
    /// it saves its `n`-th checkpoint (counting from 1): the call is interrupted at once and
    /// the checkpoint to resume from is returned. What the step wrote to its targets stays,
    /// as it would after a crash; resume with [`TestHarness::execute`] and that checkpoint,
    /// then check the targets equal an uninterrupted run's. Object results and logs the
    /// harness recorded after that checkpoint are kept in [`TestHarness::events`] (the server
    /// would lose them with the crash), so count results by name, not by number.
    ///
    /// [`Crash::Finished`] when the step ended before saving `n` checkpoints.
    pub fn execute_crashing_after(
        &self,
        spec: &MigrationSpec,
        step: &PlanStep,
        checkpoint: Option<Vec<u8>>,
        n: u64,
    ) -> Result<Crash, HarnessError> {
        let crashing = Arc::new(CrashingEvents {
            recording: self.events.clone(),
            after: n,
            seen: Mutex::new(0),
            stop: ForceStop::new(),
        });
        let mut ctx = self.context(checkpoint);
        ctx.events = crashing.clone();
        ctx.force_stop = crashing.stop.clone();
        let outcome = self.plugin.execute(&ctx, spec, step, None);
        if crashing.stop.is_triggered() {
            return Ok(Crash::Crashed {
                resume_from: self.events.last_checkpoint(),
            });
        }
        Ok(Crash::Finished(outcome??))
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

//! `plover plugin test`: a handler's whole lifecycle, in process, on the release binary, so
//! a plugin author never has to build the server to know whether a handler works.
//!
//! One check: describe (done by loading), plan, validate (checking that it wrote nothing),
//! every step's execute in dependency order, then rollback of every reversible step
//! (checking that the seeded buckets are as they were). With a crash point, the lifecycle runs
//! a second time from the same seed, "crashes" after that checkpoint (the call is stopped,
//! what the checkpoint did not commit is dropped, writes already made stay, as in a real
//! crash) and resumes the step from it; the final buckets and object results must equal the
//! uninterrupted run's. Buckets live in memory, seeded from files; real connections (SQL,
//! Redis, HTTP) can be granted too, and are used as they are.
//!
//! Contract 0.2: a step that ends `partial` has its failed objects re-run once, as the
//! server's `retry-objects` would (see `object_retry`), before the rollback; a step on a
//! worker queue is not the handler's to run and is left out.

mod events;
mod object_retry;
pub mod report;
pub mod seed;

use crate::connectors::{Connector, MemoryBucket};
use crate::engine::dag;
use crate::engine::options::JobOptions;
use crate::model::{MigrationError, MigrationSpec, ObjectResult, Plan, PlanStep, StepOutcome};
use crate::runtime::{JobContext, LoadedPlugin, PluginError};
use crate::testing::in_memory_grants;
use events::CheckEvents;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to check a plugin with.
#[derive(Default)]
pub struct CheckSetup {
    /// The job kind; the plugin's first when absent.
    pub kind: Option<String>,
    pub parameters: Value,
    /// Job option overrides, as `plover run --options` takes them.
    pub options: Value,
    /// In-memory buckets granted by binding name, with what each starts with.
    pub buckets: BTreeMap<String, seed::Seed>,
    /// Real connections granted by binding name.
    pub connections: BTreeMap<String, Connector>,
    /// Simulate a crash after this checkpoint of the run (counting from 1) and resume.
    pub crash_at: Option<u64>,
}

/// How one call (or one check) went.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub took: Duration,
    pub passed: bool,
    pub detail: String,
}

/// Everything a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub phases: Vec<Phase>,
    /// The plugin's log lines, by run (`clean`, then `crash`), as `(run, level, line)`.
    pub logs: Vec<(String, crate::model::LogLevel, String)>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        !self.phases.is_empty() && self.phases.iter().all(|p| p.passed)
    }

    fn record(&mut self, name: impl Into<String>, took: Duration, result: Result<String, String>) {
        let (passed, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.phases.push(Phase {
            name: name.into(),
            took,
            passed,
            detail,
        });
    }
}

/// One lifecycle run's world: the buckets (fresh from the seed), the job's private bucket
/// and what the plugin reported.
struct RunWorld {
    buckets: BTreeMap<String, Arc<MemoryBucket>>,
    job_state: Arc<MemoryBucket>,
    events: Arc<CheckEvents>,
}

impl RunWorld {
    fn seeded(setup: &CheckSetup, crash_at: Option<u64>) -> Self {
        let buckets = setup
            .buckets
            .iter()
            .map(|(name, seed)| {
                let b = MemoryBucket::new();
                for (k, v) in seed {
                    b.insert(k.clone(), v.clone());
                }
                (name.clone(), Arc::new(b))
            })
            .collect();
        RunWorld {
            buckets,
            job_state: Arc::new(MemoryBucket::new()),
            events: Arc::new(CheckEvents::crashing_at(crash_at)),
        }
    }

    fn context(
        &self,
        plugin: &LoadedPlugin,
        setup: &CheckSetup,
        checkpoint: Option<Vec<u8>>,
        timeout: Duration,
    ) -> JobContext {
        let grants = in_memory_grants(plugin, &self.job_state, &self.buckets, &setup.connections)
            .expect("the grants were checked against the declaration first");
        JobContext {
            grants,
            events: self.events.clone(),
            checkpoint,
            force_stop: self.events.new_call(),
            call_timeout: Some(timeout),
        }
    }

    /// The buckets' contents (not the job's private one).
    fn contents(&self) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        self.buckets
            .iter()
            .map(|(n, b)| (n.clone(), b.snapshot()))
            .collect()
    }
}

/// What a plugin call returned, flattened: the sandbox's error or the handler's (with what
/// it says an operator can do, contract 0.2).
fn flatten<T>(r: Result<Result<T, MigrationError>, PluginError>) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.recovery.is_empty() => Err(format!("the handler returned {e}")),
        Ok(Err(e)) => {
            let actions: Vec<String> = e
                .recovery
                .iter()
                .map(|r| format!("{}: {}", r.action, r.description))
                .collect();
            Err(format!(
                "the handler returned {e} (what to do: {})",
                actions.join("; ")
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A step that ended `partial`, and the names of the objects it failed.
struct PartialStep {
    step: PlanStep,
    failed: Vec<String>,
}

/// Check `plugin` with `setup`.
pub fn check(plugin: &LoadedPlugin, setup: &CheckSetup) -> CheckReport {
    let mut report = CheckReport::default();
    let info = plugin.info();
    let kind = setup
        .kind
        .clone()
        .or_else(|| info.kinds.first().cloned())
        .unwrap_or_default();
    if !info.kinds.contains(&kind) {
        report.record(
            "describe",
            Duration::ZERO,
            Err(format!(
                "the plugin handles {}, not {kind:?}",
                info.kinds.join(", ")
            )),
        );
        return report;
    }
    report.record(
        "describe",
        Duration::ZERO,
        Ok(format!(
            "{} {}: {}",
            info.name,
            info.version,
            info.kinds.join(", ")
        )),
    );
    let clean = RunWorld::seeded(setup, None);
    let granted = in_memory_grants(plugin, &clean.job_state, &clean.buckets, &setup.connections);
    match (granted, plugin.declared_bindings()) {
        (Err(e), _) => {
            report.record("bindings", Duration::ZERO, Err(e));
            return report;
        }
        (Ok(_), Some(declared)) => report.record(
            "bindings",
            Duration::ZERO,
            Ok(format!(
                "declared: {}",
                crate::runtime::declared::list(declared)
            )),
        ),
        (Ok(_), None) => {}
    }
    let options = match JobOptions::default().with_overrides(&setup.options) {
        Ok(o) => o,
        Err(e) => {
            report.record("options", Duration::ZERO, Err(e));
            return report;
        }
    };
    let spec = MigrationSpec {
        id: "plugin-test".into(),
        kind,
        parameters: setup.parameters.clone(),
        source: serde_json::json!({}),
        target: serde_json::json!({}),
        bindings: setup
            .buckets
            .keys()
            .chain(setup.connections.keys())
            .cloned()
            .collect(),
        options: crate::engine::handler_options(&options),
    };
    let timeout = Duration::from_secs(options.step_timeout_secs.max(1));
    let run = Lifecycle {
        plugin,
        setup,
        spec: &spec,
        timeout,
        attempts: options.retry.attempts.max(1),
    };

    let Some(plan) = run.plan_and_validate(&clean, &mut report) else {
        run.collect_logs(&clean, "clean", &mut report);
        return report;
    };
    let order = match dag::topological_order(&plan) {
        Ok(o) => o,
        Err(e) => {
            report.record(
                "plan",
                Duration::ZERO,
                Err(format!("the plan is not a DAG: {e:?}")),
            );
            return report;
        }
    };
    let steps: Vec<&PlanStep> = order.iter().map(|&i| &plan.steps[i]).collect();
    let partial = run.execute_all(&clean, &steps, &mut report, "");
    let executed = partial.is_some();
    let clean_end = (clean.contents(), sorted(clean.events.objects()));
    for p in partial.iter().flatten() {
        run.retry_failed(&clean, p, &mut report);
    }
    if executed {
        run.rollback_all(&clean, &steps, &mut report, "");
    }
    run.collect_logs(&clean, "clean", &mut report);

    if let (Some(n), true) = (setup.crash_at, executed) {
        let crashed = RunWorld::seeded(setup, Some(n));
        let resumed = run
            .execute_all(&crashed, &steps, &mut report, " (crash run)")
            .is_some();
        let started = Instant::now();
        let result = if crashed.events.crash_pending() {
            Err(format!(
                "the run saved only {} checkpoints, so it could not crash after checkpoint {n}",
                crashed.events.checkpoints()
            ))
        } else if !resumed {
            Err("the run resumed after the crash did not complete".into())
        } else {
            compare(&clean_end, &(crashed.contents(), sorted(crashed.events.objects())))
                .map(|()| format!("crashed after checkpoint {n}, resumed from it: buckets and object results equal the uninterrupted run's"))
        };
        report.record("crash and resume", started.elapsed(), result);
        if resumed {
            run.rollback_all(&crashed, &steps, &mut report, " (crash run)");
        }
        run.collect_logs(&crashed, "crash", &mut report);
    }
    report
}

/// One lifecycle's fixed parts.
struct Lifecycle<'a> {
    plugin: &'a LoadedPlugin,
    setup: &'a CheckSetup,
    spec: &'a MigrationSpec,
    timeout: Duration,
    attempts: u32,
}

impl Lifecycle<'_> {
    fn plan_and_validate(&self, world: &RunWorld, report: &mut CheckReport) -> Option<Plan> {
        let before = (world.contents(), world.job_state.snapshot());
        let started = Instant::now();
        let plan = flatten(self.plugin.plan(
            &world.context(self.plugin, self.setup, None, self.timeout),
            self.spec,
        ));
        let plan = match plan {
            Ok(plan) => {
                report.record("plan", started.elapsed(), Ok(describe_plan(&plan)));
                plan
            }
            Err(e) => {
                report.record("plan", started.elapsed(), Err(e));
                return None;
            }
        };
        let started = Instant::now();
        let validated = flatten(self.plugin.validate(
            &world.context(self.plugin, self.setup, None, self.timeout),
            self.spec,
            &plan,
        ));
        let after = (world.contents(), world.job_state.snapshot());
        let result = match validated {
            Err(e) => Err(e),
            Ok(_) if before != after => {
                Err("plan or validate changed a bucket: dry runs must write nothing".into())
            }
            Ok(r) if !r.passed(self.spec.options.validation_level) => Err(format!(
                "the dry run did not pass: {}",
                r.findings
                    .iter()
                    .map(|f| format!("{:?}: {}", f.severity, f.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            Ok(r) => Ok(format!(
                "passed with {} findings; nothing was written",
                r.findings.len()
            )),
        };
        let passed = result.is_ok();
        report.record("validate", started.elapsed(), result);
        passed.then_some(plan)
    }

    /// Execute every step in order. `None` unless all completed; else the steps that ended
    /// partial.
    fn execute_all(
        &self,
        world: &RunWorld,
        steps: &[&PlanStep],
        report: &mut CheckReport,
        run: &str,
    ) -> Option<Vec<PartialStep>> {
        let mut partial = vec![];
        for step in steps {
            if let Some(queue) = &step.queue {
                report.record(
                    format!("execute {}{run}", step.id),
                    Duration::ZERO,
                    Ok(format!(
                        "runs on worker queue '{queue}': a worker executes it, not the handler; not run here"
                    )),
                );
                continue;
            }
            let started = Instant::now();
            let objects_before = world.events.object_count();
            let checkpoints_before = world.events.checkpoints();
            let result = self.execute_step(world, step);
            let objects = &world.events.objects()[objects_before..];
            let mut failed_names: Vec<String> = objects
                .iter()
                .filter(|o| o.status == crate::model::ObjectStatus::Error)
                .map(|o| o.name.clone())
                .collect();
            let failed = failed_names.len();
            let mut seen = std::collections::HashSet::new();
            failed_names.retain(|n| seen.insert(n.clone()));
            let result = result.map(|(summary, outcome, resumed)| {
                if outcome == StepOutcome::Partial {
                    partial.push(PartialStep {
                        step: (*step).clone(),
                        failed: std::mem::take(&mut failed_names),
                    });
                }
                format!(
                    "{} objects ({failed} failed), {}{}{}: {summary}",
                    objects.len(),
                    counted(
                        world.events.checkpoints() - checkpoints_before,
                        "checkpoint"
                    ),
                    if resumed {
                        ", resumed after the crash"
                    } else {
                        ""
                    },
                    if outcome == StepOutcome::Partial {
                        ", ended partial"
                    } else {
                        ""
                    }
                )
            });
            let ok = result.is_ok();
            report.record(
                format!("execute {}{run}", step.id),
                started.elapsed(),
                result,
            );
            if !ok {
                return None;
            }
        }
        Some(partial)
    }

    /// One step to its end: retried on retryable errors as the engine would, and resumed from
    /// the checkpoint when the simulated crash stopped it.
    /// Its summary and outcome, and whether it was resumed after the crash.
    fn execute_step(
        &self,
        world: &RunWorld,
        step: &PlanStep,
    ) -> Result<(String, StepOutcome, bool), String> {
        world.events.start_step();
        let mut checkpoint = None;
        let mut attempt = 1;
        let mut resumed = false;
        loop {
            let ctx = world.context(self.plugin, self.setup, checkpoint.clone(), self.timeout);
            let outcome = self.plugin.execute(&ctx, self.spec, step, None);
            if let Some(resume_from) = world.events.take_crash() {
                checkpoint = resume_from;
                resumed = true;
                continue;
            }
            match outcome {
                Ok(Ok(r)) => {
                    world.events.commit();
                    return Ok((r.summary, r.outcome, resumed));
                }
                Ok(Err(e)) if e.retryable && attempt < self.attempts => {
                    attempt += 1;
                    checkpoint = world.events.retry_point();
                }
                other => return flatten(other).map(|r| (r.summary, r.outcome, resumed)),
            }
        }
    }

    fn rollback_all(
        &self,
        world: &RunWorld,
        steps: &[&PlanStep],
        report: &mut CheckReport,
        run: &str,
    ) {
        for step in steps
            .iter()
            .rev()
            .filter(|s| s.reversible && s.queue.is_none())
        {
            let started = Instant::now();
            let result = flatten(self.plugin.rollback(
                &world.context(self.plugin, self.setup, None, self.timeout),
                self.spec,
                step,
            ))
            .map(|r| r.summary);
            let ok = result.is_ok();
            report.record(
                format!("rollback {}{run}", step.id),
                started.elapsed(),
                result,
            );
            if !ok {
                return;
            }
        }
        let seeded = RunWorld::seeded(self.setup, None).contents();
        let result = match steps.iter().find(|s| !s.reversible || s.queue.is_some()) {
            Some(s) if s.queue.is_some() => Ok(format!(
                "not compared with the seed: step {} runs on a worker queue",
                s.id
            )),
            Some(s) => Ok(format!(
                "not compared with the seed: step {} is not reversible",
                s.id
            )),
            None if world.contents() == seeded => {
                Ok("every bucket is as it was seeded".to_string())
            }
            None => Err(format!(
                "after rollback the buckets differ from the seed: {}",
                differences(&seeded, &world.contents())
            )),
        };
        report.record(
            format!("rollback restores the data{run}"),
            Duration::ZERO,
            result,
        );
    }

    fn collect_logs(&self, world: &RunWorld, run: &str, report: &mut CheckReport) {
        report.logs.extend(
            world
                .events
                .logs()
                .into_iter()
                .map(|(level, line)| (run.to_string(), level, line)),
        );
    }
}

/// `n thing` or `n things`.
fn counted(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// `2 steps: copy (migration), index (migration, queue reindex, ~900 ms); ~1000 ms in all`.
fn describe_plan(plan: &Plan) -> String {
    let steps: Vec<String> = plan
        .steps
        .iter()
        .map(|s| {
            let mut about = format!("{:?}", s.kind).to_lowercase();
            if let Some(queue) = &s.queue {
                about.push_str(&format!(", queue {queue}"));
            }
            if let Some(ms) = s.estimated_duration_ms {
                about.push_str(&format!(", ~{ms} ms"));
            }
            format!("{} ({about})", s.id)
        })
        .collect();
    let estimate = plan
        .estimated_duration_ms
        .map(|ms| format!("; ~{ms} ms in all"))
        .unwrap_or_default();
    format!("{} steps: {}{estimate}", plan.steps.len(), steps.join(", "))
}

type RunEnd = (
    BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    Vec<(String, String)>,
);

fn sorted(objects: Vec<ObjectResult>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = objects
        .into_iter()
        .map(|o| (o.name, format!("{:?}", o.status).to_lowercase()))
        .collect();
    v.sort();
    v
}

fn compare(clean: &RunEnd, crashed: &RunEnd) -> Result<(), String> {
    if clean.0 != crashed.0 {
        return Err(format!(
            "after the crash and resume the buckets differ from the uninterrupted run: {}",
            differences(&clean.0, &crashed.0)
        ));
    }
    if clean.1 != crashed.1 {
        let count = |v: &[(String, String)]| {
            let mut m: BTreeMap<(String, String), i64> = BTreeMap::new();
            for o in v {
                *m.entry(o.clone()).or_default() += 1;
            }
            m
        };
        let (want, got) = (count(&clean.1), count(&crashed.1));
        let mut twice = vec![];
        let mut lost = vec![];
        for key in want
            .keys()
            .chain(got.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let d = got.get(key).copied().unwrap_or(0) - want.get(key).copied().unwrap_or(0);
            let name = format!("{} ({})", key.0, key.1);
            if d > 0 {
                twice.push(name);
            } else if d < 0 {
                lost.push(name);
            }
        }
        let few = |v: &[String]| {
            let mut s = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 5 {
                s.push_str(&format!(" and {} more", v.len() - 5));
            }
            s
        };
        let mut parts = vec![];
        if !twice.is_empty() {
            parts.push(format!("recorded more than once: {}", few(&twice)));
        }
        if !lost.is_empty() {
            parts.push(format!("lost: {}", few(&lost)));
        }
        return Err(format!(
            "object results differ: {} in the uninterrupted run, {} after the crash; {}",
            clean.1.len(),
            crashed.1.len(),
            parts.join("; ")
        ));
    }
    Ok(())
}

/// The first few keys whose values differ between two sets of buckets.
fn differences(
    want: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    got: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) -> String {
    let mut found = vec![];
    for (bucket, w) in want {
        let empty = BTreeMap::new();
        let g = got.get(bucket).unwrap_or(&empty);
        for key in w.keys().chain(g.keys().filter(|k| !w.contains_key(*k))) {
            match (w.get(key), g.get(key)) {
                (a, b) if a == b => {}
                (Some(_), None) => found.push(format!("{bucket}/{key} missing")),
                (None, Some(_)) => found.push(format!("{bucket}/{key} added")),
                _ => found.push(format!("{bucket}/{key} changed")),
            }
            if found.len() >= 5 {
                return found.join(", ") + ", …";
            }
        }
    }
    found.join(", ")
}

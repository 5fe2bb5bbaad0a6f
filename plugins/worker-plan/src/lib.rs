//! `worker-plan`: the handler for migrations that an external tool registers through the API
//! with a plan of its own. The request's parameters carry the steps; every step names the worker
//! queue that runs it, so the host never calls this component's `execute` or `rollback` (they
//! refuse, naming the step). Nothing to write: a tool needs no plugin to join Plover.
//!
//! ```json
//! { "handler": "worker-plan", "parameters": {
//!     "steps": [ { "id": "reindex", "queue": "search", "expected_objects": 1000,
//!                  "description": "rebuild the index", "depends_on": [] } ],
//!     "risk": "medium", "estimated_duration_ms": 60000 } }
//! ```

use plover_sdk::prelude::*;
use serde::Deserialize;

/// At most this many steps: the host refuses larger plans anyway, this names the cause first.
const MAX_STEPS: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Parameters {
    steps: Vec<StepParameters>,
    #[serde(default)]
    risk: Option<String>,
    #[serde(default)]
    risk_notes: Vec<String>,
    #[serde(default)]
    estimated_duration_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepParameters {
    id: String,
    queue: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    expected_objects: Option<u64>,
    /// Whether the tool can undo the step when it is offered a rollback task (default true).
    #[serde(default = "yes")]
    reversible: bool,
    /// Whether the tool continues from its last checkpoint (default true).
    #[serde(default = "yes")]
    resumable: bool,
    #[serde(default)]
    estimated_duration_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

fn invalid(message: String) -> MigrationError {
    MigrationError::invalid_spec(message).with_recovery(
        "fix-parameters",
        "send parameters.steps: a list of steps, each with an id and the worker queue that runs it",
    )
}

fn step_kind(name: Option<&str>) -> Result<StepKind, String> {
    Ok(match name.unwrap_or("migration") {
        "preparation" => StepKind::Preparation,
        "validation" => StepKind::Validation,
        "backup" => StepKind::Backup,
        "migration" => StepKind::Migration,
        "verification" => StepKind::Verification,
        "cleanup" => StepKind::Cleanup,
        other => return Err(format!("unknown step kind {other:?}")),
    })
}

fn risk_level(name: Option<&str>) -> Result<RiskLevel, String> {
    Ok(match name.unwrap_or("low") {
        "low" => RiskLevel::Low,
        "medium" => RiskLevel::Medium,
        "high" => RiskLevel::High,
        other => return Err(format!("unknown risk {other:?} (low, medium or high)")),
    })
}

fn plan_from(spec: &MigrationSpec) -> Result<MigrationPlan, String> {
    let p: Parameters = serde_json::from_str(&spec.parameters).map_err(|e| e.to_string())?;
    if p.steps.is_empty() {
        return Err("steps is empty: a plan needs at least one step".into());
    }
    if p.steps.len() > MAX_STEPS {
        return Err(format!(
            "{} steps; at most {MAX_STEPS} are allowed",
            p.steps.len()
        ));
    }
    let mut steps = Vec::with_capacity(p.steps.len());
    for s in p.steps {
        steps.push(PlanStep {
            kind: step_kind(s.kind.as_deref()).map_err(|e| format!("step '{}': {e}", s.id))?,
            id: s.id,
            description: s.description,
            depends_on: s.depends_on,
            expected_objects: s.expected_objects,
            reversible: s.reversible,
            resumable: s.resumable,
            queue: Some(s.queue),
            estimated_duration_ms: s.estimated_duration_ms,
        });
    }
    Ok(MigrationPlan {
        steps,
        risk: risk_level(p.risk.as_deref())?,
        risk_notes: p.risk_notes,
        estimated_duration_ms: p.estimated_duration_ms,
    })
}

fn not_here(step: &PlanStep) -> MigrationError {
    MigrationError::step_failed(format!(
        "step '{}' runs on a worker queue; worker-plan has no code of its own to run it",
        step.id
    ))
}

struct WorkerPlan;

impl Handler for WorkerPlan {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "worker-plan".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec!["worker-plan".into()],
            description: "Plans a migration from the steps its request names; external workers run every step".into(),
        }
    }

    fn plan(spec: MigrationSpec) -> Result<MigrationPlan, MigrationError> {
        plan_from(&spec).map_err(|e| invalid(format!("worker-plan parameters: {e}")))
    }

    fn validate(
        _spec: MigrationSpec,
        plan: MigrationPlan,
    ) -> Result<ValidationReport, MigrationError> {
        // The tools behind the queues check their own work; a dry run can only say who runs what.
        let findings = plan
            .steps
            .iter()
            .map(|s| Finding {
                severity: Severity::Info,
                code: "runs-on-worker-queue".into(),
                message: format!(
                    "step '{}' runs on worker queue '{}'",
                    s.id,
                    s.queue.as_deref().unwrap_or_default()
                ),
                step: Some(s.id.clone()),
            })
            .collect();
        Ok(ValidationReport { findings })
    }

    fn execute(
        _spec: MigrationSpec,
        step: PlanStep,
        _checkpoint: Option<Vec<u8>>,
    ) -> Result<StepReport, MigrationError> {
        Err(not_here(&step))
    }

    fn rollback(_spec: MigrationSpec, step: PlanStep) -> Result<StepReport, MigrationError> {
        Err(not_here(&step))
    }
}

plover_sdk::export_handler!(WorkerPlan);

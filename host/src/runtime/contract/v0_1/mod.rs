//! Contract line 0.1 (`plover:migration@0.1.x`), adapted to the newest contract: bindings
//! generated from its newest folder, `wit/v0.1.1/` (plugins built against 0.1.0 bind to the
//! same definitions: 0.1.1 only added to 0.1.0, and wasmtime resolves semver-compatible names),
//! and conversions to and from the 0.2 bindings, so the host's model and imports know only the
//! newest contract. What 0.1 cannot say is filled in as nothing: no worker queues, no
//! estimates, every step `complete`, no recovery actions. `imports` serves 0.1's imports
//! through the 0.2 implementations.

mod imports;

use super::v0_2 as latest;
use wasmtime::Store;

use crate::runtime::host_imports::CallState;

wasmtime::component::bindgen!({
    path: "../wit/v0.1.1",
    world: "handler-plugin",
    imports: { default: trappable },
    with: {
        "plover:migration/kv.bucket": crate::runtime::host_imports::OpenBucket,
        "plover:migration/sql.connection": crate::runtime::host_imports::OpenSql,
    },
});

use latest::wit as new;
pub use plover::migration::types as wit;

same_cases!(new::ValidationLevel => wit::ValidationLevel { Basic, Full, Strict });
same_cases!(new::StepKind => wit::StepKind {
    Preparation, Validation, Backup, Migration, Verification, Cleanup
});
same_cases!(wit::StepKind => new::StepKind {
    Preparation, Validation, Backup, Migration, Verification, Cleanup
});
same_cases!(new::RiskLevel => wit::RiskLevel { Low, Medium, High });
same_cases!(wit::RiskLevel => new::RiskLevel { Low, Medium, High });
same_cases!(wit::Severity => new::Severity { Info, Warning, Error });
same_cases!(wit::ErrorKind => new::ErrorKind {
    InvalidSpec, ValidationFailed, StepFailed, DependencyUnavailable, DataCorruption, Timeout,
    Cancelled, InsufficientResources
});

fn spec(s: &new::MigrationSpec) -> wit::MigrationSpec {
    wit::MigrationSpec {
        id: s.id.clone(),
        kind: s.kind.clone(),
        parameters: s.parameters.clone(),
        source: s.source.clone(),
        target: s.target.clone(),
        bindings: s.bindings.clone(),
        options: wit::MigrationOptions {
            dry_run: s.options.dry_run,
            validation_level: s.options.validation_level.into(),
            batch_size: s.options.batch_size,
        },
    }
}

fn step_to_old(s: &new::PlanStep) -> wit::PlanStep {
    wit::PlanStep {
        id: s.id.clone(),
        kind: s.kind.into(),
        description: s.description.clone(),
        depends_on: s.depends_on.clone(),
        expected_objects: s.expected_objects,
        reversible: s.reversible,
        resumable: s.resumable,
    }
}

fn step_to_new(s: wit::PlanStep) -> new::PlanStep {
    new::PlanStep {
        id: s.id,
        kind: s.kind.into(),
        description: s.description,
        depends_on: s.depends_on,
        expected_objects: s.expected_objects,
        reversible: s.reversible,
        resumable: s.resumable,
        queue: None,
        estimated_duration_ms: None,
    }
}

fn plan_to_new(p: wit::MigrationPlan) -> new::MigrationPlan {
    new::MigrationPlan {
        steps: p.steps.into_iter().map(step_to_new).collect(),
        risk: p.risk.into(),
        risk_notes: p.risk_notes,
        estimated_duration_ms: None,
    }
}

fn plan_to_old(p: &new::MigrationPlan) -> wit::MigrationPlan {
    wit::MigrationPlan {
        steps: p.steps.iter().map(step_to_old).collect(),
        risk: p.risk.into(),
        risk_notes: p.risk_notes.clone(),
    }
}

fn report_to_new(r: wit::ValidationReport) -> new::ValidationReport {
    new::ValidationReport {
        findings: r
            .findings
            .into_iter()
            .map(|f| new::Finding {
                severity: f.severity.into(),
                code: f.code,
                message: f.message,
                step: f.step,
            })
            .collect(),
    }
}

fn step_report(r: wit::StepReport) -> new::StepReport {
    new::StepReport {
        summary: r.summary,
        outcome: new::StepOutcome::Complete,
    }
}

fn error(e: wit::MigrationError) -> new::MigrationError {
    new::MigrationError {
        kind: e.kind.into(),
        message: e.message,
        retryable: e.retryable,
        recovery: vec![],
    }
}

/// What a 0.1 handler's lifecycle call answers, in 0.2 terms.
type Answer<T> = wasmtime::Result<Result<T, new::MigrationError>>;

pub(super) fn describe(
    h: &HandlerPlugin,
    store: &mut Store<CallState>,
) -> wasmtime::Result<new::PluginInfo> {
    let i = h.plover_migration_handler().call_describe(store)?;
    Ok(new::PluginInfo {
        name: i.name,
        version: i.version,
        kinds: i.kinds,
        description: i.description,
    })
}

pub(super) fn plan(
    h: &HandlerPlugin,
    store: &mut Store<CallState>,
    s: &new::MigrationSpec,
) -> Answer<new::MigrationPlan> {
    let r = h.plover_migration_handler().call_plan(store, &spec(s))?;
    Ok(r.map(plan_to_new).map_err(error))
}

pub(super) fn validate(
    h: &HandlerPlugin,
    store: &mut Store<CallState>,
    s: &new::MigrationSpec,
    p: &new::MigrationPlan,
) -> Answer<new::ValidationReport> {
    let r = h
        .plover_migration_handler()
        .call_validate(store, &spec(s), &plan_to_old(p))?;
    Ok(r.map(report_to_new).map_err(error))
}

/// 0.1's `execute` has no object list: a request to re-run single objects is refused by the
/// handler's contract version, without calling it.
pub(super) fn execute(
    h: &HandlerPlugin,
    store: &mut Store<CallState>,
    s: &new::MigrationSpec,
    step: &new::PlanStep,
    checkpoint: Option<&[u8]>,
    objects: Option<&[String]>,
) -> Answer<new::StepReport> {
    if objects.is_some() {
        return Ok(Err(new::MigrationError {
            kind: new::ErrorKind::InvalidSpec,
            message: "this handler is built against contract 0.1, whose execute cannot re-run \
                      single objects (contract 0.2 can)"
                .into(),
            retryable: false,
            recovery: vec![],
        }));
    }
    let r = h.plover_migration_handler().call_execute(
        store,
        &spec(s),
        &step_to_old(step),
        checkpoint,
    )?;
    Ok(r.map(step_report).map_err(error))
}

pub(super) fn rollback(
    h: &HandlerPlugin,
    store: &mut Store<CallState>,
    s: &new::MigrationSpec,
    step: &new::PlanStep,
) -> Answer<new::StepReport> {
    let r = h
        .plover_migration_handler()
        .call_rollback(store, &spec(s), &step_to_old(step))?;
    Ok(r.map(step_report).map_err(error))
}

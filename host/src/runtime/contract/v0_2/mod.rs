//! Contract 0.2 (`plover:migration@0.2.x`), the newest: bindings generated from `wit/v0.2.0/`
//! and conversions to and from the host model. The host's imports are implemented against
//! these bindings (`runtime::host_imports`); older contract lines adapt to them.

use crate::model;

wasmtime::component::bindgen!({
    path: "../wit/v0.2.0",
    world: "handler-plugin",
    imports: { default: trappable },
    with: {
        "plover:migration/kv.bucket": crate::runtime::host_imports::OpenBucket,
        "plover:migration/sql.connection": crate::runtime::host_imports::OpenSql,
    },
});

pub use plover::migration::types as wit;

same_cases!(model::ValidationLevel => wit::ValidationLevel { Basic, Full, Strict });
same_cases!(model::StepKind => wit::StepKind {
    Preparation, Validation, Backup, Migration, Verification, Cleanup
});
same_cases!(wit::StepKind => model::StepKind {
    Preparation, Validation, Backup, Migration, Verification, Cleanup
});
same_cases!(model::RiskLevel => wit::RiskLevel { Low, Medium, High });
same_cases!(wit::RiskLevel => model::RiskLevel { Low, Medium, High });
same_cases!(wit::Severity => model::Severity { Info, Warning, Error });
same_cases!(wit::ObjectStatus => model::ObjectStatus { Success, Error, Skipped });
same_cases!(wit::StepOutcome => model::StepOutcome { Complete, Partial });
same_cases!(wit::ErrorKind => model::ErrorKind {
    InvalidSpec, ValidationFailed, StepFailed, DependencyUnavailable, DataCorruption, Timeout,
    Cancelled, InsufficientResources
});
same_cases!(plover::migration::job::LogLevel => model::LogLevel { Debug, Info, Warning, Error });

impl From<&model::MigrationSpec> for wit::MigrationSpec {
    fn from(s: &model::MigrationSpec) -> Self {
        wit::MigrationSpec {
            id: s.id.clone(),
            kind: s.kind.clone(),
            parameters: s.parameters.to_string(),
            source: s.source.to_string(),
            target: s.target.to_string(),
            bindings: s.bindings.clone(),
            options: wit::MigrationOptions {
                dry_run: s.options.dry_run,
                validation_level: s.options.validation_level.into(),
                batch_size: s.options.batch_size,
            },
        }
    }
}

impl From<&model::PlanStep> for wit::PlanStep {
    fn from(s: &model::PlanStep) -> Self {
        wit::PlanStep {
            id: s.id.clone(),
            kind: s.kind.into(),
            description: s.description.clone(),
            depends_on: s.depends_on.clone(),
            expected_objects: s.expected_objects,
            reversible: s.reversible,
            resumable: s.resumable,
            queue: s.queue.clone(),
            estimated_duration_ms: s.estimated_duration_ms,
        }
    }
}

impl From<wit::PlanStep> for model::PlanStep {
    fn from(s: wit::PlanStep) -> Self {
        model::PlanStep {
            id: s.id,
            kind: s.kind.into(),
            description: s.description,
            depends_on: s.depends_on,
            expected_objects: s.expected_objects,
            reversible: s.reversible,
            resumable: s.resumable,
            queue: s.queue,
            estimated_duration_ms: s.estimated_duration_ms,
        }
    }
}

impl From<&model::Plan> for wit::MigrationPlan {
    fn from(p: &model::Plan) -> Self {
        wit::MigrationPlan {
            steps: p.steps.iter().map(Into::into).collect(),
            risk: p.risk.into(),
            risk_notes: p.risk_notes.clone(),
            estimated_duration_ms: p.estimated_duration_ms,
        }
    }
}

impl From<wit::MigrationPlan> for model::Plan {
    fn from(p: wit::MigrationPlan) -> Self {
        model::Plan {
            steps: p.steps.into_iter().map(Into::into).collect(),
            risk: p.risk.into(),
            risk_notes: p.risk_notes,
            estimated_duration_ms: p.estimated_duration_ms,
        }
    }
}

impl From<wit::ValidationReport> for model::ValidationReport {
    fn from(r: wit::ValidationReport) -> Self {
        model::ValidationReport {
            findings: r
                .findings
                .into_iter()
                .map(|f| model::Finding {
                    severity: f.severity.into(),
                    code: f.code,
                    message: f.message,
                    step: f.step,
                })
                .collect(),
        }
    }
}

impl From<wit::ObjectResult> for model::ObjectResult {
    fn from(o: wit::ObjectResult) -> Self {
        model::ObjectResult {
            name: o.name,
            object_type: o.object_type,
            status: o.status.into(),
            error: o.error,
            duration_micros: o.duration_micros,
        }
    }
}

impl From<wit::StepReport> for model::StepReport {
    fn from(r: wit::StepReport) -> Self {
        model::StepReport {
            summary: r.summary,
            outcome: r.outcome.into(),
        }
    }
}

impl From<wit::MigrationError> for model::MigrationError {
    fn from(e: wit::MigrationError) -> Self {
        model::MigrationError {
            kind: e.kind.into(),
            message: e.message,
            retryable: e.retryable,
            recovery: e
                .recovery
                .into_iter()
                .map(|r| model::RecoveryAction {
                    action: r.action,
                    description: r.description,
                })
                .collect(),
        }
    }
}

impl From<wit::PluginInfo> for model::PluginInfo {
    fn from(i: wit::PluginInfo) -> Self {
        model::PluginInfo {
            name: i.name,
            version: i.version,
            kinds: i.kinds,
            description: i.description,
        }
    }
}

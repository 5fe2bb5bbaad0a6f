//! Contract line 0.1 (`plover:migration@0.1.x`): bindings generated from its newest folder,
//! `wit/v0.1.1/`, and conversions to the host model. Plugins built against 0.1.0 bind to the
//! same definitions: 0.1.1 only added to 0.1.0, and wasmtime resolves semver-compatible names.

use crate::model;

wasmtime::component::bindgen!({
    path: "../wit/v0.1.1",
    world: "handler-plugin",
    imports: { default: trappable },
    with: {
        "plover:migration/kv.bucket": crate::runtime::host_imports::OpenBucket,
        "plover:migration/sql.connection": crate::runtime::host_imports::OpenSql,
    },
});

pub use plover::migration::types as wit;

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
                validation_level: match s.options.validation_level {
                    model::ValidationLevel::Basic => wit::ValidationLevel::Basic,
                    model::ValidationLevel::Full => wit::ValidationLevel::Full,
                    model::ValidationLevel::Strict => wit::ValidationLevel::Strict,
                },
                batch_size: s.options.batch_size,
            },
        }
    }
}

impl From<&model::PlanStep> for wit::PlanStep {
    fn from(s: &model::PlanStep) -> Self {
        use model::StepKind as M;
        use wit::StepKind as W;
        wit::PlanStep {
            id: s.id.clone(),
            kind: match s.kind {
                M::Preparation => W::Preparation,
                M::Validation => W::Validation,
                M::Backup => W::Backup,
                M::Migration => W::Migration,
                M::Verification => W::Verification,
                M::Cleanup => W::Cleanup,
            },
            description: s.description.clone(),
            depends_on: s.depends_on.clone(),
            expected_objects: s.expected_objects,
            reversible: s.reversible,
            resumable: s.resumable,
        }
    }
}

impl From<wit::PlanStep> for model::PlanStep {
    fn from(s: wit::PlanStep) -> Self {
        use model::StepKind as M;
        use wit::StepKind as W;
        model::PlanStep {
            id: s.id,
            kind: match s.kind {
                W::Preparation => M::Preparation,
                W::Validation => M::Validation,
                W::Backup => M::Backup,
                W::Migration => M::Migration,
                W::Verification => M::Verification,
                W::Cleanup => M::Cleanup,
            },
            description: s.description,
            depends_on: s.depends_on,
            expected_objects: s.expected_objects,
            reversible: s.reversible,
            resumable: s.resumable,
        }
    }
}

fn risk_to_wit(r: model::RiskLevel) -> wit::RiskLevel {
    match r {
        model::RiskLevel::Low => wit::RiskLevel::Low,
        model::RiskLevel::Medium => wit::RiskLevel::Medium,
        model::RiskLevel::High => wit::RiskLevel::High,
    }
}

impl From<&model::Plan> for wit::MigrationPlan {
    fn from(p: &model::Plan) -> Self {
        wit::MigrationPlan {
            steps: p.steps.iter().map(Into::into).collect(),
            risk: risk_to_wit(p.risk),
            risk_notes: p.risk_notes.clone(),
        }
    }
}

impl From<wit::MigrationPlan> for model::Plan {
    fn from(p: wit::MigrationPlan) -> Self {
        model::Plan {
            steps: p.steps.into_iter().map(Into::into).collect(),
            risk: match p.risk {
                wit::RiskLevel::Low => model::RiskLevel::Low,
                wit::RiskLevel::Medium => model::RiskLevel::Medium,
                wit::RiskLevel::High => model::RiskLevel::High,
            },
            risk_notes: p.risk_notes,
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
                    severity: match f.severity {
                        wit::Severity::Info => model::Severity::Info,
                        wit::Severity::Warning => model::Severity::Warning,
                        wit::Severity::Error => model::Severity::Error,
                    },
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
            status: match o.status {
                wit::ObjectStatus::Success => model::ObjectStatus::Success,
                wit::ObjectStatus::Error => model::ObjectStatus::Error,
                wit::ObjectStatus::Skipped => model::ObjectStatus::Skipped,
            },
            error: o.error,
            duration_micros: o.duration_micros,
        }
    }
}

impl From<wit::StepReport> for model::StepReport {
    fn from(r: wit::StepReport) -> Self {
        model::StepReport { summary: r.summary }
    }
}

impl From<wit::MigrationError> for model::MigrationError {
    fn from(e: wit::MigrationError) -> Self {
        use model::ErrorKind as M;
        use wit::ErrorKind as W;
        model::MigrationError {
            kind: match e.kind {
                W::InvalidSpec => M::InvalidSpec,
                W::ValidationFailed => M::ValidationFailed,
                W::StepFailed => M::StepFailed,
                W::DependencyUnavailable => M::DependencyUnavailable,
                W::DataCorruption => M::DataCorruption,
                W::Timeout => M::Timeout,
                W::Cancelled => M::Cancelled,
                W::InsufficientResources => M::InsufficientResources,
            },
            message: e.message,
            retryable: e.retryable,
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

impl From<plover::migration::job::LogLevel> for model::LogLevel {
    fn from(l: plover::migration::job::LogLevel) -> Self {
        use plover::migration::job::LogLevel as W;
        match l {
            W::Debug => model::LogLevel::Debug,
            W::Info => model::LogLevel::Info,
            W::Warning => model::LogLevel::Warning,
            W::Error => model::LogLevel::Error,
        }
    }
}

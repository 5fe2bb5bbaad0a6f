//! The host's own data model of migrations: specs, plans, findings, object results, errors.
//!
//! These types are what the engine stores and the API serves. They do not depend on any
//! contract version: each `runtime::contract::vX_Y` module converts to and from them, so a
//! new contract version changes one adapter, not the engine or the stored data.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ValidationLevel {
    Basic,
    #[default]
    Full,
    Strict,
}

/// Options a handler sees. The engine has more (retries, approval); those never reach a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationOptions {
    pub dry_run: bool,
    pub validation_level: ValidationLevel,
    pub batch_size: u32,
}

impl Default for MigrationOptions {
    fn default() -> Self {
        MigrationOptions {
            dry_run: false,
            validation_level: ValidationLevel::Full,
            batch_size: 500,
        }
    }
}

/// What a handler is told about its job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MigrationSpec {
    pub id: String,
    pub kind: String,
    /// Handler parameters: a JSON object.
    pub parameters: serde_json::Value,
    pub source: serde_json::Value,
    pub target: serde_json::Value,
    /// Binding names granted to the job.
    pub bindings: Vec<String>,
    pub options: MigrationOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    Preparation,
    Validation,
    Backup,
    Migration,
    Verification,
    Cleanup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanStep {
    pub id: String,
    pub kind: StepKind,
    pub description: String,
    pub depends_on: Vec<String>,
    pub expected_objects: Option<u64>,
    pub reversible: bool,
    pub resumable: bool,
    /// The worker queue that executes the step instead of the plugin (contract 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// How long the handler expects the step to take (contract 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
    pub risk: RiskLevel,
    pub risk_notes: Vec<String>,
    /// How long the handler expects the whole migration to take (contract 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_duration_ms: Option<u64>,
}

impl Plan {
    /// The plan's own estimate, or else the sum of its steps' when every step has one.
    pub fn estimate_ms(&self) -> Option<u64> {
        self.estimated_duration_ms.or_else(|| {
            self.steps
                .iter()
                .map(|s| s.estimated_duration_ms)
                .sum::<Option<u64>>()
                .filter(|_| !self.steps.is_empty())
        })
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finding {
    pub severity: Severity,
    pub code: String,
    pub message: String,
    pub step: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct ValidationReport {
    pub findings: Vec<Finding>,
}

impl ValidationReport {
    /// Whether the dry run passed at `level`: no errors, and at `strict` no warnings either.
    pub fn passed(&self, level: ValidationLevel) -> bool {
        let worst_allowed = match level {
            ValidationLevel::Strict => Severity::Info,
            _ => Severity::Warning,
        };
        self.findings.iter().all(|f| f.severity <= worst_allowed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectStatus {
    Success,
    Error,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ObjectResult {
    pub name: String,
    pub object_type: String,
    pub status: ObjectStatus,
    pub error: Option<String>,
    pub duration_micros: u64,
}

/// How a step ended (contract 0.2; a 0.1 step is always complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    #[default]
    Complete,
    /// Some objects failed and the handler tolerates it: the job ends `partial`.
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepReport {
    pub summary: String,
    #[serde(default)]
    pub outcome: StepOutcome,
}

/// The error taxonomy handlers and the engine share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    InvalidSpec,
    ValidationFailed,
    StepFailed,
    DependencyUnavailable,
    DataCorruption,
    Timeout,
    Cancelled,
    InsufficientResources,
}

/// An error a handler returned (as opposed to a sandbox failure, see `runtime::PluginError`).
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema,
)]
#[error("{kind:?}: {message}")]
pub struct MigrationError {
    pub kind: ErrorKind,
    pub message: String,
    pub retryable: bool,
    /// What an operator can do next, most useful first (contract 0.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<RecoveryAction>,
}

impl MigrationError {
    /// An error with no recovery actions.
    pub fn new(kind: ErrorKind, message: impl Into<String>, retryable: bool) -> Self {
        MigrationError {
            kind,
            message: message.into(),
            retryable,
            recovery: vec![],
        }
    }
}

/// Something an operator can do about an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecoveryAction {
    /// A short machine-readable code, e.g. `retry-objects`.
    pub action: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub kinds: Vec<String>,
    pub description: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

/// At most `max` characters of `s`, marked when cut.
pub(crate) fn truncated(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

//! The job and step state machines. Pure: no I/O, so every transition rule is unit-tested.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a migration job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    Planned,
    Validating,
    AwaitingApproval,
    Executing,
    Paused,
    Completed,
    /// Every step ended, and some objects failed that the handler tolerates (contract 0.2):
    /// done, with failures to look at (`/objects?status=error`).
    Partial,
    Failed,
    RollingBack,
    RolledBack,
    RollbackFailed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 12] = [
        JobStatus::Planned,
        JobStatus::Validating,
        JobStatus::AwaitingApproval,
        JobStatus::Executing,
        JobStatus::Paused,
        JobStatus::Completed,
        JobStatus::Partial,
        JobStatus::Failed,
        JobStatus::RollingBack,
        JobStatus::RolledBack,
        JobStatus::RollbackFailed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Planned => "planned",
            JobStatus::Validating => "validating",
            JobStatus::AwaitingApproval => "awaiting-approval",
            JobStatus::Executing => "executing",
            JobStatus::Paused => "paused",
            JobStatus::Completed => "completed",
            JobStatus::Partial => "partial",
            JobStatus::Failed => "failed",
            JobStatus::RollingBack => "rolling-back",
            JobStatus::RolledBack => "rolled-back",
            JobStatus::RollbackFailed => "rollback-failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// The statuses in which a background thread works on the job.
    pub const RUNNING: [JobStatus; 3] = [
        JobStatus::Validating,
        JobStatus::Executing,
        JobStatus::RollingBack,
    ];

    /// A background thread is working on the job.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            JobStatus::Validating | JobStatus::Executing | JobStatus::RollingBack
        )
    }

    /// Nothing more happens unless someone asks (rollback, retry, delete).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed
                | JobStatus::Partial
                | JobStatus::Failed
                | JobStatus::RolledBack
                | JobStatus::RollbackFailed
                | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status '{s}'"))
    }
}

/// What an operator (or the engine itself) asks of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Validate,
    Replan,
    Execute,
    Approve,
    Pause,
    Resume,
    Cancel,
    Retry,
    /// Run again only the failed objects of a step that ended `partial` (contract 0.2).
    RetryObjects,
    Rollback,
    Delete,
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::Validate,
        Action::Replan,
        Action::Execute,
        Action::Approve,
        Action::Pause,
        Action::Resume,
        Action::Cancel,
        Action::Retry,
        Action::RetryObjects,
        Action::Rollback,
        Action::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Validate => "validate",
            Action::Replan => "replan",
            Action::Execute => "execute",
            Action::Approve => "approve",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
            Action::Retry => "retry",
            Action::RetryObjects => "retry-objects",
            Action::Rollback => "rollback",
            Action::Delete => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `action` may be asked of a job in `status`. The engine checks this before acting;
/// the transitions the engine makes on its own (a step failing, a run finishing) are in
/// [`can_move`].
pub fn allows(status: JobStatus, action: Action) -> bool {
    use Action as A;
    use JobStatus as S;
    match action {
        A::Validate | A::Replan => matches!(status, S::Planned | S::AwaitingApproval),
        A::Execute => status == S::Planned,
        A::Approve => matches!(status, S::Planned | S::AwaitingApproval),
        A::Pause => status == S::Executing,
        A::Resume => status == S::Paused,
        A::Cancel => matches!(
            status,
            S::Planned | S::Validating | S::AwaitingApproval | S::Executing | S::Paused
        ),
        A::Retry => status == S::Failed,
        A::RetryObjects => status == S::Partial,
        A::Rollback => matches!(
            status,
            S::Completed | S::Partial | S::Failed | S::Cancelled | S::RollbackFailed | S::Paused
        ),
        A::Delete => !status.is_running(),
    }
}

/// Whether the engine may move a job from `from` to `to`.
pub fn can_move(from: JobStatus, to: JobStatus) -> bool {
    use JobStatus as S;
    matches!(
        (from, to),
        (
            S::Planned,
            S::Validating | S::AwaitingApproval | S::Executing | S::Cancelled
        ) | (
            S::Validating,
            S::Planned | S::AwaitingApproval | S::Cancelled
        ) | (
            S::AwaitingApproval,
            S::Validating | S::Executing | S::Planned | S::Cancelled
        ) | (
            S::Executing,
            S::Paused | S::Completed | S::Partial | S::Failed | S::RollingBack | S::Cancelled
        ) | (S::Paused, S::Executing | S::Cancelled | S::RollingBack)
            | (S::Failed, S::Executing | S::RollingBack)
            | (
                S::Completed | S::Partial | S::Cancelled | S::RollbackFailed,
                S::RollingBack
            )
            | (S::Partial, S::Executing)
            | (S::RollingBack, S::RolledBack | S::RollbackFailed)
    )
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Pending,
    Running,
    /// Stopped by pause or cancel; continues from its checkpoint.
    Interrupted,
    Completed,
    Failed,
    RolledBack,
    RollbackFailed,
    /// Not reversible, so rollback left it as it was.
    RollbackSkipped,
}

impl StepStatus {
    /// The step may have changed something, so rollback must consider it.
    pub fn touched_data(self) -> bool {
        matches!(
            self,
            StepStatus::Running
                | StepStatus::Interrupted
                | StepStatus::Completed
                | StepStatus::Failed
                | StepStatus::RollbackFailed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_actions_follow_the_lifecycle() {
        use Action as A;
        use JobStatus as S;
        assert!(allows(S::Planned, A::Execute));
        assert!(!allows(S::Completed, A::Execute), "execute a completed job");
        assert!(!allows(S::Planned, A::Rollback), "rollback a planned job");
        assert!(allows(S::Completed, A::Rollback));
        assert!(
            allows(S::Cancelled, A::Rollback),
            "a cancelled job can be rolled back"
        );
        assert!(allows(S::Failed, A::Retry));
        assert!(!allows(S::Completed, A::Retry));
        assert!(allows(S::Executing, A::Pause) && !allows(S::Paused, A::Pause));
        assert!(allows(S::Paused, A::Resume) && !allows(S::Executing, A::Resume));
        assert!(
            !allows(S::Executing, A::Delete),
            "delete is refused while running"
        );
        assert!(!allows(S::RollingBack, A::Delete));
        assert!(allows(S::RolledBack, A::Delete));
        assert!(!allows(S::RolledBack, A::Rollback));
        assert!(allows(S::AwaitingApproval, A::Approve));
        assert!(allows(S::Partial, A::RetryObjects) && allows(S::Partial, A::Rollback));
        assert!(!allows(S::Completed, A::RetryObjects) && !allows(S::Partial, A::Retry));
    }

    #[test]
    fn every_action_allowed_leads_somewhere_legal() {
        // An allowed action must have at least one legal engine move out of that state
        // (delete and approve-in-planned aside, which change no status).
        for s in JobStatus::ALL {
            for a in [
                Action::Execute,
                Action::Pause,
                Action::Resume,
                Action::Cancel,
                Action::Retry,
                Action::RetryObjects,
                Action::Rollback,
            ] {
                if allows(s, a) {
                    assert!(
                        JobStatus::ALL.iter().any(|&to| can_move(s, to)),
                        "{s} allows {a} but cannot move"
                    );
                }
            }
        }
    }

    #[test]
    fn engine_moves_are_restricted() {
        use JobStatus as S;
        assert!(can_move(S::Executing, S::Completed));
        assert!(can_move(S::Executing, S::Partial) && can_move(S::Partial, S::Executing));
        assert!(can_move(S::RollingBack, S::RollbackFailed));
        assert!(!can_move(S::Completed, S::Executing));
        assert!(!can_move(S::RolledBack, S::RollingBack));
        assert!(!can_move(S::Planned, S::Completed));
    }

    #[test]
    fn status_names_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}

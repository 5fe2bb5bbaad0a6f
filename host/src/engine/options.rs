//! Engine options: what a user sets per job, with defaults a host sets for all jobs.

use crate::model::ValidationLevel;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a step whose error says "retryable" is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 1 means no retry.
    pub attempts: u32,
    /// Wait before the first retry; doubles each time up to `max_backoff_ms`.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff_ms: 200,
            max_backoff_ms: 10_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (2 is the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(20);
        Duration::from_millis(
            self.backoff_ms
                .saturating_mul(1 << doublings)
                .min(self.max_backoff_ms),
        )
    }
}

/// Options of one job. Every field has a host default; a request may override any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JobOptions {
    /// Validate only; never execute.
    pub dry_run: bool,
    pub validation_level: ValidationLevel,
    /// Roll back completed steps automatically when a step fails.
    pub auto_rollback: bool,
    /// Limit for the whole job, in seconds (0: none).
    pub timeout_secs: u64,
    /// Limit for one step call, in seconds (0: the plugin's own call limit).
    pub step_timeout_secs: u64,
    pub batch_size: u32,
    /// Independent steps running at once.
    pub parallel_workers: u32,
    pub retry: RetryPolicy,
    /// Execution waits for an explicit approve of this plan.
    pub approval_required: bool,
    /// Execution is refused until a dry run of this plan passed.
    pub dry_run_required: bool,
    /// How long a cancelled step may take to stop by itself before it is stopped by force.
    pub cancel_grace_secs: u64,
    /// Newest log lines kept per job.
    pub max_log_lines: usize,
    /// Called with the final snapshot when the job ends (besides the host's webhook): an
    /// `http://` or `https://` URL.
    pub webhook: Option<String>,
    /// Also send the snapshot while the job runs, at most once per this many seconds
    /// (0: only when it ends).
    pub webhook_progress_secs: u64,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            dry_run: false,
            validation_level: ValidationLevel::Full,
            auto_rollback: true,
            timeout_secs: 0,
            step_timeout_secs: 0,
            batch_size: 500,
            parallel_workers: 2,
            retry: RetryPolicy::default(),
            approval_required: false,
            dry_run_required: false,
            cancel_grace_secs: 10,
            max_log_lines: 1000,
            webhook: None,
            webhook_progress_secs: 0,
        }
    }
}

impl JobOptions {
    /// Reject values that cannot work, with a message naming the option.
    pub fn check(&self) -> Result<(), String> {
        if self.batch_size == 0 || self.batch_size > crate::connectors::MAX_BATCH as u32 {
            return Err(format!(
                "batch_size must be 1 to {}",
                crate::connectors::MAX_BATCH
            ));
        }
        if self.parallel_workers == 0 || self.parallel_workers > 64 {
            return Err("parallel_workers must be 1 to 64".into());
        }
        if self.retry.attempts == 0 || self.retry.attempts > 100 {
            return Err("retry.attempts must be 1 to 100".into());
        }
        if self.max_log_lines == 0 || self.max_log_lines > 1_000_000 {
            return Err("max_log_lines must be 1 to 1000000".into());
        }
        if let Some(url) = &self.webhook {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(str::is_empty) || url.len() > 2000 {
                return Err("webhook must be an http:// or https:// URL".into());
            }
        }
        if self.webhook_progress_secs > 86_400 {
            return Err("webhook_progress_secs must be at most 86400".into());
        }
        Ok(())
    }

    /// Overlay the fields present in `overrides` (a JSON object) on these options.
    pub fn with_overrides(&self, overrides: &serde_json::Value) -> Result<JobOptions, String> {
        let mut merged = serde_json::to_value(self).expect("options serialise");
        match (overrides, &mut merged) {
            (serde_json::Value::Null, _) => {}
            (serde_json::Value::Object(o), serde_json::Value::Object(m)) => {
                for (k, v) in o {
                    // `retry` merges field by field; everything else replaces.
                    if let (
                        true,
                        serde_json::Value::Object(rv),
                        Some(serde_json::Value::Object(rm)),
                    ) = (k == "retry", v, m.get_mut("retry"))
                    {
                        rm.extend(rv.iter().map(|(rk, rvv)| (rk.clone(), rvv.clone())));
                        continue;
                    }
                    m.insert(k.clone(), v.clone());
                }
            }
            _ => return Err("options must be a JSON object".into()),
        }
        let options: JobOptions =
            serde_json::from_value(merged).map_err(|e| format!("options: {e}"))?;
        options.check()?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overrides_merge_over_host_defaults() {
        let host = JobOptions {
            batch_size: 1000,
            ..JobOptions::default()
        };
        let job = host
            .with_overrides(&json!({ "auto_rollback": false, "retry": { "attempts": 5 } }))
            .unwrap();
        assert_eq!(job.batch_size, 1000, "host default kept");
        assert!(!job.auto_rollback);
        assert_eq!(job.retry.attempts, 5);
        assert_eq!(job.retry.backoff_ms, 200, "other retry fields kept");
    }

    #[test]
    fn bad_overrides_are_refused_with_the_option_named() {
        let d = JobOptions::default();
        assert!(
            d.with_overrides(&json!({ "batch_sise": 10 }))
                .unwrap_err()
                .contains("unknown field `batch_sise`")
        );
        assert!(
            d.with_overrides(&json!({ "batch_size": 0 }))
                .unwrap_err()
                .contains("batch_size")
        );
        assert!(
            d.with_overrides(&json!({ "batch_size": "ten" }))
                .unwrap_err()
                .contains("invalid type")
        );
        assert!(d.with_overrides(&json!([1])).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = RetryPolicy {
            attempts: 10,
            backoff_ms: 100,
            max_backoff_ms: 350,
        };
        assert_eq!(r.backoff(2), Duration::from_millis(100));
        assert_eq!(r.backoff(3), Duration::from_millis(200));
        assert_eq!(r.backoff(4), Duration::from_millis(350));
    }
}

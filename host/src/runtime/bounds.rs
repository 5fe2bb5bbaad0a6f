//! Bounds on every value that crosses from a plugin into the host, so that no plugin can make
//! the host hold or store more than these, whatever it returns or reports:
//!
//! | what | bound | past it |
//! |---|---|---|
//! | error messages, step summaries, log lines | 64 KiB | cut, marked `[cut: N bytes]` |
//! | descriptions (plugin, plan, step), risk notes, finding messages, object errors | 4 KiB | cut, marked |
//! | object names, the current object | 1 KiB | cut, marked |
//! | step ids | 1-64 of `A-Z a-z 0-9 . _ -` | the plan is refused |
//! | job kinds, finding codes, object types | 64 bytes | cut, marked |
//! | steps in a plan | 1,000 | the plan is refused |
//! | dependencies of a step | 1,000 | the plan is refused |
//! | risk notes | 100 | the rest dropped, counted in a last note |
//! | findings in a report | 10,000 | the rest dropped, counted in a last finding |
//! | job kinds a plugin handles | 64 | the plugin is refused |
//! | a checkpoint | 1 MiB | the call stops (`limit-exceeded`) |
//! | object results per `record-objects` call | 10,000 | the call stops (`limit-exceeded`) |
//! | object results per step | host setting, 10,000,000 by default | the call stops (`limit-exceeded`) |
//! | the job's state bucket | host setting, 1 GiB by default | the write is refused (`invalid-argument`) |
//!
//! Every cut or refusal is counted in `plover_plugin_limits_total` by what was bounded.

use crate::model::{
    Finding, MigrationError, ObjectResult, Plan, PluginInfo, Severity, StepReport, ValidationReport,
};

pub const MAX_MESSAGE: usize = 64 * 1024;
pub const MAX_DESCRIPTION: usize = 4 * 1024;
pub const MAX_OBJECT_NAME: usize = 1024;
pub const MAX_IDENT: usize = 64;
pub const MAX_STEPS: usize = 1000;
pub const MAX_RISK_NOTES: usize = 100;
pub const MAX_FINDINGS: usize = 10_000;
pub const MAX_KINDS: usize = 64;
pub const MAX_CHECKPOINT: usize = 1 << 20;
pub const MAX_RESULTS_PER_CALL: usize = 10_000;
pub const DEFAULT_MAX_RESULTS_PER_STEP: u64 = 10_000_000;

/// Cut `text` to at most `max` bytes (at a character boundary), marking the cut. Returns
/// whether it cut.
pub fn cut(text: &mut String, max: usize, what: &'static str) -> bool {
    if text.len() <= max {
        return false;
    }
    let dropped = text.len();
    let mut end = max.saturating_sub(32);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    let dropped = dropped - end;
    text.push_str(&format!(" [cut: {dropped} bytes]"));
    crate::metrics::limit_hit(what);
    true
}

/// Whether `id` can name a step: 1-64 letters, digits, `.`, `_` or `-`.
pub fn is_step_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_IDENT
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A plan the host can store and run, or why not.
pub fn plan(p: &mut Plan) -> Result<(), String> {
    if p.steps.len() > MAX_STEPS {
        crate::metrics::limit_hit("plan-steps");
        return Err(format!(
            "the plan has {} steps; at most {MAX_STEPS} are allowed",
            p.steps.len()
        ));
    }
    for step in &mut p.steps {
        if !is_step_id(&step.id) {
            crate::metrics::limit_hit("step-id");
            let shown: String = step.id.chars().take(64).collect();
            return Err(format!(
                "step id {shown:?} must be 1-{MAX_IDENT} letters, digits, '.', '_' or '-'"
            ));
        }
        if let Some(queue) = step.queue.as_deref().filter(|q| !is_step_id(q)) {
            crate::metrics::limit_hit("queue-name");
            let shown: String = queue.chars().take(64).collect();
            return Err(format!(
                "step '{}' names worker queue {shown:?}; a queue name is 1-{MAX_IDENT} letters, digits, '.', '_' or '-'",
                step.id
            ));
        }
        if step.depends_on.len() > MAX_STEPS {
            crate::metrics::limit_hit("plan-steps");
            return Err(format!("step '{}' has too many dependencies", step.id));
        }
        cut(&mut step.description, MAX_DESCRIPTION, "description");
    }
    if p.risk_notes.len() > MAX_RISK_NOTES {
        let extra = p.risk_notes.len() - (MAX_RISK_NOTES - 1);
        p.risk_notes.truncate(MAX_RISK_NOTES - 1);
        p.risk_notes
            .push(format!("[{extra} more risk notes dropped]"));
        crate::metrics::limit_hit("risk-notes");
    }
    for note in &mut p.risk_notes {
        cut(note, MAX_DESCRIPTION, "risk-note");
    }
    Ok(())
}

/// A validation report the host can store: findings and their texts bounded.
pub fn report(r: &mut ValidationReport) {
    if r.findings.len() > MAX_FINDINGS {
        let extra = r.findings.len() - (MAX_FINDINGS - 1);
        // Keep the most severe first, so the dropped ones are the least telling.
        r.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let worst = r.findings[MAX_FINDINGS - 1..]
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Info);
        r.findings.truncate(MAX_FINDINGS - 1);
        r.findings.push(Finding {
            severity: worst,
            code: "findings-dropped".into(),
            message: format!(
                "{extra} more findings were dropped (at most {MAX_FINDINGS} are kept)"
            ),
            step: None,
        });
        crate::metrics::limit_hit("findings");
    }
    for f in &mut r.findings {
        cut(&mut f.code, MAX_IDENT, "finding-code");
        cut(&mut f.message, MAX_DESCRIPTION, "finding-message");
        if let Some(s) = &mut f.step {
            cut(s, MAX_IDENT, "finding-step");
        }
    }
}

pub fn step_report(r: &mut StepReport) {
    cut(&mut r.summary, MAX_MESSAGE, "summary");
}

/// How many recovery actions (contract 0.2) an error keeps.
pub const MAX_RECOVERY_ACTIONS: usize = 8;

pub fn error(e: &mut MigrationError) {
    cut(&mut e.message, MAX_MESSAGE, "error-message");
    e.recovery.truncate(MAX_RECOVERY_ACTIONS);
    for r in &mut e.recovery {
        cut(&mut r.action, MAX_IDENT, "recovery-action");
        cut(&mut r.description, MAX_DESCRIPTION, "recovery-description");
    }
}

pub fn object(o: &mut ObjectResult) {
    cut(&mut o.name, MAX_OBJECT_NAME, "object-name");
    cut(&mut o.object_type, MAX_IDENT, "object-type");
    if let Some(e) = &mut o.error {
        cut(e, MAX_DESCRIPTION, "object-error");
    }
}

/// A plugin's description the host can list, or why not.
pub fn info(i: &mut PluginInfo) -> Result<(), String> {
    if i.kinds.len() > MAX_KINDS {
        crate::metrics::limit_hit("kinds");
        return Err(format!(
            "it handles {} job kinds; at most {MAX_KINDS} are allowed",
            i.kinds.len()
        ));
    }
    for k in &mut i.kinds {
        cut(k, MAX_IDENT, "kind");
    }
    cut(&mut i.description, MAX_DESCRIPTION, "description");
    Ok(())
}

//! The check's report as a person reads it: one line per call or check, the plugin's own
//! log lines, and a verdict.

use super::CheckReport;
use crate::model::LogLevel;
use std::fmt::Write as _;

/// How many of the plugin's log lines the report shows (the last ones; all with `verbose`).
const LOG_LINES_SHOWN: usize = 20;

pub fn render(report: &CheckReport, header: &str, verbose: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let width = report
        .phases
        .iter()
        .map(|p| p.name.chars().count())
        .max()
        .unwrap_or(0);
    for p in &report.phases {
        let _ = writeln!(
            out,
            "  {} {:<width$}  {:>8}  {}",
            if p.passed { "ok  " } else { "FAIL" },
            p.name,
            took(p.took),
            p.detail
        );
    }
    if !report.logs.is_empty() {
        let shown = if verbose {
            report.logs.len()
        } else {
            LOG_LINES_SHOWN.min(report.logs.len())
        };
        let _ = writeln!(
            out,
            "plugin log ({} lines{}):",
            report.logs.len(),
            if shown < report.logs.len() {
                format!(", the last {shown}; --verbose shows all")
            } else {
                String::new()
            }
        );
        for (run, level, line) in &report.logs[report.logs.len() - shown..] {
            let _ = writeln!(out, "  [{run}] {:<7} {line}", level_name(*level));
        }
    }
    let failed = report.phases.iter().filter(|p| !p.passed).count();
    let total: std::time::Duration = report.phases.iter().map(|p| p.took).sum();
    if report.passed() {
        let _ = writeln!(
            out,
            "PASS: {} checks in {}",
            report.phases.len(),
            took(total)
        );
    } else {
        let _ = writeln!(
            out,
            "FAIL: {failed} of {} checks failed in {}",
            report.phases.len(),
            took(total)
        );
    }
    out
}

fn took(d: std::time::Duration) -> String {
    if d.is_zero() {
        String::new()
    } else if d.as_millis() < 10_000 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn level_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warning => "warning",
        LogLevel::Error => "error",
    }
}

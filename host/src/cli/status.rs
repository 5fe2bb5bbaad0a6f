//! `plover status`: a migration as a person reads it (`--json` for the snapshot itself).

use super::output::say;
use serde_json::Value;

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// Print a snapshot as a short report: state, progress, objects, times, steps, errors.
pub fn print(job: &Value) {
    say!(
        "migration {}  {}@{}  ({})",
        text(&job["id"]),
        text(&job["plugin"]["name"]),
        text(&job["plugin"]["version"]),
        text(&job["kind"])
    );
    let eta = job["estimated_seconds_remaining"]
        .as_u64()
        .map(|s| format!("  eta {s}s"))
        .unwrap_or_default();
    say!(
        "status    {}  {:.1}%{eta}",
        text(&job["status"]),
        job["percentage"].as_f64().unwrap_or(0.0)
    );
    let total = job["total_objects"]
        .as_u64()
        .map(|t| format!(" of {t}"))
        .unwrap_or_default();
    say!(
        "objects   {} completed, {} failed, {} skipped{total}",
        job["completed_objects"],
        job["failed_objects"],
        job["skipped_objects"]
    );
    let duration = job["duration_ms"]
        .as_u64()
        .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    say!(
        "started   {}  ended {}  took {duration}",
        text(&job["start_time"]),
        text(&job["end_time"])
    );
    if !job["current_step"].is_null() {
        say!(
            "current   {} / {}",
            text(&job["current_step"]),
            text(&job["current_object"])
        );
    }
    say!("steps");
    for s in job["steps"].as_array().cloned().unwrap_or_default() {
        let expected = s["expected_objects"]
            .as_u64()
            .map(|e| format!("{}/{e}", s["progress_done"]))
            .unwrap_or_else(|| s["progress_done"].to_string());
        say!(
            "  {:<16} {:<13} {:<16} {:>12}  attempts {}",
            text(&s["id"]),
            text(&s["kind"]),
            text(&s["status"]),
            expected,
            s["attempts"]
        );
    }
    let errors = job["errors"].as_array().cloned().unwrap_or_default();
    if !errors.is_empty() {
        say!("errors");
        for e in errors {
            say!(
                "  {} {} {}: {}",
                text(&e["phase"]),
                e["step"].as_str().unwrap_or(""),
                text(&e["kind"]),
                text(&e["message"])
            );
            for r in e["recovery"].as_array().into_iter().flatten() {
                say!(
                    "    try {}: {}",
                    text(&r["action"]),
                    text(&r["description"])
                );
            }
        }
    }
    if job["rollback_available"] == true {
        say!(
            "rollback is available: plover rollback {}",
            text(&job["id"])
        );
    }
}

//! The `plover` client commands against a live server, judged by output and exit status.

use super::common::{ADMIN, Server, plugin_dir};
use std::process::{Command, Output};

fn plover(s: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plover"))
        .args(args)
        .env("PLOVER_SERVER", &s.url)
        .env("PLOVER_TOKEN", ADMIN)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn plan(s: &Server, steps: &str) -> String {
    let params = format!(r#"{{"steps": {steps}}}"#);
    let out = plover(
        s,
        &[
            "plan",
            "--handler",
            "stepper@^0.1",
            "--params",
            &params,
            "--grant",
            "data=data",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let first = stdout.lines().next().unwrap();
    assert!(first.starts_with("migration "), "{stdout}");
    first.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn run_follow_shows_progress_logs_and_the_outcome() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start(data.path(), plugins.path());
    let id = plan(
        &s,
        r#"[{"id": "a", "batches": 30, "batch_ms": 5}, {"id": "b", "after": ["a"]}]"#,
    );

    let out = plover(&s, &["run", &id, "--follow"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("state: executing"), "{all}");
    assert!(
        all.contains("step a completed: step a done after 1 attempt(s)"),
        "{all}"
    );
    assert!(all.contains("[debug] step a finished batch 29"), "{all}");
    assert!(
        all.contains("outcome: completed (30 objects completed, 0 failed"),
        "{all}"
    );

    let ls = plover(&s, &["ls", "--status", "completed"]);
    assert!(text(&ls).contains(&id));
    let logs = plover(&s, &["logs", &id]);
    assert!(text(&logs).contains("step a finished batch 0"));
}

#[test]
fn run_follow_exits_non_zero_when_the_job_does_not_complete() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start(data.path(), plugins.path());
    let id = plan(
        &s,
        r#"[{"id": "a"}, {"id": "b", "after": ["a"], "fail": "always"}]"#,
    );
    let out = plover(&s, &["run", &id, "--follow"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("outcome: rolled-back"), "{all}");
    assert!(
        all.contains("error: execute step-failed: step b was told to fail"),
        "{all}"
    );
}

#[test]
fn client_errors_exit_with_status_two_and_a_message() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start(data.path(), plugins.path());
    let out = plover(&s, &["status", "no-such-id"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("404 Not Found: no migration with id 'no-such-id'"),
        "{}",
        text(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_plover"))
        .args(["ls"])
        .env("PLOVER_SERVER", &s.url)
        .env_remove("PLOVER_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("401 Unauthorized"), "{}", text(&out));
    let out = plover(&s, &["plan", "--handler", "stepper", "--params", "{nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--params"), "{}", text(&out));
}

#[test]
fn watch_follows_a_running_job_and_status_reads_like_a_report() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start(data.path(), plugins.path());
    let id = plan(&s, r#"[{"id": "a", "batches": 60, "batch_ms": 10}]"#);
    let out = plover(&s, &["run", &id]);
    assert!(out.status.success(), "{}", text(&out));
    s.wait_for(&id, |j| j["completed_objects"].as_u64().unwrap() > 0);

    // Running already: `run --follow` follows it rather than failing, and so does `watch`.
    let again = plover(&s, &["run", &id, "--follow"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("running already; following it"),
        "{}",
        text(&again)
    );
    let watched = plover(&s, &["watch", &id]);
    assert!(watched.status.success(), "{}", text(&watched));
    assert!(
        text(&watched).contains("outcome: completed (60 objects completed"),
        "{}",
        text(&watched)
    );

    let status = plover(&s, &["status", &id]);
    let report = text(&status);
    assert!(status.status.success(), "{report}");
    assert!(report.contains("status    completed  100.0%"), "{report}");
    assert!(
        report.contains("objects   60 completed, 0 failed, 0 skipped of 60"),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.trim_start().starts_with("a ") && l.contains("completed")),
        "{report}"
    );
    let json = plover(&s, &["status", &id, "--json"]);
    let snapshot: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(snapshot["status"], "completed");

    // Rollback and wait for its outcome.
    let rolled = plover(&s, &["rollback", &id, "--wait"]);
    assert!(rolled.status.success(), "{}", text(&rolled));
    assert!(
        text(&rolled).contains("outcome: rolled-back"),
        "{}",
        text(&rolled)
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start(data.path(), plugins.path());
    let id = plan(&s, r#"[{"id": "a", "batches": 900, "batch_ms": 0}]"#);
    plover(&s, &["run", &id]);
    s.wait_for(&id, |j| j["status"] == "completed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_plover"))
        .args(["logs", &id])
        .env("PLOVER_SERVER", &s.url)
        .env("PLOVER_TOKEN", ADMIN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Like `| head -1`: read a little, then close the pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

#[test]
fn retry_objects_reruns_a_partial_jobs_failures_and_status_shows_recovery_actions() {
    use super::contract_0_2::{import, upload_tolerant_copy};
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start(data.path(), plugins.path());
    upload_tolerant_copy(&s);
    import(&s, "cli-src", &[("a", "1"), ("b", "bad")]);
    let job = |parameters: serde_json::Value| {
        s.create(&serde_json::json!({
            "handler": "contract-v0-2-0", "parameters": parameters,
            "grants": { "source": "cli-src", "target": "cli-dst" },
            "options": { "auto_rollback": false },
        }))
    };
    let strict = job(serde_json::json!({ "tolerate": false }));
    let out = plover(&s, &["run", &strict, "--follow"]);
    let followed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{followed}");
    assert!(
        followed.contains("try fix-source: correct the values"),
        "{followed}"
    );
    let report = text(&plover(&s, &["status", &strict]));
    assert!(
        report.contains("    try rollback: roll back what was copied"),
        "{report}"
    );

    let id = job(serde_json::json!({}));
    let out = plover(&s, &["run", &id, "--follow"]);
    let followed = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "partial is not completed: {followed}"
    );
    assert!(followed.contains("outcome: partial"), "{followed}");
    let refused = plover(&s, &["retry-objects", &id, "--step", "nope"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    import(&s, "cli-src", &[("b", "2")]);
    let out = plover(&s, &["retry-objects", &id, "--wait"]);
    let followed = text(&out);
    assert!(out.status.success(), "{followed}");
    assert!(
        followed.contains("outcome: completed (2 objects completed, 0 failed"),
        "{followed}"
    );
}

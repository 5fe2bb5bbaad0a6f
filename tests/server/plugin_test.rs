//! `plover plugin test`, the binary as a plugin author runs it: no server, real components,
//! seed files, a real Redis connection from a configuration file, judged by report and exit
//! status (0 passed, 1 a check failed, 2 it could not run).

use super::common::run_plover;
use plover_tests::artifacts;
use plover_tests::services::{REDIS_URL, RedisPrefix};
use std::path::Path;

struct Checked {
    code: i32,
    report: String,
}

fn plugin_test(data_dir: &Path, args: &[&str]) -> Checked {
    let args = [&["plugin", "test"][..], args].concat();
    let data_dir = data_dir.to_string_lossy();
    let (code, report) = run_plover(&args, None, &[("PLOVER_DATA_DIR", &data_dir)]);
    Checked { code, report }
}

/// `n` keys `user/0000`… as JSON Lines.
fn seed_file(dir: &Path, n: usize) -> String {
    let path = dir.join("source.jsonl");
    let lines: String = (0..n)
        .map(|i| format!("{{\"key\": \"user/{i:04}\", \"value\": {{\"n\": {i}}}}}\n"))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn kv_copy_passes_its_whole_lifecycle_and_a_crash_from_the_shared_cache() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("source={}", seed_file(dir.path(), 300));
    let args = [
        artifacts::KV_COPY,
        "--bucket",
        &source,
        "--bucket",
        "target",
        "--params",
        r#"{"prefix": "user/"}"#,
        "--options",
        r#"{"batch_size": 50}"#,
        "--crash-at",
        "3",
    ];
    let first = plugin_test(dir.path(), &args);
    assert_eq!(first.code, 0, "{}", first.report);
    for expected in [
        "compiled (and cached)",
        "ok   validate",
        "nothing was written",
        "300 objects (0 failed), 6 checkpoints",
        "every bucket is as it was seeded",
        "crashed after checkpoint 3, resumed from it",
        "resuming copy after 150 keys",
        "declared: source (key-value, read), target (key-value, read-write)",
        "PASS: 15 checks",
    ] {
        assert!(
            first.report.contains(expected),
            "{expected:?} in\n{}",
            first.report
        );
    }
    let second = plugin_test(dir.path(), &args);
    assert_eq!(second.code, 0, "{}", second.report);
    assert!(
        second.report.contains("loaded from the compiled cache"),
        "{}",
        second.report
    );
}

#[test]
fn a_handler_that_does_not_resume_from_its_checkpoint_fails_the_crash_check() {
    let dir = tempfile::tempdir().unwrap();
    let params = r#"{"steps": [{"id": "a", "batches": 6, "batch_ms": 1, "per_batch": 2, "ignore_checkpoint": true}]}"#;
    let checked = plugin_test(
        dir.path(),
        &[
            artifacts::STEPPER,
            "--bucket",
            "data",
            "--params",
            params,
            "--crash-at",
            "2",
        ],
    );
    assert_eq!(checked.code, 1, "{}", checked.report);
    assert!(
        checked.report.contains("FAIL crash and resume")
            && checked
                .report
                .contains("object results differ: 12 in the uninterrupted run, 16 after the crash"),
        "{}",
        checked.report
    );
    assert!(checked.report.contains("FAIL: 1 of"), "{}", checked.report);

    // The same handler, asked to crash past its last checkpoint, says why it could not.
    let checked = plugin_test(
        dir.path(),
        &[
            artifacts::STEPPER,
            "--bucket",
            "data",
            "--params",
            params,
            "--crash-at",
            "99",
        ],
    );
    assert_eq!(checked.code, 1, "{}", checked.report);
    assert!(
        checked.report.contains("saved only 6 checkpoints"),
        "{}",
        checked.report
    );
}

#[test]
fn failing_steps_and_rollbacks_are_reported_with_the_handlers_message() {
    let dir = tempfile::tempdir().unwrap();
    let failing = plugin_test(
        dir.path(),
        &[
            artifacts::STEPPER,
            "--bucket",
            "data",
            "--params",
            r#"{"steps": [{"id": "a"}, {"id": "b", "after": ["a"], "fail": "always"}]}"#,
        ],
    );
    assert_eq!(failing.code, 1, "{}", failing.report);
    assert!(
        failing.report.contains("ok   execute a"),
        "{}",
        failing.report
    );
    assert!(
        failing.report.contains("FAIL execute b")
            && failing.report.contains("step b was told to fail"),
        "{}",
        failing.report
    );

    let bad_rollback = plugin_test(
        dir.path(),
        &[
            artifacts::STEPPER,
            "--bucket",
            "data",
            "--params",
            r#"{"steps": [{"id": "a", "fail_rollback": true}]}"#,
        ],
    );
    assert_eq!(bad_rollback.code, 1, "{}", bad_rollback.report);
    assert!(
        bad_rollback.report.contains("FAIL rollback a")
            && bad_rollback
                .report
                .contains("rollback of a was told to fail"),
        "{}",
        bad_rollback.report
    );

    let panicking = plugin_test(
        dir.path(),
        &[
            artifacts::MISBEHAVE,
            "--bucket",
            "data",
            "--params",
            r#"{"mode": "panic"}"#,
        ],
    );
    assert_eq!(panicking.code, 1, "{}", panicking.report);
    assert!(
        panicking.report.contains("FAIL plan")
            && panicking
                .report
                .contains("misbehave was told to panic during plan"),
        "{}",
        panicking.report
    );
}

#[test]
fn what_cannot_be_checked_is_refused_with_exit_status_2_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = plugin_test(dir.path(), &["/nonexistent/handler.wasm"]);
    assert_eq!(missing.code, 2, "{}", missing.report);
    assert!(
        missing.report.contains("/nonexistent/handler.wasm"),
        "{}",
        missing.report
    );

    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let refused = plugin_test(dir.path(), &[not_wasm.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{}", refused.report);
    assert!(
        refused.report.contains("not a WebAssembly"),
        "{}",
        refused.report
    );

    let seed = dir.path().join("bad.jsonl");
    std::fs::write(&seed, "{\"key\": \"a\", \"value\": 1}\n{\"value\": 2}\n").unwrap();
    let bucket = format!("source={}", seed.display());
    let bad_seed = plugin_test(dir.path(), &[artifacts::KV_COPY, "--bucket", &bucket]);
    assert_eq!(bad_seed.code, 2, "{}", bad_seed.report);
    assert!(
        bad_seed.report.contains("bad.jsonl: line 2"),
        "{}",
        bad_seed.report
    );

    let unknown = plugin_test(
        dir.path(),
        &[artifacts::KV_COPY, "--grant", "target=nowhere"],
    );
    assert_eq!(unknown.code, 2, "{}", unknown.report);
    assert!(
        unknown.report.contains("no connection named 'nowhere'"),
        "{}",
        unknown.report
    );

    let wrong_kind = plugin_test(dir.path(), &[artifacts::KV_COPY, "--kind", "schema"]);
    assert_eq!(wrong_kind.code, 1, "{}", wrong_kind.report);
    assert!(
        wrong_kind.report.contains("not \"schema\""),
        "{}",
        wrong_kind.report
    );
}

#[test]
fn a_real_redis_connection_from_the_configuration_can_be_granted() {
    let dir = tempfile::tempdir().unwrap();
    let target = RedisPrefix::new("plugin-test");
    let config = dir.path().join("plover.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[connections.sessions-new]\ntype = \"redis\"\nurl = {REDIS_URL:?}\nkey_prefix = {:?}\n",
            dir.path().join("data"),
            target.prefix
        ),
    )
    .unwrap();
    let source = format!("source={}", seed_file(dir.path(), 40));
    let checked = plugin_test(
        dir.path(),
        &[
            artifacts::KV_COPY,
            "--config",
            config.to_str().unwrap(),
            "--bucket",
            &source,
            "--grant",
            "target=sessions-new",
            "--params",
            r#"{"prefix": "user/"}"#,
        ],
    );
    assert_eq!(checked.code, 0, "{}", checked.report);
    // verify read the 40 keys back from Redis; rollback then deleted them there.
    assert!(
        checked.report.contains("verified 40 keys"),
        "{}",
        checked.report
    );
    assert!(
        checked.report.contains("deleted 40 keys"),
        "{}",
        checked.report
    );
    assert_eq!(target.keys(), Vec::<String>::new());
}

#[test]
fn a_partial_step_has_its_failed_objects_retried_and_queue_steps_are_left_to_workers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.jsonl");
    std::fs::write(
        &path,
        "{\"key\": \"s/1\", \"value\": {\"a\": 1}}\n{\"key\": \"s/2\", \"value\": \"oops\"}\n",
    )
    .unwrap();
    let source = format!("source={}", path.display());
    let checked = plugin_test(
        dir.path(),
        &[
            artifacts::KV_COPY,
            "--bucket",
            &source,
            "--bucket",
            "target",
            "--params",
            r#"{"prefix": "s/", "set_fields": {"v": 2}, "on_bad_value": "record"}"#,
        ],
    );
    assert_eq!(checked.code, 0, "{}", checked.report);
    for expected in [
        "2 objects (1 failed), 1 checkpoint, ended partial: copied 1 keys, 1 bad values recorded as failed",
        "ok   retry failed objects of copy",
        "re-ran the 1 failed objects, one result each (1 still failed, partial): copied 0 of 1 keys again, 1 still bad",
        "every bucket is as it was seeded",
    ] {
        assert!(
            checked.report.contains(expected),
            "{expected:?} in:\n{}",
            checked.report
        );
    }

    let queued = plugin_test(
        dir.path(),
        &[
            artifacts::WORKER_PLAN,
            "--params",
            r#"{"steps": [{"id": "load", "queue": "bulk-load"}]}"#,
        ],
    );
    assert_eq!(queued.code, 0, "{}", queued.report);
    assert!(
        queued
            .report
            .contains("1 steps: load (migration, queue bulk-load)")
            && queued
                .report
                .contains("runs on worker queue 'bulk-load': a worker executes it")
            && queued
                .report
                .contains("not compared with the seed: step load runs on a worker queue"),
        "{}",
        queued.report
    );
}

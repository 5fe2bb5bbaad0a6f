//! Handlers written in Python with the Python SDK (`sdk/python`), built by componentize-py:
//! the bundled json-reshape through its whole lifecycle and a crash, and how Python failures
//! (uncaught exceptions, contract errors, print()) reach the operator. They run through the
//! real binary's `plover plugin test`, sharing one compiled-plugin cache (an 18 MB component
//! takes 15-30 s to compile the first time).

use super::common::run_plover;
use plover_tests::artifacts;
use std::path::{Path, PathBuf};

/// A data directory shared by these tests, for its compiled-plugin cache.
fn shared_data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-handlers")
}

fn plugin_test(args: &[&str], cwd: &Path) -> (i32, String) {
    let args = [&["plugin", "test"][..], args].concat();
    let data = shared_data_dir();
    run_plover(
        &args,
        Some(cwd),
        &[("PLOVER_DATA_DIR", &data.to_string_lossy())],
    )
}

fn documents(dir: &Path, broken: &[usize]) {
    let lines: String = (0..40)
        .map(|i| {
            if broken.contains(&i) {
                format!("{{\"key\": \"doc/{i:03}\", \"value\": \"not json {{\"}}\n")
            } else {
                format!(
                    "{{\"key\": \"doc/{i:03}\", \"value\": {{\"uid\": {i}, \"legacy\": true}}}}\n"
                )
            }
        })
        .collect();
    std::fs::write(dir.join("docs.jsonl"), lines).unwrap();
}

const RESHAPE: &str = r#"{"prefix": "doc/", "rename": {"uid": "id"}, "drop": ["legacy"], "defaults": {"v": 2}, "require": ["id"]}"#;

#[test]
fn json_reshape_runs_its_lifecycle_and_resumes_after_a_crash_exactly() {
    let dir = tempfile::tempdir().unwrap();
    documents(dir.path(), &[]);
    let (code, report) = plugin_test(
        &[
            artifacts::JSON_RESHAPE,
            "--bucket",
            "source=docs.jsonl",
            "--bucket",
            "target",
            "--params",
            RESHAPE,
            "--options",
            r#"{"batch_size": 10}"#,
            "--crash-at",
            "2",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{report}");
    for expected in [
        "json-reshape 0.1.0 (contract 0.2.0",
        "40 objects (0 failed), 4 checkpoints: reshaped 40 documents",
        "verified 40 documents",
        "reshape resuming after doc/019",
        "crashed after checkpoint 2, resumed from it",
        "restored 0 documents, deleted 40",
        "every bucket is as it was seeded",
        "declared: source (key-value, read), target (key-value, read-write)",
        "PASS: 15 checks",
    ] {
        assert!(report.contains(expected), "{expected:?} in\n{report}");
    }
}

#[test]
fn json_reshape_names_the_documents_its_dry_run_would_break() {
    let dir = tempfile::tempdir().unwrap();
    documents(dir.path(), &[3, 17]);
    let (code, report) = plugin_test(
        &[
            artifacts::JSON_RESHAPE,
            "--bucket",
            "source=docs.jsonl",
            "--bucket",
            "target",
            "--params",
            RESHAPE,
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("FAIL validate")
            && report.contains("doc/003: not JSON")
            && report.contains("doc/017: not JSON"),
        "{report}"
    );
}

#[test]
fn an_uncaught_python_exception_reaches_the_error_with_its_type_message_and_traceback() {
    let dir = tempfile::tempdir().unwrap();
    let (code, report) = plugin_test(
        &[artifacts::PYTHON_PROBE, "--params", r#"{"mode": "raise"}"#],
        dir.path(),
    );
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("FAIL plan") && report.contains("uncaught KeyError: 'missing'"),
        "{report}"
    );
    // The traceback, line by line in the log, down to the handler's own frame.
    assert!(report.contains("in explode"), "{report}");
    assert!(
        report.contains("Traceback (most recent call last):"),
        "{report}"
    );
}

#[test]
fn contract_errors_bad_parameters_and_print_reach_the_operator_as_python_wrote_them() {
    let dir = tempfile::tempdir().unwrap();
    let (code, report) = plugin_test(
        &[artifacts::PYTHON_PROBE, "--params", r#"{"mode": "fail"}"#],
        dir.path(),
    );
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("the handler returned StepFailed: the probe was told to fail"),
        "{report}"
    );

    let (code, report) = plugin_test(
        &[
            artifacts::PYTHON_PROBE,
            "--params",
            r#"{"mode": "missing"}"#,
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("InvalidSpec: parameter 'absent' is required"),
        "{report}"
    );

    let (code, report) = plugin_test(
        &[artifacts::PYTHON_PROBE, "--params", r#"{"mode": "print"}"#],
        dir.path(),
    );
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("[stdout] hello from print()"), "{report}");
    assert!(report.contains("[stderr] to stderr"), "{report}");
    assert!(report.contains("planned in mode print"), "{report}");
}

#[test]
fn the_python_sdk_speaks_0_2_estimates_partial_steps_retried_objects_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (code, report) = plugin_test(
        &[
            artifacts::PYTHON_PROBE,
            "--params",
            r#"{"mode": "partial"}"#,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{report}");
    for expected in [
        "python-probe 0.1.0 (contract 0.2.0",
        "1 steps: only (migration, ~30 ms); ~40 ms in all",
        "2 objects (1 failed), 0 checkpoints, ended partial: 1 of 2 done",
        "ok   retry failed objects of only",
        "re-ran the 1 failed objects, one result each (0 still failed): redid b",
    ] {
        assert!(report.contains(expected), "{expected:?} in:\n{report}");
    }

    // A handler that ends partial without overriding execute_objects refuses the retry the
    // way the SDK does by default, saying what to do instead.
    let (code, report) = plugin_test(
        &[
            artifacts::PYTHON_PROBE,
            "--params",
            r#"{"mode": "partial", "retry": false}"#,
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("FAIL retry failed objects of only")
            && report.contains("cannot re-run single objects of step 'only'")
            && report.contains("(what to do: retry-step: "),
        "{report}"
    );

    let (code, report) = plugin_test(
        &[
            artifacts::PYTHON_PROBE,
            "--params",
            r#"{"mode": "recover"}"#,
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(
            "StepFailed: the probe needs a grant (what to do: grant-binding: grant the job a bucket named 'target')"
        ),
        "{report}"
    );
}

//! The API against its own OpenAPI document, judged by outside tools: the document passes a
//! real OpenAPI validator (openapi-spec-validator), and a property-based fuzzer (schemathesis,
//! seeded and bounded) finds no server error and no answer that the document does not allow
//! (status, content type, headers, body schema), while every malformed request is refused.
//! Both tools are installed by `scripts/setup.sh` into `target/py-tools`.

use super::common::{ADMIN, Server, plugin_dir};
use std::path::PathBuf;
use std::process::Command;

fn tool(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/py-tools/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh --services (scripts/test.sh does), which installs it",
        path.display()
    );
    path
}

#[test]
fn the_document_is_valid_and_fuzzing_finds_no_answer_it_does_not_allow() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start(data.path(), plugins.path());
    let work = tempfile::tempdir().unwrap();

    let doc = s
        .http
        .get(s.api("/openapi.json"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let doc_path = work.path().join("openapi.json");
    std::fs::write(&doc_path, &doc).unwrap();
    let validated = Command::new(tool("python"))
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')",
        ])
        .arg(&doc_path)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "the OpenAPI document does not validate:\n{}",
        String::from_utf8_lossy(&validated.stderr)
    );

    let fuzz = Command::new(tool("schemathesis"))
        .current_dir(work.path())
        .args(["run", &s.api("/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        // Every check but one: "a request the schema allows must be accepted" cannot hold
        // for semantic refusals (an unknown plugin, a job in the wrong state).
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // Random bytes as a plugin upload say nothing new (the loader's refusals have their
        // own tests) and crash the fuzzer's generator for binary bodies.
        .args(["--exclude-operation-id", "upload_plugin"])
        // The live stream of every job takes no parameters and never ends: each example
        // would only wait out the fuzzer's read timeout (five minutes in all). Its answers
        // are checked by the SSE tests.
        .args(["--exclude-operation-id", "all_events"])
        // The coverage phase's own generator reports "inconsistent results" under load (a
        // flake of the tool, not of the server); fuzzing and stateful sequences remain.
        .args(["--phases", "examples,fuzzing,stateful"])
        .args([
            "--seed",
            "20261125",
            "--max-examples",
            "30",
            "--workers",
            "1",
        ])
        .args(["--generation-database", "none", "--no-color"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&fuzz.stdout);
    assert!(
        fuzz.status.success(),
        "schemathesis found answers the document does not allow:\n{report}\n{}",
        String::from_utf8_lossy(&fuzz.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}

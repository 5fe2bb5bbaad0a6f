//! `plover plugin new`: the project it writes builds (Rust: for wasm32-wasip2, offline, against
//! this checkout's SDK; Python: with componentize-py) and passes `plover plugin test`, crash
//! included, as its README says.

use super::common::run_plover;
use std::path::Path;
use std::process::Command;

fn plover(args: &[&str], dir: &Path) -> (i32, String) {
    let data = dir.join("data");
    run_plover(
        args,
        Some(dir),
        &[("PLOVER_DATA_DIR", &data.to_string_lossy())],
    )
}

#[test]
fn a_new_rust_handler_builds_and_passes_its_lifecycle_check() {
    let dir = tempfile::tempdir().unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    let (code, out) = plover(
        &[
            "plugin",
            "new",
            "session-upcase",
            "--sdk-path",
            sdk.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    let project = dir.path().join("session-upcase");
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains("plover plugin test target/wasm32-wasip2/release/session_upcase.wasm"));

    // Offline: the SDK's dependencies are those of this workspace, already fetched.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffolded");
    let build = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--offline",
            "--target",
            "wasm32-wasip2",
        ])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/session_upcase.wasm");
    let (code, report) = plover(
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--bucket",
            "source=seed/source.jsonl",
            "--bucket",
            "target",
            "--params",
            r#"{"prefix": "user/"}"#,
            "--options",
            r#"{"batch_size": 2}"#,
            "--crash-at",
            "2",
        ],
        &project,
    );
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("copied 5 keys")
            && report
                .contains("declared: source (key-value, read), target (key-value, read-write)")
            && report.contains("PASS"),
        "{report}"
    );
}

/// The declare step the Python project's README gives.
const DECLARE_PYTHON: &str =
    "plover plugin declare py_upcase.wasm --binding source=kv:read --binding target=kv:read-write";

#[test]
fn bad_names_and_existing_folders_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // Without --sdk-path a project depends on the SDK release of this checkout.
    let (code, out) = plover(&["plugin", "new", "from-crates-io"], dir.path());
    assert_eq!(code, 0, "{out}");
    let sdk_manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/Cargo.toml"))
            .unwrap();
    let version = sdk_manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap();
    let manifest = std::fs::read_to_string(dir.path().join("from-crates-io/Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!("plover-sdk = {{ version = {version} }}")),
        "{manifest}"
    );

    let (code, out) = plover(&["plugin", "new", "Bad_Name"], dir.path());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not a handler name"), "{out}");

    std::fs::create_dir(dir.path().join("taken")).unwrap();
    std::fs::write(dir.path().join("taken/keep.txt"), "mine").unwrap();
    let (code, out) = plover(&["plugin", "new", "taken"], dir.path());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("exists and is not empty"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("taken/keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn a_new_python_handler_builds_with_componentize_py_and_passes_its_lifecycle_check() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = plover(
        &["plugin", "new", "py-upcase", "--lang", "python"],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    let project = dir.path().join("py-upcase");
    for file in [
        "app.py",
        "plover_sdk/__init__.py",
        "wit/handler.wit",
        "seed/source.jsonl",
    ] {
        assert!(project.join(file).exists(), "{file}");
    }
    // The build command its README gives, with the componentize-py scripts/setup.sh installs.
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains(
        "componentize-py -d wit -w handler-plugin componentize app -p . -o py_upcase.wasm"
    ));
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-tools/bin/componentize-py");
    let build = Command::new(tool)
        .args([
            "-d",
            "wit",
            "-w",
            "handler-plugin",
            "componentize",
            "app",
            "-p",
            ".",
            "-o",
            "py_upcase.wasm",
        ])
        .current_dir(&project)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    // Its bindings, declared as the README says.
    assert!(readme.contains(DECLARE_PYTHON), "{readme}");
    let declare: Vec<&str> = DECLARE_PYTHON.split_whitespace().skip(1).collect();
    let (code, out) = plover(&declare, &project);
    assert_eq!(code, 0, "{out}");
    let (code, report) = plover(
        &[
            "plugin",
            "test",
            "py_upcase.wasm",
            "--bucket",
            "source=seed/source.jsonl",
            "--bucket",
            "target",
            "--params",
            r#"{"prefix": "user/"}"#,
            "--options",
            r#"{"batch_size": 2}"#,
            "--crash-at",
            "2",
        ],
        &project,
    );
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("copied 5 keys")
            && report
                .contains("declared: source (key-value, read), target (key-value, read-write)")
            && report.contains("PASS: 15 checks"),
        "{report}"
    );
}

#[test]
fn an_sdk_path_without_a_crate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = plover(
        &[
            "plugin",
            "new",
            "nowhere",
            "--sdk-path",
            dir.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no Cargo.toml there"), "{out}");
    assert!(!dir.path().join("nowhere").exists(), "nothing written");
}

//! What a plugin author's `cargo test` pulls in: `plover-host` with `default-features = false,
//! features = ["testing"]` must leave out the HTTP server, the CLI, the console and the job
//! stores. (`.ci/run` also lints the crate built that way, so it keeps compiling.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The crates `plover-host` depends on, directly (`direct`) or through anything.
fn normal_dependencies(features: &[&str], direct: bool) -> BTreeSet<String> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "plover-host",
            "-e",
            "normal",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .args(features)
        .args(if direct {
            &["--depth", "1"][..]
        } else {
            &[][..]
        })
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_testing_feature_leaves_the_server_and_its_dependencies_out() {
    let server_only = [
        "axum",
        "tower-http",
        "clap",
        "indicatif",
        "refinery",
        "zstd",
        "tracing-subscriber",
    ];
    // Direct dependencies only: reqwest itself pulls in tower-http, which is not the server's.
    let full = normal_dependencies(&[], true);
    for name in server_only {
        assert!(full.contains(name), "the server depends on {name}");
    }
    let testing_flags = ["--no-default-features", "--features", "testing"];
    let testing_direct = normal_dependencies(&testing_flags, true);
    for name in server_only {
        assert!(!testing_direct.contains(name), "testing pulls in {name}");
    }
    let testing = normal_dependencies(&testing_flags, false);
    assert!(
        !testing.contains("axum") && !testing.contains("refinery"),
        "nothing the connectors use brings in the HTTP server or the migrations"
    );
    let full = normal_dependencies(&[], false);
    for name in ["wasmtime", "redis", "postgres", "reqwest"] {
        assert!(
            testing.contains(name),
            "testing needs {name} (the runtime and the connectors)"
        );
    }
    assert!(
        testing.len() < full.len(),
        "{} crates with testing, {} with the server",
        testing.len(),
        full.len()
    );
}

//! Builds every guest (the bundled plugins and the test fixtures) from source for
//! wasm32-wasip2 and exposes each `.wasm` path as a constant in `plover_tests::artifacts`.
//! Tests and benchmarks therefore always run against freshly built components.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_WORKSPACES: [&str; 2] = ["plugins", "tests/fixtures"];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let target_dir = std::env::var_os("PLOVER_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("guests"));

    for watched in ["wit", "sdk/src", "sdk/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=PLOVER_GUEST_TARGET_DIR");

    let mut artifacts = vec![];
    for ws in GUEST_WORKSPACES {
        let dir = root.join(ws);
        watch_sources(&dir);
        build_guests(&dir, &target_dir);
    }
    let release = target_dir.join(TARGET).join("release");
    for entry in std::fs::read_dir(&release).expect("guest output directory") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let stem = path
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .to_uppercase()
                .replace('-', "_");
            artifacts.push(format!(
                "pub const {stem}: &str = {:?};\n",
                path.display().to_string()
            ));
        }
    }
    artifacts.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("artifacts.rs");
    std::fs::write(out, artifacts.concat()).unwrap();
}

/// Rerun when a guest's sources or manifests change (not when its output does).
fn watch_sources(workspace: &Path) {
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.toml").display()
    );
    for entry in std::fs::read_dir(workspace).unwrap() {
        let path = entry.unwrap().path();
        if path.join("Cargo.toml").exists() {
            for part in ["src", "Cargo.toml", "wit"] {
                if path.join(part).exists() {
                    println!("cargo:rerun-if-changed={}", path.join(part).display());
                }
            }
        }
    }
}

fn build_guests(workspace: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
    // The outer build's settings (flags, profile, target dir, jobserver) are not the guests'.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC_")
            || key == "RUSTFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    let output = cmd.output().expect("running cargo for the guests");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            "\nhint: install the guest target with `rustup target add wasm32-wasip2` (scripts/test.sh does this)"
        } else {
            ""
        };
        panic!(
            "building the guests in {} failed:\n{stderr}{hint}",
            workspace.display()
        );
    }
}

//! Builds every guest (the bundled plugins and the test fixtures) from source for
//! wasm32-wasip2 and exposes each `.wasm` path as a constant in `plover_tests::artifacts`.
//! Tests and benchmarks therefore always run against freshly built components. Python guests
//! (a folder with an `app.py`) are built with componentize-py against `wit/v0.2.0` and the
//! Python SDK (`sdk/python`), only when their sources changed (a build takes ~20 s).

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

    for watched in ["wit", "sdk/src", "sdk/wit", "sdk/Cargo.toml", "sdk/python"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=PLOVER_GUEST_TARGET_DIR");

    let mut artifacts = vec![];
    for ws in GUEST_WORKSPACES {
        let dir = root.join(ws);
        watch_sources(&dir);
        build_guests(&dir, &target_dir);
    }
    let python_out = target_dir.join("python");
    for ws in GUEST_WORKSPACES {
        build_python_guests(&root, &root.join(ws), &python_out);
    }
    let release = target_dir.join(TARGET).join("release");
    let outputs = std::fs::read_dir(&release)
        .expect("guest output directory")
        .chain(std::fs::read_dir(&python_out).expect("python guest output directory"));
    for entry in outputs {
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

/// Build each folder of `workspace` that holds an `app.py` into `out/<name>.wasm`, unless the
/// component is newer than every source it is made of.
fn build_python_guests(root: &Path, workspace: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    let sdk = root.join("sdk/python");
    let tool = root.join("target/py-tools/bin/componentize-py");
    for entry in std::fs::read_dir(workspace).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("app.py").exists() {
            continue;
        }
        println!("cargo:rerun-if-changed={}", dir.display());
        let name = dir.file_name().unwrap().to_string_lossy().replace('-', "_");
        let wasm = out.join(format!("{name}.wasm"));
        let built = std::fs::metadata(&wasm).and_then(|m| m.modified()).ok();
        let newest = [dir.as_path(), sdk.as_path(), &root.join("wit/v0.2.0")]
            .iter()
            .filter_map(|d| newest_file(d))
            .max();
        if built.is_some() && newest.is_some_and(|n| Some(n) <= built) {
            continue;
        }
        let output = Command::new(&tool)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args(["-d"])
            .arg(root.join("wit/v0.2.0"))
            .args(["-w", "handler-plugin", "componentize", "app", "-p"])
            .arg(&dir)
            .arg("-p")
            .arg(&sdk)
            .arg("-o")
            .arg(&wasm)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "running {}: {e}\nhint: scripts/setup.sh --services installs componentize-py (scripts/test.sh runs it)",
                    tool.display()
                )
            });
        if !output.status.success() {
            let _ = std::fs::remove_file(&wasm);
            panic!(
                "building the Python guest {} failed:\n{}{}",
                dir.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // What `plover plugin declare` does for a partner's Python plugin, done here because the
        // host is not built yet: the host checks the declaration when it loads the component.
        let declared = dir.join("bindings.json");
        if declared.exists() {
            let payload = std::fs::read(&declared).unwrap();
            let mut component = std::fs::read(&wasm).unwrap();
            append_custom_section(&mut component, "plover:bindings", &payload);
            std::fs::write(&wasm, component).unwrap();
        }
    }
}

/// Append a top-level custom section (id 0: name, then payload) to a component binary; custom
/// sections may come anywhere, so appending keeps it valid.
fn append_custom_section(wasm: &mut Vec<u8>, name: &str, payload: &[u8]) {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    wasm.push(0);
    leb128(body.len(), wasm);
    wasm.extend_from_slice(&body);
}

/// When the newest file under `dir` changed.
fn newest_file(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        let t = if path.is_dir() {
            newest_file(&path)
        } else {
            std::fs::metadata(&path).and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

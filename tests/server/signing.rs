//! Signed plugins end to end: keys and signatures made with the `plover` binary, a server
//! that requires them, and the matrix of signed, unsigned, foreign-signed and tampered
//! uploads; what was accepted is checked again after a restart.

use super::common::{ADMIN, Server, run_plover};
use plover_tests::artifacts;
use std::path::{Path, PathBuf};

fn plover(args: &[&str], server: Option<&Server>) -> (i32, String) {
    match server {
        Some(s) => run_plover(
            args,
            None,
            &[("PLOVER_SERVER", &s.url), ("PLOVER_TOKEN", ADMIN)],
        ),
        None => run_plover(args, None, &[]),
    }
}

/// A new key in `dir`: its file and the public key keygen printed.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.pem"));
    let (code, out) = plover(&["plugin", "keygen", "--out", key.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}");
    let public = out
        .lines()
        .find_map(|l| l.strip_prefix("public key (for trusted_keys): "))
        .unwrap_or_else(|| panic!("no public key in {out}"))
        .to_string();
    (key, public)
}

/// A copy of `component` in `dir`, signed with `key` when given.
fn component(dir: &Path, component: &str, name: &str, key: Option<&Path>) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(component, &path).unwrap();
    if let Some(key) = key {
        let (code, out) = plover(
            &[
                "plugin",
                "sign",
                path.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(code, 0, "{out}");
    }
    path
}

fn add(s: &Server, file: &Path) -> (i32, String) {
    plover(&["plugin", "add", file.to_str().unwrap()], Some(s))
}

#[test]
fn a_host_requiring_signatures_runs_only_plugins_signed_by_a_trusted_key() {
    let keys = tempfile::tempdir().unwrap();
    let (trusted, public) = keygen(keys.path(), "partner");
    let (foreign, _) = keygen(keys.path(), "stranger");
    let (code, out) = plover(
        &["plugin", "keygen", "--out", trusted.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 2, "an existing key is never overwritten: {out}");

    let data = tempfile::tempdir().unwrap();
    // No bundled plugins: the directory holds one unsigned component, refused at start-up.
    let plugins = tempfile::tempdir().unwrap();
    component(plugins.path(), artifacts::STEPPER, "stepper.wasm", None);
    let config = format!("require_signed = true\n[trusted_keys]\npartner = {public:?}\n");
    let s = Server::start_with_config(data.path(), plugins.path(), &config);
    let (_, listed) = s.get("/plugins", ADMIN);
    assert_eq!(
        listed,
        serde_json::json!([]),
        "the unsigned plugin from the directory did not load"
    );

    let uploads = tempfile::tempdir().unwrap();
    let unsigned = component(uploads.path(), artifacts::KV_COPY, "unsigned.wasm", None);
    let (code, out) = add(&s, &unsigned);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("not signed") && out.contains("require_signed"),
        "{out}"
    );

    let by_stranger = component(
        uploads.path(),
        artifacts::KV_COPY,
        "stranger.wasm",
        Some(&foreign),
    );
    let (code, out) = add(&s, &by_stranger);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("does not trust"), "{out}");

    // A valid signature of other bytes, put beside kv-copy.
    let other = component(
        uploads.path(),
        artifacts::CONFIG_UPGRADE,
        "other.wasm",
        Some(&trusted),
    );
    let tampered = component(uploads.path(), artifacts::KV_COPY, "tampered.wasm", None);
    std::fs::copy(
        other.with_extension("wasm.sig"),
        tampered.with_extension("wasm.sig"),
    )
    .unwrap();
    let (code, out) = add(&s, &tampered);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("changed after it was signed"), "{out}");

    let signed = component(
        uploads.path(),
        artifacts::KV_COPY,
        "kv_copy.wasm",
        Some(&trusted),
    );
    let (code, out) = add(&s, &signed);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed by partner"), "{out}");
    let (status, listed) = s.get("/plugins", ADMIN);
    assert_eq!(status, 200);
    let names: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["signed_by"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(names, [("kv-copy", "partner")]);

    // Kept with its signature, and checked again when the server starts.
    let (data_dir, plugins_dir) = s.kill();
    let s = Server::start_with_config(&data_dir, &plugins_dir, &config);
    let (_, listed) = s.get("/plugins", ADMIN);
    assert_eq!(listed[0]["signed_by"], "partner", "{listed}");
    drop(s);
    let s = Server::start_with_config(&data_dir, &plugins_dir, "require_signed = true\n");
    let (_, listed) = s.get("/plugins", ADMIN);
    assert_eq!(
        listed,
        serde_json::json!([]),
        "a key no longer trusted no longer runs: {listed}"
    );
}

#[test]
fn without_require_signed_unsigned_plugins_load_and_bad_signatures_are_still_refused() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keygen(keys.path(), "partner");
    let data = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let s = Server::start_with_config(
        data.path(),
        plugins.path(),
        &format!("[trusted_keys]\npartner = {public:?}\n"),
    );
    let uploads = tempfile::tempdir().unwrap();
    let unsigned = component(uploads.path(), artifacts::STEPPER, "stepper.wasm", None);
    let (code, out) = add(&s, &unsigned);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("signed by"), "{out}");

    let other = component(
        uploads.path(),
        artifacts::CONFIG_UPGRADE,
        "other.wasm",
        Some(&key),
    );
    let tampered = component(uploads.path(), artifacts::KV_COPY, "kv.wasm", None);
    std::fs::copy(
        other.with_extension("wasm.sig"),
        tampered.with_extension("wasm.sig"),
    )
    .unwrap();
    let (code, out) = add(&s, &tampered);
    assert_eq!(code, 2, "a signature that is there is checked: {out}");

    let resp = s
        .http
        .post(s.api("/plugins"))
        .bearer_auth(ADMIN)
        .header("plover-signature", "not base64!")
        .body(std::fs::read(&unsigned).unwrap())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("plover-signature header"));
}

#[test]
fn a_bad_trusted_key_stops_the_server_at_start_with_its_name() {
    let data = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let (status, stderr) = Server::start_failing_with_config(
        data.path(),
        plugins.path(),
        "[trusted_keys]\nbroken = \"AAAA\"\n",
    );
    assert!(!status.success());
    assert!(stderr.contains("trusted_keys.broken"), "{stderr}");
}

#[test]
fn signing_refuses_what_is_not_a_component_or_not_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "partner");
    let notes = dir.path().join("notes.wasm");
    std::fs::write(&notes, "hello").unwrap();
    let (code, out) = plover(
        &[
            "plugin",
            "sign",
            notes.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not a WebAssembly component"), "{out}");

    let plugin = component(dir.path(), artifacts::STEPPER, "stepper.wasm", None);
    let (code, out) = plover(
        &[
            "plugin",
            "sign",
            plugin.to_str().unwrap(),
            "--key",
            notes.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not an ed25519 private key"), "{out}");
    assert!(
        !plugin.with_extension("wasm.sig").exists(),
        "no signature written"
    );
}

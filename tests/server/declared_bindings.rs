//! Declared bindings through the real binary: the API and `plover plugin list` show what a
//! plugin declares, a migration granting an undeclared binding or a connection of another kind
//! is refused, and `plover plugin declare` writes a declaration into any component (or says why
//! it cannot).

use super::common::{ADMIN, Server, plugin_dir, run_plover};
use plover_host::runtime::declared::{BindingAccess, BindingKind, read_declared};
use plover_tests::artifacts;
use serde_json::json;

#[test]
fn a_declared_plugin_shows_its_bindings_and_gets_only_those_of_the_declared_kind() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let config = r#"
[connections.web]
type = "http"
allow = ["http://api.partner.example"]
"#;
    let server = Server::start_with_config(data.path(), plugins.path(), config);

    let (status, kv_copy) = server.get("/plugins/kv-copy/1.3.0", ADMIN);
    assert_eq!(status, 200);
    assert_eq!(
        kv_copy["bindings"],
        json!([
            { "name": "source", "kind": "kv", "access": "read" },
            { "name": "target", "kind": "kv", "access": "read-write" },
        ])
    );
    let (_, stepper) = server.get("/plugins/stepper/0.1.0", ADMIN);
    assert_eq!(
        stepper["bindings"],
        json!(null),
        "the stepper declares none"
    );

    let (status, refused) = server.post(
        "/migrations",
        ADMIN,
        &json!({
            "handler": "kv-copy",
            "parameters": { "prefix": "a/" },
            "grants": { "source": "s", "target": "t", "extra": "x" }
        }),
    );
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["code"], "undeclared-binding");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("'extra'") || message.contains(" extra "),
        "{message}"
    );
    assert!(message.contains("source (key-value, read)"), "{message}");

    let (status, refused) = server.post(
        "/migrations",
        ADMIN,
        &json!({
            "handler": "kv-copy",
            "parameters": { "prefix": "a/" },
            "grants": { "source": "s", "target": "web" }
        }),
    );
    assert_eq!(status, 422, "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("declares 'target' a key-value connection, but it is granted a HTTP one"),
        "{message}"
    );

    // Nothing was created by either refusal.
    let (_, list) = server.get("/migrations", ADMIN);
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");

    let (code, listed) = run_plover(
        &["plugin", "list"],
        None,
        &[("PLOVER_SERVER", &server.url), ("PLOVER_TOKEN", ADMIN)],
    );
    assert_eq!(code, 0, "{listed}");
    let line = listed.lines().find(|l| l.starts_with("kv-copy@")).unwrap();
    assert!(
        line.ends_with("bindings: source (kv, read), target (kv, read-write)"),
        "{line}"
    );
    let line = listed.lines().find(|l| l.starts_with("stepper@")).unwrap();
    assert!(line.ends_with("bindings: not declared"), "{line}");
}

#[test]
fn plover_plugin_declare_writes_a_declaration_or_refuses_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("stepper.wasm");
    std::fs::copy(artifacts::STEPPER, &component).unwrap();
    let path = component.to_str().unwrap();

    let (code, out) = run_plover(
        &[
            "plugin",
            "declare",
            path,
            "--binding",
            "data=kv:read-write:where the steps write",
            "--binding",
            "audit=sql:read",
        ],
        None,
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("declared 2 bindings"), "{out}");
    let declared = read_declared(&std::fs::read(&component).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(declared.len(), 2);
    assert_eq!(
        (
            declared[1].name.as_str(),
            declared[1].kind,
            declared[1].access
        ),
        ("audit", BindingKind::Sql, BindingAccess::Read)
    );
    assert_eq!(
        declared[0].description.as_deref(),
        Some("where the steps write")
    );

    let before = std::fs::read(&component).unwrap();
    for (args, says) in [
        (vec!["--binding", "data=kv:write"], "NAME=KIND:ACCESS"),
        (
            vec!["--binding", "a=kv:read", "--binding", "a=sql:read"],
            "declared twice",
        ),
    ] {
        let (code, out) = run_plover(
            &[&["plugin", "declare", path][..], &args].concat(),
            None,
            &[],
        );
        assert_eq!(code, 2, "{out}");
        assert!(out.contains(says), "{out}");
    }
    assert_eq!(std::fs::read(&component).unwrap(), before, "left as it was");

    // From a bindings file kept beside the source (what json-reshape does), plus a flag.
    let file = dir.path().join("bindings.json");
    std::fs::write(
        &file,
        r#"[{"name": "source", "kind": "kv", "access": "read", "description": "documents"}]"#,
    )
    .unwrap();
    let from = file.to_str().unwrap();
    let (code, out) = run_plover(
        &[
            "plugin",
            "declare",
            path,
            "--from",
            from,
            "--binding",
            "target=kv:read-write",
        ],
        None,
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let declared = read_declared(&std::fs::read(&component).unwrap())
        .unwrap()
        .unwrap();
    let names: Vec<_> = declared.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["source", "target"], "replaced, file first");
    assert_eq!(declared[0].access, BindingAccess::Read);

    let before = std::fs::read(&component).unwrap();
    std::fs::write(
        &file,
        r#"[{"name": "source", "kind": "kv", "acces": "read"}]"#,
    )
    .unwrap();
    let (code, out) = run_plover(&["plugin", "declare", path, "--from", from], None, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("bindings.json") && out.contains("unknown field `acces`"),
        "{out}"
    );
    assert_eq!(std::fs::read(&component).unwrap(), before, "left as it was");

    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let (code, out) = run_plover(
        &["plugin", "declare", not_wasm.to_str().unwrap()],
        None,
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a WebAssembly component"), "{out}");
}

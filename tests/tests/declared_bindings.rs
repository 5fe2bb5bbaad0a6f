//! Declared bindings in the component: what the Rust SDK's `declare_bindings!` writes survives
//! componentizing and is read at load; `declared::declare` (behind `plover plugin declare`)
//! adds one to any component, replaces an earlier one, and leaves the code alone; a malformed
//! declaration is refused at load; a binding declared read-only refuses writes.

use plover_host::model::{LogLevel, ObjectStatus};
use plover_host::runtime::declared::{
    self, BindingAccess, BindingKind, DeclaredBinding, read_declared,
};
use plover_host::runtime::{LoadError, PluginFailure, Runtime, RuntimeConfig};
use plover_host::testing::{HarnessError, TestHarness};
use plover_tests::artifacts;
use serde_json::json;

fn binding(name: &str, kind: BindingKind, access: BindingAccess) -> DeclaredBinding {
    DeclaredBinding {
        name: name.into(),
        kind,
        access,
        description: None,
    }
}

#[test]
fn the_sdk_macro_declares_kv_copys_bindings_in_the_component() {
    let bytes = std::fs::read(artifacts::KV_COPY).unwrap();
    let declared = read_declared(&bytes).unwrap().expect("kv-copy declares");
    assert_eq!(
        declared,
        [
            binding("source", BindingKind::Kv, BindingAccess::Read),
            binding("target", BindingKind::Kv, BindingAccess::ReadWrite),
        ]
    );
    let plugin = Runtime::new(RuntimeConfig::default())
        .unwrap()
        .load_bytes(&bytes)
        .unwrap();
    let summary = serde_json::to_value(plugin.summary()).unwrap();
    assert_eq!(
        summary["bindings"],
        json!([
            { "name": "source", "kind": "kv", "access": "read" },
            { "name": "target", "kind": "kv", "access": "read-write" },
        ])
    );
    let undeclared = read_declared(&std::fs::read(artifacts::STEPPER).unwrap()).unwrap();
    assert_eq!(undeclared, None, "the stepper declares nothing");
}

#[test]
fn declare_adds_or_replaces_a_declaration_and_the_plugin_still_runs() {
    let original = std::fs::read(artifacts::STEPPER).unwrap();
    let first = declared::declare(
        &original,
        &[binding("data", BindingKind::Kv, BindingAccess::ReadWrite)],
    )
    .unwrap();
    let second = declared::declare(
        &first,
        &[DeclaredBinding {
            description: Some("where the steps write".into()),
            ..binding("data", BindingKind::Kv, BindingAccess::Read)
        }],
    )
    .unwrap();
    let read = read_declared(&second).unwrap().unwrap();
    assert_eq!(read.len(), 1, "replaced, not added: {read:?}");
    assert_eq!(read[0].access, BindingAccess::Read);
    assert_eq!(
        read[0].description.as_deref(),
        Some("where the steps write")
    );
    assert!(second.len() < original.len() + 200);

    // Kv-copy's own (nested) declaration gives way to one added at the top.
    let kv_copy = std::fs::read(artifacts::KV_COPY).unwrap();
    let narrowed = declared::declare(
        &kv_copy,
        &[binding("source", BindingKind::Kv, BindingAccess::Read)],
    )
    .unwrap();
    assert_eq!(read_declared(&narrowed).unwrap().unwrap().len(), 1);

    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let plugin = rt.load_bytes(&second).unwrap();
    assert_eq!(plugin.name(), "stepper");
    assert_eq!(plugin.declared_bindings().unwrap().len(), 1);

    assert!(
        declared::declare(b"\0asm\x01\0\0\0", &[])
            .unwrap_err()
            .contains("core module")
    );
    assert!(declared::declare(&original[..original.len() / 2], &[]).is_err());
}

#[test]
fn a_malformed_declaration_is_refused_at_load_with_what_is_wrong() {
    let mut bytes = std::fs::read(artifacts::STEPPER).unwrap();
    // A custom section of that name holding something that is not a list of bindings.
    let data = br#"{"source": "kv"}"#;
    let name = declared::SECTION.as_bytes();
    let body_len = 1 + name.len() + data.len();
    bytes.push(0);
    bytes.push(body_len as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(data);
    let err = Runtime::new(RuntimeConfig::default())
        .unwrap()
        .load_bytes(&bytes)
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::BadInfo(m) if m.contains("not a list of bindings")),
        "{err}"
    );
}

#[test]
fn a_write_through_a_binding_declared_read_only_fails_the_call() {
    // kv-copy declares `target` read-write; declared read-only instead, its copy must fail.
    let kv_copy = std::fs::read(artifacts::KV_COPY).unwrap();
    let narrowed = declared::declare(
        &kv_copy,
        &[
            binding("source", BindingKind::Kv, BindingAccess::Read),
            binding("target", BindingKind::Kv, BindingAccess::Read),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv_copy_read_only.wasm");
    std::fs::write(&path, narrowed).unwrap();
    let mut h = TestHarness::load(&path).unwrap();
    h.bucket("source").insert("k/1", "one");
    let target = h.bucket("target");
    let spec = h.spec("kv-copy", json!({ "prefix": "k/" }));
    let plan = h.plan(&spec).unwrap();
    let err = h.execute(&spec, &plan.steps[0], None).unwrap_err();
    assert!(
        matches!(&err, HarnessError::Plugin(e) if matches!(e.cause, PluginFailure::WriteDenied { .. })),
        "{err:?}"
    );
    assert!(target.snapshot().is_empty(), "nothing was written");
    assert!(
        h.events
            .logs
            .lock()
            .unwrap()
            .iter()
            .any(|(level, line)| *level == LogLevel::Warning
                && line.contains("declares it read-only")),
    );
    assert!(
        h.events
            .objects
            .lock()
            .unwrap()
            .iter()
            .all(|o| o.status != ObjectStatus::Success)
    );
}

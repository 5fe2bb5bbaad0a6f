//! Loading plugins: identity (name, semver, sha256), several versions side by side resolved by
//! semver requirement, directory loading, and the precompiled cache.

use plover_host::runtime::{
    CacheOutcome, PluginRegistry, RegistryError, Runtime, RuntimeConfig, SandboxLimits,
};
use plover_tests::artifacts;
use std::sync::Arc;

/// The sha256 as coreutils computes it: an independent check of the host's hashing.
fn sha256sum(path: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).unwrap()
}

#[test]
fn plugin_identity_is_name_version_and_sha256_of_its_bytes() {
    let plugin = runtime().load_file(artifacts::KV_COPY.as_ref()).unwrap();
    assert_eq!(plugin.name(), "kv-copy");
    assert_eq!(plugin.version().to_string(), "1.3.0");
    assert_eq!(plugin.info().kinds, ["kv-copy", "session-store-move"]);
    assert_eq!(plugin.contract_version().to_string(), "0.2.0");
    assert_eq!(plugin.sha256(), sha256sum(artifacts::KV_COPY));
    let summary = serde_json::to_value(plugin.summary()).unwrap();
    assert_eq!(summary["limits"]["memory_bytes"], 256 << 20);
}

#[test]
fn versions_load_side_by_side_and_resolve_by_semver_requirement() {
    let rt = runtime();
    let registry = PluginRegistry::new();
    let old = registry
        .insert(rt.load_file(artifacts::PROBE.as_ref()).unwrap())
        .unwrap();
    let new = registry
        .insert(rt.load_file(artifacts::PROBE_NEXT.as_ref()).unwrap())
        .unwrap();
    assert_eq!(
        (old.version().to_string(), new.version().to_string()),
        ("0.1.0".into(), "0.2.0".into())
    );

    assert_eq!(
        registry.resolve("probe@^0.1").unwrap().sha256(),
        old.sha256()
    );
    assert_eq!(
        registry.resolve("probe@=0.1.0").unwrap().sha256(),
        old.sha256()
    );
    assert_eq!(
        registry.resolve("probe").unwrap().sha256(),
        new.sha256(),
        "no requirement picks the newest"
    );
    assert_eq!(
        registry.resolve("probe@>=0.1").unwrap().sha256(),
        new.sha256()
    );
    assert_eq!(
        registry.resolve("probe@^0.3").unwrap_err(),
        RegistryError::NoMatchingVersion {
            name: "probe".into(),
            requirement: "^0.3".into(),
            loaded: "0.1.0, 0.2.0".into()
        }
    );
    assert_eq!(
        registry.resolve("kv-copy").unwrap_err(),
        RegistryError::UnknownPlugin("kv-copy".into())
    );
    assert!(matches!(
        registry.resolve("probe@!!").unwrap_err(),
        RegistryError::BadRequirement(_)
    ));

    // Loading the same bytes again is idempotent.
    let again = registry
        .insert(rt.load_file(artifacts::PROBE.as_ref()).unwrap())
        .unwrap();
    assert!(Arc::ptr_eq(&again, &old));
    assert_eq!(registry.list().len(), 2);
    assert_eq!(
        registry
            .by_sha256(new.sha256())
            .unwrap()
            .version()
            .to_string(),
        "0.2.0"
    );

    registry.remove("probe", new.version()).unwrap();
    assert_eq!(registry.resolve("probe").unwrap().sha256(), old.sha256());
}

#[test]
fn loads_every_wasm_file_of_a_directory_and_reports_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(artifacts::KV_COPY, dir.path().join("kv-copy.wasm")).unwrap();
    std::fs::copy(
        artifacts::CONFIG_UPGRADE,
        dir.path().join("config-upgrade.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"garbage").unwrap();
    std::fs::write(
        dir.path().join("README.txt"),
        b"not a plugin, not looked at",
    )
    .unwrap();

    let results = runtime().load_dir(dir.path()).unwrap();
    let names: Vec<String> = results
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["broken.wasm", "config-upgrade.wasm", "kv-copy.wasm"]
    );
    assert!(
        results[0]
            .1
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not a WebAssembly binary"))
    );
    assert_eq!(results[1].1.as_ref().unwrap().name(), "config-upgrade");
    assert_eq!(results[2].1.as_ref().unwrap().name(), "kv-copy");
}

#[test]
fn missing_directory_is_a_clear_error() {
    let err = runtime()
        .load_dir("/nonexistent/plover-plugins".as_ref())
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/plover-plugins"),
        "{err}"
    );
}

#[test]
fn precompiled_cache_is_used_across_restarts_and_survives_corruption() {
    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let bytes = std::fs::read(artifacts::KV_COPY).unwrap();

    let first = Runtime::new(config.clone()).unwrap();
    let (plugin, report) = first.load_with(&bytes, SandboxLimits::default()).unwrap();
    assert_eq!(report.cache, CacheOutcome::Miss);
    let files: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(plugin.sha256()) && name.ends_with(".cwasm"),
        "{name}"
    );

    // A restart (a new engine with the same settings) loads from the cache.
    let second = Runtime::new(config.clone()).unwrap();
    let (cached, report) = second.load_with(&bytes, SandboxLimits::default()).unwrap();
    assert_eq!(report.cache, CacheOutcome::Hit);
    assert_eq!(cached.info(), plugin.info());

    // A corrupt artifact is recompiled, not trusted.
    std::fs::write(&files[0], b"corrupt").unwrap();
    let third = Runtime::new(config).unwrap();
    let (_, report) = third.load_with(&bytes, SandboxLimits::default()).unwrap();
    assert_eq!(report.cache, CacheOutcome::Miss);
    assert!(
        std::fs::read(&files[0]).unwrap().len() > 1000,
        "the artifact was rewritten"
    );
}

#[test]
fn cache_key_includes_engine_settings() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(artifacts::PROBE).unwrap();
    let plain = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let fueled = RuntimeConfig {
        fuel_metering: true,
        ..plain.clone()
    };
    Runtime::new(plain)
        .unwrap()
        .load_with(&bytes, SandboxLimits::default())
        .unwrap();
    let (_, report) = Runtime::new(fueled)
        .unwrap()
        .load_with(&bytes, SandboxLimits::default())
        .unwrap();
    assert_eq!(
        report.cache,
        CacheOutcome::Miss,
        "code compiled without fuel checks must not be reused with fuel on"
    );
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
}

#[test]
fn a_plugin_built_against_contract_0_1_0_still_loads_and_runs() {
    // 0.1.1 only added to 0.1.0: a handler built against the frozen 0.1.0 folder binds to the
    // host's 0.1.1 definitions through wasmtime's semver-compatible name resolution.
    let mut h = plover_host::testing::TestHarness::load(artifacts::CONTRACT_V0_1_0).unwrap();
    assert_eq!(h.plugin.contract_version().to_string(), "0.1.0");
    let source = h.bucket("source");
    source.insert("greeting", "hello");
    let target = h.bucket("target");
    let spec = h.spec("old", serde_json::json!({}));
    let run = h.run_all(&spec).unwrap();
    assert_eq!(run.steps[0].1.summary, "shouted");
    assert_eq!(target.snapshot()["greeting"], b"HELLO");
}

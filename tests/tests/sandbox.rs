//! Every way a plugin can misbehave becomes a typed error within its bound, naming the plugin,
//! the call and the cause, while a well-behaved plugin keeps working in the same runtime.

use plover_host::model::MigrationSpec;
use plover_host::runtime::{
    Call, LoadError, PluginError, PluginFailure, Runtime, RuntimeConfig, SandboxLimits,
};
use plover_host::testing::TestHarness;
use plover_tests::artifacts;
use serde_json::json;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One runtime for the whole file, as in the server: misbehaving plugins share the engine with
/// the well-behaved one.
fn runtime() -> Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| Arc::new(Runtime::new(RuntimeConfig::default()).unwrap()))
        .clone()
}

fn tight_limits() -> SandboxLimits {
    SandboxLimits {
        memory_bytes: 32 << 20,
        call_timeout: Duration::from_millis(300),
        ..SandboxLimits::default()
    }
}

fn misbehave(mode: &str) -> (TestHarness, MigrationSpec) {
    let mut h = TestHarness::load_in(runtime(), artifacts::MISBEHAVE, tight_limits()).unwrap();
    h.bucket("data").insert("existing", "value");
    let spec = h.spec("misbehave", json!({ "mode": mode }));
    (h, spec)
}

fn plan_error(mode: &str) -> PluginError {
    let (h, spec) = misbehave(mode);
    match h.plugin.plan(&h.context(None), &spec) {
        Err(e) => e,
        Ok(r) => panic!("mode {mode}: expected the sandbox to stop plan, got {r:?}"),
    }
}

/// kv-copy still copies correctly after its neighbour misbehaved.
fn assert_well_behaved_plugin_still_works() {
    let mut h =
        TestHarness::load_in(runtime(), artifacts::KV_COPY, SandboxLimits::default()).unwrap();
    let source = h.bucket("source");
    for i in 0..50 {
        source.insert(format!("s/{i:03}"), format!("v{i}"));
    }
    let target = h.bucket("target");
    let spec = h.spec("kv-copy", json!({ "prefix": "s/" }));
    h.run_all(&spec).unwrap();
    assert_eq!(target.snapshot(), source.snapshot());
}

#[test]
fn endless_loop_hits_the_deadline() {
    let started = Instant::now();
    let err = plan_error("loop");
    let elapsed = started.elapsed();
    assert_eq!(
        err.cause,
        PluginFailure::Deadline {
            limit: Duration::from_millis(300)
        }
    );
    assert_eq!(err.call, Call::Plan);
    assert_eq!(err.plugin, "misbehave@0.1.0");
    // Bound: the deadline plus epoch granularity and slack for a loaded CI machine.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(
        err.to_string()
            .contains("misbehave@0.1.0: plan ran past its deadline"),
        "{err}"
    );
    assert_well_behaved_plugin_still_works();
}

#[test]
fn sleeping_in_a_host_call_still_hits_the_deadline() {
    let started = Instant::now();
    let err = plan_error("sleep");
    assert_eq!(
        err.cause,
        PluginFailure::Deadline {
            limit: Duration::from_millis(300)
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn memory_bomb_runs_out_of_memory_at_the_cap() {
    let err = plan_error("memory-bomb");
    match &err.cause {
        PluginFailure::OutOfMemory {
            limit_bytes,
            stderr,
        } => {
            assert_eq!(*limit_bytes, 32 << 20);
            assert!(
                stderr.contains("memory allocation"),
                "guest stderr: {stderr}"
            );
        }
        other => panic!("expected out-of-memory, got {other:?}"),
    }
    assert_well_behaved_plugin_still_works();
}

#[test]
fn deep_recursion_overflows_the_wasm_stack() {
    let err = plan_error("deep-recursion");
    assert_eq!(err.cause, PluginFailure::StackOverflow, "{err}");
    assert_well_behaved_plugin_still_works();
}

#[test]
fn trap_is_reported_as_a_trap() {
    let err = plan_error("trap");
    match &err.cause {
        PluginFailure::Trap { message, .. } => {
            assert!(message.contains("unreachable"), "{message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_well_behaved_plugin_still_works();
}

#[test]
fn panic_is_reported_with_its_message() {
    let err = plan_error("panic");
    match &err.cause {
        PluginFailure::Panic { message } => {
            assert!(
                message.contains("misbehave was told to panic during plan"),
                "{message}"
            )
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_well_behaved_plugin_still_works();
}

#[test]
fn write_during_validate_is_refused_and_fails_the_call() {
    let (h, spec) = misbehave("write");
    let plan = plover_host::model::Plan {
        steps: vec![],
        risk: plover_host::model::RiskLevel::Low,
        risk_notes: vec![],
        estimated_duration_ms: None,
    };
    let before = h.bucket_snapshot("data");
    let err = h
        .plugin
        .validate(&h.context(None), &spec, &plan)
        .unwrap_err();
    assert_eq!(err.call, Call::Validate);
    match &err.cause {
        PluginFailure::WriteDenied { attempts, first } => {
            assert_eq!(*attempts, 1);
            assert_eq!(first, "set on bucket 'data'");
        }
        other => panic!("expected write-denied, got {other:?}"),
    }
    assert_eq!(
        h.bucket_snapshot("data"),
        before,
        "a refused write must change nothing"
    );
    assert!(
        !h.bucket_snapshot("data")
            .contains_key("written-by-misbehave")
    );

    // The same write during execute is allowed: read-only is a property of the call.
    let step = plover_host::model::PlanStep {
        id: "only".into(),
        kind: plover_host::model::StepKind::Migration,
        description: String::new(),
        depends_on: vec![],
        expected_objects: None,
        reversible: false,
        resumable: false,
        queue: None,
        estimated_duration_ms: None,
    };
    h.execute(&spec, &step, None).unwrap();
    assert_eq!(
        h.bucket_snapshot("data")
            .get("written-by-misbehave")
            .map(Vec::as_slice),
        Some(&b"oops"[..])
    );
}

#[test]
fn checkpoint_outside_execute_counts_as_a_write() {
    let err = plan_error("checkpoint");
    assert!(
        matches!(err.cause, PluginFailure::WriteDenied { .. }),
        "{err}"
    );
}

#[test]
fn plugin_sees_no_files_environment_arguments_or_network() {
    // The host's own environment is not empty, so a leak would show.
    assert!(std::env::vars().count() > 0);
    let (h, spec) = misbehave("escape");
    let plan = h.plan(&spec).unwrap();
    let report = h.validate(&spec, &plan).unwrap();
    let note = &report.findings[0].message;
    for path in ["/etc/passwd", "/", ".", "/proc/self/environ"] {
        assert!(note.contains(&format!("read {path}: denied")), "{note}");
    }
    assert!(note.contains("env vars: 0"), "{note}");
    assert!(note.contains("args: 0"), "{note}");
    assert!(note.contains("connect: denied"), "{note}");
    assert!(
        !note.contains("GOT") && !note.contains("CONNECTED"),
        "{note}"
    );
}

#[test]
fn panic_in_execute_names_the_step() {
    let (h, spec) = misbehave("panic");
    let step = h
        .plan(&h.spec("misbehave", json!({ "mode": "ok" })))
        .unwrap()
        .steps
        .remove(0);
    let err = h
        .plugin
        .execute(&h.context(None), &spec, &step, None)
        .unwrap_err();
    assert_eq!(err.call, Call::Execute("only".into()));
    assert!(
        err.to_string()
            .starts_with("plugin misbehave@0.1.0: execute of step 'only' panicked"),
        "{err}"
    );
}

#[test]
fn what_a_plugin_prints_reaches_the_job_log_line_by_line() {
    let mut h = TestHarness::load_in(runtime(), artifacts::MISBEHAVE, tight_limits()).unwrap();
    let spec = h.spec("misbehave", json!({ "mode": "print", "size": 2 }));
    h.bucket("data");
    h.plugin.plan(&h.context(None), &spec).unwrap().unwrap();
    assert_eq!(
        h.events.log_lines(),
        [
            "[stdout] out 0 during plan",
            "[stderr] err 0 during plan",
            "[stdout] out 1 during plan",
            "[stderr] err 1 during plan",
            "[stdout] unfinished",
        ]
    );
}

#[test]
fn a_chatty_plugin_adds_a_bounded_number_of_lines_to_the_log() {
    let h =
        TestHarness::load_in(runtime(), artifacts::MISBEHAVE, SandboxLimits::default()).unwrap();
    let spec = h.spec("misbehave", json!({ "mode": "print", "size": 5_000 }));
    h.plugin.plan(&h.context(None), &spec).unwrap().unwrap();
    let lines = h.events.log_lines();
    assert!(lines.len() <= 501, "{} lines", lines.len());
    assert!(
        lines
            .last()
            .unwrap()
            .contains("more lines to stdout/stderr"),
        "{:?}",
        lines.last()
    );
}

#[test]
fn a_panic_message_reaches_both_the_log_and_the_error() {
    let (h, spec) = misbehave("panic");
    let err = h.plugin.plan(&h.context(None), &spec).unwrap_err();
    assert!(
        err.to_string()
            .contains("misbehave was told to panic during plan")
    );
    let lines = h.events.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[stderr] ") && l.contains("misbehave was told to panic")),
        "{lines:?}"
    );
}

#[test]
fn fuel_limit_stops_a_busy_plugin_when_metering_is_on() {
    let rt = Arc::new(
        Runtime::new(RuntimeConfig {
            fuel_metering: true,
            ..RuntimeConfig::default()
        })
        .unwrap(),
    );
    let limits = SandboxLimits {
        fuel: Some(5_000_000),
        call_timeout: Duration::from_secs(60),
        ..SandboxLimits::default()
    };
    let h = TestHarness::load_in(rt, artifacts::MISBEHAVE, limits).unwrap();
    let spec = h.spec("misbehave", json!({ "mode": "loop" }));
    let err = h.plugin.plan(&h.context(None), &spec).unwrap_err();
    assert_eq!(err.cause, PluginFailure::OutOfFuel { fuel: 5_000_000 });
}

/// Start `mode` with a long deadline, trigger a force stop after 100 ms, return how it ended.
fn force_stopped(mode: &str) -> (PluginError, Duration) {
    let mut limits = tight_limits();
    limits.call_timeout = Duration::from_secs(120);
    let h = TestHarness::load_in(runtime(), artifacts::MISBEHAVE, limits).unwrap();
    let spec = h.spec("misbehave", json!({ "mode": mode }));
    let stop = h.force_stop.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        stop.trigger();
    });
    let started = Instant::now();
    let err = h.plugin.plan(&h.context(None), &spec).unwrap_err();
    stopper.join().unwrap();
    (err, started.elapsed())
}

#[test]
fn force_stop_interrupts_a_running_call() {
    let (err, took) = force_stopped("loop");
    assert_eq!(err.cause, PluginFailure::ForceStopped);
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn force_stop_interrupts_a_sleeping_plugin() {
    let (err, took) = force_stopped("sleep");
    assert_eq!(err.cause, PluginFailure::ForceStopped);
    assert!(took < Duration::from_secs(10), "{took:?}");
}

fn load_error(bytes: &[u8]) -> LoadError {
    match runtime().load_bytes(bytes) {
        Err(e) => e,
        Ok(p) => panic!("expected a load error, loaded {}", p.label()),
    }
}

#[test]
fn random_bytes_are_not_wasm() {
    let err = load_error(b"this is not a plugin at all");
    assert!(matches!(err, LoadError::NotWasm), "{err}");
}

#[test]
fn core_module_is_refused_as_such() {
    let core = wat::parse_str("(module (func (export \"plan\")))").unwrap();
    let err = load_error(&core);
    assert!(matches!(err, LoadError::CoreModule), "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"));
}

#[test]
fn truncated_component_is_malformed() {
    let bytes = std::fs::read(artifacts::KV_COPY).unwrap();
    let err = load_error(&bytes[..bytes.len() / 2]);
    assert!(matches!(err, LoadError::Malformed(_)), "{err}");
}

#[test]
fn component_of_another_world_is_refused() {
    let bytes = std::fs::read(artifacts::NOT_A_HANDLER).unwrap();
    let err = load_error(&bytes);
    match &err {
        LoadError::WrongWorld { exports } => assert!(
            exports.iter().any(|e| e.starts_with("wasi:cli/run")),
            "{exports:?}"
        ),
        other => panic!("expected wrong-world, got {other}"),
    }
}

#[test]
fn incompatible_contract_version_names_both_versions() {
    let bytes = std::fs::read(artifacts::FUTURE_CONTRACT).unwrap();
    let err = load_error(&bytes);
    assert!(matches!(err, LoadError::ContractVersion { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("plover:migration@1.0.0"), "{message}");
    assert!(
        message.contains("plover:migration@0.2.0 and plover:migration@0.1.1"),
        "{message}"
    );
}

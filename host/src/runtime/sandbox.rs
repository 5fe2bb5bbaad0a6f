//! The sandbox one plugin call runs in: resource limits, the WASI context it sees (no files,
//! no environment, no network, no inherited stdio: its output goes to `guest_output`).

use super::guest_output::{GuestOutput, Stream};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// Per-plugin limits. The defaults are safe; an operator may tighten (or loosen) them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxLimits {
    /// The most linear memory one instance may hold, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit for one call (`plan`, `validate`, one `execute` of a step...), in
    /// milliseconds.
    #[serde(with = "duration_millis")]
    #[schema(value_type = u64, default = 300000)]
    pub call_timeout: Duration,
    /// Fuel (roughly, wasm instructions) per call, when the runtime meters fuel.
    pub fuel: Option<u64>,
    /// How many table elements an instance may hold.
    pub table_elements: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(300),
            fuel: None,
            table_elements: 20_000,
        }
    }
}

pub(crate) mod duration_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Enforces [`SandboxLimits`] on one store and remembers whether a limit was hit, so a
/// resulting trap can be reported as "out of memory" rather than as a bare trap.
pub(crate) struct CallLimiter {
    memory_bytes: usize,
    table_elements: usize,
    pub(crate) memory_denied: bool,
}

impl CallLimiter {
    pub(crate) fn new(limits: &SandboxLimits) -> Self {
        CallLimiter {
            memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            table_elements: limits.table_elements,
            memory_denied: false,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory_bytes;
        self.memory_denied |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        // A Rust guest is one component of a handful of core instances.
        64
    }

    fn memories(&self) -> usize {
        8
    }

    fn tables(&self) -> usize {
        16
    }
}

/// The WASI a guest gets: clocks and randomness; stdout and stderr to `output`; no
/// arguments, environment, preopened directories, sockets or name lookups.
pub(crate) fn wasi_context(output: &GuestOutput) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stdout(output.stream(Stream::Stdout))
        .stderr(output.stream(Stream::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_addr, _use| Box::pin(async { false }));
    b.build()
}

//! The sandbox one plugin call runs in: resource limits, the WASI context it sees (no files,
//! no environment, no network, no inherited stdio), and the capture of its stderr.

use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
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

/// How much of a guest's stderr the host keeps, the tail being what explains a panic.
const STDERR_KEEP: usize = 16 * 1024;

/// The tail of what a guest wrote to stderr. Writes never fail (a full buffer drops the
/// oldest bytes), so a chatty guest cannot make its own `eprintln!` panic.
#[derive(Clone, Default)]
pub(crate) struct GuestStderr {
    tail: Arc<Mutex<Vec<u8>>>,
}

impl GuestStderr {
    pub(crate) fn text(&self) -> String {
        let tail = self.tail.lock().expect("stderr lock");
        String::from_utf8_lossy(&tail).trim().to_string()
    }

    fn append(&self, bytes: &[u8]) {
        let mut tail = self.tail.lock().expect("stderr lock");
        tail.extend_from_slice(bytes);
        if tail.len() > STDERR_KEEP {
            let excess = tail.len() - STDERR_KEEP;
            tail.drain(..excess);
        }
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestStderr {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The WASI a guest gets: clocks and randomness; stdout discarded; stderr captured; no
/// arguments, environment, preopened directories, sockets or name lookups.
pub(crate) fn wasi_context(stderr: &GuestStderr) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_addr, _use| Box::pin(async { false }));
    b.build()
}

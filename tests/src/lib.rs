//! Shared helpers for Plover's end-to-end tests and benchmarks.
//!
//! [`artifacts`] holds the paths of every guest component, built from source by this crate's
//! build script: the bundled plugins (`KV_COPY`, `CONFIG_UPGRADE`) and the fixtures
//! (`MISBEHAVE`, `PROBE`, `NOT_A_HANDLER`, `FUTURE_CONTRACT`).

pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

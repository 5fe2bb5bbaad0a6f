//! # plover-host
//!
//! Plover runs database, config and data migrations as sandboxed WebAssembly components.
//! Each *handler* implements the `plover:migration` WIT contract (`wit/` at the repository
//! root); this crate loads handlers, sandboxes them and drives their lifecycle.
//!
//! Modules, by concern:
//! - [`model`]: the host's data model (specs, plans, results, errors), independent of any
//!   contract version.
//! - [`runtime`]: the wasmtime engine, loading, sandbox, host imports, typed plugin errors.
//! - [`connectors`]: what a job may reach (key-value buckets), granted per job.
//! - [`engine`]: the migration lifecycle: plan, dry run, gates, step DAG, retries, cancel,
//!   pause, rollback, crash recovery.
//! - [`store`]: durable job state (sled embedded, or PostgreSQL), behind a small trait.
//! - [`cluster`]: several nodes on one PostgreSQL store: leases with fencing, forwarded
//!   requests, change notices, the node list.
//! - [`metrics`]: counters and histograms kept as things happen, rendered for `/metrics`.
//! - [`api`]: the HTTP API (axum), live progress over SSE, bearer-token roles.
//! - [`console`]: the operator web console at `/`, embedded assets over the same API.
//! - [`server`], [`config`], [`cli`]: the `plover` binary, a thin layer over the above.
//! - [`allocator`]: the binary's global allocator (mimalloc, eager arena commit off).
//! - [`testing`]: run a handler in-process over in-memory buckets, for plugin authors.
//!
//! Features: `server` (the default) is everything above; without it (`default-features =
//! false, features = ["testing"]`) the crate is [`model`], [`runtime`], [`connectors`],
//! [`metrics`] and [`testing`]: what a plugin's `cargo test` needs, without the HTTP server,
//! the CLI, the console, the engine or the job stores and their dependencies.

#[cfg(feature = "server")]
pub mod allocator;
#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod cluster;
#[cfg(feature = "server")]
pub mod config;
pub mod connectors;
#[cfg(feature = "server")]
pub mod console;
#[cfg(feature = "server")]
pub mod engine;
pub mod metrics;
pub mod model;
#[cfg(feature = "server")]
pub mod plugin_check;
pub mod runtime;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod startup;
pub mod stop;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "server")]
pub mod workers;

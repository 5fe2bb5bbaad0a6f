//! End-to-end tests of the `plover` binary: a real server process on loopback, real plugins
//! built from source, real sled files.

mod api;
mod cli;
mod cluster;
mod cluster_api;
mod common;
mod conformance;
mod connectors;
mod console;
mod console_api;
mod contract_0_2;
mod declared_bindings;
mod durability;
mod hardening;
mod kill;
mod pg_store;
mod plugin_less;
mod plugin_loading;
mod plugin_new;
mod plugin_test;
mod python_handlers;
mod sandbox;
mod signing;
mod workers;

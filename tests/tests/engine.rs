//! The engine's cases (`engine_cases/`) over the embedded sled store.

const STORE: engine_cases::Store = engine_cases::Store::Sled;

mod engine_cases;

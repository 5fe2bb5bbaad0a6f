//! The engine's cases (`engine_cases/`) over the PostgreSQL store, as one node of a cluster:
//! every change is made under the job's lease and fenced by it.

const STORE: engine_cases::Store = engine_cases::Store::Postgres;

mod engine_cases;

//! End-to-end tests of the `plover` binary: a real server process on loopback.

//! Publishes, batches, syncs, subscriptions, commits, background passes and
//! power cuts on two topics of a simulated disk, on engines without a
//! flusher thread, checked against a model; see `tests/support/log_ops.rs`,
//! which `tests/fuzz_replay.rs` also runs over `fuzz/corpus/log_ops/` on
//! stable.
#![no_main]

#[allow(dead_code)] // each target runs one of its entry points
#[path = "../../tests/support/log_ops.rs"]
mod log_ops;

libfuzzer_sys::fuzz_target!(init: tollgate::fuzzing::keep_freed_memory(), |data: &[u8]| log_ops::run(data));

//! Publishes, receives, acks, nacks, rejects, drops, extensions, waits,
//! metrics, process kills and power cuts on two worker groups of a topic on
//! a simulated disk, on engines without a flusher thread, checked against
//! a model; see
//! `tests/support/queue_ops.rs`, which `tests/fuzz_replay.rs` also runs over
//! `fuzz/corpus/queue_ops/` on stable.
#![no_main]

#[allow(dead_code)] // each target runs one of its entry points
#[path = "../../tests/support/queue_ops.rs"]
mod queue_ops;

libfuzzer_sys::fuzz_target!(init: tollgate::fuzzing::keep_freed_memory(), |data: &[u8]| queue_ops::run(data));

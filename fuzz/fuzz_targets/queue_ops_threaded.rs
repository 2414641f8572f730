//! The `queue_ops` ops on engines with their flusher thread, which may sync
//! a `Buffered` topic's sealed segments between any two ops (slower than
//! `queue_ops`: a thread started and joined per engine); see
//! `tests/support/queue_ops.rs` (`run_threaded`), which
//! `tests/fuzz_replay.rs` also runs over `fuzz/corpus/queue_ops/` on stable.
#![no_main]

#[allow(dead_code)] // each target runs one of its entry points
#[path = "../../tests/support/queue_ops.rs"]
mod queue_ops;

libfuzzer_sys::fuzz_target!(init: tollgate::fuzzing::keep_freed_memory(), |data: &[u8]| queue_ops::run_threaded(data));

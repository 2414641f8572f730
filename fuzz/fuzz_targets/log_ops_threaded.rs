//! The `log_ops` ops on engines with their flusher thread, which may sync
//! sealed segments and apply retention between any two ops, reading back
//! every record after each reopen where `log_ops` reads a sample (slower
//! than `log_ops`: a thread per engine, and every record); see
//! `tests/support/log_ops.rs`
//! (`run_threaded`), which `tests/fuzz_replay.rs` also runs over
//! `fuzz/corpus/log_ops/` on stable.
#![no_main]

#[allow(dead_code)] // each target runs one of its entry points
#[path = "../../tests/support/log_ops.rs"]
mod log_ops;

libfuzzer_sys::fuzz_target!(init: tollgate::fuzzing::keep_freed_memory(), |data: &[u8]| log_ops::run_threaded(data));

//! Single-threaded lock-manager operations decoded from the input, each
//! result checked against a model; see `tests/support/lock_ops.rs`, which
//! `tests/fuzz_replay.rs` also runs over `fuzz/corpus/lock_ops/` on stable.
#![no_main]

#[path = "../../tests/support/lock_ops.rs"]
mod lock_ops;

libfuzzer_sys::fuzz_target!(init: tollgate::fuzzing::keep_freed_memory(), |data: &[u8]| lock_ops::run(data));

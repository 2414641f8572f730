//! A data directory's files, taken from a real engine's and damaged or
//! forged as the input says, opened (plainly and with `repair`) and checked;
//! see `tests/support/log_recovery.rs`, which `tests/fuzz_replay.rs` also
//! runs over `fuzz/corpus/log_recovery/` on stable.
#![no_main]

#[allow(dead_code)] // each target runs one of its entry points
#[path = "../../tests/support/log_recovery.rs"]
mod log_recovery;

libfuzzer_sys::fuzz_target!(init: tollgate::fuzzing::keep_freed_memory(), |data: &[u8]| log_recovery::run(data));

//! One segment's bytes through recovery's frame scanner (as a mapping and as
//! `inspect` reads it) and recovery plan, checked; see
//! `tests/support/segment_recovery.rs`, which `tests/fuzz_replay.rs` also
//! runs over `fuzz/corpus/segment_recovery/` on stable.
#![no_main]

#[allow(dead_code)] // `write_seeds` is for tests/fuzz_replay.rs
#[path = "../../tests/support/segment_recovery.rs"]
mod segment_recovery;

libfuzzer_sys::fuzz_target!(init: tollgate::fuzzing::keep_freed_memory(), |data: &[u8]| segment_recovery::run(data));

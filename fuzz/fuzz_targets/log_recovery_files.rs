//! The `log_recovery` target's inputs, each directory written to the real
//! file system (tmpfs if there is one) and opened with `Engine::open`, for
//! what only the real storage does (`OsStorage`: real mappings, link
//! checks); see `tests/support/log_recovery.rs`, which `tests/fuzz_replay.rs`
//! also runs over `fuzz/corpus/log_recovery/` on stable.
#![no_main]

#[allow(dead_code)] // each target runs one of its entry points
#[path = "../../tests/support/log_recovery.rs"]
mod log_recovery;

libfuzzer_sys::fuzz_target!(init: tollgate::fuzzing::keep_freed_memory(), |data: &[u8]| log_recovery::run_on_files(data));

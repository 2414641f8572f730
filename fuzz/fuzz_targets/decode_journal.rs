//! Arbitrary bytes as a worker group's journal replayed onto a state file (plain open and repair), read by the engine's reader and checked;
//! see `tests/support/decoders.rs`, which `tests/fuzz_replay.rs` also runs
//! over `fuzz/corpus/decode_journal/` on stable.
#![no_main]

#[allow(dead_code)] // each target runs one of its functions
#[path = "../../tests/support/decoders.rs"]
mod decoders;

libfuzzer_sys::fuzz_target!(init: tollgate::fuzzing::keep_freed_memory(), |data: &[u8]| decoders::journal(data));

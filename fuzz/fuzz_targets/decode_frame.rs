//! Arbitrary bytes as one frame of a segment (`check_frame` and the walk over its records), read by the engine's reader and checked;
//! see `tests/support/decoders.rs`, which `tests/fuzz_replay.rs` also runs
//! over `fuzz/corpus/decode_frame/` on stable.
#![no_main]

#[allow(dead_code)] // each target runs one of its functions
#[path = "../../tests/support/decoders.rs"]
mod decoders;

libfuzzer_sys::fuzz_target!(init: tollgate::fuzzing::keep_freed_memory(), |data: &[u8]| decoders::frame(data));

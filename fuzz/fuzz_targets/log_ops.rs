//! Publishes, batches, syncs, subscriptions, commits and power cuts on two
//! topics of a simulated disk, checked against a model; see
//! `tests/support/log_ops.rs`, which `tests/fuzz_replay.rs` also runs over
//! `fuzz/corpus/log_ops/` on stable.
#![no_main]

#[path = "../../tests/support/log_ops.rs"]
mod log_ops;

libfuzzer_sys::fuzz_target!(|data: &[u8]| log_ops::run(data));

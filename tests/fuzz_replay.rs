//! Replays the `lock_ops` fuzz corpus (`fuzz/corpus/lock_ops/`) through the
//! shared harness on stable, and runs the harness on random byte strings.

#[path = "support/lock_ops.rs"]
mod lock_ops;

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;

#[test]
fn corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/lock_ops");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no input", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        // Name the input if it fails (the panic message comes first).
        let outcome = std::panic::catch_unwind(|| lock_ops::run(&data));
        if let Err(panic) = outcome {
            eprintln!("corpus input {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_ops(data in vec(any::<u8>(), 0..600)) {
        lock_ops::run(&data);
    }
}

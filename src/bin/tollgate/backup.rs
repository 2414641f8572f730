//! `tollgate backup`: a copy of a data directory no process has open,
//! through [`Engine::backup_to`] (a running process backs itself up with
//! the same call: `docs/OPERATIONS.md`).

use std::io::{self, Write};
use std::path::Path;

use tollgate::{Engine, OpenError};

use crate::open::open_quietly;
use crate::text::{human_bytes, plural};
use crate::{EXIT_FAILED, Failure, fail};

/// Runs `tollgate backup`: exits 0 once the copy is complete and synced.
pub(super) fn backup(dir: &Path, dest: &Path) -> Result<u8, Failure> {
    // Checks that `dir` is a data directory without creating or changing it.
    let data = open_quietly(dir)?;
    if data.held_open() {
        return Err(in_use(dir));
    }
    let engine = Engine::open(dir).map_err(|e| match e {
        OpenError::Locked { .. } => in_use(dir),
        e => fail(EXIT_FAILED, e.to_string()),
    })?;
    let report =
        engine.backup_to(dest).map_err(|e| fail(EXIT_FAILED, format!("{}: not backed up: {e}", dir.display())))?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "backed up {} to {}: {} topic{}, {} file{}, {} in {:.2} s",
        dir.display(),
        dest.display(),
        report.topics,
        plural(report.topics as u64),
        report.files,
        plural(report.files),
        human_bytes(report.bytes),
        report.elapsed.as_secs_f64()
    )?;
    Ok(0)
}

fn in_use(dir: &Path) -> Failure {
    fail(
        EXIT_FAILED,
        format!(
            "{}: in use by a running process (its lock file is held); back it up from that process with \
             Engine::backup_to, or stop it first",
            dir.display()
        ),
    )
}

//! `tollgate repair`: cuts each topic's log at its first corruption, through
//! an `Engine` in repair mode, after showing what would be lost and asking.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use tollgate::inspect::{CutKind, TopicVerdict};
use tollgate::{Engine, EngineConfig, Escaped, OpenError, RecoveryMode, RecoveryReport};

use crate::open::open_quietly;
use crate::text::{escaped, human_bytes, plural};
use crate::verify::{check, damage_effect, lost, write_summary, write_verdicts};
use crate::{EXIT_CORRUPT, EXIT_FAILED, Failure, fail};

/// Runs `tollgate repair`: exits 0 if the directory is clean afterwards.
pub(super) fn repair(dir: &Path, yes: bool) -> Result<u8, Failure> {
    let data = open_quietly(dir)?;
    if data.held_open() {
        return Err(in_use(dir));
    }
    let report = check(&data)?;
    let mut out = io::stdout().lock();
    let cuts: Vec<&TopicVerdict> = report
        .topics
        .iter()
        .filter(|t| t.cut.as_ref().is_some_and(|cut| cut.kind != CutKind::IncompleteTail))
        .collect();
    let damaged = report.topics.iter().filter(|t| !t.damaged.is_empty()).count();
    if cuts.is_empty() && damaged == 0 {
        writeln!(out, "nothing to repair: {} is clean", Escaped::path(dir))?;
        return Ok(0);
    }
    writeln!(out, "repair would change {}:", Escaped::path(dir))?;
    for topic in &cuts {
        let cut = topic.cut.as_ref().expect("filtered on it");
        writeln!(
            out,
            "  topic {}: cut {} at byte {} ({})",
            escaped(&topic.name),
            Escaped::path(&cut.at.file),
            cut.at.position,
            cut.at.reason
        )?;
        writeln!(out, "    {}", lost(topic))?;
    }
    for topic in report.topics.iter().filter(|t| !t.damaged.is_empty()) {
        for damage in &topic.damaged {
            writeln!(out, "  topic {}: {}", escaped(&topic.name), escaped(damage))?;
            writeln!(out, "    {}", damage_effect(damage))?;
        }
    }
    out.flush()?;
    if !yes {
        confirm(dir)?;
    }
    let config = EngineConfig { recovery: RecoveryMode::Repair, ..EngineConfig::default() };
    let engine = Engine::open_with(dir, config).map_err(|e| match e {
        OpenError::Locked { .. } => in_use(dir),
        e => fail(EXIT_FAILED, e.to_string()),
    })?;
    let names = engine.topics().map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    let mut failed = false;
    for name in names {
        match engine.topic(&name) {
            Ok(topic) => writeln!(out, "topic {}: {}", escaped(&name), recovery(topic.recovery_report()))?,
            Err(e) => {
                failed = true;
                writeln!(out, "topic {}: cannot be repaired: {}", escaped(&name), escaped(e))?;
            }
        }
    }
    drop(engine);
    writeln!(out, "checking again:")?;
    let started = Instant::now();
    let after = check(&data)?;
    write_verdicts(&mut out, &after)?;
    write_summary(&mut out, &after, started.elapsed())?;
    Ok(if after.is_clean() && !failed { 0 } else { EXIT_CORRUPT })
}

fn in_use(dir: &Path) -> Failure {
    fail(
        EXIT_FAILED,
        format!(
            "{}: in use by a running process (its lock file is held); stop it before repairing",
            Escaped::path(dir)
        ),
    )
}

/// Asks on the terminal; refuses without one.
fn confirm(dir: &Path) -> Result<(), Failure> {
    if !io::stdin().is_terminal() {
        return Err(fail(
            EXIT_FAILED,
            format!(
                "{}: not repaired: stdin is not a terminal to confirm on; pass --yes to repair",
                Escaped::path(dir)
            ),
        ));
    }
    let _ = write!(io::stderr(), "Repair {}, deleting the data above? [y/N] ", Escaped::path(dir));
    let mut answer = String::new();
    io::stdin().read_line(&mut answer).map_err(|e| fail(EXIT_FAILED, format!("cannot read the answer: {e}")))?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(fail(EXIT_FAILED, format!("{}: not repaired", Escaped::path(dir)))),
    }
}

fn recovery(report: &RecoveryReport) -> String {
    let scanned = format!(
        "scanned {} segment{} ({})",
        report.segments_scanned,
        plural(report.segments_scanned as u64),
        human_bytes(report.bytes_scanned)
    );
    let Some(cut) = &report.cut else { return format!("intact, {scanned}") };
    let mut text = format!("{scanned}; cut {} at byte {} ({})", Escaped::path(&cut.file), cut.position, cut.reason);
    if report.segments_removed > 0 {
        let removed = report.segments_removed;
        text.push_str(&format!("; removed {removed} later segment{}", plural(removed as u64)));
    }
    text
}

//! `tollgate verify`: checks every checksum of a data directory and says
//! what is corrupt. `repair` checks and reports with the same code, before
//! and after it cuts, so both tell the same damage in the same words.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tollgate::Escaped;
use tollgate::inspect::{Cut, CutKind, Directory, TopicVerdict, VerifyReport};

use crate::open::open_dir;
use crate::text::{escaped, human_bytes, plural};
use crate::{EXIT_CORRUPT, EXIT_FAILED, Failure, fail};

/// Runs `tollgate verify`: exits 0 if the directory is clean, else `EXIT_CORRUPT`.
pub(super) fn verify(dir: &Path) -> Result<u8, Failure> {
    let (data, _) = open_dir(dir)?;
    let started = Instant::now();
    let report = check(&data)?;
    let elapsed = started.elapsed();
    let mut out = io::stdout().lock();
    write_verdicts(&mut out, &report)?;
    write_summary(&mut out, &report, elapsed)?;
    Ok(if report.is_clean() { 0 } else { EXIT_CORRUPT })
}

/// Runs [`Directory::verify`] with a progress bar on stderr if it is a terminal.
pub(super) fn check(data: &Directory) -> Result<VerifyReport, Failure> {
    let bar = if io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
            .expect("a valid template");
        bar.set_style(style);
        bar
    } else {
        ProgressBar::hidden()
    };
    let report = data.verify(|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    report.map_err(|e| fail(EXIT_FAILED, e.to_string()))
}

/// Each topic's verdict, with what its damage means.
pub(super) fn write_verdicts(out: &mut impl Write, report: &VerifyReport) -> io::Result<()> {
    for topic in &report.topics {
        let head = format!(
            "topic {}: {} segment{}, {} record{}",
            escaped(&topic.name),
            topic.segments,
            plural(topic.segments as u64),
            topic.records,
            plural(topic.records)
        );
        let place =
            |cut: &Cut| format!("{} at byte {} ({})", Escaped::path(&cut.at.file), cut.at.position, cut.at.reason);
        match &topic.cut {
            None => writeln!(out, "{head}: {}", if topic.is_clean() { "ok" } else { "DAMAGED" })?,
            Some(cut) => match cut.kind {
                CutKind::Corrupt => {
                    writeln!(out, "{head}: CORRUPT: {}", escaped(&cut.at))?;
                    writeln!(out, "  {}; `tollgate repair` cuts the log there", lost(topic))?;
                }
                CutKind::TornTail => {
                    writeln!(out, "{head}: torn tail at {}", place(cut))?;
                    writeln!(
                        out,
                        "  the last shutdown was not clean: the next open cuts the log there; {}",
                        lost(topic)
                    )?;
                }
                CutKind::IncompleteTail => {
                    writeln!(out, "{head}: ok")?;
                    writeln!(out, "  the frame being written (the directory is in use) is at {}", place(cut))?;
                }
                _ => writeln!(out, "{head}: the data ends early at {}", place(cut))?,
            },
        }
        for damage in &topic.damaged {
            writeln!(out, "  damaged: {}", escaped(damage))?;
            writeln!(out, "    {}", damage_effect(damage))?;
        }
        for line in &topic.notes {
            writeln!(out, "  note: {}", escaped(line))?;
        }
    }
    Ok(())
}

/// What cutting a topic's log at its cut loses.
pub(super) fn lost(topic: &TopicVerdict) -> String {
    let Some(cut) = &topic.cut else { return String::new() };
    let mut lost = format!(
        "offsets from {} on are lost there: {} of {}",
        cut.first_lost,
        human_bytes(cut.bytes_after),
        cut.at.file.file_name().map_or_else(String::new, |f| Escaped::path(f).to_string())
    );
    if cut.later_segments > 0 {
        lost.push_str(&format!(
            " and {} later segment{} ({})",
            cut.later_segments,
            plural(cut.later_segments as u64),
            human_bytes(cut.later_bytes)
        ));
    }
    lost
}

/// The last line: what was read, how fast, and the verdict.
pub(super) fn write_summary(out: &mut impl Write, report: &VerifyReport, elapsed: Duration) -> io::Result<()> {
    let seconds = elapsed.as_secs_f64();
    let rate = report.bytes as f64 / seconds.max(1e-9) / f64::from(1 << 30);
    let corrupt = report.topics.iter().filter(|t| !t.is_clean()).count();
    let verdict = if corrupt == 0 {
        "clean".to_owned()
    } else {
        format!("{corrupt} topic{} with corruption", plural(corrupt as u64))
    };
    writeln!(
        out,
        "verified {} file{}, {}, {} record{} in {seconds:.2} s ({rate:.2} GiB/s): {verdict}",
        report.files,
        plural(report.files),
        human_bytes(report.bytes),
        report.records,
        plural(report.records)
    )
}

/// What the engine, and `repair`, make of a damaged file that `verify`
/// reports (`open_topic`, the log's `clamp_groups`, the queue's
/// `recover_groups`), told by the
/// file's name and the check that failed.
pub(super) fn damage_effect(damage: &tollgate::Corruption) -> &'static str {
    let name = damage.file.file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
    match (name.as_ref(), damage.reason) {
        (name, "not a tollgate slot file" | "the slot file's header fails its checksum")
            if name.ends_with(".offset") =>
        {
            "repair removes this file: the group starts over, as a new group does"
        }
        (name, "neither slot is valid") if name.ends_with(".offset") => {
            "subscribing the group fails until repair, which removes this file: the group starts over, as a new \
             group does"
        }
        ("checkpoint", "not a tollgate slot file" | "the slot file's header fails its checksum") => {
            "opening the topic fails until repair, which replaces the checkpoint and scans every segment"
        }
        ("checkpoint", "neither slot is valid") => {
            "opening the topic fails until repair, which replaces the checkpoint and scans every segment"
        }
        ("checkpoint", "its clean-shutdown record disagrees with the last segment's data") => {
            "opening the topic fails until repair, which scans every segment and rewrites the checkpoint"
        }
        (
            "state",
            "not a queue state file"
            | "the state file's header fails its checksum"
            | "the state file has format version 0",
        ) => {
            "opening the worker group fails until repair, which starts the group over at the oldest record: every \
             message still in the log is delivered again"
        }
        (
            "state",
            "a settled range in the state file fails its checks"
            | "a message in the state file fails its checks"
            | "the state file's length does not match its record counts",
        ) => {
            "opening the worker group fails until repair, which keeps every valid record of the file (a dropped \
             range's messages are delivered again; a dropped message's attempts start over)"
        }
        (
            "journal",
            "a journal entry below the synced mark fails its checks"
            | "the journal's header fails its checks"
            | "the journal ends before its synced mark"
            | "the journal has format version 0",
        ) => {
            "opening the worker group fails until repair, which keeps every valid entry (messages whose \
             settlement is lost are delivered again)"
        }
        (_, "the file has a newer format version") => {
            "this build cannot read it; opening fails, and repair leaves it as it is"
        }
        _ => "repair cannot fix this: it is reported again after repairing",
    }
}

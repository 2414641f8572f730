//! `tollgate inspect`: shows a data directory's topics, their segments,
//! consumer groups and worker groups, as tables or as one JSON document.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::{Value, json};
use tollgate::inspect::TopicSummary;
use tollgate::{Durability, Escaped, TopicConfig, TopicError};

use crate::open::{open_dir, topic_failure};
use crate::text::{escaped, format_time_us, human_bytes, json_text, plural, write_table};
use crate::{EXIT_FAILED, Failure, fail};

/// Runs `tollgate inspect`: the exit code is the worst of the topics' failures.
pub(super) fn inspect(dir: &Path, json: bool) -> Result<u8, Failure> {
    let (data, held_open) = open_dir(dir)?;
    let names = data.topics().map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    let mut topics = Vec::new();
    let mut code = 0;
    for name in names {
        match data.topic(&name) {
            Ok(summary) => topics.push(Ok(summary)),
            // Deleted since it was listed.
            Err(TopicError::NotFound { .. }) => {}
            Err(e) => {
                code = code.max(topic_failure(dir, e.clone()).code);
                topics.push(Err((name, e)));
            }
        }
    }
    let mut out = BufWriter::new(io::stdout().lock());
    if json {
        let topics: Vec<Value> = topics
            .iter()
            .map(|topic| match topic {
                Ok(summary) => topic_json(summary),
                Err((name, e)) => json!({ "name": name, "error": e.to_string() }),
            })
            .collect();
        let document = json!({ "directory": dir.to_string_lossy(), "held_open": held_open, "topics": topics });
        writeln!(out, "{}", json_text(&document, true))?;
    } else {
        let count = topics.len();
        writeln!(out, "{}: {count} topic{}", Escaped::path(dir), plural(count as u64))?;
        for topic in &topics {
            writeln!(out)?;
            match topic {
                Ok(summary) => write_topic(&mut out, summary, held_open)?,
                Err((name, e)) => writeln!(out, "topic {}: cannot be read: {}", escaped(name), escaped(e))?,
            }
        }
    }
    out.flush()?;
    Ok(code)
}

fn write_topic(out: &mut impl Write, topic: &TopicSummary, held_open: bool) -> io::Result<()> {
    let config = &topic.config;
    let records = topic.end.get().saturating_sub(topic.oldest.get());
    writeln!(out, "topic {}", escaped(&topic.name))?;
    writeln!(
        out,
        "  {}; segments of {}; messages up to {}; {}",
        durability(config.durability),
        human_bytes(config.segment_bytes),
        human_bytes(config.max_message_bytes as u64),
        retention(config)
    )?;
    let shutdown = if held_open {
        "in use"
    } else if topic.clean_shutdown {
        "shut down cleanly"
    } else {
        "not shut down cleanly: the next open recovers it"
    };
    writeln!(
        out,
        "  offsets {}..{} ({records} record{}) in {} segment{}, {}; {shutdown}",
        topic.oldest,
        topic.end,
        plural(records),
        topic.segments.len(),
        plural(topic.segments.len() as u64),
        human_bytes(topic.bytes)
    )?;
    let rows = topic.segments.iter().map(|s| {
        let file = s.path.file_name().map_or_else(String::new, |f| Escaped::path(f).to_string());
        let records = s.end.get().saturating_sub(s.base.get());
        let range = format!("{}..{}", s.base, s.end);
        vec![file, range, records.to_string(), human_bytes(s.bytes), human_bytes(s.file_bytes)]
    });
    write_table(out, &["segment", "offsets", "records", "data", "file"], rows)?;
    if !topic.groups.is_empty() {
        let rows = topic.groups.iter().map(|g| match &g.damage {
            Some(damage) => vec![g.name.clone(), format!("damaged: {damage}")],
            None => vec![
                g.name.clone(),
                g.committed.map_or_else(|| "none".to_owned(), |c| c.to_string()),
                g.lag.to_string(),
                g.committed_at_us.map_or_else(String::new, format_time_us),
            ],
        });
        write_table(out, &["consumer group", "committed", "lag", "committed at"], rows)?;
    }
    if !topic.workers.is_empty() {
        let rows = topic.workers.iter().map(|w| match &w.damage {
            Some(damage) => vec![w.name.clone(), format!("damaged: {damage}")],
            None => vec![
                w.name.clone(),
                w.low_water.to_string(),
                w.settled_above.to_string(),
                w.attempted.to_string(),
                w.rejected.to_string(),
                w.lag.to_string(),
                w.dead_lettered.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            ],
        });
        let dead = format!("dead-lettered to {}", topic.workers[0].dead_letter_topic);
        let headers = ["worker group", "low-water", "settled above", "in flight or retrying", "rejected", "lag", &dead];
        write_table(out, &headers, rows)?;
        writeln!(
            out,
            "  (a worker group's filter is not stored: its lag includes messages the filter skips, until the group next compacts its journal)"
        )?;
    }
    for line in &topic.notes {
        writeln!(out, "  note: {}", escaped(line))?;
    }
    Ok(())
}

fn topic_json(topic: &TopicSummary) -> Value {
    let config = &topic.config;
    let durability = match config.durability {
        Durability::Buffered => json!("buffered"),
        Durability::Sync => json!("sync"),
        Durability::Interval(d) => json!({ "interval_us": u64::try_from(d.as_micros()).unwrap_or(u64::MAX) }),
    };
    let segments: Vec<Value> = topic
        .segments
        .iter()
        .map(|s| {
            json!({
                "file": s.path.to_string_lossy(),
                "base": s.base.get(),
                "end": s.end.get(),
                "records": s.end.get().saturating_sub(s.base.get()),
                "bytes": s.bytes,
                "file_bytes": s.file_bytes,
            })
        })
        .collect();
    let groups: Vec<Value> = topic
        .groups
        .iter()
        .map(|g| {
            json!({
                "name": g.name,
                "committed": g.committed.map(|c| c.get()),
                "committed_at_us": g.committed_at_us,
                "committed_at": g.committed_at_us.map(format_time_us),
                "lag": g.lag,
                "damage": g.damage.as_ref().map(ToString::to_string),
            })
        })
        .collect();
    let workers: Vec<Value> = topic
        .workers
        .iter()
        .map(|w| {
            json!({
                "name": w.name,
                "low_water": w.low_water.get(),
                "settled_above": w.settled_above,
                "in_flight_or_retrying": w.attempted,
                "retry_scheduled": w.retry_scheduled,
                "rejected": w.rejected,
                "lag": w.lag,
                "dead_letter_topic": w.dead_letter_topic,
                "dead_lettered": w.dead_lettered,
                "damage": w.damage.as_ref().map(ToString::to_string),
            })
        })
        .collect();
    json!({
        "name": topic.name,
        "config": {
            "durability": durability,
            "segment_bytes": config.segment_bytes,
            "max_message_bytes": config.max_message_bytes,
            "retention_bytes": config.retention_bytes,
            "retention_age_ms": config.retention_age.map(|d| d.as_millis() as u64),
        },
        "clean_shutdown": topic.clean_shutdown,
        "oldest": topic.oldest.get(),
        "end": topic.end.get(),
        "records": topic.end.get().saturating_sub(topic.oldest.get()),
        "bytes": topic.bytes,
        "segments": segments,
        "groups": groups,
        "workers": workers,
        "notes": topic.notes,
    })
}

fn durability(durability: Durability) -> String {
    match durability {
        Durability::Buffered => "buffered".to_owned(),
        Durability::Sync => "sync".to_owned(),
        Durability::Interval(d) => format!("synced every {d:?}"),
    }
}

fn retention(config: &TopicConfig) -> String {
    match (config.retention_bytes, config.retention_age) {
        (None, None) => "kept forever".to_owned(),
        (Some(bytes), None) => format!("kept up to {}", human_bytes(bytes)),
        (None, Some(age)) => format!("kept for {age:?}"),
        (Some(bytes), Some(age)) => format!("kept up to {} and for {age:?}", human_bytes(bytes)),
    }
}

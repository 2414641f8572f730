//! `tollgate tail`: prints a topic's last records and, with `-f`, goes on
//! printing the new ones as they are published.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use tollgate::ReadError;

use crate::open::{open_dir, open_records, read_failure, topic_failure};
use crate::record::{Style, write_record};
use crate::{Failure, note};

/// Runs `tollgate tail`: the last `count` records, then, when `follow` is
/// set, new ones, looking every `follow` interval.
pub(super) fn tail(dir: &Path, topic: &str, count: u64, follow: Option<Duration>, style: Style) -> Result<u8, Failure> {
    let (data, _) = open_dir(dir)?;
    let offsets = data.offsets(topic).map_err(|e| topic_failure(dir, e))?;
    let from = offsets.end.get().saturating_sub(count).max(offsets.start.get());
    let mut records = open_records(&data, topic, Some(from))?;
    let mut out = BufWriter::new(io::stdout().lock());
    loop {
        loop {
            match records.next() {
                Ok(Some(record)) => write_record(&mut out, &record, style)?,
                Ok(None) => break,
                Err(ReadError::Deleted) if follow.is_some() => {
                    out.flush()?;
                    note(&format!(
                        "tollgate: topic {topic:?} was deleted (and maybe created again): stopped following"
                    ));
                    return Ok(0);
                }
                Err(e) => {
                    out.flush()?;
                    return Err(read_failure(topic, e));
                }
            }
        }
        out.flush()?;
        let Some(interval) = follow else { return Ok(0) };
        std::thread::sleep(interval);
    }
}

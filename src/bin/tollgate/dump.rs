//! `tollgate dump`: prints a topic's records from an offset, one per line,
//! as text or JSON.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::Failure;
use crate::open::{open_dir, open_records, read_failure};
use crate::record::{Style, write_record};

/// Runs `tollgate dump`: at most `limit` records from `from`.
pub(super) fn dump(
    dir: &Path,
    topic: &str,
    from: Option<u64>,
    limit: Option<u64>,
    style: Style,
) -> Result<u8, Failure> {
    let (data, _) = open_dir(dir)?;
    let mut records = open_records(&data, topic, from)?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut printed = 0;
    while limit.is_none_or(|limit| printed < limit) {
        match records.next() {
            Ok(Some(record)) => write_record(&mut out, &record, style)?,
            Ok(None) => break,
            Err(e) => {
                out.flush()?;
                return Err(read_failure(topic, e));
            }
        }
        printed += 1;
    }
    out.flush()?;
    Ok(0)
}

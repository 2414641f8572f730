//! The one frame scanner: recovery's walk over a segment's frames, each
//! checked completely (`check_frame`) and in offset order, until the first
//! invalid frame or the end of the data. The engine runs it over a segment's
//! mapping (`Segment::scan`: recovery, first reads of a sealed segment,
//! `Topic::verify`); `inspect` runs it over positional reads of the file, so
//! that a directory in use is never mapped. Both therefore stop at the same
//! byte for the same reason.

use std::convert::Infallible;

use super::format::all_zero;
use super::record::{FrameFault, FrameInfo, check_frame};

/// Where a segment's bytes are read from.
pub(crate) trait FrameSource {
    /// What reading can fail with (nothing, for a mapping).
    type Error;

    /// The frame at `position`, whose first offset must be `expected`,
    /// checked completely.
    fn frame(&mut self, position: u64, expected: u64) -> Result<Result<FrameInfo, FrameFault>, Self::Error>;

    /// Whether every byte from `position` to the end of the data is zero:
    /// space allocated ahead of the writer, which ends the log as cleanly as
    /// the end of the file does.
    fn zeros_from(&mut self, position: u64) -> Result<bool, Self::Error>;
}

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameScan {
    /// Position after the last valid frame.
    pub end: u64,
    /// Offset after the last valid frame's records.
    pub next_offset: u64,
    /// Where and why the scan stopped before the end of the data, unless it
    /// stopped at a clean end (a zero frame size followed by zeros only, or
    /// the end of the bytes).
    pub fault: Option<(u64, FrameFault)>,
}

/// Why a segment's data ends where it should not.
pub(crate) const ENDS_EARLY: &str = "the segment ends before the next segment begins";

impl FrameScan {
    /// Where and why the scanned segment's data is not whole: its first
    /// invalid frame, or valid frames that stop short of `next`, the offset
    /// where the next segment begins (for the last segment, where the log is
    /// known to end; `None` if that is not known). The position is the byte
    /// where the valid data stops.
    pub(crate) fn ends_early(&self, next: Option<u64>) -> Option<(u64, &'static str)> {
        match (self.fault, next) {
            (Some((position, fault)), _) => Some((position, fault.reason())),
            (None, Some(next)) if next != self.next_offset => Some((self.end, ENDS_EARLY)),
            _ => None,
        }
    }
}

/// Scans frames from `position`, where the frame holding offset `next` is
/// expected, until the first invalid frame or the end of the data.
/// `on_frame` sees each valid frame and its position, in order.
pub(crate) fn scan_frames<S: FrameSource>(
    source: &mut S,
    mut position: u64,
    mut next: u64,
    mut on_frame: impl FnMut(u64, &FrameInfo),
) -> Result<FrameScan, S::Error> {
    loop {
        let fault = match source.frame(position, next)? {
            Ok(info) => {
                debug_assert_eq!(info.first_offset, next, "check_frame accepts only the expected offset");
                on_frame(position, &info);
                position += info.len as u64;
                next = info.end_offset();
                continue;
            }
            Err(FrameFault::End) if source.zeros_from(position)? => None,
            Err(fault) => Some((position, fault)),
        };
        return Ok(FrameScan { end: position, next_offset: next, fault });
    }
}

/// A segment's bytes in memory (its mapping, up to a limit).
pub(crate) struct InMemory<'a>(pub &'a [u8]);

impl FrameSource for InMemory<'_> {
    type Error = Infallible;

    fn frame(&mut self, position: u64, expected: u64) -> Result<Result<FrameInfo, FrameFault>, Infallible> {
        Ok(check_frame(self.0.get(position as usize..).unwrap_or_default(), expected))
    }

    fn zeros_from(&mut self, position: u64) -> Result<bool, Infallible> {
        Ok(all_zero(self.0.get(position as usize..).unwrap_or_default()))
    }
}

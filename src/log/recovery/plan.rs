//! The recovery rules of `docs/FORMAT.md` (rules 1–3) as a pure function of
//! what a topic directory holds: its segment files' bases and its
//! checkpoint. Opening a topic (`recovery/mod.rs`) executes the plan;
//! `inspect` reports on a directory by the same plan, so both always agree
//! on which segments are trusted, which are scanned, and what an invalid
//! frame means where it is found.

use super::RecoveryMode;
use crate::log::slots::{Checkpoint, CleanMark};

/// What an invalid frame means where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CutKind {
    /// Damage where recovery trusts the data: opening the topic, or reading
    /// there, fails; `RecoveryMode::Repair` cuts the log here.
    Corrupt,
    /// The end of the log after an unclean shutdown, in data written since
    /// the last checkpoint: the next open cuts the log here, as recovery does.
    TornTail,
    /// The frame being written, in the last segment of a directory a running
    /// process holds open.
    IncompleteTail,
}

/// Which of a topic's segments recovery trusts and which it scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Number of segments.
    segments: usize,
    /// Index of the first segment recovery scans; those before it are
    /// trusted (rule 2). Always a valid index when there are segments: at
    /// least the last one is scanned.
    pub first_scanned: usize,
    /// Rule 1: the checkpoint records a clean shutdown of the last segment,
    /// which must end exactly here; only that segment is scanned.
    pub clean: Option<CleanMark>,
}

impl Plan {
    /// The plan for a topic whose segment files start at `bases` (sorted)
    /// and whose checkpoint's newest valid value is `checkpoint`, opened in
    /// `mode`.
    pub(crate) fn new(bases: &[u64], checkpoint: Option<Checkpoint>, mode: RecoveryMode) -> Plan {
        let last = bases.len().saturating_sub(1);
        let checkpoint = checkpoint.unwrap_or_default();
        let clean = match mode {
            RecoveryMode::Normal if Some(&checkpoint.recovery_point) == bases.last() => checkpoint.clean,
            _ => None,
        };
        let recovery_point = match mode {
            RecoveryMode::Normal => checkpoint.recovery_point,
            // Repair scans everything.
            RecoveryMode::Repair => 0,
        };
        let first_scanned =
            if clean.is_some() { last } else { bases.iter().position(|&base| base >= recovery_point).unwrap_or(last) };
        debug_assert!(bases.is_empty() || first_scanned <= last);
        Plan { segments: bases.len(), first_scanned, clean }
    }

    /// What an invalid frame in segment `i` means. With `live`, a running
    /// process holds the directory and is writing the last segment.
    pub(crate) fn cut_kind(&self, i: usize, live: bool) -> CutKind {
        let last = i + 1 == self.segments;
        if i < self.first_scanned || last && self.clean.is_some() {
            CutKind::Corrupt
        } else if live && last {
            CutKind::IncompleteTail
        } else {
            CutKind::TornTail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(recovery_point: u64, clean: Option<(u64, u32)>) -> Option<Checkpoint> {
        let clean = clean.map(|(next_offset, end)| CleanMark { next_offset, end });
        Some(Checkpoint { recovery_point, clean })
    }

    #[test]
    fn a_clean_shutdown_of_the_last_segment_scans_only_it_and_trusts_the_rest() {
        let plan = Plan::new(&[0, 100, 200], checkpoint(200, Some((250, 4000))), RecoveryMode::Normal);
        assert_eq!((plan.first_scanned, plan.clean), (2, Some(CleanMark { next_offset: 250, end: 4000 })));
        let kinds: Vec<CutKind> = (0..3).map(|i| plan.cut_kind(i, false)).collect();
        assert_eq!(kinds, [CutKind::Corrupt; 3]);
    }

    #[test]
    fn an_unclean_shutdown_scans_from_the_recovery_point_and_cuts_a_torn_tail() {
        let plan = Plan::new(&[0, 100, 200], checkpoint(100, None), RecoveryMode::Normal);
        assert_eq!((plan.first_scanned, plan.clean), (1, None));
        let kinds: Vec<CutKind> = (0..3).map(|i| plan.cut_kind(i, false)).collect();
        assert_eq!(kinds, [CutKind::Corrupt, CutKind::TornTail, CutKind::TornTail]);
    }

    #[test]
    fn a_clean_mark_of_another_segment_is_not_trusted() {
        // The mark names segment 100, but 200 exists: the mark is stale.
        let plan = Plan::new(&[0, 100, 200], checkpoint(100, Some((150, 900))), RecoveryMode::Normal);
        assert_eq!((plan.first_scanned, plan.clean), (1, None));
    }

    #[test]
    fn without_a_checkpoint_everything_is_scanned() {
        let plan = Plan::new(&[0, 100], None, RecoveryMode::Normal);
        assert_eq!(plan.first_scanned, 0);
        assert_eq!(plan.cut_kind(0, false), CutKind::TornTail);
    }

    #[test]
    fn a_recovery_point_past_every_segment_still_scans_the_last() {
        let plan = Plan::new(&[0, 100], checkpoint(500, None), RecoveryMode::Normal);
        assert_eq!(plan.first_scanned, 1);
    }

    #[test]
    fn repair_scans_every_segment_and_ignores_a_clean_mark() {
        let plan = Plan::new(&[0, 100, 200], checkpoint(200, Some((250, 4000))), RecoveryMode::Repair);
        assert_eq!((plan.first_scanned, plan.clean), (0, None));
    }

    #[test]
    fn the_last_segment_of_a_directory_in_use_is_an_incomplete_tail() {
        let plan = Plan::new(&[0, 100, 200], checkpoint(100, None), RecoveryMode::Normal);
        assert_eq!(plan.cut_kind(2, true), CutKind::IncompleteTail);
        assert_eq!(plan.cut_kind(1, true), CutKind::TornTail);
        assert_eq!(plan.cut_kind(0, true), CutKind::Corrupt);
    }
}

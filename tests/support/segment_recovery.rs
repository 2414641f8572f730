//! One segment's bytes through recovery's view of a segment (through
//! `tollgate::fuzzing`, feature `fuzzing`): the engine's one frame scanner
//! (`log/scan.rs`) over the bytes as a mapping and as `inspect` reads a file,
//! and the recovery plan (`log/recovery/plan.rs`) for a topic holding the
//! segment. Shared by the `segment_recovery` fuzz target
//! (`fuzz/fuzz_targets/segment_recovery.rs`) and `tests/fuzz_replay.rs`,
//! which runs it over `fuzz/corpus/segment_recovery/`; the seeds are a real
//! engine's segments ([`write_seeds`]).
//!
//! Encoding: byte 0 picks the base offset the file name gives (bits 0-1:
//! the header's own base field, 0, the header's base plus one, or
//! `u64::MAX - 1`) and the window `inspect` reads through (bits 2-4, see
//! [`WINDOWS`]); byte 1 the topic around the segment for the plan (bit 0:
//! `repair`; bits 1-2: the segment alone, after one at `base - 1`, before one
//! at the offset where its frames end, or before one that leaves a gap;
//! bits 3-5: the checkpoint, see [`checkpoint`]); the rest is the segment
//! file.
//!
//! Checked on every input:
//!
//! - nothing panics; a file shorter than a header has a damaged header;
//! - the scan's frames follow each other from the header's end, at
//!   consecutive offsets from the base, inside the bytes; it ends where the
//!   last one ends, at the offset after its records; a fault is placed at
//!   the end; without one, only zeros follow the end;
//! - every frame accepted reads (`check_frame`, then the walk over its
//!   records, `OpenFrame`) as exactly its record count, at its offsets;
//! - idempotence: the bytes cut at the end (what recovery keeps), and with
//!   zeros after them (space allocated again), scan to the same frames and
//!   end, with no fault;
//! - `inspect`'s reader (positional reads through a window) finds the same
//!   header verdict and stops at the same byte for the same reason;
//! - `ends_early`: the fault, or valid frames short of a next segment that
//!   does not start where they end;
//! - the plan follows rules 1-3 of `docs/FORMAT.md`: `repair` scans every
//!   segment and trusts no clean mark; a plain open trusts a clean mark only
//!   for the last segment and then scans only it; otherwise it scans from
//!   the first segment at or above the recovery point (at least the last);
//!   damage before the first scanned segment, or in a cleanly closed one, is
//!   corruption; elsewhere a torn tail, or in the last segment of a
//!   directory in use, an incomplete tail.

use tollgate::fuzzing::{self, CheckpointValue, HeaderVerdict, SegmentScan};
use tollgate::inspect::CutKind;

/// The windows `inspect`'s reader reads through, by bits 2-4 of byte 0.
pub const WINDOWS: [usize; 8] = [1, 7, 32, 33, 100, 512, 4096, 4 << 20];

/// Runs one input with every check; panics if one fails.
pub fn run(data: &[u8]) {
    let [scan_spec, plan_spec, bytes @ ..] = data else { return };
    let header_base = bytes.get(16..24).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("eight bytes")));
    let base = match scan_spec & 3 {
        0 => header_base,
        1 => 0,
        2 => header_base.wrapping_add(1),
        _ => u64::MAX - 1,
    };
    let window = WINDOWS[usize::from(scan_spec >> 2 & 7)];
    let scan = fuzzing::scan_segment(bytes, base);
    check_scan(bytes, base, &scan);
    check_idempotent(bytes, base, &scan);
    assert_eq!(
        fuzzing::scan_segment_windowed(bytes, base, window),
        (scan.header, scan.end),
        "inspect's reader (window {window}) and the scan of a mapping disagree"
    );
    check_ends_early(&scan);
    check_plan(base, &scan, *plan_spec);
}

fn check_scan(bytes: &[u8], base: u64, scan: &SegmentScan) {
    let header = fuzzing::SEGMENT_HEADER_BYTES;
    if bytes.len() < header {
        assert!(
            matches!(scan.header, HeaderVerdict::Damaged { .. }),
            "a {}-byte header: {:?}",
            bytes.len(),
            scan.header
        );
        return;
    }
    if let HeaderVerdict::Damaged { at, .. } = scan.header {
        assert!(at < header, "header damage placed at {at}");
    }
    if let HeaderVerdict::Newer(found) = scan.header {
        assert!(found > fuzzing::VERSION, "newer version {found}");
    }
    let (mut position, mut next) = (header as u64, base);
    for (i, frame) in scan.frames.iter().enumerate() {
        assert_eq!((frame.position, frame.first_offset), (position, next), "frame {i} does not follow");
        assert!(frame.count > 0, "frame {i} holds no record");
        let end = frame.position + frame.len as u64;
        assert!(end <= bytes.len() as u64, "frame {i} ends at {end}, past {} bytes", bytes.len());
        let read = fuzzing::read_frame(&bytes[frame.position as usize..], frame.first_offset)
            .unwrap_or_else(|reason| panic!("frame {i} at {position}, accepted by the scan, does not read: {reason}"));
        assert_eq!((read.len, read.first_offset.get()), (frame.len, frame.first_offset), "frame {i} reads otherwise");
        assert_eq!(read.records.len(), frame.count as usize, "frame {i}'s records");
        for (j, record) in read.records.iter().enumerate() {
            assert_eq!(record.offset().get(), frame.first_offset + j as u64, "frame {i}, record {j}");
        }
        position = end;
        next = frame.first_offset + u64::from(frame.count);
    }
    assert_eq!((scan.end.end, scan.end.next_offset), (position, next), "the scan ends after its last frame");
    match scan.end.fault {
        Some((at, reason)) => assert_eq!(at, position, "a fault ({reason}) placed away from the end"),
        None => {
            assert!(bytes[position as usize..].iter().all(|&b| b == 0), "a clean end at {position} with data after it")
        }
    }
}

/// What recovery keeps (the bytes up to the end), and that with zeros after
/// it, scans the same, with no fault.
fn check_idempotent(bytes: &[u8], base: u64, scan: &SegmentScan) {
    let Ok(end) = usize::try_from(scan.end.end) else { return };
    if end > bytes.len() {
        return;
    }
    let mut kept = bytes[..end].to_vec();
    for zeros in [0, 1, 64] {
        kept.resize(end + zeros, 0);
        let again = fuzzing::scan_segment(&kept, base);
        assert_eq!(again.header, scan.header, "cut at {end}, {zeros} zeros after: the header");
        assert_eq!(again.frames, scan.frames, "cut at {end}, {zeros} zeros after: the frames");
        assert_eq!(
            (again.end.end, again.end.next_offset, again.end.fault),
            (scan.end.end, scan.end.next_offset, None),
            "cut at {end}, {zeros} zeros after: the end"
        );
    }
}

fn check_ends_early(scan: &SegmentScan) {
    let fault = scan.end.fault;
    assert_eq!(scan.ends_early(None), fault, "without a next segment");
    assert_eq!(scan.ends_early(Some(scan.end.next_offset)), fault, "with the next segment where the frames end");
    for next in [scan.end.next_offset.wrapping_add(1), scan.end.next_offset.wrapping_sub(1), 0] {
        if next == scan.end.next_offset {
            continue;
        }
        let expected = fault.or(Some((scan.end.end, fuzzing::ENDS_EARLY)));
        assert_eq!(scan.ends_early(Some(next)), expected, "with the next segment at {next}");
    }
}

/// The checkpoint for the plan, by bits 3-5 of byte 1: none; this segment's
/// base as the recovery point, unclean; the same with a clean mark where its
/// frames end; that mark one byte or one offset off; recovery point 0 or
/// `u64::MAX`, unclean; the other segment's base with this segment's mark.
fn checkpoint(spec: u8, base: u64, other: Option<u64>, scan: &SegmentScan) -> Option<CheckpointValue> {
    let (next, end) = (scan.end.next_offset, u32::try_from(scan.end.end).unwrap_or(u32::MAX));
    let value = |recovery_point, clean| Some(CheckpointValue { recovery_point, clean });
    match spec & 7 {
        0 => None,
        1 => value(base, None),
        2 => value(base, Some((next, end))),
        3 => value(base, Some((next, end.wrapping_add(1)))),
        4 => value(base, Some((next.wrapping_add(1), end))),
        5 => value(0, None),
        6 => value(u64::MAX, None),
        _ => value(other.unwrap_or(base), Some((next, end))),
    }
}

fn check_plan(base: u64, scan: &SegmentScan, spec: u8) {
    let repair = spec & 1 == 1;
    let next = scan.end.next_offset;
    let bases = match spec >> 1 & 3 {
        1 if base > 0 => vec![base - 1, base],
        2 if next > base => vec![base, next],
        3 if next.checked_add(1).is_some() => vec![base, next + 1],
        _ => vec![base],
    };
    let other = bases.iter().copied().find(|&b| b != base);
    let checkpoint = checkpoint(spec >> 3, base, other, scan);
    let plan = fuzzing::recovery_plan(&bases, checkpoint, repair);
    let what = format!("bases {bases:?}, checkpoint {checkpoint:?}, repair {repair}: {plan:?}");
    let last = bases.len() - 1;
    let checkpoint = checkpoint.unwrap_or(CheckpointValue { recovery_point: 0, clean: None });
    let clean = checkpoint.clean.filter(|_| !repair && checkpoint.recovery_point == bases[last]);
    assert_eq!(plan.clean, clean, "{what}: the clean mark trusted");
    let first_scanned = if repair {
        0
    } else if clean.is_some() {
        last
    } else {
        bases.iter().position(|&b| b >= checkpoint.recovery_point).unwrap_or(last)
    };
    assert_eq!(plan.first_scanned, first_scanned, "{what}: the first segment scanned");
    for (i, (&kind, &live_kind)) in plan.cut_kinds.iter().zip(&plan.live_cut_kinds).enumerate() {
        let corrupt = i < first_scanned || (i == last && clean.is_some());
        let (expected, expected_live) = match (corrupt, i == last) {
            (true, _) => (CutKind::Corrupt, CutKind::Corrupt),
            (false, true) => (CutKind::TornTail, CutKind::IncompleteTail),
            (false, false) => (CutKind::TornTail, CutKind::TornTail),
        };
        assert_eq!((kind, live_kind), (expected, expected_live), "{what}: segment {i}");
    }
    assert_eq!(plan.cut_kinds.len(), bases.len(), "{what}: one cut kind per segment");
    if let Some(i) = bases.iter().position(|&b| b == base)
        && let Some(&next_base) = bases.get(i + 1)
        && plan.first_scanned <= i
    {
        // Recovery cuts a scanned segment that does not reach the next one.
        let reaches = scan.end.fault.is_none() && next_base == scan.end.next_offset;
        assert_eq!(scan.ends_early(Some(next_base)).is_none(), reaches, "{what}: the cut before {next_base}");
    }
}

/// Writes the seeds, `corpus/segment_recovery/seed-*`: the segments of real
/// topics (4 KiB segments; records with keys, headers and in batches), the
/// sealed ones, the active one closed cleanly, and the active one copied while
/// the engine held it open (with the space allocated ahead of the writer), each with a few
/// choices of the plan's topic around it.
pub fn write_seeds(corpus: &std::path::Path) {
    use tollgate::{Durability, Engine, Message, TopicConfig};
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let dir = scratch.path().join("data");
    let engine = Engine::open(&dir).expect("open");
    let config = TopicConfig {
        durability: Durability::Sync,
        segment_bytes: 4096,
        max_message_bytes: 1024,
        ..TopicConfig::default()
    };
    let topic = engine.create_topic("t", config).expect("create");
    for i in 0..90u8 {
        match i % 5 {
            0 => topic.publish_batch((0..3usize).map(|j| Message::new(vec![b'b'; j * 9]))).map(|_| ()),
            1 => topic.publish_message(Message::new("keyed").key(format!("order.{i}"))).map(|_| ()),
            2 => topic.publish_message(Message::new("headers").header("type", "created").priority(3)).map(|_| ()),
            _ => topic.publish(vec![i; usize::from(i) * 4]).map(|_| ()),
        }
        .expect("publish");
    }
    let segments = |dir: &std::path::Path| {
        let mut paths: Vec<_> = std::fs::read_dir(dir.join("topics/t"))
            .expect("list the topic")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "log"))
            .collect();
        paths.sort();
        paths.into_iter().map(|path| std::fs::read(path).expect("read a segment")).collect::<Vec<_>>()
    };
    let open = segments(&dir);
    drop((topic, engine));
    let closed = segments(&dir);
    let target = corpus.join("segment_recovery");
    std::fs::create_dir_all(&target).expect("create the corpus directory");
    for (tag, segments) in [("open", open), ("closed", closed)] {
        let last = segments.len() - 1;
        for (i, segment) in segments.iter().enumerate() {
            if tag == "open" && i != last {
                continue; // as it is closed
            }
            let place = if i == last { "last" } else { "sealed" };
            // (window 7 or 4 MiB) x (alone and clean, before the next segment, after one, in repair)
            for (name, scan_spec, plan_spec) in
                [("alone-clean", 1 << 2, 2 << 3), ("before-next", 7 << 2, 2 << 1 | 1 << 3), ("repair", 0, 1 | 1 << 1)]
            {
                let mut input = vec![scan_spec, plan_spec];
                input.extend_from_slice(segment);
                std::fs::write(target.join(format!("seed-{tag}-{place}-{i}-{name}")), input).expect("write a seed");
            }
        }
    }
}

//! The window of a worker group: the unsettled messages read from the log,
//! each ready (ordered by priority, then offset), delayed (by time), in
//! flight (by deadline) or leaving for the dead-letter topic; the low-water
//! mark and settled offsets around them; and the group's counts.
//!
//! A state machine without I/O. The group (`group.rs`) reads the log and
//! writes the journal; it passes in the records it read and the clock, and
//! makes a change here only once the journal entry that makes it durable is
//! written (`pop_ready` decides, `deliver` or `leave` follows the entry).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::journal::{Facts, Persisted, Settled};
use crate::error::QueueError;
use crate::log::{KeyPattern, Record};

/// A group's counts, from [`Worker::metrics`](crate::Worker::metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueMetrics {
    /// Messages ready to be received now (in the window).
    pub ready: u64,
    /// Messages handed to a worker and not yet settled.
    pub in_flight: u64,
    /// Messages waiting for their delivery time (a delay or a nack's retry delay).
    pub delayed: u64,
    /// Messages published but not yet read into the window (including
    /// any the group's filter will skip).
    pub backlog: u64,
    /// Messages published and not yet settled: ready, in flight, delayed and
    /// backlog.
    pub lag: u64,
    /// Acknowledged since the group was opened in this process.
    pub acked: u64,
    /// Dead-lettered (rejected, or out of attempts) since the group was opened.
    pub dead_lettered: u64,
    /// Deliveries that were a second or later attempt, since the group was opened.
    pub redelivered: u64,
    /// Deliveries whose visibility deadline passed, since the group was opened.
    pub timed_out: u64,
    /// Messages retention deleted before the group settled them, since it was opened.
    pub expired: u64,
    /// Dead letters that could not be published (each is tried again a
    /// second later), since the group was opened.
    pub dead_letter_failures: u64,
}

pub(super) struct Window {
    /// Low-water mark and settled offsets (in memory, and as far as the
    /// journal goes, on disk); attempts and delays of messages not yet read.
    persisted: Persisted,
    /// Boxed: the map moves its values around as it changes.
    tracked: BTreeMap<u64, Box<Tracked>>,
    /// (priority, offset) of ready messages: highest priority, then lowest offset, first.
    ready: BTreeSet<(Reverse<u8>, u64)>,
    /// (time, offset) of delayed messages.
    delayed: BTreeSet<(u64, u64)>,
    /// (deadline, offset) of messages in flight.
    deadlines: BTreeSet<(Instant, u64)>,
    next_token: u64,
    /// What happened since the group was opened; the counts of the sets
    /// are filled in by `metrics`.
    counters: QueueMetrics,
}

/// An unsettled message in the window.
struct Tracked {
    record: Record,
    priority: u8,
    attempts: u32,
    retry_at_us: u64,
    state: State,
    /// Why the last attempt failed, for the dead letter.
    last_error: Option<Arc<str>>,
    /// Rejected, and its dead letter failed: dead-letter it, never deliver it.
    rejected: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    Delayed(u64),
    InFlight {
        deadline: Instant,
        token: u64,
    },
    /// Being published to the dead-letter topic.
    Leaving,
}

/// What the best ready message is for, from `pop_ready`. It is out of the
/// ready set: the group journals the decision, then calls `deliver` or
/// `leave`, or `unpop` if the journal write failed.
pub(super) enum Next {
    /// Deliver it as `attempt`, once a `Delivered` entry is written.
    Deliver { offset: u64, attempt: u32 },
    /// Dead-letter it (rejected, or its attempts are used up), once the
    /// decision (a `Rejected` entry) is written.
    DeadLetter { offset: u64, record: Record, attempts: u32, reason: Arc<str> },
    /// Nothing ready; the next delay or deadline ends then.
    Nothing(Option<Instant>),
}

impl Window {
    /// An empty window over `persisted`, the group's saved state.
    pub(super) fn new(persisted: Persisted) -> Window {
        Window {
            persisted,
            tracked: BTreeMap::new(),
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            next_token: 0,
            counters: QueueMetrics::default(),
        }
    }

    /// Messages in the window.
    pub(super) fn len(&self) -> usize {
        self.tracked.len()
    }

    /// Whether another message may be read into a window of `capacity`
    /// (the group's `window`).
    pub(super) fn has_room(&self, capacity: usize) -> bool {
        self.tracked.len() < capacity
    }

    /// Takes `record`, just read from the log, into the window: ready, or
    /// delayed until its delivery or retry time. A settled record, or one
    /// that is not the group's (`filter`), is skipped.
    pub(super) fn admit(&mut self, record: Record, now_us: u64, filter: Option<&KeyPattern>) {
        let offset = record.offset().get();
        if !self.persisted.is_open(offset) {
            return;
        }
        if filter.is_some_and(|f| !f.matches_record(record.key())) {
            // Not the group's: settled without a journal entry, as
            // reading the log again filters it out again.
            self.persisted.settle(offset);
            return;
        }
        let facts = self.persisted.facts.remove(&offset).unwrap_or_default();
        let priority = record.priority();
        let ready_at = record.deliver_at_us().unwrap_or(0).max(facts.retry_at_us);
        let state = if ready_at > now_us {
            self.delayed.insert((ready_at, offset));
            State::Delayed(ready_at)
        } else {
            self.ready.insert((Reverse(priority), offset));
            State::Ready
        };
        let tracked = Tracked {
            record,
            priority,
            attempts: facts.attempts,
            retry_at_us: facts.retry_at_us,
            state,
            last_error: None,
            rejected: facts.rejected,
        };
        self.tracked.insert(offset, Box::new(tracked));
    }

    /// Retention deleted `[from, to)` before the group read it: what was
    /// unsettled there is counted as expired, and all of it settled.
    pub(super) fn lost(&mut self, from: u64, to: u64) {
        let lost = (from..to).filter(|&o| self.persisted.is_open(o)).count();
        self.counters.expired += lost as u64;
        self.persisted.settle_range(from, to);
    }

    /// Gives messages whose visibility deadline passed back to the group.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, offset)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(tracked) = self.tracked.get_mut(&offset) {
                tracked.state = State::Ready;
                tracked.last_error = Some("its visibility timeout passed".into());
                self.ready.insert((Reverse(tracked.priority), offset));
                self.counters.timed_out += 1;
            }
        }
    }

    /// Makes delayed messages whose time has come ready.
    pub(super) fn promote(&mut self, now_us: u64) {
        while let Some(&(at_us, offset)) = self.delayed.first() {
            if at_us > now_us {
                break;
            }
            self.delayed.pop_first();
            if let Some(tracked) = self.tracked.get_mut(&offset) {
                tracked.state = State::Ready;
                self.ready.insert((Reverse(tracked.priority), offset));
            }
        }
    }

    /// Takes the best ready message (highest priority, then lowest offset)
    /// out of the ready set and says what it is for: a delivery, or a dead
    /// letter if it was rejected or has had `max_attempts`.
    pub(super) fn pop_ready(&mut self, now: Instant, now_us: u64, max_attempts: u32) -> Next {
        let Some((Reverse(_), offset)) = self.ready.pop_first() else {
            let delayed =
                self.delayed.first().map(|&(at_us, _)| now + Duration::from_micros(at_us - now_us.min(at_us)));
            let deadline = self.deadlines.first().map(|&(at, _)| at);
            return Next::Nothing(earliest(delayed, deadline));
        };
        let tracked = self.tracked.get(&offset).expect("ready messages are tracked");
        if tracked.attempts >= max_attempts || tracked.rejected {
            let reason =
                tracked.last_error.clone().unwrap_or_else(|| "its last attempt was cut short by a restart".into());
            return Next::DeadLetter { offset, record: tracked.record.clone(), attempts: tracked.attempts, reason };
        }
        Next::Deliver { offset, attempt: tracked.attempts + 1 }
    }

    /// Puts a message `pop_ready` took back into the ready set: the journal
    /// entry for it could not be written.
    pub(super) fn unpop(&mut self, offset: u64) {
        let tracked = self.tracked.get(&offset).expect("ready messages are tracked");
        self.ready.insert((Reverse(tracked.priority), offset));
    }

    /// Hands out the message `pop_ready` took, as `attempt`, in flight until
    /// `deadline`. Returns it and the delivery's token.
    pub(super) fn deliver(&mut self, offset: u64, attempt: u32, deadline: Instant) -> (Record, u64) {
        let token = self.next_token;
        self.next_token += 1;
        let tracked = self.tracked.get_mut(&offset).expect("ready messages are tracked");
        tracked.attempts = attempt;
        tracked.state = State::InFlight { deadline, token };
        let record = tracked.record.clone();
        self.deadlines.insert((deadline, offset));
        if attempt > 1 {
            self.counters.redelivered += 1;
        }
        (record, token)
    }

    /// Checks that the delivery `token` of `offset` is still in flight and
    /// before its deadline (expiring it if not).
    pub(super) fn check_mine(&mut self, offset: u64, token: u64, now: Instant) -> Result<(), QueueError> {
        self.expire(now);
        match self.tracked.get(&offset).map(|t| t.state) {
            Some(State::InFlight { token: t, .. }) if t == token => Ok(()),
            _ => Err(QueueError::Expired { offset }),
        }
    }

    /// Moves the deadline of the in-flight delivery `token` of `offset` to
    /// `deadline`.
    pub(super) fn extend(&mut self, offset: u64, token: u64, deadline: Instant) {
        if let Some(tracked) = self.tracked.get_mut(&offset) {
            if let State::InFlight { deadline: old, .. } = tracked.state {
                self.deadlines.remove(&(old, offset));
            }
            self.deadlines.insert((deadline, offset));
            tracked.state = State::InFlight { deadline, token };
        }
    }

    /// Whether the message at `offset` was rejected (it has a `Rejected`
    /// entry already).
    pub(super) fn is_rejected(&self, offset: u64) -> bool {
        self.tracked.get(&offset).is_some_and(|tracked| tracked.rejected)
    }

    /// Takes the message at `offset` (in flight, or just taken from the ready
    /// set) out of circulation, rejected, to be dead-lettered: nobody can
    /// receive or settle it until it is settled or given back.
    pub(super) fn leave(&mut self, offset: u64) {
        if let Some(tracked) = self.tracked.get_mut(&offset) {
            tracked.rejected = true;
            if let State::InFlight { deadline, .. } = tracked.state {
                self.deadlines.remove(&(deadline, offset));
            }
            tracked.state = State::Leaving;
        }
    }

    /// An in-flight (or leaving) message failed: ready again, or delayed
    /// until `retry_at_us`.
    pub(super) fn give_back(&mut self, offset: u64, retry_at_us: u64, reason: Arc<str>, now_us: u64) {
        let Some(tracked) = self.tracked.get_mut(&offset) else { return };
        if let State::InFlight { deadline, .. } = tracked.state {
            self.deadlines.remove(&(deadline, offset));
        }
        tracked.last_error = Some(reason);
        tracked.retry_at_us = retry_at_us;
        if retry_at_us > now_us {
            tracked.state = State::Delayed(retry_at_us);
            self.delayed.insert((retry_at_us, offset));
        } else {
            tracked.state = State::Ready;
            self.ready.insert((Reverse(tracked.priority), offset));
        }
    }

    /// A leaving message's dead letter failed: given back, held until
    /// `retry_at_us`, and counted.
    pub(super) fn dead_letter_failed(&mut self, offset: u64, retry_at_us: u64, reason: Arc<str>, now_us: u64) {
        self.give_back(offset, retry_at_us, reason, now_us);
        self.counters.dead_letter_failures += 1;
    }

    /// Removes a settled message from the window, moves the low-water mark
    /// over it if it can, and counts it.
    pub(super) fn settle(&mut self, offset: u64, how: Settled) {
        if let Some(tracked) = self.tracked.remove(&offset) {
            match tracked.state {
                State::InFlight { deadline, .. } => {
                    self.deadlines.remove(&(deadline, offset));
                }
                State::Ready => {
                    self.ready.remove(&(Reverse(tracked.priority), offset));
                }
                State::Delayed(at) => {
                    self.delayed.remove(&(at, offset));
                }
                State::Leaving => {}
            }
        }
        self.persisted.settle(offset);
        match how {
            Settled::Acked => self.counters.acked += 1,
            Settled::DeadLettered => self.counters.dead_lettered += 1,
        }
    }

    /// The whole state, to write out as the next generation's state file
    /// when the journal is compacted: what is persisted, and the attempts,
    /// delays and rejections of the messages in the window.
    pub(super) fn snapshot(&self) -> Persisted {
        let mut snapshot = self.persisted.clone();
        snapshot.generation += 1;
        for (&offset, tracked) in &self.tracked {
            if tracked.attempts > 0 || tracked.retry_at_us > 0 || tracked.rejected {
                let facts =
                    Facts { attempts: tracked.attempts, retry_at_us: tracked.retry_at_us, rejected: tracked.rejected };
                snapshot.facts.insert(offset, facts);
            }
        }
        snapshot
    }

    /// The `snapshot` of `generation` is on disk: the new journal continues it.
    pub(super) fn compacted(&mut self, generation: u64) {
        self.persisted.generation = generation;
    }

    /// The counts, with `end` the log's committed end; all but `backlog`,
    /// which depends on how far the group has read.
    pub(super) fn metrics(&self, end: u64) -> QueueMetrics {
        let mut metrics = self.counters;
        metrics.ready = self.ready.len() as u64;
        metrics.delayed = self.delayed.len() as u64;
        // In flight: handed out, or being dead-lettered.
        metrics.in_flight = (self.tracked.len() - self.ready.len() - self.delayed.len()) as u64;
        let persisted = &self.persisted;
        metrics.lag = end.saturating_sub(persisted.low).saturating_sub(persisted.settled.len());
        metrics
    }
}

/// The earlier of two optional times.
pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::log::Message;

    const MAX_ATTEMPTS: u32 = 3;

    /// The record of `message` at `offset`, as the log would hand it out.
    fn record(offset: u64, message: Message) -> Record {
        let mut entry = vec![0; message.entry_bytes().expect("a valid message")];
        message.encode_entry(&mut entry);
        Record::decode(&Bytes::from(entry), 0, offset, 0).0
    }

    /// A window holding offsets `0..`, one message a priority.
    fn window_of(priorities: &[u8], now_us: u64) -> Window {
        let mut window = Window::new(Persisted::default());
        for (offset, &priority) in priorities.iter().enumerate() {
            window.admit(record(offset as u64, Message::new("m").priority(priority)), now_us, None);
        }
        window
    }

    /// Takes the best ready message and delivers it, as `GroupState::take`
    /// does once its `Delivered` entry is written. Returns its offset,
    /// attempt and token.
    fn take(window: &mut Window, now: Instant, now_us: u64) -> Option<(u64, u32, u64)> {
        match window.pop_ready(now, now_us, MAX_ATTEMPTS) {
            Next::Deliver { offset, attempt } => {
                let (_, token) = window.deliver(offset, attempt, now + Duration::from_secs(10));
                Some((offset, attempt, token))
            }
            Next::DeadLetter { offset, .. } => panic!("{offset} is not to be dead-lettered"),
            Next::Nothing(_) => None,
        }
    }

    #[test]
    fn ready_messages_go_by_priority_then_offset() {
        let (now, now_us) = (Instant::now(), 1_000_000);
        let mut window = window_of(&[0, 5, 9, 5, 0], now_us);
        let order: Vec<u64> = std::iter::from_fn(|| take(&mut window, now, now_us)).map(|(o, ..)| o).collect();
        assert_eq!(order, [2, 1, 3, 0, 4]);
        assert_eq!(window.metrics(5).in_flight, 5);
    }

    #[test]
    fn a_give_back_with_a_delay_is_ready_at_its_time() {
        let (now, now_us) = (Instant::now(), 1_000_000);
        let mut window = window_of(&[0], now_us);
        let (offset, ..) = take(&mut window, now, now_us).unwrap();
        window.give_back(offset, now_us + 500, "busy".into(), now_us);
        let metrics = window.metrics(1);
        assert_eq!((metrics.ready, metrics.delayed, metrics.in_flight), (0, 1, 0));
        match window.pop_ready(now, now_us, MAX_ATTEMPTS) {
            Next::Nothing(next) => assert_eq!(next, Some(now + Duration::from_micros(500))),
            _ => panic!("nothing is ready before the retry time"),
        }
        window.promote(now_us + 499);
        assert_eq!(take(&mut window, now, now_us + 499), None);
        window.promote(now_us + 500);
        assert_eq!(take(&mut window, now, now_us + 500).map(|(o, attempt, _)| (o, attempt)), Some((0, 2)));
        assert_eq!(window.metrics(1).redelivered, 1);

        // A give-back without a delay is ready at once.
        window.give_back(offset, 0, "busy".into(), now_us + 500);
        assert_eq!(window.metrics(1).ready, 1);
    }

    #[test]
    fn an_expired_deadline_gives_the_message_back() {
        let (now, now_us) = (Instant::now(), 1_000_000);
        let mut window = window_of(&[0], now_us);
        let (offset, _, token) = take(&mut window, now, now_us).unwrap();
        let deadline = now + Duration::from_secs(10);
        assert!(window.check_mine(offset, token, deadline - Duration::from_millis(1)).is_ok());
        assert!(matches!(window.check_mine(offset, token, deadline), Err(QueueError::Expired { offset: 0 })));
        assert_eq!(window.metrics(1).timed_out, 1);
        let (again, attempt, new_token) = take(&mut window, now, now_us).unwrap();
        assert_eq!((again, attempt), (offset, 2));
        assert!(window.check_mine(offset, token, now).is_err(), "the first delivery's token is spent");
        assert!(window.check_mine(offset, new_token, now).is_ok());
    }

    #[test]
    fn an_extended_deadline_moves() {
        let (now, now_us) = (Instant::now(), 1_000_000);
        let mut window = window_of(&[0], now_us);
        let (offset, _, token) = take(&mut window, now, now_us).unwrap();
        let later = now + Duration::from_secs(60);
        window.extend(offset, token, later);
        assert!(window.check_mine(offset, token, now + Duration::from_secs(30)).is_ok());
        match window.pop_ready(now, now_us, MAX_ATTEMPTS) {
            Next::Nothing(next) => assert_eq!(next, Some(later)),
            _ => panic!("the message is in flight"),
        }
    }

    #[test]
    fn settling_advances_the_low_water_mark() {
        let (now, now_us) = (Instant::now(), 1_000_000);
        let mut window = window_of(&[0, 0, 0], now_us);
        let (first, ..) = take(&mut window, now, now_us).unwrap();
        let (second, ..) = take(&mut window, now, now_us).unwrap();
        window.settle(second, Settled::Acked);
        assert_eq!(window.persisted.low, 0, "offset 0 is not settled yet");
        assert_eq!(window.metrics(3).lag, 2);
        window.settle(first, Settled::DeadLettered);
        assert_eq!(window.persisted.low, 2);
        let metrics = window.metrics(3);
        assert_eq!((metrics.lag, metrics.acked, metrics.dead_lettered, metrics.ready), (1, 1, 1, 1));
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn the_window_is_bounded_and_skips_what_is_not_open() {
        let now_us = 1_000_000;
        let mut persisted = Persisted { low: 1, ..Persisted::default() };
        persisted.settle(3);
        let mut window = Window::new(persisted);
        let filter = KeyPattern::new("order.*").unwrap();
        for offset in 0..5 {
            let key = if offset == 2 { "payment.1" } else { "order.1" };
            window.admit(record(offset, Message::new("m").key(key)), now_us, Some(&filter));
        }
        // 0 is below the mark, 3 settled, 2 not the group's (now settled).
        assert_eq!(window.len(), 2);
        assert!(!window.has_room(2));
        assert!(window.has_room(3));
        assert_eq!((window.persisted.low, window.persisted.settled.len()), (1, 2));
    }

    #[test]
    fn retention_loss_settles_and_counts_only_open_offsets() {
        let mut persisted = Persisted::default();
        persisted.settle(1);
        let mut window = Window::new(persisted);
        window.lost(0, 4);
        assert_eq!(window.persisted.low, 4);
        assert_eq!(window.metrics(4).expired, 3);
    }

    #[test]
    fn a_message_out_of_attempts_leaves_for_the_dead_letter_topic() {
        let (now, now_us) = (Instant::now(), 1_000_000);
        let mut window = window_of(&[0], now_us);
        for attempt in 1..=MAX_ATTEMPTS {
            let (offset, got, _) = take(&mut window, now, now_us).unwrap();
            assert_eq!(got, attempt);
            window.give_back(offset, 0, "failed".into(), now_us);
        }
        let Next::DeadLetter { offset, attempts, reason, .. } = window.pop_ready(now, now_us, MAX_ATTEMPTS) else {
            panic!("its attempts are used up");
        };
        assert_eq!((offset, attempts, &*reason), (0, MAX_ATTEMPTS, "failed"));
        window.leave(offset);
        assert!(window.is_rejected(offset));
        assert_eq!(window.metrics(1).in_flight, 1, "leaving counts as in flight");

        // Its dead letter failed: held back, then dead-lettered again, never delivered.
        window.dead_letter_failed(offset, now_us + 10, "the topic is full".into(), now_us);
        assert_eq!(window.metrics(1).dead_letter_failures, 1);
        window.promote(now_us + 10);
        assert!(matches!(window.pop_ready(now, now_us + 10, u32::MAX), Next::DeadLetter { offset: 0, .. }));
        window.unpop(offset);
        assert_eq!(window.metrics(1).ready, 1);
    }

    #[test]
    fn a_snapshot_keeps_what_is_known_of_the_window() {
        let (now, now_us) = (Instant::now(), 1_000_000);
        let mut window = window_of(&[0, 0], now_us);
        let (offset, ..) = take(&mut window, now, now_us).unwrap();
        window.give_back(offset, now_us + 7, "busy".into(), now_us);
        let snapshot = window.snapshot();
        assert_eq!(snapshot.generation, 1);
        assert_eq!(snapshot.facts.len(), 1, "offset 1 was never attempted");
        assert_eq!(snapshot.facts[&0], Facts { attempts: 1, retry_at_us: now_us + 7, rejected: false });
        window.compacted(snapshot.generation);
        assert_eq!(window.snapshot().generation, 2);
    }
}

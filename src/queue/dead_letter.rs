//! Dead letters: the dead-letter topic's configuration, the message a dead
//! letter is (the original's key, headers and payload, with where it came
//! from and why, cut to the topic's limits), publishing it and settling the
//! original, and holding a message back when that fails, to try again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::group::{Group, GroupState, SyncPoint, made_durable};
use super::journal::{Entry, Settled};
use crate::error::{IoError, PublishError, QueueError};
use crate::log::format::{
    DLQ_ATTEMPTS_HEADER, DLQ_GROUP_HEADER, DLQ_HEADERS_OMITTED_HEADER, DLQ_OFFSET_HEADER, DLQ_OMITTED_HEADER,
    DLQ_REASON_HEADER, DLQ_TOPIC_HEADER, MESSAGE_HEADERS_MAX, RESERVED_HEADER_PREFIX,
};
use crate::log::{Message, Record, TopicConfig};

/// How long a message whose dead letter failed is held back before the
/// next try.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// Longest reason kept in a dead letter, in bytes.
const DEAD_LETTER_REASON_MAX: usize = 1024;

/// Room the dead-letter topic leaves above its topic's message limit for
/// the dead-letter headers (names, topic and group names, a reason).
const DEAD_LETTER_HEADROOM: usize = 4096;

/// The configuration a dead-letter topic is created with: `source`'s, with
/// room for the headers a dead letter adds, if the limits allow it.
pub(crate) fn dead_letter_config(source: TopicConfig) -> TopicConfig {
    let max_message_bytes = source.max_message_bytes + DEAD_LETTER_HEADROOM;
    let needed = (max_message_bytes as u64 + 2 * 64).next_power_of_two();
    // Dead letters are kept until someone deals with them: no retention.
    let config = TopicConfig {
        max_message_bytes,
        segment_bytes: source.segment_bytes.max(needed),
        retention_bytes: None,
        retention_age: None,
        ..source
    };
    if config.validate().is_ok() { config } else { source }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Group {
    /// Publishes `record` to the dead-letter topic (synced), then settles
    /// it. The message must be `Leaving`. If publishing fails it goes back
    /// to ready, to be tried again by the next worker to receive it.
    pub(super) fn dead_letter(&self, record: Record, attempts: u32, reason: &str) -> Result<(), QueueError> {
        let offset = record.offset().get();
        let reason = truncate(reason, DEAD_LETTER_REASON_MAX);
        let mut published = self.dead_letter.publish_message(self.dead_letter_message(&record, attempts, reason, true));
        if let Err(PublishError::TooLarge { .. } | PublishError::InvalidMessage { .. }) = published {
            // The dead-letter topic's limit is lower than this topic's: the
            // payload stays behind, at `tollgate.dlq.offset` in this topic.
            published = self.dead_letter.publish_message(self.dead_letter_message(&record, attempts, reason, false));
        }
        let published = published.and_then(|_| self.dead_letter.sync(true));
        let mut state = self.state.lock();
        let settled = match published {
            Ok(()) => state.settle(self, offset, Settled::DeadLettered).map_err(QueueError::from),
            Err(e) => Err(QueueError::DeadLetter(e)),
        };
        match settled {
            Ok(sync) => {
                drop(state);
                made_durable(sync)
            }
            Err(e) => {
                state.hold_back(offset, reason.into());
                self.wake_idle(&state);
                Err(e)
            }
        }
    }

    /// The dead letter of `record`: its key, headers (but its delivery
    /// time) and payload, and where it came from and why.
    fn dead_letter_message(&self, record: &Record, attempts: u32, reason: &str, with_payload: bool) -> Message {
        let mut message = if with_payload {
            Message::new(record.payload().clone())
        } else {
            Message::new(Bytes::new())
                .system_header(DLQ_OMITTED_HEADER, Bytes::from(record.payload().len().to_string()))
        };
        if let Some(key) = record.key() {
            message = message.key(key);
        }
        let text = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        message = message
            .system_header(DLQ_TOPIC_HEADER, text(self.topic.name()))
            .system_header(DLQ_GROUP_HEADER, text(&self.name))
            .system_header(DLQ_OFFSET_HEADER, text(&record.offset().get().to_string()))
            .system_header(DLQ_ATTEMPTS_HEADER, text(&attempts.to_string()))
            .system_header(DLQ_REASON_HEADER, text(reason));
        if record.priority() > 0 {
            message = message.priority(record.priority());
        }
        let user_headers = record.headers().filter(|(name, _)| !name.starts_with(RESERVED_HEADER_PREFIX));
        let room = MESSAGE_HEADERS_MAX - message.system_header_count() - 1;
        let mut omitted = 0;
        for (name, value) in user_headers {
            if room > message.header_count() {
                message = message.header(name, Bytes::copy_from_slice(value));
            } else {
                omitted += 1;
            }
        }
        if omitted > 0 {
            message = message.system_header(DLQ_HEADERS_OMITTED_HEADER, Bytes::from(omitted.to_string()));
        }
        message
    }
}

impl GroupState {
    /// Takes the message at `offset` (in flight, or just taken from the
    /// ready set) out of circulation to be dead-lettered. The decision is
    /// journaled first, as a `Rejected` entry unless it has one (and on a
    /// Sync topic synced through the returned point), so that if the dead
    /// letter fails, or the process or machine dies, the message is
    /// dead-lettered later, never delivered again, even by a group reopened
    /// with a higher `max_attempts`.
    pub(super) fn leave_for_dead_letter(&mut self, group: &Group, offset: u64) -> Result<SyncPoint, IoError> {
        let written = if self.window.is_rejected(offset) {
            self.written()
        } else {
            self.append(group, Entry::Rejected { offset })?
        };
        self.window.leave(offset);
        Ok(self.sync_point(written))
    }

    /// The dead letter of the message at `offset` failed, or the decision
    /// to send it is not durable yet: back to the group, held back for a
    /// while so that other messages go on flowing; then a worker that would
    /// receive it tries to dead-letter it again (rejected or out of
    /// attempts, it is never handed out again).
    pub(super) fn hold_back(&mut self, offset: u64, reason: Arc<str>) {
        let now_us = self.reader.topic.clock().now_us();
        let retry_at_us = now_us.saturating_add(DEAD_LETTER_RETRY.as_micros() as u64);
        self.window.dead_letter_failed(offset, retry_at_us, reason, now_us);
    }
}

//! A consumer group's subscription: a cursor over the log that resumes at the
//! group's committed offset, decodes each frame once, and parks when it has
//! caught up until a publisher wakes it.
//!
//! Waiting without lost wake-ups is the topic's `Doorbell` (`doorbell.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::commit::CommitSlot;
use super::format::*;
use super::names::{check_group_name, check_new_name};
use super::pattern::KeyPattern;
use super::record::{Offset, OpenFrame, Record};
use super::segment::Segment;
use super::slots::{CommittedOffset, SlotFile};
use super::topic::TopicLog;
use crate::error::{CommitError, IoError, ReadError, TopicError};
use crate::sync::{AtomicU64, Ordering, task};

/// A subscription's position and committed offset, published for
/// [`Progress`](super::records::Progress) handles on other threads. Only the
/// subscription writes them (Relaxed: each is one number, read on its own).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) position: AtomicU64,
    pub(super) committed: AtomicU64,
}

impl Shared {
    pub(super) fn new(position: u64, committed: u64) -> Shared {
        Shared { position: AtomicU64::new(position), committed: AtomicU64::new(committed) }
    }
}

/// Where a group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// At the oldest retained record.
    #[default]
    Earliest,
    /// After the newest record: only records published from now on.
    Latest,
}

/// Spins (checking for a record) before a waiting subscriber parks.
const SPINS_BEFORE_PARK: u32 = 200;

/// A consumer group's cursor over one topic.
///
/// Records come back in offset order, once each per subscription, as
/// zero-copy views of the log. The group's position survives restarts only
/// through [`commit`](Subscription::commit): a new subscription resumes at the
/// last committed offset. A group has at most one live subscription per topic.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use std::time::Duration;
/// use tollgate::Engine;
///
/// let engine = Engine::open(dir.path())?;
/// let orders = engine.topic("orders")?;
/// orders.publish(b"order 1001")?;
///
/// let mut billing = orders.subscribe("billing")?;
/// while let Some(rec) = billing.next_timeout(Duration::from_millis(10))? {
///     assert_eq!(rec.payload().as_ref(), b"order 1001");
/// }
/// billing.commit()?;
/// assert_eq!(billing.committed().get(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Subscription {
    pub(super) kind: Kind,
}

/// What a subscription is: a cursor over the embedded log, or (feature
/// `postgres`) over a topic's rows.
#[derive(Debug)]
pub(super) enum Kind {
    Local(Local),
    #[cfg(feature = "postgres")]
    Remote(super::remote::RemoteSubscription),
}

/// An embedded subscription.
#[derive(Debug)]
pub(crate) struct Local {
    pub(super) reader: Reader,
    group: String,
    /// The group's offset file (also written by the flusher, `commit.rs`).
    pub(super) offsets: Arc<CommitSlot>,
    committed: u64,
    filter: Option<KeyPattern>,
    /// The position and committed offset, for [`Progress`] handles.
    pub(super) shared: Arc<Shared>,
}

/// A cursor over a topic's records, decoding each frame once: the part of a
/// subscription that reads (worker groups read through one too).
#[derive(Debug)]
pub(crate) struct Reader {
    pub topic: Arc<TopicLog>,
    /// The offset `next` returns next.
    pub next: u64,
    cursor: Option<Cursor>,
}

/// Where a subscription is in the log: the segment, the next frame's
/// position, and the frame being handed out.
#[derive(Debug)]
struct Cursor {
    seg: Arc<Segment>,
    /// The segment's published bytes when last looked at; frames are sliced
    /// from it, and it is renewed only when the cursor reaches its end.
    view: Bytes,
    /// Position of the frame after `frame`.
    position: usize,
    /// First offset of the frame at `position`.
    position_offset: u64,
    frame: Option<OpenFrame>,
}

impl Subscription {
    /// Subscribes `group` to `inner`, resuming at its committed offset, or
    /// where `start` says if it has none.
    pub(crate) fn open(inner: &Arc<TopicLog>, group: &str, start: StartAt) -> Result<Subscription, TopicError> {
        Ok(Subscription { kind: Kind::Local(Local::open(inner, group, start)?) })
    }

    /// Subscribes `group` to a PostgreSQL topic.
    #[cfg(feature = "postgres")]
    pub(crate) fn open_remote(
        topic: &Arc<super::remote::RemoteTopic>,
        group: &str,
        start: StartAt,
    ) -> Result<Subscription, TopicError> {
        check_group_name(group)?;
        check_new_name(group)?;
        Ok(Subscription { kind: Kind::Remote(topic.subscribe(group, start)?) })
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        match &self.kind {
            Kind::Local(local) => &local.group,
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => &remote.group,
        }
    }

    /// Skips records whose key does not match `pattern` (see
    /// [`KeyPattern`](crate::KeyPattern)); `None` shows every record again.
    /// Skipped records still move the position, so a commit covers them.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use tollgate::{Engine, KeyPattern, Message};
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let events = engine.topic("events")?;
    /// events.publish_message(Message::new("1001").key("order.created"))?;
    /// events.publish_message(Message::new("7").key("cart.updated"))?;
    ///
    /// let mut orders = events.subscribe("order-audit")?;
    /// orders.set_filter(Some(KeyPattern::new("order.#")?));
    /// assert_eq!(orders.next()?.unwrap().payload().as_ref(), b"1001");
    /// assert!(orders.next()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_filter(&mut self, pattern: Option<KeyPattern>) {
        match &mut self.kind {
            Kind::Local(local) => local.filter = pattern,
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => remote.filter = pattern,
        }
    }

    /// The offset of the record `next` returns next.
    pub fn position(&self) -> Offset {
        match &self.kind {
            Kind::Local(local) => Offset::new(local.reader.next),
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => Offset::new(remote.position()),
        }
    }

    /// The group's committed offset: where a new subscription would resume.
    pub fn committed(&self) -> Offset {
        match &self.kind {
            Kind::Local(local) => Offset::new(local.committed),
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => Offset::new(remote.committed),
        }
    }

    /// Records published but not yet committed by the group (the log's end
    /// minus the committed offset), as Kafka counts consumer lag. On
    /// PostgreSQL this reads the topic's end (a round trip; the last end
    /// seen if the database does not answer).
    pub fn lag(&self) -> u64 {
        match &self.kind {
            Kind::Local(local) => local.reader.topic.committed.load().saturating_sub(local.committed),
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => remote.topic.lag(remote.committed),
        }
    }

    /// The next record, or `None` at once if the subscription has read
    /// everything published so far.
    ///
    /// If retention deleted the records at the position, this returns
    /// [`ReadError::NotRetained`] with the oldest retained offset, and stays
    /// put: [`seek`](Subscription::seek) there to skip what was lost. (A
    /// subscription already reading a segment when retention deletes it
    /// finishes that segment first.) On PostgreSQL a call that finds nothing
    /// read ahead is one round trip, which reads up to 256 records ahead.
    // Not `Iterator::next`: it can fail, and `None` means "nothing yet", not "done".
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Record>, ReadError> {
        match &mut self.kind {
            Kind::Local(local) => local.next(),
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => remote.next(),
        }
    }

    /// The next record, waiting up to `timeout` for one to be published.
    /// Spins briefly, then parks; a publish wakes it within microseconds
    /// (on PostgreSQL, when its notification arrives). Returns `None` at
    /// once if the engine has been closed.
    ///
    /// It blocks the thread: in async code use
    /// [`next_async`](Subscription::next_async). Debug builds assert that it
    /// is not called inside the poll of one of tollgate's futures.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Record>, ReadError> {
        debug_assert!(!task::inside(), "a blocking next_timeout inside a tollgate poll: use next_async");
        match &mut self.kind {
            Kind::Local(local) => local.next_timeout(timeout),
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => remote.next_until(Instant::now().checked_add(timeout)),
        }
    }

    /// Moves the position to `offset`, which must be between the oldest
    /// retained offset and the end of the log.
    pub fn seek(&mut self, offset: Offset) -> Result<(), ReadError> {
        match &mut self.kind {
            Kind::Local(local) => local.seek(offset),
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => remote.seek(offset.get()),
        }
    }

    /// Commits the position: the group has processed every record before it.
    /// Durable (synced) when this returns.
    pub fn commit(&mut self) -> Result<(), CommitError> {
        let position = self.position();
        self.commit_at(position)
    }

    /// Commits `offset`: the group has processed every record before it.
    /// On PostgreSQL the committed offset never moves back: committing
    /// below it changes nothing.
    pub fn commit_at(&mut self, offset: Offset) -> Result<(), CommitError> {
        match &mut self.kind {
            Kind::Local(local) => local.commit_at(offset),
            #[cfg(feature = "postgres")]
            Kind::Remote(remote) => remote.commit_at(offset.get()),
        }
    }
}

impl Local {
    /// Subscribes `group` to `inner`, resuming at its committed offset, or
    /// where `start` says if it has none.
    fn open(inner: &Arc<TopicLog>, group: &str, start: StartAt) -> Result<Local, TopicError> {
        check_group_name(group)?;
        let groups = inner.dir.join(GROUPS_DIR);
        let path = groups.join(format!("{group}{OFFSET_SUFFIX}"));
        if !inner.storage.exists(&path) {
            check_new_name(group)?;
        }
        if inner.is_deleted() {
            return Err(TopicError::Deleted);
        }
        if !inner.groups.lock().insert(group.to_owned()) {
            return Err(TopicError::GroupBusy { group: group.to_owned() });
        }
        let release = |e| {
            inner.groups.lock().remove(group);
            e
        };
        if !inner.storage.exists(&groups) {
            let io = |op, path: &Path, e| release(TopicError::Io(IoError::new(op, path, e)));
            inner.storage.create_dir_all(&groups).map_err(|e| io("create", &groups, e))?;
            inner.storage.sync_dir(&inner.dir).map_err(|e| io("sync", &inner.dir, e))?;
        }
        let (offsets, saved) = SlotFile::<CommittedOffset>::open(&*inner.storage, &path)
            .map_err(|e| release(super::recovery::slot_fault(e)))?;
        let end = inner.committed.load();
        let (committed, next) = match saved {
            Some(saved) => (saved.offset.min(end), saved.offset.min(end)),
            None => {
                let oldest = inner.oldest();
                let next = match start {
                    StartAt::Earliest => oldest,
                    StartAt::Latest => end,
                };
                (next, next)
            }
        };
        let reader = Reader::new(inner.clone(), next);
        let shared = Arc::new(Shared::new(next, committed));
        let offsets = Arc::new(CommitSlot::new(offsets));
        Ok(Local { reader, group: group.to_owned(), offsets, committed, filter: None, shared })
    }

    #[allow(clippy::should_implement_trait)]
    pub(super) fn next(&mut self) -> Result<Option<Record>, ReadError> {
        let next = self.next_matching();
        self.shared.position.store(self.reader.next, Ordering::Relaxed);
        next
    }

    fn next_matching(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            let Some(record) = self.reader.next()? else { return Ok(None) };
            match &self.filter {
                Some(filter) if !filter.matches_record(record.key()) => continue,
                _ => return Ok(Some(record)),
            }
        }
    }

    fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Record>, ReadError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(record) = self.next()? {
                return Ok(Some(record));
            }
            let topic = &*self.reader.topic;
            if topic.is_deleted() {
                return Err(ReadError::Deleted);
            }
            if topic.is_closed() {
                // The engine is closed: nothing more will be published.
                return Ok(None);
            }
            if !self.reader.wait(deadline) {
                return self.next();
            }
        }
    }

    /// Moves the position to `offset`, which must be between the oldest
    /// retained offset and the end of the log.
    fn seek(&mut self, offset: Offset) -> Result<(), ReadError> {
        self.reader.seek(offset.get())?;
        self.shared.position.store(self.reader.next, Ordering::Relaxed);
        Ok(())
    }

    /// Commits `offset`: the group has processed every record before it.
    pub(super) fn commit_at(&mut self, offset: Offset) -> Result<(), CommitError> {
        let offset = offset.get();
        let topic = self.reader.topic.clone();
        // Open while the offset is written: a backup's cut closes it
        // (`TopicLog::freeze`), so a commit is wholly before or after it.
        let _gate = topic.commits.read();
        self.check_commit(offset)?;
        self.offsets.write(CommittedOffset { offset, at_us: now_us() })?;
        self.committed_at(offset);
        Ok(())
    }

    /// Whether `offset` may be committed now.
    pub(super) fn check_commit(&self, offset: u64) -> Result<(), CommitError> {
        let topic = &*self.reader.topic;
        let end = topic.committed.load();
        if offset > end {
            return Err(CommitError::BeyondEnd { requested: offset, end });
        }
        if topic.is_deleted() {
            return Err(CommitError::Deleted);
        }
        if topic.is_closed() {
            return Err(CommitError::Closed);
        }
        Ok(())
    }

    /// Notes that `offset` is committed on disk.
    pub(super) fn committed_at(&mut self, offset: u64) {
        self.committed = offset;
        self.shared.committed.store(offset, Ordering::Relaxed);
    }
}

impl Reader {
    pub fn new(topic: Arc<TopicLog>, next: u64) -> Reader {
        Reader { topic, next, cursor: None }
    }

    /// The next record, or `None` if everything published has been read.
    pub fn next(&mut self) -> Result<Option<Record>, ReadError> {
        if let Some(record) = self.next_in_frame() {
            return Ok(Some(record));
        }
        if self.next >= self.topic.committed.load() {
            return Ok(None);
        }
        self.open_frame()?;
        Ok(self.next_in_frame())
    }

    /// Waits until a record past the position is published or the deadline
    /// passes; false on timeout.
    fn wait(&self, deadline: Option<Instant>) -> bool {
        let topic = &*self.topic;
        for _ in 0..SPINS_BEFORE_PARK {
            if topic.committed.load() > self.next {
                return true;
            }
            std::hint::spin_loop();
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        let stop = || topic.is_closed() || topic.is_deleted();
        !topic.committed.wait(self.next, deadline, stop)
    }

    /// Moves the position to `offset`, which must be between the oldest
    /// retained offset and the end of the log.
    pub fn seek(&mut self, offset: u64) -> Result<(), ReadError> {
        let end = self.topic.committed.load();
        if offset > end {
            return Err(ReadError::NotWritten { requested: offset, next: end });
        }
        let oldest = self.topic.oldest();
        if offset < oldest {
            return Err(ReadError::NotRetained { requested: offset, oldest });
        }
        self.next = offset;
        self.cursor = None;
        Ok(())
    }

    /// Hands out the next entry of the open frame, if any.
    #[inline]
    fn next_in_frame(&mut self) -> Option<Record> {
        let record = self.cursor.as_mut()?.frame.as_mut()?.next_record()?;
        self.next = record.offset().get() + 1;
        Some(record)
    }

    /// Opens the frame holding `self.next` (which is below `committed`) and
    /// skips its entries before `self.next`.
    fn open_frame(&mut self) -> Result<(), ReadError> {
        let usable = self.cursor.as_ref().is_some_and(|c| c.position_offset == self.next && c.position < c.seg.end());
        if !usable {
            let seg = self.topic.segment_for(self.next)?;
            let (position, position_offset) = seg.seek(self.next);
            let view = seg.view();
            self.cursor = Some(Cursor { seg, view, position, position_offset, frame: None });
        }
        let cursor = self.cursor.as_mut().expect("set above");
        loop {
            if cursor.position >= cursor.view.len() {
                cursor.view = cursor.seg.view();
            }
            let (info, bytes) = cursor.seg.frame_in(&cursor.view, cursor.position, cursor.position_offset)?;
            cursor.position += info.len;
            cursor.position_offset = info.end_offset();
            if self.next < info.end_offset() {
                cursor.frame = Some(OpenFrame::at_offset(bytes, info, self.next));
                return Ok(());
            }
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.reader.topic.groups.lock().remove(&self.group);
    }
}

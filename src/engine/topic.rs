//! [`Topic`], the handle applications hold: a topic's log (`log/topic.rs`),
//! the worker groups open on it, and a way back to the engine that opened
//! it (to open dead-letter topics). Publishing, reading and subscribing go
//! straight to the log; opening a worker group goes through the engine.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::{Engine, Shared};
use crate::error::{LockError, PublishError, ReadError, TopicError};
use crate::lock::{LockRequest, LockSet, Session, SessionOwned};
use crate::log::names::{check_group_name, check_new_name, check_topic_name};
#[cfg(feature = "postgres")]
use crate::log::remote::RemoteTopic;
use crate::log::topic::TopicLog;
use crate::log::{Message, Offset, Publish, Record, RecoveryReport, StartAt, Subscription, TopicInfo};
use crate::queue::dead_letter::dead_letter_config;
use crate::queue::group::Group;
use crate::queue::journal::GroupFiles;
use crate::queue::{QueueConfig, Transaction, Worker};

/// A handle to a topic; cheap to clone, usable from any thread.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use tollgate::{Engine, Message, Offset};
///
/// let engine = Engine::open(dir.path())?;
/// let orders = engine.topic("orders")?;
/// let first = orders.publish(b"order 1001")?;
/// orders.publish_message(Message::new("order 1002").key("sku:42").header("type", "created"))?;
/// let batch = orders.publish_batch(vec![Message::new("a"), Message::new("b")])?;
/// assert_eq!(batch, Offset::new(2)..Offset::new(4));
///
/// let rec = orders.read(first)?;
/// assert_eq!(rec.payload().as_ref(), b"order 1001");
/// assert_eq!(orders.read(Offset::new(1))?.key(), Some("sku:42"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Topic {
    kind: Kind,
}

/// What a topic is: a log in the data directory, or (feature `postgres`)
/// rows in PostgreSQL.
#[derive(Clone, Debug)]
enum Kind {
    Embedded(Arc<OpenTopic>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<super::remote::RemoteEntry>),
}

/// A topic as the engine holds it while it is open.
#[derive(Debug)]
pub(crate) struct OpenTopic {
    pub(crate) log: Arc<TopicLog>,
    /// Its worker groups, by name. `Engine::delete_topic` holds this lock
    /// across its rename, so no group directory is created after it.
    pub(crate) groups: Mutex<HashMap<String, Weak<Group>>>,
    /// The engine, to open dead-letter topics. Weak: topic handles do not
    /// keep the engine open.
    engine: Weak<Shared>,
}

impl OpenTopic {
    pub(crate) fn new(log: TopicLog, engine: Weak<Shared>) -> OpenTopic {
        OpenTopic { log: Arc::new(log), groups: Mutex::new(HashMap::new()), engine }
    }

    /// Syncs what tasks wait for: the log, and the journal entries of its
    /// worker groups (errors reach the waiting tasks).
    pub(crate) fn sync_requested(&self) {
        self.log.sync_requested();
        if !self.log.take_group_sync_request() {
            return;
        }
        let groups: Vec<Arc<Group>> = self.groups.lock().values().filter_map(Weak::upgrade).collect();
        for group in groups {
            group.sync_requested();
        }
    }

    /// Syncs the journals of the open worker groups (errors are kept by
    /// each journal and reported by its group's next settle).
    pub(crate) fn sync_groups(&self) {
        let groups: Vec<Arc<Group>> = self.groups.lock().values().filter_map(Weak::upgrade).collect();
        for group in groups {
            let _ = group.sync();
        }
    }
}

impl Topic {
    pub(crate) fn new(entry: Arc<OpenTopic>) -> Topic {
        Topic { kind: Kind::Embedded(entry) }
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn remote(entry: Arc<super::remote::RemoteEntry>) -> Topic {
        Topic { kind: Kind::Postgres(entry) }
    }

    /// The PostgreSQL topic, if it is one.
    #[cfg(feature = "postgres")]
    fn remote_topic(&self) -> Option<&Arc<RemoteTopic>> {
        match &self.kind {
            Kind::Postgres(entry) => Some(&entry.topic),
            Kind::Embedded(_) => None,
        }
    }

    /// The embedded topic's log. Only called on the embedded paths.
    fn log(&self) -> &Arc<TopicLog> {
        match &self.kind {
            Kind::Embedded(entry) => &entry.log,
            #[cfg(feature = "postgres")]
            Kind::Postgres(_) => unreachable!("an embedded path of a PostgreSQL topic"),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        match &self.kind {
            Kind::Embedded(entry) => entry.log.name(),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => &entry.topic.name,
        }
    }

    /// Publishes one payload; returns its offset once it is as durable as
    /// the topic's [`Durability`](crate::Durability) promises.
    pub fn publish(&self, payload: impl AsRef<[u8]>) -> Result<Offset, PublishError> {
        match &self.kind {
            Kind::Embedded(entry) => entry.log.publish(payload),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => {
                let message = Message::new(bytes::Bytes::copy_from_slice(payload.as_ref()));
                Ok(entry.topic.publish_batch(vec![message])?.start)
            }
        }
    }

    /// Publishes a message with a key and headers.
    pub fn publish_message(&self, message: Message) -> Result<Offset, PublishError> {
        match &self.kind {
            Kind::Embedded(entry) => entry.log.publish_message(message),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => Ok(entry.topic.publish_batch(vec![message])?.start),
        }
    }

    /// Publishes messages atomically, as one frame: after a crash either all
    /// of them are in the log, with consecutive offsets, or none is. Returns
    /// their offsets. At most 65,536 messages, and the batch must fit in one
    /// segment. (On PostgreSQL: one transaction.)
    pub fn publish_batch<I>(&self, messages: I) -> Result<Range<Offset>, PublishError>
    where
        I: IntoIterator,
        I::Item: Into<Message>,
    {
        match &self.kind {
            Kind::Embedded(entry) => entry.log.publish_batch(messages),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => entry.topic.publish_batch(messages.into_iter().map(Into::into).collect()),
        }
    }

    /// The async form of [`publish`](Self::publish): appends at the first
    /// poll and, on a `Sync` topic, resolves once the record is durable,
    /// without blocking the thread (the engine's flusher thread runs the
    /// sync, shared with concurrent publishers). See [`Publish`]. On
    /// PostgreSQL it resolves once the publish's transaction committed.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use tollgate::{Durability, Engine, TopicConfig};
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.create_topic("orders", TopicConfig { durability: Durability::Sync, ..TopicConfig::default() })?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// let offset = orders.publish_async("order 1001").await?; // durable now
    /// assert!(orders.info().durable > offset);
    /// # Ok::<(), tollgate::PublishError>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_async(&self, payload: impl Into<bytes::Bytes>) -> Publish<Offset> {
        self.publish_batch_with(vec![Message::new(payload)], |offsets| offsets.start)
    }

    /// The async form of [`publish_message`](Self::publish_message).
    pub fn publish_message_async(&self, message: Message) -> Publish<Offset> {
        self.publish_batch_with(vec![message], |offsets| offsets.start)
    }

    /// The async form of [`publish_batch`](Self::publish_batch): one atomic
    /// frame, durable together on a `Sync` topic.
    pub fn publish_batch_async<I>(&self, messages: I) -> Publish<Range<Offset>>
    where
        I: IntoIterator,
        I::Item: Into<Message>,
    {
        self.publish_batch_with(messages.into_iter().map(Into::into).collect(), |offsets| offsets)
    }

    fn publish_batch_with<T>(&self, messages: Vec<Message>, finish: fn(Range<Offset>) -> T) -> Publish<T> {
        match &self.kind {
            Kind::Embedded(entry) => Publish::new(entry.log.clone(), messages, finish),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => Publish::remote(entry.topic.publish_call(messages), finish),
        }
    }

    /// The record at `offset`.
    pub fn read(&self, offset: Offset) -> Result<Record, ReadError> {
        match &self.kind {
            Kind::Embedded(entry) => entry.log.read(offset),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => entry.topic.read(offset),
        }
    }

    /// What opening this topic found: whether the last shutdown was clean,
    /// what was scanned, and where (if anywhere) the log was cut. On
    /// PostgreSQL there is nothing to recover (the database does it): a
    /// clean report that scanned nothing.
    pub fn recovery_report(&self) -> &RecoveryReport {
        match &self.kind {
            Kind::Embedded(entry) => entry.log.recovery(),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => entry.topic.recovery(),
        }
    }

    /// Syncs everything published so far to disk, whatever the durability.
    /// On PostgreSQL, `Ok` at once: each publish committed, as durable as
    /// the topic's durability makes the commit (a `Sync` topic's commits
    /// wait for the WAL flush; the others' are flushed by PostgreSQL's WAL
    /// writer within a few hundred milliseconds).
    pub fn sync(&self) -> Result<(), PublishError> {
        match &self.kind {
            Kind::Embedded(entry) => entry.log.sync(true),
            #[cfg(feature = "postgres")]
            Kind::Postgres(_) => Ok(()),
        }
    }

    /// Offsets, sizes and configuration. On PostgreSQL: the offsets now
    /// (one round trip; the last seen if the database does not answer),
    /// `durable` equal to `next`, and no segments or bytes.
    pub fn info(&self) -> TopicInfo {
        match &self.kind {
            Kind::Embedded(entry) => entry.log.info(),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => entry.topic.info(),
        }
    }

    /// Checks the CRC and structure of every record in every segment. Returns
    /// the number of records, or the first corruption found, naming the file
    /// and position. On PostgreSQL, which checks its own pages, the number
    /// of records retained.
    pub fn verify(&self) -> Result<u64, ReadError> {
        match &self.kind {
            Kind::Embedded(entry) => entry.log.verify(),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => entry.topic.verify(),
        }
    }

    /// Publishes `messages` inside the caller's own PostgreSQL transaction
    /// (the outbox; feature `postgres`): they commit or roll back with the
    /// caller's rows, at dense offsets, and each worker group of the topic
    /// gets them once the caller commits. `client` is a
    /// [`tokio_postgres::Transaction`](crate::tokio_postgres::Transaction)
    /// (or a client inside `BEGIN`), on the engine's database and schema;
    /// name its types through [`tollgate::tokio_postgres`](crate::tokio_postgres).
    /// The topic's row stays locked until the caller's transaction ends,
    /// holding up the topic's other publishers: make it the transaction's
    /// last statement. On an embedded topic it fails with
    /// [`PublishError::Unsupported`].
    ///
    /// ```no_run
    /// use tollgate::tokio_postgres::{self, NoTls};
    /// use tollgate::{Engine, Message, PgConfig};
    ///
    /// # async fn order(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = Engine::connect(PgConfig::new(url)?)?;
    /// let orders = engine.topic("orders")?;
    /// let (mut client, connection) = tokio_postgres::connect(url, NoTls).await?;
    /// tokio::spawn(connection);
    /// let tx = client.transaction().await?;
    /// tx.execute("INSERT INTO shop_order (id) VALUES (1001)", &[]).await?;
    /// orders.publish_in(&tx, [Message::new("order 1001")]).await?;
    /// tx.commit().await?; // the order row and its message, or neither
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn publish_in<'a, C, I>(
        &self,
        client: &'a C,
        messages: I,
    ) -> impl Future<Output = Result<Range<Offset>, PublishError>> + 'a
    where
        C: tokio_postgres::GenericClient + Sync,
        I: IntoIterator,
        I::Item: Into<Message>,
    {
        let messages: Vec<Message> = messages.into_iter().map(Into::into).collect();
        let topic = self.remote_topic().cloned();
        async move {
            let Some(topic) = topic else {
                return Err(PublishError::Unsupported { backend: "embedded", operation: "Topic::publish_in" });
            };
            topic.publish_in(client, messages).await
        }
    }

    /// Subscribes `group`, resuming at its committed offset, or at the oldest
    /// record if it has none. A group name that is not a single file name,
    /// or that would create a group and holds a control character, is
    /// [`TopicError::InvalidName`].
    pub fn subscribe(&self, group: &str) -> Result<Subscription, TopicError> {
        self.subscribe_with(group, StartAt::Earliest)
    }

    /// Subscribes `group`, resuming at its committed offset, or where `start`
    /// says if it has none.
    pub fn subscribe_with(&self, group: &str, start: StartAt) -> Result<Subscription, TopicError> {
        match &self.kind {
            Kind::Embedded(entry) => Subscription::open(&entry.log, group, start),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => Subscription::open_remote(&entry.topic, group, start),
        }
    }

    /// A worker in `group`, with the default [`QueueConfig`].
    pub fn worker(&self, group: &str) -> Result<Worker, TopicError> {
        self.worker_with(group, QueueConfig::default())
    }

    /// A worker in `group`. The first call for a group opens it: reads its
    /// saved state (so nothing acknowledged comes back and attempt counts
    /// carry on), and opens its dead-letter topic, creating it if needed.
    /// Later calls join it, and must pass the same configuration. As for
    /// [`subscribe`](Self::subscribe), a new group's name, and a new
    /// dead-letter topic's (by default `<topic>.dlq`), may not hold control
    /// characters.
    pub fn worker_with(&self, group: &str, config: QueueConfig) -> Result<Worker, TopicError> {
        let entry = match &self.kind {
            Kind::Embedded(entry) => entry,
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => return remote_worker(entry, group, config),
        };
        check_group_name(group)?;
        config.validate().map_err(|reason| TopicError::InvalidConfig { reason })?;
        let log = &entry.log;
        if log.is_deleted() {
            return Err(TopicError::Deleted);
        }
        if !GroupFiles::new(log.dir(), group).exists(log.storage()) {
            check_new_name(group)?;
        }
        let dead_letter_name = config.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dlq", log.name()));
        check_topic_name(&dead_letter_name)?;
        if dead_letter_name == log.name() {
            return Err(TopicError::InvalidConfig { reason: "the dead-letter topic must not be the topic itself" });
        }
        // Before the registry's lock: opening a topic takes the engine's,
        // and closing the engine takes the registry's.
        let (dead_letter, mode) = {
            let shared = entry.engine.upgrade().ok_or(TopicError::Closed)?;
            let engine = Engine::from_shared(shared);
            let dead_letter = match engine.create_topic(&dead_letter_name, dead_letter_config(*log.config())) {
                Err(TopicError::AlreadyExists { .. }) => engine.topic(&dead_letter_name)?,
                created => created?,
            };
            (dead_letter, engine.recovery_mode())
        };
        let mut groups = entry.groups.lock();
        if let Some(open) = groups.get(group).and_then(Weak::upgrade) {
            if *open.config() != config {
                return Err(TopicError::GroupConfigDiffers { group: group.to_owned() });
            }
            return Ok(Worker::new(open));
        }
        // Under the registry's lock, which `delete_topic` holds across its
        // rename: a deleted topic's directory is never created again.
        if log.is_deleted() {
            return Err(TopicError::Deleted);
        }
        if log.is_closed() {
            return Err(TopicError::Closed);
        }
        let opened = Group::open(log, group, config, dead_letter.log().clone(), mode)?;
        groups.retain(|_, g| g.strong_count() > 0);
        groups.insert(group.to_owned(), Arc::downgrade(&opened));
        Ok(Worker::new(opened))
    }

    /// Locks `keys` for `session` for a publish to this topic: all or
    /// nothing, never deadlocking with other multi-key locks, as
    /// [`Session::acquire_all`] does. `request` is a timeout (an
    /// exclusive lock that waits up to that long) or a whole
    /// [`LockRequest`], for a lease per key or cancellation:
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// use tollgate::{Engine, LockManager, LockRequest, Message};
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// let locks = LockManager::new();
    /// let buyer = locks.session();
    /// let request = LockRequest::exclusive().timeout(Duration::from_millis(50)).lease(Duration::from_secs(5));
    /// let tx = orders.transaction(&buyer, ["sku:1", "sku:2"], request)?;
    /// let (_offsets, held) = tx.commit([Message::new("order 7").key("order.created")])?;
    /// held.release()?; // fails with `LeaseExpired` if a lease ran out first
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A lease bounds how long a stalled holder blocks the keys; it does not
    /// stop a holder whose lease ran out from committing. Choose leases far
    /// longer than the work done under the locks, and fence writes elsewhere
    /// with the guards' [`fencing_token`](crate::LockGuard::fencing_token)s.
    ///
    /// The locks belong to the session, not the thread, so the transaction
    /// and the locks it hands back may move between threads and tasks.
    pub fn transaction<K: AsRef<str>>(
        &self,
        session: &Session,
        keys: impl IntoIterator<Item = K>,
        request: impl Into<LockRequest>,
    ) -> Result<Transaction, LockError> {
        self.check_session(session)?;
        let locks = session.acquire_all(keys, request.into())?;
        Ok(self.transaction_of(locks))
    }

    /// Refuses a session whose locks are kept by another backend than the
    /// topic: the commit could not check them.
    fn check_session(&self, session: &Session) -> Result<(), LockError> {
        if session.is_remote() != matches!(self.kind, Kind::Embedded(_)) {
            return Ok(());
        }
        Err(LockError::InvalidRequest {
            reason: "the session's lock manager and the topic are of different backends: use Engine::locks",
        })
    }

    fn transaction_of(&self, locks: LockSet<'static, SessionOwned>) -> Transaction {
        match &self.kind {
            Kind::Embedded(entry) => Transaction::new(entry.log.clone(), locks),
            #[cfg(feature = "postgres")]
            Kind::Postgres(entry) => Transaction::remote(Arc::clone(&entry.topic), locks),
        }
    }

    /// The async form of [`transaction`](Self::transaction): waits for the
    /// locks without blocking the thread (see
    /// [`Session::acquire_all_async`]). The commit itself is not async: on a
    /// `Buffered` or `Interval` topic it copies the batch into the mapped
    /// log and returns; on a `Sync` topic it runs the sync on the calling
    /// thread.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::time::Duration;
    /// use tollgate::{Engine, LockManager, Message};
    ///
    /// let engine = Engine::open(dir.path())?;
    /// let orders = engine.topic("orders")?;
    /// let locks = LockManager::new();
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let buyer = locks.session();
    /// let tx = orders.transaction_async(&buyer, ["sku:1"], Duration::from_millis(50)).await?;
    /// let (_offsets, held) = tx.commit([Message::new("reserve sku:1"), Message::new("order 7")])?;
    /// drop(held);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn transaction_async<'a, K: AsRef<str> + 'a>(
        &self,
        session: &'a Session,
        keys: impl IntoIterator<Item = K>,
        request: impl Into<LockRequest>,
    ) -> impl Future<Output = Result<Transaction, LockError>> + 'a {
        let checked = self.check_session(session);
        let locks = session.acquire_all_async(keys, request.into());
        let topic = self.clone();
        async move {
            checked?;
            Ok(topic.transaction_of(locks.await?))
        }
    }
}

/// A worker of the PostgreSQL group `group` of `entry`'s topic: the group
/// is opened in the database on first use in this process (creating it and
/// its dead-letter topic if needed), then shared.
#[cfg(feature = "postgres")]
fn remote_worker(entry: &super::remote::RemoteEntry, group: &str, config: QueueConfig) -> Result<Worker, TopicError> {
    use crate::queue::remote::RemoteGroup;
    check_group_name(group)?;
    config.validate().map_err(|reason| TopicError::InvalidConfig { reason })?;
    let topic = &entry.topic;
    let dead_letter_name = config.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dlq", topic.name));
    check_topic_name(&dead_letter_name)?;
    if dead_letter_name == topic.name {
        return Err(TopicError::InvalidConfig { reason: "the dead-letter topic must not be the topic itself" });
    }
    let mut groups = entry.groups.lock();
    if let Some(open) = groups.get(group).and_then(Weak::upgrade) {
        if open.config != config {
            return Err(TopicError::GroupConfigDiffers { group: group.to_owned() });
        }
        return Ok(Worker::remote(open));
    }
    check_new_name(group)?;
    check_new_name(&dead_letter_name)?;
    let opened = Arc::new(RemoteGroup::open(topic, group, config)?);
    groups.retain(|_, g| g.strong_count() > 0);
    groups.insert(group.to_owned(), Arc::downgrade(&opened));
    Ok(Worker::remote(opened))
}

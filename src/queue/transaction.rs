//! "Lock, then publish, then release": keyed locks held across an atomic
//! publish, so that what the locks protect and what the log says agree.

use std::ops::Range;

use std::sync::Arc;

use crate::error::PublishError;
use crate::lock::{LockSet, SessionOwned};
use crate::log::topic::TopicLog;
use crate::log::{Message, Offset, Publish};

/// Locks held for a publish to one topic, from [`Topic::transaction`](crate::Topic::transaction).
///
/// [`commit`](Transaction::commit) publishes its messages as one atomic
/// batch (one frame: after a crash, all of them are in the log or none is)
/// and hands the locks back, still held, so that in-memory state they
/// protect can be updated before they are released. Dropping the
/// transaction instead publishes nothing and releases the locks.
///
/// This is how a storefront makes "the order is published if and only if
/// its stock was reserved" hold across crashes: the reservation and the
/// order are two messages of one batch, and the stock count is rebuilt from
/// the reservations in the log after a restart. The locks serialize the
/// check-then-reserve of each SKU between threads.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use std::time::Duration;
/// use tollgate::{Engine, LockManager, Message};
///
/// let engine = Engine::open(dir.path())?;
/// let orders = engine.topic("orders")?;
/// let locks = LockManager::new();
/// let buyer = locks.session();
/// let mut stock = 1; // what "sku:42" protects
///
/// let tx = orders.transaction(&buyer, ["sku:42"], Duration::from_millis(100))?;
/// assert!(stock > 0, "checked under the lock");
/// let (offsets, held) = tx.commit([
///     Message::new("reserve 1").key("stock.sku:42"),
///     Message::new("order 1001").key("order.1001"),
/// ])?;
/// stock -= 1; // still under the lock
/// drop(held);
/// assert_eq!(offsets.end.get() - offsets.start.get(), 2);
/// # assert_eq!(stock, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "dropping a transaction publishes nothing and releases its locks"]
pub struct Transaction {
    topic: Target,
    locks: LockSet<'static, SessionOwned>,
}

/// The topic a transaction publishes to.
#[derive(Debug)]
enum Target {
    Local(Arc<TopicLog>),
    /// A PostgreSQL topic: the commit checks the locks in its transaction.
    #[cfg(feature = "postgres")]
    Remote(Arc<crate::log::remote::RemoteTopic>),
}

impl Transaction {
    /// A transaction on `topic` holding `locks`.
    pub(crate) fn new(topic: Arc<TopicLog>, locks: LockSet<'static, SessionOwned>) -> Transaction {
        Transaction { topic: Target::Local(topic), locks }
    }

    /// A transaction on a PostgreSQL topic holding `locks` (of a
    /// PostgreSQL manager: checked by the caller).
    #[cfg(feature = "postgres")]
    pub(crate) fn remote(
        topic: Arc<crate::log::remote::RemoteTopic>,
        locks: LockSet<'static, SessionOwned>,
    ) -> Transaction {
        Transaction { topic: Target::Remote(topic), locks }
    }

    /// The locks a PostgreSQL commit checks.
    #[cfg(feature = "postgres")]
    fn held(&self) -> Result<Vec<crate::pg::topics::HeldLock>, PublishError> {
        self.locks
            .guards()
            .iter()
            .map(|guard| {
                let grant = guard.remote().ok_or(PublishError::Unsupported {
                    backend: "postgres",
                    operation: "a transaction under locks of an embedded lock manager",
                })?;
                Ok(crate::pg::topics::HeldLock {
                    key: grant.key().to_owned(),
                    owner: grant.owner.clone(),
                    level: grant.level,
                })
            })
            .collect()
    }

    /// The locks held (for their fencing tokens).
    pub fn locks(&self) -> &LockSet<'static, SessionOwned> {
        &self.locks
    }

    /// Publishes `messages` as one atomic batch, then returns their offsets
    /// and the locks, still held. Returns once the batch is as durable as the
    /// topic's [`Durability`](crate::Durability) promises. On PostgreSQL the
    /// publish's transaction first checks that every lock is still held (its
    /// holder row is there, its lease and this process's registration have
    /// not lapsed), and publishes nothing, failing with
    /// [`PublishError::LockLost`], if one was lost. On error the locks
    /// are released, and nothing was published except in the one case
    /// [`PublishError`] describes: an `Io` error from a `Sync` topic's sync,
    /// after which readers may see the batch although it is not known to be
    /// durable (and the topic refuses writes until it is reopened).
    pub fn commit<I>(self, messages: I) -> Result<(Range<Offset>, LockSet<'static, SessionOwned>), PublishError>
    where
        I: IntoIterator,
        I::Item: Into<Message>,
    {
        let offsets = match &self.topic {
            Target::Local(topic) => topic.publish_batch(messages)?,
            #[cfg(feature = "postgres")]
            Target::Remote(topic) => {
                let held = self.held()?;
                let call = topic.publish_locked_call(messages.into_iter().map(Into::into).collect(), held);
                crate::pg::runtime::block_on(call)?
            }
        };
        Ok((offsets, self.locks))
    }

    /// The async form of [`commit`](Self::commit): on a `Sync` topic it waits
    /// for the batch to be durable without blocking the thread (see
    /// [`Publish`]). Dropping the future before its first poll publishes
    /// nothing and releases the locks.
    pub fn commit_async<I>(
        self,
        messages: I,
    ) -> impl Future<Output = Result<(Range<Offset>, LockSet<'static, SessionOwned>), PublishError>> + Send + 'static
    where
        I: IntoIterator,
        I::Item: Into<Message>,
    {
        let messages: Vec<Message> = messages.into_iter().map(Into::into).collect();
        #[cfg(feature = "postgres")]
        let held = match &self.topic {
            Target::Remote(_) => Some(self.held()),
            Target::Local(_) => None,
        };
        let publish: Result<_, PublishError> = match self.topic {
            Target::Local(topic) => Ok(Publish::new(topic, messages, |offsets| offsets)),
            #[cfg(feature = "postgres")]
            Target::Remote(topic) => held
                .expect("found above")
                .map(|held| Publish::remote(topic.publish_locked_call(messages, held), |offsets| offsets)),
        };
        let locks = self.locks;
        async move { Ok((publish?.await?, locks)) }
    }
}

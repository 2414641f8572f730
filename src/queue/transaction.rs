//! "Lock, then publish, then release": keyed locks held across an atomic
//! publish, so that what the locks protect and what the log says agree.

use std::ops::Range;

use crate::error::{LockError, PublishError};
use crate::lock::{LockManager, LockRequest, LockSet};
use crate::log::{Message, Offset, Topic};

/// Locks held for a publish to one topic, from [`Topic::transaction`].
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
/// let mut stock = 1; // what "sku:42" protects
///
/// let tx = orders.transaction(&locks, ["sku:42"], Duration::from_millis(100))?;
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
pub struct Transaction<'m> {
    topic: Topic,
    locks: LockSet<'m>,
}

impl Topic {
    /// Locks `keys` for a publish to this topic: all or nothing, never
    /// deadlocking with other multi-key locks, as
    /// [`LockManager::acquire_all`] does. `request` is a timeout (an
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
    /// let request = LockRequest::exclusive().timeout(Duration::from_millis(50)).lease(Duration::from_secs(5));
    /// let tx = orders.transaction(&locks, ["sku:1", "sku:2"], request)?;
    /// let (_offsets, held) = tx.commit([Message::new("order 7").key("order.created")])?;
    /// held.release()?; // fails with `LeaseExpired` if a lease ran out first
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A lease bounds how long a stalled holder blocks the keys; it does not
    /// stop a holder whose lease ran out from committing. Choose leases far
    /// longer than the work done under the locks, and fence writes elsewhere
    /// with the guards' [`fencing_token`](crate::LockGuard::fencing_token)s.
    pub fn transaction<'m, K: AsRef<str>>(
        &self,
        locks: &'m LockManager,
        keys: impl IntoIterator<Item = K>,
        request: impl Into<LockRequest>,
    ) -> Result<Transaction<'m>, LockError> {
        Ok(Transaction { topic: self.clone(), locks: locks.acquire_all(keys, request.into())? })
    }
}

impl<'m> Transaction<'m> {
    /// The locks held (for their fencing tokens).
    pub fn locks(&self) -> &LockSet<'m> {
        &self.locks
    }

    /// Publishes `messages` as one atomic batch, then returns their offsets
    /// and the locks, still held. Returns once the batch is as durable as the
    /// topic's [`Durability`](crate::Durability) promises. On error the locks
    /// are released, and nothing was published except in the one case
    /// [`PublishError`] describes: an `Io` error from a `Sync` topic's sync,
    /// after which readers may see the batch although it is not known to be
    /// durable (and the topic refuses writes until it is reopened).
    pub fn commit<I>(self, messages: I) -> Result<(Range<Offset>, LockSet<'m>), PublishError>
    where
        I: IntoIterator,
        I::Item: Into<Message>,
    {
        let offsets = self.topic.publish_batch(messages)?;
        Ok((offsets, self.locks))
    }
}

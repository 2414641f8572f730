//! The lock operations as calls of the schema's functions
//! (`sql/1_locks.sql`): one round trip each. How a caller waits between
//! attempts is the lock manager's (`lock/remote.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::client::millis;
use super::db::Db;
use super::link::Link;
use super::listen::{Channel, Interest};
use crate::error::{BackendError, BackendErrorKind};

/// The outcome of one acquisition attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Granted with this fencing token; `nested` on the owner's exclusive grant.
    Granted { fence: u64, nested: bool },
    /// Not grantable now; something blocking it may end without a
    /// notification after `retry` (a lease or a client expiring).
    Busy { retry: Option<Duration> },
    /// The owner holds the key shared and asked for it exclusively.
    Upgrade,
    /// Waiting would close this cycle (the keys along it).
    Deadlock(Vec<String>),
    /// This process's registration had expired; it has registered anew.
    ClientExpired,
}

/// The outcome of an attempt at several keys at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttemptAll {
    /// Every key granted; the fencing tokens in the keys' order.
    Granted(Vec<u64>),
    /// Not all grantable now (see [`Attempt::Busy`]).
    Busy { retry: Option<Duration> },
    /// One key is held shared by the owner and was asked for exclusively.
    Upgrade,
    /// See [`Attempt::ClientExpired`].
    ClientExpired,
}

/// The lock tables of one schema, as this process uses them.
#[derive(Debug)]
pub(crate) struct LockStore {
    link: Arc<Link>,
    db: Arc<Db>,
}

impl LockStore {
    /// The lock tables reached through `link`.
    pub(crate) fn new(link: Arc<Link>) -> LockStore {
        LockStore { db: Arc::clone(&link.db), link }
    }

    /// The owner string of a thread (`'t'`) or session (`'s'`) of this process.
    pub(crate) fn owner(&self, kind: char, id: u64) -> String {
        format!("{}/{kind}{id}", self.link.registration.id())
    }

    /// A registration for releases of `key`, for `owner` if it queues (a
    /// release that only the first waiter can use wakes only that one), or
    /// for any release (`None`: a `lock_all` watching the key).
    pub(crate) fn interest(&self, key: &str, owner: Option<&str>) -> Interest {
        self.link.interest(Channel::Lock, key, owner)
    }

    /// How long this process's registration outlives its last heartbeat.
    pub(crate) fn client_ttl(&self) -> Duration {
        self.db.config().client_ttl
    }

    /// The configured operation timeout.
    pub(crate) fn operation_timeout(&self) -> Duration {
        self.db.config().operation_timeout
    }

    /// One attempt to take `key` for `owner` as acquisition `level` (an id
    /// unique to the acquisition: retrying with it is harmless); if `wait`,
    /// a failed attempt queues the owner (or keeps its place).
    pub(crate) async fn acquire(
        &self,
        key: &str,
        owner: &str,
        exclusive: bool,
        lease: Option<Duration>,
        wait: bool,
        level: i64,
    ) -> Result<Attempt, BackendError> {
        let client = self.link.registration.id();
        let lease = lease.map(millis);
        let row = self
            .db
            .query_one(
                "SELECT outcome, fence, retry_ms, cycle FROM tg.acquire($1, $2, $3, $4, $5, $6, $7)",
                &[&key, &owner, &client, &exclusive, &lease, &wait, &level],
            )
            .await?;
        let outcome: i16 = row.get(0);
        Ok(match outcome {
            0 | 1 => Attempt::Granted { fence: fence(row.get(1))?, nested: outcome == 1 },
            2 => Attempt::Busy { retry: retry(row.get(2)) },
            3 => Attempt::Upgrade,
            4 => Attempt::Deadlock(row.get::<_, Option<Vec<String>>>(3).unwrap_or_default()),
            5 => {
                self.link.registration.renew(client).await?;
                Attempt::ClientExpired
            }
            other => return Err(unexpected("acquire", other)),
        })
    }

    /// One attempt to take every key of `keys` (sorted, distinct) for
    /// `owner`, or none; if `wait`, a failed attempt watches the blocking keys.
    pub(crate) async fn acquire_all(
        &self,
        keys: &[String],
        owner: &str,
        exclusive: bool,
        lease: Option<Duration>,
        wait: bool,
        level: i64,
    ) -> Result<AttemptAll, BackendError> {
        let client = self.link.registration.id();
        let lease = lease.map(millis);
        let row = self
            .db
            .query_one(
                "SELECT outcome, fences, retry_ms FROM tg.acquire_all($1, $2, $3, $4, $5, $6, $7)",
                &[&keys, &owner, &client, &exclusive, &lease, &wait, &level],
            )
            .await?;
        let outcome: i16 = row.get(0);
        Ok(match outcome {
            0 => {
                let fences: Vec<i64> = row.get(1);
                AttemptAll::Granted(fences.into_iter().map(|f| fence(Some(f))).collect::<Result<_, _>>()?)
            }
            2 => AttemptAll::Busy { retry: retry(row.get(2)) },
            3 => AttemptAll::Upgrade,
            5 => {
                self.link.registration.renew(client).await?;
                AttemptAll::ClientExpired
            }
            other => return Err(unexpected("acquire_all", other)),
        })
    }

    /// Leaves the queue of `key` (wait `level`, which gave up).
    pub(crate) async fn give_up(&self, key: &str, owner: &str, level: i64) -> Result<(), BackendError> {
        self.db.query("SELECT tg.give_up($1, $2, $3)", &[&key, &owner, &level]).await.map(drop)
    }

    /// Stops watching `keys` (the `lock_all` of `level`, which gave up).
    pub(crate) async fn give_up_all(&self, keys: &[String], owner: &str, level: i64) -> Result<(), BackendError> {
        self.db.query("SELECT tg.give_up_all($1, $2, $3)", &[&keys, &owner, &level]).await.map(drop)
    }

    /// Releases acquisition `level` of `owner`'s grant of `key`. `false` if
    /// the grant was void (its lease or its client expired) or the level
    /// was released already. Retrying is harmless.
    pub(crate) async fn release(&self, key: &str, owner: &str, level: i64) -> Result<bool, BackendError> {
        let row = self.db.query_one("SELECT tg.release($1, $2, $3)", &[&key, &owner, &level]).await?;
        Ok(row.get::<_, i16>(0) == 0)
    }

    /// Releases acquisition `level` of `owner`'s grants of `keys` (sorted)
    /// in one transaction; returns how many were void.
    pub(crate) async fn release_all(&self, keys: &[String], owner: &str, level: i64) -> Result<u64, BackendError> {
        let row = self.db.query_one("SELECT tg.release_all($1, $2, $3)", &[&keys, &owner, &level]).await?;
        Ok(row.get::<_, i32>(0).max(0) as u64)
    }

    /// Moves the lease of `owner`'s grant of `key` to now + `lease`.
    /// `Ok(None)` if renewed, `Ok(Some(expired))` if the grant was void
    /// (`true`) or has no lease (`false`).
    pub(crate) async fn renew(&self, key: &str, owner: &str, lease: Duration) -> Result<Option<bool>, BackendError> {
        let row = self.db.query_one("SELECT tg.renew($1, $2, $3)", &[&key, &owner, &millis(lease)]).await?;
        Ok(match row.get::<_, i16>(0) {
            0 => None,
            1 => Some(true),
            _ => Some(false),
        })
    }

    /// Tokens handed out, live grants, queued waiters and key rows, across
    /// every client of the schema.
    pub(crate) async fn stats(&self) -> Result<[u64; 4], BackendError> {
        let row = self.db.query_one("SELECT grants, held, waiting, entries FROM tg.stats()", &[]).await?;
        Ok(std::array::from_fn(|i| row.get::<_, i64>(i).max(0) as u64))
    }

    /// Deletes the rows of idle keys; returns how many.
    pub(crate) async fn shrink(&self) -> Result<u64, BackendError> {
        Ok(self.db.query_one("SELECT tg.shrink()", &[]).await?.get::<_, i64>(0).max(0) as u64)
    }

    /// The key's stamp: `None` while it is held exclusively.
    pub(crate) async fn stamp(&self, key: &str) -> Result<Option<i64>, BackendError> {
        Ok(self.db.query_one("SELECT tg.stamp($1)", &[&key]).await?.get(0))
    }
}

fn fence(value: Option<i64>) -> Result<u64, BackendError> {
    value
        .and_then(|f| u64::try_from(f).ok())
        .filter(|&f| f > 0)
        .ok_or_else(|| BackendError::new(BackendErrorKind::Refused, "a grant without a fencing token"))
}

fn retry(ms: Option<i64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms.max(1) as u64))
}

fn unexpected(call: &str, outcome: i16) -> BackendError {
    BackendError::new(BackendErrorKind::Refused, format!("{call} returned unknown outcome {outcome}"))
}

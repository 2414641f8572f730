//! This process's registration in the database (a `tg.client` row) and the
//! heartbeat that keeps it alive.
//!
//! Locks held and waits queued count only while their client's row has not
//! expired. The heartbeat renews it every third of `PgConfig::client_ttl`.
//! If it finds the row expired (the process was stopped, or cut off from
//! the database, for longer than the TTL), the old registration's grants
//! are void and may belong to others: it registers anew, and calls made
//! under the old one fail with `BackendErrorKind::ClientExpired`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::db::Db;
use super::runtime;
use crate::error::BackendError;

/// The registration of one backend; dropping it unregisters.
#[derive(Debug)]
pub(crate) struct Registration {
    db: Arc<Db>,
    id: Arc<AtomicI64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Registration {
    /// Registers and starts the heartbeat.
    pub(crate) async fn start(db: Arc<Db>) -> Result<Registration, BackendError> {
        let id = Arc::new(AtomicI64::new(register(&db).await?));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let beat = {
            let (db, id) = (Arc::clone(&db), Arc::clone(&id));
            async move {
                let period = db.config().client_ttl / 3;
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        () = tokio::time::sleep(period) => {}
                    }
                    let current = id.load(Ordering::Acquire);
                    let ttl = millis(db.config().client_ttl);
                    match db.query_one("SELECT tg.heartbeat($1, $2)", &[&current, &ttl]).await {
                        Ok(row) if row.get::<_, bool>(0) => {}
                        Ok(_) => {
                            if let Ok(new) = register(&db).await {
                                let _ = id.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire);
                            }
                        }
                        // The database is away: try again next period.
                        Err(_) => {}
                    }
                }
            }
        };
        runtime::detach(beat);
        Ok(Registration { db, id, _stop: stop })
    }

    /// The current registration's id.
    pub(crate) fn id(&self) -> i64 {
        self.id.load(Ordering::Acquire)
    }

    /// After a call found registration `expired` expired: registers anew
    /// (once, whoever asks first) and returns the current id.
    pub(crate) async fn renew(&self, expired: i64) -> Result<i64, BackendError> {
        if self.id() != expired {
            return Ok(self.id());
        }
        let new = register(&self.db).await?;
        match self.id.compare_exchange(expired, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(new),
            Err(current) => Ok(current),
        }
    }
}

impl Drop for Registration {
    /// Unregisters, so that this process's keys pass on at once rather
    /// than after the TTL. Waits at most a second for the database.
    fn drop(&mut self) {
        let (db, id) = (Arc::clone(&self.db), self.id());
        let done = runtime::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), db.query("SELECT tg.unregister_client($1)", &[&id])).await;
        });
        // Never block a runtime's thread (least of all the backend's own,
        // which runs the call): there, the call finishes on its own.
        if tokio::runtime::Handle::try_current().is_err() {
            runtime::block_on(done);
        }
    }
}

async fn register(db: &Db) -> Result<i64, BackendError> {
    let ttl = millis(db.config().client_ttl);
    let row = db.query_one("SELECT tg.register_client($1, $2)", &[&ttl, &db.config().label]).await?;
    Ok(row.get(0))
}

/// A duration as whole milliseconds for SQL (saturating).
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

//! One process's link to a tollgate schema: the shared connections, the
//! `LISTEN` connection and this process's registration. The lock and topic
//! stores of a backend share one link.

use std::sync::Arc;

use super::PgConfig;
use super::client::Registration;
use super::db::Db;
use super::listen::{Channel, Interest, Listener};
use super::schema;
use crate::error::OpenError;

/// The connections, notifications and registration of one backend.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) db: Arc<Db>,
    listener: Listener,
    pub(crate) registration: Registration,
}

impl Link {
    /// Prepares the schema (migrating it if `config.migrate`), starts
    /// listening, and registers this process.
    pub(crate) async fn connect(config: PgConfig) -> Result<Arc<Link>, OpenError> {
        schema::prepare(&config).await?;
        let listener = Listener::start(&config).await?;
        let db = Arc::new(Db::new(config));
        let registration = Registration::start(Arc::clone(&db)).await?;
        Ok(Arc::new(Link { db, listener, registration }))
    }

    /// A registration for notifications of `key` on `channel` (see
    /// [`Listener::interest`]).
    pub(crate) fn interest(&self, channel: Channel, key: &str, owner: Option<&str>) -> Interest {
        self.listener.interest(channel, key, owner)
    }
}

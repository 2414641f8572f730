//! An engine whose topics, subscriptions and worker groups are kept in
//! PostgreSQL (feature `postgres`): [`Engine::connect`]. It holds one link
//! to the database (connections, the `LISTEN` connection, this process's
//! registration), the topic store on it, and the lock manager on the same
//! link ([`Engine::locks`]). Topics it opened are shared by their handles.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::{Engine, Kind, Topic};
use crate::error::{OpenError, TopicError};
use crate::lock::LockManager;
use crate::log::TopicConfig;
use crate::log::names::{check_new_name, check_topic_name};
use crate::log::remote::{RemoteTopic, config_of, settings_of};
use crate::pg::PgConfig;
use crate::pg::link::Link;
use crate::pg::runtime;
use crate::pg::topics::{TopicStore, within};
use crate::queue::remote::RemoteGroup;

/// A PostgreSQL engine's state, shared by its clones.
#[derive(Debug)]
pub(crate) struct RemoteEngine {
    link: Arc<Link>,
    store: Arc<TopicStore>,
    pub(super) locks: LockManager,
    /// The topics opened, by name.
    topics: Mutex<HashMap<String, Arc<RemoteEntry>>>,
}

/// A PostgreSQL topic as the engine holds it: the topic, and the worker
/// groups its handles opened in this process (their workers share one
/// group: its counts, the bell a run loop's stop rings).
#[derive(Debug)]
pub(crate) struct RemoteEntry {
    pub(crate) topic: Arc<RemoteTopic>,
    pub(crate) groups: Mutex<HashMap<String, Weak<RemoteGroup>>>,
}

impl Engine {
    /// Connects to the PostgreSQL database of `config` (feature
    /// `postgres`): an engine whose topics, subscriptions and worker groups
    /// are rows there, shared by every process connected to the same
    /// database and schema. The API is the embedded engine's;
    /// docs/POSTGRES.md says where the guarantees differ.
    ///
    /// Connecting creates or upgrades the schema (unless
    /// [`PgConfig::migrate`] is off), registers this process and starts its
    /// `LISTEN` connection, which the engine's waits and its
    /// [`locks`](Engine::locks) share.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tollgate::{Engine, PgConfig};
    ///
    /// let engine = Engine::connect(PgConfig::new("postgres://shop@db.internal/shop")?)?;
    /// let orders = engine.topic("orders")?;
    /// orders.publish("order 1001")?;
    /// let payments = orders.worker("payments")?;
    /// if let Some(delivery) = payments.receive(Duration::from_secs(1))? {
    ///     delivery.ack()?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(config: PgConfig) -> Result<Engine, OpenError> {
        let link = runtime::block_on(Link::connect(config))?;
        let store = Arc::new(TopicStore::new(Arc::clone(&link.db)));
        let locks = LockManager::on_link(Arc::clone(&link));
        let remote = RemoteEngine { link, store, locks, topics: Mutex::new(HashMap::new()) };
        Ok(Engine { kind: Kind::Postgres(Arc::new(remote)) })
    }
}

impl RemoteEngine {
    /// The topic `name`: created with `create` (refused if it exists), or
    /// opened, created with the default configuration if it does not exist.
    pub(super) fn open_topic(&self, name: &str, create: Option<TopicConfig>) -> Result<Topic, TopicError> {
        check_topic_name(name)?;
        let timeout = self.store.operation_timeout();
        let info = match create {
            Some(config) => {
                config.validate().map_err(|reason| TopicError::InvalidConfig { reason })?;
                let settings = settings_of(&config)?;
                check_new_name(name)?;
                let call = self.store.open_topic(name, Some(&settings));
                let info = runtime::block_on(within(timeout, call)).map_err(TopicError::Backend)?;
                let info = info.expect("a topic opened with settings exists");
                if !info.created {
                    return Err(TopicError::AlreadyExists { name: name.to_owned() });
                }
                info
            }
            None => {
                let found = runtime::block_on(within(timeout, self.store.open_topic(name, None)));
                match found.map_err(TopicError::Backend)? {
                    Some(info) => info,
                    None => {
                        check_new_name(name)?;
                        let settings = settings_of(&TopicConfig::default())?;
                        let call = self.store.open_topic(name, Some(&settings));
                        let info = runtime::block_on(within(timeout, call)).map_err(TopicError::Backend)?;
                        info.expect("a topic opened with settings exists")
                    }
                }
            }
        };
        let mut topics = self.topics.lock();
        if let Some(open) = topics.get(name).filter(|open| open.topic.id == info.id) {
            return Ok(Topic::remote(Arc::clone(open)));
        }
        let topic = Arc::new(RemoteTopic::new(
            Arc::clone(&self.link),
            Arc::clone(&self.store),
            info.id,
            name.to_owned(),
            config_of(&info.settings),
            info.oldest..info.end,
        ));
        let entry = Arc::new(RemoteEntry { topic, groups: Mutex::new(HashMap::new()) });
        topics.insert(name.to_owned(), Arc::clone(&entry));
        Ok(Topic::remote(entry))
    }

    /// [`Engine::cleanup`] on PostgreSQL.
    pub(super) fn cleanup(&self) -> Result<super::CleanupReport, TopicError> {
        const BATCH: u32 = 1_000;
        const ROUNDS: u32 = 100;
        let call = self.store.cleanup(BATCH, ROUNDS);
        let (cleaned, more) =
            runtime::block_on(within(self.store.operation_timeout() * 4, call)).map_err(TopicError::Backend)?;
        self.locks.shrink();
        let topics = cleaned.into_iter().map(|c| (c.topic, c.deleted, c.oldest)).collect();
        Ok(super::CleanupReport { topics, more })
    }

    /// The names of the topics, sorted.
    pub(super) fn topics(&self) -> Result<Vec<String>, TopicError> {
        let call = within(self.store.operation_timeout(), self.store.topic_names());
        runtime::block_on(call).map_err(TopicError::Backend)
    }

    /// Deletes the topic `name`, its messages, offsets and worker groups.
    pub(super) fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let call = within(self.store.operation_timeout(), self.store.delete_topic(name));
        match runtime::block_on(call).map_err(TopicError::Backend)? {
            Some(true) => {
                self.topics.lock().remove(name);
                Ok(())
            }
            None => Err(TopicError::NotFound { name: name.to_owned() }),
            Some(false) => Err(TopicError::InvalidConfig {
                reason: "it is the dead-letter topic of another topic's worker group: delete that topic first",
            }),
        }
    }
}

//! Waiting on the database's notifications: one `LISTEN` connection per
//! backend, and interests that a notification for their key wakes.
//!
//! A waiter registers its [`Interest`] *before* the attempt that fails, and
//! PostgreSQL sends a `NOTIFY` when the notifying transaction commits, so a
//! change committed after the attempt's snapshot always wakes it. A
//! notification sent while the listening connection was down is lost, so
//! after each reconnect every registered interest is woken and retries once.
//!
//! `LISTEN` keeps session state on its connection: it needs a direct
//! connection (or PgBouncer in session mode), unlike the pooled calls.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tokio_postgres::AsyncMessage;

use super::PgConfig;
use super::db::{Closed, classify, connect_with};
use super::runtime;
use crate::error::BackendError;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Channel {
    /// A lock key was released (or its holder found dead).
    Lock,
    /// A topic was published to, or a delivery given back: the payload is
    /// the topic's id.
    Topic,
}

impl Channel {
    const ALL: [Channel; 2] = [Channel::Lock, Channel::Topic];

    /// The channel's name in the database, as the schema's functions use it.
    fn name(self, config: &PgConfig) -> String {
        match self {
            Channel::Lock => config.qualify("tg.lock"),
            Channel::Topic => config.qualify("tg.topic"),
        }
    }
}

#[derive(Debug, Default)]
struct Bell {
    state: Mutex<(bool, Option<Waker>)>,
}

impl Bell {
    fn ring(&self) {
        let waker = {
            let mut state = self.state.lock();
            state.0 = true;
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The bells of each key, with the owner each waits as (if any).
type Waits = HashMap<(Channel, Box<str>), Vec<(Option<Box<str>>, Arc<Bell>)>>;

#[derive(Debug)]
struct Shared {
    waits: Mutex<Waits>,
    names: Vec<(String, Channel)>,
}

impl Shared {
    /// Rings the bells of a notification: `key`, or `key\x01owner` when
    /// only that owner (and interests with no owner) can act on it.
    fn dispatch(&self, channel: &str, payload: &str) {
        let Some(&(_, channel)) = self.names.iter().find(|(name, _)| name == channel) else { return };
        let (key, only) = match payload.rsplit_once('\u{1}') {
            Some((key, owner)) => (key, Some(owner)),
            None => (payload, None),
        };
        let bells: Vec<Arc<Bell>> = match self.waits.lock().get(&(channel, key.into())) {
            None => return,
            Some(bells) => bells
                .iter()
                .filter(|(owner, _)| match (only, owner) {
                    (Some(only), Some(owner)) => **owner == *only,
                    _ => true,
                })
                .map(|(_, bell)| Arc::clone(bell))
                .collect(),
        };
        for bell in bells {
            bell.ring();
        }
    }

    fn ring_all(&self) {
        let bells: Vec<_> = self.waits.lock().values().flatten().map(|(_, bell)| Arc::clone(bell)).collect();
        for bell in bells {
            bell.ring();
        }
    }
}

/// The backend's `LISTEN` connection. Dropping it closes the connection.
#[derive(Debug)]
pub(crate) struct Listener {
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Listener {
    /// Connects and listens; then keeps the connection up (reconnecting with
    /// backoff) until dropped.
    pub(crate) async fn start(config: &PgConfig) -> Result<Listener, BackendError> {
        let names = Channel::ALL.iter().map(|&c| (c.name(config), c)).collect();
        let shared = Arc::new(Shared { waits: Mutex::new(HashMap::new()), names });
        let (client, closed) = listen(config, &shared).await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let config = config.clone();
        let weak = Arc::downgrade(&shared);
        runtime::detach(async move {
            let mut connection = Some((client, closed));
            let mut backoff = Duration::from_millis(50);
            loop {
                if let Some((client, mut closed)) = connection.take() {
                    // Until the connection ends or the listener is dropped.
                    let ended = poll_fn(|cx| match Pin::new(&mut stopped).poll(cx) {
                        Poll::Ready(_) => Poll::Ready(false),
                        Poll::Pending => closed.as_mut().poll(cx).map(|()| true),
                    })
                    .await;
                    drop(client);
                    if !ended {
                        return;
                    }
                    backoff = Duration::from_millis(50);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                if stopped.try_recv() != Err(tokio::sync::oneshot::error::TryRecvError::Empty) {
                    return;
                }
                let Some(shared) = weak.upgrade() else { return };
                if let Ok((client, closed)) = listen(&config, &shared).await {
                    // Notifications sent while down are lost: everyone retries.
                    shared.ring_all();
                    connection = Some((client, closed));
                }
            }
        });
        Ok(Listener { shared, _stop: stop })
    }

    /// A registration for notifications of `key` on `channel`, waiting as
    /// `owner` (notifications meant for another owner pass it by; `None`
    /// hears them all). Register before the attempt whose failure the wait
    /// follows.
    pub(crate) fn interest(&self, channel: Channel, key: &str, owner: Option<&str>) -> Interest {
        let bell = Arc::new(Bell::default());
        let entry = (owner.map(Into::into), Arc::clone(&bell));
        self.shared.waits.lock().entry((channel, key.into())).or_default().push(entry);
        Interest { shared: Arc::downgrade(&self.shared), channel, key: key.into(), bell }
    }
}

/// Connects, listens on every channel, and dispatches notifications to `shared`.
async fn listen(config: &PgConfig, shared: &Arc<Shared>) -> Result<(tokio_postgres::Client, Closed), BackendError> {
    let weak = Arc::downgrade(shared);
    let (client, closed) = connect_with(config, move |message| {
        if let (AsyncMessage::Notification(n), Some(shared)) = (message, weak.upgrade()) {
            shared.dispatch(n.channel(), n.payload());
        }
    })
    .await?;
    let statements: String =
        Channel::ALL.iter().map(|c| format!("LISTEN \"{}\";", c.name(config))).collect::<Vec<_>>().join(" ");
    client.batch_execute(&statements).await.map_err(classify)?;
    Ok((client, closed))
}

/// A registered wait for notifications of one key. Dropping it deregisters.
#[derive(Debug)]
pub(crate) struct Interest {
    shared: Weak<Shared>,
    channel: Channel,
    key: Box<str>,
    bell: Arc<Bell>,
}

impl Interest {
    /// `Ready` once a notification for the key arrived (or the listener
    /// reconnected) since the interest was registered.
    pub(crate) fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.bell.state.lock();
        if state.0 {
            return Poll::Ready(());
        }
        match &mut state.1 {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else { return };
        let mut waits = shared.waits.lock();
        let key = (self.channel, std::mem::take(&mut self.key));
        if let Some(bells) = waits.get_mut(&key) {
            bells.retain(|(_, bell)| !Arc::ptr_eq(bell, &self.bell));
            if bells.is_empty() {
                waits.remove(&key);
            }
        }
    }
}

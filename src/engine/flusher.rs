//! The flusher: one background thread per engine that runs each open
//! topic's background work (interval flushes, syncing sealed segments,
//! retention), syncs worker-group journals after an interval flush, and
//! runs the syncs that tasks waiting for a `Sync` publish ask for
//! (`log/publish.rs`), so that no task runs an `msync`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::topic::OpenTopic;

/// How often the flusher looks at topics that have nothing scheduled
/// (sealed segments to sync, retention).
const FLUSHER_TICK: Duration = Duration::from_millis(100);

/// The background thread: interval flushes, syncing sealed segments, retention.
#[derive(Debug, Default)]
pub(super) struct Flusher {
    state: Mutex<FlusherState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
pub(super) struct FlusherState {
    topics: Vec<Weak<OpenTopic>>,
    /// A task asked for a sync since the last pass.
    requested: bool,
    stop: bool,
}

impl Flusher {
    pub(super) fn add(&self, topic: &Arc<OpenTopic>) {
        self.state.lock().topics.push(Arc::downgrade(topic));
        self.wake.notify_one();
    }

    /// Asks for a pass now: a task waits for a topic's records to be durable.
    pub(super) fn request(&self) {
        self.state.lock().requested = true;
        self.wake.notify_one();
    }

    pub(super) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }

    pub(super) fn run(&self) {
        let mut state = self.state.lock();
        while !state.stop {
            state.requested = false;
            drop(state);
            let wait = self.pass();
            state = self.state.lock();
            if !state.stop && !state.requested {
                self.wake.wait_for(&mut state, wait);
            }
        }
    }

    /// One pass over the open topics: each topic's due background work.
    /// Returns how long the thread may wait before the next pass.
    pub(super) fn pass(&self) -> Duration {
        let topics: Vec<_> = {
            let mut state = self.state.lock();
            state.topics.retain(|t| t.strong_count() > 0);
            state.topics.iter().filter_map(Weak::upgrade).collect()
        };
        // Syncs that tasks wait for come first.
        for topic in &topics {
            topic.sync_requested();
        }
        let mut wait = FLUSHER_TICK;
        for topic in topics {
            if let Some(next) = topic.log.background(|| topic.sync_groups()) {
                wait = wait.min(next);
            }
        }
        wait
    }
}

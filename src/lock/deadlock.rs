//! Deadlock detection over the wait-for graph of owners.
//!
//! Every blocked acquisition that could close a cycle registers here: those
//! of sessions, and those of threads that hold a lock. A thread that holds
//! nothing cannot be in a cycle, and skipping it loses no path: everyone
//! queued behind it waits for its blockers (the holders and the waiters
//! ahead of it) directly. An owner waits for the holders of
//! its key and for the waiters queued ahead of it. A wait that lasts longer
//! than `LockConfig::deadlock_threshold` searches that graph, depth first, for
//! a path back to itself; finding one, it leaves the registry *before* the
//! registry lock is released and gives up with `LockError::Deadlock`, so of the
//! owners in one cycle exactly one becomes the victim (a later search no
//! longer sees the cycle). Searches repeat at doubling intervals while the
//! wait lasts, so cycles that form later are found too.
//!
//! The graph is read from atomics and queue snapshots while the registry lock
//! is held. A registered owner is blocked, so its holdings cannot change under
//! the search except by lease revocation; shared holders beyond the named
//! reader slots are invisible, so a cycle through them is not detected (use
//! a timeout there).

use std::collections::{HashMap, HashSet};

use crate::sync::{Arc, Mutex};

use super::table::Table;
use super::wait::Waiter;

/// The registry of blocked acquisitions, by owner.
#[derive(Debug, Default)]
pub(crate) struct Deadlocks {
    waiting: Mutex<HashMap<u64, Vec<Arc<Waiter>>>>,
}

impl Deadlocks {
    pub(crate) fn register(&self, waiter: &Arc<Waiter>) {
        let mut waiting = self.waiting.lock();
        for owner in waiter.owners() {
            waiting.entry(owner).or_default().push(Arc::clone(waiter));
        }
    }

    pub(crate) fn deregister(&self, waiter: &Arc<Waiter>) {
        let mut waiting = self.waiting.lock();
        Self::remove(&mut waiting, waiter);
    }

    fn remove(waiting: &mut HashMap<u64, Vec<Arc<Waiter>>>, waiter: &Arc<Waiter>) {
        for owner in waiter.owners() {
            if let Some(waits) = waiting.get_mut(&owner) {
                waits.retain(|w| !Arc::ptr_eq(w, waiter));
                if waits.is_empty() {
                    waiting.remove(&owner);
                }
            }
        }
    }

    /// Looks for a cycle through `me`. If there is one, `me` leaves the
    /// registry (it is the victim) and the keys along the cycle are returned,
    /// starting with `me`'s.
    pub(crate) fn search(&self, me: &Arc<Waiter>, table: &Table) -> Option<Vec<String>> {
        let mut waiting = self.waiting.lock();
        let guard = crossbeam_epoch::pin();
        let blockers = |waiter: &Arc<Waiter>| {
            let mut owners = Vec::new();
            if let Some(entry) = table.find(&waiter.key, waiter.hash, &guard) {
                entry.blockers(waiter, &mut owners);
            }
            owners
        };

        // Depth-first search over waits. A frame is a wait on the path from
        // `me`, with the waits of its blockers still to explore.
        let waits_of = |owners: Vec<u64>, waiting: &HashMap<u64, Vec<Arc<Waiter>>>| -> Vec<Arc<Waiter>> {
            owners.iter().filter_map(|owner| waiting.get(owner)).flatten().cloned().collect()
        };
        // A cycle closes on any owner `me` stands for.
        let closes = |owners: &[u64]| me.owners().any(|mine| owners.contains(&mine));
        let first = blockers(me);
        if closes(&first) {
            // A thread blocked, as a session, on a key it holds itself.
            Self::remove(&mut waiting, me);
            return Some(vec![me.key.to_string()]);
        }
        let first = waits_of(first, &waiting);
        let mut path: Vec<(Arc<Waiter>, Vec<Arc<Waiter>>)> = vec![(Arc::clone(me), first)];
        let mut visited: HashSet<usize> = HashSet::from([me.park_key()]);
        let mut cycle = None;
        while let Some((_, pending)) = path.last_mut() {
            let Some(next) = pending.pop() else {
                path.pop();
                continue;
            };
            if !visited.insert(next.park_key()) {
                continue;
            }
            let owners = blockers(&next);
            if closes(&owners) {
                let mut keys: Vec<String> = path.iter().map(|(waiter, _)| waiter.key.to_string()).collect();
                keys.push(next.key.to_string());
                cycle = Some(keys);
                break;
            }
            let further = waits_of(owners, &waiting);
            path.push((next, further));
        }
        if cycle.is_some() {
            Self::remove(&mut waiting, me);
        }
        cycle
    }
}

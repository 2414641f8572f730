//! Waiting for work without lost wake-ups (docs/CONCURRENCY.md, "Worker
//! groups"): a worker that finds nothing to take counts itself idle under
//! the group lock and notes the epoch; whatever makes a message takeable
//! does so under that lock, and if anyone is idle bumps the epoch and then
//! rings the doorbell the workers park on; a park's validation sleeps only
//! while the epoch is the one noted. The epoch makes it an event count (the
//! scheme of folly's `EventCount`: prepare to wait, re-check, then sleep
//! unless notified since), with the idle count standing in for its waiter
//! count under the group's lock. Built on `crate::sync`, so that the loom
//! model below runs this code.

use crate::sync::{AtomicU64, Ordering};

/// Workers waiting in `receive`. Kept in the group's state, so it is only
/// read and changed under the group lock.
#[derive(Debug, Default)]
pub(super) struct Idle {
    workers: u32,
}

/// Bumped when a message becomes takeable, or window space frees up,
/// while a worker waits; read by the waiting worker's park validation,
/// outside the group lock.
#[derive(Debug)]
pub(super) struct Epoch(AtomicU64);

/// The epoch a worker noted when it counted itself idle.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket(u64);

impl Idle {
    /// Under the group lock, having found nothing to take: counts the
    /// worker idle until `leave`, and returns what its park validates
    /// against.
    pub(super) fn enter(&mut self, epoch: &Epoch) -> Ticket {
        self.workers += 1;
        Ticket(epoch.0.load(Ordering::Acquire))
    }

    /// Under the group lock, after the worker's wait.
    pub(super) fn leave(&mut self) {
        self.workers -= 1;
    }

    /// Under the group lock, after a change that may let a waiting worker
    /// take a message: bumps the epoch if a worker waits, and returns
    /// whether the caller must ring the doorbell the workers park on. A
    /// worker counted idle before this critical section sees the new epoch
    /// in its validation (the parking lot's bucket lock orders the
    /// validation after the ring; for a task, the doorbell's task list's
    /// mutex does) or is parked and woken by the ring; one that comes after
    /// it sees the change itself, under the lock.
    pub(super) fn wake(&self, epoch: &Epoch) -> bool {
        if self.workers == 0 {
            return false;
        }
        epoch.0.fetch_add(1, Ordering::AcqRel);
        true
    }
}

impl Epoch {
    pub(super) fn new() -> Epoch {
        Epoch(AtomicU64::new(0))
    }

    /// The park's validation: whether a waker came since `ticket`.
    pub(super) fn moved(&self, ticket: Ticket) -> bool {
        self.0.load(Ordering::Acquire) != ticket.0
    }
}

/// Loom model of the protocol, running the code above: a worker that finds
/// nothing and parks against a give-back that makes a message takeable. The
/// group's state is reduced to what the protocol reads (the idle count and
/// a count of takeable messages, under a `crate::sync::Mutex` as the group's
/// is), and the parking lot to a bucket lock that orders a validation
/// against a ring, with loom's `park`/`unpark` as the sleep: a lost wake-up
/// leaves the worker parked forever, which loom reports as a deadlock. Run
/// with `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" cargo test --release
/// --lib loom_worker`.
#[cfg(all(test, loom))]
mod tests {
    use loom::thread::{self, Thread};

    use super::{Epoch, Idle};
    use crate::sync::{Arc, Mutex};

    struct Group {
        /// (idle workers, takeable messages), as under `Group::state`.
        state: Mutex<(Idle, u32)>,
        epoch: Epoch,
        /// The doorbell's bucket in the parking lot: the thread parked on it.
        bucket: Mutex<Option<Thread>>,
    }

    /// `receive`: takes a message, or counts itself idle and parks until
    /// woken, then tries again.
    fn receive(group: &Group) {
        loop {
            let ticket = {
                let mut state = group.state.lock();
                if state.1 > 0 {
                    state.1 -= 1;
                    return;
                }
                state.0.enter(&group.epoch)
            };
            let sleeps = {
                // The park's validation, under the bucket lock.
                let mut bucket = group.bucket.lock();
                let sleeps = !group.epoch.moved(ticket);
                if sleeps {
                    *bucket = Some(thread::current());
                }
                sleeps
            };
            if sleeps {
                thread::park();
            }
            group.state.lock().0.leave();
        }
    }

    /// `nack` (or a dropped delivery, a failed dead letter, a settle that
    /// frees a full window): under the lock, makes a message takeable and
    /// bumps the epoch if a worker is idle; then rings: unparks whoever is
    /// parked on the bucket.
    fn give_back(group: &Group) {
        let ring = {
            let mut state = group.state.lock();
            state.1 += 1;
            state.0.wake(&group.epoch)
        };
        if ring && let Some(parked) = group.bucket.lock().take() {
            parked.unpark();
        }
    }

    /// A worker that finds nothing and decides to sleep is always woken by
    /// a give-back that makes a message takeable: the give-back sees it
    /// idle and bumps the epoch (which its validation sees) and rings
    /// (which wakes it if it is parked), or the worker sees the message
    /// itself.
    #[test]
    fn loom_worker_never_sleeps_through_a_give_back() {
        loom::model(|| {
            let group = Arc::new(Group {
                state: Mutex::new((Idle::default(), 0)),
                epoch: Epoch::new(),
                bucket: Mutex::new(None),
            });
            let worker = {
                let group = group.clone();
                thread::spawn(move || receive(&group))
            };
            give_back(&group);
            worker.join().unwrap();
            let state = group.state.lock();
            assert_eq!((state.0.workers, state.1), (0, 0), "the worker took the message and is not idle");
        });
    }
}

//! The topic's committed offset, and waiting for it to move: publishers
//! set it and notify; caught-up subscribers and idle workers wait on it,
//! parked threads in the parking lot and tasks in a list of wakers beside
//! it, counted together. A publish costs one fence and one load when nobody
//! waits; no wake-up is ever lost.
//!
//! Protocol (Dekker's, with fences because loom models `fence(SeqCst)`
//! exactly but treats SeqCst accesses as AcqRel):
//!
//! - publish: `value.store(v, Release)` (`set`, under the publisher's lock, so
//!   values only grow); then `fence(SeqCst)`; `waiters.load(Relaxed)`; unpark
//!   everyone if it is non-zero (`notify`, after the lock is released).
//! - wait: `waiters.fetch_add(1, Relaxed)`; `fence(SeqCst)`; park, with the
//!   park's validation (under the parking lot's bucket lock) re-reading
//!   `value`; `waiters.fetch_sub(1, Relaxed)`.
//!
//! The two fences are ordered one way or the other. If the publisher's fence
//! is first, the waiter's read of `value` after its own fence sees `v` and it
//! does not park. If the waiter's fence is first, the publisher's read of
//! `waiters` sees the increment and it unparks; the unpark takes the bucket
//! lock, so it lands either before the validation (which then sees `v`) or
//! after the waiter is parked (which it wakes).
//!
//! A task waits the same way, with the list's mutex in the bucket lock's
//! place: it pushes its waker under the mutex, then `waiters.fetch_add(1)`
//! and `fence(SeqCst)`, then re-reads `value` (`poll_wait`). A ringer that
//! sees the increment then takes the mutex after the push (its load read a
//! value written after the push's unlock), drains the list, counts the
//! entries out of `waiters` and wakes them after unlocking. A drained entry
//! is the task's notice: its next poll finds it gone and re-checks. A task
//! that stops waiting (it saw the value, or its future was dropped) removes
//! its entry and counts it out itself (`forget`); each entry is counted out
//! once, by whoever removes it under the mutex. `loom_doorbell_*` below
//! check the protocol under every interleaving, for a thread and a task.
//!
//! Why not `event-listener`, one list for both: its blocking wake-up of a
//! parked subscriber measured about 3× slower than the parking lot's
//! (docs/BENCHMARKS.md, "The doorbell"), and its `notify` takes the list's
//! lock even when nobody listens.

use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::sync::{self, AtomicU64, Mutex, Ordering, fence};

#[derive(Debug)]
pub(crate) struct Doorbell {
    value: AtomicU64,
    /// Parked threads, plus the entries of `tasks`: the publisher's gate.
    waiters: AtomicU64,
    tasks: Mutex<Tasks>,
}

/// The tasks waiting, each under the id its future keeps in a [`Listening`].
#[derive(Debug, Default)]
struct Tasks {
    next_id: u64,
    wakers: Vec<(u64, Waker)>,
}

/// A task's place on a doorbell, kept in its future between polls (see
/// [`Doorbell::poll_wait`]). Its owner calls [`Doorbell::forget`] when it
/// stops waiting early (a dropped future); otherwise the entry stays in the
/// list until the next ring.
#[derive(Debug, Default)]
pub(crate) struct Listening {
    id: Option<u64>,
}

impl Doorbell {
    pub(crate) fn new(value: u64) -> Self {
        Self { value: AtomicU64::new(value), waiters: AtomicU64::new(0), tasks: Mutex::new(Tasks::default()) }
    }

    /// The current value; everything published before it was rung is visible.
    #[inline]
    pub(crate) fn load(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Publishes `value` (Release). Values must be set in increasing order:
    /// callers set under the lock that orders them, and `notify` after
    /// releasing it.
    #[inline]
    pub(crate) fn set(&self, value: u64) {
        self.value.store(value, Ordering::Release);
    }

    /// Wakes every waiter if there is any, after a `set`. Returns whether
    /// anyone was waiting.
    #[inline]
    pub(crate) fn notify(&self) -> bool {
        fence(Ordering::SeqCst);
        let waiting = self.waiters.load(Ordering::Relaxed) > 0;
        if waiting {
            self.wake();
        }
        waiting
    }

    /// Wakes every waiter, thread or task, without changing the value (the
    /// topic closed or was deleted, or a worker group's state changed:
    /// waiters re-check).
    #[cold]
    pub(crate) fn wake(&self) {
        sync::unpark_all(self.key());
        let woken = std::mem::take(&mut self.tasks.lock().wakers);
        if !woken.is_empty() {
            self.waiters.fetch_sub(woken.len() as u64, Ordering::Relaxed);
        }
        for (_, waker) in woken {
            waker.wake();
        }
    }

    /// Parks until the value is above `seen`, `stop()` holds, `wake` is
    /// called, or `deadline` passes. Returns `true` if the deadline passed.
    /// May return early; callers re-check.
    pub(crate) fn wait(&self, seen: u64, deadline: Option<Instant>, stop: impl Fn() -> bool) -> bool {
        self.register();
        let timed_out = sync::park(self.key(), || self.should_sleep(seen) && !stop(), deadline);
        self.deregister();
        timed_out
    }

    /// The task's form of [`wait`](Doorbell::wait): `Ready` once the value
    /// is above `seen`, `stop()` holds, or the bell rang since `listening`
    /// joined the list; otherwise `Pending`, with the task's waker in the
    /// list. After `Ready` the place is given up: callers re-check, and
    /// poll again with the same `listening` to join anew.
    pub(crate) fn poll_wait(
        &self,
        listening: &mut Listening,
        cx: &mut Context<'_>,
        seen: u64,
        stop: impl Fn() -> bool,
    ) -> Poll<()> {
        match listening.id {
            None => {
                let mut tasks = self.tasks.lock();
                let id = tasks.next_id;
                tasks.next_id += 1;
                tasks.wakers.push((id, cx.waker().clone()));
                drop(tasks);
                listening.id = Some(id);
                self.register();
            }
            Some(id) => {
                let mut tasks = self.tasks.lock();
                let Some((_, waker)) = tasks.wakers.iter_mut().find(|(entry, _)| *entry == id) else {
                    // A ring drained (and counted out) the entry.
                    listening.id = None;
                    return Poll::Ready(());
                };
                if !waker.will_wake(cx.waker()) {
                    waker.clone_from(cx.waker());
                }
            }
        }
        if !self.should_sleep(seen) || stop() {
            self.forget(listening);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Gives up a task's place, if it has one: for a future that stops
    /// waiting (it is dropped, or found what it waited for).
    pub(crate) fn forget(&self, listening: &mut Listening) {
        let Some(id) = listening.id.take() else { return };
        let mut tasks = self.tasks.lock();
        if let Some(at) = tasks.wakers.iter().position(|(entry, _)| *entry == id) {
            tasks.wakers.swap_remove(at);
            self.waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn register(&self) {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    fn should_sleep(&self, seen: u64) -> bool {
        self.value.load(Ordering::Relaxed) <= seen
    }

    fn deregister(&self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}

/// Loom models: run with `RUSTFLAGS="--cfg loom --cfg crossbeam_loom"
/// cargo test --release --lib loom_doorbell`.
#[cfg(all(test, loom))]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;

    use loom::sync::Arc;
    use loom::thread;

    use super::{Doorbell, Listening};

    /// A waiter that decides to sleep is always seen by the publisher.
    #[test]
    fn loom_doorbell_never_loses_a_wake_up() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new(0));
            let waiter = {
                let bell = bell.clone();
                // A waiter that decides to sleep stays registered until it is
                // woken, so the model does not deregister it.
                thread::spawn(move || {
                    bell.register();
                    bell.should_sleep(0)
                })
            };
            bell.set(1);
            let woke = bell.notify();
            let sleeps = waiter.join().unwrap();
            assert!(!sleeps || woke, "the waiter slept on 0 and the publisher saw nobody waiting");
        });
    }

    /// A task waiting for a value above 0 against a publisher: it returns.
    /// A lost wake-up leaves it pending forever, which loom reports as a
    /// deadlock. It fails (loom: "deadlock") if `poll_wait` checks the value
    /// before pushing its waker and counting itself.
    #[test]
    fn loom_doorbell_wakes_a_task() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new(0));
            let waiter = {
                let bell = bell.clone();
                thread::spawn(move || {
                    let mut listening = Listening::default();
                    loom::future::block_on(poll_fn(|cx| {
                        while bell.load() == 0 {
                            if bell.poll_wait(&mut listening, cx, 0, || false).is_pending() {
                                return Poll::Pending;
                            }
                        }
                        Poll::Ready(())
                    }));
                    bell.forget(&mut listening);
                })
            };
            bell.set(1);
            bell.notify();
            waiter.join().unwrap();
            assert_eq!(
                bell.waiters.load(loom::sync::atomic::Ordering::Relaxed),
                0,
                "an entry was counted out twice or never"
            );
        });
    }

    /// A task woken by a ring that changes no value (`wake`: a close, a
    /// worker group's give-back), its stop condition set before the ring.
    #[test]
    fn loom_doorbell_wake_reaches_a_task_without_a_new_value() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new(0));
            let stop = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let waiter = {
                let (bell, stop) = (bell.clone(), stop.clone());
                thread::spawn(move || {
                    let mut listening = Listening::default();
                    let stopped = || stop.load(loom::sync::atomic::Ordering::Relaxed);
                    loom::future::block_on(poll_fn(|cx| {
                        while !stopped() {
                            if bell.poll_wait(&mut listening, cx, 0, stopped).is_pending() {
                                return Poll::Pending;
                            }
                        }
                        Poll::Ready(())
                    }));
                    bell.forget(&mut listening);
                })
            };
            stop.store(true, loom::sync::atomic::Ordering::Relaxed);
            bell.wake();
            waiter.join().unwrap();
        });
    }

    /// What was written before a ring is visible to whoever sees its value.
    #[test]
    fn loom_doorbell_publishes_data_written_before_the_ring() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new(0));
            let data = Arc::new(loom::sync::atomic::AtomicU64::new(0));
            let reader = {
                let (bell, data) = (bell.clone(), data.clone());
                thread::spawn(move || {
                    if bell.load() == 1 {
                        assert_eq!(data.load(loom::sync::atomic::Ordering::Relaxed), 42);
                    }
                })
            };
            data.store(42, loom::sync::atomic::Ordering::Relaxed);
            bell.set(1);
            bell.notify();
            reader.join().unwrap();
        });
    }
}

//! Deadlines for futures, with no runtime: a future that must wake at an
//! instant (a timeout, a deadlock search, a lease's end, a delayed message)
//! arms a [`Timer`] in its `poll`. One process-wide thread, `tollgate-timer`
//! (started on first use), keeps the armed deadlines in a heap and wakes each
//! task when its instant passes, so the same future works under tokio, smol
//! or a plain `block_on`.
//!
//! Disarming is cheap on purpose: a future that got what it waited for
//! drops its timer on the hot path of a lock hand-off, so dropping only
//! removes its waker under the timer's mutex and never wakes the thread;
//! the heap entry is skipped when its instant comes (or purged once dead
//! entries outnumber live ones). Arming wakes the thread only when the new
//! instant is earlier than the one it sleeps until. (`futures-timer`, which
//! wakes its thread on every drop, made a hand-off to a task 1.5× slower:
//! docs/BENCHMARKS.md.)
//!
//! Under loom no time passes: an armed deadline never arrives, so a task
//! waiter is woken only by a notification, and a lost one deadlocks the
//! model.

#[cfg(not(loom))]
use std::task::Waker;
use std::task::{Context, Poll};
use std::time::Instant;

/// A re-armable deadline for one future. Dropping it disarms it.
#[derive(Debug, Default)]
pub(crate) struct Timer {
    /// The deadline armed, its id in the wheel, and the waker registered.
    #[cfg(not(loom))]
    armed: Option<(Instant, u64, Waker)>,
}

impl Timer {
    /// A timer with nothing armed.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Arms the timer for `until` (or disarms it for `None`) and registers
    /// the task to be woken then. `Ready` once `until` has passed.
    #[cfg(not(loom))]
    pub(crate) fn poll_until(&mut self, cx: &mut Context<'_>, until: Option<Instant>) -> Poll<()> {
        let Some(until) = until.filter(|&until| Instant::now() < until) else {
            self.disarm();
            return if until.is_some() { Poll::Ready(()) } else { Poll::Pending };
        };
        match &mut self.armed {
            Some((at, _, waker)) if *at == until && waker.will_wake(cx.waker()) => {}
            Some((at, id, waker)) if *at == until => {
                waker.clone_from(cx.waker());
                wheel::rewake(*id, cx.waker());
            }
            _ => {
                self.disarm();
                let id = wheel::arm(until, cx.waker());
                self.armed = Some((until, id, cx.waker().clone()));
            }
        }
        Poll::Pending
    }

    #[cfg(not(loom))]
    fn disarm(&mut self) {
        if let Some((_, id, _)) = self.armed.take() {
            wheel::disarm(id);
        }
    }

    /// Under loom no time passes, so a deadline never arrives: a task is
    /// woken only by a notification, and a lost one leaves the model
    /// deadlocked, which loom reports. (Models use zero timeouts, which a
    /// step sees as passed without sleeping.)
    #[cfg(loom)]
    pub(crate) fn poll_until(&mut self, _cx: &mut Context<'_>, _until: Option<Instant>) -> Poll<()> {
        Poll::Pending
    }
}

#[cfg(not(loom))]
impl Drop for Timer {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// The process-wide deadlines and the thread that fires them.
#[cfg(not(loom))]
mod wheel {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};
    use std::sync::OnceLock;
    use std::task::Waker;
    use std::time::Instant;

    use parking_lot::{Condvar, Mutex};

    struct Wheel {
        state: Mutex<State>,
        changed: Condvar,
    }

    #[derive(Default)]
    struct State {
        /// Armed instants, by id; entries whose id has no waker are dead.
        heap: BinaryHeap<Reverse<(Instant, u64)>>,
        wakers: HashMap<u64, Waker>,
        next_id: u64,
        /// What the thread sleeps until (`None`: until notified).
        sleeping_until: Option<Instant>,
    }

    fn wheel() -> &'static Wheel {
        static WHEEL: OnceLock<&'static Wheel> = OnceLock::new();
        WHEEL.get_or_init(|| {
            let wheel: &'static Wheel =
                Box::leak(Box::new(Wheel { state: Mutex::new(State::default()), changed: Condvar::new() }));
            std::thread::Builder::new()
                .name("tollgate-timer".into())
                .spawn(move || wheel.run())
                .expect("tollgate: cannot start the timer thread");
            wheel
        })
    }

    /// Arms a deadline; returns its id.
    pub(super) fn arm(at: Instant, waker: &Waker) -> u64 {
        let wheel = wheel();
        let mut state = wheel.state.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.heap.push(Reverse((at, id)));
        state.wakers.insert(id, waker.clone());
        if state.heap.len() > 1024 && state.heap.len() > 2 * state.wakers.len() {
            // Mostly dead entries: keep the live ones.
            let State { heap, wakers, .. } = &mut *state;
            heap.retain(|Reverse((_, id))| wakers.contains_key(id));
        }
        if state.sleeping_until.is_none_or(|until| at < until) {
            wheel.changed.notify_one();
        }
        id
    }

    /// Replaces the waker of deadline `id`.
    pub(super) fn rewake(id: u64, waker: &Waker) {
        if let Some(registered) = wheel().state.lock().wakers.get_mut(&id) {
            registered.clone_from(waker);
        }
    }

    /// Heap entries and live deadlines, for tests.
    #[cfg(test)]
    pub(super) fn entries() -> (usize, usize) {
        let state = wheel().state.lock();
        (state.heap.len(), state.wakers.len())
    }

    /// Disarms deadline `id`, without waking the thread.
    pub(super) fn disarm(id: u64) {
        let waker = wheel().state.lock().wakers.remove(&id);
        drop(waker); // outside the lock
    }

    impl Wheel {
        fn run(&self) {
            let mut due = Vec::new();
            let mut state = self.state.lock();
            loop {
                let now = Instant::now();
                while let Some(&Reverse((at, id))) = state.heap.peek() {
                    if at > now {
                        break;
                    }
                    state.heap.pop();
                    due.extend(state.wakers.remove(&id));
                }
                if !due.is_empty() {
                    drop(state);
                    due.drain(..).for_each(Waker::wake);
                    state = self.state.lock();
                    continue;
                }
                state.sleeping_until = state.heap.peek().map(|Reverse((at, _))| *at);
                match state.sleeping_until {
                    Some(until) => {
                        self.changed.wait_until(&mut state, until);
                    }
                    None => self.changed.wait(&mut state),
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use std::time::Duration;

    use super::*;

    /// Counts wake-ups and unparks the test thread.
    struct Counting {
        wakes: AtomicUsize,
        thread: std::thread::Thread,
    }

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            self.thread.unpark();
        }
    }

    fn counting_waker() -> (Arc<Counting>, Waker) {
        let counting = Arc::new(Counting { wakes: AtomicUsize::new(0), thread: std::thread::current() });
        (Arc::clone(&counting), Waker::from(counting))
    }

    #[test]
    fn a_deadline_wakes_the_task_and_is_then_ready() {
        let (counting, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut timer = Timer::new();
        let until = Instant::now() + Duration::from_millis(20);
        assert_eq!(timer.poll_until(&mut cx, Some(until)), Poll::Pending);
        while counting.wakes.load(Ordering::SeqCst) == 0 {
            std::thread::park();
        }
        assert!(Instant::now() >= until, "woken before the deadline");
        assert_eq!(timer.poll_until(&mut cx, Some(until)), Poll::Ready(()));
    }

    #[test]
    fn disarmed_far_deadlines_do_not_pile_up() {
        let (_, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let far = Instant::now() + Duration::from_secs(3600);
        for i in 0..10_000u32 {
            let mut timer = Timer::new();
            assert_eq!(timer.poll_until(&mut cx, Some(far + Duration::from_nanos(u64::from(i)))), Poll::Pending);
        }
        let (heap, live) = wheel::entries();
        // Other tests may arm timers meanwhile; the bound still holds.
        assert!(heap <= (2 * live).max(1024) + 1, "{heap} heap entries for {live} live deadlines");
    }

    #[test]
    fn a_past_deadline_is_ready_at_once_and_none_never_is() {
        let (counting, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut timer = Timer::new();
        assert_eq!(timer.poll_until(&mut cx, Some(Instant::now())), Poll::Ready(()));
        assert_eq!(timer.poll_until(&mut cx, None), Poll::Pending);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(counting.wakes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn re_arming_earlier_wakes_at_the_earlier_instant_and_disarming_wakes_nobody() {
        let (counting, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut timer = Timer::new();
        let late = Instant::now() + Duration::from_secs(3600);
        assert_eq!(timer.poll_until(&mut cx, Some(late)), Poll::Pending);
        let early = Instant::now() + Duration::from_millis(10);
        assert_eq!(timer.poll_until(&mut cx, Some(early)), Poll::Pending);
        while counting.wakes.load(Ordering::SeqCst) == 0 {
            std::thread::park();
        }
        assert_eq!(timer.poll_until(&mut cx, Some(early)), Poll::Ready(()));

        let (counting, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(timer.poll_until(&mut cx, Some(soon)), Poll::Pending);
        drop(timer);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(counting.wakes.load(Ordering::SeqCst), 0, "a dropped timer woke its task");
    }
}

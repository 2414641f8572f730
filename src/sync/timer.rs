//! Deadlines for futures, with no runtime: a future that must wake at an
//! instant (a timeout, a deadlock search, a lease's end, a delayed message)
//! arms a [`Timer`] in its `poll`. The wake-up comes from `futures-timer`'s
//! one process-wide helper thread, so the same future works under tokio,
//! smol or a plain `block_on`.
//!
//! Under loom no time passes: an armed deadline never arrives, so a task
//! waiter is woken only by a notification, and a lost one deadlocks the
//! model.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// A re-armable deadline for one future. Dropping it disarms it.
#[derive(Debug, Default)]
pub(crate) struct Timer {
    /// The deadline armed, and its delay on the helper thread.
    #[cfg(not(loom))]
    armed: Option<(Instant, futures_timer::Delay)>,
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
        let Some(until) = until else {
            self.armed = None;
            return Poll::Pending;
        };
        let now = Instant::now();
        if now >= until {
            self.armed = None;
            return Poll::Ready(());
        }
        let delay = match &mut self.armed {
            Some((at, delay)) if *at == until => delay,
            armed => {
                let (_, delay) = armed.insert((until, futures_timer::Delay::new(until - now)));
                delay
            }
        };
        match Pin::new(delay).poll(cx) {
            Poll::Ready(()) => {
                // The helper thread may fire a little early by our clock:
                // ready only once the instant has passed, else wait again.
                self.armed = None;
                if Instant::now() >= until { Poll::Ready(()) } else { self.poll_until(cx, Some(until)) }
            }
            Poll::Pending => Poll::Pending,
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

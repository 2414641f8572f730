//! What time it is, for the work queues: the system's clocks, or the
//! simulated clock of a [`SimDisk`](crate::SimDisk) made with
//! [`SimDisk::with_simulated_clock`](crate::SimDisk::with_simulated_clock),
//! which moves only when a test moves it. A topic's log takes its storage's
//! clock when it opens ([`Clock::of`]), and the queues read every time they
//! compare from it: visibility deadlines (`Instant`s) and delivery and retry
//! times (wall-clock microseconds). On the system's clock each reading costs
//! one branch more than calling the system directly.

use std::time::Instant;

#[cfg(feature = "sim")]
use std::sync::Arc;

use super::format::now_us;
#[cfg(feature = "sim")]
use crate::storage::SimClock;
use crate::storage::Storage;

/// A source of the two clocks the queues read.
#[derive(Debug, Clone, Default)]
pub(crate) enum Clock {
    /// `Instant::now()` and the system's wall clock.
    #[default]
    System,
    /// A simulated disk's clock (feature `sim`).
    #[cfg(feature = "sim")]
    Simulated(Arc<SimClock>),
}

impl Clock {
    /// The clock of `storage`: the system's, unless it is a simulated disk
    /// with a simulated clock.
    pub(crate) fn of(storage: &dyn Storage) -> Clock {
        #[cfg(feature = "sim")]
        if let Some(clock) = storage.sim_clock() {
            return Clock::Simulated(clock);
        }
        let _ = storage;
        Clock::System
    }

    /// The monotonic time now.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            #[cfg(feature = "sim")]
            Clock::Simulated(clock) => clock.now(),
        }
    }

    /// Microseconds since the Unix epoch, now.
    #[inline]
    pub(crate) fn now_us(&self) -> u64 {
        match self {
            Clock::System => now_us(),
            #[cfg(feature = "sim")]
            Clock::Simulated(clock) => clock.now_us(),
        }
    }

    /// Whether the clock moves only when a test moves it: then nothing may
    /// wait for time to pass, since it never would on its own.
    #[inline]
    pub(crate) fn is_simulated(&self) -> bool {
        match self {
            Clock::System => false,
            #[cfg(feature = "sim")]
            Clock::Simulated(_) => true,
        }
    }
}

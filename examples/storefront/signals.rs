//! Stopping a sale cleanly on `SIGTERM` (what systemd, Docker and
//! Kubernetes send) and `SIGINT` (Ctrl-C): the handler only counts the
//! signals; the sale reads the count between steps. The first stops the
//! buyers and lets the sale drain; a second stops the drain. Either way
//! the sale returns and drops its engine, which records a clean shutdown
//! (`docs/OPERATIONS.md`, "Stopping cleanly").

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

/// Signals received since [`install`].
static RECEIVED: AtomicU32 = AtomicU32::new(0);

/// The handler: one atomic increment, which is async-signal-safe.
extern "C" fn on_signal(_signal: libc::c_int) {
    RECEIVED.fetch_add(1, Ordering::Relaxed);
}

/// Counts `SIGTERM` and `SIGINT` instead of dying of them, for the rest of
/// the process's life.
pub fn install() -> io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: an all-zero `sigaction` is a valid value of the C struct
        // (no handler, empty mask, no flags); the fields that matter are set
        // below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // Interrupted system calls restart, so the sale's reads, writes
        // and waits see no `EINTR`.
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action` is a valid, initialised `sigaction`; its handler
        // only touches an atomic, so it is safe to run at any point of any
        // thread; the old action is not asked for (null).
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How many `SIGTERM`s and `SIGINT`s arrived (0 if [`install`] was never
/// called).
pub fn received() -> u32 {
    RECEIVED.load(Ordering::Relaxed)
}

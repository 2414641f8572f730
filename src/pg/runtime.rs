//! The private runtime that drives the backend's connections, and the
//! blocking bridge for the synchronous API.
//!
//! `tokio-postgres` needs a tokio reactor for its sockets. The backend keeps
//! one current-thread runtime per process on a thread of its own,
//! `tollgate-pg`, and spawns every connection's I/O task there. The client
//! side of a connection only talks to that task through channels, so the
//! futures the API returns can be polled by any executor, and blocking
//! calls poll them with [`block_on`], parking the calling thread.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use tokio::runtime::Handle;

/// The process's backend runtime, started on first use.
pub(crate) fn handle() -> &'static Handle {
    static RUNTIME: OnceLock<Handle> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .expect("the PostgreSQL backend's runtime could not start (the OS refused an event queue)");
        let handle = runtime.handle().clone();
        thread::Builder::new()
            .name("tollgate-pg".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("the OS refused to start the tollgate-pg thread");
        handle
    })
}

/// Runs `future` on the backend runtime; the returned future (pollable by
/// any executor) yields its output. Dropping the returned future does not
/// stop the task.
pub(crate) fn spawn<F>(future: F) -> impl Future<Output = F::Output> + Send + 'static
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = handle().spawn(future);
    async move {
        match task.await {
            Ok(output) => output,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

/// Runs `future` on the backend runtime and forgets it.
pub(crate) fn detach<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    drop(handle().spawn(future));
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` to completion on the calling thread, parking between
/// polls: the blocking API's bridge to the async core.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

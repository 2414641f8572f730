//! Threads that race for the first server of a process get one and the same. Alone in its binary, so that the
//! race really is for the first.

use std::sync::{Arc, Barrier};
use std::thread;

#[test]
fn concurrent_first_calls_share_one_server() {
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let server = tollgate_pgtemp::server();
                (server as *const tollgate_pgtemp::Server as usize, server.url())
            })
        })
        .collect();
    let servers: Vec<(usize, String)> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
    assert!(servers.iter().all(|server| *server == servers[0]), "{servers:?}");
}

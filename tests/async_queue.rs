//! The async forms of subscriptions and workers, under tokio's
//! current-thread and multi-thread runtimes, smol, and a plain hand-written
//! `block_on` (`tests/support/block_on.rs`: no runtime at all):
//!
//! - a stream yields every record (or message) in order and ends on close;
//! - a dropped `next_async` or `receive_async` future leaves no trace, at
//!   whatever point it is dropped;
//! - `run_async` never has more handlers in flight than its concurrency;
//!   after `stop()` every delivery is settled and none is in flight; a
//!   panicking handler gives its delivery back;
//! - blocking and async receivers on one group get every message once;
//! - a current-thread runtime keeps running other tasks while a receive waits.
//!
//! No test asserts on timing: each waits for progress (counts) instead.
#![cfg(not(loom))]

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

#[path = "support/block_on.rs"]
mod block_on;
#[allow(dead_code)] // each test binary uses some of it
#[path = "support/fixture.rs"]
mod fixture;

use block_on::block_on;
use fixture::{sync_topic, temp_topic, temp_topic_with};
use futures_core::Stream;
use tollgate::{Delivery, QueueError, ReadError, RunConfig, RunEnd, RunError, Settle, Shutdown, Topic, Worker};

/// Long enough never to run out in a test that is making progress.
const LONG: Duration = Duration::from_secs(60);

fn publish_n(topic: &Topic, from: u64, n: u64) {
    for i in from..from + n {
        topic.publish(format!("m{i}")).unwrap();
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap()
}

/// The next item of `stream` (what `StreamExt::next` does, without the
/// `futures` crate).
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(future).poll(&mut cx)
}

/// Reads the records stream of a subscription to its end while another
/// thread publishes and then closes the engine; checks order and count.
async fn read_stream_to_close(topic: Topic, engine: tollgate::Engine) {
    publish_n(&topic, 0, 100);
    let mut records = topic.subscribe("audit").unwrap().records();
    let progress = records.progress();
    let publisher = thread::spawn(move || {
        publish_n(&topic, 100, 100);
        drop(engine);
    });
    let mut seen = 0;
    while let Some(record) = next(&mut records).await {
        let record = record.unwrap();
        assert_eq!(record.offset().get(), seen);
        assert_eq!(record.payload().as_ref(), format!("m{seen}").as_bytes());
        seen += 1;
    }
    publisher.join().unwrap();
    assert_eq!(seen, 200, "the stream ended before the last record");
    assert_eq!(progress.position().get(), 200);
}

#[test]
fn records_stream_yields_everything_in_order_and_ends_on_close_on_a_current_thread_runtime() {
    let (_dir, engine, topic) = temp_topic("orders");
    current_thread().block_on(read_stream_to_close(topic, engine));
}

#[test]
fn records_stream_yields_everything_in_order_and_ends_on_close_on_a_multi_thread_runtime() {
    let (_dir, engine, topic) = temp_topic("orders");
    multi_thread().block_on(async { tokio::spawn(read_stream_to_close(topic, engine)).await.unwrap() });
}

#[test]
fn records_stream_yields_everything_in_order_and_ends_on_close_under_smol() {
    let (_dir, engine, topic) = temp_topic("orders");
    smol::block_on(smol::spawn(read_stream_to_close(topic, engine)));
}

#[test]
fn run_async_drains_a_queue_under_smol() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 0, 50);
    let worker = topic.worker("payments").unwrap();
    let config = RunConfig { concurrency: 4, ..RunConfig::default() };
    let shutdown = config.shutdown.clone();
    let handled = Arc::new(AtomicUsize::new(0));
    let handler = {
        let handled = Arc::clone(&handled);
        move |_: &Delivery| {
            if handled.fetch_add(1, Ordering::SeqCst) + 1 == 50 {
                shutdown.stop();
            }
            async {
                smol::future::yield_now().await;
                Settle::Ack
            }
        }
    };
    let report = smol::block_on(smol::spawn(worker.run_async(config, handler))).unwrap();
    assert_eq!((report.acked, report.ended), (50, Some(RunEnd::Stopped)));
    assert_eq!(worker.metrics().in_flight, 0);
}

#[test]
fn records_stream_yields_everything_in_order_and_ends_on_close_without_a_runtime() {
    let (_dir, engine, topic) = temp_topic("orders");
    block_on(read_stream_to_close(topic, engine));
}

#[test]
fn records_stream_yields_deleted_once_and_ends() {
    let (_dir, engine, topic) = temp_topic("orders");
    let mut records = topic.subscribe("audit").unwrap().records();
    engine.delete_topic("orders").unwrap();
    block_on(async {
        assert_eq!(next(&mut records).await, Some(Err(ReadError::Deleted)));
        assert_eq!(next(&mut records).await, None);
    });
}

#[test]
fn progress_reads_position_and_lag_while_a_stream_owns_the_subscription() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 0, 3);
    let mut records = topic.subscribe("audit").unwrap().records();
    let progress = records.progress();
    let watcher = progress.clone();
    block_on(async {
        next(&mut records).await.unwrap().unwrap();
        next(&mut records).await.unwrap().unwrap();
    });
    records.subscription_mut().commit().unwrap();
    let seen = thread::spawn(move || (watcher.position().get(), watcher.committed().get(), watcher.lag()));
    assert_eq!(seen.join().unwrap(), (2, 2, 1));
    assert_eq!(progress.lag(), 1);
}

#[test]
fn a_dropped_next_async_leaves_no_trace_at_any_point() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let mut sub = topic.subscribe("audit").unwrap();
    // Dropped before its first poll.
    drop(sub.next_async(LONG));
    // Dropped while it waits.
    {
        let mut future = sub.next_async(LONG);
        assert!(poll_once(&mut future).is_pending());
    }
    // Dropped after a publish woke it, before it was polled again.
    {
        let mut future = sub.next_async(LONG);
        assert!(poll_once(&mut future).is_pending());
        publish_n(&topic, 0, 1);
    }
    assert_eq!(sub.position().get(), 0, "a dropped future moved the position");
    // Dropped under a runtime's timeout.
    current_thread().block_on(async {
        let mut other = topic.subscribe("other").unwrap();
        other.seek(tollgate::Offset::new(1)).unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(1), other.next_async(LONG)).await.is_err());
        assert_eq!(other.position().get(), 1);
    });
    let record = block_on(sub.next_async(LONG)).unwrap().expect("published above");
    assert_eq!(record.offset().get(), 0);
    assert!(block_on(sub.next_async(Duration::ZERO)).unwrap().is_none());
}

#[test]
fn next_async_waits_for_a_publish_on_another_thread() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let mut sub = topic.subscribe("audit").unwrap();
    let publisher = {
        let topic = topic.clone();
        thread::spawn(move || publish_n(&topic, 0, 1))
    };
    let record = block_on(sub.next_async(LONG)).unwrap().expect("published by the thread");
    assert_eq!(record.offset().get(), 0);
    publisher.join().unwrap();
}

#[test]
fn a_dropped_receive_async_leaves_no_trace_at_any_point() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let worker = topic.worker("payments").unwrap();
    // Dropped before its first poll, with a message ready.
    publish_n(&topic, 0, 1);
    drop(worker.receive_async(LONG));
    let delivery = worker.receive(LONG).unwrap().expect("still ready");
    assert_eq!(delivery.attempt(), 1, "a dropped future took the message");
    delivery.ack().unwrap();
    // Dropped while it waits (counted idle), and after a publish woke it.
    {
        let mut waiting = worker.receive_async(LONG);
        assert!(poll_once(&mut waiting).is_pending());
        let mut woken = worker.receive_async(LONG);
        assert!(poll_once(&mut woken).is_pending());
        drop(waiting);
        publish_n(&topic, 1, 1);
    }
    // Dropped under a runtime's timeout.
    current_thread().block_on(async {
        let other = topic.worker("other").unwrap();
        let _ = other.receive_batch(10, Duration::ZERO).unwrap().into_iter().map(|d| d.ack().unwrap()).count();
        assert!(tokio::time::timeout(Duration::from_millis(1), other.receive_async(LONG)).await.is_err());
        assert_eq!(other.metrics().in_flight, 0);
    });
    assert_eq!(worker.metrics().in_flight, 0);
    let delivery = block_on(worker.receive_async(LONG)).unwrap().expect("published above");
    assert_eq!((delivery.offset().get(), delivery.attempt()), (1, 1));
    delivery.ack().unwrap();
    // A give-back still reaches a later waiter: nothing stale is counted idle.
    publish_n(&topic, 2, 1);
    let delivery = worker.receive(LONG).unwrap().expect("published above");
    let waiter = {
        let worker = worker.clone();
        thread::spawn(move || block_on(worker.receive_async(LONG)).unwrap().map(|d| (d.offset().get(), d.attempt())))
    };
    delivery.nack(Duration::ZERO, "again").unwrap();
    assert_eq!(waiter.join().unwrap(), Some((2, 2)));
}

#[test]
fn receive_batch_async_takes_up_to_max_on_a_sync_topic() {
    let (_dir, _engine, topic) = temp_topic_with("orders", sync_topic());
    publish_n(&topic, 0, 5);
    let worker = topic.worker("payments").unwrap();
    let batch = block_on(worker.receive_batch_async(3, LONG)).unwrap();
    let offsets: Vec<u64> = batch.iter().map(|d| d.offset().get()).collect();
    assert_eq!(offsets, [0, 1, 2]);
    assert_eq!(worker.metrics().in_flight, 3);
    batch.into_iter().for_each(|d| d.ack().unwrap());
    assert_eq!(block_on(worker.receive_batch_async(10, LONG)).unwrap().len(), 2);
    assert!(block_on(worker.receive_batch_async(0, LONG)).unwrap().is_empty());
}

#[test]
fn deliveries_stream_ends_on_close_and_yields_deleted_once() {
    let (_dir, engine, topic) = temp_topic("orders");
    publish_n(&topic, 0, 2);
    let mut deliveries = topic.worker("payments").unwrap().deliveries();
    block_on(async {
        for offset in 0..2 {
            let delivery = next(&mut deliveries).await.unwrap().unwrap();
            assert_eq!(delivery.offset().get(), offset);
            delivery.ack().unwrap();
        }
    });
    let closer = thread::spawn(move || drop(engine));
    assert!(block_on(next(&mut deliveries)).is_none(), "the stream outlived the engine");
    closer.join().unwrap();

    let (_dir, engine, topic) = temp_topic("orders");
    let mut deliveries = topic.worker("payments").unwrap().deliveries();
    engine.delete_topic("orders").unwrap();
    block_on(async {
        assert!(matches!(next(&mut deliveries).await, Some(Err(QueueError::Deleted))));
        assert!(next(&mut deliveries).await.is_none());
    });
}

/// A handler that records how many run at once, yields a few times, and
/// stops the loop after `stop_after` messages.
fn counting_handler(
    inside: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    done: Arc<AtomicU64>,
    stop_after: u64,
    shutdown: Shutdown,
) -> impl FnMut(&Delivery) -> std::pin::Pin<Box<dyn Future<Output = Settle> + Send>> + Send + Unpin {
    move |_delivery| {
        let (inside, most, done, shutdown) = (inside.clone(), most.clone(), done.clone(), shutdown.clone());
        Box::pin(async move {
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            inside.fetch_sub(1, Ordering::SeqCst);
            if done.fetch_add(1, Ordering::SeqCst) + 1 == stop_after {
                shutdown.stop();
            }
            Settle::Ack
        })
    }
}

#[test]
fn run_async_never_exceeds_its_concurrency() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 0, 200);
    let worker = topic.worker("payments").unwrap();
    let config = RunConfig { concurrency: 4, batch: 4, ..RunConfig::default() };
    let (inside, most, done) = (Arc::default(), Arc::<AtomicUsize>::default(), Arc::default());
    let handler = counting_handler(inside, most.clone(), done, 200, config.shutdown.clone());
    let report = current_thread().block_on(worker.run_async(config, handler)).unwrap();
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 4, "{most} handlers ran at once, with a concurrency of 4");
    assert!(most > 1, "the handlers never overlapped");
    assert_eq!((report.handled, report.acked, report.ended), (200, 200, Some(RunEnd::Stopped)));
    assert_eq!(worker.metrics().acked, 200);
}

#[test]
fn after_stop_every_delivery_is_settled_and_none_is_in_flight() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 0, 1000);
    let worker = topic.worker("payments").unwrap();
    let shutdown = Shutdown::new();
    let config = RunConfig { concurrency: 8, batch: 4, shutdown: shutdown.clone() };
    let (inside, most, done) = (Arc::default(), Arc::<AtomicUsize>::default(), Arc::default());
    let handler = counting_handler(inside, most, done, u64::MAX, shutdown.clone());
    let report = multi_thread().block_on(async {
        // `tokio::spawn` needs the loop's future to be Send.
        let running = tokio::spawn(worker.run_async(config, handler));
        while shutdown.report().handled < 100 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        shutdown.stop();
        running.await.unwrap().unwrap()
    });
    let metrics = worker.metrics();
    assert_eq!(metrics.in_flight, 0);
    assert_eq!(report.ended, Some(RunEnd::Stopped));
    assert_eq!((report.handled, report.errors, report.panicked), (report.acked, 0, 0));
    assert_eq!(metrics.acked, report.acked, "a handled delivery was not settled");
    assert_eq!(metrics.ready + metrics.backlog + metrics.acked, 1000);
}

#[test]
fn run_async_ends_on_close_and_on_delete_not_on_idle() {
    let (_dir, engine, topic) = temp_topic("orders");
    let worker = topic.worker("payments").unwrap();
    let closer = {
        let topic = topic.clone();
        thread::spawn(move || {
            publish_n(&topic, 0, 3);
            drop(engine);
        })
    };
    let handler = |_: &Delivery| std::future::ready(Settle::Ack);
    let report = block_on(worker.run_async(RunConfig::default(), handler)).unwrap();
    closer.join().unwrap();
    assert_eq!(report.ended, Some(RunEnd::Closed));

    let (_dir, engine, topic) = temp_topic("orders");
    let worker = topic.worker("payments").unwrap();
    let deleter = thread::spawn(move || engine.delete_topic("orders").unwrap());
    let report = block_on(worker.run_async(RunConfig::default(), handler)).unwrap();
    deleter.join().unwrap();
    assert_eq!(report.ended, Some(RunEnd::Deleted));
}

#[test]
fn run_gives_back_the_delivery_of_a_panicking_handler_and_stops_gracefully() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 0, 10);
    let worker = topic.worker("payments").unwrap();
    let config = RunConfig { concurrency: 2, ..RunConfig::default() };
    let shutdown = config.shutdown.clone();
    let attempts = Mutex::new(Vec::new());
    let acked = AtomicU64::new(0);
    let report = worker
        .run(config, |delivery| {
            attempts.lock().unwrap().push((delivery.offset().get(), delivery.attempt()));
            if delivery.offset().get() == 3 && delivery.attempt() == 1 {
                panic!("the handler failed on offset 3");
            }
            if acked.fetch_add(1, Ordering::SeqCst) + 1 == 10 {
                shutdown.stop();
            }
            Settle::Ack
        })
        .unwrap();
    assert_eq!((report.acked, report.panicked, report.ended), (10, 1, Some(RunEnd::Stopped)));
    assert!(attempts.lock().unwrap().contains(&(3, 2)), "the panicked delivery was not given back");
    let metrics = worker.metrics();
    assert_eq!((metrics.in_flight, metrics.acked), (0, 10));
}

#[test]
fn a_run_async_handler_future_that_panics_gives_its_delivery_back() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 0, 1);
    let worker = topic.worker("payments").unwrap();
    let config = RunConfig::default();
    let shutdown = config.shutdown.clone();
    let handler = move |delivery: &Delivery| {
        let (attempt, shutdown) = (delivery.attempt(), shutdown.clone());
        async move {
            if attempt == 1 {
                panic!("the handler future failed");
            }
            shutdown.stop();
            Settle::Nack { retry_after: Duration::ZERO, reason: "second attempt".into() }
        }
    };
    let report = block_on(worker.run_async(config, handler)).unwrap();
    assert_eq!((report.panicked, report.nacked, report.handled), (1, 1, 1));
    assert_eq!(worker.metrics().in_flight, 0);
}

#[test]
fn a_stop_wakes_a_run_that_waits_for_messages() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let worker = topic.worker("payments").unwrap();
    let shutdown = Shutdown::new();
    let config = RunConfig { concurrency: 2, shutdown: shutdown.clone(), ..RunConfig::default() };
    let running = {
        let worker = worker.clone();
        thread::spawn(move || worker.run(config, |_| Settle::Ack).unwrap())
    };
    let config = RunConfig { shutdown: shutdown.clone(), ..RunConfig::default() };
    let running_async = {
        let worker = worker.clone();
        thread::spawn(move || block_on(worker.run_async(config, |_: &Delivery| std::future::ready(Settle::Ack))))
    };
    shutdown.stop();
    assert_eq!(running.join().unwrap().ended, Some(RunEnd::Stopped));
    assert_eq!(running_async.join().unwrap().unwrap().ended, Some(RunEnd::Stopped));
}

#[test]
fn a_run_config_of_zero_is_a_typed_error() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let worker = topic.worker("payments").unwrap();
    let zero = RunConfig { concurrency: 0, ..RunConfig::default() };
    assert!(matches!(worker.run(zero.clone(), |_| Settle::Ack), Err(RunError::Config { option: "concurrency", .. })));
    let no_batch = RunConfig { batch: 0, ..RunConfig::default() };
    let handler = |_: &Delivery| std::future::ready(Settle::Ack);
    let error = block_on(worker.run_async(no_batch, handler)).unwrap_err();
    assert!(matches!(error, RunError::Config { option: "batch", value: 0, .. }));
}

/// Blocking and async receivers, started before anything is published, on
/// one group: each message goes to exactly one of them.
#[test]
fn mixed_blocking_and_async_receivers_get_every_message_exactly_once() {
    const N: u64 = 400;
    let (_dir, _engine, topic) = temp_topic("orders");
    let worker = topic.worker("payments").unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicU64::new(0));
    let take = |delivery: Delivery, got: &Mutex<Vec<u64>>, count: &AtomicU64| {
        got.lock().unwrap().push(delivery.offset().get());
        delivery.ack().unwrap();
        count.fetch_add(1, Ordering::SeqCst);
    };
    let blocking: Vec<_> = (0..2)
        .map(|_| {
            let (worker, got, count) = (worker.clone(), got.clone(), count.clone());
            thread::spawn(move || {
                while count.load(Ordering::SeqCst) < N {
                    if let Some(delivery) = worker.receive(Duration::from_millis(20)).unwrap() {
                        take(delivery, &got, &count);
                    }
                }
            })
        })
        .collect();
    let runtime = multi_thread();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (worker, got, count) = (worker.clone(), got.clone(), count.clone());
            runtime.spawn(async move {
                while count.load(Ordering::SeqCst) < N {
                    if let Some(delivery) = worker.receive_async(Duration::from_millis(20)).await.unwrap() {
                        take(delivery, &got, &count);
                    }
                }
            })
        })
        .collect();
    publish_n(&topic, 0, N);
    for thread in blocking {
        thread.join().unwrap();
    }
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    let mut got = got.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert_eq!(worker.metrics().acked, N);
}

/// A receive that waits does not hold the runtime's only thread: a ticker
/// task keeps ticking meanwhile, and the receive still gets its message.
#[test]
fn a_current_thread_runtime_keeps_running_tasks_while_receive_async_waits() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let worker = topic.worker("payments").unwrap();
    current_thread().block_on(async {
        let ticks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (ticks, stop) = (ticks.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            })
        };
        let receiver = tokio::spawn(async move { worker.receive_async(LONG).await.unwrap().map(|d| d.offset()) });
        while ticks.load(Ordering::SeqCst) < 100 {
            tokio::task::yield_now().await;
        }
        assert!(!receiver.is_finished(), "the receive returned with nothing published");
        publish_n(&topic, 0, 1);
        assert_eq!(receiver.await.unwrap().map(|o| o.get()), Some(0));
        stop.store(true, Ordering::SeqCst);
        ticker.await.unwrap();
    });
}

/// `run_async`'s future is `Send` with a `Send` handler, so it can be given
/// to `tokio::spawn` (a compile check; the test above spawns one too).
#[test]
fn run_async_with_a_send_handler_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (_dir, _engine, topic) = temp_topic("orders");
    let worker: Worker = topic.worker("payments").unwrap();
    let future = worker.run_async(RunConfig::default(), |delivery: &Delivery| {
        let payload = delivery.payload().clone();
        async move {
            assert!(!payload.is_empty());
            Settle::Ack
        }
    });
    assert_send(&future);
    assert_send(&worker.receive_async(LONG));
    assert_send(&worker.deliveries());
}

/// A blocking receive inside a `run_async` handler (inside tollgate's poll)
/// would stall the executor's thread: debug builds assert against it, and
/// the loop counts the handler as panicked and gives its delivery back.
#[cfg(debug_assertions)]
#[test]
#[cfg(debug_assertions)]
fn a_blocking_receive_inside_a_run_async_handler_fails_its_debug_assertion() {
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 0, 1);
    let worker = topic.worker("payments").unwrap();
    let probe = topic.worker("probe").unwrap();
    let config = RunConfig::default();
    let shutdown = config.shutdown.clone();
    let handler = move |_: &Delivery| {
        shutdown.stop();
        let _ = probe.receive(Duration::ZERO);
        std::future::ready(Settle::Ack)
    };
    let report = block_on(worker.run_async(config, handler)).unwrap();
    assert_eq!((report.panicked, report.acked), (1, 0));
    assert_eq!(worker.metrics().in_flight, 0);
}

#[test]
fn a_thread_owned_lock_inside_a_run_async_handler_is_refused_and_a_session_lock_is_not() {
    // Every task an executor runs on this thread would share a thread-owned
    // lock; inside tollgate's polls it is refused.
    let (_dir, _engine, topic) = temp_topic("orders");
    publish_n(&topic, 0, 1);
    let worker = topic.worker("payments").unwrap();
    let locks = tollgate::LockManager::new();
    let config = RunConfig::default();
    let shutdown = config.shutdown.clone();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let outcomes = Arc::clone(&outcomes);
        move |_: &Delivery| {
            shutdown.stop();
            let thread_owned = locks.lock("order:1").map(drop);
            let session = locks.session();
            let session_owned = session.try_lock("order:1").map(drop);
            outcomes.lock().unwrap().push((thread_owned, session_owned));
            std::future::ready(Settle::Ack)
        }
    };
    let report = block_on(worker.run_async(config, handler)).unwrap();
    assert_eq!(report.acked, 1);
    assert_eq!(*outcomes.lock().unwrap(), [(Err(tollgate::LockError::ThreadOwnerInTask), Ok(()))]);
    // Outside a poll the same thread may lock as itself.
    assert!(tollgate::LockManager::new().lock("order:1").is_ok());
}

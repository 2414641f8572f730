//! What only the PostgreSQL engine does: the outbox (`Topic::publish_in`
//! on the caller's transaction), transactions whose commit checks their
//! locks in the database, refusing a session of the other backend, dense
//! offsets between concurrent publishers through the public API, and the
//! `Backend` values that choose it. The rules both engines keep are in
//! `tests/log.rs` and `tests/queue/` (`on_every_engine!`).
#![cfg(feature = "postgres")]

use std::time::Duration;

#[allow(dead_code)] // each test binary uses some of it
#[path = "support/engines.rs"]
mod engines;

use tollgate::tokio_postgres::{self, NoTls};
use tollgate::{
    Backend, Engine, LockError, LockManager, LockRequest, Message, Offset, OpenError, PublishError, QueueConfig,
};

/// A client of the test server's database, its connection driven by `runtime`.
fn raw_client(runtime: &tokio::runtime::Runtime) -> tokio_postgres::Client {
    let url = tollgate_pgtemp::server().url();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    })
}

#[test]
fn an_outbox_publish_that_rolls_back_publishes_nothing_and_one_that_commits_is_delivered_once() {
    let store = engines::postgres();
    let engine = store.open();
    let orders = engine.topic("orders").unwrap();
    let payments = orders.worker_with("payments", QueueConfig::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut client = raw_client(&runtime);
    runtime.block_on(async {
        client.batch_execute("CREATE TABLE IF NOT EXISTS public.shop_order (id bigint PRIMARY KEY)").await.unwrap();
        let tx = client.transaction().await.unwrap();
        tx.execute("INSERT INTO public.shop_order (id) VALUES (1)", &[]).await.unwrap();
        let offsets = orders.publish_in(&tx, [Message::new("order 1")]).await.unwrap();
        assert_eq!(offsets, Offset::new(0)..Offset::new(1));
        tx.rollback().await.unwrap();
    });
    assert_eq!(orders.info().next, Offset::new(0), "a rollback publishes nothing");
    assert!(payments.receive(Duration::from_millis(50)).unwrap().is_none());
    runtime.block_on(async {
        let tx = client.transaction().await.unwrap();
        tx.execute("INSERT INTO public.shop_order (id) VALUES (2)", &[]).await.unwrap();
        let offsets = orders.publish_in(&tx, [Message::new("order 2").key("order.2")]).await.unwrap();
        assert_eq!(offsets, Offset::new(0)..Offset::new(1), "the offset the rollback gave back");
        tx.commit().await.unwrap();
    });
    let delivery = payments.receive(Duration::from_secs(10)).unwrap().expect("the committed order");
    assert_eq!((delivery.payload().as_ref(), delivery.attempt()), (&b"order 2"[..], 1));
    delivery.ack().unwrap();
    assert!(payments.receive(Duration::from_millis(50)).unwrap().is_none(), "delivered exactly once");
    assert_eq!(payments.metrics().acked, 1);
}

#[test]
fn publish_in_on_an_embedded_topic_is_refused() {
    let store = engines::embedded();
    let engine = store.open();
    let orders = engine.topic("orders").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = raw_client(&runtime);
    let refused = runtime.block_on(orders.publish_in(&client, [Message::new("x")]));
    assert_eq!(refused, Err(PublishError::Unsupported { backend: "embedded", operation: "Topic::publish_in" }));
}

#[test]
fn a_transaction_commits_under_its_locks_and_refuses_once_a_lease_expired() {
    let store = engines::postgres();
    let engine = store.open();
    let orders = engine.topic("orders").unwrap();
    let locks = engine.locks();
    assert!(locks.is_remote());
    let buyer = locks.session();
    let request = LockRequest::exclusive().timeout(Duration::from_secs(5)).lease(Duration::from_secs(60));
    let tx = orders.transaction(&buyer, ["sku:1", "sku:2"], request).unwrap();
    let (offsets, held) = tx.commit([Message::new("reserve"), Message::new("order 1")]).unwrap();
    assert_eq!(offsets, Offset::new(0)..Offset::new(2));
    held.release().unwrap();

    let short = LockRequest::exclusive().timeout(Duration::from_secs(5)).lease(Duration::from_millis(100));
    let tx = orders.transaction(&buyer, ["sku:1", "sku:3"], short).unwrap();
    std::thread::sleep(Duration::from_millis(500)); // past the lease
    let lost = tx.commit([Message::new("order 2")]).unwrap_err();
    assert!(matches!(lost, PublishError::LockLost { ref key } if key == "sku:1" || key == "sku:3"), "{lost:?}");
    assert_eq!(orders.info().next, Offset::new(2), "nothing was published");

    // The async forms, too.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let tx = orders.transaction_async(&buyer, ["sku:4"], Duration::from_secs(5)).await.unwrap();
        let (offsets, held) = tx.commit_async([Message::new("order 3")]).await.unwrap();
        assert_eq!(offsets, Offset::new(2)..Offset::new(3));
        drop(held);
    });
}

#[test]
fn a_session_of_the_other_backend_is_refused() {
    let pg = engines::postgres().open();
    let embedded_store = engines::embedded();
    let embedded = embedded_store.open();
    let local = LockManager::new().session();
    let remote = pg.locks().session();
    let refused = |result: Result<tollgate::Transaction, LockError>| {
        assert!(matches!(result, Err(LockError::InvalidRequest { .. })), "{result:?}");
    };
    refused(pg.topic("orders").unwrap().transaction(&local, ["k"], Duration::from_secs(1)));
    refused(embedded.topic("orders").unwrap().transaction(&remote, ["k"], Duration::from_secs(1)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    refused(runtime.block_on(pg.topic("orders").unwrap().transaction_async(&local, ["k"], Duration::from_secs(1))));
    assert!(embedded.locks().session().id() > 0);
    assert!(!embedded.locks().is_remote());
}

#[test]
fn concurrent_publishers_get_dense_offsets_each_once() {
    let store = engines::postgres();
    let engine = store.open();
    let topic = engine.topic("orders").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let topic = topic.clone();
            std::thread::spawn(move || {
                (0..100).map(|i| topic.publish(format!("{t}:{i}")).unwrap().get()).collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..400).collect::<Vec<u64>>());
    let mut sub = topic.subscribe("audit").unwrap();
    let mut next = 0;
    while let Some(record) = sub.next().unwrap() {
        assert_eq!(record.offset().get(), next);
        next += 1;
    }
    assert_eq!(next, 400);
}

#[test]
fn a_backend_parses_from_a_directory_or_a_url() {
    let url = tollgate_pgtemp::server().url();
    let backend: Backend = url.parse().unwrap();
    assert!(matches!(backend, Backend::Postgres(_)));
    assert!(matches!("postgresql://u@h/db".parse::<Backend>(), Ok(Backend::Postgres(_))));
    assert!(matches!("/var/lib/shop".parse::<Backend>(), Ok(Backend::Embedded(_))));
    assert!(matches!("".parse::<Backend>(), Err(OpenError::InvalidConfig { .. })));
    let Backend::Postgres(config) = backend else { unreachable!() };
    let config = config.schema(&tollgate_pgtemp::server().schema_name()).unwrap();
    let engine = Engine::start(&Backend::Postgres(config)).unwrap();
    assert!(engine.is_remote());
    engine.topic("t").unwrap().publish("x").unwrap();
    assert_eq!(engine.topics().unwrap(), ["t"]);
}

#[test]
fn cleanup_deletes_only_expired_messages_every_group_settled() {
    use tollgate::{CleanupReport, ReadError, TopicConfig};
    let store = engines::postgres();
    let engine = store.open();
    let config = TopicConfig { retention_age: Some(Duration::from_millis(200)), ..TopicConfig::default() };
    let topic = engine.create_topic("events", config).unwrap();
    let worker = topic.worker("billing").unwrap();
    for i in 0..10 {
        topic.publish(format!("event {i}")).unwrap();
    }
    // The group settles the first 4; the 5th stays in flight.
    for _ in 0..4 {
        worker.receive(Duration::from_secs(5)).unwrap().expect("a message").ack().unwrap();
    }
    let in_flight = worker.receive(Duration::from_secs(5)).unwrap().expect("a message");
    assert_eq!(engine.cleanup().unwrap(), CleanupReport::default(), "nothing has expired yet");
    std::thread::sleep(Duration::from_millis(400)); // past the retention age
    let report = engine.cleanup().unwrap();
    assert_eq!(report.topics, [("events".to_owned(), 4, 4)], "only the settled prefix goes");
    assert!(matches!(topic.read(Offset::new(3)), Err(ReadError::NotRetained { .. })));
    assert_eq!(topic.read(Offset::new(4)).unwrap().payload().as_ref(), b"event 4");
    in_flight.ack().unwrap();
    let report = engine.cleanup().unwrap();
    assert_eq!(report.topics, [("events".to_owned(), 1, 5)], "the next unsettled message holds the rest");
}

//! Other errors: a deleted topic (`Deleted`), a closed engine (`Closed`).

use tollgate::{Engine, QueueError, TopicError};

use super::fixture::{one_message, temp_topic};
use super::{BRIEF, drain, publish_n, take};

#[test]
fn a_worker_of_a_deleted_topic_fails_with_deleted() {
    let (_dir, engine, topic) = one_message();
    let w = topic.worker("g").unwrap();
    let d = take(&w);
    engine.delete_topic("orders").unwrap();
    assert_eq!(w.receive(BRIEF).unwrap_err(), QueueError::Deleted);
    assert_eq!(d.ack(), Err(QueueError::Deleted));
    assert_eq!(topic.worker("h").unwrap_err(), TopicError::Deleted);
}

#[test]
fn after_the_engine_closes_receive_returns_none_and_settling_fails_with_closed() {
    let (dir, engine, topic) = temp_topic("orders");
    publish_n(&topic, 2);
    let w = topic.worker("g").unwrap();
    let d = take(&w);
    drop(engine);
    assert!(w.receive(BRIEF).unwrap().is_none());
    assert_eq!(d.ack(), Err(QueueError::Closed));
    drop(w);
    let engine = Engine::open(dir.path()).unwrap();
    let w = engine.topic("orders").unwrap().worker("g").unwrap();
    let got: Vec<(u64, u32)> = drain(&w).iter().map(|d| (d.offset().get(), d.attempt())).collect();
    assert_eq!(got, [(0, 2), (1, 1)]);
}

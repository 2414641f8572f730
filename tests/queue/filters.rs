//! Filters: `order.*` and `order.#` for subscriptions (`set_filter`) and worker
//! groups, where skipped messages count as settled.

use tollgate::{KeyPattern, Message, Offset, QueueConfig, Topic};

use super::fixture::temp_topic;
use super::{drain, payload};

fn publish_keys(topic: &Topic) {
    for key in ["order.1", "order.1.paid", "order", "payment.1", "orders.1"] {
        topic.publish_message(Message::new(key).key(key)).unwrap();
    }
    topic.publish(b"no key").unwrap();
}

#[test]
fn a_subscription_filter_star_matches_exactly_one_word() {
    let (_dir, _engine, topic) = temp_topic("events");
    publish_keys(&topic);
    let mut sub = topic.subscribe("audit").unwrap();
    sub.set_filter(Some(KeyPattern::new("order.*").unwrap()));
    let mut got = Vec::new();
    while let Some(rec) = sub.next().unwrap() {
        got.push(rec.key().unwrap().to_owned());
    }
    assert_eq!(got, ["order.1"]);
    assert_eq!(sub.position(), Offset::new(6), "skipped records move the position");
}

#[test]
fn a_subscription_filter_hash_matches_any_number_of_words_and_none_resets() {
    let (_dir, _engine, topic) = temp_topic("events");
    publish_keys(&topic);
    let mut sub = topic.subscribe("audit").unwrap();
    sub.set_filter(Some(KeyPattern::new("order.#").unwrap()));
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(sub.next().unwrap().unwrap().key().unwrap().to_owned());
    }
    assert_eq!(got, ["order.1", "order.1.paid", "order"]);
    sub.set_filter(None);
    assert_eq!(sub.next().unwrap().unwrap().key(), Some("payment.1"));
    sub.set_filter(Some(KeyPattern::new("#").unwrap()));
    assert_eq!(sub.next().unwrap().unwrap().key(), Some("orders.1"));
    assert_eq!(sub.next().unwrap().unwrap().key(), None, "`#` matches a record without a key");
}

#[test]
fn a_worker_filter_star_matches_exactly_one_word() {
    let (_dir, _engine, topic) = temp_topic("events");
    publish_keys(&topic);
    let config = QueueConfig { filter: Some(KeyPattern::new("order.*").unwrap()), ..QueueConfig::default() };
    let w = topic.worker_with("g", config).unwrap();
    let got: Vec<String> = drain(&w).iter().map(payload).collect();
    assert_eq!(got, ["order.1"]);
}

#[test]
fn a_worker_filter_hash_matches_any_words_and_skipped_messages_count_as_settled() {
    let (_dir, _engine, topic) = temp_topic("events");
    publish_keys(&topic);
    let config: QueueConfig = "filter=order.#".parse().unwrap();
    let w = topic.worker_with("g", config.clone()).unwrap();
    let all = drain(&w);
    let got: Vec<String> = all.iter().map(payload).collect();
    assert_eq!(got, ["order.1", "order.1.paid", "order"]);
    for d in all {
        d.ack().unwrap();
    }
    assert_eq!(w.metrics().lag, 0, "skipped messages are settled");
    drop(w);
    // A later match still comes through, and nothing skipped does.
    topic.publish_message(Message::new("order.2").key("order.2")).unwrap();
    topic.publish_message(Message::new("cart.2").key("cart.2")).unwrap();
    let w = topic.worker_with("g", config).unwrap();
    let got: Vec<String> = drain(&w).iter().map(payload).collect();
    assert_eq!(got, ["order.2"]);
}

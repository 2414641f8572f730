//! Configuration and bad input: defaults, `QueueConfig: FromStr` (unknown,
//! repeated and out-of-range options), `worker_with` refusing bad settings,
//! names and a differing configuration, publishes refused for priorities out of
//! range, reserved headers and delays beyond the limit.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate::{
    DELAY_MAX, KeyPattern, Message, Offset, PRIORITY_MAX, PublishError, QueueConfig, StartAt, TopicError,
    VISIBILITY_MAX,
};

use super::fixture::{one_message, temp_topic};
use super::{BRIEF, config, dead_letters, nothing, take};

#[test]
fn the_default_configuration_is_30s_5_attempts_and_topic_dot_dlq() {
    let config = QueueConfig::default();
    assert_eq!(config.visibility_timeout, Duration::from_secs(30));
    assert_eq!(config.max_attempts, 5);
    assert_eq!(config.dead_letter_topic, None);
    assert_eq!(config.filter, None);
    assert_eq!(config.start, StartAt::Earliest);
    let (_dir, engine, topic) = one_message();
    let w = topic.worker("g").unwrap();
    assert_eq!(w.config(), &config);
    let d = take(&w);
    assert!(d.deadline() > Instant::now() + Duration::from_secs(25), "a 30 s visibility timeout");
    assert_eq!(d.attempt(), 1);
    d.nack(Duration::ZERO, "x").unwrap();
    for attempt in 2..=5 {
        let d = take(&w);
        assert_eq!(d.attempt(), attempt);
        d.nack(Duration::ZERO, "x").unwrap();
    }
    nothing(&w, BRIEF);
    assert_eq!(dead_letters(&engine, "orders.dlq").len(), 1);
}

#[test]
fn queue_config_parses_its_text_form() {
    let parsed: QueueConfig =
        "visibility_timeout=250ms, max_attempts=7, dead_letter_topic=dead, filter=order.#, start=latest, window=10"
            .parse()
            .unwrap();
    let expected = QueueConfig {
        visibility_timeout: Duration::from_millis(250),
        max_attempts: 7,
        dead_letter_topic: Some("dead".into()),
        filter: Some(KeyPattern::new("order.#").unwrap()),
        start: StartAt::Latest,
        window: 10,
    };
    assert_eq!(parsed, expected);
    assert_eq!("".parse::<QueueConfig>().unwrap(), QueueConfig::default());
    assert_eq!("visibility_timeout=2m".parse::<QueueConfig>().unwrap().visibility_timeout, Duration::from_secs(120));
}

#[test]
fn queue_config_refuses_unknown_repeated_and_out_of_range_options() {
    for bad in [
        "max_attempt=3",
        "colour=blue",
        "max_attempts",
        "max_attempts=0",
        "max_attempts=1001",
        "max_attempts=-1",
        "max_attempts=2,max_attempts=3",
        "visibility_timeout=0ms",
        "visibility_timeout=13h",
        "visibility_timeout=30",
        "visibility_timeout=ms",
        "visibility_timeout=1.5s",
        "visibility_timeout=18446744073709551615h",
        "visibility_timeout=18446744073709551615ms",
        "window=0",
        "window=16777217",
        "start=middle",
        "filter=ord*",
        "=3",
        "max_attempts=3,,bogus",
    ] {
        let err = bad.parse::<QueueConfig>().expect_err(bad);
        assert!(!err.reason.is_empty(), "{bad}");
    }
    let err = "max_attempt=3".parse::<QueueConfig>().unwrap_err();
    assert_eq!(err.option, "max_attempt=3");
}

#[test]
fn worker_with_refuses_bad_settings_names_and_a_second_configuration() {
    let (_dir, engine, topic) = temp_topic("orders");
    let invalid = |config: QueueConfig| match topic.worker_with("g", config) {
        Err(TopicError::InvalidConfig { .. }) => {}
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    invalid(QueueConfig { max_attempts: 0, ..QueueConfig::default() });
    invalid(QueueConfig { max_attempts: 1001, ..QueueConfig::default() });
    invalid(QueueConfig { visibility_timeout: Duration::ZERO, ..QueueConfig::default() });
    invalid(QueueConfig { visibility_timeout: VISIBILITY_MAX * 2, ..QueueConfig::default() });
    invalid(QueueConfig { window: 0, ..QueueConfig::default() });
    invalid(QueueConfig { window: usize::MAX, ..QueueConfig::default() });
    invalid(QueueConfig { dead_letter_topic: Some("orders".into()), ..QueueConfig::default() });
    for name in ["", "a/b", "..", &"g".repeat(249)] {
        assert!(matches!(topic.worker(name), Err(TopicError::InvalidName { .. })), "group {name:?}");
    }
    let bad_dlq = QueueConfig { dead_letter_topic: Some("a/b".into()), ..QueueConfig::default() };
    assert!(matches!(topic.worker_with("g", bad_dlq), Err(TopicError::InvalidName { .. })));
    let long = engine.topic(&"t".repeat(253)).unwrap(); // its default dead-letter name is too long
    assert!(matches!(long.worker("g"), Err(TopicError::InvalidName { .. })));
    let _w = topic.worker("g").unwrap();
    assert_eq!(
        topic.worker_with("g", config(1000, 5)).unwrap_err(),
        TopicError::GroupConfigDiffers { group: "g".into() }
    );
    assert!(topic.worker("g").is_ok(), "the same configuration joins");
}

#[test]
fn publishing_a_priority_out_of_range_is_an_invalid_message() {
    let (_dir, _engine, topic) = temp_topic("orders");
    for p in [PRIORITY_MAX + 1, 200, u8::MAX] {
        assert!(matches!(
            topic.publish_message(Message::new("x").priority(p)),
            Err(PublishError::InvalidMessage { .. })
        ));
    }
    assert!(matches!(
        topic.publish_batch([Message::new("ok"), Message::new("x").priority(10)]),
        Err(PublishError::InvalidMessage { .. })
    ));
    assert_eq!(topic.info().next, Offset::new(0), "nothing was published");
    topic.publish_message(Message::new("x").priority(PRIORITY_MAX)).unwrap();
    topic.publish_message(Message::new("x").priority(10).priority(0)).unwrap(); // the last one set counts
}

#[test]
fn publishing_a_reserved_header_is_an_invalid_message() {
    let (_dir, _engine, topic) = temp_topic("orders");
    for name in ["tollgate.priority", "tollgate.deliver-at", "tollgate.dlq.offset", "tollgate.anything"] {
        assert!(matches!(
            topic.publish_message(Message::new("x").header(name, vec![1u8])),
            Err(PublishError::InvalidMessage { .. })
        ));
    }
    assert_eq!(topic.info().next, Offset::new(0));
}

#[test]
fn publishing_a_delay_beyond_the_limit_is_an_invalid_message() {
    let (_dir, _engine, topic) = temp_topic("orders");
    let far = DELAY_MAX + Duration::from_secs(3600);
    for message in [
        Message::new("x").deliver_after(far),
        Message::new("x").deliver_after(Duration::MAX),
        Message::new("x").deliver_at(SystemTime::now() + far),
        Message::new("x").deliver_at(UNIX_EPOCH + Duration::from_secs(1 << 62)),
    ] {
        assert!(matches!(topic.publish_message(message), Err(PublishError::InvalidMessage { .. })));
    }
    assert_eq!(topic.info().next, Offset::new(0));
    topic.publish_message(Message::new("x").deliver_after(DELAY_MAX - Duration::from_secs(60))).unwrap();
}

//! The setups the integration tests repeat: a temporary data directory with
//! an engine open on it (and a topic), and a simulated disk with an engine
//! open on its data directory.
//!
//! Each function returns the temporary directory with what lives in it, for
//! the test to bind (`_dir` when it only has to outlive the engine): the
//! directory is deleted when it is dropped.

use tempfile::TempDir;
use tollgate::{Durability, Engine, EngineConfig, SimDisk, Topic, TopicConfig};

/// The data directory on every simulated disk.
pub const DATA: &str = "/data";

/// A new temporary data directory and an engine open on it.
pub fn temp_engine() -> (TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    (dir, engine)
}

/// A new temporary data directory, an engine open on it, and its topic
/// `name` (`Engine::topic`: with the default configuration).
pub fn temp_topic(name: &str) -> (TempDir, Engine, Topic) {
    let (dir, engine) = temp_engine();
    let topic = engine.topic(name).unwrap();
    (dir, engine, topic)
}

/// A new temporary data directory, an engine open on it, and its topic
/// `name` created with `config`.
pub fn temp_topic_with(name: &str, config: TopicConfig) -> (TempDir, Engine, Topic) {
    let (dir, engine) = temp_engine();
    let topic = engine.create_topic(name, config).unwrap();
    (dir, engine, topic)
}

/// The topic `orders` of a new temporary data directory, holding one
/// message: `x`, at offset 0.
pub fn one_message() -> (TempDir, Engine, Topic) {
    let (dir, engine, topic) = temp_topic("orders");
    topic.publish(b"x").unwrap();
    (dir, engine, topic)
}

/// A simulated disk with an empty data directory, `DATA`, that is durable.
pub fn sim_disk() -> SimDisk {
    let disk = SimDisk::new();
    disk.create_dir_all_durable(DATA).unwrap();
    disk
}

/// An engine open on `DATA` of a simulated disk.
pub fn open_sim(disk: &SimDisk) -> Engine {
    Engine::open_sim(disk, DATA, EngineConfig::default()).unwrap()
}

/// A topic's default configuration, but `Durability::Sync`.
pub fn sync_topic() -> TopicConfig {
    TopicConfig { durability: Durability::Sync, ..TopicConfig::default() }
}

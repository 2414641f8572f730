//! What the loom models share.

use std::time::Duration;

use tollgate::{LockConfig, LockManager};

/// A manager whose deadlock search never fires inside a model (loom does not
/// model time).
pub fn manager() -> LockManager {
    LockManager::with_config(LockConfig {
        shards: 1,
        deadlock_threshold: Duration::from_secs(3600),
        ..LockConfig::default()
    })
}

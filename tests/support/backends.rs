//! The backends a conformance test runs on: the embedded lock manager, and
//! (feature `postgres`) a lock manager on a throwaway PostgreSQL server,
//! each test in a schema of its own.
//!
//! `on_every_backend!(rule_a, rule_b)` makes, for each function
//! `fn rule_a(locks: LockManager)`, one test per backend:
//! `embedded::rule_a` and `postgres::rule_a`.

use tollgate::LockManager;

/// An embedded lock manager.
pub fn embedded() -> LockManager {
    LockManager::new()
}

/// A lock manager on the test server (`tollgate-pgtemp`), in a fresh schema.
#[cfg(feature = "postgres")]
pub fn postgres() -> LockManager {
    let server = tollgate_pgtemp::server();
    let config = tollgate::PgConfig::new(&server.url())
        .and_then(|config| config.schema(&server.schema_name()))
        .expect("the test server's configuration");
    LockManager::connect(config).unwrap_or_else(|error| panic!("connecting to the test server: {error}"))
}

macro_rules! on_every_backend {
    ($($rule:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $rule() {
                    super::$rule(super::backends::embedded())
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $rule() {
                    super::$rule(super::backends::postgres())
                }
            )*
        }
    };
}

pub(crate) use on_every_backend;

//! The engines a conformance test of the log and the queues runs on: an
//! embedded engine in a temporary directory, and (feature `postgres`) an
//! engine on a throwaway PostgreSQL server (`tollgate-pgtemp`), each test
//! in a schema of its own.
//!
//! `on_every_engine!(rule_a, rule_b)` makes, for each function
//! `fn rule_a(store: Store)`, one test per backend: `embedded::rule_a` and
//! `postgres::rule_a`. A test opens the engine with `store.open()`, and may
//! drop it and open it again (a restart).

use tollgate::Engine;

/// Where a test's engine keeps its topics; `open` (re)opens it.
pub struct Store {
    dir: Option<tempfile::TempDir>,
    #[cfg(feature = "postgres")]
    config: Option<tollgate::PgConfig>,
}

impl Store {
    /// An engine on the store (drop the previous one first to reopen).
    pub fn open(&self) -> Engine {
        if let Some(dir) = &self.dir {
            return Engine::open(dir.path()).unwrap();
        }
        #[cfg(feature = "postgres")]
        if let Some(config) = &self.config {
            return Engine::connect(config.clone())
                .unwrap_or_else(|error| panic!("connecting to the test server: {error}"));
        }
        unreachable!("a store is a directory or a database")
    }

    /// Whether the engine is a PostgreSQL one.
    pub fn is_postgres(&self) -> bool {
        self.dir.is_none()
    }
}

/// A temporary data directory.
pub fn embedded() -> Store {
    Store {
        dir: Some(tempfile::tempdir().unwrap()),
        #[cfg(feature = "postgres")]
        config: None,
    }
}

/// A fresh schema on the test server (`tollgate-pgtemp`).
#[cfg(feature = "postgres")]
pub fn postgres() -> Store {
    let server = tollgate_pgtemp::server();
    let config = tollgate::PgConfig::new(&server.url())
        .and_then(|config| config.schema(&server.schema_name()))
        .expect("the test server's configuration")
        .connections(2);
    Store { dir: None, config: Some(config) }
}

#[allow(unused_macros)] // each test binary uses some of it
macro_rules! on_every_engine {
    ($($rule:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $rule() {
                    super::$rule(crate::engines::embedded())
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $rule() {
                    super::$rule(crate::engines::postgres())
                }
            )*
        }
    };
}

#[allow(unused_imports)]
pub(crate) use on_every_engine;

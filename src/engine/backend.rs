//! [`Backend`]: the value an application starts from (a data directory, or
//! a `postgres://` URL), and [`Engine::start`], which opens either.

use std::path::PathBuf;
use std::str::FromStr;

use super::Engine;
use crate::error::OpenError;

/// Where an engine keeps its topics (and its [`locks`](Engine::locks)):
/// chosen at start-up, so that the same application code runs on either.
///
/// It parses from text: a `postgres://` or `postgresql://` URL is the
/// PostgreSQL backend (feature `postgres`; without it, parsing one fails
/// with [`OpenError::PostgresNotBuilt`]), anything else a data directory.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use tollgate::{Backend, Engine};
///
/// let backend: Backend = dir.path().to_str().expect("UTF-8").parse()?;
/// assert!(matches!(backend, Backend::Embedded(_)));
/// let engine = Engine::start(&backend)?;
/// engine.topic("orders")?.publish("order 1001")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant, reason = "a start-up value, made once")]
pub enum Backend {
    /// A data directory, opened with [`Engine::open`].
    Embedded(PathBuf),
    /// A PostgreSQL database, connected to with `Engine::connect`
    /// (feature `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(crate::pg::PgConfig),
}

impl FromStr for Backend {
    type Err = OpenError;

    fn from_str(text: &str) -> Result<Backend, OpenError> {
        let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            return Ok(Backend::Postgres(crate::pg::PgConfig::new(text)?));
            #[cfg(not(feature = "postgres"))]
            return Err(OpenError::PostgresNotBuilt);
        }
        if text.is_empty() {
            return Err(OpenError::InvalidConfig {
                reason: "the backend is empty: give a directory or a postgres:// URL",
            });
        }
        Ok(Backend::Embedded(PathBuf::from(text)))
    }
}

impl Engine {
    /// Opens `backend`: the data directory with default settings
    /// ([`Engine::open`]), or the PostgreSQL database (`Engine::connect`).
    ///
    /// ```no_run
    /// use tollgate::{Backend, Engine};
    ///
    /// // From the command line or the environment: a directory or a URL.
    /// let backend: Backend = std::env::var("SHOP_BACKEND")?.parse()?;
    /// let engine = Engine::start(&backend)?;
    /// let locks = engine.locks(); // the lock manager that goes with it
    /// # drop(locks);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start(backend: &Backend) -> Result<Engine, OpenError> {
        match backend {
            Backend::Embedded(dir) => Engine::open(dir),
            #[cfg(feature = "postgres")]
            Backend::Postgres(config) => Engine::connect(config.clone()),
        }
    }
}

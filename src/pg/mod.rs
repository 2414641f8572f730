//! The PostgreSQL backend's link to the database (feature `postgres`):
//! configuration, the private runtime, connections, notifications, the
//! schema and its migrations, and the calls of the schema's functions.
//! docs/POSTGRES.md is the design.
//!
//! - `runtime.rs`: the `tollgate-pg` thread that drives connections; `block_on`.
//! - `db.rs`: the shared, pipelined connections and prepared statements.
//! - `listen.rs`: the `LISTEN` connection and the waits on its notifications.
//! - `schema.rs`: versioned migrations; refuses a newer schema.
//! - `client.rs`: this process's registration and its heartbeat.
//! - `link.rs`: the connections, listener and registration a backend shares.
//! - `locks.rs`: one call per lock operation (`sql/1_locks.sql`).
//! - `topics.rs`: one call per topic, subscription and worker-group
//!   operation (`sql/2_queues.sql`).

pub(crate) mod client;
pub(crate) mod db;
pub(crate) mod link;
pub(crate) mod listen;
pub(crate) mod locks;
pub(crate) mod runtime;
pub(crate) mod schema;
pub(crate) mod topics;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::OpenError;

/// Where and how to reach PostgreSQL: the settings of the PostgreSQL
/// backend.
///
/// ```
/// use std::time::Duration;
/// use tollgate::PgConfig;
///
/// let config = PgConfig::new("postgres://shop@db.internal/shop")?
///     .schema("tollgate")?
///     .connections(8)
///     .client_ttl(Duration::from_secs(10));
/// assert_eq!(config.schema_name(), "tollgate");
/// # Ok::<(), tollgate::OpenError>(())
/// ```
#[derive(Clone)]
pub struct PgConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) schema: String,
    pub(crate) connections: usize,
    pub(crate) client_ttl: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) migrate: bool,
    pub(crate) label: String,
}

/// The longest schema name [`PgConfig::schema`] accepts.
pub const SCHEMA_NAME_MAX: usize = 40;

impl PgConfig {
    /// Settings for the database at `url` (`postgres://user:password@host:port/database?…`,
    /// or the `key=value` form libpq accepts), with the defaults below.
    ///
    /// | setting | default |
    /// |---|---|
    /// | [`schema`](Self::schema) | `tollgate` |
    /// | [`connections`](Self::connections) | 4 |
    /// | [`client_ttl`](Self::client_ttl) | 10 s |
    /// | [`operation_timeout`](Self::operation_timeout) | 30 s |
    /// | [`migrate`](Self::migrate) | `true` |
    /// | connect timeout (`connect_timeout` in the URL) | 10 s |
    pub fn new(url: &str) -> Result<PgConfig, OpenError> {
        let mut pg = tokio_postgres::Config::from_str(url)
            .map_err(|e| OpenError::InvalidPgConfig { reason: format!("the URL does not parse: {e}") })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("tollgate");
        }
        Ok(PgConfig {
            pg,
            schema: "tollgate".into(),
            connections: 4,
            client_ttl: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            migrate: true,
            label: String::new(),
        })
    }

    /// The schema that holds tollgate's tables and functions: lower-case
    /// ASCII letters, digits and `_`, starting with a letter or `_`, at most
    /// [`SCHEMA_NAME_MAX`] bytes. Several schemas in one database are
    /// independent tollgate installations (tests use one each).
    pub fn schema(mut self, schema: &str) -> Result<PgConfig, OpenError> {
        let valid = !schema.is_empty()
            && schema.len() <= SCHEMA_NAME_MAX
            && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !schema.as_bytes()[0].is_ascii_digit()
            && !schema.starts_with("pg_");
        if !valid {
            return Err(OpenError::InvalidPgConfig {
                reason: format!(
                    "schema name {schema:?}: use 1 to {SCHEMA_NAME_MAX} of a-z, 0-9 and _, not starting with a digit or pg_"
                ),
            });
        }
        self.schema = schema.into();
        Ok(self)
    }

    /// How many connections calls are spread over (at least 1). Each
    /// pipelines the calls given to it, so a few serve many threads.
    pub fn connections(mut self, connections: usize) -> PgConfig {
        self.connections = connections.max(1);
        self
    }

    /// How long this process's locks outlive its last heartbeat (at least
    /// 1 s). The heartbeat runs every third of it. A process that dies or
    /// loses the database loses its locks this long after; a longer TTL
    /// means fewer heartbeats and a longer wait for a dead process's keys.
    pub fn client_ttl(mut self, ttl: Duration) -> PgConfig {
        self.client_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long one call may take before it fails with
    /// [`BackendErrorKind::TimedOut`](crate::BackendErrorKind::TimedOut).
    pub fn operation_timeout(mut self, timeout: Duration) -> PgConfig {
        self.operation_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Whether to create or upgrade the schema when connecting (default).
    /// Off, a schema older than this build is refused, so that migrations
    /// can be run separately (`tollgate pg migrate`).
    pub fn migrate(mut self, migrate: bool) -> PgConfig {
        self.migrate = migrate;
        self
    }

    /// A label stored with this process's registration, for monitoring
    /// (`SELECT * FROM <schema>.client`).
    pub fn label(mut self, label: &str) -> PgConfig {
        self.label = label.into();
        self
    }

    /// The schema's name.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    /// Creates or upgrades the schema to this build's version now, whatever
    /// [`migrate`](Self::migrate) says (what `tollgate pg migrate` runs).
    /// Each version is applied in one transaction, under a lock that makes
    /// concurrent migrators apply it once. A schema newer than this build
    /// is refused ([`OpenError::SchemaTooNew`]) and left as it is.
    pub fn migrate_now(&self) -> Result<SchemaStatus, OpenError> {
        let mut config = self.clone();
        config.migrate = true;
        let applied = runtime::block_on(schema::prepare(&config))?;
        let found = applied.first().map_or(schema::LATEST, |first| first - 1);
        Ok(SchemaStatus { schema: self.schema.clone(), found, latest: schema::LATEST, applied })
    }

    /// The schema's version, read without changing anything (what `tollgate
    /// pg status` shows).
    pub fn schema_status(&self) -> Result<SchemaStatus, OpenError> {
        let found = runtime::block_on(schema::version(self))?;
        Ok(SchemaStatus { schema: self.schema.clone(), found, latest: schema::LATEST, applied: Vec::new() })
    }

    /// `template` with this schema's name in place of `tg.`.
    pub(crate) fn qualify(&self, template: &str) -> String {
        template.replace("tg.", &format!("{}.", self.schema))
    }
}

/// A schema's version, from [`PgConfig::migrate_now`] or
/// [`PgConfig::schema_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaStatus {
    /// The schema.
    pub schema: String,
    /// Its version before the call (0: it did not exist).
    pub found: i32,
    /// The version this build works with.
    pub latest: i32,
    /// The versions the call applied, in order.
    pub applied: Vec<i32>,
}

impl fmt::Debug for PgConfig {
    /// Without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("hosts", &self.pg.get_hosts())
            .field("ports", &self.pg.get_ports())
            .field("user", &self.pg.get_user())
            .field("dbname", &self.pg.get_dbname())
            .field("schema", &self.schema)
            .field("connections", &self.connections)
            .field("client_ttl", &self.client_ttl)
            .field("operation_timeout", &self.operation_timeout)
            .field("migrate", &self.migrate)
            .finish()
    }
}

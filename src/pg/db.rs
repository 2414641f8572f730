//! The connections: a few `tokio-postgres` clients shared by every caller.
//!
//! Every backend operation is one statement (a call of one of the schema's
//! functions, in its own transaction), so no caller needs a connection to
//! itself: calls are spread round-robin over `PgConfig::connections`
//! clients, and each client pipelines the calls given to it. A client that
//! lost its connection is replaced on the next call that picks it; the call
//! that saw the loss fails with [`BackendErrorKind::Unavailable`].
//!
//! Statements are prepared once per connection, from templates that name
//! the schema `tg.`; the configured schema replaces it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::PgConfig;
use super::runtime;
use crate::error::{BackendError, BackendErrorKind};

/// One connection and the statements prepared on it.
struct Conn {
    client: Client,
    prepared: Mutex<HashMap<&'static str, Statement>>,
}

/// The shared connections of one backend.
pub(crate) struct Db {
    config: PgConfig,
    slots: Box<[Mutex<Option<Arc<Conn>>>]>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("schema", &self.config.schema).finish_non_exhaustive()
    }
}

impl Db {
    /// Connections to `config`'s database, made when first used.
    pub(crate) fn new(config: PgConfig) -> Db {
        let slots = (0..config.connections).map(|_| Mutex::new(None)).collect();
        Db { config, slots, next: AtomicUsize::new(0) }
    }

    pub(crate) fn config(&self) -> &PgConfig {
        &self.config
    }

    /// `template` with the configured schema in place of `tg.`.
    pub(crate) fn sql(&self, template: &str) -> String {
        self.config.qualify(template)
    }

    /// Runs the prepared form of `template` with `params`.
    pub(crate) async fn query(
        &self,
        template: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, BackendError> {
        let conn = self.conn().await?;
        let statement = self.prepare(&conn, template).await?;
        conn.client.query(&statement, params).await.map_err(classify)
    }

    /// Runs `template`, which returns exactly one row.
    pub(crate) async fn query_one(
        &self,
        template: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, BackendError> {
        let mut rows = self.query(template, params).await?;
        match rows.len() {
            1 => Ok(rows.pop().expect("one row")),
            n => Err(BackendError::new(BackendErrorKind::Refused, format!("expected one row, got {n}"))),
        }
    }

    async fn prepare(&self, conn: &Conn, template: &'static str) -> Result<Statement, BackendError> {
        if let Some(statement) = conn.prepared.lock().get(template) {
            return Ok(statement.clone());
        }
        let statement = conn.client.prepare(&self.sql(template)).await.map_err(classify)?;
        conn.prepared.lock().insert(template, statement.clone());
        Ok(statement)
    }

    /// The next connection in turn, (re)connected if needed.
    async fn conn(&self) -> Result<Arc<Conn>, BackendError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        if let Some(conn) = slot.lock().as_ref().filter(|conn| !conn.client.is_closed()) {
            return Ok(Arc::clone(conn));
        }
        let client = connect(&self.config).await?;
        let conn = Arc::new(Conn { client, prepared: Mutex::new(HashMap::new()) });
        *slot.lock() = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

/// A new client of `config`'s database; its connection task runs on the
/// backend runtime. Bounded by `PgConfig::connect_timeout`.
pub(crate) async fn connect(config: &PgConfig) -> Result<Client, BackendError> {
    let (client, _) = connect_with(config, |_| ()).await?;
    Ok(client)
}

/// Like [`connect`], but hands every asynchronous message of the connection
/// (notifications) to `on_message`, and returns a future that resolves
/// when the connection ends.
pub(crate) async fn connect_with<F>(config: &PgConfig, mut on_message: F) -> Result<(Client, Closed), BackendError>
where
    F: FnMut(tokio_postgres::AsyncMessage) + Send + 'static,
{
    let pg = config.pg.clone();
    let (client, closed) = runtime::spawn(async move {
        let (client, mut connection) = pg.connect(NoTls).await?;
        let (done, closed) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(message) => on_message(message),
                    Err(_) => break,
                }
            }
            drop(done);
        });
        Ok::<_, tokio_postgres::Error>((client, closed))
    })
    .await
    .map_err(classify)?;
    Ok((
        client,
        Box::pin(async move {
            let _ = closed.await;
        }),
    ))
}

/// Resolves when a connection ends.
pub(crate) type Closed = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a client library error means for the caller.
pub(crate) fn classify(error: tokio_postgres::Error) -> BackendError {
    let kind = match error.code() {
        // Connection exceptions, operator intervention (shutdown, crash
        // recovery), insufficient resources: the server, not the statement.
        Some(code) if ["08", "57", "53"].iter().any(|class| code.code().starts_with(class)) => {
            BackendErrorKind::Unavailable
        }
        Some(_) => BackendErrorKind::Refused,
        None => BackendErrorKind::Unavailable,
    };
    // The library's own text for a server's error is only "db error": the
    // server's message and SQLSTATE (40001, a serialization failure to
    // retry, say) are what a caller needs.
    let message = match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    };
    BackendError::new(kind, message)
}

//! The schema's versions and how a database moves between them.
//!
//! `tg.schema_version` lists the versions applied. Connecting applies the
//! missing ones (unless `PgConfig::migrate` is off), each in one
//! transaction that begins by taking a transaction-scoped advisory lock on
//! the schema's name, so processes starting together apply each version
//! once, and a version is either applied whole or not at all. A database at
//! a version above this build's is refused before anything runs.

use tokio_postgres::Client;

use super::PgConfig;
use super::db::{self, classify};
use crate::error::{BackendError, OpenError};

/// The migrations, in order: version, name, SQL (with `tg.` for the schema).
const MIGRATIONS: &[(i32, &str, &str)] =
    &[(1, "locks", include_str!("sql/1_locks.sql")), (2, "queues", include_str!("sql/2_queues.sql"))];

/// The version this build works with.
pub(crate) const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings `config`'s schema to [`LATEST`] (if `config.migrate`), or checks
/// that it is there. Returns the versions applied now.
pub(crate) async fn prepare(config: &PgConfig) -> Result<Vec<i32>, OpenError> {
    let mut client = db::connect(config).await?;
    prepare_on(&mut client, config).await
}

/// The schema's version (0: not created), read without changing anything.
pub(crate) async fn version(config: &PgConfig) -> Result<i32, OpenError> {
    let mut client = db::connect(config).await?;
    let tx = client.transaction().await.map_err(classify)?;
    Ok(version_in(&tx, config).await?)
}

async fn version_in(tx: &tokio_postgres::Transaction<'_>, config: &PgConfig) -> Result<i32, BackendError> {
    let schema = &config.schema;
    let exists: bool = tx
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &[schema])
        .await
        .map_err(classify)?
        .get(0);
    let found: i32 = if exists {
        let table: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'schema_version')",
                &[schema],
            )
            .await
            .map_err(classify)?
            .get(0);
        if table {
            let sql = config.qualify("SELECT coalesce(max(version), 0) FROM tg.schema_version");
            tx.query_one(&sql, &[]).await.map_err(classify)?.get(0)
        } else {
            0
        }
    } else {
        0
    };
    Ok(found)
}

async fn prepare_on(client: &mut Client, config: &PgConfig) -> Result<Vec<i32>, OpenError> {
    let schema = &config.schema;
    let tx = client.transaction().await.map_err(classify)?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("tollgate.migrate.{schema}")])
        .await
        .map_err(classify)?;
    let found = version_in(&tx, config).await?;
    if found > LATEST {
        return Err(OpenError::SchemaTooNew { schema: schema.clone(), found, supported: LATEST });
    }
    if found == LATEST {
        return Ok(Vec::new());
    }
    if !config.migrate {
        return Err(OpenError::SchemaOutdated { schema: schema.clone(), found, required: LATEST });
    }
    let setup = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; \
         CREATE TABLE IF NOT EXISTS {schema}.schema_version ( \
             version integer PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    );
    tx.batch_execute(&setup).await.map_err(classify)?;
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS.iter().filter(|(version, ..)| *version > found) {
        tx.batch_execute(&config.qualify(sql)).await.map_err(|e| migration_failed(version, name, e))?;
        let record = config.qualify("INSERT INTO tg.schema_version (version, name) VALUES ($1, $2)");
        tx.execute(&record, &[&version, &name]).await.map_err(classify)?;
        applied.push(version);
    }
    tx.commit().await.map_err(classify)?;
    Ok(applied)
}

fn migration_failed(version: i32, name: &str, error: tokio_postgres::Error) -> BackendError {
    let mut error = classify(error);
    error.message = format!("migration {version} ({name}): {}", error.message);
    error
}

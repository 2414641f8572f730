//! `tollgate pg`: the PostgreSQL backend's schema, from the command line
//! (feature `postgres`). `migrate` creates or upgrades it; `status` shows
//! its version and whether this build can use it; `cleanup` runs the
//! retention job once.

use tollgate::{Engine, PgConfig};

use crate::{EXIT_FAILED, Failure, fail};

/// The settings for `url` and `schema`, or why they are refused.
fn config(url: &str, schema: &str) -> Result<PgConfig, Failure> {
    PgConfig::new(url).and_then(|config| config.schema(schema)).map_err(|e| fail(EXIT_FAILED, e.to_string()))
}

/// Applies the missing migrations; prints what it did.
pub fn migrate(url: &str, schema: &str) -> Result<u8, Failure> {
    let status = config(url, schema)?.migrate_now().map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    if status.applied.is_empty() {
        println!("schema {}: at version {}, nothing to do", status.schema, status.latest);
    } else {
        let applied: Vec<String> = status.applied.iter().map(i32::to_string).collect();
        println!(
            "schema {}: version {} -> {} (applied {})",
            status.schema,
            status.found,
            status.latest,
            applied.join(", ")
        );
    }
    Ok(0)
}

/// Prints the schema's version; exits 2 if this build cannot use it as it is.
pub fn status(url: &str, schema: &str) -> Result<u8, Failure> {
    let status = config(url, schema)?.schema_status().map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    let verdict = match status.found {
        0 => "not created: `tollgate pg migrate` (or the first process to connect) creates it",
        found if found < status.latest => "older than this build: run `tollgate pg migrate`",
        found if found > status.latest => "newer than this build: this build refuses it",
        _ => "up to date",
    };
    println!("schema {}: version {} (this build: {}): {verdict}", status.schema, status.found, status.latest);
    Ok(if status.found > status.latest { EXIT_FAILED } else { 0 })
}

/// Runs `Engine::cleanup` once; prints what each topic lost.
pub fn cleanup(url: &str, schema: &str) -> Result<u8, Failure> {
    // Connecting would create the schema: refuse one that is not there.
    let config = config(url, schema)?.migrate(false);
    let engine = Engine::connect(config).map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    let report = engine.cleanup().map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    if report.topics.is_empty() {
        println!("schema {schema}: nothing to delete");
    }
    for (topic, deleted, oldest) in &report.topics {
        println!("{topic}: {deleted} messages deleted, oldest offset now {oldest}");
    }
    if report.more {
        println!("more may be due: run it again");
    }
    Ok(0)
}

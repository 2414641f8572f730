//! The PostgreSQL backend's schema: migrations at connect and on demand,
//! concurrent migrators, and a schema newer than this build refused and
//! left as it was. Against a throwaway server (`tollgate-pgtemp`).
#![cfg(feature = "postgres")]

use tollgate::{LockManager, OpenError, PgConfig};

/// Settings for a fresh schema on the test server.
fn fresh() -> PgConfig {
    let server = tollgate_pgtemp::server();
    PgConfig::new(&server.url()).and_then(|c| c.schema(&server.schema_name())).expect("a valid configuration")
}

/// Runs `sql` on the test server and returns the first column of each row.
fn query(sql: &str) -> Vec<i32> {
    let url = tollgate_pgtemp::server().url();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.query(sql, &[]).await.unwrap().iter().map(|row| row.get(0)).collect()
    })
}

#[test]
fn migrations_apply_once_and_report_what_they_did() {
    let config = fresh();
    let before = config.schema_status().unwrap();
    assert_eq!((before.found, before.applied.len()), (0, 0), "a schema that does not exist is version 0");
    let first = config.migrate_now().unwrap();
    assert_eq!((first.found, first.applied.clone()), (0, vec![1, 2]));
    let again = config.migrate_now().unwrap();
    assert_eq!((again.found, again.applied.len()), (first.latest, 0), "nothing left to apply");
    let versions = query(&format!("SELECT version FROM {}.schema_version ORDER BY version", config.schema_name()));
    assert_eq!(versions, [1, 2]);
}

#[test]
fn concurrent_migrators_apply_each_version_once() {
    let config = fresh();
    let applied: Vec<Vec<i32>> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4).map(|_| s.spawn(|| config.migrate_now().unwrap().applied)).collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    let mut all: Vec<i32> = applied.into_iter().flatten().collect();
    all.sort();
    assert_eq!(all, [1, 2], "each version applied by exactly one migrator");
}

#[test]
fn connecting_migrates_unless_told_not_to() {
    let outdated = fresh().migrate(false);
    match LockManager::connect(outdated.clone()) {
        Err(OpenError::SchemaOutdated { found: 0, required, .. }) => assert!(required >= 1),
        other => panic!("an uncreated schema without migrations: {other:?}"),
    }
    assert_eq!(outdated.schema_status().unwrap().found, 0, "nothing was created");
    let locks = LockManager::connect(outdated.migrate(true)).unwrap();
    assert!(locks.is_remote());
}

#[test]
fn a_schema_newer_than_this_build_is_refused_and_left_as_it_was() {
    let config = fresh();
    let latest = config.migrate_now().unwrap().latest;
    let schema = config.schema_name().to_owned();
    query(&format!("INSERT INTO {schema}.schema_version (version, name) VALUES ({}, 'from the future')", latest + 1));
    let rows = |schema: &str| query(&format!("SELECT count(*)::int FROM {schema}.schema_version"));
    let before = rows(&schema);
    for result in [LockManager::connect(config.clone()).map(drop), config.migrate_now().map(drop)] {
        match result {
            Err(OpenError::SchemaTooNew { found, supported, .. }) => {
                assert_eq!((found, supported), (latest + 1, latest))
            }
            other => panic!("a newer schema: {other:?}"),
        }
    }
    assert_eq!(config.schema_status().unwrap().found, latest + 1);
    assert_eq!(rows(&schema), before, "the schema is unchanged");
}

#[test]
fn bad_settings_are_refused_before_connecting() {
    assert!(matches!(PgConfig::new("postgres://[::1"), Err(OpenError::InvalidPgConfig { .. })));
    let config = PgConfig::new("postgres://nobody@127.0.0.1:1/none").unwrap();
    for name in ["", "Upper", "1digit", "pg_catalog", "semi;colon", "with space", &"x".repeat(41)] {
        assert!(
            matches!(config.clone().schema(name), Err(OpenError::InvalidPgConfig { .. })),
            "schema name {name:?} must be refused"
        );
    }
    // Nothing listens on port 1: a typed error, not a hang or a panic.
    match LockManager::connect(config.schema("ok").unwrap()) {
        Err(OpenError::Backend(error)) => assert_eq!(error.kind, tollgate::BackendErrorKind::Unavailable),
        other => panic!("an unreachable server: {other:?}"),
    }
}

/// `tollgate pg migrate`, `status` and `cleanup`.
#[cfg(feature = "cli")]
#[test]
fn the_command_line_migrates_and_reports() {
    use std::process::Command;
    let config = fresh();
    let url = tollgate_pgtemp::server().url();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate")).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let schema = config.schema_name();
    let (code, out) = run(&["pg", "status", &url, "--schema", schema]);
    assert_eq!(code, Some(0));
    assert!(out.contains("version 0") && out.contains("not created"), "{out}");
    let (code, out) = run(&["pg", "migrate", &url, "--schema", schema]);
    assert_eq!(code, Some(0));
    assert!(out.contains("version 0 -> ") && out.contains("applied 1, 2"), "{out}");
    let (code, out) = run(&["pg", "status", &url, "--schema", schema]);
    assert_eq!(code, Some(0));
    assert!(out.contains("up to date"), "{out}");
    let (code, out) = run(&["pg", "cleanup", &url, "--schema", schema]);
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing to delete"), "{out}");
    let (code, _) = run(&["pg", "cleanup", &url, "--schema", "never_created"]);
    assert_eq!(code, Some(2), "cleanup does not create a schema");
    query(&format!("INSERT INTO {schema}.schema_version (version, name) VALUES (999, 'future')"));
    let (code, out) = run(&["pg", "status", &url, "--schema", schema]);
    assert_eq!(code, Some(2), "a newer schema: exit 2");
    assert!(out.contains("newer than this build"), "{out}");
}

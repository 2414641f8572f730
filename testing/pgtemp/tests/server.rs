//! The server works: a client connects, and committed data survives a simulated PostgreSQL crash.
//!
//! The only test in this binary that connects, as `restart_immediate` cuts every connection of the process.

use std::time::Instant;

use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn committed_data_survives_an_immediate_restart() {
    let started = Instant::now();
    let server = tollgate_pgtemp::server();
    eprintln!("server() took {:?}: {}", started.elapsed(), server.url());
    let url = server.url();
    assert!(url.starts_with("postgres://postgres@127.0.0.1:") && url.ends_with("/postgres"), "{url}");

    let client = connect(&url).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let schema = server.schema_name();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.kept (id int PRIMARY KEY, note text NOT NULL);
             INSERT INTO {schema}.kept VALUES (1, 'committed before the crash');"
        ))
        .await
        .unwrap();

    let pid = server.pid().expect("a running throwaway server has a pid");
    let restarted = Instant::now();
    server.restart_immediate();
    eprintln!("restart_immediate() took {:?}", restarted.elapsed());
    assert_ne!(server.pid(), Some(pid), "a new postmaster");
    assert!(client.query_one("SELECT 1", &[]).await.is_err(), "the crash cut the old connection");

    assert_eq!(server.url(), url, "the same port");
    let client = connect(&url).await;
    let note: String =
        client.query_one(&format!("SELECT note FROM {schema}.kept WHERE id = 1"), &[]).await.unwrap().get(0);
    assert_eq!(note, "committed before the crash");
}

#[test]
fn schema_names_are_distinct_unquoted_identifiers() {
    let server = tollgate_pgtemp::server();
    let names: Vec<String> = (0..100).map(|_| server.schema_name()).collect();
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), names.len());
    for name in &names {
        assert!(name.starts_with(&format!("t_{}_", std::process::id())), "{name}");
        assert!(name.len() <= 63, "{name}: longer than PostgreSQL's identifiers");
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name}");
    }
}

//! `storefront-http DATA_DIR [--bind ADDR] [--skus N] [--stock N]
//! [--decline-percent P]`: serves the shop until `SIGTERM` or `SIGINT`,
//! then shuts down gracefully (see `tollgate_storefront_http::serve`).
//!
//! Once it listens it prints `listening on ADDR` (with the port chosen
//! when `--bind` asks for port 0), and at the end a summary line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tollgate_storefront_http::{Config, serve};

const USAGE: &str = "usage: storefront-http DATA_DIR [--bind ADDR] [--skus N] [--stock N] [--decline-percent P]";

/// The command line: the configuration and the address to bind.
fn parse(mut args: impl Iterator<Item = String>) -> Result<(Config, SocketAddr), String> {
    let data_dir = args.next().filter(|arg| !arg.starts_with("--")).ok_or(USAGE)?;
    let mut config = Config::new(PathBuf::from(data_dir));
    let mut bind: SocketAddr = "127.0.0.1:8080".parse().expect("a valid address");
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |_| format!("{flag}: bad value {value:?}\n{USAGE}");
        match flag.as_str() {
            "--bind" => bind = value.parse().map_err(|_| format!("{flag}: bad value {value:?}\n{USAGE}"))?,
            "--skus" => config.skus = value.parse().map_err(bad).and_then(|n| range(n, 1, 10_000, &flag))?,
            "--stock" => config.stock = value.parse().map_err(bad)?,
            "--decline-percent" => {
                config.decline_percent = value.parse().map_err(bad).and_then(|n| range(n, 0, 100, &flag))?
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok((config, bind))
}

fn range(value: u32, min: u32, max: u32, flag: &str) -> Result<u32, String> {
    if (min..=max).contains(&value) { Ok(value) } else { Err(format!("{flag} is {min} to {max}")) }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (config, bind) = match parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let (mut terminate, mut interrupt) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("storefront-http: cannot handle SIGTERM and SIGINT: {error}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(bind).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("storefront-http: cannot listen on {bind}: {error}");
            return ExitCode::from(2);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(error) => eprintln!("storefront-http: {error}"),
    }
    let stop = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    match serve(config, listener, stop).await {
        Ok(summary) => {
            let m = &summary.metrics;
            println!(
                "stopped: {} placed, {} out of stock, {} lock timeouts, {} paid, {} failed, {} pending, {} errors",
                m.placed,
                m.out_of_stock,
                m.lock_timeouts,
                m.paid,
                m.failed,
                m.orders_pending,
                m.errors.len()
            );
            if m.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(error) => {
            eprintln!("storefront-http: {error}");
            ExitCode::FAILURE
        }
    }
}

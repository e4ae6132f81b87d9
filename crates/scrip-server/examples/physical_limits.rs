//! The physical limits Scrip's figures are compared with (BENCHMARKS.md),
//! measured on the machine at hand with the same SQLite build and the same
//! HTTP stack as the server:
//!
//! ```sh
//! cargo run --release -p scrip-server --example physical_limits -- fsync [DIR]
//! cargo run --release -p scrip-server --example physical_limits -- sqlite [DIR]
//! cargo run --release -p scrip-server --example physical_limits -- http [ADDR]   # then: wrk -t2 -c64 -d10s http://ADDR/
//! ```
//!
//! - `fsync`: appends 64 bytes and calls `fdatasync` in a loop for 3 s.
//! - `sqlite`: the minimal durable redemption (read the token, conditional
//!   update of its spend, insert the charge and two ledger rows; WAL,
//!   `synchronous=FULL`), committed one at a time and 100 per transaction,
//!   3 s each.
//! - `http`: a trivial axum JSON endpoint (`GET /` → `{"ok":true}`) to load
//!   with `wrk` until Ctrl-C.

use std::io::Write;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

const RUN: Duration = Duration::from_secs(3);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_default();
    let arg = args.next();
    match what.as_str() {
        "fsync" => fsync(&directory(arg)?),
        "sqlite" => sqlite(&directory(arg)?),
        "http" => http(arg.as_deref().unwrap_or("127.0.0.1:4799")),
        _ => {
            eprintln!("usage: physical_limits fsync [DIR] | sqlite [DIR] | http [ADDR]");
            std::process::exit(2);
        }
    }
}

/// A fresh directory under `base` (default: the current one, so the
/// measurement is on the disk the data directory would be on).
fn directory(base: Option<String>) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("scrip-limits-")
        .tempdir_in(base.unwrap_or_else(|| ".".to_owned()))
}

fn fsync(dir: &tempfile::TempDir) -> Result<(), Box<dyn std::error::Error>> {
    let mut file = std::fs::File::create(dir.path().join("fsync"))?;
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < RUN {
        file.write_all(&[0u8; 64])?;
        file.sync_data()?;
        count += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fsync: {:.0}/s ({:.3} ms each)",
        count as f64 / secs,
        secs * 1000.0 / count as f64
    );
    Ok(())
}

fn sqlite(dir: &tempfile::TempDir) -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::open(dir.path().join("limits.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         CREATE TABLE tokens (id INTEGER PRIMARY KEY, cap INTEGER NOT NULL, spent INTEGER NOT NULL);
         CREATE TABLE charges (id INTEGER PRIMARY KEY, token INTEGER NOT NULL, amount INTEGER NOT NULL);
         CREATE TABLE entries (id INTEGER PRIMARY KEY, charge INTEGER NOT NULL, account TEXT NOT NULL,
                               amount INTEGER NOT NULL);",
    )?;
    let tokens = 1000i64;
    {
        let tx = conn.unchecked_transaction()?;
        for id in 0..tokens {
            tx.execute(
                "INSERT INTO tokens (id, cap, spent) VALUES (?1, ?2, 0)",
                params![id, i64::MAX / 2],
            )?;
        }
        tx.commit()?;
    }
    for per_transaction in [1u64, 100] {
        let start = Instant::now();
        let mut count = 0u64;
        while start.elapsed() < RUN {
            let tx = conn.unchecked_transaction()?;
            for _ in 0..per_transaction {
                redeem(&tx, count as i64 % tokens, 1)?;
                count += 1;
            }
            tx.commit()?;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "sqlite redemption, {per_transaction} per transaction: {:.0}/s",
            count as f64 / secs
        );
    }
    Ok(())
}

/// One redemption: the statements a charge needs at the least.
fn redeem(conn: &Connection, token: i64, amount: i64) -> rusqlite::Result<()> {
    let (cap, spent): (i64, i64) = conn
        .prepare_cached("SELECT cap, spent FROM tokens WHERE id = ?1")?
        .query_row([token], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if spent + amount > cap {
        return Ok(());
    }
    let changed = conn
        .prepare_cached("UPDATE tokens SET spent = spent + ?2 WHERE id = ?1 AND spent + ?2 <= cap")?
        .execute(params![token, amount])?;
    if changed == 1 {
        conn.prepare_cached("INSERT INTO charges (token, amount) VALUES (?1, ?2)")?
            .execute(params![token, amount])?;
        let charge = conn.last_insert_rowid();
        let mut entry = conn
            .prepare_cached("INSERT INTO entries (charge, account, amount) VALUES (?1, ?2, ?3)")?;
        entry.execute(params![charge, "card_receivable", amount])?;
        entry.execute(params![charge, "provider_pending", -amount])?;
    }
    Ok(())
}

fn http(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async { axum::Json(serde_json::json!({ "ok": true })) }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("trivial endpoint on http://{}/", listener.local_addr()?);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}

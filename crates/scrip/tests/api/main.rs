//! Integration tests: each test starts the real server on port 0 with a
//! fresh database and drives it over HTTP, asserting on responses and on
//! what the store holds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod concurrency;
mod derive;
mod durability;
mod errors;
mod events;
mod helpers;
mod ledger;
mod lifecycle;
mod multinode;
mod periods;
mod secrets;
mod security;

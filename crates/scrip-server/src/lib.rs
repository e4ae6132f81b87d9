//! The Scrip server: the embedded SQLite store with group commit, the vault,
//! the card network simulator, and the HTTP API.
//!
//! [`server::start`] opens everything and serves; [`api::app`] is the
//! router alone, for tests that drive it without a socket.

pub mod api;
pub mod clock;
pub mod context;
pub mod dispatcher;
pub mod keys;
pub mod network;
pub mod scan;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tls;
pub mod vault;
pub mod views;

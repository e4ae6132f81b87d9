//! Scrip's pure domain core: everything that decides, nothing that does I/O.
//!
//! Money and currencies ([`money`]), calendar periods ([`period`]), card
//! checks ([`card`]), the token scope and the authorization decision
//! ([`token`]) and every bound the system enforces ([`limits`]). The store,
//! the vault and the HTTP layer call into this crate; it calls nothing.

pub mod card;
pub mod ledger;
pub mod limits;
pub mod money;
pub mod period;
pub mod token;
pub mod webhook;

/// Unix seconds, UTC. The whole system speaks in these.
pub type UnixSecs = i64;

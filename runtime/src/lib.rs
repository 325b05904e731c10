//! What the agent and the aggregator share at run time, below both of them:
//! opening a sled store that may be damaged or rolled back ([`store`]), the
//! high-water mark kept apart from a store that tells a rollback from an
//! intact store ([`high_water`]), the shutdown signal every task holds
//! ([`shutdown`]), TLS for the MQTT links ([`tls`]), the options and
//! reconnect backoff every MQTT client starts from ([`mqtt`]) and reading
//! configuration files and the indicator catalog ([`config`]), and, with the
//! `sheets` feature, spreadsheets as rows of cells for the registry and profile
//! imports (`sheet`).
//!
//! Both binaries depend on this crate and neither on the other, so the
//! production aggregator links no agent source and no embedded broker.

pub mod config;
pub mod high_water;
pub mod mqtt;
#[cfg(feature = "sheets")]
pub mod sheet;
pub mod shutdown;
pub mod store;
pub mod tls;

pub use high_water::{HighWater, HighWaterError};
pub use store::{open_sled, StoreOpenError};

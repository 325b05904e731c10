//! Federation (issue 18): zone aggregators send their exact goal tallies to
//! a city or province center, which merges them into the city and province
//! tables no single zone can compute. See `docs/federation.md`.
//!
//! - [`wire`]: the message, a versioned snapshot of one zone's tallies;
//! - [`epoch`]: the zone store's identity, so a reset store is told from a replay;
//! - [`snapshot`]: the zone side, reading its tallies for the message;
//! - [`publish`]: the zone side's task, publishing to NATS JetStream and/or MQTT;
//! - [`signed`]: the MQTT path's per-zone signature (no bridge carries credentials);
//! - [`nats`]: connecting, and the zone and hub streams' shape;
//! - [`center`]: the center role — the pure merge, its tables, its HTTP API
//!   and the consumer that feeds it from the hub stream.

pub mod center;
pub mod config;
pub mod epoch;
pub mod nats;
pub mod publish;
pub mod signed;
pub mod snapshot;
pub mod wire;

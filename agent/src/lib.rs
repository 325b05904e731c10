//! zonesync agent: reads plant sources, keeps every reading in a durable
//! outbox and publishes batches over MQTT.
//!
//! `main.rs` only parses arguments; everything here runs in-process too (the
//! demo, `zonesync-demo`, starts agents this way).

pub mod check;
pub mod config;
pub mod history;
pub mod link;
pub mod metrics;
pub mod outbox;
#[cfg(feature = "energy-platform")]
pub mod platform;
pub mod run;
pub mod sources;
pub mod status;

// Moved to the shared runtime crate; re-exported so `crate::shutdown` and
// `zonesync_agent::tls` keep their paths.
pub use zonesync_runtime::{shutdown, tls};

pub use config::AgentConfig;
pub use run::{run, AgentError};

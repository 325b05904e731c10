//! One module per figure of the issue, in its priority order.

pub mod broker;
pub mod connections;
pub mod drain;
pub mod federation;
pub mod footprint;
pub mod freshness;
pub mod goals;
pub mod ingest;
pub mod rebuild;
pub mod recovery;

//! The fact core: what the aggregator holds and every rule about which fact
//! stands ([`ledger`]), over series kept in time order ([`series`]). Pure:
//! no tokio, no sled, no clock. The store keeps the batches the ledger
//! accepted; the read model (`crate::state`) and the goal tallies follow the
//! [`Op`]s it returns.

pub mod ledger;
pub mod series;

pub use ledger::{Applied, Identity, Ledger, Op, SeriesLimit, SeriesLimits};
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod series_limit_tests;

//! What the agent and the aggregator share at run time, below both of them:
//! opening a sled store that may be damaged or rolled back ([`store`]) and
//! the high-water mark kept apart from a store that tells a rollback from
//! an intact store ([`high_water`]).

pub mod high_water;
pub mod store;

pub use high_water::{HighWater, HighWaterError};
pub use store::{open_sled, StoreOpenError};

//! zonesync wire format v1: identities, the indicator catalog, units, reporting
//! periods, the batch envelope, the topic layout and validation.
//!
//! This crate is pure: no sockets, no files, no clocks. Every function that needs
//! "now" takes it as an argument, so the agent, the aggregator and the tests all
//! judge a payload the same way.

pub mod catalog;
mod clock;
mod fast;
pub mod ids;
pub mod period;
pub mod problem;
pub mod rng;
pub mod topic;
pub mod validate;
pub mod wire;

pub use catalog::{Catalog, CatalogError, Indicator, IndicatorKind, ValueType};
/// The inline string type of validated readings' codes.
pub use compact_str::CompactString;
pub use ids::{AgentId, EnterpriseId, IdError, OutboxId, ZoneId};
pub use period::{Period, PeriodError, Progress, CST};
pub use topic::{Topic, TopicError, TopicKind};
pub use validate::{
    check_period, check_ts, Accepted, CanonicalReading, DeclaredValue, Limits, Location, Problem, Reason, Scenario,
    ScenarioLevel, Validator,
};
pub use wire::{
    digest, Batch, Confirm, Declaration, Presence, PresenceStatus, RawBatch, Reading, ReadingTime, Refusal,
    REFUSED_REUSED_SEQ, WIRE_VERSION,
};

//! Wire format v1: the batch envelope an agent publishes and the presence
//! (birth / death) message it keeps retained.
//!
//! The (agent, seq) pair is the only de-duplication key: MQTT QoS 1 may
//! deliver a batch twice and rumqttc keeps its session only in memory, so the
//! agent's durable sequence number is what makes "exactly once" possible.
//! See `docs/protocol.md` for examples of every message.

use crate::ids::{AgentId, EnterpriseId, ZoneId};
use crate::period::Period;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The wire format version carried in every message as `v`.
pub const WIRE_VERSION: u32 = 1;

/// A batch of readings and declarations for one enterprise, from one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Wire format version, [`WIRE_VERSION`].
    pub v: u32,
    /// Sending agent.
    pub agent: AgentId,
    /// Agent boot counter: grows by one on every start, so a restart is told from a gap.
    pub boot: u64,
    /// Per-agent sequence number; only grows, survives restarts.
    pub seq: u64,
    /// When the agent (first) sent the batch, by the agent's clock.
    pub sent_at: DateTime<Utc>,
    /// Zone the enterprise belongs to.
    pub zone: ZoneId,
    /// Enterprise the readings are about.
    pub enterprise: EnterpriseId,
    /// True for historical data sent after the fact; never overwrites newer live values.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
    /// Readings, in the order they were taken.
    #[serde(default)]
    pub readings: Vec<Reading>,
    /// Declared attributes (profile, levels, scenarios).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declarations: Vec<Declaration>,
}

/// One reading as sent: exactly one of `ts` and `period` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Catalog indicator code, e.g. `electricity`.
    pub indicator: String,
    /// Measuring point within the enterprise (meter id); empty for enterprise totals.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub point: String,
    /// The value in `unit`.
    pub value: f64,
    /// One of the indicator's accepted units.
    pub unit: String,
    /// When the value was read (UTC), for counters and gauges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<DateTime<Utc>>,
    /// Reporting period (China time) for amounts, e.g. `2026-10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
}

/// When a validated reading applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadingTime {
    /// An instant.
    Ts(DateTime<Utc>),
    /// A reporting period.
    Period(Period),
}

/// A declared attribute: the value's JSON type is given by the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Declaration {
    /// Catalog code of a `declaration` indicator, e.g. `dt_maturity`.
    pub indicator: String,
    /// The declared value.
    pub value: serde_json::Value,
}

/// Whether an agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// Published retained on connect (birth).
    Online,
    /// The broker's last will, or a clean goodbye (death).
    Offline,
}

/// The retained presence message on `zonesync/v1/{zone}/{agent}/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// Wire format version.
    pub v: u32,
    /// The agent.
    pub agent: AgentId,
    /// Its zone.
    pub zone: ZoneId,
    /// Online (birth) or offline (death).
    pub status: PresenceStatus,
    /// Boot counter, as in batches.
    pub boot: u64,
    /// When this session connected, by the agent's clock.
    pub at: DateTime<Utc>,
    /// The next sequence number the agent will assign; lets the aggregator see gaps.
    pub next_seq: u64,
    /// Readings (and declarations) the agent's outbox has ever dropped because
    /// its disk budget was full: they will never arrive. 0 from older agents.
    #[serde(default)]
    pub dropped_readings: u64,
    /// Agent software version.
    pub version: String,
    /// Enterprises this agent reports for.
    #[serde(default)]
    pub enterprises: Vec<EnterpriseId>,
}

impl Batch {
    /// Serialises the batch to its JSON payload.
    pub fn to_payload(&self) -> Vec<u8> {
        // Serialising plain structs of strings and finite numbers cannot fail;
        // an empty payload would be dead-lettered rather than panic.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Presence {
    /// Serialises the presence message to its JSON payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

//! Energy-intensity alerting: rules (pure) observe each zone, the lifecycle
//! (pure) turns observations into raised / cleared transitions, and the
//! engine persists alert states and history and queues each transition for
//! every sink on the durable outbound queue (`crate::outbound`), so an alert
//! is not lost while a receiver is down.

mod engine;
pub mod lifecycle;
pub mod rules;
pub mod sinks;
pub mod store;

pub use engine::{acknowledge, evaluate_once, run, AckError, Alerts};
pub use lifecycle::{Phase, Transition};
pub use rules::{Observation, RuleSettings, Subject};
pub use sinks::Sink;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Alerting settings (`[alerts]` in the aggregator config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Evaluate the rules this often, milliseconds.
    pub evaluate_every_ms: u64,
    /// A breach, or a recovery, must last this long before it counts, seconds.
    pub min_duration_secs: f64,
    /// Fraction of |limit| a value must fall below the limit by to clear.
    pub hysteresis: f64,
    /// The rules.
    pub rules: RuleSettings,
    /// Where transitions go.
    pub sinks: Vec<Sink>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            evaluate_every_ms: 60_000,
            min_duration_secs: 900.0,
            hysteresis: 0.05,
            rules: RuleSettings::default(),
            sinks: Vec::new(),
        }
    }
}

/// The persisted state of one (rule, subject).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertRecord {
    /// `rule|zone|enterprise`.
    pub key: String,
    /// Rule id.
    pub rule: String,
    /// Subject.
    pub subject: Subject,
    /// Lifecycle phase.
    pub phase: Phase,
    /// Last observed value.
    pub value: f64,
    /// Limit.
    pub limit: f64,
    /// Period of the last value.
    pub period: String,
    /// Last detail text.
    pub detail: String,
    /// Last evaluation.
    pub updated_at: DateTime<Utc>,
}

/// A transition, as recorded in history and sent to sinks: the observation
/// that caused it, flattened, with the transition and its time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// History id.
    pub id: u64,
    /// Alert key.
    pub key: String,
    /// Raised or cleared.
    pub transition: Transition,
    /// The observation at the transition.
    #[serde(flatten)]
    pub obs: Observation,
    /// When.
    pub at: DateTime<Utc>,
}

impl Event {
    /// A one-line title, Chinese first.
    pub fn title(&self) -> String {
        let (zh, en) = match self.transition {
            Transition::Raised => ("能耗强度告警", "energy-intensity alert raised"),
            Transition::Cleared => ("能耗强度告警解除", "energy-intensity alert cleared"),
        };
        format!("{zh} {en}: {}", self.obs.subject.name)
    }
}

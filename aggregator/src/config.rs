//! The aggregator's configuration: one TOML file, every key overridable by a
//! `ZONESYNC_…` environment variable (nesting with `__`). Unknown keys are refused.

use crate::goals::GoalSettings;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zonesync_proto::{Limits, ZoneId};
use zonesync_runtime::mqtt::{Backoff, ConnectSettings};

pub use zonesync_runtime::config::ConfigError;

/// Top-level aggregator configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Where the store lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The zone registry file.
    pub registry: PathBuf,
    /// The zone's own indicator catalog (default: the one compiled in).
    #[serde(default)]
    pub catalog: Option<PathBuf>,
    /// Zones to serve; empty means every zone in the registry.
    #[serde(default)]
    pub zones: Vec<ZoneId>,
    /// Broker connection.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// HTTP API.
    #[serde(default)]
    pub http: HttpConfig,
    /// Payload limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Goal definitions' thresholds.
    #[serde(default)]
    pub goals: GoalSettings,
    /// Goal files read after the built-in presets, in order: an entry with an
    /// id already in force replaces it, a new id adds a goal (docs/goals.md).
    #[serde(default)]
    pub goal_files: Vec<PathBuf>,
    /// Whether the presets compiled in are in force (false: only `goal_files`).
    #[serde(default = "yes")]
    pub builtin_goals: bool,
    /// How often each zone's current-month goal table is made in the background, milliseconds (this builds
    /// its tallies at start-up and each new month; queries are answered from tallies kept up to date anyway).
    #[serde(default = "default_goal_refresh_ms")]
    pub goal_refresh_ms: u64,
    /// Enterprise classification (A/B/C) settings.
    #[serde(default)]
    pub classification: crate::classify::ClassificationSettings,
    /// Energy-intensity alerting.
    #[serde(default)]
    pub alerts: crate::alerts::AlertSettings,
    /// Data-quality thresholds.
    #[serde(default)]
    pub quality: crate::quality::QualitySettings,
    /// Zone summaries on a schedule.
    #[serde(default)]
    pub summaries: crate::summaries::SummarySettings,
    /// The outbound queue's retry timing.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Store sizing.
    #[serde(default)]
    pub store: StoreConfig,
    /// Publishing the zones' goal tallies to a city or province center (docs/federation.md); off when absent.
    #[serde(default)]
    pub federation: Option<crate::federation::config::FederationConfig>,
}

fn yes() -> bool {
    true
}

fn default_goal_refresh_ms() -> u64 {
    1000
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/zonesync-aggregator")
}

/// Broker connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id; the persistent session is keyed by it, so keep it stable.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password (prefer `ZONESYNC_MQTT__PASSWORD`).
    pub password: Option<String>,
    /// Keep-alive, seconds.
    pub keep_alive_secs: u64,
    /// Largest MQTT packet accepted from the broker, bytes. Keep it above the
    /// broker's own limit so an oversized payload is dead-lettered instead of
    /// breaking the connection (and being redelivered forever).
    pub max_packet_bytes: usize,
    /// TLS (rustls); plain TCP when absent.
    pub tls: Option<zonesync_runtime::tls::TlsConfig>,
}

/// First reconnect delay of the aggregator's MQTT clients; doubles per failure.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// Longest reconnect delay: a restarted broker is back in use within seconds.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

impl MqttConfig {
    /// How a client of this broker named `client_id` connects, sending
    /// packets of at most `max_outgoing_bytes`.
    pub fn connect_settings(&self, client_id: String, max_outgoing_bytes: usize) -> ConnectSettings {
        ConnectSettings {
            client_id,
            host: self.host.clone(),
            port: self.port,
            credentials: self.username.clone().zip(self.password.clone()),
            tls: self.tls.clone(),
            keep_alive: Duration::from_secs(self.keep_alive_secs),
            max_incoming_bytes: self.max_packet_bytes,
            max_outgoing_bytes,
        }
    }

    /// The reconnect delay of the aggregator's MQTT clients.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(RECONNECT_MIN, RECONNECT_MAX)
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "zonesync-aggregator".into(),
            username: None,
            password: None,
            keep_alive_secs: 30,
            max_packet_bytes: 16 * 1024 * 1024,
            tls: None,
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: String,
    /// Bearer token required for anything that changes state (alert
    /// acknowledgement). Unset: such requests are refused. Prefer
    /// `ZONESYNC_HTTP__WRITE_TOKEN` over writing it here.
    pub write_token: Option<String>,
    /// When set, every `/api/...` request needs this bearer token (or the
    /// write token); `/healthz` and `/metrics` stay open. Prefer `ZONESYNC_HTTP__READ_TOKEN`.
    pub read_token: Option<String>,
    /// Most HTTP connections open at once; more wait in the kernel's
    /// backlog. Kept at least 256 below the open-file limit (lowered, with
    /// a warning, where it is not), so the store and the broker connections
    /// always get file descriptors. See `http.rs`.
    pub max_connections: usize,
    /// How long a client may take to send a request's head (and, on a kept-alive
    /// connection, the next one's), milliseconds; then the connection is closed.
    pub header_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            write_token: None,
            read_token: None,
            max_connections: 512,
            header_timeout_ms: 10_000,
        }
    }
}

/// Payload limits (see `zonesync_proto::Limits`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest payload, bytes.
    pub max_payload_bytes: usize,
    /// Most items per batch.
    pub max_items: usize,
    /// How far ahead of our clock a timestamp may be, seconds.
    pub max_future_skew_secs: i64,
    /// Earliest acceptable timestamp.
    pub earliest: DateTime<Utc>,
    /// Enterprise ids with this prefix skip the check character (demo data only).
    pub test_prefix: Option<String>,
    /// Most distinct series (indicator and point) one enterprise may have;
    /// readings of further new series are refused (`series_limit_enterprise`).
    pub max_series_per_enterprise: usize,
    /// Most distinct series one agent may bring in, over all its
    /// enterprises; beyond it, `series_limit_agent`.
    pub max_series_per_agent: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_payload_bytes: l.max_payload_bytes,
            max_items: l.max_items,
            max_future_skew_secs: l.max_future_skew.num_seconds(),
            earliest: l.earliest,
            test_prefix: None,
            max_series_per_enterprise: l.max_series_per_enterprise,
            max_series_per_agent: l.max_series_per_agent,
        }
    }
}

impl LimitsConfig {
    /// As proto limits.
    pub fn to_limits(&self) -> Limits {
        Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_items: self.max_items,
            max_future_skew: chrono::Duration::seconds(self.max_future_skew_secs),
            earliest: self.earliest,
            test_prefix: self.test_prefix.clone(),
            max_series_per_enterprise: self.max_series_per_enterprise,
            max_series_per_agent: self.max_series_per_agent,
            ..Limits::default()
        }
    }
}

/// Store sizing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled page cache, bytes.
    pub cache_capacity_bytes: u64,
    /// Most bytes the dead letters may take in the store; the oldest go
    /// first. Refusals cost a sender nothing, so this is what bounds the
    /// store's growth from bad input (each letter is itself bounded, see
    /// `dead_letters`).
    pub dead_letters_max_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 256 * 1024 * 1024,
            dead_letters_max_bytes: 16 * 1024 * 1024,
        }
    }
}

impl AggregatorConfig {
    /// Loads a file, then applies `ZONESYNC_…` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        zonesync_runtime::config::load_with_env(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_examples_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
        let c = AggregatorConfig::load(&dir.join("aggregator.toml")).unwrap();
        assert_eq!(c.limits.max_payload_bytes, 262_144);
        let r = crate::registry::Registry::load(&dir.join("registry.toml")).unwrap();
        assert_eq!(r.zones().count(), 1);
    }
}

/// Retry timing of the outbound queue (alerts, summaries).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// First retry delay, milliseconds; doubles per attempt.
    pub retry_base_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
        }
    }
}

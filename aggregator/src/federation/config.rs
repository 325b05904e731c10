//! Typed configuration of both ends of the federation: a zone aggregator's
//! `[federation]` section (where to publish its tallies) and a center's own
//! file (`zonesync-aggregator center -c FILE`). Unknown keys are refused;
//! every key is shown in `deploy/federation/`.

use crate::config::HttpConfig;
use crate::goals::{Asked, GoalSettings, SpanChoice, SpanError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zonesync_proto::{Period, PeriodError};

/// How to reach a NATS server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConnect {
    /// Server URL, e.g. `nats://127.0.0.1:4222` (the zone's leaf node, or a hub node).
    pub url: String,
    /// User name, when the server asks for one.
    #[serde(default)]
    pub user: Option<String>,
    /// Password (set it with `ZONESYNC_…__PASSWORD` rather than in the file).
    #[serde(default)]
    pub password: Option<String>,
}

/// A zone aggregator's `[federation]` section: publish the served zones'
/// tallies to a JetStream stream of the zone's own leaf node, or retained
/// on the zone's MQTT broker (`[federation.mqtt]`) for a bridge to carry, or both.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// The zone's NATS leaf node (absent: the MQTT path only).
    #[serde(default)]
    pub nats: Option<NatsConnect>,
    /// The MQTT path: tallies signed and retained on the aggregator's own broker.
    #[serde(default)]
    pub mqtt: Option<ZoneMqtt>,
    /// The leaf node's JetStream domain (None: the server's own JetStream).
    #[serde(default)]
    pub domain: Option<String>,
    /// The zone stream, created if missing, holding `zonesync.tallies.<zone>`.
    #[serde(default = "default_zone_stream")]
    pub stream: String,
    /// Periods whose tables the center can serve: YYYY, YYYY-Qn or YYYY-MM;
    /// empty means the last complete month (what tables open on) and the
    /// current one (China time), moving with the clock.
    #[serde(default)]
    pub periods: Vec<String>,
    /// Spans published for each period: basis, month, quarter, year, ytd.
    #[serde(default = "default_spans")]
    pub spans: Vec<String>,
    /// How often the zone's version is looked at, milliseconds; a new
    /// version is published at once.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// An unchanged snapshot is published again after this long, milliseconds,
    /// so the center can tell a quiet zone from a cut link.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Replicas of the zone stream (1 on a single leaf node).
    #[serde(default = "one")]
    pub replicas: usize,
    /// Messages kept per zone subject in the zone stream.
    #[serde(default = "default_keep")]
    pub keep_per_zone: i64,
}

/// A zone's MQTT path: each served zone's tallies, signed with the zone's
/// key, published retained at QoS 1 to `<topic_prefix>/<zone>/tallies` on the
/// broker of the aggregator's `[mqtt]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneMqtt {
    /// Topic prefix (the bridge carries `<prefix>/#` to the center's broker).
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// File holding the zone's signing secret (≥ 16 bytes), the one the center holds for it.
    pub key_file: PathBuf,
}

/// The MQTT path's default topic prefix.
pub fn default_topic_prefix() -> String {
    "zonesync/federation".into()
}

/// A center's MQTT source: tallies the zones' brokers bridge to its broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterMqtt {
    /// The center's broker (the far end of the zones' bridges).
    #[serde(default)]
    pub broker: crate::config::MqttConfig,
    /// Topic prefix the zones publish under.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Per zone, the file holding its signing secret: a message is taken
    /// only with a good signature of the zone it names.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<zonesync_proto::ZoneId, PathBuf>,
}

fn default_zone_stream() -> String {
    "ZONESYNC_ZONE_TALLIES".into()
}
fn default_spans() -> Vec<String> {
    ["basis", "month", "quarter", "year", "ytd"].map(String::from).to_vec()
}
fn default_interval_ms() -> u64 {
    500
}
fn default_heartbeat_ms() -> u64 {
    30_000
}
fn one() -> usize {
    1
}
fn default_keep() -> i64 {
    4
}

/// Why the periods or spans to publish were refused.
#[derive(Debug, thiserror::Error)]
pub enum AsksError {
    #[error("federation.periods: {0}")]
    Period(#[from] PeriodError),
    #[error("federation.spans: {0}")]
    Span(#[from] SpanError),
}

impl FederationConfig {
    /// The tables the zone publishes for at `now`: each period (or the last
    /// complete and the current month) with each span that fits it.
    pub fn asks(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Asked>, AsksError> {
        let periods = match self.periods.is_empty() {
            true => {
                let (last, this) = (Period::last_complete_month(now), Period::month_of(now));
                if last == this {
                    vec![this]
                } else {
                    vec![last, this]
                }
            }
            false => self
                .periods
                .iter()
                .map(|p| Period::parse(p))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let spans = self
            .spans
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<SpanChoice>, _>>()?;
        let mut out = Vec::new();
        for p in periods {
            for s in &spans {
                // A span shorter than the period (month of a year) does not apply to it.
                if let Ok(a) = Asked::new(p, *s) {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }
}

/// One zone stream the hub stream sources, and the one zone it may speak for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    /// The zone: only its subject is sourced from this stream, so a zone
    /// whose leaf node stores another zone's subject cannot pass it on.
    pub zone: zonesync_proto::ZoneId,
    /// The zone leaf node's JetStream domain.
    pub domain: String,
    /// Its zone stream.
    #[serde(default = "default_zone_stream")]
    pub stream: String,
}

/// A center's NATS side: the hub stream it reads, and how it reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterNats {
    /// A hub node.
    #[serde(flatten)]
    pub connect: NatsConnect,
    /// The hub's JetStream domain (None: the server's own JetStream).
    #[serde(default)]
    pub domain: Option<String>,
    /// The hub stream, sourcing every zone stream.
    #[serde(default = "default_hub_stream")]
    pub stream: String,
    /// The center's durable consumer on it.
    #[serde(default = "default_durable")]
    pub durable: String,
    /// Create (or update) the hub stream with `source` at start; off when the
    /// hub's operators manage it (deploy/federation/).
    #[serde(default)]
    pub create_stream: bool,
    /// Replicas of the hub stream when the center creates it (3 on a 3-node hub).
    #[serde(default = "one")]
    pub replicas: usize,
    /// Messages kept per zone subject in the hub stream: the center rebuilds from them.
    #[serde(default = "default_keep")]
    pub keep_per_zone: i64,
    /// The zone streams the hub stream sources.
    #[serde(default)]
    pub source: Vec<HubSource>,
}

fn default_hub_stream() -> String {
    "ZONESYNC_TALLIES".into()
}
fn default_durable() -> String {
    "center".into()
}

/// A center's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterConfig {
    /// The zones it merges (the same registry format as a zone's; enterprises may be left out).
    pub registry: PathBuf,
    /// The indicator catalog the goals are checked against (default: built in).
    #[serde(default)]
    pub catalog: Option<PathBuf>,
    /// Goal settings: must equal every zone's, or its tallies are refused.
    #[serde(default)]
    pub goals: GoalSettings,
    /// Goal files read after the built-in presets, as a zone's `goal_files`:
    /// the center reads each zone's cells by goal id, so the catalogs must agree.
    #[serde(default)]
    pub goal_files: Vec<PathBuf>,
    /// Whether the presets compiled in are in force (false: only `goal_files`).
    #[serde(default = "yes")]
    pub builtin_goals: bool,
    /// A zone not heard from for this long is shown stale, seconds.
    #[serde(default = "default_stale_after_s")]
    pub stale_after_s: i64,
    /// HTTP API.
    #[serde(default)]
    pub http: HttpConfig,
    /// The NATS hub (absent: MQTT only).
    #[serde(default)]
    pub nats: Option<CenterNats>,
    /// The MQTT source (absent: NATS only).
    #[serde(default)]
    pub mqtt: Option<CenterMqtt>,
}

fn yes() -> bool {
    true
}

fn default_stale_after_s() -> i64 {
    120
}

impl CenterConfig {
    /// Loads the file, then `ZONESYNC_…` environment overrides.
    pub fn load(path: &Path) -> Result<Self, crate::config::ConfigError> {
        zonesync_runtime::config::load_with_env(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_are_every_period_with_every_span_that_fits_it() {
        let c: FederationConfig = toml::from_str(
            "nats = { url = \"nats://x\" }\nperiods = [\"2026-10\", \"2026\"]\nspans = [\"basis\", \"month\", \"year\"]",
        )
        .unwrap();
        let asks = c.asks(chrono::Utc::now()).unwrap();
        assert_eq!(asks.len(), 5, "month span does not fit a year: {asks:?}");
        let moving: FederationConfig = toml::from_str("nats = { url = \"nats://x\" }").unwrap();
        let mid_november = chrono::DateTime::parse_from_rfc3339("2026-11-15T12:00:00+08:00")
            .unwrap()
            .into();
        let periods: Vec<Period> = moving.asks(mid_november).unwrap().iter().map(|a| a.period).collect();
        assert!(periods.contains(&Period::Month(2026, 10)) && periods.contains(&Period::Month(2026, 11)));
        let bad: FederationConfig = toml::from_str("nats = { url = \"nats://x\" }\nspans = [\"weekly\"]").unwrap();
        assert!(bad.asks(chrono::Utc::now()).is_err());
        assert!(toml::from_str::<FederationConfig>("nats = { url = \"nats://x\" }\nstrem = \"x\"").is_err());
    }

    #[test]
    fn the_shipped_federation_examples_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/federation");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let center: CenterConfig = toml::from_str(&read("center.toml")).unwrap();
        let nats = center.nats.clone().unwrap();
        assert_eq!(nats.source.len(), 3);
        assert_eq!(nats.replicas, 3);
        assert_eq!(
            serde_json::to_value(&center.goals).unwrap(),
            serde_json::to_value(GoalSettings::default()).unwrap(),
            "the example's settings are a zone's defaults, or every default zone would be refused"
        );
        let reg = crate::registry::Registry::load(&dir.join("center-registry.toml")).unwrap();
        let zones: Vec<String> = reg.zones().map(|z| z.id.to_string()).collect();
        let sourced: Vec<String> = nats.source.iter().map(|s| s.zone.to_string()).collect();
        assert_eq!(zones, sourced, "every registered zone is sourced");
        let zone: crate::config::AggregatorConfig = toml::from_str(&read("zone-aggregator.toml")).unwrap();
        let fed = zone.federation.unwrap();
        assert_eq!(fed.domain.as_deref(), Some("zone-jy-a"));
        assert!(fed.heartbeat_ms / 1000 < center.stale_after_s as u64);
        assert!(
            fed.asks(chrono::Utc::now()).unwrap().len() >= 5,
            "five spans of each month"
        );
        assert_eq!(
            fed.mqtt.map(|m| m.topic_prefix),
            Some(default_topic_prefix()),
            "the zone example shows the MQTT path too"
        );
        let mqtt_only: CenterConfig = toml::from_str(&read("center-mqtt.toml")).unwrap();
        assert!(mqtt_only.nats.is_none());
        let m = mqtt_only.mqtt.unwrap();
        let keyed: Vec<String> = m.keys.keys().map(|z| z.to_string()).collect();
        assert_eq!(zones, keyed, "every registered zone has a key");
        assert_eq!(m.topic_prefix, default_topic_prefix());
    }
}

//! The agent's configuration: one TOML file, every key overridable by a
//! `ZONESYNC_…` environment variable (nesting with `__`, e.g.
//! `ZONESYNC_MQTT__HOST=10.0.0.5`). Unknown keys are refused so a typo is an
//! error at start-up, not a silently ignored setting.

use crate::sources::profile::ProfileConfig;
use crate::sources::simulator::SimulatorConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zonesync_proto::{AgentId, Catalog, CatalogError, ZoneId};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration {path}: {source}")]
    Load {
        path: String,
        source: Box<config::ConfigError>,
    },
    #[error("reading indicator catalog {path}: {source}")]
    CatalogFile { path: String, source: std::io::Error },
    #[error("indicator catalog {path}: {source}")]
    Catalog { path: String, source: CatalogError },
}

/// Loads a TOML configuration file into `T`, then applies `ZONESYNC_…`
/// environment overrides (nesting with `__`). Shared by every zonesync binary.
pub fn load_with_env<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("ZONESYNC")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|source| ConfigError::Load {
            path: path.display().to_string(),
            source: Box::new(source),
        })
}

/// The compiled-in indicator catalog, or the zone's own file when one is configured.
pub fn load_catalog(path: Option<&Path>) -> Result<Catalog, ConfigError> {
    let Some(path) = path else {
        return Catalog::builtin().map_err(|source| ConfigError::Catalog {
            path: "(built in)".into(),
            source,
        });
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::CatalogFile {
        path: path.display().to_string(),
        source,
    })?;
    Catalog::from_toml(&text).map_err(|source| ConfigError::Catalog {
        path: path.display().to_string(),
        source,
    })
}

/// Top-level agent configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This agent's id; also its MQTT client id.
    pub agent_id: AgentId,
    /// The zone the agent's enterprises belong to.
    pub zone: ZoneId,
    /// Where the outbox lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The zone's own indicator catalog (default: the one compiled in).
    #[serde(default)]
    pub catalog: Option<PathBuf>,
    /// Broker connection.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Batching and outbox sizing.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Simulated meters and monthly figures (demos, load tests).
    #[serde(default)]
    pub simulator: Option<SimulatorConfig>,
    /// The enterprises' profile and declarations file.
    #[serde(default)]
    pub profile: Option<ProfileConfig>,
    /// CSV drop folders for finance's monthly figures, one `[[csv_drop]]` table each.
    #[cfg(feature = "csv")]
    #[serde(default)]
    pub csv_drop: Vec<crate::sources::csv_drop::CsvDropConfig>,
    /// Modbus TCP meters, one `[[modbus]]` table per device.
    #[cfg(feature = "modbus")]
    #[serde(default)]
    pub modbus: Vec<crate::sources::modbus::ModbusConfig>,
    /// DL/T 645-2007 meters behind serial-to-TCP gateways, one `[[dlt645]]` table per meter total.
    #[cfg(feature = "dlt645")]
    #[serde(default)]
    pub dlt645: Vec<crate::sources::dlt645::Dlt645Config>,
    /// HTTP/JSON documents from plant systems, one `[[http_pull]]` table per URL.
    #[cfg(feature = "http-pull")]
    #[serde(default)]
    pub http_pull: Vec<crate::sources::http_pull::HttpPullConfig>,
    /// Bounds on reading timestamps, checked before anything is queued.
    #[serde(default)]
    pub clock_sanity: crate::sources::clock::ClockSanityConfig,
    /// Local history kept for export (retention, disk budget).
    #[serde(default)]
    pub history: crate::history::HistoryConfig,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/zonesync-agent")
}

/// Broker connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password (prefer `ZONESYNC_MQTT__PASSWORD` over the file).
    pub password: Option<String>,
    /// MQTT keep-alive, seconds.
    pub keep_alive_secs: u64,
    /// First reconnect delay, milliseconds; doubles up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, milliseconds.
    pub reconnect_max_ms: u64,
    /// TLS (rustls); plain TCP when absent.
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            keep_alive_secs: 30,
            reconnect_min_ms: 200,
            reconnect_max_ms: 30_000,
            tls: None,
        }
    }
}

/// Batching and storage settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Most readings in one batch.
    pub max_batch_items: usize,
    /// A batch is sealed once its oldest item is this old, milliseconds.
    pub max_batch_age_ms: u64,
    /// Batches published and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// sled page cache, bytes (sled's default of 1 GiB does not fit a gateway).
    pub cache_capacity_bytes: u64,
    /// Most bytes of readings and batches the outbox holds; beyond it the
    /// oldest unacknowledged readings are dropped (and counted), never the
    /// newest, and no source waits.
    pub disk_budget_bytes: u64,
    /// A batch carrying a reading stamped more than this many seconds before
    /// it is sealed is marked `backfill` (after an outage, or old figures).
    pub backfill_after_secs: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_batch_items: 500,
            max_batch_age_ms: 1000,
            max_in_flight: 16,
            cache_capacity_bytes: 4 * 1024 * 1024,
            disk_budget_bytes: 256 * 1024 * 1024,
            backfill_after_secs: 300,
        }
    }
}

impl AgentConfig {
    /// Loads a file, then applies `ZONESYNC_…` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_with_env(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.toml");
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.simulator.unwrap().enterprises.len(), 1);
        let profile =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/profile.toml"))
                .unwrap();
        let file: crate::sources::profile::ProfileFile = toml::from_str(&profile).unwrap();
        let v = zonesync_proto::Validator::new(zonesync_proto::Catalog::builtin().unwrap(), Default::default());
        assert_eq!(
            crate::sources::profile::items(&file, &v).len(),
            9,
            "every example entry is valid"
        );
    }

    #[test]
    fn catalog_override_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_catalog(None).unwrap().get("electricity").is_some());
        let p = dir.path().join("catalog.toml");
        std::fs::write(
            &p,
            zonesync_proto::catalog::BUILTIN_CATALOG.replace("0.0001229", "0.0003"),
        )
        .unwrap();
        assert_eq!(load_catalog(Some(&p)).unwrap().tce("electricity", 1.0), Some(0.0003));
        std::fs::write(&p, "[[indicator]]\ncode = 1\n").unwrap();
        assert!(matches!(load_catalog(Some(&p)), Err(ConfigError::Catalog { .. })));
        assert!(matches!(
            load_catalog(Some(&dir.path().join("missing.toml"))),
            Err(ConfigError::CatalogFile { .. })
        ));
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(
            &p,
            "agent_id = \"gw-1\"\nzone = \"jiyuan-hitech\"\n[mqtt]\nport = 1999\n",
        )
        .unwrap();
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.mqtt.port, 1999);
        assert_eq!(c.outbox.max_batch_items, 500);
        std::fs::write(&p, "agent_id = \"gw-1\"\nzone = \"jiyuan-hitech\"\nmqtt_port = 3\n").unwrap();
        assert!(AgentConfig::load(&p).is_err(), "unknown keys are refused");
        std::fs::write(&p, "agent_id = \"gw/1\"\nzone = \"jiyuan-hitech\"\n").unwrap();
        assert!(AgentConfig::load(&p).is_err(), "ids are validated");
    }
}

//! The agent's configuration: one TOML file, every key overridable by a
//! `ZONESYNC_…` environment variable (nesting with `__`, e.g.
//! `ZONESYNC_MQTT__HOST=10.0.0.5`). Unknown keys are refused so a typo is an
//! error at start-up, not a silently ignored setting.

use crate::sources::profile::ProfileConfig;
use crate::sources::simulator::SimulatorConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zonesync_proto::{AgentId, Catalog, ZoneId};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the catalog (shared with the aggregator: `zonesync_runtime::config`).
    #[error(transparent)]
    File(#[from] zonesync_runtime::config::ConfigError),
    #[error("upstream {index} ({what}): {problem}")]
    Upstream {
        index: usize,
        what: String,
        problem: String,
    },
    /// An `[[energy_platform]]` table.
    #[cfg(feature = "energy-platform")]
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformConfigError),
}

pub use zonesync_runtime::config::load_with_env;

/// The compiled-in indicator catalog, or the zone's own file when one is configured.
pub fn load_catalog(path: Option<&Path>) -> Result<Catalog, ConfigError> {
    Ok(zonesync_runtime::config::load_catalog(path)?)
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
    /// Broker connection: the first upstream (named `primary` unless it has a `name`).
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Further upstreams (e.g. the city's data center beside the zone's),
    /// one `[[upstream]]` table each, every one with a unique `name`. Each
    /// gets every reading, with its own acknowledged cursor in the outbox.
    #[serde(default)]
    pub upstream: Vec<MqttConfig>,
    /// Key-energy-user online-monitoring platforms (the province's, the
    /// nation's) as HTTPS upstreams, one `[[energy_platform]]` table each;
    /// each has its own acknowledged cursor like an `[[upstream]]`.
    #[cfg(feature = "energy-platform")]
    #[serde(default)]
    pub energy_platform: Vec<crate::platform::PlatformConfig>,
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
    /// The gateway's own serial ports (RS-485), one `[[serial]]` table each;
    /// Modbus RTU devices and DL/T 645 meters name theirs with `serial = "…"`.
    #[cfg(feature = "serial")]
    #[serde(default)]
    pub serial: Vec<crate::sources::serial::SerialConfig>,
    /// Gateways already on the plant's broker (EMQX Neuron, Sparkplug B edge
    /// nodes), one `[[mqtt_gateway]]` table each.
    #[cfg(feature = "gateways")]
    #[serde(default)]
    pub mqtt_gateway: Vec<crate::sources::gateways::MqttGatewayConfig>,
    /// OPC UA servers (DCS, SCADA), one `[[opcua]]` table each.
    #[cfg(feature = "opcua")]
    #[serde(default)]
    pub opcua: Vec<crate::sources::opcua::OpcUaConfig>,
    /// Without the `opcua` feature, `[[opcua]]` tables are taken only to be
    /// refused with the reason (built without OPC UA), not as an unknown key.
    #[cfg(not(feature = "opcua"))]
    #[serde(default)]
    pub opcua: Vec<toml::Value>,
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
    /// The agent's own metrics on a local port (off unless `listen` is set).
    #[serde(default)]
    pub metrics: crate::metrics::MetricsConfig,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/zonesync-agent")
}

/// Broker connection settings of one upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// The upstream's name, in status and logs and as the key of its cursor
    /// in the outbox (renaming one makes a new upstream, which is sent the
    /// whole backlog held). Optional for `[mqtt]` (`primary`), required for
    /// `[[upstream]]`; letters, digits, `-` and `_`, at most 64.
    pub name: Option<String>,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password (prefer `password_file`, or `ZONESYNC_MQTT__PASSWORD` for
    /// `[mqtt]`, over the configuration file).
    pub password: Option<String>,
    /// A file holding the password (one line; a trailing newline is
    /// ignored), read at start-up. The way to keep an `[[upstream]]`'s
    /// password out of the configuration: environment overrides cannot
    /// reach the entries of a TOML array.
    pub password_file: Option<PathBuf>,
    /// MQTT keep-alive, seconds.
    pub keep_alive_secs: u64,
    /// First reconnect delay, milliseconds; doubles up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, milliseconds.
    pub reconnect_max_ms: u64,
    /// TLS (rustls); plain TCP when absent.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Keep a batch until the aggregator confirms it on the agent's confirm
    /// topic (after its durable flush), not merely until the broker's PUBACK:
    /// a broker killed before saving its queue, or one whose ACL denied the
    /// publish yet acknowledged it (MQTT 3.1.1), then loses nothing. On by
    /// default; needs an aggregator that publishes confirmations.
    pub end_to_end_confirm: bool,
    /// The MQTT version spoken to this broker: `"5"` (default) or `"3.1.1"`.
    pub protocol: MqttProtocol,
}

/// Which MQTT version a link speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MqttProtocol {
    /// MQTT 5: a PUBACK carries a reason code, so a publish the broker's ACL
    /// denied is seen at once (Mosquitto 2, EMQX 4 and later).
    #[default]
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1, for brokers without MQTT 5: a denied publish is
    /// acknowledged like any other, and only the aggregator's confirmation
    /// (`end_to_end_confirm`) keeps it from being deleted.
    #[serde(rename = "3.1.1")]
    V311,
}

impl MqttProtocol {
    /// As written in the configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::V5 => "5",
            Self::V311 => "3.1.1",
        }
    }
}

impl MqttConfig {
    /// Replaces `password_file` by the password it holds.
    fn read_password_file(&mut self) -> Result<(), String> {
        let Some(file) = self.password_file.take() else {
            return Ok(());
        };
        if self.password.is_some() {
            return Err("give `password` or `password_file`, not both".into());
        }
        // The value is never printed: an operator who wrote the password itself
        // here would otherwise find it in the journal ("password_file <secret>:
        // No such file"). The error kind says what to look at.
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "password_file cannot be read ({}; its value is not shown, as it may be a password given where a path belongs)",
                e.kind()
            )
        })?;
        self.password = Some(text.trim_end_matches(['\n', '\r']).to_owned());
        Ok(())
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            name: None,
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            password_file: None,
            keep_alive_secs: 30,
            reconnect_min_ms: 200,
            reconnect_max_ms: 30_000,
            tls: None,
            end_to_end_confirm: true,
            protocol: MqttProtocol::V5,
        }
    }
}

/// One configured upstream, named.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its name (the outbox's key for its cursor).
    pub name: String,
    /// Its broker settings.
    pub mqtt: MqttConfig,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
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
    /// Readings and declarations published and not yet acknowledged, at
    /// most (at least one batch goes out whatever its size); also the most
    /// one seal takes. What a drain holds in memory follows this, not the
    /// batch count: 16 batches of 500 (8,000 readings) on the wire peaked at
    /// 30–36 MiB, 2,000 at 13 MiB (docs/profiles.md, figure 4b).
    pub max_in_flight_items: usize,
    /// The outbox store's page cache, bytes (redb's; small, since a gateway
    /// has little RAM). Half of it at most holds a seal's written pages
    /// until they reach the file. 1 MiB: a drain is bound by syncs, not by
    /// reads, and 4 MiB put a draining agent at 11.9 MiB against 9.1
    /// (docs/profiles.md, figure 4b, issue 17).
    pub cache_capacity_bytes: u64,
    /// Most bytes of readings and batches the outbox holds; beyond it the
    /// oldest unacknowledged readings are dropped (and counted), never the
    /// newest, and no source waits.
    pub disk_budget_bytes: u64,
    /// A batch carrying a reading stamped more than this many seconds before
    /// it is sealed is marked `backfill` (after an outage, or old figures).
    pub backfill_after_secs: u64,
    /// Upstreams with `end_to_end_confirm`: a batch not confirmed this many
    /// seconds after it was published is published again; the wait doubles
    /// on every resend of the same batch, up to `confirm_timeout_max_secs`.
    pub confirm_timeout_secs: u64,
    /// The longest wait between resends of an unconfirmed batch, seconds.
    pub confirm_timeout_max_secs: u64,
    /// Upstreams with `end_to_end_confirm`: most batches published and
    /// awaiting confirmation at once (only their sequence numbers and send
    /// times are held in memory; payloads are re-read from the outbox).
    pub confirm_window: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_batch_items: 500,
            max_batch_age_ms: 1000,
            max_in_flight: 16,
            max_in_flight_items: 2000,
            cache_capacity_bytes: 1024 * 1024,
            disk_budget_bytes: 256 * 1024 * 1024,
            backfill_after_secs: 300,
            confirm_timeout_secs: 30,
            confirm_timeout_max_secs: 600,
            confirm_window: 256,
        }
    }
}

impl AgentConfig {
    /// Loads a file, then applies `ZONESYNC_…` environment overrides; the
    /// upstreams are checked (see [`AgentConfig::upstreams`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: Self = load_with_env(path)?;
        // Read once here, so later uses of the configuration do no I/O.
        for (index, mqtt) in std::iter::once(&mut c.mqtt).chain(c.upstream.iter_mut()).enumerate() {
            mqtt.read_password_file().map_err(|problem| ConfigError::Upstream {
                index,
                what: format!("{}:{}", mqtt.host, mqtt.port),
                problem,
            })?;
        }
        #[cfg(feature = "energy-platform")]
        for p in &mut c.energy_platform {
            p.read_token()?;
        }
        c.upstream_names()?;
        Ok(c)
    }

    /// Every upstream's name, MQTT ones first, then the energy platforms:
    /// each is a cursor in the outbox, so all are valid and distinct.
    pub fn upstream_names(&self) -> Result<Vec<String>, ConfigError> {
        #[allow(unused_mut)]
        let mut names: Vec<String> = self.upstreams()?.into_iter().map(|u| u.name).collect();
        #[cfg(feature = "energy-platform")]
        for p in &self.energy_platform {
            let err = |problem: String| crate::platform::PlatformConfigError {
                name: p.name.clone(),
                problem,
            };
            if !valid_name(&p.name) {
                return Err(err("name: use 1 to 64 letters, digits, '-' or '_'".into()).into());
            }
            if names.contains(&p.name) {
                return Err(err("the name is used by another upstream".into()).into());
            }
            names.push(p.name.clone());
        }
        Ok(names)
    }

    /// Every upstream, `[mqtt]` first: names valid and unique, and no two on
    /// the same broker (both would connect with the agent's client id and
    /// throw each other off).
    pub fn upstreams(&self) -> Result<Vec<Upstream>, ConfigError> {
        let mut out: Vec<Upstream> = Vec::with_capacity(1 + self.upstream.len());
        let first = std::iter::once((&self.mqtt, Some(crate::outbox::PRIMARY)));
        for (index, (mqtt, default)) in first.chain(self.upstream.iter().map(|u| (u, None))).enumerate() {
            let err = |problem: String| ConfigError::Upstream {
                index,
                what: format!("{}:{}", mqtt.host, mqtt.port),
                problem,
            };
            let name = match (&mqtt.name, default) {
                (Some(n), _) => n.clone(),
                (None, Some(d)) => d.to_owned(),
                (None, None) => return Err(err("an [[upstream]] table needs a `name`".into())),
            };
            if !valid_name(&name) {
                return Err(err(format!("name {name:?}: use 1 to 64 letters, digits, '-' or '_'")));
            }
            if out.iter().any(|u| u.name == name) {
                return Err(err(format!("name {name:?} is used twice")));
            }
            if let Some(u) = out
                .iter()
                .find(|u| u.mqtt.host == mqtt.host && u.mqtt.port == mqtt.port)
            {
                return Err(err(format!("same broker as upstream {:?}", u.name)));
            }
            out.push(Upstream {
                name,
                mqtt: mqtt.clone(),
            });
        }
        Ok(out)
    }

    /// How the outbox is opened: its sizing, and every upstream's name.
    pub fn outbox_options(&self) -> Result<crate::outbox::OutboxOptions, ConfigError> {
        let mut o = crate::outbox::OutboxOptions::from(&self.outbox);
        o.upstreams = self.upstream_names()?;
        Ok(o)
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

    #[test]
    fn an_upstreams_password_comes_from_its_file_and_never_from_both() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("city.pw");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let p = dir.path().join("agent.toml");
        let with = |extra: &str| {
            format!(
                "agent_id = \"gw-1\"\nzone = \"jiyuan-hitech\"\n[[upstream]]\nname = \"city\"\nport = 1999\n{extra}\n"
            )
        };
        std::fs::write(&p, with(&format!("password_file = {:?}", secret.display().to_string()))).unwrap();
        let ups = AgentConfig::load(&p).unwrap().upstreams().unwrap();
        assert_eq!(ups[1].mqtt.password.as_deref(), Some("s3cret"));
        assert_eq!(ups[0].mqtt.password, None);
        std::fs::write(
            &p,
            with(&format!(
                "password = \"x\"\npassword_file = {:?}",
                secret.display().to_string()
            )),
        )
        .unwrap();
        assert!(AgentConfig::load(&p).unwrap_err().to_string().contains("not both"));
        // A password written where the path belongs is never echoed.
        std::fs::write(&p, with("password_file = \"Sup3r-Secret-Pw\"")).unwrap();
        let e = AgentConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("upstream 1") && e.contains("password_file cannot be read"),
            "{e}"
        );
        assert!(!e.contains("Sup3r-Secret-Pw"), "{e}");
    }

    #[test]
    fn the_commented_second_upstream_is_valid_once_uncommented() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let mut out = Vec::new();
        let mut inside = false;
        for line in text.lines() {
            inside = (inside || line == "# [[upstream]]") && !line.is_empty();
            match line.strip_prefix("# ") {
                Some(l) if inside && !l.starts_with("password") => out.push(l.to_owned()),
                _ => out.push(line.to_owned()),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("agent.toml");
        std::fs::write(&q, out.join("\n")).unwrap();
        let c = AgentConfig::load(&q).unwrap();
        let u = c.upstreams().unwrap();
        assert_eq!(
            u.iter()
                .map(|u| (u.name.as_str(), u.mqtt.end_to_end_confirm))
                .collect::<Vec<_>>(),
            vec![("primary", true), ("city", true)]
        );
        assert_eq!(
            u.iter().map(|u| u.mqtt.protocol).collect::<Vec<_>>(),
            vec![MqttProtocol::V5, MqttProtocol::V311]
        );
        assert!(u[1].mqtt.tls.is_some());
    }

    #[test]
    fn upstreams_are_named_unique_and_on_distinct_brokers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        let head = "agent_id = \"gw-1\"\nzone = \"z\"\n";
        std::fs::write(&p, head).unwrap();
        let c = AgentConfig::load(&p).unwrap();
        let u = c.upstreams().unwrap();
        assert_eq!(u.len(), 1);
        // The aggregator's confirmation and MQTT 5 by default: a batch leaves
        // the outbox only once stored, and a broker's denial is seen.
        assert_eq!((u[0].name.as_str(), u[0].mqtt.end_to_end_confirm), ("primary", true));
        assert_eq!(u[0].mqtt.protocol, MqttProtocol::V5);
        assert_eq!(c.outbox.confirm_window, 256);

        let two = format!(
            "{head}[mqtt]\nname = \"zone\"\nend_to_end_confirm = true\n[outbox]\nconfirm_timeout_secs = 5\n\
             [[upstream]]\nname = \"city\"\nhost = \"10.0.0.9\"\nport = 8883\nend_to_end_confirm = false\nprotocol = \"3.1.1\"\n"
        );
        std::fs::write(&p, &two).unwrap();
        let c = AgentConfig::load(&p).unwrap();
        let u = c.upstreams().unwrap();
        assert_eq!(
            u.iter()
                .map(|u| (u.name.as_str(), u.mqtt.port, u.mqtt.end_to_end_confirm))
                .collect::<Vec<_>>(),
            vec![("zone", 1883, true), ("city", 8883, false)]
        );
        assert_eq!(u[1].mqtt.protocol, MqttProtocol::V311);
        assert_eq!(c.outbox_options().unwrap().upstreams, vec!["zone", "city"]);
        assert_eq!(c.outbox.confirm_timeout_secs, 5);

        for (bad, why) in [
            (format!("{head}[[upstream]]\nport = 2\n"), "needs a `name`"),
            (
                format!("{head}[[upstream]]\nname = \"primary\"\nport = 2\n"),
                "used twice",
            ),
            (format!("{head}[[upstream]]\nname = \"city\"\n"), "same broker"),
            (format!("{head}[[upstream]]\nname = \"c/1\"\nport = 2\n"), "letters"),
            (
                format!("{head}[[upstream]]\nname = \"c\"\nport = 2\nprotocol = \"4\"\n"),
                "variant constructor 4",
            ),
            (
                format!("{head}[[upstream]]\nname = \"c\"\nport = 2\nconfirm = 1\n"),
                "unknown field",
            ),
        ] {
            std::fs::write(&p, &bad).unwrap();
            let e = AgentConfig::load(&p).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}

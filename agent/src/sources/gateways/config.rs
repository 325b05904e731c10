//! The `[[mqtt_gateway]]` configuration: which broker, which protocol, and
//! which tags become which readings. Checked against the catalog at start-up
//! like every source's, so a mistyped indicator or unit stops the agent
//! instead of leaving a tag silently unreported.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;
use zonesync_proto::{EnterpriseId, Validator};

/// A gateway already on the plant's broker (`[[mqtt_gateway]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttGatewayConfig {
    /// Unique per agent; names the source, its MQTT client id and its cursor.
    pub name: String,
    /// `neuron` (EMQX Neuron's JSON upload) or `sparkplug` (Sparkplug B edge nodes).
    pub kind: GatewayKind,
    /// The plant's broker.
    #[serde(default = "default_host")]
    pub host: String,
    /// Its port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// User name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (one line), read at start-up.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Topic filters to subscribe to (default: `/neuron/#` for Neuron,
    /// `spBv1.0/GROUP/#` for each group the tags name for Sparkplug).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Sparkplug: ask an edge node for its births (NCMD `Node Control/Rebirth`)
    /// after a gap, a DATA before its birth or an unknown alias.
    #[serde(default = "default_true")]
    pub rebirth: bool,
    /// MQTT keep-alive, seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// The tags read, one `[[mqtt_gateway.tags]]` table each.
    pub tags: Vec<TagConfig>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_true() -> bool {
    true
}
fn default_keep_alive() -> u64 {
    30
}
fn default_scale() -> f64 {
    1.0
}

/// Which protocol the gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    /// EMQX Neuron's MQTT plugin, values- or tags-format JSON.
    Neuron,
    /// Sparkplug B (protobuf) edge nodes.
    Sparkplug,
}

/// One tag and the reading it becomes (`[[mqtt_gateway.tags]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Neuron: the south node; Sparkplug: the edge node id.
    pub node: String,
    /// Neuron: the node's group; Sparkplug: the group id.
    pub group: String,
    /// Sparkplug: the device id, for a device's metric.
    #[serde(default)]
    pub device: Option<String>,
    /// Neuron: the tag name; Sparkplug: the metric name.
    pub tag: String,
    /// Catalog indicator (a counter or a gauge).
    pub indicator: String,
    /// One of its catalog units: the value (times `scale`) is sent in it.
    pub unit: String,
    /// Multiplier from the tag's value to `unit`.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Credit code of the enterprise.
    pub enterprise: EnterpriseId,
    /// Point id sent with the readings.
    pub point: String,
}

/// Why a `[[mqtt_gateway]]` table was refused.
#[derive(Debug, thiserror::Error)]
pub enum MqttGatewayConfigError {
    #[error("mqtt_gateway {name:?}: {problem}")]
    Gateway { name: String, problem: String },
    #[error("mqtt_gateway {name:?}, tag {tag:?}: {problem}")]
    Tag { name: String, tag: String, problem: String },
    #[error("mqtt_gateway name {0:?} is used twice")]
    Duplicate(String),
}

/// A checked tag: its key and what it becomes.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The configuration.
    pub cfg: TagConfig,
    /// Key of its last timestamp in the cursor.
    pub key: String,
}

/// A checked gateway: its configuration, the password its file held, its tags.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The configuration.
    pub cfg: MqttGatewayConfig,
    /// The broker password, read from `password_file` at start-up (never logged).
    pub password: Option<String>,
    /// The tags.
    pub mappings: Vec<Mapping>,
}

impl MqttGatewayConfig {
    /// Checks the table against the catalog; reads the password file.
    pub fn check(&self, validator: &Validator) -> Result<Checked, MqttGatewayConfigError> {
        let bad = |problem: String| MqttGatewayConfigError::Gateway {
            name: self.name.clone(),
            problem,
        };
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad("name: use 1 to 64 letters, digits, '-' or '_'".into()));
        }
        if self.host.is_empty() || self.keep_alive_secs == 0 {
            return Err(bad("host must be set and keep_alive_secs above zero".into()));
        }
        if self.tags.is_empty() {
            return Err(bad("has no tags".into()));
        }
        // The error kind only: the value may be a password given where a path belongs.
        let password = match &self.password_file {
            None => None,
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| bad(format!("password_file cannot be read ({})", e.kind())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
        };
        Ok(Checked {
            cfg: self.clone(),
            password,
            mappings: mappings(self, validator)?,
        })
    }

    /// The topic filters to subscribe to.
    pub fn filters(&self) -> Vec<String> {
        if !self.topics.is_empty() {
            return self.topics.clone();
        }
        match self.kind {
            GatewayKind::Neuron => vec!["/neuron/#".into()],
            GatewayKind::Sparkplug => {
                let groups: BTreeSet<&str> = self.tags.iter().map(|t| t.group.as_str()).collect();
                groups
                    .into_iter()
                    .map(|g| format!("{}/{g}/#", super::sparkplug::NAMESPACE))
                    .collect()
            }
        }
    }
}

/// Checks every tag against the catalog.
fn mappings(cfg: &MqttGatewayConfig, validator: &Validator) -> Result<Vec<Mapping>, MqttGatewayConfigError> {
    let mut seen = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut out = Vec::with_capacity(cfg.tags.len());
    for t in &cfg.tags {
        let bad = |problem: String| MqttGatewayConfigError::Tag {
            name: cfg.name.clone(),
            tag: t.tag.clone(),
            problem,
        };
        if t.point.is_empty() || t.point.chars().count() > 64 || t.point.chars().any(char::is_control) {
            return Err(bad("point ids are 1 to 64 printable characters".into()));
        }
        if t.device.is_some() && cfg.kind == GatewayKind::Neuron {
            return Err(bad(
                "device is a Sparkplug B id; Neuron tags have node, group and tag".into()
            ));
        }
        crate::sources::admit::series(&validator.catalog, &t.indicator, &t.unit, "tags give").map_err(bad)?;
        if !t.scale.is_finite() || t.scale == 0.0 {
            return Err(bad(format!("scale {} must be finite and non-zero", t.scale)));
        }
        let source = (t.node.clone(), t.group.clone(), t.device.clone(), t.tag.clone());
        if !seen.insert(source) {
            return Err(bad("this tag is mapped twice".into()));
        }
        let key = format!("{}/{}/{}", t.enterprise, t.indicator, t.point);
        if !keys.insert(key.clone()) {
            return Err(bad(format!(
                "{} at point {:?} is already another tag's",
                t.indicator, t.point
            )));
        }
        out.push(Mapping { cfg: t.clone(), key });
    }
    Ok(out)
}

/// Checks every table, and that names are unique.
pub fn check_all(
    gateways: &[MqttGatewayConfig],
    validator: &Validator,
) -> Result<Vec<Checked>, MqttGatewayConfigError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(gateways.len());
    for g in gateways {
        if !names.insert(g.name.as_str()) {
            return Err(MqttGatewayConfigError::Duplicate(g.name.clone()));
        }
        out.push(g.check(validator)?);
    }
    Ok(out)
}

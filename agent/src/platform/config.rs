//! `[[energy_platform]]`: a provincial (or the national) key-energy-user
//! online-monitoring platform as an upstream (重点用能单位能耗在线监测, GB/T
//! 38692-2020; `../shared/reference/energy-monitoring.md`).
//!
//! The public record names the upload's fields but each province publishes
//! its own interface, so everything that varies is a setting: the URL, how
//! the token is sent, the field names, whether records go as a bare array or
//! under a key, the success text, and which indicator (at which point) is
//! which `dataCode`. What was assumed is written in `docs/sources.md`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use zonesync_proto::Catalog;

/// Why an `[[energy_platform]]` table was refused.
#[derive(Debug, thiserror::Error)]
#[error("energy_platform {name:?}: {problem}")]
pub struct PlatformConfigError {
    /// The table's name.
    pub name: String,
    /// What is wrong.
    pub problem: String,
}

/// One platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// Its name: in status, logs and metrics, and the key of its
    /// acknowledged cursor in the outbox (shared with the MQTT upstreams'
    /// names, so it must differ from them).
    pub name: String,
    /// Where uploads are POSTed; `https://` only (the rules ask for HTTPS).
    pub url: String,
    /// A PEM file of CAs trusted besides the public roots (a province's own CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A file holding the access token (read at start; never in the config itself).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The header the token goes in.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// Written before the token in that header.
    #[serde(default = "default_token_prefix")]
    pub token_prefix: String,
    /// The token, read from `token_file` by [`PlatformConfig::read_token`].
    #[serde(skip)]
    pub token: Option<String>,
    /// How long one upload may take before it counts as timed out, seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// First wait after a failed upload, ms; doubles per failure.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    /// Longest wait between attempts, ms.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// An answer counts as success only if it is a 2xx whose body contains
    /// this text (the platforms answer `RECEIVE SUCCESS`).
    #[serde(default = "default_success")]
    pub success: String,
    /// Records go as a bare JSON array (none), or as an object with the
    /// array under this key.
    #[serde(default)]
    pub records_key: Option<String>,
    /// The upload's field names, where a province's interface differs.
    #[serde(default)]
    pub fields: FieldNames,
    /// `inputType` when a mapping gives none: 1 MIS, 2 production
    /// monitoring, 3 DCS, 4 field meter, 5 manual.
    #[serde(default = "default_input_type")]
    pub input_type: u8,
    /// `scope` when a mapping gives none: 1 plant, 2 process, 3 process unit, 4 key device.
    #[serde(default = "default_scope")]
    pub scope: u8,
    /// Which reading is which `dataCode`. Readings no mapping names are not
    /// uploaded to this platform; they are counted (`items_not_mapped`).
    #[serde(default)]
    pub map: Vec<DataCodeMap>,
}

/// One reading series to upload, and as what.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCodeMap {
    /// Catalog indicator, e.g. `electricity`.
    pub indicator: String,
    /// Only this measuring point (meter id); none: every point of the
    /// indicator without a mapping of its own.
    #[serde(default)]
    pub point: Option<String>,
    /// The platform's data code, e.g. `00-00-0000023400-80`.
    pub data_code: String,
    /// The unit the platform wants (one of the indicator's catalog units);
    /// none: the value as read.
    #[serde(default)]
    pub unit: Option<String>,
    /// `deviceId` sent; none: the reading's point.
    #[serde(default)]
    pub device_id: Option<String>,
    /// `inputType` for this series.
    #[serde(default)]
    pub input_type: Option<u8>,
    /// `scope` for this series.
    #[serde(default)]
    pub scope: Option<u8>,
}

/// Field names of one upload record; an empty name leaves the field out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FieldNames {
    /// The unit's unified social credit code.
    pub enterprise_code: String,
    /// The meter or device.
    pub device_id: String,
    /// The data code.
    pub data_code: String,
    /// The value.
    pub data_value: String,
    /// Where the value comes from.
    pub input_type: String,
    /// 0 real-time, 1 day, 2 month, 3 year.
    pub stat_type: String,
    /// When the value applies, `yyyy-MM-dd HH:mm:ss` China time.
    pub stat_date: String,
    /// When it was uploaded, the same format.
    pub upload_date: String,
    /// 1 plant, 2 process, 3 process unit, 4 key device.
    pub scope: String,
    /// 1: a valid value.
    pub valid: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        Self {
            enterprise_code: "enterpriseCode".into(),
            device_id: "deviceId".into(),
            data_code: "dataCode".into(),
            data_value: "dataValue".into(),
            input_type: "inputType".into(),
            stat_type: "statType".into(),
            stat_date: "statDate".into(),
            upload_date: "uploadDate".into(),
            scope: "scope".into(),
            valid: "valid".into(),
        }
    }
}

impl FieldNames {
    /// Every name in record order.
    pub(super) fn all(&self) -> [&str; 10] {
        [
            &self.enterprise_code,
            &self.device_id,
            &self.data_code,
            &self.data_value,
            &self.input_type,
            &self.stat_type,
            &self.stat_date,
            &self.upload_date,
            &self.scope,
            &self.valid,
        ]
    }
}

fn default_token_header() -> String {
    "Authorization".into()
}
fn default_token_prefix() -> String {
    "Bearer ".into()
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_retry_min_ms() -> u64 {
    1_000
}
fn default_retry_max_ms() -> u64 {
    300_000
}
fn default_success() -> String {
    "RECEIVE SUCCESS".into()
}
fn default_input_type() -> u8 {
    4
}
fn default_scope() -> u8 {
    1
}

impl PlatformConfig {
    fn err(&self, problem: impl Into<String>) -> PlatformConfigError {
        PlatformConfigError {
            name: self.name.clone(),
            problem: problem.into(),
        }
    }

    /// Reads `token_file` once, at load, so a running agent does no file I/O
    /// per upload and a missing token is an error at start-up.
    pub fn read_token(&mut self) -> Result<(), PlatformConfigError> {
        let Some(path) = &self.token_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| self.err(format!("token_file {} cannot be read: {e}", path.display())))?;
        let token = text.trim();
        if token.is_empty() || token.chars().any(char::is_control) {
            return Err(self.err(format!(
                "token_file {} is empty or holds control characters",
                path.display()
            )));
        }
        self.token = Some(token.to_owned());
        Ok(())
    }

    /// Everything that can be judged without the network: the URL, the
    /// field names, and every mapping against the catalog (indicator known,
    /// unit one of its units, no series mapped twice).
    pub fn validate(&self, catalog: &Catalog) -> Result<(), PlatformConfigError> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| self.err(format!("url {:?}: {e}", self.url)))?;
        if url.scheme() != "https" {
            return Err(self.err(format!(
                "url {:?}: uploads go over https only (GB/T 38692 asks for HTTPS)",
                self.url
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(self.err(format!("url {:?} names no host", self.url)));
        }
        if self.success.trim().is_empty() {
            return Err(self.err("success must not be empty: every answer would count as success"));
        }
        if self.timeout_secs == 0 || self.retry_min_ms == 0 || self.retry_max_ms < self.retry_min_ms {
            return Err(self.err("timeout_secs and retry_min_ms must be above 0, retry_max_ms at least retry_min_ms"));
        }
        let names: Vec<&str> = self.fields.all().into_iter().filter(|n| !n.is_empty()).collect();
        if names.iter().collect::<BTreeSet<_>>().len() != names.len() {
            return Err(self.err("two fields have the same name"));
        }
        for required in [&self.fields.data_code, &self.fields.data_value, &self.fields.stat_date] {
            if required.is_empty() {
                return Err(self.err("data_code, data_value and stat_date cannot be left out"));
            }
        }
        if self.map.is_empty() {
            return Err(self.err("no [[energy_platform.map]]: nothing would be uploaded"));
        }
        let mut seen = BTreeMap::new();
        for m in &self.map {
            let Some(ind) = catalog.get(&m.indicator) else {
                return Err(self.err(format!("map: indicator {:?} is not in the catalog", m.indicator)));
            };
            if let Some(u) = &m.unit {
                if ind.factor(u).is_none() {
                    return Err(self.err(format!(
                        "map: unit {u:?} is not one of {:?}'s units ({})",
                        m.indicator,
                        ind.units.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            if m.data_code.trim().is_empty() {
                return Err(self.err(format!("map: {:?} has an empty data_code", m.indicator)));
            }
            if seen.insert((m.indicator.clone(), m.point.clone()), ()).is_some() {
                return Err(self.err(format!("map: {:?} at point {:?} is mapped twice", m.indicator, m.point)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commented_example_is_valid_once_uncommented() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let mut out = Vec::new();
        let mut inside = false;
        for line in text.lines() {
            inside = (inside || line == "# [[energy_platform]]") && !line.is_empty();
            if let Some(l) = line.strip_prefix("# ").filter(|_| inside) {
                if !l.starts_with("token_file") && !l.starts_with("ca_file") && !l.starts_with("[[energy_platform]]") {
                    out.push(l.replace("[[energy_platform.map]]", "[[map]]"));
                }
            }
        }
        assert!(out.len() > 10, "the example is in deploy/examples/agent.toml");
        let c: PlatformConfig = toml::from_str(&out.join("\n")).unwrap();
        c.validate(&Catalog::builtin().unwrap()).unwrap();
        assert_eq!((c.map.len(), c.records_key.as_deref()), (2, Some("data")));
    }
}

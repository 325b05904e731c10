//! The enterprises' profile file: declared attributes (above-scale, industry,
//! maturity level, scenarios, R&D ...) and figures they report by period
//! (value added, revenue, tax ...). Re-read when it changes; only what changed
//! since the last durable send is queued, so an unchanged file costs nothing.
//!
//! ```toml
//! [[enterprise]]
//! id = "91419001MA0000001X"
//! name = "示例钢铁有限公司"          # for people; not sent
//! [enterprise.declare]
//! above_scale = true
//! dt_maturity = 3
//! scenarios = [{ code = "能源智能管控", level = "advanced" }]
//! [[enterprise.figures]]
//! indicator = "value_added"
//! period = "2026-10"
//! value = 1520.0
//! unit = "万元"
//! ```

use crate::outbox::{Item, Outbox, OutboxError};
use crate::shutdown::Shutdown;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use zonesync_proto::{Declaration, EnterpriseId, Period, Reading, Validator};

/// Name under which the profile source stores what it last sent.
pub const SOURCE: &str = "profile";

/// Profile source settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// The TOML file.
    pub path: PathBuf,
    /// How often to look for changes, seconds.
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
}

fn default_poll() -> u64 {
    10
}

/// The file's shape.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// Enterprises.
    #[serde(default)]
    pub enterprise: Vec<EnterpriseProfile>,
}

/// One enterprise's profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseProfile {
    /// Credit code.
    pub id: EnterpriseId,
    /// Name, for people.
    #[serde(default)]
    pub name: Option<String>,
    /// Date the enterprise was established (`"2015-06-01"`, China time); not
    /// sent: the clock check refuses readings stamped before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established: Option<chrono::NaiveDate>,
    /// Declared attributes by catalog code.
    #[serde(default)]
    pub declare: BTreeMap<String, serde_json::Value>,
    /// Reported figures by period.
    #[serde(default)]
    pub figures: Vec<Figure>,
}

/// A reported figure for a period.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// Catalog code.
    pub indicator: String,
    /// Period, e.g. `2026-10`.
    pub period: Period,
    /// Value in `unit`.
    pub value: f64,
    /// Accepted unit.
    pub unit: String,
    /// Measuring point, if any.
    #[serde(default)]
    pub point: String,
}

/// Reads the profile file: TOML, or a spreadsheet (`.xlsx`, `.csv`) of
/// declarations ([`super::profile_sheet`]). Besides the file, the problems of
/// what was left out of a spreadsheet (a TOML file is taken whole or not at all).
/// Without a validator, a spreadsheet's cells are checked against the built-in catalog.
pub fn read_file(path: &Path, validator: Option<&Validator>) -> Result<(ProfileFile, Vec<String>), String> {
    if !is_sheet(path) {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        return toml::from_str::<ProfileFile>(&text)
            .map(|f| (f, Vec::new()))
            .map_err(|e| e.to_string());
    }
    #[cfg(feature = "csv")]
    {
        let builtin;
        let validator = match validator {
            Some(v) => v,
            None => {
                let catalog = zonesync_proto::Catalog::builtin().map_err(|e| e.to_string())?;
                builtin = Validator::new(catalog, zonesync_proto::Limits::default());
                &builtin
            }
        };
        let sheet = zonesync_runtime::sheet::read(path).map_err(|e| e.to_string())?;
        let read = super::profile_sheet::read(&sheet, validator);
        Ok((read.file, read.problems))
    }
    #[cfg(not(feature = "csv"))]
    {
        let _ = validator;
        Err("this agent was built without spreadsheet support (feature csv): use a TOML profile".into())
    }
}

/// Whether the profile is a spreadsheet, by its extension.
fn is_sheet(path: &Path) -> bool {
    path.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("csv") || x.eq_ignore_ascii_case("xlsx"))
}

/// What the file says now, as keyed items, checked against the catalog.
/// Invalid entries are logged and left out (and so re-tried once fixed).
pub fn items(file: &ProfileFile, validator: &Validator) -> BTreeMap<String, (EnterpriseId, Item)> {
    let mut out = BTreeMap::new();
    let now = Utc::now();
    for ent in &file.enterprise {
        for (code, value) in &ent.declare {
            let d = Declaration {
                indicator: code.clone(),
                value: value.clone(),
            };
            let as_json = serde_json::to_value(&d).unwrap_or_default();
            match validator.declaration(&as_json) {
                Ok(_) => {
                    out.insert(
                        format!("d|{}|{code}|{value}", ent.id),
                        (ent.id.clone(), Item::Declaration(d)),
                    );
                }
                Err(e) => tracing::warn!(enterprise = %ent.id, indicator = %code, "profile declaration skipped: {e}"),
            }
        }
        for f in &ent.figures {
            let r = Reading {
                indicator: f.indicator.clone(),
                point: f.point.clone(),
                value: f.value,
                unit: f.unit.clone(),
                ts: None,
                period: Some(f.period),
            };
            let as_json = serde_json::to_value(&r).unwrap_or_default();
            match validator.reading(&as_json, now) {
                Ok(_) => {
                    out.insert(
                        format!(
                            "f|{}|{}|{}|{}|{}{}",
                            ent.id, f.indicator, f.point, f.period, f.value, f.unit
                        ),
                        (ent.id.clone(), Item::Reading(r)),
                    );
                }
                Err(e) => tracing::warn!(enterprise = %ent.id, indicator = %f.indicator, "profile figure skipped: {e}"),
            }
        }
    }
    out
}

impl ProfileConfig {
    /// Watches the file until shutdown.
    pub async fn run(
        self,
        outbox: Arc<Outbox>,
        validator: Validator,
        mut shutdown: Shutdown,
    ) -> Result<(), OutboxError> {
        let mut sent: Vec<String> = outbox
            .cursor(SOURCE)?
            .and_then(|c| serde_json::from_slice(&c).ok())
            .unwrap_or_default();
        let mut last_mtime: Option<SystemTime> = None;
        loop {
            let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
            if mtime.is_some() && mtime != last_mtime {
                match read_file(&self.path, Some(&validator)) {
                    Ok((file, problems)) => {
                        for p in &problems {
                            tracing::warn!(path = %self.path.display(), "profile sheet: {p}");
                        }
                        let now_items = items(&file, &validator);
                        let new: Vec<(EnterpriseId, Item)> = now_items
                            .iter()
                            .filter(|(k, _)| sent.binary_search(k).is_err())
                            .map(|(_, v)| v.clone())
                            .collect();
                        let keys: Vec<String> = now_items.into_keys().collect();
                        if !new.is_empty() || keys != sent {
                            tracing::info!(changed = new.len(), "profile file read");
                            let c = serde_json::to_vec(&keys).unwrap_or_default();
                            outbox.append(new, Some((SOURCE, &c)))?;
                            sent = keys;
                        }
                        last_mtime = mtime;
                    }
                    Err(e) => tracing::warn!(path = %self.path.display(), "profile file not read: {e}"),
                }
            } else if mtime.is_none() {
                tracing::warn!(path = %self.path.display(), "profile file missing");
            }
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_secs(self.poll_secs.max(1))) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonesync_proto::{Catalog, Limits};

    #[test]
    fn only_valid_entries_become_items() {
        let f: ProfileFile = toml::from_str(
            r#"
[[enterprise]]
id = "91350100M000100Y43"
[enterprise.declare]
dt_maturity = 3
above_scale = true
smart_retrofit = "yes"
[[enterprise.figures]]
indicator = "value_added"
period = "2026-10"
value = 100.0
unit = "万元"
[[enterprise.figures]]
indicator = "value_added"
period = "2026-10"
value = 100.0
unit = "dollars"
"#,
        )
        .unwrap();
        let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
        let items = items(&f, &v);
        assert_eq!(items.len(), 3, "{:?}", items.keys());
    }
}

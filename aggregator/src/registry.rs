//! The zone registry: which zones this aggregator serves, which enterprises
//! belong to each (the denominator of every coverage rate), and which agents
//! may report for which enterprise.
//!
//! The registry, not the enterprises' own declarations, decides who is in
//! scope: an above-scale enterprise that never reports must still count
//! against the zone's coverage, or rates would look better than the data
//! supports. The zone office maintains it from the statistics bureau's list.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use zonesync_proto::industry::{normalise_code, normalise_prefix, IndustryCodeError};
use zonesync_proto::{AgentId, EnterpriseId, IdError, ZoneId};

/// Why a registry was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reading registry {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("registry {path} is not valid: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("registry lists zone {0} twice")]
    DuplicateZone(ZoneId),
    #[error("registry lists enterprise {enterprise} twice in zone {zone}")]
    DuplicateEnterprise { zone: ZoneId, enterprise: EnterpriseId },
    #[error("registry id: {0}")]
    Id(#[from] IdError),
    #[error("registry: enterprise {enterprise} in zone {zone}: {source}")]
    Industry {
        zone: ZoneId,
        enterprise: EnterpriseId,
        source: IndustryCodeError,
    },
    #[error("registry: zone {zone}'s leading industries: {source}")]
    LeadingIndustry { zone: ZoneId, source: IndustryCodeError },
    #[error("registry {path}: {} rows refused:\n{}", rows.len(), rows.join("\n"))]
    Rows { path: String, rows: Vec<String> },
}

/// A zone and its enterprises.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Zone id used in topics.
    pub id: ZoneId,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    #[serde(default)]
    pub name_en: String,
    /// City (for roll-ups).
    #[serde(default)]
    pub city: String,
    /// Province (for roll-ups).
    #[serde(default)]
    pub province: String,
    /// Goal preset sets that apply (see goals.toml); empty means all.
    #[serde(default)]
    pub goal_sets: Vec<String>,
    /// The zone's leading industries (主导产业) as GB/T 4754 code prefixes, e.g. `["C31", "C32"]`.
    #[serde(default)]
    pub leading_industries: Vec<String>,
    /// Enterprises in the zone.
    #[serde(default)]
    pub enterprise: Vec<Enterprise>,
    /// A spreadsheet (`.xlsx`, or `.csv` in UTF-8 or GBK) with more of the
    /// zone's enterprises, one per row ([`crate::registry_sheet`]); relative
    /// to the registry file. Read at load, added to `enterprise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprises_file: Option<std::path::PathBuf>,
}

/// An enterprise as the zone office knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enterprise {
    /// Credit code.
    pub id: EnterpriseId,
    /// Registered name.
    #[serde(default)]
    pub name: String,
    /// On the statistics bureau's above-scale list (规上).
    #[serde(default)]
    pub above_scale: bool,
    /// An industrial enterprise (as opposed to services).
    #[serde(default = "yes")]
    pub industrial: bool,
    /// Industry code (GB/T 4754) as the zone office records it, `C3110` or
    /// `3110` (kept as `C3110`); the declared one is used when absent.
    #[serde(default)]
    pub industry: Option<String>,
    /// In one of the zone's leading industries (主导产业), as the zone office
    /// decides it. Set, it wins over the zone's code prefixes, which only
    /// stand in (a proxy) for an enterprise left unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leading_industry: Option<bool>,
    /// Agents allowed to report for it; empty means any agent of the zone.
    #[serde(default)]
    pub agents: Vec<AgentId>,
}

fn yes() -> bool {
    true
}

impl Enterprise {
    /// In scope of the plans' coverage goals: above-scale and industrial.
    pub fn in_scope(&self) -> bool {
        self.above_scale && self.industrial
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    zone: Vec<Zone>,
}

/// The registry, indexed.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    zones: BTreeMap<ZoneId, Zone>,
    index: BTreeMap<(ZoneId, EnterpriseId), usize>,
}

/// Why a batch's sender may not report for its enterprise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("zone {0} is not served by this aggregator")]
    UnknownZone(ZoneId),
    #[error("enterprise {enterprise} is not registered in zone {zone}")]
    UnknownEnterprise { zone: ZoneId, enterprise: EnterpriseId },
    #[error("agent {agent} is not bound to enterprise {enterprise}")]
    NotBound { agent: AgentId, enterprise: EnterpriseId },
    #[error("agent {agent} is bound to no enterprise of zone {zone}: the registry lists it for none, and its presence names none it may report for")]
    Unbound { zone: ZoneId, agent: AgentId },
}

impl Refusal {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownZone(_) => "unknown_zone",
            Refusal::UnknownEnterprise { .. } => "unknown_enterprise",
            Refusal::NotBound { .. } => "agent_not_bound",
            Refusal::Unbound { .. } => "agent_unbound",
        }
    }
}

impl Registry {
    /// Parses registry text; a zone's `enterprises_file` is read relative to `path`.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, RegistryError> {
        let mut file: RegistryFile = toml::from_str(text).map_err(|source| RegistryError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let base = Path::new(path).parent().unwrap_or(Path::new("."));
        for z in &mut file.zone {
            let Some(sheet) = &z.enterprises_file else { continue };
            let sheet_path = base.join(sheet);
            let shown = sheet_path.display().to_string();
            let rows = |rows: Vec<String>| RegistryError::Rows {
                path: shown.clone(),
                rows,
            };
            let read = zonesync_runtime::sheet::read(&sheet_path).map_err(|e| rows(vec![e.to_string()]))?;
            z.enterprise
                .extend(crate::registry_sheet::enterprises(&read).map_err(rows)?);
        }
        Self::from_zones(file.zone)
    }

    /// Reads a registry file.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Builds a registry from zones. Industry codes and prefixes are
    /// normalised here, the one door every registry comes through, so that
    /// `3110` and `C3110` meet the same limits and filters.
    pub fn from_zones(zones: Vec<Zone>) -> Result<Self, RegistryError> {
        let mut r = Registry::default();
        for mut z in zones {
            for p in &mut z.leading_industries {
                *p = normalise_prefix(p).map_err(|source| RegistryError::LeadingIndustry {
                    zone: z.id.clone(),
                    source,
                })?;
            }
            for e in &mut z.enterprise {
                if let Some(code) = &e.industry {
                    e.industry = Some(normalise_code(code).map_err(|source| RegistryError::Industry {
                        zone: z.id.clone(),
                        enterprise: e.id.clone(),
                        source,
                    })?);
                }
            }
            for (i, e) in z.enterprise.iter().enumerate() {
                if r.index.insert((z.id.clone(), e.id.clone()), i).is_some() {
                    return Err(RegistryError::DuplicateEnterprise {
                        zone: z.id.clone(),
                        enterprise: e.id.clone(),
                    });
                }
            }
            let id = z.id.clone();
            if r.zones.insert(id.clone(), z).is_some() {
                return Err(RegistryError::DuplicateZone(id));
            }
        }
        Ok(r)
    }

    /// Serialises the registry back to TOML (the demo writes its own).
    pub fn to_toml(&self) -> String {
        let file = RegistryFile {
            zone: self.zones.values().cloned().collect(),
        };
        toml::to_string_pretty(&file).unwrap_or_default()
    }

    /// Zones, ordered by id.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.values()
    }

    /// One zone.
    pub fn zone(&self, id: &ZoneId) -> Option<&Zone> {
        self.zones.get(id)
    }

    /// One enterprise of a zone.
    pub fn enterprise(&self, zone: &ZoneId, id: &EnterpriseId) -> Option<&Enterprise> {
        let i = *self.index.get(&(zone.clone(), id.clone()))?;
        self.zones.get(zone)?.enterprise.get(i)
    }

    /// Whether `agent` may report for `enterprise` in `zone`.
    pub fn admit(&self, zone: &ZoneId, agent: &AgentId, enterprise: &EnterpriseId) -> Result<(), Refusal> {
        if !self.zones.contains_key(zone) {
            return Err(Refusal::UnknownZone(zone.clone()));
        }
        let e = self
            .enterprise(zone, enterprise)
            .ok_or_else(|| Refusal::UnknownEnterprise {
                zone: zone.clone(),
                enterprise: enterprise.clone(),
            })?;
        if !e.agents.is_empty() && !e.agents.contains(agent) {
            return Err(Refusal::NotBound {
                agent: agent.clone(),
                enterprise: enterprise.clone(),
            });
        }
        Ok(())
    }

    /// Whether a presence from `agent`, naming `enterprises`, may make it an
    /// agent of `zone`: the registry lists it for one of the zone's
    /// enterprises, or it names one it may report for (an enterprise whose
    /// list is empty admits any agent of the zone). A presence costs its
    /// sender nothing, so without this anyone able to write a state topic
    /// could make agents in a zone by the thousand — each in the API, in
    /// `/metrics` and, with a made-up drop count, in the quality report.
    pub fn admit_presence(&self, zone: &ZoneId, agent: &AgentId, enterprises: &[EnterpriseId]) -> Result<(), Refusal> {
        let z = self.zones.get(zone).ok_or_else(|| Refusal::UnknownZone(zone.clone()))?;
        let listed = z.enterprise.iter().any(|e| e.agents.contains(agent));
        if listed || enterprises.iter().any(|e| self.admit(zone, agent, e).is_ok()) {
            return Ok(());
        }
        Err(Refusal::Unbound {
            zone: zone.clone(),
            agent: agent.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &str = r#"
[[zone]]
id = "jiyuan-hitech"
name_zh = "济源高新技术产业开发区"
[[zone.enterprise]]
id = "91350100M000100Y43"
above_scale = true
agents = ["gw-1"]
"#;

    #[test]
    fn admits_only_registered_and_bound_senders() {
        let r = Registry::from_toml(REG, "test").unwrap();
        let z = ZoneId::parse("jiyuan-hitech").unwrap();
        let e = EnterpriseId::parse("91350100M000100Y43").unwrap();
        let other = EnterpriseId::with_check_char("91419001MA0000001").unwrap();
        let gw1 = AgentId::parse("gw-1").unwrap();
        let gw2 = AgentId::parse("gw-2").unwrap();
        assert!(r.admit(&z, &gw1, &e).is_ok());
        assert_eq!(r.admit(&z, &gw2, &e).unwrap_err().label(), "agent_not_bound");
        assert_eq!(r.admit(&z, &gw1, &other).unwrap_err().label(), "unknown_enterprise");
        assert_eq!(
            r.admit(&ZoneId::parse("x").unwrap(), &gw1, &e).unwrap_err().label(),
            "unknown_zone"
        );
        assert!(r.enterprise(&z, &e).unwrap().in_scope());
    }

    #[test]
    fn industry_codes_are_kept_in_one_form_and_impossible_ones_refused() {
        let other = EnterpriseId::with_check_char("91419001MA0000001").unwrap();
        let text = format!(
            "{REG}industry = \"3110\"\nleading_industry = false\n\
             [[zone.enterprise]]\nid = \"{other}\"\nindustry = \"c3210\"\n"
        )
        .replace(
            "name_zh = \"济源高新技术产业开发区\"",
            "name_zh = \"济源\"\nleading_industries = [\"31\", \"C32\"]",
        );
        let r = Registry::from_toml(&text, "t").unwrap();
        let z = r.zones().next().unwrap();
        assert_eq!(z.leading_industries, ["C31", "C32"]);
        let codes: Vec<_> = z.enterprise.iter().map(|e| e.industry.as_deref()).collect();
        assert_eq!(codes, [Some("C3110"), Some("C3210")]);
        assert_eq!(z.enterprise[0].leading_industry, Some(false));
        assert_eq!(z.enterprise[1].leading_industry, None);
        let bad = text.replace("\"c3210\"", "\"C0610\"");
        let err = Registry::from_toml(&bad, "t").unwrap_err().to_string();
        assert!(err.contains("major group 06 is in division B"), "{err}");
    }

    #[test]
    fn a_presence_is_admitted_only_from_an_agent_the_registry_binds() {
        let open = format!("{REG}[[zone.enterprise]]\nid = \"91419001MA0000001N\"\n");
        let r = Registry::from_toml(&open, "test").unwrap();
        let z = ZoneId::parse("jiyuan-hitech").unwrap();
        let bound = EnterpriseId::parse("91350100M000100Y43").unwrap();
        let any = EnterpriseId::parse("91419001MA0000001N").unwrap();
        let unknown = EnterpriseId::with_check_char("91419001MA0000009").unwrap();
        let gw1 = AgentId::parse("gw-1").unwrap();
        let stranger = AgentId::parse("gw-9").unwrap();
        // Listed on an enterprise: admitted whatever it names.
        assert!(r.admit_presence(&z, &gw1, &[]).is_ok());
        // Not listed: only by naming an enterprise open to any agent.
        assert!(r.admit_presence(&z, &stranger, std::slice::from_ref(&any)).is_ok());
        for names in [vec![], vec![bound.clone()], vec![unknown.clone()]] {
            let e = r.admit_presence(&z, &stranger, &names).unwrap_err();
            assert_eq!(e.label(), "agent_unbound", "{names:?}");
            assert!(e.to_string().contains("gw-9"), "{e}");
        }
        let elsewhere = ZoneId::parse("x").unwrap();
        assert_eq!(
            r.admit_presence(&elsewhere, &gw1, &[]).unwrap_err().label(),
            "unknown_zone"
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let twice = format!("{REG}\n[[zone.enterprise]]\nid = \"91350100M000100Y43\"\n");
        assert!(matches!(
            Registry::from_toml(&twice, "t"),
            Err(RegistryError::DuplicateEnterprise { .. })
        ));
    }
}

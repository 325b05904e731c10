//! The indicator catalog: what may be reported, in which units, and how energy
//! carriers convert to tonnes of standard coal (tce).
//!
//! The catalog is data (`proto/catalog.toml`, compiled in) so that a zone can
//! ship its own coefficients (GB/T 2589 prefers measured calorific values)
//! without a new build, and so every coefficient sits beside its source.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The catalog compiled into every binary.
pub const BUILTIN_CATALOG: &str = include_str!("../catalog.toml");

/// What kind of figure an indicator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndicatorKind {
    /// A cumulative meter register; period readings are amounts used in the period.
    Counter,
    /// An amount over a reporting period (monthly value added, tax ...).
    Amount,
    /// An instantaneous value.
    Gauge,
    /// An enterprise's declared attribute.
    Declaration,
}

/// The JSON type a declaration's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// A finite number (readings).
    #[default]
    Number,
    /// true / false.
    Bool,
    /// A whole number within `min..=max`.
    Integer,
    /// Free text up to 64 characters.
    Text,
    /// A GB/T 4754 industry code, `C3110` or `3110`; kept in the lettered form
    /// ([`crate::industry`]), an impossible code refused.
    #[serde(rename = "industry_code")]
    IndustryCode,
    /// A list of `{ "code": ..., "level": "basic" | "intermediate" | "advanced" }`.
    Scenarios,
}

/// One catalog entry.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Indicator {
    /// Stable code used on the wire.
    pub code: String,
    /// Chinese name, shown first to users.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// Kind of figure.
    pub kind: IndicatorKind,
    /// Canonical unit; values are stored in it.
    #[serde(default)]
    pub unit: Option<String>,
    /// Accepted units and their factor to the canonical unit.
    #[serde(default)]
    pub units: BTreeMap<String, f64>,
    /// Tonnes of standard coal per canonical unit (energy carriers only).
    #[serde(default)]
    pub tce_per_unit: Option<f64>,
    /// Where the coefficient comes from.
    #[serde(default)]
    pub coefficient_source: Option<String>,
    /// Value type of declarations.
    #[serde(default)]
    pub value_type: ValueType,
    /// Smallest allowed integer declaration.
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest allowed integer declaration.
    #[serde(default)]
    pub max: Option<i64>,
}

impl Indicator {
    /// Whether this indicator is an energy carrier convertible to tce.
    pub fn is_energy(&self) -> bool {
        self.tce_per_unit.is_some()
    }

    /// Factor from `unit` to the canonical unit, if the unit is accepted.
    pub fn factor(&self, unit: &str) -> Option<f64> {
        self.units.get(unit).copied()
    }
}

/// Why a catalog file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog is not valid TOML: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("catalog lists indicator {0:?} twice")]
    Duplicate(String),
    #[error("catalog indicator {code:?}: {problem}")]
    Entry { code: String, problem: String },
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    indicator: Vec<Indicator>,
}

/// The indicator catalog, indexed by code.
#[derive(Debug, Clone)]
pub struct Catalog {
    by_code: BTreeMap<String, Indicator>,
}

impl Catalog {
    /// The compiled-in catalog.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::from_toml(BUILTIN_CATALOG)
    }

    /// Parses and checks a catalog file.
    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text)?;
        let mut by_code = BTreeMap::new();
        for ind in file.indicator {
            let entry_err = |problem: &str| CatalogError::Entry {
                code: ind.code.clone(),
                problem: problem.to_owned(),
            };
            if ind.kind == IndicatorKind::Declaration {
                if ind.value_type == ValueType::Number {
                    return Err(entry_err("a declaration needs a value_type other than number"));
                }
            } else {
                let unit = ind.unit.as_deref().ok_or_else(|| entry_err("needs a unit"))?;
                if ind.factor(unit) != Some(1.0) {
                    return Err(entry_err("its canonical unit must be in `units` with factor 1"));
                }
                if ind.units.values().any(|f| !f.is_finite() || *f <= 0.0) {
                    return Err(entry_err("unit factors must be positive and finite"));
                }
            }
            if let Some(c) = ind.tce_per_unit {
                if !c.is_finite() || c <= 0.0 {
                    return Err(entry_err("tce_per_unit must be positive and finite"));
                }
            }
            if by_code.contains_key(&ind.code) {
                return Err(CatalogError::Duplicate(ind.code));
            }
            by_code.insert(ind.code.clone(), ind);
        }
        Ok(Self { by_code })
    }

    /// Looks up an indicator.
    pub fn get(&self, code: &str) -> Option<&Indicator> {
        self.by_code.get(code)
    }

    /// Every indicator, ordered by code.
    pub fn iter(&self) -> impl Iterator<Item = &Indicator> {
        self.by_code.values()
    }

    /// The catalog as a catalog file that [`Catalog::from_toml`] reads back
    /// unchanged: energy carriers (with their coefficients and sources) first,
    /// then the other figures, then the declarations, so that an operator can
    /// copy it, adjust a coefficient or add a unit, and point `catalog =` at it.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        type Member = fn(&Indicator) -> bool;
        let groups: [(&str, Member); 3] = [
            (
                "energy carriers: tce_per_unit is tonnes of standard coal per canonical unit",
                |i| i.is_energy(),
            ),
            ("other figures", |i| {
                !i.is_energy() && i.kind != IndicatorKind::Declaration
            }),
            ("declarations", |i| i.kind == IndicatorKind::Declaration),
        ];
        let mut out = String::new();
        for (title, member) in groups {
            let indicator: Vec<Indicator> = self.iter().filter(|i| member(i)).cloned().collect();
            if indicator.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "# ---------------------------------------------------------------- {title}\n"
            ));
            out.push_str(&toml::to_string(&CatalogFile { indicator })?);
            out.push('\n');
        }
        Ok(out)
    }

    /// Tonnes of standard coal for `value` in the indicator's canonical unit, if it is an energy carrier.
    pub fn tce(&self, code: &str, canonical_value: f64) -> Option<f64> {
        self.get(code)?.tce_per_unit.map(|c| c * canonical_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_loads_and_has_the_reference_coefficients() {
        let c = Catalog::builtin().unwrap();
        // 1 kWh = 0.1229 kgce (equivalent value), 1 t raw coal = 0.7143 tce.
        assert!((c.tce("electricity", 10_000.0).unwrap() - 1.229).abs() < 1e-9);
        assert!((c.tce("raw_coal", 1.0).unwrap() - 0.7143).abs() < 1e-12);
        assert!((c.tce("natural_gas", 10_000.0).unwrap() - 12.143).abs() < 1e-9);
        assert_eq!(c.get("electricity").unwrap().factor("MWh"), Some(1000.0));
        assert_eq!(c.get("value_added").unwrap().factor("亿元"), Some(10000.0));
        assert!(c.get("value_added").unwrap().tce_per_unit.is_none());
    }

    #[test]
    fn the_printed_catalog_reads_back_as_the_same_catalog() {
        let c = Catalog::builtin().unwrap();
        let text = c.to_toml().unwrap();
        assert!(text.contains("tce_per_unit = 0.0001229"), "{text}");
        assert!(text.contains("coefficient_source = \"GB/T 2589-2020"), "{text}");
        let back = Catalog::from_toml(&text).unwrap();
        let json = |c: &Catalog| serde_json::to_value(c.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(json(&back), json(&c));
        assert_eq!(back.iter().count(), c.iter().count());
        // Energy carriers come first, so the coefficients are what an operator sees first.
        let at = |code: &str| text.find(&format!("code = \"{code}\"")).unwrap();
        assert!(at("raw_coal") < at("value_added") && at("value_added") < at("dt_maturity"));
    }

    #[test]
    fn bad_catalogs_are_refused_with_the_entry_named() {
        let dup = r#"
[[indicator]]
code = "x"
name_zh = "x"
name_en = "x"
kind = "gauge"
unit = "kW"
units = { "kW" = 1.0 }
[[indicator]]
code = "x"
name_zh = "x"
name_en = "x"
kind = "gauge"
unit = "kW"
units = { "kW" = 1.0 }
"#;
        assert!(matches!(Catalog::from_toml(dup), Err(CatalogError::Duplicate(c)) if c == "x"));
        let no_factor = r#"
[[indicator]]
code = "y"
name_zh = "y"
name_en = "y"
kind = "gauge"
unit = "kW"
units = { "W" = 0.001 }
"#;
        assert!(matches!(Catalog::from_toml(no_factor), Err(CatalogError::Entry { code, .. }) if code == "y"));
    }
}

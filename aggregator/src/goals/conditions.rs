//! What an enterprise must satisfy to count: coverage conditions, populations
//! and industry filters, with the thresholds behind them as settings.
//! Defaults follow shared/reference/digital-levels.md and are shown beside
//! every figure.

use crate::registry::{Enterprise, Zone};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zonesync_proto::industry::is_under;
use zonesync_proto::{DeclaredValue, ScenarioLevel};

/// Thresholds behind the conditions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoalSettings {
    /// "Digitally transformed" = GB/T 39116 maturity at least this (level 2 is 数字化改造).
    pub dt_min_maturity: i64,
    /// ... or MIIT SME digitalisation level at least this.
    pub sme_min_level: i64,
    /// "Smart retrofit": the declared flag; where it is not declared, maturity at least this (a proxy).
    pub smart_retrofit_min_maturity: i64,
    /// Energy carriers left out of intensity (self-generated renewables, per current policy).
    pub intensity_excludes: Vec<String>,
}

impl Default for GoalSettings {
    fn default() -> Self {
        Self {
            dt_min_maturity: 2,
            sme_min_level: 2,
            smart_retrofit_min_maturity: 3,
            intensity_excludes: vec!["electricity_renewable_self".into()],
        }
    }
}

/// Declared attributes of one enterprise.
pub type Declared = BTreeMap<String, DeclaredValue>;

/// A condition on an enterprise's declarations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Maturity or SME level at the threshold.
    DigitallyTransformed,
    /// At least one scenario at any level.
    ScenarioAny,
    /// At least one scenario at intermediate or advanced level.
    ScenarioIntermediate,
    /// At least one scenario at advanced level.
    ScenarioAdvanced,
    /// Smart retrofit done.
    SmartRetrofit,
    /// Has R&D activity.
    RdActivity,
    /// Has an R&D institution.
    RdInstitution,
    /// Has a provincial-or-higher R&D institution.
    RdInstitutionProvincial,
    /// Business systems on cloud.
    OnCloud,
    /// Certified high-tech enterprise.
    HighTech,
    /// Registered technology-based SME.
    TechSme,
    /// 专精特新 enterprise.
    SpecializedSme,
    /// 头雁 enterprise.
    LeadGoose,
    /// 瞪羚 enterprise.
    Gazelle,
    /// Green factory.
    GreenFactory,
    /// A-rated (any A level) logistics enterprise.
    LogisticsARated,
    /// Every member of the population (counts of enterprises).
    Always,
}

fn flag(d: &Declared, code: &str) -> Option<bool> {
    match d.get(code) {
        Some(DeclaredValue::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn level(d: &Declared, code: &str) -> Option<i64> {
    match d.get(code) {
        Some(DeclaredValue::Integer(n)) => Some(*n),
        _ => None,
    }
}

/// What a condition says of one enterprise, and on what evidence.
///
/// A declared fact always wins over a proxy: the proxy only answers when
/// the enterprise did not declare the attribute itself, so a declared "no"
/// is never turned into a "yes" by, say, a high maturity level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// From the attribute the enterprise declared.
    Declared(bool),
    /// Not declared; inferred from a proxy (another declared attribute).
    Proxy(bool),
    /// Neither says.
    Unknown,
}

impl Answer {
    /// Met, not met, or unknown, whatever the evidence.
    pub fn met(self) -> Option<bool> {
        match self {
            Answer::Declared(b) | Answer::Proxy(b) => Some(b),
            Answer::Unknown => None,
        }
    }
}

/// A declared attribute that its condition's proxy contradicts (the
/// declaration stands; this is for someone to check which is right).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contradiction {
    /// The condition, or the filter (`leading_industry`).
    pub condition: Checked,
    /// The declared attribute, as declared.
    pub attribute: &'static str,
    /// Its declared value.
    pub declared: bool,
    /// What the proxy would have said.
    pub proxy: bool,
    /// The proxy and the value it read, e.g. `dt_maturity 4 ≥ 3`.
    pub evidence: String,
}

/// What a contradiction is about: a goal condition, or a filter with a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Checked {
    /// A condition, e.g. `smart_retrofit`.
    Condition(Condition),
    /// A filter, by name: `leading_industry`.
    Filter(&'static str),
}

fn either(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
    }
}

impl Condition {
    /// Every condition.
    pub const ALL: [Condition; 17] = [
        Condition::DigitallyTransformed,
        Condition::ScenarioAny,
        Condition::ScenarioIntermediate,
        Condition::ScenarioAdvanced,
        Condition::SmartRetrofit,
        Condition::RdActivity,
        Condition::RdInstitution,
        Condition::RdInstitutionProvincial,
        Condition::OnCloud,
        Condition::HighTech,
        Condition::TechSme,
        Condition::SpecializedSme,
        Condition::LeadGoose,
        Condition::Gazelle,
        Condition::GreenFactory,
        Condition::LogisticsARated,
        Condition::Always,
    ];

    /// Whether declarations satisfy the condition; None when they do not say.
    pub fn eval(self, d: &Declared, s: &GoalSettings) -> Option<bool> {
        self.answer(d, s).met()
    }

    /// The answer with its evidence: the declared fact if there is one, else the proxy's.
    pub fn answer(self, d: &Declared, s: &GoalSettings) -> Answer {
        match (self.declared(d, s), self.proxy(d, s)) {
            (Some(b), _) => Answer::Declared(b),
            (None, Some(b)) => Answer::Proxy(b),
            (None, None) => Answer::Unknown,
        }
    }

    /// What the proxy says, for the conditions that have one: smart retrofit
    /// from the GB/T 39116 maturity level (shared/reference/digital-levels.md).
    /// `dt_maturity ≥ 2 or sme_dt_level ≥ 2` for digitally transformed is not a
    /// proxy: both are declarations of the same fact in two national frameworks,
    /// either of which an enterprise may use.
    pub fn proxy(self, d: &Declared, s: &GoalSettings) -> Option<bool> {
        match self {
            Condition::SmartRetrofit => level(d, "dt_maturity").map(|l| l >= s.smart_retrofit_min_maturity),
            _ => None,
        }
    }

    /// The declared attribute a proxy stands in for, if the condition has a proxy.
    pub fn proxied_attribute(self) -> Option<&'static str> {
        match self {
            Condition::SmartRetrofit => Some("smart_retrofit"),
            _ => None,
        }
    }

    /// Where the declaration and the proxy disagree: the declaration counts,
    /// and this says so for the quality report.
    pub fn contradiction(self, d: &Declared, s: &GoalSettings) -> Option<Contradiction> {
        let attribute = self.proxied_attribute()?;
        let (declared, proxy) = (self.declared(d, s)?, self.proxy(d, s)?);
        (declared != proxy).then(|| Contradiction {
            condition: Checked::Condition(self),
            attribute,
            declared,
            proxy,
            evidence: match self {
                Condition::SmartRetrofit => format!(
                    "dt_maturity {} {} {}",
                    level(d, "dt_maturity").unwrap_or_default(),
                    if proxy { "≥" } else { "<" },
                    s.smart_retrofit_min_maturity
                ),
                _ => String::new(),
            },
        })
    }

    /// What the enterprise declared for the condition itself, without proxies.
    fn declared(self, d: &Declared, s: &GoalSettings) -> Option<bool> {
        let scen = |min: ScenarioLevel| match d.get("scenarios") {
            Some(DeclaredValue::Scenarios(list)) => Some(list.iter().any(|x| x.level >= min)),
            _ => None,
        };
        match self {
            Condition::DigitallyTransformed => either(
                level(d, "dt_maturity").map(|l| l >= s.dt_min_maturity),
                level(d, "sme_dt_level").map(|l| l >= s.sme_min_level),
            ),
            Condition::ScenarioAny => scen(ScenarioLevel::Basic),
            Condition::ScenarioIntermediate => scen(ScenarioLevel::Intermediate),
            Condition::ScenarioAdvanced => scen(ScenarioLevel::Advanced),
            Condition::SmartRetrofit => flag(d, "smart_retrofit"),
            Condition::RdActivity => flag(d, "rd_activity"),
            Condition::RdInstitution => flag(d, "rd_institution"),
            Condition::RdInstitutionProvincial => flag(d, "rd_institution_provincial"),
            Condition::OnCloud => flag(d, "on_cloud"),
            Condition::HighTech => flag(d, "high_tech"),
            Condition::TechSme => flag(d, "tech_sme"),
            Condition::SpecializedSme => flag(d, "specialized_sme"),
            Condition::LeadGoose => flag(d, "lead_goose"),
            Condition::Gazelle => flag(d, "gazelle"),
            Condition::GreenFactory => flag(d, "green_factory"),
            Condition::LogisticsARated => level(d, "logistics_a_rating").map(|l| l >= 1),
            Condition::Always => Some(true),
        }
    }

    /// The definition in force, shown beside the figure.
    pub fn definition(self, s: &GoalSettings) -> String {
        match self {
            Condition::DigitallyTransformed => format!(
                "dt_maturity ≥ {} (GB/T 39116) or sme_dt_level ≥ {} (MIIT)",
                s.dt_min_maturity, s.sme_min_level
            ),
            Condition::ScenarioAny => "≥ 1 declared scenario at any level".into(),
            Condition::ScenarioIntermediate => "≥ 1 scenario at intermediate (中级) or advanced level".into(),
            Condition::ScenarioAdvanced => "≥ 1 scenario at advanced (高级) level".into(),
            Condition::SmartRetrofit => format!(
                "smart_retrofit declared true; where not declared, dt_maturity ≥ {} (proxy)",
                s.smart_retrofit_min_maturity
            ),
            Condition::LogisticsARated => "logistics_a_rating declared (A to 5A)".into(),
            Condition::Always => "every enterprise of the population".into(),
            other => format!("{} declared true", other.attribute()),
        }
    }

    /// The declared attributes `eval` reads: a change to any other cannot change the answer.
    pub fn declared_keys(self) -> &'static [&'static str] {
        match self {
            Condition::DigitallyTransformed => &["dt_maturity", "sme_dt_level"],
            Condition::ScenarioAny | Condition::ScenarioIntermediate | Condition::ScenarioAdvanced => &["scenarios"],
            Condition::SmartRetrofit => &["smart_retrofit", "dt_maturity"],
            Condition::LogisticsARated => &["logistics_a_rating"],
            Condition::Always => &[],
            Condition::RdActivity => &["rd_activity"],
            Condition::RdInstitution => &["rd_institution"],
            Condition::RdInstitutionProvincial => &["rd_institution_provincial"],
            Condition::OnCloud => &["on_cloud"],
            Condition::HighTech => &["high_tech"],
            Condition::TechSme => &["tech_sme"],
            Condition::SpecializedSme => &["specialized_sme"],
            Condition::LeadGoose => &["lead_goose"],
            Condition::Gazelle => &["gazelle"],
            Condition::GreenFactory => &["green_factory"],
        }
    }

    fn attribute(self) -> &'static str {
        match self {
            Condition::RdActivity => "rd_activity",
            Condition::RdInstitution => "rd_institution",
            Condition::RdInstitutionProvincial => "rd_institution_provincial",
            Condition::OnCloud => "on_cloud",
            Condition::HighTech => "high_tech",
            Condition::TechSme => "tech_sme",
            Condition::SpecializedSme => "specialized_sme",
            Condition::LeadGoose => "lead_goose",
            Condition::Gazelle => "gazelle",
            Condition::GreenFactory => "green_factory",
            _ => "",
        }
    }
}

/// Which enterprises of the registry a goal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Population {
    /// Above-scale industrial enterprises (规上工业企业), the plans' usual scope.
    #[default]
    AboveScaleIndustrial,
    /// All above-scale enterprises.
    AboveScale,
    /// Above-scale services enterprises (规上生产性服务业).
    AboveScaleServices,
    /// Large and medium enterprises (declared enterprise_size).
    LargeOrMedium,
    /// Industrial enterprises.
    Industrial,
    /// Every registered enterprise.
    All,
}

impl Population {
    /// Whether the enterprise is a member; None when its declarations do not say.
    pub fn contains(self, e: &Enterprise, d: &Declared) -> Option<bool> {
        Some(match self {
            Population::AboveScaleIndustrial => e.above_scale && e.industrial,
            Population::AboveScale => e.above_scale,
            Population::AboveScaleServices => e.above_scale && !e.industrial,
            Population::Industrial => e.industrial,
            Population::All => true,
            Population::LargeOrMedium => match d.get("enterprise_size") {
                Some(DeclaredValue::Text(t)) => matches!(t.as_str(), "large" | "medium" | "大型" | "中型"),
                _ => return None,
            },
        })
    }

    /// The declared attributes `contains` reads.
    pub fn declared_keys(self) -> &'static [&'static str] {
        match self {
            Population::LargeOrMedium => &["enterprise_size"],
            _ => &[],
        }
    }

    /// How the population is defined.
    pub fn describe(self) -> &'static str {
        match self {
            Population::AboveScaleIndustrial => "above-scale industrial enterprises in the registry",
            Population::AboveScale => "above-scale enterprises in the registry",
            Population::AboveScaleServices => "above-scale services enterprises in the registry",
            Population::LargeOrMedium => "large and medium enterprises (declared enterprise_size)",
            Population::Industrial => "industrial enterprises in the registry",
            Population::All => "all enterprises in the registry",
        }
    }
}

/// Which enterprises' amounts count in a numerator or total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Industry code under one of the zone's leading industries.
    LeadingIndustry,
    /// Declared strategic-emerging enterprise.
    StrategicEmerging,
    /// Industry code under one of these GB/T 4754 prefixes (normalised on load:
    /// `31` and `C31` are the same prefix).
    IndustryPrefixes(#[serde(deserialize_with = "zonesync_proto::industry::deserialize_prefixes")] Vec<String>),
}

impl Filter {
    /// Whether the enterprise passes; None when its industry or flag is unknown.
    pub fn passes(&self, zone: &Zone, e: &Enterprise, d: &Declared) -> Option<bool> {
        self.answer(zone, e, d).met()
    }

    /// Whether the enterprise passes, and on what evidence.
    ///
    /// Leading industry follows the rule of [`Condition::answer`]: the zone
    /// office's per-enterprise flag (`leading_industry` in the registry) is
    /// the declared fact and always wins; the zone's code prefixes are only a
    /// proxy for an enterprise it has not flagged (an enterprise under `C31`
    /// may make something else, one outside it may supply the cluster).
    /// Codes are compared whichever way they are written (`3110` is under `C31`).
    pub fn answer(&self, zone: &Zone, e: &Enterprise, d: &Declared) -> Answer {
        let industry = || {
            e.industry.clone().or_else(|| match d.get("industry_code") {
                Some(DeclaredValue::Text(t)) => Some(t.clone()),
                _ => None,
            })
        };
        let under = |ps: &[String]| industry().map(|c| ps.iter().any(|p| is_under(&c, p)));
        let declared = |b: Option<bool>| b.map_or(Answer::Unknown, Answer::Declared);
        match self {
            Filter::LeadingIndustry => match (e.leading_industry, under(&zone.leading_industries)) {
                (Some(b), _) => Answer::Declared(b),
                (None, Some(b)) => Answer::Proxy(b),
                (None, None) => Answer::Unknown,
            },
            Filter::IndustryPrefixes(ps) => declared(under(ps)),
            Filter::StrategicEmerging => declared(flag(d, "strategic_emerging")),
        }
    }

    /// Where the registry's leading-industry flag and the zone's code
    /// prefixes disagree: the flag counts, and this says so for the quality
    /// report (as [`Condition::contradiction`] does for declarations).
    pub fn contradiction(&self, zone: &Zone, e: &Enterprise, d: &Declared) -> Option<Contradiction> {
        if *self != Filter::LeadingIndustry {
            return None;
        }
        let declared = e.leading_industry?;
        let code = e.industry.clone().or_else(|| match d.get("industry_code") {
            Some(DeclaredValue::Text(t)) => Some(t.clone()),
            _ => None,
        })?;
        let proxy = zone.leading_industries.iter().any(|p| is_under(&code, p));
        (declared != proxy).then(|| Contradiction {
            condition: Checked::Filter("leading_industry"),
            attribute: "leading_industry",
            declared,
            proxy,
            evidence: format!(
                "industry {code} {} the zone's leading industries {}",
                if proxy { "under" } else { "not under" },
                zone.leading_industries.join(", ")
            ),
        })
    }

    /// The declared attributes `passes` reads.
    pub fn declared_keys(&self) -> &'static [&'static str] {
        match self {
            Filter::LeadingIndustry | Filter::IndustryPrefixes(_) => &["industry_code"],
            Filter::StrategicEmerging => &["strategic_emerging"],
        }
    }

    /// How the filter is defined.
    pub fn describe(&self) -> String {
        match self {
            Filter::LeadingIndustry => {
                "flagged leading_industry in the registry; where not flagged, industry code under the zone's leading industries (proxy)".into()
            }
            Filter::StrategicEmerging => "strategic_emerging declared true".into(),
            Filter::IndustryPrefixes(ps) => format!("industry code under {}", ps.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(pairs: &[(&str, DeclaredValue)]) -> Declared {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn a_declaration_wins_over_the_proxy_which_only_fills_in() {
        let s = GoalSettings::default();
        let c = Condition::SmartRetrofit;
        let no_but_mature = declared(&[
            ("smart_retrofit", DeclaredValue::Bool(false)),
            ("dt_maturity", DeclaredValue::Integer(4)),
        ]);
        assert_eq!(c.answer(&no_but_mature, &s), Answer::Declared(false));
        assert_eq!(c.eval(&no_but_mature, &s), Some(false));
        let mature = declared(&[("dt_maturity", DeclaredValue::Integer(3))]);
        assert_eq!(c.answer(&mature, &s), Answer::Proxy(true));
        let young = declared(&[("dt_maturity", DeclaredValue::Integer(2))]);
        assert_eq!(c.answer(&young, &s), Answer::Proxy(false));
        assert_eq!(c.answer(&Declared::new(), &s), Answer::Unknown);
        let c = c.contradiction(&no_but_mature, &s).expect("contradicted");
        assert_eq!(
            (c.declared, c.proxy, c.evidence.as_str()),
            (false, true, "dt_maturity 4 ≥ 3")
        );
    }

    #[test]
    fn the_registry_flag_for_leading_industry_wins_over_the_zone_prefixes() {
        use crate::testkit::{enterprise, zone};
        let z = zone(vec![], &["C31"]);
        let f = Filter::LeadingIndustry;
        let none = Declared::new();
        // Under C31, whichever way the code is written: a proxy "yes".
        for code in ["3110", "C3110"] {
            assert_eq!(
                f.answer(&z, &enterprise(1, true, code), &none),
                Answer::Proxy(true),
                "{code}"
            );
        }
        // Flagged by the zone office: the flag stands, either way round.
        let mut outside = enterprise(2, true, "C3110");
        outside.leading_industry = Some(false);
        assert_eq!(f.answer(&z, &outside, &none), Answer::Declared(false));
        let mut supplier = enterprise(3, true, "C2614");
        supplier.leading_industry = Some(true);
        assert_eq!(f.answer(&z, &supplier, &none), Answer::Declared(true));
        // Neither a flag nor a code.
        assert_eq!(f.answer(&z, &enterprise(4, true, ""), &none), Answer::Unknown);
        // The declared code counts where the registry has none, in either spelling.
        let declared_code = declared(&[("industry_code", DeclaredValue::Text("3120".into()))]);
        assert_eq!(
            f.answer(&z, &enterprise(5, true, ""), &declared_code),
            Answer::Proxy(true)
        );
        let p = Filter::IndustryPrefixes(vec!["C32".into()]);
        assert_eq!(p.passes(&z, &enterprise(6, true, "3216"), &none), Some(true));
    }

    #[test]
    fn a_goal_filter_s_prefixes_are_normalised_on_load_and_impossible_ones_refused() {
        #[derive(Deserialize)]
        struct Goal {
            filter: Filter,
        }
        let g: Goal = toml::from_str("filter = { industry_prefixes = [\"31\", \"C26\"] }").unwrap();
        assert_eq!(g.filter, Filter::IndustryPrefixes(vec!["C31".into(), "C26".into()]));
        let err = toml::from_str::<Goal>("filter = { industry_prefixes = [\"C06\"] }")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("major group 06 is in division B"), "{err}");
    }

    #[test]
    fn only_conditions_with_a_proxy_ever_answer_by_proxy() {
        // Every attribute a condition reads, declared with a value that could satisfy it.
        let all = declared(&[
            ("dt_maturity", DeclaredValue::Integer(5)),
            ("sme_dt_level", DeclaredValue::Integer(4)),
            ("logistics_a_rating", DeclaredValue::Integer(5)),
        ]);
        let s = GoalSettings::default();
        for c in Condition::ALL {
            let by_proxy = matches!(c.answer(&all, &s), Answer::Proxy(_));
            assert_eq!(by_proxy, c.proxied_attribute().is_some(), "{c:?}");
            if let Some(attr) = c.proxied_attribute() {
                assert!(c.declared_keys().contains(&attr), "{c:?} reads {attr}");
            }
        }
    }
}

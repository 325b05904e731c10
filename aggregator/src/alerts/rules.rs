//! Energy-intensity alert rules, pure: from a zone's registry entry and state
//! to observations (value against limit, higher is worse) per subject.

use crate::goals::{matched_change, matched_ratio, GoalSettings, MatchedRatio, Span};
use crate::registry::Zone;
use crate::state::ZoneState;
use serde::{Deserialize, Serialize};
use zonesync_proto::industry::{is_under, normalise_prefix};
use zonesync_proto::{Catalog, DeclaredValue, EnterpriseId, Period};

/// An intensity limit for enterprises whose industry code starts with `industry` (`*` for any).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntensityLimit {
    /// GB/T 4754 code prefix (`C31` or `31`, kept as `C31`; a prefix that
    /// cannot exist stops the configuration from loading), or `*`.
    #[serde(deserialize_with = "limit_industry")]
    pub industry: String,
    /// tce per 10k yuan.
    pub limit: f64,
}

/// Rule settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSettings {
    /// Absolute limits per industry; the longest matching prefix applies.
    pub intensity_limits: Vec<IntensityLimit>,
    /// A zone-wide limit on the zone's intensity.
    pub zone_intensity_limit: Option<f64>,
    /// Year-to-date intensity change against the same months last year must be at most this (−0.04 = fall ≥ 4 %).
    pub ytd_change_target: Option<f64>,
    /// Month-on-month intensity rise beyond this factor while output is flat.
    pub mom_jump_factor: Option<f64>,
    /// "Flat output": value added changes by less than this fraction month on month.
    pub flat_output_band: f64,
}

impl Default for RuleSettings {
    fn default() -> Self {
        Self {
            intensity_limits: Vec::new(),
            zone_intensity_limit: None,
            ytd_change_target: Some(-0.04),
            mom_jump_factor: Some(1.5),
            flat_output_band: 0.10,
        }
    }
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Subject {
    /// Zone.
    pub zone: String,
    /// Enterprise, or None for the zone as a whole.
    pub enterprise: Option<String>,
    /// Enterprise or zone name, for messages.
    pub name: String,
}

/// One rule's reading of one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Rule id: `intensity_limit`, `zone_intensity_limit`, `ytd_change`, `mom_jump`.
    pub rule: String,
    /// Subject.
    pub subject: Subject,
    /// The value (higher is worse).
    pub value: f64,
    /// The limit.
    pub limit: f64,
    /// Period the value is for.
    pub period: String,
    /// What the numbers mean, for people.
    pub detail: String,
}

fn intensity(
    zs: Option<&ZoneState>,
    id: &EnterpriseId,
    span: Span,
    cat: &Catalog,
    s: &GoalSettings,
) -> Option<(f64, f64)> {
    // Energy and value added over the same months (every carrier the enterprise
    // uses): a month missing its gas would otherwise read low and stay quiet.
    let es = zs.and_then(|z| z.enterprises.get(id));
    let r = matched_ratio(es, "energy_tce", "value_added", span, cat, s)?;
    (r.den > 0.0).then_some((r.num / r.den, r.den))
}

/// A limit's industry as configured: `*`, or a prefix normalised so that
/// `31` and `C31` are one limit (else one spelling of an enterprise's code
/// would silently fall to the catch-all).
fn limit_industry<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    if raw.trim() == "*" {
        return Ok("*".into());
    }
    normalise_prefix(&raw).map_err(serde::de::Error::custom)
}

/// The limit for an industry code: the longest matching prefix, whichever way
/// the code and the prefixes are written, else `*`.
fn limit_for(rules: &RuleSettings, industry: Option<&str>) -> Option<f64> {
    let length = |p: &str| normalise_prefix(p).map_or(0, |p| p.len());
    rules
        .intensity_limits
        .iter()
        .filter(|l| l.industry == "*" || industry.is_some_and(|i| is_under(i, &l.industry)))
        .max_by_key(|l| if l.industry == "*" { 0 } else { length(&l.industry) })
        .map(|l| l.limit)
}

fn previous(p: Period) -> Period {
    match p {
        Period::Month(y, 1) => Period::Month(y - 1, 12),
        Period::Month(y, m) => Period::Month(y, m - 1),
        other => other,
    }
}

/// Observations for one zone in `month` (China time).
pub fn observe(
    zone: &Zone,
    zs: Option<&ZoneState>,
    month: Period,
    cat: &Catalog,
    gs: &GoalSettings,
    rules: &RuleSettings,
) -> Vec<Observation> {
    let mut out = Vec::new();
    let (mut tce_sum, mut va_sum) = (0.0, 0.0);
    let Period::Month(year, m) = month else {
        return out;
    };
    for e in zone.enterprise.iter().filter(|e| e.in_scope()) {
        let subject = Subject {
            zone: zone.id.to_string(),
            enterprise: Some(e.id.to_string()),
            name: e.name.clone(),
        };
        let industry = e.industry.clone().or_else(|| {
            zs.and_then(|z| z.enterprises.get(&e.id))
                .and_then(|es| match es.declarations.get("industry_code") {
                    Some(DeclaredValue::Text(t)) => Some(t.clone()),
                    _ => None,
                })
        });
        let now = intensity(zs, &e.id, Span::Period(month), cat, gs);
        if let Some((i, va)) = now {
            tce_sum += i * va;
            va_sum += va;
            if let Some(limit) = limit_for(rules, industry.as_deref()) {
                out.push(Observation {
                    rule: "intensity_limit".into(),
                    subject: subject.clone(),
                    value: i,
                    limit,
                    period: month.to_string(),
                    detail: format!(
                        "{month} 单位增加值能耗 {i:.4} tce/万元, 限值 {limit} (industry {})",
                        industry.as_deref().unwrap_or("?")
                    ),
                });
            }
            if let (Some(factor), Some((before, va_before))) = (
                rules.mom_jump_factor,
                intensity(zs, &e.id, Span::Period(previous(month)), cat, gs),
            ) {
                let flat = (va / va_before - 1.0).abs() < rules.flat_output_band;
                if flat && before > 0.0 {
                    out.push(Observation {
                        rule: "mom_jump".into(),
                        subject: subject.clone(),
                        value: i / before,
                        limit: factor,
                        period: month.to_string(),
                        detail: format!("{month} 能耗强度环比 ×{:.2} (产出持平), 阈值 ×{factor}", i / before),
                    });
                }
            }
        }
        if let Some(target) = rules.ytd_change_target {
            let ytd = Span::YearToDate(year, m);
            // Both years over the months known in both (as goal PY-06 takes them).
            let es = zs.and_then(|z| z.enterprises.get(&e.id));
            let change = matched_change(es, "energy_tce", "value_added", ytd, ytd.in_year(year - 1), cat, gs);
            let ratio = |r: &MatchedRatio| (r.den > 0.0).then(|| r.num / r.den);
            if let Some((Some(a), Some(b))) = change.map(|(now, then)| (ratio(&now), ratio(&then))) {
                if b > 0.0 {
                    out.push(Observation {
                        rule: "ytd_change".into(),
                        subject,
                        value: a / b - 1.0,
                        limit: target,
                        period: format!("{year}-01..{month}"),
                        detail: format!(
                            "累计能耗强度同比 {:+.1}%, 目标 ≤ {:+.1}%",
                            (a / b - 1.0) * 100.0,
                            target * 100.0
                        ),
                    });
                }
            }
        }
    }
    if let (Some(limit), true) = (rules.zone_intensity_limit, va_sum > 0.0) {
        let i = tce_sum / va_sum;
        out.push(Observation {
            rule: "zone_intensity_limit".into(),
            subject: Subject {
                zone: zone.id.to_string(),
                enterprise: None,
                name: zone.name_zh.clone(),
            },
            value: i,
            limit,
            period: month.to_string(),
            detail: format!("{month} 园区单位增加值能耗 {i:.4} tce/万元, 限值 {limit}"),
        });
    }
    out
}

/// How long after a batch refused for its numbering the `batch_identity`
/// alert stays up (it clears once this long passes without another).
pub const NUMBERING_ALERT_HOURS: i64 = 24;

/// The rule id of the alert raised when an agent's batch was refused for its
/// numbering: its (outbox, seq) held with other content (an outbox restored
/// from a copy, a forger using the agent's credentials), or a seq far ahead.
/// Someone must look at that gateway: raised at once, not after a duration.
pub const BATCH_IDENTITY: &str = "batch_identity";

/// One observation per agent of the zone refused a batch for its numbering
/// within [`NUMBERING_ALERT_HOURS`]: 1 (breached) while recent, 0 after.
pub fn observe_batch_identity(
    zone: &Zone,
    zs: Option<&ZoneState>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Observation> {
    let Some(zs) = zs else {
        return Vec::new();
    };
    zs.agents
        .iter()
        .filter_map(|(id, a)| {
            let at = a.last_numbering_refusal_at?;
            let recent = now - at < chrono::Duration::hours(NUMBERING_ALERT_HOURS);
            Some(Observation {
                rule: BATCH_IDENTITY.into(),
                subject: Subject {
                    zone: zone.id.to_string(),
                    enterprise: Some(format!("agent:{id}")),
                    name: id.to_string(),
                },
                value: if recent { 1.0 } else { 0.0 },
                limit: 0.5,
                period: at.to_rfc3339(),
                detail: format!(
                    "网关 {id} 的批次编号被拒: 重复使用的序号 {} 次, 超前的序号 {} 次 (最近 {at}); 可能是从备份恢复的发件箱或冒用该网关身份的发送者",
                    a.refused_reused_seq, a.refused_seq_ahead
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use crate::testkit::{amount, enterprise, id, zone};

    fn rules() -> RuleSettings {
        RuleSettings {
            intensity_limits: vec![IntensityLimit {
                industry: "*".into(),
                limit: 0.01,
            }],
            ..RuleSettings::default()
        }
    }

    #[test]
    fn both_spellings_of_an_industry_code_meet_the_same_limit() {
        // Limits as an operator may write them: one lettered, one digits only.
        let rules: RuleSettings = toml::from_str(
            "intensity_limits = [{ industry = \"31\", limit = 1.5 }, { industry = \"C3216\", limit = 1.2 }, \
             { industry = \"*\", limit = 0.5 }]",
        )
        .unwrap();
        assert_eq!(rules.intensity_limits[0].industry, "C31");
        for code in ["3110", "C3110", "c3110"] {
            assert_eq!(limit_for(&rules, Some(code)), Some(1.5), "{code}");
        }
        for code in ["3216", "C3216"] {
            assert_eq!(limit_for(&rules, Some(code)), Some(1.2), "{code}");
        }
        assert_eq!(limit_for(&rules, Some("2614")), Some(0.5));
        assert_eq!(limit_for(&rules, None), Some(0.5));
        let bad = toml::from_str::<RuleSettings>("intensity_limits = [{ industry = \"C06\", limit = 1.0 }]");
        let err = bad.unwrap_err().to_string();
        assert!(err.contains("major group 06 is in division B"), "{err}");
    }

    #[test]
    fn a_month_missing_a_carrier_is_not_judged_on_electricity_alone() {
        let z = zone(vec![enterprise(1, true, "")], &[]);
        let cat = Catalog::builtin().unwrap();
        let mut st = State::default();
        // September: 10,000 kWh (1.229 tce) and 2 t coal (1.4286 tce) over 100: 0.026572, over the 0.01 limit.
        // October: the electricity alone (0.01229) would also be over, but without its coal
        // figure October is unknown, not judged.
        let r = [
            amount("electricity", "2026-09", 10_000.0),
            amount("raw_coal", "2026-09", 2.0),
            amount("value_added", "2026-09", 100.0),
            amount("electricity", "2026-10", 10_000.0),
            amount("value_added", "2026-10", 100.0),
        ];
        st.apply(&z.id, &id(1), &r, &[], &cat);
        let gs = GoalSettings::default();
        let sep = observe(&z, st.zones.get(&z.id), Period::Month(2026, 9), &cat, &gs, &rules());
        let limit = sep
            .iter()
            .find(|o| o.rule == "intensity_limit")
            .expect("September judged");
        assert!((limit.value - (1.229 + 1.4286) / 100.0).abs() < 1e-12);
        let oct = observe(&z, st.zones.get(&z.id), Period::Month(2026, 10), &cat, &gs, &rules());
        assert!(oct.iter().all(|o| o.rule != "intensity_limit"), "{oct:?}");
    }

    #[test]
    fn the_year_to_date_change_compares_the_months_known_in_both_years() {
        let z = zone(vec![enterprise(1, true, "")], &[]);
        let cat = Catalog::builtin().unwrap();
        let mut st = State::default();
        // Coal and value added every month of both years; electricity in 2025 only from
        // September (meters installed), in 2026 every month. Over September and October:
        // 2026 (2 × 0.7143 + 2 × 1.229) ÷ 200 against 2025 (2 × 2 × 0.7143 + 2 × 1.229) ÷ 200:
        // 3.8866 ÷ 5.3152 − 1 = −26.88 %. (Unmatched: 2026's ten months of electricity
        // against 2025's two, 19.433 ÷ 16.744 − 1 = +16.06 %.)
        let mut r = Vec::new();
        for m in 1..=10 {
            for y in [2025, 2026] {
                let p = format!("{y}-{m:02}");
                r.push(amount("raw_coal", &p, if y == 2025 { 2.0 } else { 1.0 }));
                r.push(amount("value_added", &p, 100.0));
                if y == 2026 || m >= 9 {
                    r.push(amount("electricity", &p, 10_000.0));
                }
            }
        }
        st.apply(&z.id, &id(1), &r, &[], &cat);
        let obs = observe(
            &z,
            st.zones.get(&z.id),
            Period::Month(2026, 10),
            &cat,
            &GoalSettings::default(),
            &RuleSettings::default(),
        );
        let ytd = obs.iter().find(|o| o.rule == "ytd_change").expect("judged");
        assert!((ytd.value - (3.8866 / 5.3152 - 1.0)).abs() < 1e-9, "{}", ytd.value);
    }
}

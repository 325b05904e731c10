//! A goal's definition in Chinese, for the people the figures are for: the
//! tooltip on the Chinese page, the briefing. Built from the same goal
//! definition and settings as the English `definition`, so the two never say
//! different things, and carrying the thresholds in force.

use super::conditions::{Condition, Filter, GoalSettings, Population};
use super::{GoalDef, GoalKind, Span};
use std::sync::OnceLock;
use zonesync_proto::Catalog;

/// An indicator's Chinese name from the built-in catalog, else its code (a
/// zone's own catalog may add codes; the code is then what its people use).
fn indicator(code: &str) -> String {
    static BUILTIN: OnceLock<Option<Catalog>> = OnceLock::new();
    if code == "energy_tce" {
        return "综合能耗（吨标准煤）".into();
    }
    BUILTIN
        .get_or_init(|| Catalog::builtin().ok())
        .as_ref()
        .and_then(|c| c.get(code))
        .map_or_else(|| code.to_owned(), |i| i.name_zh.clone())
}

/// A row's span (`2026-01..2026-11`, `2026-11`, `2026-Q4`, `2026`, `A vs B`)
/// as a briefing writes it: "2026年1—11月累计", "2026年11月", "2026年第4季度",
/// "2026年", "A（对比B）". Anything else is shown as it came.
pub fn span_words(p: &str) -> String {
    if let Some((a, b)) = p.split_once(" vs ") {
        return format!("{}（对比{}）", span_words(a), span_words(b));
    }
    let year = |s: &str| {
        s.get(..4)
            .filter(|y| y.bytes().all(|c| c.is_ascii_digit()))
            .map(str::to_owned)
    };
    let month = |s: &str| {
        (s.len() == 7 && s.as_bytes().get(4) == Some(&b'-'))
            .then(|| s.get(5..7)?.parse::<u32>().ok())
            .flatten()
    };
    if let Some((a, b)) = p.split_once("..") {
        if let (Some(y), Some(from), Some(to)) = (year(a), month(a), month(b)) {
            return format!("{y}年{from}—{to}月{}", if from == 1 { "累计" } else { "" });
        }
    } else if let (Some(y), Some("-Q"), Some(q @ ("1" | "2" | "3" | "4"))) = (year(p), p.get(4..6), p.get(6..)) {
        return format!("{y}年第{q}季度");
    } else if let (Some(y), Some(m)) = (year(p), month(p)) {
        return format!("{y}年{m}月");
    } else if p.len() == 4 {
        if let Some(y) = year(p) {
            return format!("{y}年");
        }
    }
    p.to_owned()
}

fn population(p: Population) -> &'static str {
    match p {
        Population::AboveScaleIndustrial => "登记的规上工业企业",
        Population::AboveScale => "登记的规上企业",
        Population::AboveScaleServices => "登记的规上服务业企业",
        Population::LargeOrMedium => "大中型企业（按申报的企业规模）",
        Population::Industrial => "登记的工业企业",
        Population::All => "登记的全部企业",
    }
}

fn condition(c: Condition, s: &GoalSettings) -> String {
    let declared = |what: &str| format!("申报为{what}");
    match c {
        Condition::DigitallyTransformed => format!(
            "数字化转型成熟度≥{}级（GB/T 39116）或中小企业数字化水平≥{}级（工信部评测）",
            s.dt_min_maturity, s.sme_min_level
        ),
        Condition::ScenarioAny => "申报至少1个智能制造场景（任一级别）".into(),
        Condition::ScenarioIntermediate => "至少1个中级或高级智能制造场景".into(),
        Condition::ScenarioAdvanced => "至少1个高级智能制造场景".into(),
        Condition::SmartRetrofit => format!(
            "申报已完成智能化改造；未申报的，以数字化转型成熟度≥{}级替代判断（替代指标）",
            s.smart_retrofit_min_maturity
        ),
        Condition::RdActivity => "申报开展研发活动".into(),
        Condition::RdInstitution => "申报设有研发机构".into(),
        Condition::RdInstitutionProvincial => "申报设有省级及以上研发机构".into(),
        Condition::OnCloud => "申报已上云".into(),
        Condition::HighTech => declared("高新技术企业"),
        Condition::TechSme => declared("科技型中小企业"),
        Condition::SpecializedSme => declared("专精特新企业"),
        Condition::LeadGoose => declared("头雁企业"),
        Condition::Gazelle => declared("瞪羚企业"),
        Condition::GreenFactory => declared("绿色工厂"),
        Condition::LogisticsARated => "申报物流企业A级评定（A至5A）".into(),
        Condition::Always => "全部企业".into(),
    }
}

fn filter(f: &Filter) -> String {
    match f {
        Filter::LeadingIndustry => "属开发区主导产业".into(),
        Filter::StrategicEmerging => "申报为战略性新兴产业".into(),
        Filter::IndustryPrefixes(ps) => format!("行业代码属 {}", ps.join("、")),
    }
}

fn energy_note(g: &GoalDef, s: &GoalSettings) -> String {
    let uses_energy = [&g.numerator, &g.denominator]
        .iter()
        .any(|c| c.as_deref() == Some("energy_tce"));
    if !uses_energy {
        return String::new();
    }
    let left_out: Vec<String> = s.intensity_excludes.iter().map(|c| indicator(c)).collect();
    format!(
        "；综合能耗按指标目录的折标系数计算（电力按当量值），不计入：{}",
        if left_out.is_empty() {
            "无".to_owned()
        } else {
            left_out.join("、")
        }
    )
}

/// The Chinese definition of a non-trend goal over `span`.
pub(super) fn definition(g: &GoalDef, span: Span, s: &GoalSettings) -> String {
    let over = span_words(&span.label());
    let pop = population(g.population);
    match g.kind {
        GoalKind::Coverage => format!(
            "{pop}中{}的企业所占比例；未申报的企业计为未覆盖，并单列为“未知”",
            condition(g.condition.unwrap_or(Condition::Always), s)
        ),
        GoalKind::Ratio => format!(
            "Σ{}{} ÷ Σ{}，{pop}中两项均有报告的企业，{over}；每家企业只取两项都有数据的月份{}",
            indicator(g.numerator.as_deref().unwrap_or("")),
            g.numerator_filter
                .as_ref()
                .map(|f| format!("（{}）", filter(f)))
                .unwrap_or_default(),
            indicator(g.denominator.as_deref().unwrap_or("")),
            energy_note(g, s)
        ),
        GoalKind::Total => format!(
            "{pop}{}的{}合计，{over}",
            g.filter
                .as_ref()
                .map(|f| format!("中{}", filter(f)))
                .unwrap_or_default(),
            indicator(g.indicator.as_deref().unwrap_or(""))
        ),
        GoalKind::Count => {
            let cond = g.condition.filter(|c| *c != Condition::Always).map(|c| condition(c, s));
            let amount = g
                .threshold
                .as_ref()
                .map(|t| format!("{over}{}≥{}", indicator(&t.indicator), amount(t.min)));
            match (cond, amount) {
                (None, None) => format!("{pop}数"),
                (Some(c), None) => format!("{pop}中{c}的企业数"),
                (None, Some(a)) => format!("{pop}中{a}的企业数"),
                (Some(c), Some(a)) => format!("{pop}中{c}且{a}的企业数"),
            }
        }
        GoalKind::ZoneCount => format!(
            "各开发区{pop}{}的{}{over}合计达到{}的开发区个数",
            g.filter
                .as_ref()
                .map(|f| format!("中{}", filter(f)))
                .unwrap_or_default(),
            indicator(g.indicator.as_deref().unwrap_or("")),
            g.threshold.as_ref().map_or_else(String::new, |t| amount(t.min))
        ),
        GoalKind::Trend => String::new(),
    }
}

/// A threshold in 万元 as officials write it: "1000亿元", "3万亿元", "500万元".
fn amount(min: f64) -> String {
    let round = |v: f64| (v * 100.0).round() / 100.0;
    if min.abs() >= 1e8 {
        format!("{}万亿元", round(min / 1e8))
    } else if min.abs() >= 1e4 {
        format!("{}亿元", round(min / 1e4))
    } else {
        format!("{}万元", round(min))
    }
}

/// The Chinese definition of a trend of `base` between two spans.
pub(super) fn trend_definition(
    g: &GoalDef,
    base: &GoalDef,
    cur: Span,
    from: Span,
    years: i32,
    matched: bool,
) -> String {
    format!(
        "{}{}：{}较{}{}{}",
        base.name_zh,
        if g.annual { "年均变化率" } else { "变化率" },
        span_words(&cur.label()),
        span_words(&from.label()),
        if g.annual {
            format!("，按{years}年计")
        } else {
            String::new()
        },
        if matched {
            "；每家企业只比较两年都有报告的月份"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_written_in_words() {
        for (p, words) in [
            ("2026-01..2026-11", "2026年1—11月累计"),
            ("2026-03..2026-11", "2026年3—11月"),
            ("2026-11", "2026年11月"),
            ("2026-Q4", "2026年第4季度"),
            ("2026", "2026年"),
            (
                "2026-01..2026-10 vs 2025-01..2025-10",
                "2026年1—10月累计（对比2025年1—10月累计）",
            ),
            ("2026-10 vs 2015", "2026年10月（对比2015年）"),
            ("", ""),
            ("2026-1", "2026-1"),
            ("年年年", "年年年"),
        ] {
            assert_eq!(span_words(p), words, "{p}");
        }
    }

    #[test]
    fn every_preset_has_a_chinese_definition_without_latin_words() {
        let cat = Catalog::builtin().unwrap();
        let goals = super::super::load_goals(super::super::BUILTIN_GOALS, &cat)
            .unwrap()
            .goal;
        let s = GoalSettings::default();
        let span = Span::Period(zonesync_proto::Period::Month(2026, 11));
        for g in goals.iter().filter(|g| g.kind != GoalKind::Trend) {
            let d = definition(g, span, &s);
            assert!(!d.is_empty(), "{}", g.id);
            // Standards and units may stay Latin (GB/T, A, 5A); words may not.
            let latin_word = d
                .split(|c: char| !c.is_ascii_alphabetic() && c != '_')
                .any(|w| w.len() > 3 && w != "GB");
            assert!(!latin_word, "{}: {d}", g.id);
        }
    }
}

//! The goal table as a person pastes it into a monthly briefing: plain text,
//! Markdown, CSV that opens correctly in Excel with Chinese text (UTF-8 with a
//! byte-order mark), or JSON. Pure rendering of rows already computed.

pub mod xlsx;

use crate::goals::{GoalRow, Status};
use serde::Deserialize;
use std::fmt::Write;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Aligned text for a terminal.
    #[default]
    Table,
    /// CSV with a UTF-8 byte-order mark (Excel).
    Csv,
    /// Markdown table.
    Md,
    /// JSON array of rows.
    Json,
    /// Excel workbook: the goal table and the enterprises to chase ([`xlsx`]).
    Xlsx,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "md" => Ok(Format::Md),
            "json" => Ok(Format::Json),
            "xlsx" => Ok(Format::Xlsx),
            other => Err(format!("format {other:?} is not one of table, csv, md, json, xlsx")),
        }
    }
}

impl Format {
    /// HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Md => "text/markdown; charset=utf-8",
            Format::Json => "application/json",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

/// Chinese and English status words: the same terms as the page (i18n.js),
/// so a briefing and the wall screen never name one thing two ways.
pub fn status_words(s: Status) -> (&'static str, &'static str) {
    match s {
        Status::Met => ("已达标", "met"),
        Status::NotMet => ("未达标", "not met"),
        Status::NoData => ("数据不足", "no data"),
        Status::Reported => ("仅报告", "reported"),
        Status::Contribution => ("贡献量", "contribution"),
    }
}

/// A value for people: shares as percentages, large numbers grouped.
pub fn human(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "—".into(),
        Some(v) if unit == "share" => format!("{:.1}%", v * 100.0),
        Some(v) if v.abs() >= 1000.0 => group(format!("{v:.0}")),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// A figure with the unit an official writes, for a briefing: money of 1 亿元
/// and more in 亿元 and of 1 万亿元 in 万亿元 ("3 万亿元", "2,800 亿元"),
/// other units after the number. `as_written` keeps a target's digits as the
/// plan has them ("1.35%", not "1.4%").
pub fn amount_words(v: Option<f64>, unit: &str, as_written: bool) -> String {
    let exact = |x: f64, d: usize| {
        let s = format!("{x:.d$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        };
        match s.split_once('.') {
            Some((i, f)) => format!("{}.{f}", group(i.to_owned())),
            None => group(s),
        }
    };
    match v {
        None => "—".into(),
        Some(v) if unit == "10k_yuan" && v.abs() >= 1e8 => format!("{} 万亿元", exact(v / 1e8, 2)),
        Some(v) if unit == "10k_yuan" && v.abs() >= 1e4 => format!("{} 亿元", exact(v / 1e4, 2)),
        Some(v) if unit == "share" && as_written => format!("{}%", exact(v * 100.0, 4)),
        Some(v) if unit == "share" => human(Some(v), unit),
        Some(v) => {
            let n = if as_written { exact(v, 4) } else { human(Some(v), unit) };
            format!("{n} {}", unit_words(unit)).trim_end().to_owned()
        }
    }
}

fn group(digits: String) -> String {
    let (sign, d) = digits.strip_prefix('-').map_or(("", digits.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// A unit as the page (i18n.js) and a briefing write it.
fn unit_words(unit: &str) -> &str {
    match unit {
        "share" => "%",
        "10k_yuan" => "万元",
        "10k_yuan/mu" => "万元/亩",
        "tce/10k_yuan" => "吨标准煤/万元",
        "enterprise" => "家",
        "zone" => "个",
        "item" => "项",
        "person" => "人",
        other => other,
    }
}

/// A figure for the CSV: shares in percent to four decimals, beside the
/// unit "%" (Excel readers take 66.6667 % as written), everything else as
/// computed.
fn csv_number(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(v) if unit == "share" => {
            let s = format!("{:.4}", v * 100.0);
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        other => opt(other),
    }
}

/// What a figure leaves out or infers, in words (empty when nothing).
fn caveats(r: &GoalRow) -> String {
    let mut out = Vec::new();
    if r.partial_months > 0 {
        out.push(format!(
            "缺 {} 个企业月 {} enterprise-months left out",
            r.partial_months, r.partial_months
        ));
    }
    if r.numerator_from_proxy > 0 {
        out.push(format!(
            "{} 家按替代指标计入 {} counted by proxy",
            r.numerator_from_proxy, r.numerator_from_proxy
        ));
    }
    out.join("; ")
}

/// What a figure leaves out or infers, in Chinese only (the workbook's 说明).
fn caveats_zh(r: &GoalRow) -> String {
    let mut out = Vec::new();
    if r.partial_months > 0 {
        out.push(format!("缺 {} 个企业月（一侧无数据，两侧均未计入）", r.partial_months));
    }
    if r.numerator_from_proxy > 0 {
        out.push(format!("{} 家未申报，按替代指标计入", r.numerator_from_proxy));
    }
    if r.unknown > 0 {
        out.push(format!("{} 家数据未说明，计为未覆盖", r.unknown));
    }
    out.join("；")
}

/// The enterprises to chase, as a Markdown section after the goal table.
pub fn chase_md(c: &crate::briefing::Chase) -> String {
    let mut s = format!(
        "\n### 需督促企业 Enterprises to chase（{}）\n\n",
        span_words(&c.period.to_string())
    );
    if c.enterprises.is_empty() {
        s.push_str("无。None.\n");
    } else {
        s.push_str("| 企业 | 统一社会信用代码 | 需要补齐或改进的事项 |\n|---|---|---|\n");
        for e in &c.enterprises {
            let _ = writeln!(s, "| {} | {} | {} |", e.name, e.enterprise, e.why_zh.join("；"));
        }
    }
    if !c.silent_agents.is_empty() {
        let names: Vec<&str> = c.silent_agents.iter().map(|a| a.agent.as_str()).collect();
        let _ = writeln!(s, "\n静默的采集网关 Silent gateways：{}", names.join("、"));
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

pub use crate::goals::words::span_words;

/// What a title adds for a period still running, so a month of six days is
/// never read as a whole one: "进行中 in progress, day 6 of 31".
pub fn progress_words(p: zonesync_proto::Progress) -> String {
    match p {
        zonesync_proto::Progress::Complete => String::new(),
        zonesync_proto::Progress::InProgress { days, of } => {
            format!(", 进行中 in progress: 第{days}天/共{of}天 day {days} of {of}")
        }
        zonesync_proto::Progress::NotStarted => ", 未开始 not begun".into(),
    }
}

/// Renders a goal table titled `title` (zone or city name and period).
pub fn render(title: &str, rows: &[GoalRow], format: Format) -> String {
    match format {
        // Binary; made by `xlsx::workbook`, which needs more than the rows.
        Format::Xlsx => String::new(),
        Format::Json => serde_json::to_string_pretty(rows).unwrap_or_default(),
        Format::Csv => {
            let mut s = String::from('\u{feff}');
            s.push_str("目标编号 id,指标 goal,Goal,期间 period,统计期间 span,数值 value,单位 unit,目标值 target,比较 comparator,状态 status,分子 numerator,分母 denominator,已报告 reported,未知 unknown,分子中按替代指标 numerator from proxy,应报告 in scope,缺月 partial months,数据完整度(%) completeness,来源 source,条款 clause,口径 definition\r\n");
            for r in rows {
                let (zh, en) = status_words(r.status);
                let fields = [
                    r.id.clone(),
                    r.name_zh.clone(),
                    r.name_en.clone(),
                    r.period.clone(),
                    span_words(&r.period),
                    csv_number(r.value, &r.unit),
                    unit_words(&r.unit).to_owned(),
                    csv_number(r.target, &r.unit),
                    r.comparator.clone(),
                    format!("{zh} {en}"),
                    r.numerator.to_string(),
                    r.denominator.to_string(),
                    r.reported.to_string(),
                    r.unknown.to_string(),
                    r.numerator_from_proxy.to_string(),
                    r.in_scope.to_string(),
                    r.partial_months.to_string(),
                    csv_number(r.completeness, "share"),
                    r.source.clone(),
                    r.clause.clone(),
                    r.definition.clone(),
                ];
                s.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
                s.push_str("\r\n");
            }
            s
        }
        Format::Md => {
            let mut s = format!("## {title}\n\n| 编号 | 指标 | 数值 | 统计期间 | 目标 | 状态 | 已报告/应报告 | 未知 | 数据完整度 | 说明 |\n|---|---|---:|---|---:|---|---:|---:|---:|---|\n");
            for r in rows {
                let _ = writeln!(
                    s,
                    "| {} | {}<br>{} | {} | {} | {} {} | {} | {}/{} | {} | {} | {} |",
                    r.id,
                    r.name_zh,
                    r.name_en,
                    amount_words(r.value, &r.unit, false),
                    span_words(&r.period),
                    r.comparator,
                    amount_words(r.target, &r.unit, true),
                    status_words(r.status).0,
                    r.reported,
                    r.in_scope,
                    r.unknown,
                    human(r.completeness, "share"),
                    caveats(r)
                );
            }
            s.push_str("\n数值按条款口径计算;未报告企业计为未覆盖并单列为“未知”;比值与同比只取两侧都有数据的企业月份,其余月份两侧均不计入并计为“缺月”。 Figures follow each clause's definition; enterprises that have not reported count as not covered and are listed as unknown; ratios and year-on-year changes take only the months both sides report, the rest are left out of both and counted.\n");
            s
        }
        Format::Table => {
            let mut s = format!("{title}\n");
            let _ = writeln!(
                s,
                "{:<10} {:>14} {:>16} {:<8} {:>9} {:>7}  goal",
                "id", "value", "target", "status", "reported", "unknown"
            );
            for r in rows {
                let _ = writeln!(
                    s,
                    "{:<10} {:>14} {:>16} {:<8} {:>9} {:>7}  {} / {} ({})",
                    r.id,
                    human(r.value, &r.unit),
                    format!("{} {}", r.comparator, human(r.target, &r.unit)),
                    status_words(r.status).1,
                    format!("{}/{}", r.reported, r.in_scope),
                    r.unknown,
                    r.name_zh,
                    r.name_en,
                    unit_words(&r.unit)
                );
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> GoalRow {
        crate::testkit::goal_row()
    }

    #[test]
    fn amounts_are_written_as_officials_write_them() {
        for (v, unit, as_written, words) in [
            (300_000_000.0, "10k_yuan", true, "3 万亿元"),
            (28_000_000.0, "10k_yuan", true, "2,800 亿元"),
            (123_456.0, "10k_yuan", false, "12.35 亿元"),
            (9_999.0, "10k_yuan", false, "9,999 万元"),
            (0.0135, "share", true, "1.35%"),
            (0.0135, "share", false, "1.4%"),
            (0.7, "share", true, "70%"),
            (15.0, "10k_yuan/mu", true, "15 万元/亩"),
            (-250_000_000.0, "10k_yuan", false, "-2.5 万亿元"),
        ] {
            assert_eq!(amount_words(Some(v), unit, as_written), words, "{v} {unit}");
        }
        assert_eq!(amount_words(None, "share", true), "—");
    }

    #[test]
    fn csv_has_a_bom_and_quotes_what_needs_it() {
        let s = render("t", &[row()], Format::Csv);
        assert!(s.starts_with('\u{feff}'), "Excel needs the BOM to read UTF-8");
        let line = s.lines().nth(1).unwrap();
        assert!(line.starts_with("JY27-18,中级及以上智能制造场景覆盖率,"));
        assert!(line.contains(",未达标 not met,"));
        // Units in Chinese, a share in percent beside "%".
        assert!(line.contains(",66.6667,%,70,>=,"), "{line}");
        assert!(line.contains(",0,66.6667,003_"), "completeness in percent: {line}");
        assert!(line.ends_with("\"≥ 1 scenario at intermediate, \"\"or\"\" advanced\""));
    }

    #[test]
    fn people_see_percentages_and_grouped_numbers() {
        assert_eq!(human(Some(2.0 / 3.0), "share"), "66.7%");
        assert_eq!(human(Some(28_000_000.0), "10k_yuan"), "28,000,000");
        assert_eq!(human(None, "share"), "—");
        let md = render("济源高新区 2026-10", &[row()], Format::Md);
        assert!(md.contains("| JY27-18 | 中级及以上智能制造场景覆盖率<br>Intermediate-or-above scenario coverage | 66.7% | 2026年1—10月累计 | >= 70% | 未达标 | 2/3 | 1 | 66.7% |  |"));
        // What a figure leaves out is said beside it.
        let mut partial = row();
        (partial.partial_months, partial.numerator_from_proxy) = (8, 1);
        let md = render("t", &[partial], Format::Md);
        assert!(
            md.contains(
                "| 66.7% | 缺 8 个企业月 8 enterprise-months left out; 1 家按替代指标计入 1 counted by proxy |"
            ),
            "{md}"
        );
    }
}

//! The briefing as an Excel workbook (.xlsx), since that is what a 管委会
//! office opens: the goal table with Chinese headers, figures as numbers in
//! the units officials write (亿元 for large sums, percentages as
//! percentages, so the cells still add up), 同比/环比, and the enterprises
//! to chase with what each is missing. Written with rust_xlsxwriter (pure
//! Rust, maintained by the author of Python's XlsxWriter).

use super::{span_words, status_words};
use crate::briefing::Chase;
use crate::goals::compare::Comparisons;
use crate::goals::GoalRow;
use rust_xlsxwriter::{Format, FormatAlign, Workbook, Worksheet, XlsxError};
use std::collections::BTreeMap;

/// A figure as a cell: the number in the unit written beside it.
fn cell_value(v: f64, unit: &str) -> (f64, &'static str, &'static str) {
    match unit {
        "share" => (v, "", "0.0%"),
        "10k_yuan" if v.abs() >= 1e8 => (v / 1e8, "万亿元", "#,##0.00"),
        "10k_yuan" if v.abs() >= 1e4 => (v / 1e4, "亿元", "#,##0.00"),
        "10k_yuan" => (v, "万元", "#,##0.00"),
        "10k_yuan/mu" => (v, "万元/亩", "#,##0.00"),
        "tce/10k_yuan" => (v, "吨标准煤/万元", "0.0000"),
        "enterprise" => (v, "家", "#,##0"),
        "zone" => (v, "个", "#,##0"),
        _ => (v, "", "#,##0.00##"),
    }
}

fn change_words(c: Option<&crate::goals::compare::Earlier>) -> String {
    match c.and_then(|e| e.change.map(|ch| (ch, e.change_is))) {
        Some((ch, "points")) => format!("{:+.1}个百分点", ch * 100.0),
        Some((ch, _)) => format!("{:+.1}%", ch * 100.0),
        None => String::new(),
    }
}

fn goals_sheet(
    ws: &mut Worksheet,
    title: &str,
    rows: &[GoalRow],
    cmp: &BTreeMap<String, Comparisons>,
) -> Result<(), XlsxError> {
    let bold = Format::new().set_bold();
    let head = Format::new()
        .set_bold()
        .set_background_color("#DDEBF7")
        .set_text_wrap()
        .set_align(FormatAlign::Center);
    ws.set_name("目标完成情况")?;
    ws.write_string_with_format(0, 0, title, &bold)?;
    let headers = [
        "编号",
        "指标",
        "数值",
        "单位",
        "统计期间",
        "同比",
        "环比",
        "目标",
        "状态",
        "已报告/应报告",
        "未知",
        "数据完整度",
        "截止",
        "说明",
        "来源",
    ];
    for (c, h) in headers.iter().enumerate() {
        ws.write_string_with_format(2, c as u16, *h, &head)?;
    }
    for (i, r) in rows.iter().enumerate() {
        let y = 3 + i as u32;
        ws.write_string(y, 0, &r.id)?;
        ws.write_string(y, 1, &r.name_zh)?;
        match r.value {
            Some(v) => {
                let (n, unit, fmt) = cell_value(v, &r.unit);
                ws.write_number_with_format(y, 2, n, &Format::new().set_num_format(fmt))?;
                ws.write_string(y, 3, unit)?;
            }
            None => {
                ws.write_string(y, 2, "—")?;
            }
        }
        ws.write_string(y, 4, span_words(&r.period))?;
        let c = cmp.get(&r.id);
        ws.write_string(y, 5, change_words(c.and_then(|c| c.same_period_last_year.as_ref())))?;
        ws.write_string(y, 6, change_words(c.and_then(|c| c.previous_period.as_ref())))?;
        let target = match r.target {
            Some(t) => format!(
                "{} {}",
                comparator_words(&r.comparator),
                super::amount_words(Some(t), &r.unit, true)
            ),
            None => String::new(),
        };
        ws.write_string(y, 7, target)?;
        ws.write_string(y, 8, status_words(r.status).0)?;
        ws.write_string(y, 9, format!("{}/{}", r.reported, r.in_scope))?;
        ws.write_number(y, 10, r.unknown as f64)?;
        if let Some(c) = r.completeness {
            ws.write_number_with_format(y, 11, c, &Format::new().set_num_format("0.0%"))?;
        }
        ws.write_string(y, 12, r.deadline.as_deref().unwrap_or(""))?;
        ws.write_string(y, 13, super::caveats_zh(r))?;
        ws.write_string(y, 14, &r.source)?;
    }
    for (c, w) in [
        9.0, 36.0, 12.0, 9.0, 18.0, 12.0, 12.0, 16.0, 9.0, 12.0, 6.0, 10.0, 8.0, 36.0, 40.0,
    ]
    .iter()
    .enumerate()
    {
        ws.set_column_width(c as u16, *w)?;
    }
    ws.set_freeze_panes(3, 2)?;
    Ok(())
}

fn comparator_words(c: &str) -> &str {
    match c {
        ">=" => "≥",
        "<=" => "≤",
        other => other,
    }
}

fn chase_sheet(ws: &mut Worksheet, chase: &Chase) -> Result<(), XlsxError> {
    let head = Format::new().set_bold().set_background_color("#FCE4D6");
    ws.set_name("需督促企业")?;
    for (c, h) in ["企业名称", "统一社会信用代码", "需要补齐或改进的事项"]
        .iter()
        .enumerate()
    {
        ws.write_string_with_format(0, c as u16, *h, &head)?;
    }
    for (i, e) in chase.enterprises.iter().enumerate() {
        let y = 1 + i as u32;
        ws.write_string(y, 0, &e.name)?;
        ws.write_string(y, 1, &e.enterprise)?;
        ws.write_string(y, 2, e.why_zh.join("；"))?;
    }
    let mut y = 2 + chase.enterprises.len() as u32;
    if !chase.silent_agents.is_empty() {
        ws.write_string_with_format(y, 0, "静默的采集网关", &head)?;
        ws.write_string_with_format(y, 1, "最后上报（北京时间）", &head)?;
        for a in &chase.silent_agents {
            y += 1;
            ws.write_string(y, 0, &a.agent)?;
            let seen = a.last_seen.map_or_else(
                || "从未".to_owned(),
                |t| (t + chrono::Duration::hours(8)).format("%Y-%m-%d %H:%M").to_string(),
            );
            ws.write_string(y, 1, seen)?;
        }
    }
    ws.set_column_width(0, 28.0)?;
    ws.set_column_width(1, 22.0)?;
    ws.set_column_width(2, 80.0)?;
    Ok(())
}

/// The workbook: the goal table, then the enterprises to chase.
pub fn workbook(
    title: &str,
    rows: &[GoalRow],
    cmp: &BTreeMap<String, Comparisons>,
    chase: Option<&Chase>,
) -> Result<Vec<u8>, XlsxError> {
    let mut wb = Workbook::new();
    goals_sheet(wb.add_worksheet(), title, rows, cmp)?;
    if let Some(c) = chase {
        chase_sheet(wb.add_worksheet(), c)?;
    }
    wb.save_to_buffer()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::briefing::{SilentAgent, ToChase, Why};
    use calamine::{Data, Reader, Xlsx};

    /// The workbook opens (read back with calamine, as the registry import
    /// does), with the goal table's figures as numbers and the list to chase.
    #[test]
    fn the_workbook_holds_the_table_as_numbers_and_the_list_to_chase() {
        let mut money = crate::testkit::goal_row();
        (money.id, money.unit, money.value, money.target) = (
            "JY27-01".into(),
            "10k_yuan".into(),
            Some(28_500_000.0),
            Some(28_000_000.0),
        );
        let chase = Chase {
            period: zonesync_proto::Period::parse("2026-11").unwrap(),
            enterprises: vec![ToChase {
                enterprise: "91410000MA0000001X".into(),
                name: "示例钢铁".into(),
                why: vec![Why::NoData],
                why_zh: vec![Why::NoData.zh()],
            }],
            silent_agents: vec![SilentAgent {
                agent: "gw-7".into(),
                last_seen: None,
                silent_secs: None,
            }],
        };
        let bytes = workbook(
            "济源高新区 2026-11",
            &[crate::testkit::goal_row(), money],
            &BTreeMap::new(),
            Some(&chase),
        )
        .unwrap();
        let mut book = Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(book.sheet_names(), ["目标完成情况", "需督促企业"]);
        let goals = book.worksheet_range("目标完成情况").unwrap();
        assert_eq!(goals.get_value((2, 1)), Some(&Data::String("指标".into())));
        assert_eq!(goals.get_value((3, 0)), Some(&Data::String("JY27-18".into())));
        // A share is the number itself, shown as a percentage; money of 1 亿元 and more in 亿元.
        assert_eq!(goals.get_value((3, 2)), Some(&Data::Float(2.0 / 3.0)));
        assert_eq!(goals.get_value((4, 2)), Some(&Data::Float(2_850.0)));
        assert_eq!(goals.get_value((4, 3)), Some(&Data::String("亿元".into())));
        assert_eq!(goals.get_value((4, 7)), Some(&Data::String("≥ 2,800 亿元".into())));
        assert_eq!(goals.get_value((3, 8)), Some(&Data::String("未达标".into())));
        let list = book.worksheet_range("需督促企业").unwrap();
        assert_eq!(list.get_value((1, 0)), Some(&Data::String("示例钢铁".into())));
        assert_eq!(list.get_value((1, 2)), Some(&Data::String("本月无任何数据".into())));
        assert_eq!(list.get_value((4, 0)), Some(&Data::String("gw-7".into())));
    }
}

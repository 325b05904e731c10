//! 同比 and 环比: a goal's figure beside the same figure for the same span a
//! year earlier, and for the period just before.
//!
//! An earlier figure is taken from the earlier table of the same zone (or
//! city) with the same span rule, so a year-to-date figure is compared with
//! the year-to-date a year before, not with a whole year. It comes with its
//! own completeness: a change against a half-reported month must be visible
//! as such. Coverage goals read each enterprise's latest declarations whatever
//! the period, and a trend is already a comparison, so neither gets one.
//! 环比 is given only where a row covers a single month or quarter: for a
//! cumulative figure it would compare January–November with January–October.

use super::{GoalKind, GoalRow};
use serde::Serialize;
use std::collections::BTreeMap;

/// One earlier figure of a goal, and the change to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Earlier {
    /// The span the earlier figure covers, as the row writes it.
    pub period: String,
    /// The earlier figure.
    pub value: Option<f64>,
    /// Its completeness.
    pub completeness: Option<f64>,
    /// The change: in points of the share for shares (0.023 = +2.3 points),
    /// else relative (0.05 = +5 %); none where either figure is missing or the
    /// earlier one is zero.
    pub change: Option<f64>,
    /// `points` or `relative`.
    pub change_is: &'static str,
}

/// A row's 同比 and 环比.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparisons {
    /// 同比: the same span one year earlier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_period_last_year: Option<Earlier>,
    /// 环比: the period just before (single months and quarters only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_period: Option<Earlier>,
}

/// Whether a goal's figure can be set beside an earlier one.
fn comparable(r: &GoalRow) -> bool {
    !matches!(r.kind, GoalKind::Coverage | GoalKind::Trend)
}

/// Whether a row covers one month or one quarter ("2026-11", "2026-Q4").
fn single_period(r: &GoalRow) -> bool {
    r.period.len() == 7 && !r.period.contains("..") && !r.period.contains(" vs ")
}

fn earlier(now: &GoalRow, then: &GoalRow) -> Earlier {
    let points = now.unit == "share";
    let change = match (now.value, then.value) {
        (Some(a), Some(b)) if points => Some(a - b),
        (Some(a), Some(b)) if b != 0.0 => Some((a - b) / b.abs()),
        _ => None,
    };
    Earlier {
        period: then.period.clone(),
        value: then.value,
        completeness: then.completeness,
        change,
        change_is: if points { "points" } else { "relative" },
    }
}

/// Each comparable row's 同比 (from `last_year`, the table for the same
/// period a year before) and 环比 (from `previous`, the table for the period
/// before), by goal id.
pub fn comparisons(rows: &[GoalRow], last_year: &[GoalRow], previous: &[GoalRow]) -> BTreeMap<String, Comparisons> {
    let find = |t: &[GoalRow], id: &str| t.iter().find(|r| r.id == id).cloned();
    rows.iter()
        .filter(|r| comparable(r))
        .map(|r| {
            let c = Comparisons {
                same_period_last_year: find(last_year, &r.id).map(|then| earlier(r, &then)),
                previous_period: find(previous, &r.id)
                    .filter(|_| single_period(r))
                    .map(|then| earlier(r, &then)),
            };
            (r.id.clone(), c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goals::Status;

    fn row(id: &str, kind: GoalKind, period: &str, unit: &str, value: Option<f64>) -> GoalRow {
        let mut r = crate::testkit::goal_row();
        r.id = id.into();
        r.kind = kind;
        r.period = period.into();
        r.unit = unit.into();
        r.value = value;
        r.completeness = Some(1.0);
        r.status = Status::Reported;
        r
    }

    #[test]
    fn amounts_change_relatively_shares_in_points_and_cumulative_rows_have_no_previous_period() {
        let now = [
            row("tax", GoalKind::Total, "2026-01..2026-11", "10k_yuan", Some(110.0)),
            row("share", GoalKind::Ratio, "2026-11", "share", Some(0.32)),
            row("cov", GoalKind::Coverage, "2026-11", "share", Some(0.6)),
            row("zero", GoalKind::Total, "2026-11", "10k_yuan", Some(5.0)),
        ];
        let last_year = [
            row("tax", GoalKind::Total, "2025-01..2025-11", "10k_yuan", Some(100.0)),
            row("share", GoalKind::Ratio, "2025-11", "share", Some(0.30)),
            row("cov", GoalKind::Coverage, "2025-11", "share", Some(0.5)),
            row("zero", GoalKind::Total, "2025-11", "10k_yuan", Some(0.0)),
        ];
        let previous = [
            row("tax", GoalKind::Total, "2026-01..2026-10", "10k_yuan", Some(100.0)),
            row("share", GoalKind::Ratio, "2026-10", "share", Some(0.35)),
            row("zero", GoalKind::Total, "2026-10", "10k_yuan", None),
        ];
        let c = comparisons(&now, &last_year, &previous);
        let tax = &c["tax"];
        let yoy = tax.same_period_last_year.as_ref().unwrap();
        assert_eq!((yoy.period.as_str(), yoy.change_is), ("2025-01..2025-11", "relative"));
        assert!((yoy.change.unwrap() - 0.10).abs() < 1e-12);
        assert_eq!(tax.previous_period, None, "Jan–Nov against Jan–Oct is not a 环比");
        let share = &c["share"];
        assert!((share.same_period_last_year.as_ref().unwrap().change.unwrap() - 0.02).abs() < 1e-12);
        let mom = share.previous_period.as_ref().unwrap();
        assert_eq!((mom.period.as_str(), mom.change_is), ("2026-10", "points"));
        assert!((mom.change.unwrap() + 0.03).abs() < 1e-12);
        assert!(
            !c.contains_key("cov"),
            "coverage reads the latest declarations whatever the period"
        );
        let zero = &c["zero"];
        assert_eq!(
            zero.same_period_last_year.as_ref().unwrap().change,
            None,
            "no change against zero"
        );
        assert_eq!(
            zero.previous_period.as_ref().unwrap().change,
            None,
            "no change against a missing figure"
        );
    }
}

//! On track for the deadline? The question an official asks first of a dated
//! goal: at the pace of the last 12 months (or since data began, and then it
//! says so), will the target be met by its deadline; if not, what pace is
//! needed from now on, and when today's pace would get there.
//!
//! Two parts: [`pace`], pure arithmetic on two points of a goal's figure;
//! and [`coverage_at`], a coverage goal's figure as it stood at an earlier
//! instant, made from each enterprise's declarations as they stood then
//! (`EnterpriseState::declared_history`, the declarations' own times) —
//! never from re-reading today's declarations, which would show no pace at
//! all. Ratios compare the same span a year earlier, as 同比 does; totals
//! and counts summed over the year are not projected (a year-to-date sum
//! grows every month whatever the pace), nor are trends (already a change)
//! or goals without a dated deadline.

use super::contribute::contribution;
use super::span::Span;
use super::{GoalDef, GoalKind, GoalRow, GoalSettings};
use crate::registry::Zone;
use crate::state::{EnterpriseState, ZoneState};
use chrono::{DateTime, Datelike, Months, Utc};
use serde::Serialize;
use zonesync_proto::{Catalog, Period};

/// Where the earlier point of a pace comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Since {
    /// Twelve months before.
    LastYear,
    /// The first month with data, less than twelve months before.
    DataBegan,
}

/// How a dated goal stands against its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The target is met now.
    Met,
    /// Not met, but today's pace meets it by the deadline.
    OnTrack,
    /// Today's pace does not meet it by the deadline (or moves away from it).
    OffTrack,
    /// The deadline has passed unmet.
    Missed,
    /// No earlier figure to measure a pace on.
    NoPace,
}

/// A goal's pace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pace {
    /// The figure now.
    pub now: f64,
    /// The earlier figure and the month it stood in.
    pub from: Option<(Period, f64)>,
    /// Where `from` comes from.
    pub since: Option<Since>,
    /// Months between the two points.
    pub months: Option<u32>,
    /// Change per month over them (shares as fractions: 0.018 = 1.8 points).
    pub per_month: Option<f64>,
    /// The deadline's last month (a deadline year means its December).
    pub deadline: Period,
    /// Whole months from now to the deadline.
    pub months_left: i64,
    /// Change per month needed from now to meet the target by the deadline.
    pub needed_per_month: Option<f64>,
    /// The month today's pace reaches the target; none if it never does.
    pub reaches: Option<Period>,
    /// How it stands.
    pub verdict: Verdict,
}

/// The month `n` months after `p` (a month period).
fn plus(p: Period, n: u32) -> Option<Period> {
    let Period::Month(y, m) = p else { return None };
    let k = i64::from(y) * 12 + i64::from(m) - 1 + i64::from(n);
    Some(Period::Month(
        i32::try_from(k.div_euclid(12)).ok()?,
        u32::try_from(k.rem_euclid(12) + 1).ok()?,
    ))
}

fn months_between(a: Period, b: Period) -> Option<i64> {
    match (a, b) {
        (Period::Month(ya, ma), Period::Month(yb, mb)) => Some(i64::from(yb - ya) * 12 + i64::from(mb) - i64::from(ma)),
        _ => None,
    }
}

/// The last month of a deadline as the plans write it: "2027" is December
/// 2027; "each year", "year 3" and the like are not dated.
pub fn deadline_month(deadline: &str) -> Option<Period> {
    let y: i32 = deadline.trim().parse().ok()?;
    (1990..2200).contains(&y).then_some(Period::Month(y, 12))
}

/// The pace of a figure that is `now` in month `at`, against `target` by
/// `deadline`, from an earlier point `from` (`since` says which kind).
pub fn pace(
    now: f64,
    at: Period,
    from: Option<(Period, f64, Since)>,
    target: f64,
    comparator: &str,
    deadline: Period,
) -> Pace {
    let up = !comparator.starts_with('<');
    let met = match comparator {
        ">=" => now >= target,
        ">" => now > target,
        "<=" => now <= target,
        "<" => now < target,
        _ => false,
    };
    let months_left = months_between(at, deadline).unwrap_or(0);
    let months = from.and_then(|(p, _, _)| months_between(p, at)).filter(|m| *m > 0);
    let per_month = match (from, months) {
        (Some((_, v, _)), Some(m)) => Some((now - v) / m as f64),
        _ => None,
    };
    let needed_per_month = (!met && months_left > 0).then(|| (target - now) / months_left as f64);
    let toward = per_month.filter(|r| if up { *r > 0.0 } else { *r < 0.0 });
    let reaches = if met {
        Some(at)
    } else {
        toward.and_then(|r| {
            let n = ((target - now) / r).ceil();
            (n.is_finite() && (0.0..1200.0).contains(&n))
                .then(|| plus(at, n as u32))
                .flatten()
        })
    };
    let verdict = if met {
        Verdict::Met
    } else if months_left < 0 {
        Verdict::Missed
    } else if per_month.is_none() {
        Verdict::NoPace
    } else if reaches.is_some_and(|r| months_between(r, deadline).is_some_and(|d| d >= 0)) {
        Verdict::OnTrack
    } else {
        Verdict::OffTrack
    };
    Pace {
        now,
        from: from.map(|(p, v, _)| (p, v)),
        since: from.map(|(_, _, s)| s),
        months: months.and_then(|m| u32::try_from(m).ok()),
        per_month,
        deadline,
        months_left,
        needed_per_month,
        reaches,
        verdict,
    }
}

/// Whether a goal's figure can be projected (see the module's words).
pub fn projectable(g: &GoalDef) -> bool {
    matches!(g.kind, GoalKind::Coverage | GoalKind::Ratio)
        && g.deadline.as_deref().and_then(deadline_month).is_some()
        && g.target.is_some()
}

/// An enterprise's declarations as they stood at `t`: each attribute's
/// latest value declared at or before it.
fn declared_at(es: &EnterpriseState, t: DateTime<Utc>) -> EnterpriseState {
    let mut then = EnterpriseState::default();
    for (code, h) in &es.declared_history {
        if let Some((_, v)) = h.iter().rev().find(|(at, _)| *at <= t) {
            then.declarations.insert(code.clone(), v.clone());
        }
    }
    then
}

/// Coverage goal `goals[gi]` over `zone` as it stood at `t`, from each
/// enterprise's declarations then: (figure, members that had said), or none
/// when no member had declared anything the goal reads by then.
pub fn coverage_at(
    goals: &[GoalDef],
    gi: usize,
    zone: &Zone,
    zs: Option<&ZoneState>,
    t: DateTime<Utc>,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Option<(f64, usize)> {
    let span = Span::Period(Period::month_of(t));
    let (mut num, mut den, mut reported) = (0.0, 0.0, 0usize);
    for e in &zone.enterprise {
        let then = zs.and_then(|z| z.enterprises.get(&e.id)).map(|es| declared_at(es, t));
        let c = contribution(goals, gi, zone, e, then.as_ref(), span, catalog, s);
        if c.member {
            num += c.num;
            den += c.den;
            reported += usize::from(c.reported);
        }
    }
    (reported > 0 && den > 0.0).then(|| (num / den, reported))
}

/// The earliest declaration time in `zone` of any enterprise, if any.
fn first_declared(zs: Option<&ZoneState>) -> Option<DateTime<Utc>> {
    zs?.enterprises
        .values()
        .flat_map(|es| es.declared_history.values())
        .filter_map(|h| h.first().map(|(t, _)| *t))
        .min()
}

/// The pace of a zone's coverage row `row` (goal `goals[gi]`) at `now`:
/// the row's figure against the same goal as it stood 12 months before,
/// or at the end of the first month with declarations if that is later.
#[allow(clippy::too_many_arguments)]
pub fn coverage_pace(
    goals: &[GoalDef],
    gi: usize,
    row: &GoalRow,
    zone: &Zone,
    zs: Option<&ZoneState>,
    now: DateTime<Utc>,
    catalog: &Catalog,
    s: &GoalSettings,
) -> Option<Pace> {
    let g = goals.get(gi)?;
    let (value, target, deadline) = (row.value?, g.target?, deadline_month(g.deadline.as_deref()?)?);
    let at = Period::month_of(now);
    let year_ago = now.checked_sub_months(Months::new(12))?;
    let from = match coverage_at(goals, gi, zone, zs, year_ago, catalog, s) {
        Some((v, _)) => Some((Period::month_of(year_ago), v, Since::LastYear)),
        None => first_declared(zs).and_then(|t0| {
            // The end of the month the first declarations came in.
            let end = end_of_month(t0)?;
            let p = Period::month_of(t0);
            (p != at).then_some(())?;
            coverage_at(goals, gi, zone, zs, end, catalog, s).map(|(v, _)| (p, v, Since::DataBegan))
        }),
    };
    Some(pace(value, at, from, target, &row.comparator, deadline))
}

/// The pace of a ratio row from the same goal's row a year earlier
/// (`earlier`, same span rule), measured between the two spans' last months.
pub fn ratio_pace(g: &GoalDef, row: &GoalRow, earlier: Option<&GoalRow>, at: Period) -> Option<Pace> {
    let (value, target, deadline) = (row.value?, g.target?, deadline_month(g.deadline.as_deref()?)?);
    let from = earlier
        .and_then(|e| e.value)
        .map(|v| (at.year_before(), v, Since::LastYear));
    Some(pace(value, at, from, target, &row.comparator, deadline))
}

/// The instant a month ends, for the month `t` is in.
fn end_of_month(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let first = t.date_naive().with_day(1)?;
    let next = first.checked_add_months(Months::new(1))?;
    Some(next.and_hms_opt(0, 0, 0)?.and_utc() - chrono::Duration::seconds(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Period {
        Period::parse(s).unwrap()
    }

    /// The example: 62.5 % now, +1.8 points a month over the last
    /// year; 100 % by 2027-12 needs more; at today's pace it gets there later.
    #[test]
    fn a_share_behind_its_pace_says_what_is_needed_and_when_it_would_get_there() {
        let p = pace(
            0.625,
            m("2026-11"),
            Some((m("2025-11"), 0.409, Since::LastYear)),
            1.0,
            ">=",
            m("2027-12"),
        );
        assert!((p.per_month.unwrap() - 0.018).abs() < 1e-9, "{p:?}");
        assert_eq!(p.months_left, 13);
        assert!((p.needed_per_month.unwrap() - 0.375 / 13.0).abs() < 1e-9);
        // 0.375 ÷ 0.018 = 20.8 → 21 months after 2026-11.
        assert_eq!(p.reaches, Some(m("2028-08")));
        assert_eq!(p.verdict, Verdict::OffTrack);
    }

    #[test]
    fn verdicts() {
        let on = pace(
            0.8,
            m("2026-11"),
            Some((m("2025-11"), 0.5, Since::LastYear)),
            1.0,
            ">=",
            m("2027-12"),
        );
        assert_eq!((on.verdict, on.reaches), (Verdict::OnTrack, Some(m("2027-07"))));
        let met = pace(1.0, m("2026-11"), None, 1.0, ">=", m("2027-12"));
        assert_eq!(met.verdict, Verdict::Met);
        let none = pace(0.5, m("2026-11"), None, 1.0, ">=", m("2027-12"));
        assert_eq!((none.verdict, none.per_month), (Verdict::NoPace, None));
        let missed = pace(
            0.5,
            m("2026-11"),
            Some((m("2025-11"), 0.4, Since::LastYear)),
            1.0,
            ">=",
            m("2025-12"),
        );
        assert_eq!(missed.verdict, Verdict::Missed);
        // Moving away from the target never reaches it.
        let away = pace(
            0.5,
            m("2026-11"),
            Some((m("2025-11"), 0.6, Since::LastYear)),
            1.0,
            ">=",
            m("2027-12"),
        );
        assert_eq!((away.verdict, away.reaches), (Verdict::OffTrack, None));
        // A falling goal (≤): falling is toward it.
        let down = pace(
            0.06,
            m("2026-11"),
            Some((m("2025-11"), 0.072, Since::LastYear)),
            0.05,
            "<=",
            m("2027-12"),
        );
        assert_eq!(down.verdict, Verdict::OnTrack, "{down:?}");
    }

    #[test]
    fn deadlines_as_the_plans_write_them() {
        assert_eq!(deadline_month("2027"), Some(m("2027-12")));
        assert_eq!(deadline_month("each year"), None);
        assert_eq!(deadline_month("year 3"), None);
    }

    /// Coverage as it stood a year ago comes from the declarations' own
    /// times: an enterprise that declared only last month was not covered
    /// then, though it is now.
    #[test]
    fn coverage_as_it_stood_is_made_from_the_declarations_times() {
        use crate::testkit::{enterprise, utc, zone};
        use zonesync_proto::DeclaredValue;
        let catalog = Catalog::builtin().unwrap();
        let goals = super::super::load_goals(super::super::BUILTIN_GOALS, &catalog)
            .unwrap()
            .goal;
        let gi = goals.iter().position(|g| g.id == "HN27-03").unwrap();
        let z = zone(vec![enterprise(1, true, "C33"), enterprise(2, true, "C33")], &[]);
        let mut zs = ZoneState::default();
        let key = goals[gi].condition.unwrap().declared_keys()[0].to_owned();
        let s = GoalSettings::default();
        let level = DeclaredValue::Integer(s.dt_min_maturity + 1);
        for (n, at) in [(1u32, "2025-06-01T00:00:00Z"), (2, "2026-10-15T00:00:00Z")] {
            let mut es = EnterpriseState::default();
            es.declarations.insert(key.clone(), level.clone());
            es.declared_history.insert(key.clone(), vec![(utc(at), level.clone())]);
            zs.enterprises.insert(crate::testkit::id(n), es);
        }
        let then = coverage_at(&goals, gi, &z, Some(&zs), utc("2025-11-30T00:00:00Z"), &catalog, &s);
        assert_eq!(then.map(|(v, _)| v), Some(0.5), "one of two had declared a year ago");
        let now = coverage_at(&goals, gi, &z, Some(&zs), utc("2026-11-30T00:00:00Z"), &catalog, &s);
        assert_eq!(now.map(|(v, _)| v), Some(1.0));
        assert_eq!(
            coverage_at(&goals, gi, &z, Some(&zs), utc("2025-01-01T00:00:00Z"), &catalog, &s),
            None
        );
    }
}

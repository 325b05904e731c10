//! Data quality after the national online energy-monitoring rules
//! (shared/reference/energy-monitoring.md), pure:
//! - completeness: readings received ÷ expected from each point's interval
//!   (the most common spacing of its readings), flagged under 90 %;
//! - consistency: energy from meter registers over a month against the
//!   monthly figure the enterprise reports for the same carrier, flagged over 5 %;
//! - liveness: agents silent for longer than allowed, gaps in their sequence
//!   numbers (a jump between stored batches, or batches an agent's presence says
//!   it numbered that never came), and readings agents dropped at the source.

use crate::goals::{Condition, Contradiction, Filter, GoalSettings};
use crate::registry::Zone;
use crate::state::ZoneState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zonesync_proto::{Catalog, Period};

/// Quality thresholds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualitySettings {
    /// Completeness below this is flagged.
    pub min_completeness: f64,
    /// Metered vs reported monthly energy differing by more than this share is flagged.
    pub max_consistency_gap: f64,
    /// An agent silent for longer than this is flagged, seconds.
    pub silent_after_secs: i64,
    /// Sequence numbers an agent's presence announced are listed as missing once
    /// neither a presence nor a batch arrived from it for this long, seconds
    /// (time for the agent to drain its outbox after reconnecting).
    pub missing_seq_grace_secs: i64,
    /// An agent whose measured clock offset exceeds this is flagged, seconds:
    /// the validator accepts readings up to 300 s ahead, so an agent a minute
    /// off is still stored but its 15-minute intervals are skewed.
    pub clock_offset_flag_secs: u64,
}

impl Default for QualitySettings {
    fn default() -> Self {
        Self {
            min_completeness: 0.90,
            max_consistency_gap: 0.05,
            silent_after_secs: 3600,
            missing_seq_grace_secs: 600,
            clock_offset_flag_secs: 60,
        }
    }
}

/// Completeness of one measuring point in the period.
#[derive(Debug, Clone, Serialize)]
pub struct PointQuality {
    /// Indicator.
    pub indicator: String,
    /// Point.
    pub point: String,
    /// Reporting interval (most common spacing), seconds.
    pub interval_secs: Option<i64>,
    /// Readings received in the period.
    pub received: u64,
    /// Readings expected in the period up to now, from the interval.
    pub expected: Option<u64>,
    /// received ÷ expected (capped at 1).
    pub completeness: Option<f64>,
    /// Below the threshold.
    pub flagged: bool,
}

/// One enterprise's quality figures.
#[derive(Debug, Clone, Serialize)]
pub struct EnterpriseQuality {
    /// Credit code.
    pub enterprise: String,
    /// Name.
    pub name: String,
    /// Per point.
    pub points: Vec<PointQuality>,
    /// Σ received ÷ Σ expected over its points.
    pub completeness: Option<f64>,
    /// Below the threshold (or nothing received at all).
    pub flagged: bool,
    /// Metered vs reported energy per carrier.
    pub consistency: Vec<Consistency>,
}

/// Metered against reported monthly energy for one carrier.
#[derive(Debug, Clone, Serialize)]
pub struct Consistency {
    /// Carrier.
    pub indicator: String,
    /// Month.
    pub period: Period,
    /// From registers.
    pub metered: f64,
    /// As reported.
    pub reported: f64,
    /// |metered − reported| ÷ reported.
    pub gap: f64,
    /// Over the threshold.
    pub flagged: bool,
}

/// One agent's liveness.
#[derive(Debug, Clone, Serialize)]
pub struct AgentLiveness {
    /// Agent id.
    pub agent: String,
    /// Last message.
    pub last_seen: Option<DateTime<Utc>>,
    /// Seconds since.
    pub silent_secs: Option<i64>,
    /// Silent too long, or announced offline.
    pub flagged: bool,
    /// Sequence numbers skipped between stored batches.
    pub seq_gaps: u64,
    /// Sequence numbers `[from, to]` the agent's last presence says it assigned
    /// (below its `next_seq`) but never stored, after the grace period.
    pub missing_seqs: Option<[u64; 2]>,
    /// Readings the agent's outbox policy dropped before sending them (running total it reports): they will never arrive.
    pub dropped_readings: u64,
    /// Readings it dropped after sending them without an acknowledgement: they may or may not have arrived.
    pub dropped_sent_readings: u64,
    /// Last presence status.
    pub status: Option<zonesync_proto::PresenceStatus>,
    /// The agent's clock minus ours, milliseconds, as the agent measured it
    /// from end-to-end confirmations (`None`: not measured).
    pub clock_offset_ms: Option<i64>,
    /// That offset is beyond `clock_offset_flag_secs`: its readings' times are suspect.
    pub clock_off: bool,
}

/// The zone's quality report for a month.
#[derive(Debug, Clone, Serialize)]
pub struct QualityReport {
    /// Month.
    pub period: Period,
    /// Settings in force.
    pub settings: QualitySettings,
    /// Σ received ÷ Σ expected over the zone's points.
    pub completeness: Option<f64>,
    /// Enterprises of the registry.
    pub enterprises: Vec<EnterpriseQuality>,
    /// Agents seen.
    pub agents: Vec<AgentLiveness>,
    /// Σ readings the zone's agents report dropped at the source (all time, not
    /// only this month): lost, not late, so completeness will not recover them.
    pub readings_dropped_at_source: u64,
    /// Σ readings the zone's agents dropped after sending them without an
    /// acknowledgement (all time): between 0 and all of these were stored,
    /// so the zone's loss lies between the figure above and the sum of both.
    pub readings_dropped_sent_at_source: u64,
}

/// Readings a point reporting every `interval_secs` from `from` should have
/// sent in `[from, end)` by `now`: one per instant `from + k·interval` before
/// the month's end (exclusive) and not after now (a reading due at `now`
/// may already be in). Counting instants, not the span between the first and
/// last, is what makes a finished month with every reading exactly 100 %:
/// October's hourly meter is due 744 readings, 00:00 on the 1st to 23:00 on
/// the 31st; the one at 00:00 on 1 November belongs to November.
fn expected_readings(from: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>, interval_secs: i64) -> Option<u64> {
    if interval_secs <= 0 {
        return None;
    }
    let due = |count: i64| u64::try_from(count.max(0)).unwrap_or(0);
    if now >= end {
        // Instants strictly before `end`: ⌈(end − from) ÷ interval⌉.
        let span = (end - from).num_seconds();
        Some(due((span + interval_secs - 1).div_euclid(interval_secs)))
    } else if now >= from {
        // Instants up to and including `now`: ⌊(now − from) ÷ interval⌋ + 1.
        Some(due((now - from).num_seconds().div_euclid(interval_secs) + 1))
    } else {
        Some(0)
    }
}

/// A declared attribute of one enterprise that a goal condition's proxy contradicts.
#[derive(Debug, Clone, Serialize)]
pub struct DeclarationCheck {
    /// Credit code.
    pub enterprise: String,
    /// Name.
    pub name: String,
    /// What was declared and what the proxy says.
    #[serde(flatten)]
    pub contradiction: Contradiction,
}

/// The quality report as served: the report, and the declarations proxies contradict.
#[derive(Debug, Clone, Serialize)]
pub struct QualityView {
    /// The report.
    #[serde(flatten)]
    pub report: QualityReport,
    /// Declarations a proxy contradicts (the declaration is what the goals count).
    pub contradictions: Vec<DeclarationCheck>,
}

/// Every declaration of the zone's enterprises that the proxy of a goal
/// condition contradicts, e.g. `smart_retrofit = false` beside a maturity of 4.
/// The goals count the declaration; a contradiction is listed so that someone
/// checks which of the two is right rather than either being silently believed.
pub fn contradictions(zone: &Zone, zs: Option<&ZoneState>, s: &GoalSettings) -> Vec<DeclarationCheck> {
    let none = crate::goals::Declared::new();
    zone.enterprise
        .iter()
        .flat_map(|e| {
            let d = zs
                .and_then(|z| z.enterprises.get(&e.id))
                .map_or(&none, |es| &es.declarations);
            // A registry flag needs no report from the enterprise to be contradicted.
            let leading = Filter::LeadingIndustry.contradiction(zone, e, d);
            Condition::ALL
                .iter()
                .filter_map(|c| c.contradiction(d, s))
                .chain(leading)
                .map(|contradiction| DeclarationCheck {
                    enterprise: e.id.to_string(),
                    name: e.name.clone(),
                    contradiction,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Computes the report for `month` as of `now`.
pub fn report(
    zone: &Zone,
    zs: Option<&ZoneState>,
    month: Period,
    now: DateTime<Utc>,
    catalog: &Catalog,
    q: &QualitySettings,
) -> QualityReport {
    let (mut zr, mut ze) = (0u64, 0u64);
    let enterprises = zone
        .enterprise
        .iter()
        .map(|e| {
            let es = zs.and_then(|z| z.enterprises.get(&e.id));
            let mut points = Vec::new();
            let (mut r_sum, mut e_sum) = (0u64, 0u64);
            for ((ind, point), st) in es.map(|es| es.points.iter().collect::<Vec<_>>()).unwrap_or_default() {
                let received = st.per_month.get(&month).copied().unwrap_or(0);
                let interval = st.interval_secs();
                let from = st.first.map_or(month.start(), |f| f.max(month.start()));
                let expected = interval.and_then(|i| expected_readings(from, month.end(), now, i));
                let completeness = expected
                    .filter(|e| *e > 0)
                    .map(|e| (received as f64 / e as f64).min(1.0));
                r_sum += received.min(expected.unwrap_or(received));
                e_sum += expected.unwrap_or(0);
                points.push(PointQuality {
                    indicator: ind.to_owned(),
                    point: point.to_owned(),
                    interval_secs: interval,
                    received,
                    expected,
                    completeness,
                    flagged: completeness.is_some_and(|c| c < q.min_completeness),
                });
            }
            zr += r_sum;
            ze += e_sum;
            let completeness = (e_sum > 0).then(|| r_sum as f64 / e_sum as f64);
            let consistency = es
                .map(|es| {
                    catalog
                        .iter()
                        .filter(|i| i.is_energy())
                        .filter_map(|i| {
                            let m = es.metered.get(&i.code)?.get(&month)?;
                            let r = es.reported.get(&i.code)?.get(&month)?;
                            let gap = if *r > 0.0 { (m - r).abs() / r } else { f64::INFINITY };
                            Some(Consistency {
                                indicator: i.code.clone(),
                                period: month,
                                metered: *m,
                                reported: *r,
                                gap,
                                flagged: gap > q.max_consistency_gap,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            EnterpriseQuality {
                enterprise: e.id.to_string(),
                name: e.name.clone(),
                flagged: completeness.is_none_or(|c| c < q.min_completeness),
                points,
                completeness,
                consistency,
            }
        })
        .collect();
    let agents: Vec<AgentLiveness> = zs
        .map(|z| {
            z.agents
                .iter()
                .map(|(id, a)| {
                    let silent = a.last_seen.map(|t| (now - t).num_seconds());
                    let missing = a.missing_seqs(now, q.missing_seq_grace_secs);
                    let clock_off = a
                        .measured_clock_offset_ms
                        .is_some_and(|ms| ms.unsigned_abs() / 1000 > q.clock_offset_flag_secs);
                    AgentLiveness {
                        agent: id.to_string(),
                        last_seen: a.last_seen,
                        silent_secs: silent,
                        flagged: silent.is_none_or(|s| s > q.silent_after_secs)
                            || a.status == Some(zonesync_proto::PresenceStatus::Offline)
                            || missing.is_some()
                            || clock_off,
                        seq_gaps: a.seq_gaps,
                        missing_seqs: missing.map(|(from, to)| [from, to]),
                        dropped_readings: a.dropped_readings,
                        dropped_sent_readings: a.dropped_sent_readings,
                        status: a.status,
                        clock_offset_ms: a.measured_clock_offset_ms,
                        clock_off,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    QualityReport {
        period: month,
        settings: q.clone(),
        completeness: (ze > 0).then(|| zr as f64 / ze as f64),
        // Each figure is what an agent's presence said: never trusted not to overflow.
        readings_dropped_at_source: agents
            .iter()
            .fold(0u64, |s, a: &AgentLiveness| s.saturating_add(a.dropped_readings)),
        readings_dropped_sent_at_source: agents
            .iter()
            .fold(0u64, |s, a: &AgentLiveness| s.saturating_add(a.dropped_sent_readings)),
        enterprises,
        agents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use crate::testkit::{self, enterprise, utc};
    use zonesync_proto::{CanonicalReading, ReadingTime};

    /// An hourly electricity register on point `point` at every hour from `from` (China time) for `hours` hours.
    fn hourly(point: &str, from: &str, hours: i64) -> Vec<CanonicalReading> {
        let start = utc(from);
        (0..hours)
            .map(|h| CanonicalReading {
                indicator: "electricity".into(),
                point: point.into(),
                value: 100.0 + h as f64,
                at: ReadingTime::Ts(start + chrono::Duration::hours(h)),
            })
            .collect()
    }

    #[test]
    fn a_finished_month_with_every_reading_is_complete() {
        let z = testkit::zone(vec![enterprise(1, true, "")], &[]);
        let cat = Catalog::builtin().unwrap();
        let mut st = State::default();
        // October 2026 has 31 days = 744 hours: readings 00:00 on the 1st to 23:00 on
        // the 31st (China time) are 744; the one at 00:00 on 1 November (the 745th
        // instant) is November's. Point M2 starts at 12:00 on 31 October: 12 readings due.
        let mut readings = hourly("M1", "2026-10-01T00:00:00+08:00", 745);
        readings.extend(hourly("M2", "2026-10-31T12:00:00+08:00", 13));
        st.apply(&z.id, &testkit::id(1), &readings, &[], &cat);
        let r = report(
            &z,
            st.zones.get(&z.id),
            Period::Month(2026, 10),
            utc("2026-11-15T00:00:00+08:00"),
            &cat,
            &QualitySettings::default(),
        );
        let e = &r.enterprises[0];
        let m1 = e.points.iter().find(|p| p.point == "M1").unwrap();
        assert_eq!(
            (m1.interval_secs, m1.received, m1.expected),
            (Some(3600), 744, Some(744))
        );
        assert_eq!(m1.completeness, Some(1.0));
        let m2 = e.points.iter().find(|p| p.point == "M2").unwrap();
        assert_eq!((m2.received, m2.expected, m2.completeness), (12, Some(12), Some(1.0)));
        // (744 + 12) ÷ (744 + 12).
        assert_eq!(
            (e.completeness, e.flagged, r.completeness),
            (Some(1.0), false, Some(1.0))
        );
        // November so far (as of 00:30 on the 1st): the 00:00 reading of M1 and M2 were due and came.
        let nov = report(
            &z,
            st.zones.get(&z.id),
            Period::Month(2026, 11),
            utc("2026-11-01T00:30:00+08:00"),
            &cat,
            &QualitySettings::default(),
        );
        let n1 = nov.enterprises[0].points.iter().find(|p| p.point == "M1").unwrap();
        assert_eq!((n1.received, n1.expected), (1, Some(1)));
    }

    #[test]
    fn declarations_a_proxy_contradicts_are_listed_with_the_evidence() {
        use zonesync_proto::DeclaredValue;
        let z = testkit::zone((1..=4).map(|n| enterprise(n, true, "")).collect(), &[]);
        let cat = Catalog::builtin().unwrap();
        let mut st = State::default();
        let declare = |st: &mut State, n: u32, retrofit: Option<bool>, maturity: i64| {
            let mut d = vec![("dt_maturity".to_owned(), DeclaredValue::Integer(maturity))];
            d.extend(retrofit.map(|b| ("smart_retrofit".to_owned(), DeclaredValue::Bool(b))));
            st.apply(&z.id, &testkit::id(n), &[], &d, &cat);
        };
        declare(&mut st, 1, Some(false), 4); // declared no, proxy says yes: listed
        declare(&mut st, 2, Some(true), 1); // declared yes, proxy says no: listed
        declare(&mut st, 3, Some(true), 3); // both yes: agree
        declare(&mut st, 4, None, 4); // undeclared: the proxy answers, nothing to contradict
        let list = contradictions(&z, st.zones.get(&z.id), &GoalSettings::default());
        let got: Vec<(String, bool, bool, &str)> = list
            .iter()
            .map(|c| {
                let x = &c.contradiction;
                (c.enterprise.clone(), x.declared, x.proxy, x.evidence.as_str())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (testkit::id(1).to_string(), false, true, "dt_maturity 4 ≥ 3"),
                (testkit::id(2).to_string(), true, false, "dt_maturity 1 < 3"),
            ]
        );
        assert!(list.iter().all(|c| c.contradiction.attribute == "smart_retrofit"));
    }

    #[test]
    fn a_leading_industry_flag_the_zone_prefixes_contradict_is_listed() {
        let mut flagged_out = enterprise(1, true, "3110");
        flagged_out.leading_industry = Some(false);
        let mut flagged_in = enterprise(2, true, "C2614");
        flagged_in.leading_industry = Some(true);
        let mut agreeing = enterprise(3, true, "C3120");
        agreeing.leading_industry = Some(true);
        let unflagged = enterprise(4, true, "C2614");
        let z = testkit::zone(vec![flagged_out, flagged_in, agreeing, unflagged], &["C31"]);
        let list = contradictions(&z, None, &GoalSettings::default());
        let got: Vec<(String, bool, bool, &str)> = list
            .iter()
            .map(|c| {
                let x = &c.contradiction;
                (c.enterprise.clone(), x.declared, x.proxy, x.evidence.as_str())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    testkit::id(1).to_string(),
                    false,
                    true,
                    "industry 3110 under the zone's leading industries C31"
                ),
                (
                    testkit::id(2).to_string(),
                    true,
                    false,
                    "industry C2614 not under the zone's leading industries C31"
                ),
            ]
        );
        let json = serde_json::to_value(&list[0]).unwrap();
        assert_eq!(json["condition"], "leading_industry");
    }

    #[test]
    fn expected_readings_count_instants_not_fence_posts() {
        let t = |s: &str| utc(s);
        let (from, end) = (t("2026-10-01T00:00:00+08:00"), t("2026-11-01T00:00:00+08:00"));
        let after = t("2026-12-01T00:00:00+08:00");
        // 744 h ÷ 1 h = 744; 744 h ÷ 15 min = 2976; 744 h ÷ 7 h = 106.3 → 107 instants (0, 7, …, 742 h).
        assert_eq!(expected_readings(from, end, after, 3600), Some(744));
        assert_eq!(expected_readings(from, end, after, 900), Some(2976));
        assert_eq!(expected_readings(from, end, after, 7 * 3600), Some(107));
        // In progress at 10:00 on the 1st, 15-minute point: 00:00 … 10:00 = 41 instants.
        assert_eq!(
            expected_readings(from, end, t("2026-10-01T10:00:00+08:00"), 900),
            Some(41)
        );
        assert_eq!(
            expected_readings(from, end, t("2026-09-30T00:00:00+08:00"), 900),
            Some(0)
        );
        assert_eq!(expected_readings(from, end, after, 0), None);
    }

    #[test]
    fn completeness_from_the_interval_and_consistency_within_five_percent() {
        let z = testkit::zone(vec![enterprise(1, true, "")], &[]);
        let id = testkit::id(1);
        let cat = Catalog::builtin().unwrap();
        let mut st = State::default();
        // 15-minute meter from 00:00 on Nov 1 (China time); readings 0..=40 except 10 of them
        // missing, i.e. 31 of 41 by 10:00; 10 kWh per interval.
        let start = utc("2026-11-01T00:00:00+08:00");
        let readings: Vec<CanonicalReading> = (0..=40)
            .filter(|i| !(20..30).contains(i))
            .map(|i| CanonicalReading {
                indicator: "electricity".into(),
                point: "M1".into(),
                value: 1000.0 + 10.0 * f64::from(i),
                at: ReadingTime::Ts(start + chrono::Duration::minutes(15 * i64::from(i))),
            })
            .chain([CanonicalReading {
                indicator: "electricity".into(),
                point: Default::default(),
                value: 410.0,
                at: ReadingTime::Period(Period::Month(2026, 11)),
            }])
            .collect();
        st.apply(&z.id, &id, &readings, &[], &cat);
        let now = utc("2026-11-01T10:00:00+08:00");
        let r = report(
            &z,
            st.zones.get(&z.id),
            Period::Month(2026, 11),
            now,
            &cat,
            &QualitySettings::default(),
        );
        let p = &r.enterprises[0].points[0];
        assert_eq!((p.interval_secs, p.received, p.expected), (Some(900), 31, Some(41)));
        assert!(p.flagged, "31/41 = 75.6 % is under 90 %");
        // Metered 400 kWh (40 intervals) against 410 reported: 2.4 %, within 5 %.
        let c = &r.enterprises[0].consistency[0];
        assert_eq!((c.metered, c.reported), (400.0, 410.0));
        assert!(!c.flagged);
    }
}

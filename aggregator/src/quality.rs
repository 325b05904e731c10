//! Data quality after the national online energy-monitoring rules
//! (shared/reference/energy-monitoring.md), pure:
//! - completeness: readings received ÷ expected from each point's interval
//!   (the most common spacing of its readings), flagged under 90 %;
//! - consistency: energy from meter registers over a month against the
//!   monthly figure the enterprise reports for the same carrier, flagged over 5 %;
//! - liveness: agents silent for longer than allowed, gaps in their sequence
//!   numbers (a jump between stored batches, or batches an agent's presence says
//!   it numbered that never came), and readings agents dropped at the source.

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
                let to = now.min(month.end());
                let expected = interval.filter(|i| *i > 0).map(|i| {
                    if to > from {
                        ((to - from).num_seconds() / i + 1) as u64
                    } else {
                        0
                    }
                });
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

//! The exact ledger of what the data set's simulators produce (the simulator
//! is deterministic: agent/src/sources/simulator.rs, support/dataset.rs), and
//! a census of what the aggregator's store holds, read directly from its sled
//! files once the aggregator has stopped.
//!
//! Two kinds of reading come out of the simulator and they are stored
//! differently, so the ledger keeps them apart:
//! - meter readings (electricity counters, points M1, M2, one per tick): each
//!   has its own key (enterprise, point, time), so every one must be stored
//!   exactly once;
//! - value added, reported at each simulated midnight as the month-to-date
//!   figure of its month: each report replaces the previous one for that
//!   month (a correction, docs/protocol.md §7), so the store keeps one figure
//!   per month, and it must equal the last report.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use zonesync_proto::{Period, CST};

/// One simulated enterprise: its rates as the agent config gives them.
#[derive(Debug, Clone, Copy)]
pub struct Sim {
    /// Enterprise id.
    pub enterprise: &'static str,
    /// kWh per tick at weight 1 on meter 1.
    pub kwh_rate: f64,
    /// Value added per day, 10k yuan.
    pub va_per_day: f64,
}

/// What one month should hold for an enterprise.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthFigures {
    /// Period, e.g. `2026-10`.
    pub period: String,
    /// Electricity over the month, both meters, kWh.
    pub kwh: f64,
    /// The last month-to-date value added reported for it.
    pub value_added: f64,
}

/// The ledger of one enterprise.
#[derive(Debug, Clone)]
pub struct Produced {
    /// Meter readings (each must be stored once).
    pub meter_readings: u64,
    /// Value-added reports (each month's last one is the month's figure).
    pub value_added_reports: u64,
    /// Month figures, in order.
    pub months: Vec<MonthFigures>,
}

/// The simulator's weight for a tick at `ts` (support/dataset.rs).
fn weight(ts: DateTime<Utc>) -> f64 {
    match ts.with_timezone(&CST).hour() {
        0..=7 => 1.0,
        8..=19 => 3.0,
        _ => 2.0,
    }
}

/// The ledger of `sim` over `ticks` ticks of `step` from `start`, two meters.
pub fn produced(sim: Sim, start: DateTime<Utc>, step: Duration, ticks: u64) -> Produced {
    fn month(months: &mut Vec<MonthFigures>, period: String) -> usize {
        if let Some(i) = months.iter().position(|m| m.period == period) {
            return i;
        }
        months.push(MonthFigures {
            period,
            kwh: 0.0,
            value_added: 0.0,
        });
        months.len() - 1
    }
    let mut months: Vec<MonthFigures> = Vec::new();
    let mut reports = 0;
    let mut kwh: Vec<(String, f64)> = Vec::new();
    let mut va: Vec<(String, f64)> = Vec::new();
    for t in 0..ticks {
        let ts = start + step * t as i32;
        let local = ts.with_timezone(&CST);
        // The interval after tick t adds rate × (1 + 2) × w(ts) over both meters,
        // and counts in the month the interval starts in (if a later tick closes it).
        if t + 1 < ticks {
            kwh.push((Period::month_of(ts).to_string(), sim.kwh_rate * 3.0 * weight(ts)));
        }
        if t > 0 && local.hour() == 0 && local.minute() == 0 && local.second() == 0 {
            let day_before = ts - Duration::seconds(1);
            let days = f64::from(day_before.with_timezone(&CST).day());
            va.push((Period::month_of(day_before).to_string(), sim.va_per_day * days));
            reports += 1;
        }
    }
    for (p, k) in kwh {
        let i = month(&mut months, p);
        months[i].kwh += k;
    }
    for (p, v) in va {
        let i = month(&mut months, p);
        months[i].value_added = v;
    }
    Produced {
        meter_readings: 2 * ticks,
        value_added_reports: reports,
        months,
    }
}

/// What the aggregator's store holds.
#[derive(Debug, Clone, Default)]
pub struct Census {
    /// Stored reading keys per (enterprise, indicator, point).
    pub readings: BTreeMap<(String, String, String), u64>,
    /// Batch sequence numbers recorded as stored, per agent, sorted.
    pub seqs: BTreeMap<String, Vec<u64>>,
    /// Times (µs since the epoch) of the meter readings stored, per (enterprise, point).
    pub meter_times: BTreeMap<(String, String), BTreeSet<u64>>,
    /// Declared attributes stored, per enterprise.
    pub declarations: BTreeMap<String, u64>,
}

/// What the store lacks of one simulated enterprise's ticks. The simulator
/// appends each tick's items in one step, and the outbox keeps an
/// enterprise's items of one append together (one chunk, then one batch), so
/// its disk budget drops a tick whole: both meter readings, and the
/// value-added report if the tick is a midnight.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Missing {
    /// Ticks with no meter reading stored, in order.
    pub ticks: Vec<u64>,
    /// Meter readings missing.
    pub meter_readings: u64,
    /// Value-added reports of the missing ticks (midnights).
    pub value_added_reports: u64,
    /// Ticks with one meter stored and the other not: no drop does that.
    pub split_ticks: u64,
}

/// Whether tick `t` from `start` is a China-time midnight (not the first tick).
fn is_midnight(t: u64, ts: DateTime<Utc>) -> bool {
    let local = ts.with_timezone(&CST);
    t > 0 && local.hour() == 0 && local.minute() == 0 && local.second() == 0
}

/// The ticks of `sim` (two meters) the census lacks.
pub fn missing(census: &Census, sim: Sim, start: DateTime<Utc>, step: Duration, ticks: u64) -> Missing {
    let empty = BTreeSet::new();
    let held = |point: &str| {
        census
            .meter_times
            .get(&(sim.enterprise.to_owned(), point.to_owned()))
            .unwrap_or(&empty)
    };
    let (m1, m2) = (held("M1"), held("M2"));
    let mut out = Missing::default();
    for t in 0..ticks {
        let ts = start + step * t as i32;
        let micros = ts.timestamp_micros().max(0) as u64;
        let (a, b) = (m1.contains(&micros), m2.contains(&micros));
        out.meter_readings += u64::from(!a) + u64::from(!b);
        if a != b {
            out.split_ticks += 1;
        }
        if !a && !b {
            out.ticks.push(t);
            if is_midnight(t, ts) {
                out.value_added_reports += 1;
            }
        }
    }
    out
}

/// The month figures `sim` should show when the ticks in `dropped` never
/// arrived: a month's value added is its last report that arrived (none: the
/// month has no figure, `None`); its kWh is unchanged by a gap inside the
/// month, since a counter's delta across a gap is the consumption of the
/// whole gap. A gap at the first tick, the last, or across the start of a
/// month cannot be attributed exactly (the aggregator splits a delta across
/// months by time, not by the load curve), so that kWh figure is `None`:
/// not checked.
pub fn month_figures_after_drops(
    sim: Sim,
    start: DateTime<Utc>,
    step: Duration,
    ticks: u64,
    dropped: &BTreeSet<u64>,
) -> Vec<(String, Option<f64>, Option<f64>)> {
    let full = produced(sim, start, step, ticks);
    let mut out = Vec::new();
    for m in &full.months {
        let mut va = None;
        let mut kwh_exact = !dropped.contains(&0) && !dropped.contains(&ticks.saturating_sub(1));
        for t in 0..ticks {
            let ts = start + step * t as i32;
            let month = Period::month_of(ts).to_string();
            if t > 0 && dropped.contains(&t) {
                let before = Period::month_of(ts - step).to_string();
                if before != month && (before == m.period || month == m.period) {
                    kwh_exact = false;
                }
            }
            if is_midnight(t, ts) && !dropped.contains(&t) {
                let day_before = ts - Duration::seconds(1);
                if Period::month_of(day_before).to_string() == m.period {
                    va = Some(sim.va_per_day * f64::from(day_before.with_timezone(&CST).day()));
                }
            }
        }
        out.push((m.period.clone(), kwh_exact.then_some(m.kwh), va));
    }
    out
}

impl Census {
    /// Reads the store at `path` (the aggregator must have stopped: sled locks it).
    pub fn read(path: &Path) -> Result<Self, String> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // The store is a log of accepted batches: what it holds is the union
        // of their keys (a key written twice is one stored reading).
        let batches = db.open_tree("batches").map_err(|e| e.to_string())?;
        let mut c = Census::default();
        let mut keys = std::collections::BTreeSet::new();
        let mut declared = std::collections::BTreeSet::new();
        for kv in batches.iter() {
            let (key, v) = kv.map_err(|e| e.to_string())?;
            let rec = zonesync_aggregator::store::record::decode(&v)
                .ok_or_else(|| format!("batch record {key:?} does not decode"))?;
            let a = rec.batch;
            let e = a.enterprise.to_string();
            for r in &a.readings {
                keys.insert((e.clone(), r.indicator.to_string(), r.point.to_string(), r.at));
            }
            for (code, _) in &a.declarations {
                declared.insert((e.clone(), code.clone()));
            }
            c.seqs.entry(a.agent.to_string()).or_default().push(a.seq);
        }
        for (e, ind, point, at) in keys {
            if let (true, zonesync_proto::ReadingTime::Ts(t)) = (ind == "electricity", at) {
                c.meter_times
                    .entry((e.clone(), point.clone()))
                    .or_default()
                    .insert(t.timestamp_micros() as u64);
            }
            *c.readings.entry((e, ind, point)).or_default() += 1;
        }
        for (e, _) in declared {
            *c.declarations.entry(e).or_default() += 1;
        }
        for v in c.seqs.values_mut() {
            v.sort_unstable();
        }
        Ok(c)
    }

    /// Meter readings stored for `enterprise` (electricity, any point).
    pub fn meter_readings(&self, enterprise: &str) -> u64 {
        self.readings
            .iter()
            .filter(|((e, ind, _), _)| e == enterprise && ind == "electricity")
            .map(|(_, n)| n)
            .sum()
    }

    /// Stored keys of `indicator` for `enterprise`.
    pub fn keys(&self, enterprise: &str, indicator: &str) -> u64 {
        self.readings
            .iter()
            .filter(|((e, ind, _), _)| e == enterprise && ind == indicator)
            .map(|(_, n)| n)
            .sum()
    }
}

impl fmt::Display for Census {
    /// Per agent, gaps in the stored sequence numbers: agents number their
    /// batches consecutively, so a gap is a batch never stored.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ((e, ind, point), n) in &self.readings {
            writeln!(f, "    store: {e} {ind} {point}: {n} keys")?;
        }
        for (agent, v) in &self.seqs {
            let gaps: Vec<String> = v
                .windows(2)
                .filter(|w| w[1] != w[0] + 1)
                .map(|w| format!("{}..{}", w[0] + 1, w[1] - 1))
                .collect();
            writeln!(
                f,
                "    store: batches of {agent}: {} stored, gaps: {}",
                v.len(),
                if gaps.is_empty() {
                    "none".to_owned()
                } else {
                    gaps.join(", ")
                }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-09-30T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn drops_change_only_what_they_can() {
        let sim = Sim {
            enterprise: "E1",
            kwh_rate: 10.0,
            va_per_day: 40.0,
        };
        let step = Duration::seconds(900);
        // 3 days + the closing midnight; ticks 90..=100 dropped: the first midnight (96) among them.
        let dropped: BTreeSet<u64> = (90..=100).collect();
        let f = month_figures_after_drops(sim, start(), step, 3 * 96 + 1, &dropped);
        let full = produced(sim, start(), step, 3 * 96 + 1);
        assert_eq!(f, vec![("2026-10".into(), Some(full.months[0].kwh), Some(120.0))]);
        // Only the first midnight arrived: the month's figure is its report.
        let dropped: BTreeSet<u64> = (150..=200).collect();
        let f = month_figures_after_drops(sim, start(), step, 2 * 96 + 1, &dropped);
        assert_eq!(f[0].2, Some(40.0));
        // The first tick dropped: the month's kWh cannot be attributed.
        let f = month_figures_after_drops(sim, start(), step, 97, &[0].into_iter().collect());
        assert_eq!(f[0].1, None);
        // A month's start dropped: both months' kWh unchecked.
        let f = month_figures_after_drops(sim, start(), step, 31 * 96 + 10, &[31 * 96].into_iter().collect());
        assert_eq!((f[0].1, f[1].1), (None, None));
    }

    #[test]
    fn matches_the_hand_computed_data_set() {
        // support/dataset.rs: 97 ticks = one October day, 208 × rate × 3 kWh, one value-added report.
        let p = produced(
            Sim {
                enterprise: "E1",
                kwh_rate: 10.0,
                va_per_day: 40.0,
            },
            start(),
            Duration::seconds(900),
            97,
        );
        assert_eq!(p.meter_readings, 194);
        assert_eq!(p.value_added_reports, 1);
        assert_eq!(
            p.months,
            vec![MonthFigures {
                period: "2026-10".into(),
                kwh: 6240.0,
                value_added: 40.0
            }]
        );
        // e2e.rs's 2000-tick run: 20 days + 173 weight units in October, 20 days of value added.
        let p = produced(
            Sim {
                enterprise: "E1",
                kwh_rate: 10.0,
                va_per_day: 40.0,
            },
            start(),
            Duration::seconds(900),
            2000,
        );
        assert_eq!(p.months[0].kwh, 10.0 * 3.0 * (20.0 * 208.0 + 173.0));
        assert_eq!(p.months[0].value_added, 800.0);
    }
}

//! Simulated enterprises: electricity meters with a day/evening/night load
//! curve and month-to-date value added, for demos, tests and load.
//!
//! The figures are deterministic so a test can work them out by hand: meter
//! `m` (1-based) of an enterprise with rate `r` adds `r × m × w` kWh per tick,
//! where `w` is 1 from 00:00 to 08:00, 3 from 08:00 to 20:00 and 2 from 20:00
//! to 24:00 China time; with 15-minute ticks a whole day adds `r × m × 208` kWh.
//! At each China-time midnight the enterprise reports its value added for the
//! month so far: `value_added_per_day × days elapsed`, and likewise each of
//! `money_per_day` (revenue, tax ...).

use crate::outbox::{Item, Outbox, OutboxError};
use crate::shutdown::Shutdown;
use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zonesync_proto::{EnterpriseId, Period, Reading, CST};

/// Name under which the simulator stores its cursor.
pub const SOURCE: &str = "simulator";

/// Simulator settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Enterprises listed one by one.
    #[serde(default)]
    pub enterprises: Vec<SimEnterprise>,
    /// Real time between ticks, milliseconds.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Simulated time per tick, seconds (default: the real interval, i.e. live).
    #[serde(default)]
    pub step_secs: Option<u64>,
    /// Simulated start time (default: now). Ticks never run ahead of the real clock.
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    /// Stop producing after this many ticks.
    #[serde(default)]
    pub max_ticks: Option<u64>,
    /// Electricity meters per enterprise.
    #[serde(default = "default_meters")]
    pub meters_per_enterprise: u32,
}

fn default_interval() -> u64 {
    1000
}
fn default_meters() -> u32 {
    2
}

/// One simulated enterprise.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimEnterprise {
    /// Credit code.
    pub id: EnterpriseId,
    /// kWh per tick at weight 1 on meter 1.
    #[serde(default = "default_rate")]
    pub kwh_rate: f64,
    /// Value added per day, 10k yuan.
    #[serde(default = "default_va")]
    pub value_added_per_day: f64,
    /// Other money figures per day, 10k yuan, by catalog code (e.g. `revenue`,
    /// `tax`, `gross_output`, `rd_spend`), reported month-to-date like value added.
    #[serde(default)]
    pub money_per_day: std::collections::BTreeMap<String, f64>,
}

fn default_rate() -> f64 {
    10.0
}
fn default_va() -> f64 {
    50.0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Cursor {
    tick: u64,
    start: DateTime<Utc>,
    counters: Vec<f64>,
}

/// Load-curve weight of the 15-minute slot an instant falls in (China time).
pub fn weight(ts: DateTime<Utc>) -> f64 {
    match ts.with_timezone(&CST).hour() {
        0..=7 => 1.0,
        8..=19 => 3.0,
        _ => 2.0,
    }
}

/// Initial register of meter `m` (0-based) of the `e`-th enterprise.
pub fn initial_counter(e: usize, m: u32) -> f64 {
    10_000.0 * f64::from(m + 1) + 1_000.0 * e as f64
}

/// The point id of an enterprise's meter `n` (1-based): `M1`, `M2`, …
pub fn meter_point(n: u32) -> String {
    format!("M{n}")
}

impl SimulatorConfig {
    fn step(&self) -> Duration {
        Duration::seconds(self.step_secs.unwrap_or(self.interval_ms.div_ceil(1000)).max(1) as i64)
    }

    /// The items of one tick, and the counters after it.
    fn tick_items(&self, tick: u64, ts: DateTime<Utc>, counters: &mut [f64]) -> Vec<(EnterpriseId, Item)> {
        let mut items = Vec::new();
        let local = ts.with_timezone(&CST);
        let midnight = tick > 0 && local.hour() == 0 && local.minute() == 0 && local.second() == 0;
        for (e, ent) in self.enterprises.iter().enumerate() {
            for m in 0..self.meters_per_enterprise {
                let k = e * self.meters_per_enterprise as usize + m as usize;
                items.push((
                    ent.id.clone(),
                    Item::Reading(Reading {
                        indicator: "electricity".into(),
                        point: meter_point(m + 1),
                        value: counters[k],
                        unit: "kWh".into(),
                        ts: Some(ts),
                        period: None,
                    }),
                ));
                counters[k] += ent.kwh_rate * f64::from(m + 1) * weight(ts);
            }
            if midnight {
                let day_before = ts - Duration::seconds(1);
                let days = f64::from(day_before.with_timezone(&CST).day());
                let figures = std::iter::once(("value_added", ent.value_added_per_day))
                    .chain(ent.money_per_day.iter().map(|(k, v)| (k.as_str(), *v)));
                for (indicator, per_day) in figures {
                    items.push((
                        ent.id.clone(),
                        Item::Reading(Reading {
                            indicator: indicator.into(),
                            point: String::new(),
                            value: per_day * days,
                            unit: "10k_yuan".into(),
                            ts: None,
                            period: Some(Period::month_of(day_before)),
                        }),
                    ));
                }
            }
        }
        items
    }

    /// The readings of a first tick now, for `zonesync-agent check`.
    pub fn probe(&self) -> crate::sources::probe::ProbeRow {
        use crate::sources::probe::{ProbeRead, ProbeRow};
        let mut counters: Vec<f64> = self
            .enterprises
            .iter()
            .enumerate()
            .flat_map(|(e, _)| (0..self.meters_per_enterprise).map(move |m| initial_counter(e, m)))
            .collect();
        let reads = self
            .tick_items(0, self.start.unwrap_or_else(Utc::now), &mut counters)
            .into_iter()
            .filter_map(|(_, item)| match item {
                Item::Reading(r) => Some(ProbeRead {
                    indicator: r.indicator,
                    point: r.point,
                    value: r.value,
                    unit: r.unit,
                }),
                Item::Declaration(_) => None,
            })
            .collect();
        ProbeRow {
            source: "simulator".into(),
            target: format!("{} enterprises", self.enterprises.len()),
            result: Ok(reads),
        }
    }

    /// Runs until `max_ticks` or shutdown, appending each tick to the outbox.
    pub async fn run(self, outbox: Arc<Outbox>, mut shutdown: Shutdown) -> Result<(), OutboxError> {
        let mut cursor = match outbox
            .cursor(SOURCE)?
            .and_then(|c| serde_json::from_slice::<Cursor>(&c).ok())
        {
            Some(c) => c,
            None => Cursor {
                tick: 0,
                start: self.start.unwrap_or_else(Utc::now),
                counters: self
                    .enterprises
                    .iter()
                    .enumerate()
                    .flat_map(|(e, _)| (0..self.meters_per_enterprise).map(move |m| initial_counter(e, m)))
                    .collect(),
            },
        };
        if cursor.counters.len() != self.enterprises.len() * self.meters_per_enterprise as usize {
            tracing::warn!("simulator enterprises changed since the last run; restarting its counters");
            cursor.counters = self
                .enterprises
                .iter()
                .enumerate()
                .flat_map(|(e, _)| (0..self.meters_per_enterprise).map(move |m| initial_counter(e, m)))
                .collect();
        }
        let step = self.step();
        let interval = std::time::Duration::from_millis(self.interval_ms);
        loop {
            if self.max_ticks.is_some_and(|n| cursor.tick >= n) {
                tracing::info!(ticks = cursor.tick, "simulator finished");
                return Ok(());
            }
            let ts = cursor.start + step * cursor.tick as i32;
            let ahead = (ts - Utc::now()).to_std().unwrap_or_default();
            let wait = ahead.max(interval);
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            let items = self.tick_items(cursor.tick, ts, &mut cursor.counters);
            cursor.tick += 1;
            let c = serde_json::to_vec(&cursor).unwrap_or_default();
            outbox.append(items, Some((SOURCE, &c)))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_of_fifteen_minute_ticks_adds_208_times_the_rate() {
        let start = DateTime::parse_from_rfc3339("2026-10-01T00:00:00+08:00")
            .unwrap()
            .with_timezone(&Utc);
        let cfg = SimulatorConfig {
            enterprises: vec![SimEnterprise {
                id: EnterpriseId::parse("91350100M000100Y43").unwrap(),
                kwh_rate: 10.0,
                value_added_per_day: 40.0,
                money_per_day: Default::default(),
            }],
            interval_ms: 1,
            step_secs: Some(900),
            start: Some(start),
            max_ticks: None,
            meters_per_enterprise: 2,
        };
        let mut counters = vec![initial_counter(0, 0), initial_counter(0, 1)];
        let mut va = Vec::new();
        for tick in 0..=96 {
            let ts = start + Duration::seconds(900 * tick);
            for (_, item) in cfg.tick_items(tick as u64, ts, &mut counters) {
                if let Item::Reading(r) = item {
                    if r.indicator == "value_added" {
                        va.push((r.period, r.value));
                    }
                }
            }
        }
        assert_eq!(counters[0] - initial_counter(0, 0), 10.0 * 208.0 + 10.0 * 1.0);
        assert_eq!(va, vec![(Some(Period::Month(2026, 10)), 40.0)]);
    }
}

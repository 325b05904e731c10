//! The aggregator's in-memory view of each zone, kept up to date as batches
//! are stored and rebuilt from the store at start-up. Pure: no I/O, no clock.
//!
//! Everything is keyed by zone first, so zones can later be split across
//! aggregator instances and their summaries rolled up to city and province.

mod agents;
mod by_point;
mod touched;

pub use agents::{numbering_key, AgentState, Announced, Numbering, MAX_SEQ_AHEAD};

use crate::energy::{delta, split_by_month, Delta};
use crate::facts::{Applied, Ledger, Op};
pub use by_point::ByPoint;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
pub use touched::{Touched, Window};
use zonesync_proto::{
    Accepted, AgentId, CanonicalReading, Catalog, DeclaredValue, EnterpriseId, OutboxId, Period, Presence, ReadingTime,
    ZoneId,
};

/// All zones.
#[derive(Debug, Default)]
pub struct State {
    /// Zone states by id.
    pub zones: BTreeMap<ZoneId, ZoneState>,
    /// The ledger [`State::apply`] feeds (tests, benches, tools that build a
    /// state without a store); empty in a running aggregator, whose ingest
    /// owns its ledger.
    feed: Ledger,
}

/// One zone.
#[derive(Debug, Default)]
pub struct ZoneState {
    /// Enterprises that have sent anything.
    pub enterprises: BTreeMap<EnterpriseId, EnterpriseState>,
    /// Agents seen.
    pub agents: BTreeMap<AgentId, AgentState>,
    /// Readings stored for the zone: distinct stored keys, as the rebuild counts them.
    pub readings_stored: u64,
    /// Stored values replaced by a later report (a corrected period figure) since
    /// start: applied, but not new readings. Not kept across restarts.
    pub readings_replaced: u64,
    /// Grows with every change to the zone's facts; cached goal tables compare it.
    pub version: u64,
}

/// What follows an enterprise's facts as batches change them — the goal
/// tallies (`goals::incremental`) — told what a batch can change before it
/// is applied, and shown the enterprise after. The read model knows nothing
/// of goals: they depend on it, not it on them.
pub trait Follower {
    /// `es` is about to change as `t` says.
    fn will_change(&mut self, enterprise: &EnterpriseId, es: &EnterpriseState, t: &Touched);
    /// `es` changed.
    fn changed(&mut self, enterprise: &EnterpriseId, es: &EnterpriseState);
}

/// Where an amount came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountSource {
    /// Reported by the enterprise for the period.
    Reported,
    /// Sum of reported months within the period.
    ReportedMonths,
    /// Derived from meter registers.
    Metered,
}

/// Most declared values kept per attribute in an enterprise's history: a
/// declaration changes a few times a year, so this is years of it.
pub const DECLARED_HISTORY: usize = 64;

/// One enterprise's facts.
#[derive(Debug, Default)]
pub struct EnterpriseState {
    /// Latest declared value per attribute.
    pub declarations: BTreeMap<String, DeclaredValue>,
    /// Each attribute's declared values with the time of the batch that
    /// carried them (its `sent_at`), oldest first, at most
    /// [`DECLARED_HISTORY`] per attribute: what an enterprise had declared
    /// at an earlier date, for the pace of a coverage goal (`goals::pace`),
    /// taken from the declarations' own times, never from today's state.
    pub declared_history: BTreeMap<String, Vec<(DateTime<Utc>, DeclaredValue)>>,
    /// Latest reading per (indicator, point).
    pub latest: ByPoint<(ReadingTime, f64)>,
    /// Consumption from registers per (indicator, month).
    /// (Keyed by indicator first so a lookup by `&str` allocates nothing:
    /// goal tables do millions of them.)
    pub metered: BTreeMap<String, BTreeMap<Period, f64>>,
    /// Amounts reported per indicator and period; the latest report wins.
    pub reported: BTreeMap<String, BTreeMap<Period, f64>>,
    /// Register falls treated as meter resets.
    pub counter_resets: u64,
    /// Registers that arrived after a later one of their series (each put in
    /// its place in time: the consumption either side is split exactly).
    pub late_readings: u64,
    /// Readings stored.
    pub readings: u64,
    /// Time-stamped readings per (indicator, point), for completeness.
    pub points: ByPoint<PointStats>,
}

/// How often a measuring point reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PointStats {
    /// First reading's time.
    pub first: Option<DateTime<Utc>>,
    /// Latest reading's time.
    pub last: Option<DateTime<Utc>>,
    /// Readings received per China-time month.
    pub per_month: BTreeMap<Period, u64>,
    /// Spacing between consecutive readings (seconds) → how often seen; its
    /// mode is the point's reporting interval.
    pub spacing: BTreeMap<i64, u64>,
}

impl PointStats {
    /// The interval the point reports at: the most common spacing.
    pub fn interval_secs(&self) -> Option<i64> {
        self.spacing
            .iter()
            .max_by_key(|(secs, n)| (**n, -**secs))
            .map(|(s, _)| *s)
    }

    fn note(&mut self, ts: DateTime<Utc>) {
        *self.per_month.entry(Period::month_of(ts)).or_default() += 1;
        if let Some(last) = self.last {
            let gap = (ts - last).num_seconds();
            // Keep the histogram small: only spacings seen in order count, and
            // rare values beyond 64 distinct ones are not tracked.
            if gap > 0 && (self.spacing.len() < 64 || self.spacing.contains_key(&gap)) {
                *self.spacing.entry(gap).or_default() += 1;
            }
        }
        self.first = Some(self.first.map_or(ts, |f| f.min(ts)));
        self.last = Some(self.last.map_or(ts, |l| l.max(ts)));
    }
}

impl EnterpriseState {
    /// Applies one change the ledger made to `batch` (see [`crate::facts::Op`]).
    pub fn apply_op(&mut self, op: &Op, batch: &Accepted) {
        match op {
            Op::Instant {
                reading,
                ts,
                value,
                old,
                counter,
                prev,
                next,
                late,
            } => {
                let Some(r) = batch.readings.get(*reading) else { return };
                let indicator = r.indicator.as_str();
                let at = ReadingTime::Ts(*ts);
                self.latest.update(
                    indicator,
                    &r.point,
                    || (at, *value),
                    |held| {
                        if end_of(&at) >= end_of(&held.0) {
                            *held = (at, *value);
                        }
                    },
                );
                if old.is_none() {
                    self.readings += 1;
                    self.points
                        .update(indicator, &r.point, PointStats::default, |p| p.note(*ts));
                }
                if *late {
                    self.late_readings += 1;
                }
                if *counter {
                    let now = (*ts, *value);
                    match old {
                        // A register replaced in place: both intervals at it change.
                        Some(o) => {
                            let was = (*ts, *o);
                            if let Some(p) = prev {
                                self.unmeter(indicator, *p, was);
                                self.meter(indicator, p.0, p.1, now.0, now.1);
                            }
                            if let Some(n) = next {
                                self.unmeter(indicator, was, *n);
                                self.meter(indicator, now.0, now.1, n.0, n.1);
                            }
                        }
                        // A new register splits the interval it falls in.
                        None => {
                            if let (Some(p), Some(n)) = (prev, next) {
                                self.unmeter(indicator, *p, *n);
                            }
                            if let Some(p) = prev {
                                self.meter(indicator, p.0, p.1, now.0, now.1);
                            }
                            if let Some(n) = next {
                                self.meter(indicator, now.0, now.1, n.0, n.1);
                            }
                        }
                    }
                }
            }
            Op::Period {
                reading,
                period,
                value,
                replaced,
            } => {
                let Some(r) = batch.readings.get(*reading) else { return };
                let at = ReadingTime::Period(*period);
                self.latest.update(
                    &r.indicator,
                    &r.point,
                    || (at, *value),
                    |held| {
                        if end_of(&at) >= end_of(&held.0) {
                            *held = (at, *value);
                        }
                    },
                );
                if !replaced {
                    self.readings += 1;
                }
                let periods = match self.reported.get_mut(r.indicator.as_str()) {
                    Some(p) => p,
                    None => self.reported.entry(r.indicator.to_string()).or_default(),
                };
                periods.insert(*period, *value);
            }
            Op::Declared { declaration } => {
                if let Some((code, value)) = batch.declarations.get(*declaration) {
                    self.declarations.insert(code.clone(), value.clone());
                    let h = self.declared_history.entry(code.clone()).or_default();
                    let at = h.partition_point(|(t, _)| *t <= batch.sent_at);
                    h.insert(at, (batch.sent_at, value.clone()));
                    if h.len() > DECLARED_HISTORY {
                        h.remove(0);
                    }
                }
            }
        }
    }

    /// The months of one indicator's metered consumption, created on first use.
    fn metered_mut(&mut self, indicator: &str) -> &mut BTreeMap<Period, f64> {
        if !self.metered.contains_key(indicator) {
            self.metered.insert(indicator.to_owned(), BTreeMap::new());
        }
        match self.metered.get_mut(indicator) {
            Some(m) => m,
            None => unreachable!("inserted just above"),
        }
    }

    /// Adds the consumption between two registers to the months it spans.
    fn meter(&mut self, indicator: &str, from_ts: DateTime<Utc>, from: f64, to_ts: DateTime<Utc>, to: f64) {
        let d = delta(from, to);
        if matches!(d, Delta::Reset(_)) {
            self.counter_resets += 1;
        }
        let months = self.metered_mut(indicator);
        for (month, amount) in split_by_month(from_ts, to_ts, d.amount()) {
            *months.entry(month).or_default() += amount;
        }
    }

    /// Takes back the consumption between two registers (a late register
    /// between them splits the interval in two).
    fn unmeter(&mut self, indicator: &str, from: (DateTime<Utc>, f64), to: (DateTime<Utc>, f64)) {
        let d = delta(from.1, to.1);
        if matches!(d, Delta::Reset(_)) {
            self.counter_resets = self.counter_resets.saturating_sub(1);
        }
        let months = self.metered_mut(indicator);
        for (month, amount) in split_by_month(from.0, to.0, d.amount()) {
            *months.entry(month).or_default() -= amount;
        }
    }

    /// The amount of `indicator` in `period`: reported for the period, else
    /// the sum of reported months, else metered.
    pub fn amount(&self, indicator: &str, period: Period) -> Option<(f64, AmountSource)> {
        let reported = self.reported.get(indicator);
        if let Some(v) = reported.and_then(|r| r.get(&period)) {
            return Some((*v, AmountSource::Reported));
        }
        let months = period.months();
        if let (Some(r), true) = (reported, months.len() > 1) {
            let parts: Vec<f64> = months.iter().filter_map(|m| r.get(m).copied()).collect();
            if !parts.is_empty() {
                return Some((parts.iter().sum(), AmountSource::ReportedMonths));
            }
        }
        let metered: Vec<f64> = match self.metered.get(indicator) {
            Some(m) => months.iter().filter_map(|p| m.get(p).copied()).collect(),
            None => Vec::new(),
        };
        if metered.is_empty() {
            None
        } else {
            Some((metered.iter().sum(), AmountSource::Metered))
        }
    }
}

/// One energy carrier's amount in a period.
#[derive(Debug, Clone, Serialize)]
pub struct CarrierAmount {
    /// Catalog code.
    pub indicator: String,
    /// Amount in the canonical unit.
    pub amount: f64,
    /// Canonical unit.
    pub unit: String,
    /// Tonnes of standard coal.
    pub tce: f64,
    /// Where the amount came from.
    pub source: AmountSource,
}

fn end_of(at: &ReadingTime) -> DateTime<Utc> {
    match at {
        ReadingTime::Ts(t) => *t,
        ReadingTime::Period(p) => p.end(),
    }
}

impl State {
    /// The zone's state, created on first use.
    pub fn zone_mut(&mut self, zone: &ZoneId) -> &mut ZoneState {
        self.zones.entry(zone.clone()).or_default()
    }

    /// Applies what the ledger did for one batch of `enterprise` (see
    /// [`crate::facts::Ledger::apply`]) to the read model, and brings the
    /// zone's goal tallies up to date with the enterprise's new contributions.
    pub fn apply_applied(
        &mut self,
        batch: &Accepted,
        applied: &Applied,
        catalog: &Catalog,
        follower: Option<&mut dyn Follower>,
    ) {
        let (zone, enterprise) = (&batch.zone, &batch.enterprise);
        let zs = self.zone_mut(zone);
        zs.readings_stored += applied.new_readings as u64;
        zs.readings_replaced += applied.replaced as u64;
        zs.version += 1;
        let es = zs.enterprises.entry(enterprise.clone()).or_default();
        let mut follower = follower;
        if let Some(f) = follower.as_deref_mut() {
            f.will_change(enterprise, es, &Touched::of_ops(&applied.ops, batch, catalog));
        }
        for op in &applied.ops {
            es.apply_op(op, batch);
        }
        if let Some(f) = follower {
            f.changed(enterprise, es);
        }
    }

    /// Feeds readings and declarations for one enterprise through the
    /// state's own ledger as one batch of a fixed numbering and applies what
    /// it made: how tests and benches build a state without a store.
    pub fn apply(
        &mut self,
        zone: &ZoneId,
        enterprise: &EnterpriseId,
        readings: &[CanonicalReading],
        declarations: &[(String, DeclaredValue)],
        catalog: &Catalog,
    ) {
        self.apply_following(zone, enterprise, readings, declarations, catalog, None);
    }

    /// As [`State::apply`], keeping `follower` (a zone's goal tallies) in step.
    pub fn apply_following(
        &mut self,
        zone: &ZoneId,
        enterprise: &EnterpriseId,
        readings: &[CanonicalReading],
        declarations: &[(String, DeclaredValue)],
        catalog: &Catalog,
        follower: Option<&mut dyn Follower>,
    ) {
        let agent = AgentId::parse("feed").unwrap_or_else(|_| unreachable!("a valid agent id"));
        let seq = self
            .feed
            .highest(zone, &agent, &None)
            .map_or(1, |h| h.saturating_add(1));
        let a = Accepted {
            agent,
            boot: 1,
            outbox: None,
            seq,
            digest: seq.to_string(),
            sent_at: DateTime::<Utc>::UNIX_EPOCH,
            zone: zone.clone(),
            enterprise: enterprise.clone(),
            backfill: false,
            readings: readings.to_vec(),
            declarations: declarations.to_vec(),
            refused: Vec::new(),
        };
        if let Some(applied) = self.feed.apply(&a, catalog) {
            self.apply_applied(&a, &applied, catalog, follower);
        }
    }

    /// Notes a stored batch from an agent (liveness, gaps, clock offset).
    /// `sent_at` is only shown (as the offset); it decides nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn note_batch(
        &mut self,
        zone: &ZoneId,
        agent: &AgentId,
        outbox: Option<&OutboxId>,
        boot: u64,
        seq: u64,
        sent_at: DateTime<Utc>,
        received: DateTime<Utc>,
    ) {
        let a = self.zone_mut(zone).agents.entry(agent.clone()).or_default();
        let current = a.outbox.as_ref() == outbox;
        let n = a.numbering_mut(outbox);
        // Gaps are counted within one outbox and one boot only.
        if let (Some(last), true) = (n.highest, boot == a.boot) {
            if seq > last.saturating_add(1) {
                let gap = seq - last - 1;
                a.seq_gaps = a.seq_gaps.saturating_add(gap);
            }
        }
        let n = a.numbering_mut(outbox);
        n.highest = Some(n.highest.map_or(seq, |l| l.max(seq)));
        let highest = n.highest;
        if current || a.last_seq.is_none() {
            a.last_seq = highest;
        }
        a.boot = a.boot.max(boot);
        a.last_seen = Some(received);
        a.last_batch_at = Some(received);
        a.clock_offset_secs = Some((sent_at - received).num_seconds());
    }

    /// Counts a dead letter left by a batch refused for its numbering
    /// (`reused_seq`, `seq_ahead`) against its agent, as ingest did live.
    pub fn note_numbering_refusal(&mut self, d: &crate::dead_letters::DeadLetter) {
        let (Some(zone), Some(agent)) = (
            d.zone.as_deref().and_then(|z| ZoneId::parse(z).ok()),
            d.agent.as_deref().and_then(|a| AgentId::parse(a).ok()),
        ) else {
            return;
        };
        let reused = d.labels.iter().any(|l| l == zonesync_proto::REFUSED_REUSED_SEQ);
        let ahead = d.labels.iter().any(|l| l == "seq_ahead");
        if !(reused || ahead) {
            return;
        }
        let a = self.zone_mut(&zone).agents.entry(agent).or_default();
        if reused {
            a.refused_reused_seq += 1;
        } else {
            a.refused_seq_ahead += 1;
        }
        a.last_numbering_refusal_at = Some(
            a.last_numbering_refusal_at
                .map_or(d.received_at, |t| t.max(d.received_at)),
        );
    }

    /// Counts backfilled readings stored from an agent.
    pub fn note_backfill(&mut self, zone: &ZoneId, agent: &AgentId, readings: u64) {
        self.zone_mut(zone)
            .agents
            .entry(agent.clone())
            .or_default()
            .backfilled_readings += readings;
    }

    /// Applies a presence message.
    pub fn apply_presence(&mut self, p: &Presence, received: DateTime<Utc>) {
        let a = self.zone_mut(&p.zone).agents.entry(p.agent.clone()).or_default();
        a.status = Some(p.status);
        a.boot = a.boot.max(p.boot);
        a.last_seen = Some(a.last_seen.map_or(received, |t| t.max(received)));
        a.dropped_readings = p.dropped_readings;
        a.dropped_sent_readings = p.dropped_sent_readings;
        a.broker_denied_batches = p.broker_denied_batches;
        if p.clock_offset_ms.is_some() {
            a.measured_clock_offset_ms = p.clock_offset_ms;
        }
        a.announced = Some(Announced {
            boot: p.boot,
            next_seq: p.next_seq,
            at: received,
        });
        a.numbering_mut(p.outbox.as_ref()).announced = Some(p.next_seq);
        if a.outbox != p.outbox {
            // A new outbox (reinstalled gateway, restored or rotated outbox):
            // gaps and missing numbers are judged in its numbering from now on.
            a.outbox = p.outbox.clone();
            a.last_seq = a.numbering_mut(p.outbox.as_ref()).highest;
        }
    }
}

#[cfg(test)]
mod tests;

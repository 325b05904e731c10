//! The ledger: every fact the aggregator holds and every rule about which
//! fact stands, as pure code (no store, no clock, no lock). Ingest hands it
//! each accepted batch in arrival order; it answers whether the batch is new,
//! a redelivery or a reused sequence number, and for a new batch returns the
//! [`Op`]s it made — which the read model ([`crate::state`]) and the goal
//! tallies follow. Rebuilding after a restart replays the stored batches
//! through the same code, so what is rebuilt is what was live.
//!
//! The rules:
//! - **Identity**: a batch is (agent, outbox, seq) plus the digest of its
//!   payload. The same mark with the same digest is a redelivery; with
//!   another digest, a reused sequence number, refused.
//! - **Instants** (registers, gauges): one value per series and instant. A
//!   different value for a held instant replaces it when sent live and not
//!   overtaken; a backfilled batch, or one overtaken in its own outbox (a
//!   resend arriving after later batches), never replaces a held instant.
//!   Within a batch the later value wins.
//! - **Restated figures** (period amounts, declarations) carry the stamp of
//!   the batch that wrote them. In the same outbox the later seq wins; across
//!   outboxes or agents no number or clock compares, so the batch that
//!   arrives later wins unless it was overtaken in its own outbox.
//! - **Registers** are kept sorted by time per series; one arriving between
//!   two held ones splits their interval exactly, so consumption per month is
//!   that of time order whatever the arrival order (resets included).

use super::series::{Point, Series};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use zonesync_proto::{
    Accepted, AgentId, CanonicalReading, Catalog, DeclaredValue, EnterpriseId, IndicatorKind, OutboxId, Period,
    ReadingTime, ZoneId,
};

/// What a batch is to the ledger, before anything is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Not seen: to be stored and applied.
    New,
    /// Seen with the same digest: a redelivery.
    Duplicate,
    /// Seen with another digest (`held`): a reused sequence number.
    Reused {
        /// The digest held under the mark.
        held: String,
    },
}

/// One change a batch made to an enterprise's facts, in the order made.
/// Ops name the batch's reading or declaration by index rather than copying
/// its codes: whoever applies them holds the batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The value of `batch.readings[reading]` at its instant, new (`old` is
    /// `None`) or replacing `old`. For counters, `prev` and `next` are the
    /// registers either side of it.
    Instant {
        /// Index into the batch's readings.
        reading: usize,
        /// When.
        ts: DateTime<Utc>,
        /// The value now held.
        value: f64,
        /// The value it replaced.
        old: Option<f64>,
        /// A cumulative register (consumption is metered between registers).
        counter: bool,
        /// The register before it in time.
        prev: Option<Point>,
        /// The register after it in time.
        next: Option<Point>,
        /// It arrived after a later instant of its series was held.
        late: bool,
    },
    /// `batch.readings[reading]`, a period figure, new or replacing the held one.
    Period {
        /// Index into the batch's readings.
        reading: usize,
        /// The period.
        period: Period,
        /// The value now held.
        value: f64,
        /// It replaced a different value.
        replaced: bool,
    },
    /// `batch.declarations[declaration]` now holds.
    Declared {
        /// Index into the batch's declarations.
        declaration: usize,
    },
}

/// What applying a new batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The changes, in order.
    pub ops: Vec<Op>,
    /// Readings new to the ledger.
    pub new_readings: usize,
    /// Readings that replaced a held value.
    pub replaced: usize,
    /// Readings held already with the same value.
    pub duplicate_readings: usize,
    /// Readings and declarations not applied because what is held is newer.
    pub stale: usize,
    /// Declarations applied (new, changed or restated unchanged).
    pub declarations: usize,
}

/// Which batch wrote a restated fact: the numbering (agent and outbox, as
/// an index into the zone's numberings) and its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    numbering: usize,
    seq: u64,
}

#[derive(Debug, Clone)]
struct Held<T> {
    value: T,
    stamp: Stamp,
}

/// The marks of one outbox's numbering: seq → digest.
#[derive(Debug, Default)]
struct Marks {
    seqs: BTreeMap<u64, String>,
}

#[derive(Debug, Default)]
struct EnterpriseFacts {
    /// Indicator → point → series (nested, so a lookup by `&str` allocates
    /// nothing). Indicators are catalog codes, hashed fast; point names are
    /// chosen by whoever holds an agent's credentials, so they get std's
    /// randomly keyed hash, which no sender can make collide at will.
    series: FxMap<String, HashMap<String, Series>>,
    periods: HashMap<(String, String, Period), Held<f64>>,
    declarations: HashMap<String, Held<DeclaredValue>>,
    /// Every (indicator, point) held, instants and periods alike: what the
    /// series limits count. Grown only where a series is first made.
    names: HashSet<(String, String)>,
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A small, fast, non-cryptographic hasher (the rustc "Fx" hash), only for
/// keys a sender cannot choose freely: indicator codes, which the validator
/// took from the catalog. Anything a sender names (point names) is hashed
/// with std's randomly keyed `RandomState` instead: Fx collisions are easy
/// to craft, and many colliding keys would make every lookup a scan.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[derive(Debug, Default)]
struct ZoneFacts {
    enterprises: HashMap<EnterpriseId, EnterpriseFacts>,
    /// Agent → outbox → index into `marks` (nested, so a lookup borrows the batch's ids).
    numbering_ids: HashMap<AgentId, HashMap<Option<OutboxId>, usize>>,
    marks: Vec<Marks>,
    /// Series each agent brought in (the first to report them).
    introduced: HashMap<AgentId, usize>,
}

/// Every fact of every zone, and the rules.
#[derive(Debug, Default)]
pub struct Ledger {
    zones: HashMap<ZoneId, ZoneFacts>,
}

impl ZoneFacts {
    fn numbering(&mut self, agent: &AgentId, outbox: &Option<OutboxId>) -> usize {
        if let Some(i) = self.numbering_of(agent, outbox) {
            return i;
        }
        self.marks.push(Marks::default());
        let i = self.marks.len() - 1;
        self.numbering_ids
            .entry(agent.clone())
            .or_default()
            .insert(outbox.clone(), i);
        i
    }

    fn numbering_of(&self, agent: &AgentId, outbox: &Option<OutboxId>) -> Option<usize> {
        self.numbering_ids.get(agent)?.get(outbox).copied()
    }
}

impl Ledger {
    /// What `a` is: new, a redelivery, or a reused sequence number.
    pub fn identify(&self, a: &Accepted) -> Identity {
        let held = self
            .zones
            .get(&a.zone)
            .and_then(|z| z.numbering_of(&a.agent, &a.outbox).map(|i| (z, i)))
            .and_then(|(z, i)| z.marks.get(i))
            .and_then(|m| m.seqs.get(&a.seq));
        match held {
            None => Identity::New,
            Some(d) if d == &a.digest => Identity::Duplicate,
            Some(d) => Identity::Reused { held: d.clone() },
        }
    }

    /// The highest seq held under an outbox's numbering.
    pub fn highest(&self, zone: &ZoneId, agent: &AgentId, outbox: &Option<OutboxId>) -> Option<u64> {
        let z = self.zones.get(zone)?;
        let i = z.numbering_of(agent, outbox)?;
        z.marks.get(i)?.seqs.keys().next_back().copied()
    }

    /// Applies a batch [`Ledger::identify`] found new; returns what changed.
    /// A batch that is not new changes nothing and returns `None`.
    pub fn apply(&mut self, a: &Accepted, catalog: &Catalog) -> Option<Applied> {
        if self.identify(a) != Identity::New {
            return None;
        }
        let z = match self.zones.get_mut(&a.zone) {
            Some(z) => z,
            None => self.zones.entry(a.zone.clone()).or_default(),
        };
        let numbering = z.numbering(&a.agent, &a.outbox);
        let marks = z.marks.get_mut(numbering)?;
        // Overtaken: a later batch of the same outbox is held already.
        let overtaken = marks.seqs.keys().next_back().is_some_and(|h| *h > a.seq);
        marks.seqs.insert(a.seq, a.digest.clone());
        let stamp = Stamp { numbering, seq: a.seq };
        let may_replace = |held: Stamp| {
            if held.numbering == stamp.numbering {
                stamp.seq >= held.seq
            } else {
                !overtaken
            }
        };
        let ent = match z.enterprises.get_mut(&a.enterprise) {
            Some(e) => e,
            None => z.enterprises.entry(a.enterprise.clone()).or_default(),
        };
        let mut out = Applied {
            ops: Vec::with_capacity(a.readings.len() + a.declarations.len()),
            ..Applied::default()
        };
        // A key sent twice in one batch is one fact, the later value.
        let mut earlier = EarlierInBatch::default();
        let mut introduced = 0usize;
        // Whether an indicator is a counter, for the last one asked: a batch
        // is nearly always one indicator, so the catalog is searched once.
        let mut kind: Option<(&str, bool)> = None;
        for (i, r) in a.readings.iter().enumerate() {
            match r.at {
                ReadingTime::Ts(ts) => {
                    let counter = match kind {
                        Some((code, counter)) if code == r.indicator.as_str() => counter,
                        _ => {
                            let counter = catalog.get(&r.indicator).map_or(IndicatorKind::Gauge, |i| i.kind)
                                == IndicatorKind::Counter;
                            kind = Some((r.indicator.as_str(), counter));
                            counter
                        }
                    };
                    let points = match ent.series.get_mut(r.indicator.as_str()) {
                        Some(p) => p,
                        None => ent.series.entry(r.indicator.to_string()).or_default(),
                    };
                    let series = match points.get_mut(r.point.as_str()) {
                        Some(s) => s,
                        None => {
                            if ent.names.insert((r.indicator.to_string(), r.point.to_string())) {
                                introduced += 1;
                            }
                            points.entry(r.point.to_string()).or_default()
                        }
                    };
                    let old = series.get(ts);
                    let replace = match old {
                        None => true,
                        Some(v) if same(v, r.value) => {
                            out.duplicate_readings += 1;
                            continue;
                        }
                        Some(_) => !(a.backfill || overtaken) || earlier.holds(&a.readings, i),
                    };
                    if !replace {
                        out.stale += 1;
                        continue;
                    }
                    let (prev, next) = series.set(ts, r.value);
                    // New and with a later register held: it arrived late.
                    let late = old.is_none() && next.is_some();
                    count(&mut out, old.is_some());
                    out.ops.push(Op::Instant {
                        reading: i,
                        ts,
                        value: r.value,
                        old,
                        counter,
                        prev: prev.filter(|_| counter),
                        next: next.filter(|_| counter),
                        late,
                    });
                }
                ReadingTime::Period(p) => {
                    let key = (r.indicator.to_string(), r.point.to_string(), p);
                    let replaced = match ent.periods.get(&key) {
                        None => {
                            if ent.names.insert((key.0.clone(), key.1.clone())) {
                                introduced += 1;
                            }
                            false
                        }
                        Some(h) if same(h.value, r.value) => {
                            out.duplicate_readings += 1;
                            continue;
                        }
                        Some(h) if may_replace(h.stamp) || earlier.holds(&a.readings, i) => true,
                        Some(_) => {
                            out.stale += 1;
                            continue;
                        }
                    };
                    ent.periods.insert(key, Held { value: r.value, stamp });
                    count(&mut out, replaced);
                    out.ops.push(Op::Period {
                        reading: i,
                        period: p,
                        value: r.value,
                        replaced,
                    });
                }
            }
        }
        for (i, (code, value)) in a.declarations.iter().enumerate() {
            if let Some(h) = ent.declarations.get(code) {
                if !may_replace(h.stamp) {
                    out.stale += 1;
                    continue;
                }
            }
            out.declarations += 1;
            ent.declarations.insert(
                code.clone(),
                Held {
                    value: value.clone(),
                    stamp,
                },
            );
            out.ops.push(Op::Declared { declaration: i });
        }
        if introduced > 0 {
            *z.introduced.entry(a.agent.clone()).or_default() += introduced;
        }
        Some(out)
    }

    /// The readings of `a` that would make a series past `limits`, each with
    /// the limit it would pass, in reading order; none if the batch fits.
    /// Pure: nothing is counted until the batch, without them, is applied.
    /// Costs nothing per reading unless the enterprise or the agent is
    /// within one batch of its limit.
    pub fn over_series_limits(&self, a: &Accepted, limits: SeriesLimits) -> Vec<(usize, SeriesLimit)> {
        let zone = self.zones.get(&a.zone);
        let ent = zone.and_then(|z| z.enterprises.get(&a.enterprise));
        let held = ent.map_or(0, |e| e.names.len());
        let introduced = zone.and_then(|z| z.introduced.get(&a.agent)).copied().unwrap_or(0);
        let n = a.readings.len();
        if held.saturating_add(n) <= limits.per_enterprise && introduced.saturating_add(n) <= limits.per_agent {
            return Vec::new();
        }
        let mut fresh: HashSet<(String, String)> = HashSet::new();
        let mut over = Vec::new();
        for (i, r) in a.readings.iter().enumerate() {
            let key = (r.indicator.to_string(), r.point.to_string());
            if ent.is_some_and(|e| e.names.contains(&key)) || fresh.contains(&key) {
                continue;
            }
            if held + fresh.len() >= limits.per_enterprise {
                over.push((i, SeriesLimit::Enterprise(limits.per_enterprise)));
            } else if introduced + fresh.len() >= limits.per_agent {
                over.push((i, SeriesLimit::Agent(limits.per_agent)));
            } else {
                fresh.insert(key);
            }
        }
        over
    }
}

/// How many distinct series (indicator and point) the ledger takes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    /// Per enterprise, from every agent.
    pub per_enterprise: usize,
    /// Brought in by one agent, over all its enterprises.
    pub per_agent: usize,
}

/// Which series limit a reading would pass, and that limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesLimit {
    /// The enterprise's (`max_series_per_enterprise`).
    Enterprise(usize),
    /// The agent's (`max_series_per_agent`).
    Agent(usize),
}

impl SeriesLimit {
    /// Metric and dead-letter label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Enterprise(_) => "series_limit_enterprise",
            Self::Agent(_) => "series_limit_agent",
        }
    }
}

/// Whether a batch's reading repeats the key (indicator, point, time) of an
/// earlier reading of the same batch. Asked only where a held value would
/// otherwise be kept, which is rare, so the set is built on the first
/// question, from the readings before it, and kept up to date from there.
#[derive(Default)]
struct EarlierInBatch<'a> {
    /// Keyed by point names too: std's randomly keyed hash (see [`FxHasher`]).
    keys: HashSet<(&'a str, &'a str, ReadingTime)>,
    /// Readings before this index are in `keys`.
    upto: usize,
}

impl<'a> EarlierInBatch<'a> {
    fn holds(&mut self, readings: &'a [CanonicalReading], i: usize) -> bool {
        let key = |r: &'a CanonicalReading| (r.indicator.as_str(), r.point.as_str(), r.at);
        for r in readings.get(self.upto..i).unwrap_or_default() {
            self.keys.insert(key(r));
        }
        self.upto = self.upto.max(i);
        readings.get(i).is_some_and(|r| self.keys.contains(&key(r)))
    }
}

/// The same stored value: bit for bit, as the store always compared them.
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

fn count(out: &mut Applied, replaced: bool) {
    if replaced {
        out.replaced += 1;
    } else {
        out.new_readings += 1;
    }
}

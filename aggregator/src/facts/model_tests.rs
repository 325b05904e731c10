//! Model-based test of the fact core: the ledger and the read model are
//! driven with random batches — resends, reorderings, meter resets,
//! restatements, backfill, reused and forged sequence numbers, outboxes
//! restored from a copy or replaced — and compared after every step with a
//! plain reference model that keeps every accepted batch in a list and
//! recomputes everything from scratch (registers sorted and walked in time
//! order, restated figures folded in arrival order).

use super::{Identity, Ledger};
use crate::energy::{delta, split_by_month};
use crate::state::State;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, HashMap};
use zonesync_proto::rng::SplitMix64;
use zonesync_proto::{
    Accepted, AgentId, CanonicalReading, Catalog, DeclaredValue, EnterpriseId, OutboxId, Period, ReadingTime, ZoneId,
};

/// The reference: batches accepted so far, in arrival order.
#[derive(Default)]
struct Reference {
    accepted: Vec<Accepted>,
}

type Numbering = (AgentId, Option<OutboxId>);

fn numbering(a: &Accepted) -> Numbering {
    (a.agent.clone(), a.outbox.clone())
}

/// What the reference holds for one enterprise, recomputed from scratch.
#[derive(Debug, Default, PartialEq)]
struct Held {
    instants: BTreeMap<(String, String, i64), f64>,
    periods: BTreeMap<(String, Period), f64>,
    declarations: BTreeMap<String, DeclaredValue>,
}

impl Reference {
    fn identify(&self, a: &Accepted) -> Identity {
        match self
            .accepted
            .iter()
            .find(|b| numbering(b) == numbering(a) && b.seq == a.seq)
        {
            None => Identity::New,
            Some(b) if b.digest == a.digest => Identity::Duplicate,
            Some(b) => Identity::Reused { held: b.digest.clone() },
        }
    }

    /// Folds every accepted batch, in arrival order, with the rules as stated.
    fn held(&self, e: &EnterpriseId) -> Held {
        let mut h = Held::default();
        let mut stamps: HashMap<String, (Numbering, u64)> = HashMap::new();
        for (i, b) in self.accepted.iter().enumerate() {
            let overtaken = self.accepted[..i]
                .iter()
                .any(|o| numbering(o) == numbering(b) && o.seq > b.seq);
            let wins = |held: &(Numbering, u64)| {
                if held.0 == numbering(b) {
                    b.seq >= held.1
                } else {
                    !overtaken
                }
            };
            if &b.enterprise != e {
                continue;
            }
            let mut in_batch = Vec::new();
            for r in &b.readings {
                let from_batch = in_batch.contains(&(r.indicator.clone(), r.point.clone(), r.at));
                in_batch.push((r.indicator.clone(), r.point.clone(), r.at));
                match r.at {
                    ReadingTime::Ts(t) => {
                        let k = (r.indicator.to_string(), r.point.to_string(), t.timestamp_micros());
                        let replace = match h.instants.get(&k) {
                            None => true,
                            Some(v) if v.to_bits() == r.value.to_bits() => false,
                            Some(_) => from_batch || !(b.backfill || overtaken),
                        };
                        if replace {
                            h.instants.insert(k, r.value);
                        }
                    }
                    ReadingTime::Period(p) => {
                        let k = (r.indicator.to_string(), p);
                        let sk = format!("p{}{p}", r.indicator);
                        let replace = match (h.periods.get(&k), stamps.get(&sk)) {
                            (None, _) => true,
                            (Some(v), _) if v.to_bits() == r.value.to_bits() => false,
                            (Some(_), Some(s)) => from_batch || wins(s),
                            (Some(_), None) => true,
                        };
                        if replace {
                            h.periods.insert(k, r.value);
                            stamps.insert(sk, (numbering(b), b.seq));
                        }
                    }
                }
            }
            for (code, v) in &b.declarations {
                let sk = format!("d{code}");
                if stamps.get(&sk).is_none_or(wins) {
                    h.declarations.insert(code.clone(), v.clone());
                    stamps.insert(sk, (numbering(b), b.seq));
                }
            }
        }
        h
    }
}

/// Consumption per month from registers walked in time order.
fn metered_from_scratch(h: &Held, indicator: &str) -> BTreeMap<Period, f64> {
    let mut out = BTreeMap::new();
    let mut by_point: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for ((ind, point, t), v) in &h.instants {
        if ind == indicator {
            by_point.entry(point).or_default().push((*t, *v));
        }
    }
    for regs in by_point.values() {
        for w in regs.windows(2) {
            let (a, b) = (w[0], w[1]);
            let at = |m| DateTime::<Utc>::from_timestamp_micros(m).expect("time");
            for (month, amount) in split_by_month(at(a.0), at(b.0), delta(a.1, b.1).amount()) {
                *out.entry(month).or_insert(0.0) += amount;
            }
        }
    }
    out
}

struct Gen {
    rng: SplitMix64,
    zone: ZoneId,
    enterprises: Vec<EnterpriseId>,
    agents: Vec<AgentId>,
    /// Per agent: its current outbox and next seq.
    outboxes: Vec<(Option<OutboxId>, u64)>,
    /// Batches made so far (for resends, restores and forgeries).
    made: Vec<Accepted>,
    /// Meter register per (enterprise, point).
    registers: HashMap<(usize, usize), f64>,
    digest: u64,
    base: DateTime<Utc>,
}

impl Gen {
    fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            zone: ZoneId::parse("z").expect("zone"),
            enterprises: (1..=2).map(crate::testkit::id).collect(),
            agents: ["gw-a", "gw-b"]
                .iter()
                .map(|a| AgentId::parse(a).expect("agent"))
                .collect(),
            outboxes: vec![(None, 1), (Some(OutboxId::from_random([1; 16])), 1)],
            made: Vec::new(),
            registers: HashMap::new(),
            digest: 0,
            base: DateTime::parse_from_rfc3339("2026-10-31T12:00:00Z")
                .expect("time")
                .with_timezone(&Utc),
        }
    }

    fn fresh_digest(&mut self) -> String {
        self.digest += 1;
        format!("d{}", self.digest)
    }

    /// A new batch from a random agent's current outbox.
    fn batch(&mut self) -> Accepted {
        let ai = self.rng.below(2) as usize;
        let ei = self.rng.below(2) as usize;
        let mut readings = Vec::new();
        for _ in 0..1 + self.rng.below(4) {
            match self.rng.below(4) {
                0 | 1 => {
                    let point = self.rng.below(2) as usize;
                    let reg = self.registers.entry((ei, point)).or_insert(1000.0);
                    *reg = if self.rng.below(12) == 0 {
                        (self.rng.below(5) as f64) * 0.5 // meter replaced
                    } else {
                        *reg + self.rng.below(40) as f64 * 0.25
                    };
                    let value = *reg;
                    // Hours across a month's end, any order.
                    let ts = self.base + Duration::minutes(self.rng.below(48) as i64 * 30);
                    readings.push(CanonicalReading {
                        indicator: "electricity".into(),
                        point: format!("M{point}").into(),
                        value,
                        at: ReadingTime::Ts(ts),
                    });
                }
                2 => readings.push(CanonicalReading {
                    indicator: "value_added".into(),
                    point: Default::default(),
                    value: self.rng.below(6) as f64 * 10.0,
                    at: ReadingTime::Period(Period::Month(2026, 10 + self.rng.below(2) as u32)),
                }),
                _ => readings.push(CanonicalReading {
                    indicator: "gas".into(),
                    point: Default::default(),
                    value: self.rng.below(3) as f64,
                    at: ReadingTime::Period(Period::Month(2026, 11)),
                }),
            }
        }
        let declarations = if self.rng.below(4) == 0 {
            vec![(
                "dt_maturity".to_owned(),
                DeclaredValue::Integer(self.rng.below(5) as i64),
            )]
        } else {
            Vec::new()
        };
        let (outbox, seq) = self.outboxes[ai].clone();
        self.outboxes[ai].1 += 1;
        let digest = self.fresh_digest();
        Accepted {
            agent: self.agents[ai].clone(),
            boot: 1,
            outbox,
            seq,
            digest,
            sent_at: self.base,
            zone: self.zone.clone(),
            enterprise: self.enterprises[ei].clone(),
            backfill: self.rng.below(8) == 0,
            readings,
            declarations,
            refused: Vec::new(),
        }
    }

    /// The next thing to arrive.
    fn next(&mut self) -> Accepted {
        let n = self.made.len() as u64;
        let a = match self.rng.below(20) {
            // A resend (lost confirmation, broker crash): an older batch again.
            0..=3 if n > 0 => self.made[self.rng.below(n) as usize].clone(),
            // A forger (or a restored outbox) reusing a mark with other content.
            4 if n > 0 => {
                let mut f = self.made[self.rng.below(n) as usize].clone();
                f.digest = self.fresh_digest();
                if let Some(r) = f.readings.first_mut() {
                    r.value += 1.0;
                }
                f
            }
            // An outbox restored from a copy numbers again from an older seq;
            // after the refusals its agent moves to a fresh outbox.
            5 => {
                let ai = self.rng.below(2) as usize;
                let id = self.rng.next_u64().to_be_bytes();
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&id);
                self.outboxes[ai] = (Some(OutboxId::from_random(bytes)), 1);
                self.batch()
            }
            // Seqs far ahead in an outbox (a forger claiming numbers).
            6 => {
                let mut b = self.batch();
                b.seq = b.seq.saturating_add(self.rng.below(1000));
                b
            }
            _ => self.batch(),
        };
        self.made.push(a.clone());
        a
    }
}

/// Drives the core and the reference with the same arrivals and compares them after every step.
fn run(seed: u64, steps: usize) -> Result<(), String> {
    let cat = Catalog::builtin().map_err(|e| e.to_string())?;
    let mut g = Gen::new(seed);
    let mut ledger = Ledger::default();
    let mut state = State::default();
    let mut reference = Reference::default();
    for step in 0..steps {
        let a = g.next();
        let (got, want) = (ledger.identify(&a), reference.identify(&a));
        if got != want {
            return Err(format!("step {step}: identity {got:?}, reference {want:?}"));
        }
        if got == Identity::New {
            reference.accepted.push(a.clone());
            let applied = ledger.apply(&a, &cat).ok_or("a new batch was not applied")?;
            state.apply_applied(&a, &applied, &cat, None);
        }
        for e in &g.enterprises {
            let want = reference.held(e);
            let es = state.zones.get(&g.zone).and_then(|z| z.enterprises.get(e));
            let reported: BTreeMap<(String, Period), f64> = es
                .map(|es| {
                    es.reported
                        .iter()
                        .flat_map(|(ind, m)| m.iter().map(move |(p, v)| ((ind.clone(), *p), *v)))
                        .collect()
                })
                .unwrap_or_default();
            if reported != want.periods {
                return Err(format!(
                    "step {step}, {e}: period figures {reported:?}, reference {:?}",
                    want.periods
                ));
            }
            let declared: BTreeMap<String, DeclaredValue> = es
                .map(|es| es.declarations.clone().into_iter().collect())
                .unwrap_or_default();
            if declared != want.declarations {
                return Err(format!(
                    "step {step}, {e}: declarations {declared:?}, reference {:?}",
                    want.declarations
                ));
            }
            let readings = es.map_or(0, |es| es.readings) as usize;
            if readings != want.instants.len() + want.periods.len() {
                return Err(format!(
                    "step {step}, {e}: {readings} readings, reference {}",
                    want.instants.len() + want.periods.len()
                ));
            }
            let metered = es
                .and_then(|es| es.metered.get("electricity"))
                .cloned()
                .unwrap_or_default();
            let expected = metered_from_scratch(&want, "electricity");
            for month in expected.keys().chain(metered.keys()) {
                let (x, y) = (
                    metered.get(month).copied().unwrap_or(0.0),
                    expected.get(month).copied().unwrap_or(0.0),
                );
                if (x - y).abs() > 1e-6 * (1.0 + y.abs()) {
                    return Err(format!("step {step}, {e}: {month} metered {x}, reference {y}"));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn the_core_agrees_with_the_reference_after_every_step() {
    for seed in [1, 7, 20261206] {
        if let Err(e) = run(seed, 400) {
            panic!("seed {seed}: {e}");
        }
    }
}

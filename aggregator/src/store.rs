//! All of the aggregator's storage, in one place (sled), so the fault tests
//! can judge it and a later backend swap touches one file.
//!
//! Keys in the `facts` tree (components separated by 0x00, which no id contains):
//! - `s` zone agent seq(u64 BE)                  → boot: batches already stored (the de-dup set)
//! - `r` zone enterprise indicator point timekey → value (f64 BE); timekey `t`+µs (u64 BE) or `p`+period
//! - `d` zone enterprise indicator               → declared value (JSON)
//! - `a` zone agent                              → last presence (JSON)
//!
//! A batch's de-dup mark and its readings go in one atomic `apply_batch`, so
//! after a crash either both are there or neither is. Callers `flush()` before
//! they acknowledge anything to the broker.

use crate::alerts::{AlertRecord, Event};
use crate::outbound::Delivery;
use crate::state::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use zonesync_proto::{
    Accepted, AgentId, CanonicalReading, Catalog, DeclaredValue, EnterpriseId, Period, Presence, ReadingTime, ZoneId,
};

/// Most dead letters kept; the oldest go first.
const DEAD_LETTER_CAP: usize = 100_000;

/// Most series whose newest stored time the store remembers (about 150 bytes
/// each, so some 30 MB); past this the memory is cleared and refilled.
const NEWEST_CAP: usize = 200_000;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store entry is corrupt: {0}")]
    Corrupt(String),
}

/// A payload or items refused, with the reasons.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Store id (grows with time).
    pub id: u64,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// MQTT topic.
    pub topic: String,
    /// Zone, if known.
    pub zone: Option<String>,
    /// Agent, if known.
    pub agent: Option<String>,
    /// Sequence number, if known.
    pub seq: Option<u64>,
    /// Every reason, human-readable.
    pub reasons: Vec<String>,
    /// Metric labels of the reasons.
    pub labels: Vec<String>,
    /// Whole batch refused (true) or only some items (false).
    pub whole_batch: bool,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Start of the payload, lossy UTF-8.
    pub excerpt: String,
}

/// Result of storing a batch.
#[derive(Debug)]
pub enum Outcome {
    /// (agent, seq) was stored before: nothing written.
    Duplicate,
    /// Stored; the batch's `readings` now hold only those new to the store.
    Stored {
        /// Readings already stored identically under another batch (dropped from the batch).
        duplicate_readings: usize,
        /// Fresh readings that replace a stored value at the same key (a corrected
        /// period figure): applied, but not new readings, so not counted as such.
        replaced: usize,
        /// Readings and declarations not written because a different value is
        /// already held that is newer (dropped from the batch): from a
        /// backfilled batch, or from a batch overtaken by the same agent's
        /// later ones (a resend after a lost confirmation or a broker crash).
        stale: usize,
    },
}

/// How a reading relates to what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// A key not stored before.
    New,
    /// The same key and value: nothing to do.
    Identical,
    /// The same key, another value, sent live: the later report wins.
    Replacement,
    /// The same key, another value, held from newer data: what is held stays.
    Stale,
}

/// The sled store.
pub struct Store {
    db: sled::Db,
    facts: sled::Tree,
    dead: sled::Tree,
    alerts: sled::Tree,
    alert_history: sled::Tree,
    deliveries: sled::Tree,
    /// Series (the `r` key up to its time) → time key of the newest reading
    /// stored in it. Meters report in time order, so nearly every reading is
    /// later than its series' newest and needs no lookup to be known new; only
    /// the rest are looked up. `apply` is the only writer of `r` keys and keeps
    /// this current while holding the lock; a series not held is read from
    /// sled once. A value too new only costs lookups; one too old cannot occur.
    newest: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

fn k(parts: &[&[u8]], tag: u8) -> Vec<u8> {
    let mut v = vec![tag];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            v.push(0);
        }
        v.extend_from_slice(p);
    }
    v
}

/// Appends a reading's time to a key: `t`+µs (u64 BE) or `p`+period.
fn push_time_key(v: &mut Vec<u8>, at: &ReadingTime) {
    match at {
        ReadingTime::Ts(t) => {
            v.push(b't');
            v.extend_from_slice(&(t.timestamp_micros().max(0) as u64).to_be_bytes());
        }
        ReadingTime::Period(p) => {
            v.push(b'p');
            v.extend_from_slice(p.to_string().as_bytes());
        }
    }
}

fn parse_time_key(b: &[u8]) -> Option<ReadingTime> {
    match b.first()? {
        b't' => {
            let micros = u64::from_be_bytes(b.get(1..9)?.try_into().ok()?);
            DateTime::<Utc>::from_timestamp_micros(micros as i64).map(ReadingTime::Ts)
        }
        b'p' => Period::parse(std::str::from_utf8(&b[1..]).ok()?)
            .ok()
            .map(ReadingTime::Period),
        _ => None,
    }
}

/// The `r` key of a reading, built in one allocation (it is made for every
/// reading stored), and the length of its series part (all but the time).
fn reading_key(zone: &ZoneId, enterprise: &EnterpriseId, r: &CanonicalReading) -> (Vec<u8>, usize) {
    let parts = [
        zone.as_str().as_bytes(),
        enterprise.as_str().as_bytes(),
        r.indicator.as_bytes(),
        r.point.as_bytes(),
    ];
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 16);
    v.push(b'r');
    for p in parts {
        v.extend_from_slice(p);
        v.push(0);
    }
    let series = v.len();
    push_time_key(&mut v, &r.at);
    (v, series)
}

/// Where the stamp of a restated fact (a period figure or a declaration)
/// lives: `o` + the fact's key.
fn stamp_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'o');
    k.extend_from_slice(key);
    k
}

/// Which batch made a restated fact: its seq, its `sent_at` (µs, the agent's
/// clock at sealing, the same on every resend) and its agent. A month-to-date
/// figure is restated many times; resends after a broker crash or a lost
/// confirmation arrive after later restatements, and must not undo them.
fn stamp(a: &Accepted) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + a.agent.as_str().len());
    v.extend_from_slice(&a.seq.to_be_bytes());
    v.extend_from_slice(&a.sent_at.timestamp_micros().to_be_bytes());
    v.extend_from_slice(a.agent.as_str().as_bytes());
    v
}

/// Whether batch `a` was made after the stamp `held`: by sequence number for
/// the same agent (its outbox numbers batches in the order it made them), by
/// `sent_at` across agents. `None` for a stamp that does not parse.
fn made_after_stamp(a: &Accepted, held: &[u8]) -> Option<bool> {
    let seq = u64::from_be_bytes(held.get(..8)?.try_into().ok()?);
    let sent = i64::from_be_bytes(held.get(8..16)?.try_into().ok()?);
    let agent = held.get(16..)?;
    Some(if agent == a.agent.as_str().as_bytes() {
        a.seq >= seq
    } else {
        a.sent_at.timestamp_micros() >= sent
    })
}

impl crate::state::RegisterLookup for Store {
    /// The stored registers either side of `r` in its series, skipping the
    /// times `unapplied` names; `None` if either side is missing or unreadable.
    fn neighbours(
        &self,
        zone: &ZoneId,
        enterprise: &EnterpriseId,
        r: &CanonicalReading,
        unapplied: &dyn Fn(DateTime<Utc>) -> bool,
    ) -> Option<crate::state::Neighbours> {
        let (key, series) = reading_key(zone, enterprise, r);
        let prefix = key.get(..series)?;
        let register = |kv: sled::Result<(sled::IVec, sled::IVec)>| -> Option<(DateTime<Utc>, f64)> {
            let (k, v) = kv.ok()?;
            let ReadingTime::Ts(ts) = parse_time_key(k.get(series..)?)? else {
                return None;
            };
            Some((ts, f64::from_be_bytes(v.as_ref().try_into().ok()?)))
        };
        // Only the series' time-stamped keys (`t`…): its period figures (`p`…)
        // sort just before them and are no registers.
        let mut first = prefix.to_vec();
        first.push(b't');
        let before = self
            .facts
            .range(first.as_slice()..key.as_slice())
            .rev()
            .map(register)
            .find(|x| x.is_none_or(|(t, _)| !unapplied(t)))??;
        let mut after_start = key.clone();
        after_start.push(0);
        let mut end = prefix.to_vec();
        end.push(b't' + 1);
        let after = self
            .facts
            .range(after_start..end)
            .map(register)
            .find(|x| x.is_none_or(|(t, _)| !unapplied(t)))??;
        Some(crate::state::Neighbours { before, after })
    }
}

impl Store {
    /// Whether batch `a` was made after the one that wrote the fact at `key`
    /// (`None`: no stamp held — a fact stored before stamps were kept).
    fn made_after(&self, key: &[u8], a: &Accepted) -> Result<Option<bool>, StoreError> {
        Ok(self
            .facts
            .get(stamp_key(key))?
            .and_then(|held| made_after_stamp(a, &held)))
    }

    /// Opens (or creates) the store with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db =
            zonesync_agent::sled_open::open_when_released(&sled::Config::new().path(path).cache_capacity(cache_bytes))?;
        let facts = db.open_tree("facts")?;
        let dead = db.open_tree("dead_letters")?;
        let alerts = db.open_tree("alerts")?;
        let alert_history = db.open_tree("alert_history")?;
        let deliveries = db.open_tree("alert_deliveries")?;
        Ok(Self {
            db,
            facts,
            dead,
            alerts,
            alert_history,
            deliveries,
            newest: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a batch of `a`'s agent with a higher sequence number is stored
    /// already, i.e. `a` arrives after newer data from the same agent.
    fn overtaken(&self, a: &Accepted) -> Result<bool, StoreError> {
        let Some(next) = a.seq.checked_add(1) else {
            return Ok(false);
        };
        let start = k(
            &[
                a.zone.as_str().as_bytes(),
                a.agent.as_str().as_bytes(),
                &next.to_be_bytes(),
            ],
            b's',
        );
        let prefix = start.len() - 8;
        Ok(match self.facts.range(start.as_slice()..).next().transpose()? {
            Some((key, _)) => key.len() == start.len() && key.get(..prefix) == start.get(..prefix),
            None => false,
        })
    }

    /// Stores a validated batch unless (agent, seq) was stored before. Not flushed.
    ///
    /// On `Stored`, `a.readings` keeps only the readings new to the store (or
    /// corrections of a period amount): those the state must apply. They are
    /// filtered in place rather than copied, as this runs for every reading.
    /// A batch never replaces a newer stored value. Backfilled (`a.backfill`):
    /// at the same instant a held reading always stays. Any batch: a held
    /// period figure or declaration (one key, restated over time), or a held
    /// reading at the same instant, stays when the batch was overtaken — the
    /// same agent's later batches were stored before it (a resend after a
    /// broker crash or a lost end-to-end confirmation arrives that way). From
    /// one agent batches otherwise arrive in the order they were made (its
    /// outbox is first in, first out), so a month-to-date figure that arrives
    /// in order is the newer one and replaces the held figure. Whether the
    /// batch was overtaken costs one lookup, made only when a held value differs.
    pub fn apply(&self, a: &mut Accepted) -> Result<Outcome, StoreError> {
        let seen = k(
            &[
                a.zone.as_str().as_bytes(),
                a.agent.as_str().as_bytes(),
                &a.seq.to_be_bytes(),
            ],
            b's',
        );
        if self.facts.contains_key(&seen)? {
            return Ok(Outcome::Duplicate);
        }
        // Looked up once, and only if some held value differs.
        let mut overtaken: Option<bool> = None;
        let mut batch = sled::Batch::default();
        batch.insert(seen, &a.boot.to_be_bytes());
        let mut fresh = Vec::with_capacity(a.readings.len());
        // Readings this batch writes, by key: a key sent twice in one batch is
        // one stored reading, as the rebuild will count it.
        let mut writes: HashMap<Vec<u8>, [u8; 8]> = HashMap::new();
        let (mut replaced, mut stale) = (0, 0);
        // Held until the batch is applied, so `newest` never runs behind the store.
        let mut newest = self.newest.lock().unwrap_or_else(PoisonError::into_inner);
        if newest.len() >= NEWEST_CAP {
            newest.clear();
        }
        for r in &a.readings {
            let (key, series) = reading_key(&a.zone, &a.enterprise, r);
            let value = r.value.to_be_bytes();
            let (prefix, time) = key.split_at(series);
            let later = match newest.get(prefix) {
                Some(last) => time > last.as_slice(),
                None => {
                    let last = match self.facts.scan_prefix(prefix).next_back().transpose()? {
                        Some((k, _)) => k.get(series..).unwrap_or_default().to_vec(),
                        None => Vec::new(),
                    };
                    let later = time > last.as_slice();
                    newest.insert(prefix.to_vec(), last);
                    later
                }
            };
            let in_batch = writes.get(&key).map(|v| v.to_vec());
            let from_batch = in_batch.is_some();
            let held = if later {
                None
            } else if in_batch.is_some() {
                in_batch
            } else {
                self.facts.get(&key)?.map(|v| v.to_vec())
            };
            let period = matches!(r.at, ReadingTime::Period(_));
            let kind = match held {
                None => Fresh::New,
                Some(old) if old == value => Fresh::Identical,
                // Later in the same batch wins.
                Some(_) if from_batch => Fresh::Replacement,
                // Backfill never replaces a value held for the same instant.
                Some(_) if a.backfill && !period => Fresh::Stale,
                // A restated period figure replaces the held one only if its
                // batch was made after the one that wrote it.
                Some(_) => match period.then(|| self.made_after(&key, a)).transpose()?.flatten() {
                    Some(true) => Fresh::Replacement,
                    Some(false) => Fresh::Stale,
                    // No stamp (an instant, or a store written before stamps):
                    // no batch replaces what the same agent sent after it.
                    None => {
                        if *overtaken.get_or_insert(self.overtaken(a)?) {
                            Fresh::Stale
                        } else {
                            Fresh::Replacement
                        }
                    }
                },
            };
            if period && matches!(kind, Fresh::New | Fresh::Replacement) {
                batch.insert(stamp_key(&key), stamp(a));
            }
            match kind {
                Fresh::New | Fresh::Replacement => {
                    if later {
                        newest.insert(prefix.to_vec(), time.to_vec());
                    }
                    // A key sent twice in one batch is held in `writes`, so it is a replacement too.
                    writes.insert(key, value);
                    if kind == Fresh::Replacement {
                        replaced += 1;
                    }
                }
                Fresh::Stale => stale += 1,
                Fresh::Identical => {}
            }
            fresh.push(matches!(kind, Fresh::New | Fresh::Replacement));
        }
        for (key, value) in writes {
            batch.insert(key, &value);
        }
        let before = a.readings.len();
        let mut is_fresh = fresh.into_iter();
        a.readings.retain(|_| is_fresh.next().unwrap_or(false));
        let duplicate_readings = before - a.readings.len() - stale;
        let mut keep = Vec::with_capacity(a.declarations.len());
        for (code, v) in &a.declarations {
            let key = k(
                &[
                    a.zone.as_str().as_bytes(),
                    a.enterprise.as_str().as_bytes(),
                    code.as_bytes(),
                ],
                b'd',
            );
            // A held declaration is replaced only by one made after it; without
            // a stamp, an overtaken batch only fills a gap.
            let stale = self.facts.contains_key(&key)?
                && match self.made_after(&key, a)? {
                    Some(after) => !after,
                    None => *overtaken.get_or_insert(self.overtaken(a)?),
                };
            if !stale {
                batch.insert(stamp_key(&key), stamp(a));
                batch.insert(key, serde_json::to_vec(v).unwrap_or_default());
            }
            keep.push(!stale);
        }
        let stale_declarations = keep.iter().filter(|k| !**k).count();
        let mut kept = keep.into_iter();
        a.declarations.retain(|_| kept.next().unwrap_or(false));
        self.facts.apply_batch(batch)?;
        drop(newest);
        Ok(Outcome::Stored {
            duplicate_readings,
            replaced,
            stale: stale + stale_declarations,
        })
    }

    /// Remembers an agent's last presence message. Not flushed.
    pub fn put_presence(&self, p: &Presence) -> Result<(), StoreError> {
        let key = k(&[p.zone.as_str().as_bytes(), p.agent.as_str().as_bytes()], b'a');
        self.facts.insert(key, serde_json::to_vec(p).unwrap_or_default())?;
        Ok(())
    }

    /// Writes a dead letter (assigning its id). Not flushed.
    pub fn dead_letter(&self, mut d: DeadLetter) -> Result<u64, StoreError> {
        d.id = self.db.generate_id()?;
        self.dead
            .insert(d.id.to_be_bytes(), serde_json::to_vec(&d).unwrap_or_default())?;
        if d.id.is_multiple_of(1024) {
            let excess = self.dead.len().saturating_sub(DEAD_LETTER_CAP);
            for kv in self.dead.iter().take(excess) {
                self.dead.remove(kv?.0)?;
            }
        }
        Ok(d.id)
    }

    /// The newest dead letters first, optionally of one zone.
    pub fn dead_letters(&self, limit: usize, zone: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for kv in self.dead.iter().rev() {
            let (_, v) = kv?;
            let d: DeadLetter = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if zone.is_none() || d.zone.as_deref() == zone {
                out.push(d);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Dead letters held.
    pub fn dead_letter_count(&self) -> usize {
        self.dead.len()
    }

    /// One alert's state.
    pub fn alert(&self, key: &str) -> Result<Option<AlertRecord>, StoreError> {
        self.alerts.get(key)?.map(|v| json_of(&v)).transpose()
    }

    /// Saves one alert's state. Not flushed.
    pub fn put_alert(&self, rec: &AlertRecord) -> Result<(), StoreError> {
        self.alerts
            .insert(rec.key.as_bytes(), serde_json::to_vec(rec).unwrap_or_default())?;
        Ok(())
    }

    /// Every alert state.
    pub fn alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.alerts.iter().map(|kv| json_of(&kv?.1)).collect()
    }

    /// Appends a transition to the history, assigning its id. Not flushed.
    pub fn push_alert_history(&self, e: &Event) -> Result<u64, StoreError> {
        let id = self.db.generate_id()?;
        let mut e = e.clone();
        e.id = id;
        self.alert_history
            .insert(id.to_be_bytes(), serde_json::to_vec(&e).unwrap_or_default())?;
        Ok(id)
    }

    /// The newest transitions first.
    pub fn alert_history(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.alert_history
            .iter()
            .rev()
            .take(limit)
            .map(|kv| json_of(&kv?.1))
            .collect()
    }

    /// Queues a delivery, assigning its id. Not flushed.
    pub fn enqueue_delivery(&self, mut d: Delivery) -> Result<u64, StoreError> {
        d.id = self.db.generate_id()?;
        self.deliveries
            .insert(d.id.to_be_bytes(), serde_json::to_vec(&d).unwrap_or_default())?;
        Ok(d.id)
    }

    /// Deliveries due at `now`, oldest first.
    pub fn due_deliveries(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut out = Vec::new();
        for kv in self.deliveries.iter() {
            let d: Delivery = json_of(&kv?.1)?;
            if d.next_attempt_at <= now {
                out.push(d);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Deliveries waiting.
    pub fn pending_deliveries(&self) -> usize {
        self.deliveries.len()
    }

    /// Rewrites a delivery after a failed attempt. Not flushed.
    pub fn update_delivery(&self, d: &Delivery) -> Result<(), StoreError> {
        self.deliveries
            .insert(d.id.to_be_bytes(), serde_json::to_vec(d).unwrap_or_default())?;
        Ok(())
    }

    /// Drops queued deliveries to `to` of kind `what` (a newer summary supersedes older ones). Not flushed.
    pub fn drop_queued(&self, what: &str, to: &crate::outbound::Destination) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.deliveries.iter() {
            let (k, v) = kv?;
            let d: Delivery = json_of(&v)?;
            if d.what == what && &d.to == to {
                self.deliveries.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Drops a delivered (or undeliverable) item. Not flushed.
    pub fn remove_delivery(&self, id: u64) -> Result<(), StoreError> {
        self.deliveries.remove(id.to_be_bytes())?;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Rebuilds the in-memory state from everything stored.
    pub fn rebuild(&self, state: &mut State, catalog: &Catalog) -> Result<(), StoreError> {
        let corrupt =
            |what: &str, key: &[u8]| StoreError::Corrupt(format!("{what} key {:?}", String::from_utf8_lossy(key)));
        for kv in self.facts.scan_prefix(b"d") {
            let (key, v) = kv?;
            let parts: Vec<&[u8]> = key[1..].splitn(3, |b| *b == 0).collect();
            let (Some(z), Some(e), Some(code)) = (parts.first(), parts.get(1), parts.get(2)) else {
                return Err(corrupt("declaration", &key));
            };
            let zone = id_from::<ZoneId>(z).ok_or_else(|| corrupt("declaration", &key))?;
            let ent = enterprise_from(e).ok_or_else(|| corrupt("declaration", &key))?;
            let value: DeclaredValue = serde_json::from_slice(&v).map_err(|_| corrupt("declaration", &key))?;
            let code = String::from_utf8_lossy(code).into_owned();
            state.apply(&zone, &ent, &[], &[(code, value)], catalog);
        }
        for kv in self.facts.scan_prefix(b"r") {
            let (key, v) = kv?;
            let parts: Vec<&[u8]> = key[1..].splitn(5, |b| *b == 0).collect();
            let [z, e, ind, point, tk] = parts.as_slice() else {
                return Err(corrupt("reading", &key));
            };
            let zone = id_from::<ZoneId>(z).ok_or_else(|| corrupt("reading", &key))?;
            let ent = enterprise_from(e).ok_or_else(|| corrupt("reading", &key))?;
            let at = parse_time_key(tk).ok_or_else(|| corrupt("reading", &key))?;
            let value = f64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt("reading", &key))?);
            let r = CanonicalReading {
                indicator: String::from_utf8_lossy(ind).into_owned(),
                point: String::from_utf8_lossy(point).into_owned(),
                value,
                at,
            };
            state.apply(&zone, &ent, std::slice::from_ref(&r), &[], catalog);
        }
        for kv in self.facts.scan_prefix(b"a") {
            let (key, v) = kv?;
            let p: Presence = serde_json::from_slice(&v).map_err(|_| corrupt("presence", &key))?;
            state.apply_presence(&p, p.at);
        }
        for kv in self.facts.scan_prefix(b"s") {
            let (key, v) = kv?;
            let parts: Vec<&[u8]> = key[1..].splitn(3, |b| *b == 0).collect();
            let [z, a, seq] = parts.as_slice() else {
                return Err(corrupt("seen", &key));
            };
            let zone = id_from::<ZoneId>(z).ok_or_else(|| corrupt("seen", &key))?;
            let agent = id_from::<AgentId>(a).ok_or_else(|| corrupt("seen", &key))?;
            let seq = u64::from_be_bytes((*seq).try_into().map_err(|_| corrupt("seen", &key))?);
            let boot = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            let st = state.zone_mut(&zone).agents.entry(agent).or_default();
            st.last_seq = Some(st.last_seq.map_or(seq, |l| l.max(seq)));
            st.boot = st.boot.max(boot);
        }
        Ok(())
    }
}

fn json_of<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn id_from<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn enterprise_from(b: &[u8]) -> Option<EnterpriseId> {
    EnterpriseId::from_stored(std::str::from_utf8(b).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{id, register, utc};

    fn accepted(seq: u64, readings: Vec<CanonicalReading>) -> Accepted {
        Accepted {
            agent: AgentId::parse("gw-1").expect("agent id"),
            boot: 1,
            outbox: None,
            digest: format!("d{seq}"),
            seq,
            sent_at: utc("2026-11-23T08:00:00Z"),
            zone: ZoneId::parse("z").expect("zone id"),
            enterprise: id(1),
            backfill: false,
            readings,
            declarations: vec![],
            refused: vec![],
        }
    }

    #[test]
    fn reading_key_has_the_documented_layout() {
        let r = register(1.0, "2026-11-23T07:45:00Z");
        let micros = utc("2026-11-23T07:45:00Z").timestamp_micros() as u64;
        let mut want = b"rz\0".to_vec();
        want.extend_from_slice(id(1).as_str().as_bytes());
        want.extend_from_slice(b"\0electricity\0M1\0t");
        want.extend_from_slice(&micros.to_be_bytes());
        let (key, series) = reading_key(&ZoneId::parse("z").expect("zone id"), &id(1), &r);
        assert_eq!(key, want);
        assert_eq!(series, want.len() - 9);
    }

    #[test]
    fn a_batch_is_stored_once_and_readings_stored_identically_are_not_fresh() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        let a = register(1.0, "2026-11-23T07:45:00Z");
        let b = register(2.0, "2026-11-23T07:46:00Z");
        let mut first = accepted(1, vec![a.clone(), b.clone()]);
        assert!(matches!(
            store.apply(&mut first).expect("apply"),
            Outcome::Stored {
                duplicate_readings: 0,
                ..
            }
        ));
        assert_eq!(first.readings.len(), 2);
        let mut again = accepted(1, vec![a.clone(), b.clone()]);
        assert!(matches!(store.apply(&mut again).expect("apply"), Outcome::Duplicate));

        // Another batch re-sending `a` unchanged and `b` corrected: only `b` is fresh.
        let corrected = CanonicalReading { value: 3.0, ..b };
        let mut resent = accepted(2, vec![a.clone(), corrected.clone()]);
        assert!(matches!(
            store.apply(&mut resent).expect("apply"),
            Outcome::Stored {
                duplicate_readings: 1,
                ..
            }
        ));
        assert_eq!(resent.readings, vec![corrected]);

        // A store opened afresh knows its series from disk: `a` again is no
        // news, a reading earlier than the newest but never stored is.
        drop(store);
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        let earlier = register(0.5, "2026-11-23T07:40:00Z");
        let mut late = accepted(3, vec![a.clone(), earlier.clone()]);
        assert!(matches!(
            store.apply(&mut late).expect("apply"),
            Outcome::Stored {
                duplicate_readings: 1,
                ..
            }
        ));
        assert_eq!(late.readings, vec![earlier]);
        let mut same_again = accepted(4, vec![a]);
        assert!(matches!(
            store.apply(&mut same_again).expect("apply"),
            Outcome::Stored {
                duplicate_readings: 1,
                ..
            }
        ));

        // What rebuild reads back is every reading once, at its latest value.
        let mut state = State::default();
        store
            .rebuild(&mut state, &Catalog::builtin().expect("catalog"))
            .expect("rebuild");
        let zone = state.zone_mut(&ZoneId::parse("z").expect("zone id"));
        assert_eq!(zone.readings_stored, 3);
    }
}

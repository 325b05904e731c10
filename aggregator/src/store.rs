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
use std::path::Path;
use zonesync_proto::{
    Accepted, AgentId, CanonicalReading, Catalog, DeclaredValue, EnterpriseId, Period, Presence, ReadingTime, ZoneId,
};

/// Most dead letters kept; the oldest go first.
const DEAD_LETTER_CAP: usize = 100_000;

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
    /// Stored.
    Stored {
        /// Readings new to the store (or corrections of a period amount).
        fresh: Vec<CanonicalReading>,
        /// Readings already stored identically under another batch.
        duplicate_readings: usize,
    },
}

/// The sled store.
pub struct Store {
    db: sled::Db,
    facts: sled::Tree,
    dead: sled::Tree,
    alerts: sled::Tree,
    alert_history: sled::Tree,
    deliveries: sled::Tree,
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

fn time_key(at: &ReadingTime) -> Vec<u8> {
    match at {
        ReadingTime::Ts(t) => {
            let mut v = vec![b't'];
            v.extend_from_slice(&(t.timestamp_micros().max(0) as u64).to_be_bytes());
            v
        }
        ReadingTime::Period(p) => {
            let mut v = vec![b'p'];
            v.extend_from_slice(p.to_string().as_bytes());
            v
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

fn reading_key(zone: &ZoneId, enterprise: &EnterpriseId, r: &CanonicalReading) -> Vec<u8> {
    k(
        &[
            zone.as_str().as_bytes(),
            enterprise.as_str().as_bytes(),
            r.indicator.as_bytes(),
            r.point.as_bytes(),
            &time_key(&r.at),
        ],
        b'r',
    )
}

impl Store {
    /// Opens (or creates) the store with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(path).cache_capacity(cache_bytes).open()?;
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
        })
    }

    /// Stores a validated batch unless (agent, seq) was stored before. Not flushed.
    pub fn apply(&self, a: &Accepted) -> Result<Outcome, StoreError> {
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
        let mut batch = sled::Batch::default();
        batch.insert(seen, &a.boot.to_be_bytes());
        let mut fresh = Vec::with_capacity(a.readings.len());
        let mut duplicate_readings = 0;
        for r in &a.readings {
            let key = reading_key(&a.zone, &a.enterprise, r);
            let value = r.value.to_be_bytes();
            match self.facts.get(&key)? {
                Some(old) if old.as_ref() == value => duplicate_readings += 1,
                _ => {
                    batch.insert(key, &value);
                    fresh.push(r.clone());
                }
            }
        }
        for (code, v) in &a.declarations {
            let key = k(
                &[
                    a.zone.as_str().as_bytes(),
                    a.enterprise.as_str().as_bytes(),
                    code.as_bytes(),
                ],
                b'd',
            );
            batch.insert(key, serde_json::to_vec(v).unwrap_or_default());
        }
        self.facts.apply_batch(batch)?;
        Ok(Outcome::Stored {
            fresh,
            duplicate_readings,
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

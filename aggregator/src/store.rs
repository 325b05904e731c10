//! All of the aggregator's storage, in one place (sled), so the fault tests
//! can judge it and a later backend swap touches one file.
//!
//! Keys in the `facts` tree (components separated by 0x00, which no id contains):
//! - `b` zone agent outbox seq(u64 BE)           → boot(u64 BE) + digest: batches already
//!   handled (the de-dup set); outbox empty for agents older than outbox ids
//! - `s` zone agent seq(u64 BE)                  → boot: the de-dup set of stores written
//!   before outbox ids (read, never written)
//! - `r` zone enterprise indicator point timekey → value (f64 BE); timekey `t`+µs (u64 BE) or `p`+period
//! - `d` zone enterprise indicator               → declared value (JSON)
//! - `a` zone agent                              → last presence (JSON)
//! - `o` + an `r` or `d` key                     → the stamp of the batch that wrote a
//!   restated fact (see [`Stamp`])
//! - `zaccepted`                                 → batches accepted, ever (u64 BE): the
//!   count the high-water mark file beside the store must never exceed
//!
//! A batch's de-dup mark and its readings go in one atomic `apply_batch`, so
//! after a crash either both are there or neither is. Callers `flush()` before
//! they acknowledge anything to the broker; the flush then raises the
//! high-water mark kept in a file apart from the store (`store.high-water`),
//! so a store that silently lost flushed writes (sled recovering past a
//! damaged segment, an old disk image) is refused at open instead of
//! starting with confirmed batches gone.

use crate::alerts::{AlertRecord, Event};
use crate::outbound::Delivery;
use crate::state::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use zonesync_proto::{
    Accepted, AgentId, CanonicalReading, Catalog, DeclaredValue, EnterpriseId, OutboxId, Period, Presence, ReadingTime,
    ZoneId,
};
use zonesync_runtime::{HighWater, HighWaterError, StoreOpenError};

/// The key of the accepted-batch counter.
const ACCEPTED: &[u8] = b"zaccepted";

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
    #[error(transparent)]
    Open(#[from] StoreOpenError),
    #[error(transparent)]
    HighWater(#[from] HighWaterError),
    #[error("store {store} rolled back: it holds {held} accepted batches, but {mark} records that {flushed} were durably stored (and confirmed to agents, who then deleted them). Do not run on it: stop the aggregator, restore {store} from a backup taken after the loss began, or — to accept the loss and go on — move {mark} aside; the agents' local history (`zonesync-agent export`) holds the readings to resend")]
    RolledBack {
        store: String,
        mark: String,
        held: u64,
        flushed: u64,
    },
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
    /// (agent, outbox, seq) was handled before with the same digest: nothing written.
    Duplicate,
    /// (agent, outbox, seq) is held with another digest: a reused sequence
    /// number (an outbox restored from a copy, or a forger numbering ahead
    /// of the agent). Nothing written; never confirmed.
    Reused {
        /// The digest held under the mark.
        held: String,
    },
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
    /// Batches accepted ever, as written to the store (not necessarily flushed).
    accepted: AtomicU64,
    /// The count durably flushed, kept apart from the store.
    high_water: HighWater,
    /// Where the store lives, for messages.
    path: std::path::PathBuf,
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

/// The outbox a batch was numbered in, as a key component (empty: legacy numbering).
fn outbox_part(outbox: &Option<OutboxId>) -> &[u8] {
    outbox.as_ref().map_or(&[][..], |o| o.as_str().as_bytes())
}

/// The de-dup mark of a batch: `b` zone agent outbox seq.
fn mark_key(zone: &ZoneId, agent: &AgentId, outbox: &Option<OutboxId>, seq: u64) -> Vec<u8> {
    k(
        &[
            zone.as_str().as_bytes(),
            agent.as_str().as_bytes(),
            outbox_part(outbox),
            &seq.to_be_bytes(),
        ],
        b'b',
    )
}

/// Which batch made a restated fact (a period figure or a declaration): its
/// agent, the outbox that numbered it and its seq. Stamps never hold a clock:
/// an agent's clock decides nothing about which value wins.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    seq: u64,
    /// `agent` 0x00 `outbox`.
    numbering: Vec<u8>,
}

/// Marks stamps written since outbox ids (older ones start with a seq).
const STAMP_V2: u8 = 0xff;

fn numbering(a: &Accepted) -> Vec<u8> {
    let mut v = a.agent.as_str().as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(outbox_part(&a.outbox));
    v
}

fn stamp(a: &Accepted) -> Vec<u8> {
    let mut v = vec![STAMP_V2];
    v.extend_from_slice(&a.seq.to_be_bytes());
    v.extend_from_slice(&numbering(a));
    v
}

fn parse_stamp(held: &[u8]) -> Option<Stamp> {
    if held.first() == Some(&STAMP_V2) {
        return Some(Stamp {
            seq: u64::from_be_bytes(held.get(1..9)?.try_into().ok()?),
            numbering: held.get(9..)?.to_vec(),
        });
    }
    // Before outbox ids: seq, sent_at (ignored: a clock decides nothing), agent.
    let mut numbering = held.get(16..)?.to_vec();
    numbering.push(0);
    Some(Stamp {
        seq: u64::from_be_bytes(held.get(..8)?.try_into().ok()?),
        numbering,
    })
}

/// Whether batch `a` may replace a restated fact stamped `held`. Within one
/// outbox's numbering, the later seq wins (a resend overtaken by later
/// batches never undoes them). Across outboxes or agents no number or clock
/// compares, so arrival decides: a batch replaces what another outbox wrote
/// unless it was itself overtaken in its own outbox (`overtaken`: a resend
/// arriving after later batches of its outbox, whose place in time is unknown).
fn may_replace(
    a: &Accepted,
    held: &Stamp,
    overtaken: impl FnOnce() -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    if held.numbering == numbering(a) {
        Ok(a.seq >= held.seq)
    } else {
        Ok(!overtaken()?)
    }
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
    /// The stamp of the batch that wrote the fact at `key` (`None`: no stamp
    /// held — a fact stored before stamps were kept).
    fn stamp_of(&self, key: &[u8]) -> Result<Option<Stamp>, StoreError> {
        Ok(self.facts.get(stamp_key(key))?.and_then(|held| parse_stamp(&held)))
    }

    /// Opens (or creates) the store with a page cache of `cache_bytes`.
    ///
    /// Refused — with an error naming the files and what to do — when sled
    /// cannot read it, or when it holds fewer accepted batches than the
    /// high-water mark beside it says were flushed (it rolled back).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let mark_path = high_water_path(path);
        let high_water = HighWater::open(&mark_path)?;
        let db = zonesync_runtime::open_sled(&sled::Config::new().path(path).cache_capacity(cache_bytes), path)?;
        let facts = db.open_tree("facts")?;
        let held = match facts.get(ACCEPTED)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("accepted-batch counter".into()))?,
            ),
            None => 0,
        };
        if let Some(flushed) = high_water.get().filter(|f| *f > held) {
            return Err(StoreError::RolledBack {
                store: path.display().to_string(),
                mark: mark_path.display().to_string(),
                held,
                flushed,
            });
        }
        if high_water.get().is_none() && held > 0 {
            // A store from before the mark was kept: start the mark from it.
            high_water.raise(held)?;
        }
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
            accepted: AtomicU64::new(held),
            high_water,
            path: path.to_owned(),
            newest: Mutex::new(HashMap::new()),
        })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a batch of `a`'s outbox with a higher sequence number is stored
    /// already, i.e. `a` arrives after newer data from the same outbox.
    fn overtaken(&self, a: &Accepted) -> Result<bool, StoreError> {
        Ok(self.highest(&a.zone, &a.agent, &a.outbox)?.is_some_and(|h| h > a.seq))
    }

    /// The highest sequence number handled under an outbox's numbering.
    pub fn highest(
        &self,
        zone: &ZoneId,
        agent: &AgentId,
        outbox: &Option<OutboxId>,
    ) -> Result<Option<u64>, StoreError> {
        let key = mark_key(zone, agent, outbox, 0);
        let prefix = &key[..key.len() - 8];
        let newest = match self.facts.scan_prefix(prefix).next_back().transpose()? {
            Some((k, _)) if k.len() == key.len() => k
                .get(prefix.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes),
            _ => None,
        };
        // Legacy numbering also lives under the older `s` marks.
        let legacy = if outbox.is_none() {
            let start = k(
                &[zone.as_str().as_bytes(), agent.as_str().as_bytes(), &0u64.to_be_bytes()],
                b's',
            );
            let lp = &start[..start.len() - 8];
            match self.facts.scan_prefix(lp).next_back().transpose()? {
                Some((k, _)) if k.len() == start.len() => k
                    .get(lp.len()..)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes),
                _ => None,
            }
        } else {
            None
        };
        Ok(newest.max(legacy))
    }

    /// What is held under a batch's mark: `None` if nothing, else the digest
    /// (empty for a batch stored before digests were kept).
    fn held_mark(&self, a: &Accepted) -> Result<Option<String>, StoreError> {
        if let Some(v) = self.facts.get(mark_key(&a.zone, &a.agent, &a.outbox, a.seq))? {
            return Ok(Some(
                String::from_utf8_lossy(v.get(8..).unwrap_or_default()).into_owned(),
            ));
        }
        if a.outbox.is_none() {
            let legacy = k(
                &[
                    a.zone.as_str().as_bytes(),
                    a.agent.as_str().as_bytes(),
                    &a.seq.to_be_bytes(),
                ],
                b's',
            );
            if self.facts.contains_key(legacy)? {
                return Ok(Some(String::new()));
            }
        }
        Ok(None)
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
        match self.held_mark(a)? {
            // A batch stored before digests were kept matches any resend.
            Some(held) if held.is_empty() || held == a.digest => return Ok(Outcome::Duplicate),
            Some(held) => return Ok(Outcome::Reused { held }),
            None => {}
        }
        // Looked up once, and only if some held value differs.
        let mut overtaken: Option<bool> = None;
        let mut batch = sled::Batch::default();
        let mut mark = a.boot.to_be_bytes().to_vec();
        mark.extend_from_slice(a.digest.as_bytes());
        batch.insert(mark_key(&a.zone, &a.agent, &a.outbox, a.seq), mark);
        let accepted = self.accepted.load(Ordering::SeqCst).saturating_add(1);
        batch.insert(ACCEPTED, &accepted.to_be_bytes());
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
                // batch may replace the one that wrote it (see `may_replace`).
                Some(_) => match period.then(|| self.stamp_of(&key)).transpose()?.flatten() {
                    Some(held) => {
                        let replace = may_replace(a, &held, || Ok(*overtaken.get_or_insert(self.overtaken(a)?)))?;
                        if replace {
                            Fresh::Replacement
                        } else {
                            Fresh::Stale
                        }
                    }
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
            // A held declaration is replaced only by a batch that may replace
            // the one that wrote it; without a stamp, an overtaken batch only fills a gap.
            let stale = self.facts.contains_key(&key)?
                && match self.stamp_of(&key)? {
                    Some(held) => !may_replace(a, &held, || Ok(*overtaken.get_or_insert(self.overtaken(a)?)))?,
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
        self.accepted.store(accepted, Ordering::SeqCst);
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

    /// Makes everything written so far durable, then raises the high-water
    /// mark to the batches it holds.
    pub fn flush(&self) -> Result<(), StoreError> {
        let accepted = self.accepted.load(Ordering::SeqCst);
        self.db.flush()?;
        self.high_water.raise(accepted)?;
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
        for (tag, parts_n) in [(b"s", 3usize), (b"b", 4)] {
            for kv in self.facts.scan_prefix(tag) {
                let (key, v) = kv?;
                // The seq is the last 8 bytes (they may hold 0x00); ids never do.
                let Some((head, seq)) = key.len().checked_sub(8).map(|n| key.split_at(n)) else {
                    return Err(corrupt("seen", &key));
                };
                let parts: Vec<&[u8]> = head.get(1..).unwrap_or_default().splitn(parts_n, |b| *b == 0).collect();
                let (Some(z), Some(a)) = (parts.first(), parts.get(1)) else {
                    return Err(corrupt("seen", &key));
                };
                let outbox = match parts.get(2) {
                    Some(o) if parts_n == 4 && !o.is_empty() => {
                        Some(id_from::<OutboxId>(o).ok_or_else(|| corrupt("seen", &key))?)
                    }
                    _ => None,
                };
                let zone = id_from::<ZoneId>(z).ok_or_else(|| corrupt("seen", &key))?;
                let agent = id_from::<AgentId>(a).ok_or_else(|| corrupt("seen", &key))?;
                let seq = u64::from_be_bytes(seq.try_into().map_err(|_| corrupt("seen", &key))?);
                let boot = v
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                state.note_stored_mark(&zone, &agent, outbox.as_ref(), seq, boot);
            }
        }
        Ok(())
    }
}

/// The high-water mark file of the store at `path`: beside it, not in it,
/// so whatever damages or restores the store's directory leaves it alone.
pub fn high_water_path(path: &Path) -> std::path::PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "store".into());
    name.push(".high-water");
    path.with_file_name(name)
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
    fn a_store_put_back_from_an_older_copy_is_refused_at_open_naming_both_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store");
        let store = Store::open(&path, 1 << 20).expect("store");
        store
            .apply(&mut accepted(1, vec![register(1.0, "2026-11-23T07:45:00Z")]))
            .expect("apply");
        store.flush().expect("flush");
        drop(store);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let copy = dir.path().join("copy");
        copy_dir(&path, &copy);
        let store = Store::open(&path, 1 << 20).expect("store");
        for seq in 2..=4 {
            store
                .apply(&mut accepted(seq, vec![register(seq as f64, "2026-11-23T07:45:00Z")]))
                .expect("apply");
        }
        store.flush().expect("flush");
        drop(store);
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::remove_dir_all(&path).expect("remove");
        copy_dir(&copy, &path);
        let e = match Store::open(&path, 1 << 20) {
            Err(e) => e,
            Ok(_) => panic!("a store that lost three flushed batches must not open"),
        };
        let text = e.to_string();
        assert!(
            matches!(
                e,
                StoreError::RolledBack {
                    held: 1,
                    flushed: 4,
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains(&path.display().to_string()) && text.contains("store.high-water"),
            "{text}"
        );
        // Moving the mark aside is the documented way to accept the loss.
        std::fs::remove_file(high_water_path(&path)).expect("remove mark");
        assert!(Store::open(&path, 1 << 20).is_ok());
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read dir") {
            let e = e.expect("entry");
            let target = to.join(e.file_name());
            if e.file_type().expect("type").is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).expect("copy");
            }
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

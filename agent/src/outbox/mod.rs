//! The durable outbox: every reading lands here before anything is sent, and
//! leaves only when every upstream has acknowledged the batch that carried it
//! (see [`upstreams`]) — or, when the disk budget is full, when it is the
//! oldest and is dropped and counted, per upstream that had not acknowledged it.
//!
//! Layout (one table of the redb store, [`store`], so that each step is one
//! atomic `apply_batch`):
//! - `p` + id  → a pending chunk: the items (readings or declarations, each
//!   with its enterprise) of one append, see [`chunk`]
//! - `b` + seq → a sealed batch: item count (u32), topic (u16 length + text), exact payload
//! - `c` + source name → a source's cursor, written atomically with its items
//! - `u` + upstream name → that upstream's acknowledged cursor and counts, see [`upstreams`]
//! - `m` + name → counters: next sequence number, boot counter, the
//!   outbox's random identity, rollbacks and rotations seen, and
//!   [`Counters`] (backlog, bytes held, drops). A new outbox draws a random
//!   identity and starts its sequence at 1; a reinstalled gateway's new
//!   outbox numbers its batches under another identity, so it never reuses
//!   a mark the aggregator has seen (see [`identity`]).
//!
//! Beside the store, `<outbox>.seq-hw` holds the high-water mark of the
//! sequence numbers, raised before each seal is written, and
//! `<outbox>.seq-done` the mark of what may have been published, raised after
//! its flush; so a store that lost published writes is caught at open
//! instead of numbering again, and a seal cut short by a crash is not.
//!
//! The counters are written in the same batch as the change they count, so
//! opening an outbox never scans its backlog (a million pending readings
//! would otherwise be read through the store's cache at every start).
//!
//! Sealing assigns the sequence number and is flushed *before* the batch is
//! published: if a sealed batch could be lost in a crash after it went out,
//! the same sequence number could be reused for different readings, and the
//! aggregator's de-duplication would then throw real data away.

mod budget;
mod chunk;
mod counters;
pub mod identity;
#[cfg(test)]
mod identity_tests;
mod migrate;
mod open;
mod seal;
pub mod store;
#[cfg(test)]
mod tests;
mod upstreams;

use crate::config::OutboxConfig;
use chrono::{DateTime, Duration, Utc};
pub use counters::Counters;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use store::{Tree, WriteBatch};
use upstreams::{Record, Upstream};
use zonesync_proto::{AgentId, Batch, Declaration, EnterpriseId, OutboxId, Reading, Topic, ZoneId, WIRE_VERSION};
use zonesync_runtime::{HighWater, HighWaterError, StoreOpenError};

const PENDING: u8 = b'p';
const SEALED: u8 = b'b';
const CURSOR: u8 = b'c';
const META_NEXT_SEQ: &[u8] = b"mnext_seq";
const META_BOOT: &[u8] = b"mboot";
/// Written by [`Outbox::check_writable`]; its value means nothing.
const META_PROBE: &[u8] = b"mprobe";

/// What went wrong in the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox store: {0}")]
    Store(#[from] store::StoreError),
    /// The store file could not be opened (damaged, or locked by another process).
    #[error("outbox store {}: {source}", path.display())]
    OpenStore {
        /// The file.
        path: std::path::PathBuf,
        /// What redb said.
        source: store::StoreError,
    },
    /// An outbox kept by an earlier agent in sled could not be read to move it.
    #[error("outbox store (sled, being moved to redb): {0}")]
    Sled(#[from] sled::Error),
    #[error("outbox entry {key} is corrupt: {problem}")]
    Corrupt { key: String, problem: String },
    #[error("an outbox needs at least one upstream")]
    NoUpstream,
    #[error(transparent)]
    Open(#[from] StoreOpenError),
    #[error(transparent)]
    HighWater(#[from] HighWaterError),
    #[error("the system's random number generator failed; no outbox identity can be drawn")]
    Random,
    #[error("an outbox opened to inspect it is read-only")]
    Inspecting,
    /// `status` on an outbox still in sled: only a start moves it.
    #[error("outbox {} is still kept in sled by an earlier agent version: start the agent once (it moves the outbox to redb, losing nothing), then ask again", .0.display())]
    NotMigrated(std::path::PathBuf),
}

/// One item waiting to be batched.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// A reading.
    Reading(Reading),
    /// A declaration.
    Declaration(Declaration),
}

#[derive(Serialize, Deserialize)]
struct PendingItem {
    enterprise: EnterpriseId,
    item: Item,
}

/// A sealed batch ready to (re)send: its payload never changes.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Sequence number.
    pub seq: u64,
    /// MQTT topic it goes to.
    pub topic: String,
    /// Exact JSON payload.
    pub payload: Vec<u8>,
    /// Readings and declarations carried.
    pub items: usize,
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxStats {
    /// Items not yet in a batch.
    pub pending_items: u64,
    /// Batches sealed but not acknowledged.
    pub sealed_batches: u64,
    /// Items in those batches.
    pub sealed_items: u64,
    /// Bytes of items and batches held (keys and values as stored; what the disk budget bounds).
    pub held_bytes: u64,
    /// The disk budget, bytes.
    pub disk_budget_bytes: u64,
    /// The store's file, bytes (larger than `held_bytes`: redb reuses freed pages but never shrinks its file).
    pub size_on_disk: u64,
    /// Readings and declarations dropped, ever, because the disk budget was full.
    pub dropped_readings: u64,
    /// Next sequence number.
    pub next_seq: u64,
    /// Time of the oldest reading not yet acknowledged, if any carries one.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Per upstream: its cursor, what it has not acknowledged, what was dropped for it.
    #[serde(default)]
    pub upstreams: Vec<UpstreamOutboxStats>,
    /// The identity batches are numbered under (absent: an old outbox only inspected).
    #[serde(default)]
    pub outbox_id: Option<OutboxId>,
    /// The sequence high-water mark kept beside the store (absent when inspected).
    #[serde(default)]
    pub seq_high_water: Option<u64>,
    /// Times, ever, the store opened below the high-water mark (rolled back or restored).
    #[serde(default)]
    pub store_rollbacks: u64,
    /// Fresh identities drawn, ever, after the first (rollbacks included).
    #[serde(default)]
    pub identity_rotations: u64,
}

/// One upstream's view of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamOutboxStats {
    /// The upstream's configured name.
    pub name: String,
    /// Lowest sequence number it has not acknowledged.
    pub cursor: u64,
    /// Sealed batches held that it has not acknowledged.
    pub unacked_batches: u64,
    /// Items in them (pending items, not yet sealed, are not counted here).
    pub unacked_items: u64,
    /// Readings and declarations dropped, ever, before it acknowledged them
    /// and never published to it: it will never receive them.
    pub dropped_readings: u64,
    /// Readings and declarations dropped, ever, after being published to it
    /// without an acknowledgement: they may have arrived.
    #[serde(default)]
    pub dropped_sent_readings: u64,
    /// False for an upstream the outbox still holds a cursor for but the
    /// configuration no longer names (only seen by [`Outbox::inspect`]): the
    /// next start forgets it, with the batches only it still needed.
    #[serde(default = "configured_default")]
    pub configured: bool,
}

fn configured_default() -> bool {
    true
}

/// How an outbox is opened.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// The store's page cache, bytes.
    pub cache_bytes: u64,
    /// Most bytes of items and batches held; beyond it the oldest are dropped.
    pub disk_budget_bytes: u64,
    /// A batch with a reading older than this at sealing is marked `backfill`.
    pub backfill_after: Duration,
    /// The configured upstreams' names, in configuration order; an upstream
    /// stored but not named here is forgotten at open (kept by [`Outbox::inspect`]).
    pub upstreams: Vec<String>,
}

/// Why an outbox is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// To run: the configured upstreams become the stored ones.
    Run,
    /// To look: nothing about upstreams is written.
    Inspect,
}

/// The name of the `[mqtt]` upstream when it has none.
pub const PRIMARY: &str = "primary";

impl From<&OutboxConfig> for OutboxOptions {
    fn from(c: &OutboxConfig) -> Self {
        Self {
            cache_bytes: c.cache_capacity_bytes,
            disk_budget_bytes: c.disk_budget_bytes,
            backfill_after: Duration::seconds(i64::try_from(c.backfill_after_secs).unwrap_or(i64::MAX / 1000)),
            upstreams: vec![PRIMARY.into()],
        }
    }
}

/// The outbox, kept in a redb store ([`store`]).
pub struct Outbox {
    tree: Tree,
    /// The next pending chunk's id: above every chunk held, so chunks keep
    /// the order items arrived in (sled drew these from its own counter).
    next_chunk: AtomicU64,
    options: OutboxOptions,
    /// Serialises every read-modify-write of the counters and upstream
    /// records with the change they count; the values are what the tree
    /// holds under `mcounters` and `u…`.
    state: Mutex<State>,
    next_seq: AtomicU64,
    /// Raised before every seal is written; `None` when opened to inspect.
    high_water: Option<HighWater>,
    /// Raised after every seal's flush, before its batches go out: every
    /// number that may have been published is below it (`identity`).
    done: Option<HighWater>,
    /// Where every appended item is also recorded for export (crate::history).
    history: Option<std::sync::Arc<crate::history::History>>,
}

/// What the outbox's lock guards: a copy is changed, written, then swapped in,
/// so a failed write leaves the last good state.
#[derive(Debug, Clone)]
struct State {
    counters: Counters,
    upstreams: Vec<Upstream>,
    /// The identity batches are sealed under (`meta` key `moutbox_id`).
    identity: Option<OutboxId>,
    /// Rollbacks detected, ever.
    rollbacks: u64,
    /// Identities drawn after the first, ever.
    rotations: u64,
}

impl State {
    /// Adds to `batch` the records of upstreams that differ from `before`.
    fn write_changed(&self, before: &State, batch: &mut WriteBatch) {
        for (u, b) in self.upstreams.iter().zip(&before.upstreams) {
            if u.rec != b.rec {
                batch.insert(upstreams::key(&u.name), &u.rec.encode()[..]);
            }
        }
    }
}

fn key(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

fn read_u64(tree: &Tree, k: &[u8]) -> Result<u64, OutboxError> {
    match tree.get(k)? {
        None => Ok(0),
        Some(v) => {
            let arr: [u8; 8] = v.as_slice().try_into().map_err(|_| OutboxError::Corrupt {
                key: String::from_utf8_lossy(k).into_owned(),
                problem: format!("{} bytes, expected 8", v.len()),
            })?;
            Ok(u64::from_be_bytes(arr))
        }
    }
}

fn seq_of(k: &[u8]) -> Option<u64> {
    k.get(1..9)?.try_into().ok().map(u64::from_be_bytes)
}

/// Items a stored sealed batch carries (its header's first four bytes).
fn sealed_items(v: &[u8]) -> u64 {
    v.get(..4)
        .map(|h| u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]])))
        .unwrap_or(0)
}

/// A stored sealed batch: item count (u32), topic (u16 length + text), payload.
fn decode_sealed(k: &[u8], v: &[u8]) -> Result<Sealed, OutboxError> {
    let seq = seq_of(k).unwrap_or(0);
    let corrupt = |problem: String| OutboxError::Corrupt {
        key: format!("b{seq}"),
        problem,
    };
    let header = v.get(..6).ok_or_else(|| corrupt("no header".into()))?;
    let items = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let n = u16::from_be_bytes([header[4], header[5]]) as usize;
    let topic = v
        .get(6..6 + n)
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or_else(|| corrupt("bad topic".into()))?
        .to_owned();
    let payload = v[6 + n..].to_vec();
    Ok(Sealed {
        seq,
        topic,
        items,
        payload,
    })
}

/// A sealed batch as stored: item count (u32), topic (u16 length + text), payload.
fn encode_sealed(items: usize, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(payload.len() + topic.len() + 6);
    stored.extend_from_slice(&(items as u32).to_be_bytes());
    stored.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    stored.extend_from_slice(topic.as_bytes());
    stored.extend_from_slice(payload);
    stored
}

fn entry_bytes(k: &[u8], v: &[u8]) -> u64 {
    (k.len() + v.len()) as u64
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only replaced after a successful write, so a panic
        // elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configured upstreams' names, in the order given at open (indexes for [`Outbox::ack`] and friends).
    pub fn upstream_names(&self) -> Vec<String> {
        self.lock().upstreams.iter().map(|u| u.name.clone()).collect()
    }

    /// The index of the upstream called `name`.
    pub fn upstream_index(&self, name: &str) -> Option<usize> {
        self.lock().upstreams.iter().position(|u| u.name == name)
    }

    /// Counts one more boot and returns it; durable before it returns.
    pub fn next_boot(&self) -> Result<u64, OutboxError> {
        let boot = read_u64(&self.tree, META_BOOT)? + 1;
        self.tree.insert(META_BOOT, boot.to_be_bytes())?;
        self.tree.flush()?;
        Ok(boot)
    }

    /// Appends items, and the source's new cursor, in one atomic and durable
    /// step. Never waits for room: when the disk budget is full, the oldest
    /// unacknowledged items are dropped (and counted) to make it.
    pub fn append(&self, items: Vec<(EnterpriseId, Item)>, cursor: Option<(&str, &[u8])>) -> Result<(), OutboxError> {
        let history = self
            .history
            .as_ref()
            .map(|h| (h, crate::history::History::encode(&items, Utc::now())));
        let mut encoded = Vec::with_capacity(items.len());
        for (enterprise, item) in items {
            let v = serde_json::to_vec(&PendingItem { enterprise, item }).map_err(|e| OutboxError::Corrupt {
                key: "p(new)".into(),
                problem: e.to_string(),
            })?;
            encoded.push(v);
        }
        {
            let mut guard = self.lock();
            let mut next = guard.clone();
            let mut batch = WriteBatch::default();
            let fresh = budget::make_room(self, &mut next, &mut batch, &encoded)?;
            for items in encoded[fresh..].chunks(chunk::MAX_ITEMS) {
                // Ids grow, so chunks keep the order items arrived in.
                let k = key(PENDING, self.next_chunk.fetch_add(1, Ordering::SeqCst));
                let v = chunk::encode(items);
                next.counters.pending_items += items.len() as u64;
                next.counters.held_bytes += entry_bytes(&k, &v);
                batch.insert(&k[..], v);
            }
            if let Some((source, c)) = cursor {
                let mut k = vec![CURSOR];
                k.extend_from_slice(source.as_bytes());
                batch.insert(k, c);
            }
            batch.insert(counters::KEY, &next.counters.encode()[..]);
            next.write_changed(&guard, &mut batch);
            self.tree.apply_durable(batch)?;
            *guard = next;
        }
        if let Some((h, lines)) = history {
            h.write(lines);
        }
        Ok(())
    }

    /// The cursor a source last stored with its items.
    pub fn cursor(&self, source: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        let mut k = vec![CURSOR];
        k.extend_from_slice(source.as_bytes());
        Ok(self.tree.get(k)?.map(|v| v.to_vec()))
    }

    /// Items waiting to be sealed.
    pub fn pending_items(&self) -> usize {
        self.lock().counters.pending_items as usize
    }

    /// Readings and declarations dropped, ever, because the disk budget was
    /// full (each once, however many upstreams had not acknowledged it).
    pub fn dropped_readings(&self) -> u64 {
        self.lock().counters.dropped
    }

    /// Readings and declarations dropped, ever, before upstream `upstream`
    /// acknowledged them, as its presence reports them (0, 0 for an unknown
    /// index): those never published to it, and those published to it
    /// without an acknowledgement (they may have arrived).
    pub fn dropped_for(&self, upstream: usize) -> (u64, u64) {
        self.lock()
            .upstreams
            .get(upstream)
            .map_or((0, 0), |u| (u.rec.dropped, u.rec.dropped_sent))
    }

    /// Tells the outbox which sealed batches are on upstream `upstream`'s
    /// wire (published, acknowledgement awaited): every one below `seq` it has
    /// not acknowledged. The disk budget leaves those alone. The link resets
    /// it to 0 when a session ends.
    pub fn set_on_wire_below(&self, upstream: usize, seq: u64) {
        if let Some(u) = self.lock().upstreams.get_mut(upstream) {
            u.on_wire_below = seq;
        }
    }

    /// Claims sealed batch `seq` for publishing to `upstream`: from now on
    /// the disk budget leaves it (and every batch before it this upstream has
    /// not acknowledged) alone. `false` if the budget dropped it already or
    /// the upstream acknowledged it, so it must not be sent: a reading is
    /// either acknowledged or counted as dropped, never both.
    pub fn put_on_wire(&self, upstream: usize, seq: u64) -> Result<bool, OutboxError> {
        let mut guard = self.lock();
        let Some(u) = guard.upstreams.get_mut(upstream) else {
            return Ok(false);
        };
        if u.has_acked(seq) || !self.tree.contains_key(key(SEALED, seq))? {
            return Ok(false);
        }
        u.on_wire_below = u.on_wire_below.max(seq + 1);
        u.rec.sent_below = u.rec.sent_below.max(seq + 1);
        Ok(true)
    }

    /// Records that `upstream` acknowledged batch `seq`: moves its cursor when
    /// it can, and deletes the batch once every upstream has acknowledged it
    /// (counters and records in the same atomic step). Not flushed: losing
    /// this in a crash only means a resend, which the aggregator
    /// de-duplicates. Returns the items the batch carried, or `None` when it
    /// is unknown to this upstream (not held, or acknowledged already).
    pub fn ack(&self, upstream: usize, seq: u64) -> Result<Option<usize>, OutboxError> {
        Ok(self.ack_many(upstream, &[seq])?.pop().flatten())
    }

    /// [`Outbox::ack`] for several batches in one write: a confirmation
    /// naming many batches costs one store commit, not one each. (The MQTT
    /// link's PUBACKs are acknowledged one by one: taking a burst of them
    /// together delayed refilling the window and slowed the drain;
    /// docs/profiles.md.) One answer per `seqs` entry, in order; a number
    /// given twice is acknowledged once.
    pub fn ack_many(&self, upstream: usize, seqs: &[u64]) -> Result<Vec<Option<usize>>, OutboxError> {
        let mut guard = self.lock();
        let mut next = guard.clone();
        let next_seq = self.next_seq.load(Ordering::SeqCst);
        let mut batch = WriteBatch::default();
        // Removed in `batch`, still in the tree until it is applied.
        let mut gone = std::collections::BTreeSet::new();
        let mut answers = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            let k = key(SEALED, seq);
            let fresh = next.upstreams.get(upstream).is_some_and(|u| !u.has_acked(seq));
            let head = if fresh && !gone.contains(&seq) {
                self.tree.get_head(k, 4)?
            } else {
                None
            };
            let Some((len, head)) = head else {
                answers.push(None);
                continue;
            };
            let items = sealed_items(&head);
            if let Some(u) = next.upstreams.get_mut(upstream) {
                u.acked_above.insert(seq, items);
                // Also when `seq` is above the cursor: the batches between may be
                // gone (dropped by the budget), and the cursor must not stay on them.
                u.advance(&self.tree, next_seq, &gone)?;
            }
            if next.upstreams.iter().all(|u| u.has_acked(seq)) {
                for u in &mut next.upstreams {
                    u.forget(seq, items);
                }
                next.counters.sealed_batches = next.counters.sealed_batches.saturating_sub(1);
                next.counters.sealed_items = next.counters.sealed_items.saturating_sub(items);
                next.counters.held_bytes = next.counters.held_bytes.saturating_sub((k.len() + len) as u64);
                batch.remove(&k[..]);
                gone.insert(seq);
            }
            answers.push(Some(items as usize));
        }
        if answers.iter().all(Option::is_none) {
            return Ok(answers);
        }
        if !gone.is_empty() {
            batch.insert(counters::KEY, &next.counters.encode()[..]);
        }
        next.write_changed(&guard, &mut batch);
        self.tree.apply_batch(batch)?;
        *guard = next;
        Ok(answers)
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.tree.flush()?;
        Ok(())
    }

    /// Current counts (from the counters, plus one look at the oldest entry).
    pub fn stats(&self) -> OutboxStats {
        let (c, upstreams, outbox_id, rollbacks, rotations) = {
            let guard = self.lock();
            let ups = guard
                .upstreams
                .iter()
                .map(|u| {
                    let (batches, items) = u.unacked();
                    UpstreamOutboxStats {
                        name: u.name.clone(),
                        cursor: u.rec.cursor,
                        unacked_batches: batches,
                        unacked_items: items,
                        dropped_readings: u.rec.dropped,
                        dropped_sent_readings: u.rec.dropped_sent,
                        configured: self.options.upstreams.contains(&u.name),
                    }
                })
                .collect();
            (
                guard.counters,
                ups,
                guard.identity.clone(),
                guard.rollbacks,
                guard.rotations,
            )
        };
        OutboxStats {
            pending_items: c.pending_items,
            sealed_batches: c.sealed_batches,
            sealed_items: c.sealed_items,
            held_bytes: c.held_bytes,
            disk_budget_bytes: self.options.disk_budget_bytes,
            size_on_disk: self.tree.size_on_disk().unwrap_or(0),
            dropped_readings: c.dropped,
            next_seq: self.next_seq.load(Ordering::SeqCst),
            oldest_pending: self.oldest_pending(),
            upstreams,
            outbox_id,
            seq_high_water: self.high_water.as_ref().and_then(HighWater::get),
            store_rollbacks: rollbacks,
            identity_rotations: rotations,
        }
    }

    /// The time of the oldest reading still held: sealed batches are older
    /// than pending items, so the first of either decides.
    fn oldest_pending(&self) -> Option<DateTime<Utc>> {
        if let Some(Ok((_, v))) = self.tree.scan_prefix([SEALED]).next() {
            let n = v.get(4..6).map(|h| u16::from_be_bytes([h[0], h[1]]) as usize)?;
            let b: Batch = serde_json::from_slice(v.get(6 + n..)?).ok()?;
            return b.readings.iter().filter_map(|r| r.ts).min();
        }
        for kv in self.tree.scan_prefix([PENDING]).take(100) {
            let (k, v) = kv.ok()?;
            for p in chunk::decode(&k, &v).ok()? {
                if let Item::Reading(Reading { ts: Some(ts), .. }) = p.item {
                    return Some(ts);
                }
            }
        }
        None
    }

    /// Next sequence number to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    /// Whether the store still takes a write and makes it durable. After a
    /// failed write (a full disk) redb answers every later write with
    /// `PreviousIo` until the store is reopened (as sled 0.34 did with its
    /// log's first error), so a source whose append failed asks this to tell
    /// a passing failure from a store this process can no longer use.
    pub fn check_writable(&self) -> Result<(), OutboxError> {
        let now = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        self.tree.insert(META_PROBE, now.to_be_bytes())?;
        self.tree.flush()?;
        Ok(())
    }
}

//! The durable outbox: every reading lands here before anything is sent, and
//! leaves only when every upstream has acknowledged the batch that carried it
//! (see [`upstreams`]) — or, when the disk budget is full, when it is the
//! oldest and is dropped and counted, per upstream that had not acknowledged it.
//!
//! Layout (one sled tree, so that each step is one atomic `apply_batch`):
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
//! sequence numbers, raised before each seal is written, so a store that
//! lost its newest writes is caught at open instead of numbering again.
//!
//! The counters are written in the same batch as the change they count, so
//! opening an outbox never scans its backlog (a million pending readings
//! would otherwise be read through sled's cache at every start).
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
    Store(#[from] sled::Error),
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
    /// sled's own files, bytes (larger than `held_bytes`: its log keeps old versions until it compacts).
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
    /// sled's page cache, bytes.
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

/// The sled-backed outbox.
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
    options: OutboxOptions,
    /// Serialises every read-modify-write of the counters and upstream
    /// records with the change they count; the values are what the tree
    /// holds under `mcounters` and `u…`.
    state: Mutex<State>,
    next_seq: AtomicU64,
    /// Raised before every seal is written; `None` when opened to inspect.
    high_water: Option<HighWater>,
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
    fn write_changed(&self, before: &State, batch: &mut sled::Batch) {
        for (u, b) in self.upstreams.iter().zip(&before.upstreams) {
            if u.rec != b.rec {
                batch.insert(upstreams::key(&u.name), &u.rec.encode()[..]);
            }
        }
    }
}

/// One batch's readings and declarations, while sealing.
type Contents = (Vec<Reading>, Vec<Declaration>);

fn key(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

fn read_u64(tree: &sled::Tree, k: &[u8]) -> Result<u64, OutboxError> {
    match tree.get(k)? {
        None => Ok(0),
        Some(v) => {
            let arr: [u8; 8] = v.as_ref().try_into().map_err(|_| OutboxError::Corrupt {
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
    /// Opens (or creates) the outbox at `path` with a cache of `cache_bytes`
    /// and the default disk budget and backfill window.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, OutboxError> {
        let mut options = OutboxOptions::from(&OutboxConfig::default());
        options.cache_bytes = cache_bytes;
        Self::open_with(path, options)
    }

    /// Opens (or creates) the outbox at `path`.
    pub fn open_with(path: &Path, options: OutboxOptions) -> Result<Self, OutboxError> {
        Self::open_as(path, options, Open::Run)
    }

    /// Opens the outbox at `path` to look at it (`zonesync-agent status`):
    /// unlike [`Outbox::open_with`] it changes no upstream's record, so an
    /// upstream taken out of the configuration keeps its cursor and its
    /// batches (and is listed with `configured: false`), and a new one is
    /// shown from the oldest batch held without being stored. Looking must
    /// not decide what a start would: an operator who comments out an
    /// upstream and runs `status` to see the effect has lost nothing yet.
    pub fn inspect(path: &Path, options: OutboxOptions) -> Result<Self, OutboxError> {
        Self::open_as(path, options, Open::Inspect)
    }

    fn open_as(path: &Path, options: OutboxOptions, open: Open) -> Result<Self, OutboxError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(Some(500));
        let db = zonesync_runtime::open_sled(&config, path)?;
        let tree = db.open_tree("outbox")?;
        // Looking must not create the mark (nor anything else).
        let hw_path = identity::high_water_path(path);
        let high_water = match open {
            Open::Run => Some(HighWater::open(&hw_path)?),
            Open::Inspect if hw_path.exists() => Some(HighWater::open(&hw_path)?),
            Open::Inspect => None,
        };
        let mark = high_water.as_ref().and_then(HighWater::get);
        let stored_next = match tree.get(META_NEXT_SEQ)? {
            Some(_) => Some(read_u64(&tree, META_NEXT_SEQ)?),
            None => None,
        };
        // Every number ever published is below the mark, so continuing from
        // it never issues one twice, whatever the store forgot.
        let rolled_back = mark.is_some_and(|m| m > stored_next.unwrap_or(1));
        let next_seq = stored_next.unwrap_or(1).max(mark.unwrap_or(1)).max(1);
        let mut stored_id = identity::load(&tree)?;
        if open == Open::Run && (stored_id.is_none() || stored_next != Some(next_seq)) {
            let mut batch = sled::Batch::default();
            if stored_id.is_none() {
                // A new outbox, or one from before identities: its held
                // batches keep the legacy numbering they may have been
                // published under (resending them unchanged is exact), and
                // from now on it seals under this identity.
                let id = identity::draw()?;
                if stored_next.is_some() {
                    tracing::info!(outbox = id.as_str(), next_seq, "outbox without an identity: drew one");
                }
                batch.insert(identity::META_ID, id.as_str().as_bytes());
                stored_id = Some(id);
            }
            batch.insert(META_NEXT_SEQ, &next_seq.to_be_bytes());
            tree.apply_batch(batch)?;
            tree.flush()?;
        }
        let counters = match Counters::load(&tree)? {
            Some(c) => c,
            // An outbox written before the counters were kept: count once.
            None if open == Open::Run => {
                let c = Counters::recount(&tree)?;
                tree.insert(counters::KEY, &c.encode()[..])?;
                tree.flush()?;
                c
            }
            None => Counters::recount(&tree)?,
        };
        let (upstreams, counters) = Self::open_upstreams(&tree, &options.upstreams, counters, next_seq, open)?;
        let state = State {
            counters,
            upstreams,
            identity: stored_id,
            rollbacks: identity::load_count(&tree, identity::META_ROLLBACKS)?,
            rotations: identity::load_count(&tree, identity::META_ROTATIONS)?,
        };
        let outbox = Self {
            db,
            tree,
            options,
            state: Mutex::new(state),
            next_seq: AtomicU64::new(next_seq),
            high_water,
            history: None,
        };
        if open == Open::Run {
            if rolled_back {
                tracing::warn!(
                    store = %path.display(),
                    high_water = %hw_path.display(),
                    store_next_seq = stored_next.unwrap_or(0),
                    mark = mark.unwrap_or(0),
                    next_seq,
                    "outbox store rolled back or was restored: its next sequence number is below the high-water mark \
                     kept beside it; numbering continues from the mark under a fresh outbox identity (batches the \
                     store lost may have been published)"
                );
                outbox.rotate(identity::Rotation::Rollback)?;
            }
            // An outbox older than the mark gets one; a new one records its start.
            if let Some(hw) = &outbox.high_water {
                hw.raise(next_seq)?;
            }
        }
        Ok(outbox)
    }

    /// Also records every appended item in `history`, after the outbox has it.
    pub fn with_history(mut self, history: std::sync::Arc<crate::history::History>) -> Self {
        self.history = Some(history);
        self
    }

    /// Loads the configured upstreams' records, starts a new upstream at the
    /// lowest batch held (it gets the backlog still on disk), forgets
    /// upstreams no longer configured, and deletes the batches every
    /// remaining upstream has passed (a removed upstream may have been the
    /// only one holding them). One atomic, flushed step; with
    /// [`Open::Inspect`], the same view is built in memory, the removed
    /// upstreams are kept after the configured ones, and nothing is written.
    fn open_upstreams(
        tree: &sled::Tree,
        names: &[String],
        mut counters: Counters,
        next_seq: u64,
        open: Open,
    ) -> Result<(Vec<Upstream>, Counters), OutboxError> {
        if names.is_empty() {
            return Err(OutboxError::NoUpstream);
        }
        let mut batch = sled::Batch::default();
        let mut changed = false;
        let mut stored = std::collections::HashMap::new();
        let mut unconfigured = Vec::new();
        for kv in tree.scan_prefix([upstreams::PREFIX]) {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            if names.contains(&name) {
                stored.insert(name, Record::decode(&k, &v)?);
            } else if open == Open::Inspect {
                unconfigured.push(Upstream::new(name, Record::decode(&k, &v)?));
            } else {
                tracing::info!(upstream = %name, "upstream no longer configured: its cursor is dropped");
                batch.remove(k);
                changed = true;
            }
        }
        let lowest_held = match tree.scan_prefix([SEALED]).next() {
            Some(kv) => seq_of(&kv?.0).unwrap_or(next_seq),
            None => next_seq,
        };
        let mut ups = Vec::with_capacity(names.len());
        for name in names {
            let rec = match stored.get(name) {
                Some(r) => *r,
                None => {
                    let r = Record {
                        cursor: lowest_held,
                        dropped: 0,
                        batches: counters.sealed_batches,
                        items: counters.sealed_items,
                        dropped_sent: 0,
                        sent_below: 0,
                    };
                    tracing::info!(upstream = %name, cursor = r.cursor, batches = r.batches, "new upstream: starts at the oldest batch held");
                    batch.insert(upstreams::key(name), &r.encode()[..]);
                    changed = true;
                    r
                }
            };
            ups.push(Upstream::new(name.clone(), rec));
        }
        ups.extend(unconfigured);
        if open == Open::Inspect {
            return Ok((ups, counters));
        }
        let min_cursor = ups.iter().map(|u| u.rec.cursor).min().unwrap_or(0);
        for kv in tree.range(key(SEALED, 0)..key(SEALED, min_cursor)) {
            let (k, v) = kv?;
            counters.sealed_batches = counters.sealed_batches.saturating_sub(1);
            counters.sealed_items = counters.sealed_items.saturating_sub(sealed_items(&v));
            counters.held_bytes = counters.held_bytes.saturating_sub(entry_bytes(&k, &v));
            batch.remove(k);
            changed = true;
        }
        if changed {
            batch.insert(counters::KEY, &counters.encode()[..]);
            tree.apply_batch(batch)?;
            tree.flush()?;
        }
        Ok((ups, counters))
    }

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
        self.tree.insert(META_BOOT, &boot.to_be_bytes())?;
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
            let mut batch = sled::Batch::default();
            let fresh = budget::make_room(self, &mut next, &mut batch, &encoded)?;
            for items in encoded[fresh..].chunks(chunk::MAX_ITEMS) {
                // Ids grow, so chunks keep the order items arrived in.
                let k = key(PENDING, self.db.generate_id()?);
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
            self.tree.apply_batch(batch)?;
            *guard = next;
        }
        self.tree.flush()?;
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

    /// Seals the oldest pending chunks, at least one and no more than
    /// `max_items` items unless the first chunk alone is larger, into batches
    /// of at most `max_items` items of one enterprise each; see [`Outbox::seal_up_to`].
    pub fn seal(
        &self,
        max_items: usize,
        agent: &AgentId,
        zone: &ZoneId,
        boot: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Sealed>, OutboxError> {
        self.seal_up_to(max_items, max_items, agent, zone, boot, now)
    }

    /// Seals the oldest pending chunks, at least one and no more than
    /// `max_take` items unless the first chunk alone is larger, into batches
    /// of at most `max_items` items of one enterprise each, each with the next
    /// sequence number; durable (one write, one flush) before it returns.
    /// The link takes a whole free window's worth at once: one flush per
    /// window instead of one per batch is what bounds its drain speed. A batch
    /// holding a reading stamped more than the backfill window before `now`
    /// is marked `backfill`, once, here, so every resend is identical.
    pub fn seal_up_to(
        &self,
        max_items: usize,
        max_take: usize,
        agent: &AgentId,
        zone: &ZoneId,
        boot: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Sealed>, OutboxError> {
        let mut guard = self.lock();
        let mut next = guard.clone();
        let max_items = max_items.max(1);
        let max_take = max_take.max(max_items);
        // Per enterprise, in order of first appearance: batches being filled.
        let mut groups: Vec<(EnterpriseId, Vec<Contents>)> = Vec::new();
        let mut taken = Vec::new();
        let mut taken_items = 0u64;
        for kv in self.tree.scan_prefix([PENDING]) {
            let (k, v) = kv?;
            let n = chunk::count(&v);
            if !taken.is_empty() && taken_items + n > max_take as u64 {
                break;
            }
            for p in chunk::decode(&k, &v)? {
                let idx = match groups.iter().position(|g| g.0 == p.enterprise) {
                    Some(i) => i,
                    None => {
                        groups.push((p.enterprise.clone(), Vec::new()));
                        groups.len() - 1
                    }
                };
                let batches = &mut groups[idx].1;
                if batches.last().is_none_or(|(r, d)| r.len() + d.len() >= max_items) {
                    batches.push((Vec::new(), Vec::new()));
                }
                if let Some((r, d)) = batches.last_mut() {
                    match p.item {
                        Item::Reading(x) => r.push(x),
                        Item::Declaration(x) => d.push(x),
                    }
                }
            }
            next.counters.held_bytes = next.counters.held_bytes.saturating_sub(entry_bytes(&k, &v));
            taken_items += n;
            taken.push(k);
        }
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        let Some(hw) = &self.high_water else {
            return Err(OutboxError::Inspecting);
        };
        let live_since = now - self.options.backfill_after;
        let mut seq = self.next_seq.load(Ordering::SeqCst);
        let mut sealed = Vec::with_capacity(groups.len());
        let mut batch = sled::Batch::default();
        let batches = groups
            .into_iter()
            .flat_map(|(e, bs)| bs.into_iter().map(move |(r, d)| (e.clone(), r, d)));
        for (enterprise, readings, declarations) in batches {
            let items = readings.len() + declarations.len();
            let backfill = readings.iter().any(|r| r.ts.is_some_and(|ts| ts < live_since));
            let b = Batch {
                v: WIRE_VERSION,
                agent: agent.clone(),
                boot,
                outbox: guard.identity.clone(),
                seq,
                sent_at: now,
                zone: zone.clone(),
                enterprise: enterprise.clone(),
                backfill,
                readings,
                declarations,
            };
            let payload = b.to_payload();
            let topic = Topic::data(zone, agent, &enterprise);
            let stored = encode_sealed(items, &topic, &payload);
            let k = key(SEALED, seq);
            next.counters.held_bytes += entry_bytes(&k, &stored);
            next.counters.sealed_batches += 1;
            next.counters.sealed_items += items as u64;
            // Every cursor is at or below the next sequence number, so a new
            // batch is unacknowledged by every upstream.
            for u in &mut next.upstreams {
                u.rec.batches += 1;
                u.rec.items += items as u64;
            }
            batch.insert(&k[..], stored);
            sealed.push(Sealed {
                seq,
                topic,
                payload,
                items,
            });
            seq += 1;
        }
        next.counters.pending_items = next.counters.pending_items.saturating_sub(taken_items);
        for k in taken {
            batch.remove(k);
        }
        batch.insert(META_NEXT_SEQ, &seq.to_be_bytes());
        batch.insert(counters::KEY, &next.counters.encode()[..]);
        next.write_changed(&guard, &mut batch);
        // The mark first: if the store later loses this write, its next
        // opening still finds every number handed out here below the mark.
        hw.raise(seq)?;
        self.tree.apply_batch(batch)?;
        *guard = next;
        self.next_seq.store(seq, Ordering::SeqCst);
        drop(guard);
        self.tree.flush()?;
        Ok(sealed)
    }

    /// Sealed batches held with a sequence number ≥ `from`, oldest first.
    pub fn sealed_from(&self, from: u64, limit: usize) -> Result<Vec<Sealed>, OutboxError> {
        let mut out = Vec::new();
        for kv in self.tree.range(key(SEALED, from)..=key(SEALED, u64::MAX)).take(limit) {
            let (k, v) = kv?;
            out.push(decode_sealed(&k, &v)?);
        }
        Ok(out)
    }

    /// Sealed batches held that `upstream` has not acknowledged, with a
    /// sequence number ≥ `from`, oldest first.
    pub fn sealed_for(&self, upstream: usize, from: u64, limit: usize) -> Result<Vec<Sealed>, OutboxError> {
        let (cursor, acked) = {
            let guard = self.lock();
            let Some(u) = guard.upstreams.get(upstream) else {
                return Ok(Vec::new());
            };
            (u.rec.cursor, u.acked_above.keys().copied().collect::<Vec<u64>>())
        };
        let mut out = Vec::new();
        for kv in self.tree.range(key(SEALED, from.max(cursor))..=key(SEALED, u64::MAX)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            if seq_of(&k).is_some_and(|s| acked.binary_search(&s).is_ok()) {
                continue;
            }
            out.push(decode_sealed(&k, &v)?);
        }
        Ok(out)
    }

    /// Sealed batch `seq`, if it is still held (to resend it without keeping
    /// its payload in memory meanwhile).
    pub fn sealed_one(&self, seq: u64) -> Result<Option<Sealed>, OutboxError> {
        let k = key(SEALED, seq);
        match self.tree.get(k)? {
            Some(v) => Ok(Some(decode_sealed(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Records that `upstream` acknowledged batch `seq`: moves its cursor when
    /// it can, and deletes the batch once every upstream has acknowledged it
    /// (counters and records in the same atomic step). Not flushed: losing
    /// this in a crash only means a resend, which the aggregator
    /// de-duplicates. Returns the items the batch carried, or `None` when it
    /// is unknown to this upstream (not held, or acknowledged already).
    pub fn ack(&self, upstream: usize, seq: u64) -> Result<Option<usize>, OutboxError> {
        let k = key(SEALED, seq);
        let mut guard = self.lock();
        match guard.upstreams.get(upstream) {
            Some(u) if !u.has_acked(seq) => {}
            _ => return Ok(None),
        }
        let Some(v) = self.tree.get(k)? else {
            return Ok(None);
        };
        let items = sealed_items(&v);
        let mut next = guard.clone();
        let next_seq = self.next_seq.load(Ordering::SeqCst);
        let mut batch = sled::Batch::default();
        if let Some(u) = next.upstreams.get_mut(upstream) {
            u.acked_above.insert(seq, items);
            // Also when `seq` is above the cursor: the batches between may be
            // gone (dropped by the budget), and the cursor must not stay on them.
            u.advance(&self.tree, next_seq)?;
        }
        if next.upstreams.iter().all(|u| u.has_acked(seq)) {
            for u in &mut next.upstreams {
                u.forget(seq, items);
            }
            next.counters.sealed_batches = next.counters.sealed_batches.saturating_sub(1);
            next.counters.sealed_items = next.counters.sealed_items.saturating_sub(items);
            next.counters.held_bytes = next.counters.held_bytes.saturating_sub(entry_bytes(&k, &v));
            batch.remove(&k[..]);
            batch.insert(counters::KEY, &next.counters.encode()[..]);
        }
        next.write_changed(&guard, &mut batch);
        self.tree.apply_batch(batch)?;
        *guard = next;
        Ok(Some(items as usize))
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
            size_on_disk: self.db.size_on_disk().unwrap_or(0),
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

    /// Whether the store still takes a write and makes it durable. sled
    /// 0.34 keeps the first failed write to its log (a full disk) as an
    /// error every later flush returns until the store is reopened, so a
    /// source whose append failed asks this to tell a passing failure from
    /// a store this process can no longer use.
    pub fn check_writable(&self) -> Result<(), OutboxError> {
        let now = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        self.tree.insert(META_PROBE, &now.to_be_bytes())?;
        self.tree.flush()?;
        Ok(())
    }
}

//! The durable outbox: every reading lands here before anything is sent, and
//! leaves only when the broker has acknowledged the batch that carried it.
//!
//! Layout (one sled tree, so that each step is one atomic `apply_batch`):
//! - `p` + id  → a pending item (reading or declaration, with its enterprise)
//! - `b` + seq → a sealed batch: item count (u32), topic (u16 length + text), exact payload
//! - `c` + source name → a source's cursor, written atomically with its items
//! - `m` + name → counters (next sequence number, boot counter); a new outbox
//!   starts its sequence at the clock in µs so a reinstalled gateway never
//!   reuses numbers the aggregator has already seen
//!
//! Sealing assigns the sequence number and is flushed *before* the batch is
//! published: if a sealed batch could be lost in a crash after it went out,
//! the same sequence number could be reused for different readings, and the
//! aggregator's de-duplication would then throw real data away.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use zonesync_proto::{AgentId, Batch, Declaration, EnterpriseId, Reading, Topic, ZoneId, WIRE_VERSION};

const PENDING: u8 = b'p';
const SEALED: u8 = b'b';
const CURSOR: u8 = b'c';
const META_NEXT_SEQ: &[u8] = b"mnext_seq";
const META_BOOT: &[u8] = b"mboot";

/// What went wrong in the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox store: {0}")]
    Store(#[from] sled::Error),
    #[error("outbox entry {key} is corrupt: {problem}")]
    Corrupt { key: String, problem: String },
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
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutboxStats {
    /// Items not yet in a batch.
    pub pending_items: usize,
    /// Batches sealed but not acknowledged.
    pub sealed_batches: usize,
    /// Next sequence number.
    pub next_seq: u64,
}

/// The sled-backed outbox.
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
    pending: AtomicUsize,
    next_seq: AtomicU64,
}

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

impl Outbox {
    /// Opens (or creates) the outbox at `path` with a cache of `cache_bytes`
    /// (sled's default is 1 GiB, far too much for a gateway).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, OutboxError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500))
            .open()?;
        let tree = db.open_tree("outbox")?;
        let pending = tree.scan_prefix([PENDING]).count();
        let next_seq = match tree.get(META_NEXT_SEQ)? {
            Some(_) => read_u64(&tree, META_NEXT_SEQ)?,
            None => {
                // A new outbox (new gateway, or a wiped disk) must never reuse
                // sequence numbers an earlier outbox of the same agent sent, or
                // the aggregator would drop its batches as duplicates. Starting
                // at the clock in microseconds is above any earlier outbox's
                // numbers, which grow by one per batch.
                let start = u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0);
                tree.insert(META_NEXT_SEQ, &start.to_be_bytes())?;
                tree.flush()?;
                start
            }
        };
        Ok(Self {
            db,
            tree,
            pending: AtomicUsize::new(pending),
            next_seq: AtomicU64::new(next_seq),
        })
    }

    /// Counts one more boot and returns it; durable before it returns.
    pub fn next_boot(&self) -> Result<u64, OutboxError> {
        let boot = read_u64(&self.tree, META_BOOT)? + 1;
        self.tree.insert(META_BOOT, &boot.to_be_bytes())?;
        self.tree.flush()?;
        Ok(boot)
    }

    /// Appends items, and the source's new cursor, in one atomic and durable step.
    pub fn append(&self, items: Vec<(EnterpriseId, Item)>, cursor: Option<(&str, &[u8])>) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        let n = items.len();
        for (enterprise, item) in items {
            let id = self.db.generate_id()?;
            let v = serde_json::to_vec(&PendingItem { enterprise, item }).map_err(|e| OutboxError::Corrupt {
                key: format!("p{id}"),
                problem: e.to_string(),
            })?;
            batch.insert(&key(PENDING, id)[..], v);
        }
        if let Some((source, c)) = cursor {
            let mut k = vec![CURSOR];
            k.extend_from_slice(source.as_bytes());
            batch.insert(k, c);
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        self.pending.fetch_add(n, Ordering::SeqCst);
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
        self.pending.load(Ordering::SeqCst)
    }

    /// Seals up to `max_items` pending items into batches, one per enterprise,
    /// each with the next sequence number; durable before it returns.
    pub fn seal(
        &self,
        max_items: usize,
        agent: &AgentId,
        zone: &ZoneId,
        boot: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Sealed>, OutboxError> {
        let mut groups: Vec<(EnterpriseId, Vec<Reading>, Vec<Declaration>)> = Vec::new();
        let mut taken = Vec::new();
        for kv in self.tree.scan_prefix([PENDING]).take(max_items) {
            let (k, v) = kv?;
            let p: PendingItem = serde_json::from_slice(&v).map_err(|e| OutboxError::Corrupt {
                key: format!("p{:?}", seq_of(&k)),
                problem: e.to_string(),
            })?;
            taken.push(k);
            let idx = match groups.iter().position(|g| g.0 == p.enterprise) {
                Some(i) => i,
                None => {
                    groups.push((p.enterprise.clone(), Vec::new(), Vec::new()));
                    groups.len() - 1
                }
            };
            match p.item {
                Item::Reading(r) => groups[idx].1.push(r),
                Item::Declaration(d) => groups[idx].2.push(d),
            }
        }
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        let mut seq = self.next_seq.load(Ordering::SeqCst);
        let mut sealed = Vec::with_capacity(groups.len());
        let mut batch = sled::Batch::default();
        for (enterprise, readings, declarations) in groups {
            let items = readings.len() + declarations.len();
            let b = Batch {
                v: WIRE_VERSION,
                agent: agent.clone(),
                boot,
                seq,
                sent_at: now,
                zone: zone.clone(),
                enterprise: enterprise.clone(),
                backfill: false,
                readings,
                declarations,
            };
            let payload = b.to_payload();
            let topic = Topic::data(zone, agent, &enterprise);
            let mut stored = Vec::with_capacity(payload.len() + topic.len() + 6);
            stored.extend_from_slice(&(items as u32).to_be_bytes());
            stored.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            stored.extend_from_slice(topic.as_bytes());
            stored.extend_from_slice(&payload);
            batch.insert(&key(SEALED, seq)[..], stored);
            sealed.push(Sealed {
                seq,
                topic,
                payload,
                items,
            });
            seq += 1;
        }
        for k in &taken {
            batch.remove(k.clone());
        }
        batch.insert(META_NEXT_SEQ, &seq.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        self.next_seq.store(seq, Ordering::SeqCst);
        self.pending.fetch_sub(taken.len(), Ordering::SeqCst);
        Ok(sealed)
    }

    /// Sealed, unacknowledged batches with a sequence number ≥ `from`, oldest first.
    pub fn sealed_from(&self, from: u64, limit: usize) -> Result<Vec<Sealed>, OutboxError> {
        let mut out = Vec::new();
        for kv in self.tree.range(key(SEALED, from)..=key(SEALED, u64::MAX)).take(limit) {
            let (k, v) = kv?;
            let seq = seq_of(&k).unwrap_or(0);
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
            out.push(Sealed {
                seq,
                topic,
                items,
                payload,
            });
        }
        Ok(out)
    }

    /// Forgets an acknowledged batch. Not flushed: losing this in a crash only
    /// means a resend, which the aggregator de-duplicates.
    /// Returns how many items the batch carried (0 if it was already gone).
    pub fn ack(&self, seq: u64) -> Result<usize, OutboxError> {
        let old = self.tree.remove(key(SEALED, seq))?;
        Ok(old
            .and_then(|v| {
                v.get(..4)
                    .map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize)
            })
            .unwrap_or(0))
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.tree.flush()?;
        Ok(())
    }

    /// Current counts.
    pub fn stats(&self) -> OutboxStats {
        OutboxStats {
            pending_items: self.pending_items(),
            sealed_batches: self.tree.scan_prefix([SEALED]).count(),
            next_seq: self.next_seq.load(Ordering::SeqCst),
        }
    }

    /// Next sequence number to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (AgentId, ZoneId, EnterpriseId, EnterpriseId) {
        (
            AgentId::parse("gw").unwrap(),
            ZoneId::parse("z").unwrap(),
            EnterpriseId::parse("91350100M000100Y43").unwrap(),
            EnterpriseId::with_check_char("91419001MA0000001").unwrap(),
        )
    }

    fn reading(v: f64) -> Item {
        Item::Reading(Reading {
            indicator: "electricity".into(),
            point: "M1".into(),
            value: v,
            unit: "kWh".into(),
            ts: Some(Utc::now()),
            period: None,
        })
    }

    #[test]
    fn items_survive_reopen_and_leave_only_when_acked() {
        let dir = tempfile::tempdir().unwrap();
        let (a, z, e1, e2) = ids();
        {
            let o = Outbox::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(o.next_boot().unwrap(), 1);
            o.append(
                vec![
                    (e1.clone(), reading(1.0)),
                    (e2.clone(), reading(2.0)),
                    (e1.clone(), reading(3.0)),
                ],
                Some(("sim", b"42")),
            )
            .unwrap();
            let first = o.next_seq();
            assert!(first > 1_700_000_000_000_000, "a new outbox starts at the clock in µs");
            let s = o.seal(10, &a, &z, 1, Utc::now()).unwrap();
            assert_eq!(s.len(), 2, "one batch per enterprise");
            assert_eq!((s[0].seq, s[0].items, s[1].seq, s[1].items), (first, 2, first + 1, 1));
            o.ack(first).unwrap();
            o.flush().unwrap();
        }
        let o = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(o.next_boot().unwrap(), 2);
        assert_eq!(o.cursor("sim").unwrap().as_deref(), Some(&b"42"[..]));
        let left = o.sealed_from(0, 10).unwrap();
        assert_eq!(left.len(), 1);
        let first = left[0].seq - 1;
        assert!(left[0].topic.ends_with(e2.as_str()));
        assert_eq!(left[0].items, 1);
        let b: Batch = serde_json::from_slice(&left[0].payload).unwrap();
        assert_eq!(b.readings[0].value, 2.0);
        assert_eq!(o.next_seq(), first + 2, "sequence numbers are never reused");
        assert_eq!(o.stats().pending_items, 0);
    }

    #[test]
    fn sealing_respects_the_batch_size_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, z, e1, _) = ids();
        let o = Outbox::open(dir.path(), 1 << 20).unwrap();
        let first = o.next_seq();
        o.append((0..25).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
            .unwrap();
        let mut values = Vec::new();
        loop {
            let s = o.seal(10, &a, &z, 1, Utc::now()).unwrap();
            if s.is_empty() {
                break;
            }
            for b in s {
                let b: Batch = serde_json::from_slice(&b.payload).unwrap();
                assert!(b.readings.len() <= 10);
                values.extend(b.readings.iter().map(|r| r.value));
            }
        }
        assert_eq!(values, (0..25).map(|i| i as f64).collect::<Vec<_>>());
        assert_eq!(o.next_seq(), first + 3);
    }
}

//! Sealing: pending items become numbered batches whose payload never
//! changes again, under the high-water mark raised first; and reading the
//! sealed batches back for (re)sending.

use super::chunk::RawItem;
use super::*;
use serde_json::value::RawValue;
use zonesync_proto::RawBatch;

/// A batch being filled: readings' and declarations' JSON as stored.
type RawContents<'a> = (Vec<&'a RawValue>, Vec<&'a RawValue>);

/// Whether a reading's JSON is stamped before `t` (a reading of a period,
/// or one whose time cannot be read, is not).
fn stamped_before(reading: &RawValue, t: DateTime<Utc>) -> bool {
    #[derive(serde::Deserialize)]
    struct Stamp {
        #[serde(default)]
        ts: Option<DateTime<Utc>>,
    }
    serde_json::from_str::<Stamp>(reading.get()).is_ok_and(|s| s.ts.is_some_and(|ts| ts < t))
}

impl Outbox {
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
        let mut chunks = Vec::new();
        let mut taken_items = 0u64;
        for kv in self.tree.scan_prefix([PENDING]) {
            let (k, v) = kv?;
            let n = chunk::count(&v);
            if !chunks.is_empty() && taken_items + n > max_take as u64 {
                break;
            }
            next.counters.held_bytes = next.counters.held_bytes.saturating_sub(entry_bytes(&k, &v));
            taken_items += n;
            chunks.push((k, v));
        }
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        // Per enterprise (by its stored JSON), in order of first appearance:
        // batches being filled with the items' JSON as stored.
        let mut groups: Vec<(&RawValue, Vec<RawContents<'_>>)> = Vec::new();
        for (k, v) in &chunks {
            for p in chunk::decode_raw(k, v)? {
                let idx = match groups.iter().position(|g| g.0.get() == p.enterprise.get()) {
                    Some(i) => i,
                    None => {
                        groups.push((p.enterprise, Vec::new()));
                        groups.len() - 1
                    }
                };
                let batches = &mut groups[idx].1;
                if batches.last().is_none_or(|(r, d)| r.len() + d.len() >= max_items) {
                    batches.push((Vec::new(), Vec::new()));
                }
                if let Some((r, d)) = batches.last_mut() {
                    match p.item {
                        RawItem::Reading(x) => r.push(x),
                        RawItem::Declaration(x) => d.push(x),
                    }
                }
            }
        }
        let Some(hw) = &self.high_water else {
            return Err(OutboxError::Inspecting);
        };
        let live_since = now - self.options.backfill_after;
        let mut seq = self.next_seq.load(Ordering::SeqCst);
        let mut sealed = Vec::with_capacity(groups.len());
        let mut batch = WriteBatch::default();
        for (raw_enterprise, bs) in groups {
            let enterprise: EnterpriseId =
                serde_json::from_str(raw_enterprise.get()).map_err(|e| OutboxError::Corrupt {
                    key: "pending".into(),
                    problem: format!("enterprise {}: {e}", raw_enterprise.get()),
                })?;
            let topic = Topic::data(zone, agent, &enterprise);
            for (readings, declarations) in bs {
                let items = readings.len() + declarations.len();
                let backfill = readings.iter().any(|r| stamped_before(r, live_since));
                let payload = RawBatch {
                    v: WIRE_VERSION,
                    agent,
                    boot,
                    outbox: guard.identity.as_ref(),
                    seq,
                    sent_at: now,
                    zone,
                    enterprise: &enterprise,
                    backfill,
                    readings: &readings,
                    declarations: &declarations,
                }
                .to_payload();
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
                    topic: topic.clone(),
                    payload,
                    items,
                });
                seq += 1;
            }
        }
        next.counters.pending_items = next.counters.pending_items.saturating_sub(taken_items);
        for (k, _) in chunks {
            batch.remove(k);
        }
        batch.insert(META_NEXT_SEQ, seq.to_be_bytes());
        batch.insert(counters::KEY, &next.counters.encode()[..]);
        next.write_changed(&guard, &mut batch);
        // The mark first: if the store later loses this write, its next
        // opening still finds every number handed out here below the mark.
        hw.raise(seq)?;
        // One durable commit (redb admits one writer at a time, so syncing
        // outside the lock, as with sled, would not let an append in sooner).
        self.tree.apply_durable(batch)?;
        *guard = next;
        self.next_seq.store(seq, Ordering::SeqCst);
        drop(guard);
        // Durable now: these numbers may be published from here on.
        if let Some(done) = &self.done {
            done.raise(seq)?;
        }
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
}

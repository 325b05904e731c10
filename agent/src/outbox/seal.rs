//! Sealing: pending items become numbered batches whose payload never
//! changes again, under the high-water mark raised first; and reading the
//! sealed batches back for (re)sending.

use super::chunk::RawItem;
use super::*;
use serde_json::value::RawValue;
use zonesync_proto::RawBatch;

/// What every batch of one seal is stamped with: agent, zone, boot, seal time.
type Stamp<'a> = (&'a AgentId, &'a ZoneId, u64, DateTime<Utc>);

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
    /// A batch holding a reading stamped more than the backfill window
    /// before `now` is marked `backfill`, once, here, so every resend is
    /// identical.
    pub fn seal_up_to(
        &self,
        max_items: usize,
        max_take: usize,
        agent: &AgentId,
        zone: &ZoneId,
        boot: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Sealed>, OutboxError> {
        let mut sealed = Vec::new();
        self.seal_pieces((max_items, max_take, 1), (agent, zone, boot, now), Some(&mut sealed))?;
        Ok(sealed)
    }

    /// Seals up to `pieces` times what [`Outbox::seal_up_to`] would, in one
    /// durable write: piece by piece, so no more than `max_take` items'
    /// payloads are in memory at once, but with one flush (and one raise of
    /// each mark) for all of them. The link seals a backlog this way: the
    /// flushes, not the CPU, bounded its drain (three syncs per seal of
    /// 2,000 readings; docs/profiles.md, figure 3, issue 17). Returns the
    /// batches sealed; nothing is published from here.
    #[allow(clippy::too_many_arguments)]
    pub fn seal_ahead(
        &self,
        max_items: usize,
        max_take: usize,
        pieces: usize,
        agent: &AgentId,
        zone: &ZoneId,
        boot: u64,
        now: DateTime<Utc>,
    ) -> Result<usize, OutboxError> {
        self.seal_pieces((max_items, max_take, pieces.max(1)), (agent, zone, boot, now), None)
    }

    /// Both of the above (`max_items`, `max_take`, `pieces`): `keep`
    /// collects the sealed batches when given. The outbox's lock is held
    /// throughout, so nothing is put on a wire (`put_on_wire` takes it)
    /// before the mark covers every number here and the write is durable.
    fn seal_pieces(
        &self,
        (max_items, max_take, pieces): (usize, usize, usize),
        stamp: Stamp<'_>,
        mut keep: Option<&mut Vec<Sealed>>,
    ) -> Result<usize, OutboxError> {
        let Some(hw) = &self.high_water else {
            return Err(OutboxError::Inspecting);
        };
        let mut guard = self.lock();
        let mut next = guard.clone();
        let first_seq = self.next_seq.load(Ordering::SeqCst);
        let mut seq = first_seq;
        let mut write: Option<store::Durable> = None;
        // The last pending key taken: the next piece reads on from it (the
        // write's removals are not seen by reads until it commits).
        let mut after: Option<Vec<u8>> = None;
        for _ in 0..pieces {
            let mut batch = WriteBatch::default();
            let taken = self.seal_piece(
                &guard,
                &mut next,
                &mut seq,
                &mut after,
                &mut batch,
                (max_items, max_take),
                stamp,
                keep.as_deref_mut(),
            )?;
            if taken == 0 {
                break;
            }
            batch.insert(META_NEXT_SEQ, seq.to_be_bytes());
            batch.insert(counters::KEY, &next.counters.encode()[..]);
            next.write_changed(&guard, &mut batch);
            let w = match &mut write {
                Some(w) => w,
                None => write.insert(self.tree.begin_durable()?),
            };
            w.apply(batch)?;
        }
        let Some(write) = write else {
            return Ok(0);
        };
        // The mark first: if the store later loses this write, its next
        // opening still finds every number handed out here below the mark.
        hw.raise(seq)?;
        // One durable commit (redb admits one writer at a time, so syncing
        // outside the lock, as with sled, would not let an append in sooner).
        write.commit()?;
        *guard = next;
        self.next_seq.store(seq, Ordering::SeqCst);
        drop(guard);
        // Durable now: these numbers may be published from here on.
        if let Some(done) = &self.done {
            done.raise(seq)?;
        }
        Ok((seq - first_seq) as usize)
    }

    /// One piece of a seal: takes the pending chunks after `after` (at least
    /// one, at most `max_take` items unless the first chunk alone is larger),
    /// numbers their batches from `seq` on and writes them, and the chunks'
    /// removal, into `batch`, counting all of it in `next`. Returns the items
    /// taken (0: nothing pending).
    #[allow(clippy::too_many_arguments)]
    fn seal_piece(
        &self,
        guard: &State,
        next: &mut State,
        seq: &mut u64,
        after: &mut Option<Vec<u8>>,
        batch: &mut WriteBatch,
        (max_items, max_take): (usize, usize),
        (agent, zone, boot, now): Stamp<'_>,
        mut keep: Option<&mut Vec<Sealed>>,
    ) -> Result<u64, OutboxError> {
        let max_items = max_items.max(1);
        let max_take = max_take.max(max_items);
        let mut chunks = Vec::new();
        let mut taken_items = 0u64;
        let scan = match after.take() {
            None => self.tree.scan_prefix([PENDING]),
            Some(k) => self.tree.scan_prefix_after([PENDING], k),
        };
        for kv in scan {
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
            return Ok(0);
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
        let live_since = now - self.options.backfill_after;
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
                    seq: *seq,
                    sent_at: now,
                    zone,
                    enterprise: &enterprise,
                    backfill,
                    readings: &readings,
                    declarations: &declarations,
                }
                .to_payload();
                let stored = encode_sealed(items, &topic, &payload);
                let k = key(SEALED, *seq);
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
                if let Some(keep) = keep.as_deref_mut() {
                    keep.push(Sealed {
                        seq: *seq,
                        topic: topic.clone(),
                        payload,
                        items,
                    });
                }
                *seq += 1;
            }
        }
        next.counters.pending_items = next.counters.pending_items.saturating_sub(taken_items);
        *after = chunks.last().map(|(k, _)| k.clone());
        for (k, _) in chunks {
            batch.remove(k);
        }
        Ok(taken_items)
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

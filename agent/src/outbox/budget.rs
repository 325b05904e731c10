//! The disk budget: the outbox never makes a source wait. When new items
//! would take the bytes held past `disk_budget_bytes`, the oldest
//! unacknowledged items go first — sealed batches not on the wire, oldest
//! `seq` first, then pending chunks, oldest first — and, if the new items alone
//! exceed the budget, the oldest of them. Every item dropped is added to the
//! persisted `dropped` counter in the same atomic batch that removes it.
//!
//! Why the bytes held and not sled's file size: sled's log keeps superseded
//! versions until it compacts a segment, so its size lags the data by an
//! amount that depends on its internal timing; a budget on it could drop far
//! more than needed, or not stop dropping. The bytes held are exact and only
//! change with what the outbox holds; `OutboxStats::size_on_disk` shows sled's
//! own size beside them.

use super::{chunk, entry_bytes, sealed_items, Counters, Outbox, OutboxError, PENDING, SEALED};
use std::sync::atomic::Ordering;

/// Adds to `batch` the removals that make room for a chunk of `incoming`
/// items (JSON, oldest first) within the budget, updating `next`. Returns how
/// many of the incoming items must themselves be dropped (the first ones).
pub(super) fn make_room(
    outbox: &Outbox,
    next: &mut Counters,
    batch: &mut sled::Batch,
    incoming: &[Vec<u8>],
) -> Result<usize, OutboxError> {
    let budget = outbox.options.disk_budget_bytes;
    let mut need = chunk::stored_bytes(incoming);
    // Keep the newest of what arrives if it cannot fit whole.
    let mut skipped = 0;
    while need > budget && skipped < incoming.len() {
        skipped += 1;
        need = chunk::stored_bytes(&incoming[skipped..]);
    }
    next.dropped += skipped as u64;
    if next.held_bytes + need <= budget {
        return Ok(skipped);
    }
    let from = super::key(SEALED, outbox.on_wire_below.load(Ordering::SeqCst));
    for kv in outbox.tree.range(from..=super::key(SEALED, u64::MAX)) {
        if next.held_bytes + need <= budget {
            return Ok(skipped);
        }
        let (k, v) = kv?;
        let items = sealed_items(&v);
        next.sealed_batches = next.sealed_batches.saturating_sub(1);
        next.sealed_items = next.sealed_items.saturating_sub(items);
        next.held_bytes = next.held_bytes.saturating_sub(entry_bytes(&k, &v));
        next.dropped += items;
        batch.remove(k);
    }
    for kv in outbox.tree.scan_prefix([PENDING]) {
        if next.held_bytes + need <= budget {
            break;
        }
        let (k, v) = kv?;
        let items = chunk::count(&v);
        next.pending_items = next.pending_items.saturating_sub(items);
        next.held_bytes = next.held_bytes.saturating_sub(entry_bytes(&k, &v));
        next.dropped += items;
        batch.remove(k);
    }
    Ok(skipped)
}

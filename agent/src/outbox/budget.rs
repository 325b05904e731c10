//! The disk budget: the outbox never makes a source wait. When new items
//! would take the bytes held past `disk_budget_bytes`, the oldest
//! unacknowledged items go first — sealed batches on no upstream's wire,
//! oldest `seq` first, then pending chunks, oldest first — and, if the new
//! items alone exceed the budget, the oldest of them. Every item dropped is
//! added to the persisted `dropped` counter, and to the dropped counts of
//! every upstream that had not acknowledged it, in the same atomic batch that
//! removes it: `dropped` if it was never published to that upstream (it will
//! certainly never arrive), `dropped_sent` if it was, without an
//! acknowledgement (a broken session, a confirmation that never came: it may
//! have been stored). Each upstream's presence reports both, and a reading is
//! either acknowledged by an upstream or counted as dropped for it, never both.
//!
//! A slow or absent upstream therefore costs the others nothing: batches
//! the others have acknowledged stay only for it, and are the first to go
//! when the budget is full.
//!
//! Why the bytes held and not the store's file size: redb reuses freed pages
//! but never shrinks its file (and sled, before it, kept superseded versions
//! until it compacted), so the file's size lags the data by an amount the
//! outbox does not control; a budget on it could drop far more than needed,
//! or not stop dropping. The bytes held are exact and only change with what
//! the outbox holds; `OutboxStats::size_on_disk` shows the file's size beside
//! them.

use super::{chunk, entry_bytes, sealed_items, Outbox, OutboxError, State, WriteBatch, PENDING, SEALED};

/// Counts `items` dropped before any upstream could have them.
fn dropped_for_all(next: &mut State, items: u64) {
    next.counters.dropped += items;
    for u in &mut next.upstreams {
        u.rec.dropped += items;
    }
}

/// Adds to `batch` the removals that make room for a chunk of `incoming`
/// items (JSON, oldest first) within the budget, updating `next`. Returns how
/// many of the incoming items must themselves be dropped (the first ones).
pub(super) fn make_room(
    outbox: &Outbox,
    next: &mut State,
    batch: &mut WriteBatch,
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
    dropped_for_all(next, skipped as u64);
    if next.counters.held_bytes + need <= budget {
        return Ok(skipped);
    }
    for kv in outbox.tree.range(super::key(SEALED, 0)..=super::key(SEALED, u64::MAX)) {
        if next.counters.held_bytes + need <= budget {
            return Ok(skipped);
        }
        let (k, v) = kv?;
        let seq = super::seq_of(&k).unwrap_or(0);
        if next.upstreams.iter().any(|u| u.on_wire(seq)) {
            continue;
        }
        let items = sealed_items(&v);
        let c = &mut next.counters;
        c.sealed_batches = c.sealed_batches.saturating_sub(1);
        c.sealed_items = c.sealed_items.saturating_sub(items);
        c.held_bytes = c.held_bytes.saturating_sub(entry_bytes(&k, &v));
        c.dropped += items;
        for u in &mut next.upstreams {
            if !u.forget(seq, items) {
                u.count_dropped(seq, items);
            }
        }
        batch.remove(k);
    }
    for kv in outbox.tree.scan_prefix([PENDING]) {
        if next.counters.held_bytes + need <= budget {
            break;
        }
        let (k, v) = kv?;
        let items = chunk::count(&v);
        next.counters.pending_items = next.counters.pending_items.saturating_sub(items);
        next.counters.held_bytes = next.counters.held_bytes.saturating_sub(entry_bytes(&k, &v));
        dropped_for_all(next, items);
        batch.remove(k);
    }
    Ok(skipped)
}

//! The outbox's identity and the high-water mark of its sequence numbers:
//! what makes a (agent, outbox, seq) mark name one batch's bytes for ever.
//!
//! - The identity is drawn at random when an outbox is created (never from a
//!   clock: a gateway whose clock ran years fast at install once numbered its
//!   batches so high that its later, correct-clock outbox looked like old
//!   news). Sequence numbers then start at 1 within it.
//! - A store may lose its newest writes (sled did on a flipped byte in its
//!   last segment; redb falls back to its previous commit when the newest
//!   is damaged), and a store can be restored from an older copy. Either way it
//!   opens knowing a lower `next_seq` than numbers already published. The
//!   mark in a small file *beside* the store directory — `<outbox>.seq-hw`,
//!   outside it so that restoring the directory does not restore the mark — is
//!   raised before every seal's write, so every published number is below it.
//!   An open that finds the store below what was published continues from
//!   the mark and moves to a fresh identity: batches the store lost may have
//!   been published, and under a fresh identity nothing sent again can
//!   collide with them.
//! - What was published is told apart from what was only numbered by a
//!   second mark, `<outbox>.seq-done`, raised after each seal's flush and
//!   before any of its batches is published. A crash between the first
//!   mark's sync and the store's flush leaves the store at or above
//!   `seq-done`: the numbers in between were never published, so the outbox
//!   skips them and keeps its identity. (Rotating there made an agent killed
//!   at that moment resend every batch it held under new marks.) An outbox
//!   from before `seq-done` has none and is judged by the first mark alone.
//! - Rotation ([`Outbox::rotate_identity`]) rewrites every batch still held so
//!   its payload names the new identity, keeping its sequence number (fresh
//!   under the new identity) and every upstream's cursor.

use super::{
    counters, decode_sealed, encode_sealed, entry_bytes, read_u64, Outbox, OutboxError, Tree, WriteBatch, SEALED,
};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::{Path, PathBuf};
use zonesync_proto::{Batch, OutboxId};

/// The identity, as text.
pub(super) const META_ID: &[u8] = b"moutbox_id";
/// Rollbacks detected, ever (as far as the store remembers).
pub(super) const META_ROLLBACKS: &[u8] = b"mrollbacks";
/// Identities drawn after the first, ever.
pub(super) const META_ROTATIONS: &[u8] = b"mrotations";

/// Why the outbox moved to a fresh identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The store opened below the high-water mark.
    Rollback,
    /// The link asked for it (a confirmation showed another batch under one of our marks).
    Requested,
}

/// A fresh random identity.
pub fn draw() -> Result<OutboxId, OutboxError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| OutboxError::Random)?;
    Ok(OutboxId::from_random(bytes))
}

/// Where the high-water mark of the outbox at `outbox` lives: a sibling file.
pub fn high_water_path(outbox: &Path) -> PathBuf {
    let mut name = outbox.as_os_str().to_owned();
    name.push(".seq-hw");
    PathBuf::from(name)
}

/// Where the mark of what may have been published lives: a sibling file,
/// raised after each seal's flush (see the module's notes).
pub fn done_path(outbox: &Path) -> PathBuf {
    let mut name = outbox.as_os_str().to_owned();
    name.push(".seq-done");
    PathBuf::from(name)
}

/// The stored identity (`None`: a new outbox, or one older than identities).
pub(super) fn load(tree: &Tree) -> Result<Option<OutboxId>, OutboxError> {
    match tree.get(META_ID)? {
        None => Ok(None),
        Some(v) => {
            let text = std::str::from_utf8(&v).ok();
            text.and_then(|t| OutboxId::parse(t).ok())
                .map(Some)
                .ok_or_else(|| OutboxError::Corrupt {
                    key: String::from_utf8_lossy(META_ID).into_owned(),
                    problem: format!("not an outbox id: {:?}", String::from_utf8_lossy(&v)),
                })
        }
    }
}

/// A stored counter (0 when absent).
pub(super) fn load_count(tree: &Tree, key: &[u8]) -> Result<u64, OutboxError> {
    read_u64(tree, key)
}

/// Adds to `batch` the rewrite of every held sealed batch so its payload
/// names `id`, and adjusts `held_bytes` to the new sizes. Returns how many.
fn rewrite_held(
    tree: &Tree,
    id: &OutboxId,
    counters: &mut counters::Counters,
    batch: &mut WriteBatch,
) -> Result<u64, OutboxError> {
    let mut n = 0;
    for kv in tree.scan_prefix([SEALED]) {
        let (k, v) = kv?;
        let sealed = decode_sealed(&k, &v)?;
        let mut b: Batch = serde_json::from_slice(&sealed.payload).map_err(|e| OutboxError::Corrupt {
            key: format!("b{}", sealed.seq),
            problem: format!("payload is not a batch: {e}"),
        })?;
        b.outbox = Some(id.clone());
        let stored = encode_sealed(sealed.items, &sealed.topic, &b.to_payload());
        counters.held_bytes = counters.held_bytes.saturating_sub(entry_bytes(&k, &v)) + entry_bytes(&k, &stored);
        batch.insert(k, stored);
        n += 1;
    }
    Ok(n)
}

impl Outbox {
    /// The identity sealed batches carry now (`None` only for an outbox
    /// opened with [`Outbox::inspect`] that predates identities).
    pub fn identity(&self) -> Option<OutboxId> {
        self.lock().identity.clone()
    }

    /// Moves to a fresh random identity: every sealed batch still held is
    /// rewritten to name it (same sequence numbers, same upstream cursors),
    /// durably, in one atomic step. The link must then announce a fresh
    /// presence and send the held batches again. Returns the new identity.
    pub fn rotate_identity(&self) -> Result<OutboxId, OutboxError> {
        self.rotate(Rotation::Requested)
    }

    pub(super) fn rotate(&self, why: Rotation) -> Result<OutboxId, OutboxError> {
        if self.high_water.is_none() {
            return Err(OutboxError::Inspecting);
        }
        let id = draw()?;
        let mut guard = self.lock();
        let mut next = guard.clone();
        let mut batch = WriteBatch::default();
        let rewritten = rewrite_held(&self.tree, &id, &mut next.counters, &mut batch)?;
        let previous = next.identity.replace(id.clone());
        next.rotations += 1;
        if why == Rotation::Rollback {
            next.rollbacks += 1;
            batch.insert(META_ROLLBACKS, next.rollbacks.to_be_bytes());
        }
        batch.insert(META_ID, id.as_str().as_bytes());
        batch.insert(META_ROTATIONS, next.rotations.to_be_bytes());
        batch.insert(counters::KEY, &next.counters.encode()[..]);
        self.tree.apply_batch(batch)?;
        *guard = next;
        drop(guard);
        self.tree.flush()?;
        tracing::warn!(
            previous = previous.as_ref().map(|p| p.as_str()).unwrap_or("none"),
            outbox = id.as_str(),
            rewritten,
            reason = ?why,
            "outbox moved to a fresh identity; held batches are sent again under it"
        );
        Ok(id)
    }
}

//! The outbox's running totals, kept in the tree under one key and rewritten
//! in the same atomic batch as every change they count, so they are exact
//! after a crash and an outbox opens without scanning its backlog.

use super::{entry_bytes, sealed_items, OutboxError, Tree, PENDING, SEALED};

/// Where the counters live in the tree.
pub(super) const KEY: &[u8] = b"mcounters";

/// Fields, in their stored order (u64 big-endian each).
const FIELDS: usize = 5;

/// Running totals of what the outbox holds and has dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Items not yet sealed.
    pub pending_items: u64,
    /// Sealed, unacknowledged batches.
    pub sealed_batches: u64,
    /// Items in those batches.
    pub sealed_items: u64,
    /// Bytes (keys + values) of pending items and sealed batches.
    pub held_bytes: u64,
    /// Items dropped, ever, to keep within the disk budget.
    pub dropped: u64,
}

impl Counters {
    pub(super) fn encode(&self) -> [u8; FIELDS * 8] {
        let mut out = [0u8; FIELDS * 8];
        let fields = [
            self.pending_items,
            self.sealed_batches,
            self.sealed_items,
            self.held_bytes,
            self.dropped,
        ];
        for (i, f) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&f.to_be_bytes());
        }
        out
    }

    fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != FIELDS * 8 {
            return None;
        }
        let f = |i: usize| v[i * 8..i * 8 + 8].try_into().ok().map(u64::from_be_bytes);
        Some(Self {
            pending_items: f(0)?,
            sealed_batches: f(1)?,
            sealed_items: f(2)?,
            held_bytes: f(3)?,
            dropped: f(4)?,
        })
    }

    /// The stored counters; `None` for an outbox written before they were kept.
    pub(super) fn load(tree: &Tree) -> Result<Option<Self>, OutboxError> {
        match tree.get(KEY)? {
            None => Ok(None),
            Some(v) => Self::decode(&v).map(Some).ok_or_else(|| OutboxError::Corrupt {
                key: String::from_utf8_lossy(KEY).into_owned(),
                problem: format!("{} bytes, expected {}", v.len(), FIELDS * 8),
            }),
        }
    }

    /// The same counts with another drop total (a recount cannot know drops).
    #[cfg(test)]
    pub(super) fn with_dropped(mut self, dropped: u64) -> Self {
        self.dropped = dropped;
        self
    }

    /// Counts what the tree holds (once, for an outbox without counters).
    pub(super) fn recount(tree: &Tree) -> Result<Self, OutboxError> {
        let mut c = Self::default();
        for kv in tree.scan_prefix([PENDING]) {
            let (k, v) = kv?;
            c.pending_items += super::chunk::count(&v);
            c.held_bytes += entry_bytes(&k, &v);
        }
        for kv in tree.scan_prefix([SEALED]) {
            let (k, v) = kv?;
            c.sealed_batches += 1;
            c.sealed_items += sealed_items(&v);
            c.held_bytes += entry_bytes(&k, &v);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Counters {
            pending_items: 1,
            sealed_batches: 2,
            sealed_items: 3,
            held_bytes: 4,
            dropped: u64::MAX,
        };
        assert_eq!(Counters::decode(&c.encode()), Some(c));
        assert_eq!(Counters::decode(&[0u8; 7]), None);
    }
}

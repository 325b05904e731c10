//! Per-upstream acknowledgement: sealed batches are stored once and shared by
//! every upstream (the zone's broker, the city's broker, …); each upstream
//! has its own cursor, so a slow or absent one neither loses data for the
//! others nor holds them back.
//!
//! Stored under `u` + name, in the same atomic batch as the change it
//! counts (like [`super::Counters`]): the cursor (lowest seq this upstream has
//! not acknowledged), the items dropped by the disk budget before this
//! upstream acknowledged them (split into those never published to it and
//! those published without an acknowledgement, which may have arrived), the
//! sealed batches (and their items) held at or above the cursor, and the
//! seq below which batches have been published to it.
//!
//! Acknowledgements above the cursor (out of order: a later PUBACK or
//! confirmation first) are kept only in memory; after a restart those batches
//! are simply sent again and the aggregator de-duplicates them by
//! (agent, outbox, seq) and digest. A batch leaves the tree once every upstream has acknowledged
//! it (its cursor passed it, or it is in its in-memory set).
//!
//! An upstream new to the outbox starts at the lowest sealed batch held, so
//! it receives the whole backlog still on disk (what was deleted before it was
//! configured is gone); an upstream no longer configured has its record
//! deleted at open, so it cannot pin batches forever.

use super::{OutboxError, Tree, SEALED};
use std::collections::BTreeMap;

/// Key prefix of an upstream's record.
pub(super) const PREFIX: u8 = b'u';

/// Fields of a record (u64 big-endian each).
const FIELDS: usize = 6;

/// Fields of a record written before `dropped_sent` and `sent_below` were kept.
const FIELDS_V1: usize = 4;

/// What is stored per upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Record {
    /// Lowest sequence number not acknowledged by this upstream.
    pub cursor: u64,
    /// Items dropped by the disk budget, ever, that were never published to
    /// this upstream: it will certainly never have them.
    pub dropped: u64,
    /// Sealed batches held with `seq ≥ cursor` (acknowledged out of order or not).
    pub batches: u64,
    /// Items in them.
    pub items: u64,
    /// Items dropped by the disk budget, ever, after being published to this
    /// upstream without an acknowledgement (a session broke, or a
    /// confirmation never came): they may have arrived and been stored.
    pub dropped_sent: u64,
    /// Every batch below this seq has been published to this upstream at
    /// least once (persisted with the record's next write, so after a crash
    /// it can lag: a batch sent just before may be counted in `dropped`).
    pub sent_below: u64,
}

impl Record {
    pub(super) fn encode(&self) -> [u8; FIELDS * 8] {
        let mut out = [0u8; FIELDS * 8];
        let fields = [
            self.cursor,
            self.dropped,
            self.batches,
            self.items,
            self.dropped_sent,
            self.sent_below,
        ];
        for (i, f) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&f.to_be_bytes());
        }
        out
    }

    pub(super) fn decode(k: &[u8], v: &[u8]) -> Result<Self, OutboxError> {
        let corrupt = || OutboxError::Corrupt {
            key: String::from_utf8_lossy(k).into_owned(),
            problem: format!("{} bytes, expected {} (or {})", v.len(), FIELDS * 8, FIELDS_V1 * 8),
        };
        if v.len() != FIELDS * 8 && v.len() != FIELDS_V1 * 8 {
            return Err(corrupt());
        }
        let f = |i: usize| {
            v[i * 8..i * 8 + 8]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt())
        };
        Ok(Self {
            cursor: f(0)?,
            dropped: f(1)?,
            batches: f(2)?,
            items: f(3)?,
            dropped_sent: if v.len() > FIELDS_V1 * 8 { f(4)? } else { 0 },
            sent_below: if v.len() > FIELDS_V1 * 8 { f(5)? } else { 0 },
        })
    }
}

/// The key of an upstream's record.
pub(super) fn key(name: &str) -> Vec<u8> {
    let mut k = vec![PREFIX];
    k.extend_from_slice(name.as_bytes());
    k
}

/// One upstream's state: its stored record and what is kept only in memory.
#[derive(Debug, Clone)]
pub(super) struct Upstream {
    /// Its configured name.
    pub name: String,
    /// What is stored.
    pub rec: Record,
    /// Acknowledged above the cursor: seq → items.
    pub acked_above: BTreeMap<u64, u64>,
    /// Batches below this, at or above the cursor and not acknowledged, are on
    /// this upstream's wire (published, acknowledgement awaited): the disk
    /// budget leaves them alone, so a reading is either acknowledged or
    /// counted as dropped for an upstream, never both.
    pub on_wire_below: u64,
}

impl Upstream {
    pub(super) fn new(name: String, rec: Record) -> Self {
        Self {
            name,
            rec,
            acked_above: BTreeMap::new(),
            on_wire_below: 0,
        }
    }

    /// Whether this upstream has acknowledged `seq`.
    pub(super) fn has_acked(&self, seq: u64) -> bool {
        seq < self.rec.cursor || self.acked_above.contains_key(&seq)
    }

    /// Counts `items` of batch `seq` dropped by the budget before this
    /// upstream acknowledged them, under whether they were ever published to it.
    pub(super) fn count_dropped(&mut self, seq: u64, items: u64) {
        if seq < self.rec.sent_below {
            self.rec.dropped_sent += items;
        } else {
            self.rec.dropped += items;
        }
    }

    /// Whether `seq` is on this upstream's wire.
    pub(super) fn on_wire(&self, seq: u64) -> bool {
        seq < self.on_wire_below && !self.has_acked(seq)
    }

    /// Accounts for a held batch leaving the tree (deleted once everyone
    /// acknowledged it, or dropped by the budget). Returns whether this
    /// upstream had acknowledged it.
    pub(super) fn forget(&mut self, seq: u64, items: u64) -> bool {
        if seq < self.rec.cursor {
            return true;
        }
        self.rec.batches = self.rec.batches.saturating_sub(1);
        self.rec.items = self.rec.items.saturating_sub(items);
        self.acked_above.remove(&seq).is_some()
    }

    /// Moves the cursor past every batch acknowledged out of order or no
    /// longer held, up to the first held one not acknowledged (or `next_seq`).
    /// `gone`: batches still in the tree whose removal is in a write not yet
    /// applied (acknowledgements taken together), counted as not held.
    pub(super) fn advance(
        &mut self,
        tree: &Tree,
        next_seq: u64,
        gone: &std::collections::BTreeSet<u64>,
    ) -> Result<(), OutboxError> {
        let from = super::key(SEALED, self.rec.cursor);
        for kv in tree.range_keys(from..=super::key(SEALED, u64::MAX)) {
            let (k, _) = kv?;
            let seq = super::seq_of(&k).unwrap_or(u64::MAX);
            if gone.contains(&seq) {
                continue;
            }
            match self.acked_above.remove(&seq) {
                Some(items) => {
                    self.rec.batches = self.rec.batches.saturating_sub(1);
                    self.rec.items = self.rec.items.saturating_sub(items);
                }
                None => {
                    self.rec.cursor = seq;
                    self.acked_above = self.acked_above.split_off(&seq);
                    return Ok(());
                }
            }
        }
        self.rec.cursor = next_seq;
        self.acked_above.clear();
        Ok(())
    }

    /// Sealed batches held and not yet acknowledged by this upstream, and their items.
    pub(super) fn unacked(&self) -> (u64, u64) {
        let items: u64 = self.acked_above.values().sum();
        (
            self.rec.batches.saturating_sub(self.acked_above.len() as u64),
            self.rec.items.saturating_sub(items),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_refuses_a_wrong_length() {
        let r = Record {
            cursor: 1,
            dropped: 2,
            batches: 3,
            items: u64::MAX,
            dropped_sent: 4,
            sent_below: 5,
        };
        assert_eq!(Record::decode(b"ux", &r.encode()).unwrap(), r);
        // A record written before the last two fields were kept.
        let old = Record::decode(b"ux", &r.encode()[..FIELDS_V1 * 8]).unwrap();
        assert_eq!(
            old,
            Record {
                dropped_sent: 0,
                sent_below: 0,
                ..r
            }
        );
        assert!(matches!(
            Record::decode(b"ux", &[0u8; 9]),
            Err(OutboxError::Corrupt { .. })
        ));
    }

    #[test]
    fn on_wire_and_acked_are_disjoint() {
        let mut u = Upstream::new(
            "a".into(),
            Record {
                cursor: 10,
                ..Record::default()
            },
        );
        u.on_wire_below = 15;
        u.acked_above.insert(12, 5);
        assert!(!u.on_wire(9) && u.has_acked(9));
        assert!(u.on_wire(10) && u.on_wire(11) && !u.on_wire(12) && u.has_acked(12));
        assert!(!u.on_wire(15));
    }
}

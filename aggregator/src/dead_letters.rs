//! Dead letters: every payload or item refused, with its reasons, kept in
//! the store's database (tree `dead_letters`) up to a cap, newest first.

use crate::store::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most dead letters kept; the oldest go first.
const DEAD_LETTER_CAP: usize = 100_000;

/// A payload or items refused, with the reasons.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Store id (grows with time).
    pub id: u64,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// MQTT topic.
    pub topic: String,
    /// Zone, if known.
    pub zone: Option<String>,
    /// Agent, if known.
    pub agent: Option<String>,
    /// Sequence number, if known.
    pub seq: Option<u64>,
    /// Every reason, human-readable.
    pub reasons: Vec<String>,
    /// Metric labels of the reasons.
    pub labels: Vec<String>,
    /// Whole batch refused (true) or only some items (false).
    pub whole_batch: bool,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Start of the payload, lossy UTF-8.
    pub excerpt: String,
}

/// The dead letters held.
pub struct DeadLetters {
    db: sled::Db,
    tree: sled::Tree,
}

impl DeadLetters {
    /// Opens the dead-letter tree of `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree("dead_letters")?,
        })
    }

    /// Writes a dead letter (assigning its id). Not flushed.
    pub fn put(&self, mut d: DeadLetter) -> Result<u64, StoreError> {
        d.id = self.db.generate_id()?;
        self.tree
            .insert(d.id.to_be_bytes(), serde_json::to_vec(&d).unwrap_or_default())?;
        if d.id.is_multiple_of(1024) {
            let excess = self.tree.len().saturating_sub(DEAD_LETTER_CAP);
            for kv in self.tree.iter().take(excess) {
                self.tree.remove(kv?.0)?;
            }
        }
        Ok(d.id)
    }

    /// The newest dead letters first, optionally of one zone.
    pub fn list(&self, limit: usize, zone: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.iter().rev() {
            let (_, v) = kv?;
            let d: DeadLetter = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if zone.is_none() || d.zone.as_deref() == zone {
                out.push(d);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every dead letter held, oldest first (for the start-up rebuild).
    pub fn each(&self, mut f: impl FnMut(DeadLetter)) -> Result<(), StoreError> {
        for kv in self.tree.iter() {
            let (_, v) = kv?;
            if let Ok(d) = serde_json::from_slice::<DeadLetter>(&v) {
                f(d);
            }
        }
        Ok(())
    }

    /// Dead letters held.
    pub fn count(&self) -> usize {
        self.tree.len()
    }
}

//! The durable delivery queue (tree `alert_deliveries` of the store's
//! database): what waits to be sent to a sink, retried until delivered.

use super::Delivery;
use crate::store::{json_of, StoreError};
use chrono::{DateTime, Utc};

/// Deliveries waiting.
pub struct DeliveryQueue {
    db: sled::Db,
    tree: sled::Tree,
}

impl DeliveryQueue {
    /// Opens the delivery tree of `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree("alert_deliveries")?,
        })
    }

    /// Queues a delivery, assigning its id. Not flushed.
    pub fn enqueue(&self, mut d: Delivery) -> Result<u64, StoreError> {
        d.id = self.db.generate_id()?;
        self.tree
            .insert(d.id.to_be_bytes(), serde_json::to_vec(&d).unwrap_or_default())?;
        Ok(d.id)
    }

    /// Deliveries due at `now`, oldest first.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let d: Delivery = json_of(&kv?.1)?;
            if d.next_attempt_at <= now {
                out.push(d);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Deliveries waiting.
    pub fn pending(&self) -> usize {
        self.tree.len()
    }

    /// Rewrites a delivery after a failed attempt. Not flushed.
    pub fn update(&self, d: &Delivery) -> Result<(), StoreError> {
        self.tree
            .insert(d.id.to_be_bytes(), serde_json::to_vec(d).unwrap_or_default())?;
        Ok(())
    }

    /// Drops queued deliveries to `to` of kind `what` (a newer summary supersedes older ones). Not flushed.
    pub fn drop_queued(&self, what: &str, to: &super::Destination) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let d: Delivery = json_of(&v)?;
            if d.what == what && &d.to == to {
                self.tree.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Drops a delivered (or undeliverable) item. Not flushed.
    pub fn remove(&self, id: u64) -> Result<(), StoreError> {
        self.tree.remove(id.to_be_bytes())?;
        Ok(())
    }
}

//! Alert states and their history, kept in the store's database (trees
//! `alerts` and `alert_history`).

use super::{AlertRecord, Event};
use crate::store::{json_of, StoreError};

/// Alert states and transitions. Cloning shares the same trees.
#[derive(Clone)]
pub struct AlertStore {
    db: sled::Db,
    alerts: sled::Tree,
    history: sled::Tree,
}

impl AlertStore {
    /// Opens the alert trees of `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            alerts: db.open_tree("alerts")?,
            history: db.open_tree("alert_history")?,
        })
    }

    /// One alert's state.
    pub fn get(&self, key: &str) -> Result<Option<AlertRecord>, StoreError> {
        self.alerts.get(key)?.map(|v| json_of(&v)).transpose()
    }

    /// Saves one alert's state. Not flushed.
    pub fn put(&self, rec: &AlertRecord) -> Result<(), StoreError> {
        self.alerts
            .insert(rec.key.as_bytes(), serde_json::to_vec(rec).unwrap_or_default())?;
        Ok(())
    }

    /// Every alert state.
    pub fn all(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.alerts.iter().map(|kv| json_of(&kv?.1)).collect()
    }

    /// Appends a transition to the history, assigning its id. Not flushed.
    pub fn push_history(&self, e: &Event) -> Result<u64, StoreError> {
        let id = self.db.generate_id()?;
        let mut e = e.clone();
        e.id = id;
        self.history
            .insert(id.to_be_bytes(), serde_json::to_vec(&e).unwrap_or_default())?;
        Ok(id)
    }

    /// The newest transitions first.
    pub fn history(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.history
            .iter()
            .rev()
            .take(limit)
            .map(|kv| json_of(&kv?.1))
            .collect()
    }
}

//! All of the aggregator's storage, in one place (sled), so the fault tests
//! can judge it and a later backend swap touches one file.
//!
//! The store is a log of the batches the ledger accepted, one record per
//! batch ([`record`]), keyed by arrival: the facts in memory are rebuilt by
//! replaying it through the same ledger in the same order, so what a restart
//! finds is what was live. Trees:
//! - `batches`: arrival (u64 BE) → [`record`] of an accepted batch
//! - `facts`: `a` zone 0x00 agent → last presence (JSON). Stores written
//!   before the log also hold readings (`r`), declarations (`d`) and marks
//!   (`s`, `b`, `o`) here: they are moved into the log once, at open; and
//!   `zaccepted` → batches accepted ever (u64 BE), which stores of December
//!   2026 wrote beside each record. The count is now the last record's
//!   arrival number: one insert per batch instead of two.
//! - `dead_letters`, `alerts`, `alert_history`, `alert_deliveries`: kept by the
//!   modules that own them (`dead_letters`, `alerts::store`, `outbound::queue`)
//!   in this database, so [`Store::flush`] makes them durable too.
//!
//! Callers `flush()` before they acknowledge anything to the broker; the
//! flush then raises the high-water mark kept in a file beside the store
//! (`store.high-water`), so a store that silently lost flushed writes (sled
//! recovering past a damaged segment, an old disk image) is refused at open
//! instead of starting with confirmed batches gone.

mod legacy;
pub mod record;

use crate::facts::Ledger;
use crate::state::State;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use zonesync_proto::{Accepted, Catalog, Presence};
use zonesync_runtime::{HighWater, HighWaterError, StoreOpenError};

/// The key of the accepted-batch counter that earlier stores kept.
const ACCEPTED: &[u8] = b"zaccepted";

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store entry is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Open(#[from] StoreOpenError),
    #[error(transparent)]
    HighWater(#[from] HighWaterError),
    #[error("store {store} rolled back: it holds {held} accepted batches, but {mark} records that {flushed} were durably stored (and confirmed to agents, who then deleted them). Do not run on it: stop the aggregator and restore {store} together with {mark} from the same backup, or — to accept the loss and go on — move {mark} aside; the agents' local history (`zonesync-agent export`) holds the readings to resend")]
    RolledBack {
        store: String,
        mark: String,
        held: u64,
        flushed: u64,
    },
}

/// The sled store.
pub struct Store {
    db: sled::Db,
    facts: sled::Tree,
    batches: sled::Tree,
    /// Batches accepted ever, as written to the store (not necessarily flushed):
    /// the next record's arrival number.
    accepted: AtomicU64,
    /// The count durably flushed, kept apart from the store.
    high_water: HighWater,
    /// Where the store lives, for messages.
    path: PathBuf,
}

/// Reads a JSON value the store's database holds (the trees other modules keep there).
pub(crate) fn json_of<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The high-water mark file of the store at `path`: beside it, not in it,
/// so whatever damages or restores the store's directory leaves it alone.
pub fn high_water_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "store".into());
    name.push(".high-water");
    path.with_file_name(name)
}

fn k(parts: &[&[u8]], tag: u8) -> Vec<u8> {
    let mut v = vec![tag];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            v.push(0);
        }
        v.extend_from_slice(p);
    }
    v
}

fn read_u64(v: &[u8], what: &str) -> Result<u64, StoreError> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(what.into()))
}

impl Store {
    /// Opens (or creates) the store with a page cache of `cache_bytes`.
    ///
    /// Refused — with an error naming the files and what to do — when sled
    /// cannot read it, or when it holds fewer accepted batches than the
    /// high-water mark beside it says were flushed (it rolled back).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let mark_path = high_water_path(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Corrupt(format!("creating {}: {e}", dir.display())))?;
        }
        let high_water = HighWater::open(&mark_path)?;
        let db = zonesync_runtime::open_sled(&sled::Config::new().path(path).cache_capacity(cache_bytes), path)?;
        let facts = db.open_tree("facts")?;
        let batches = db.open_tree("batches")?;
        // Arrival numbers run from 1 without gaps, so the last record's is
        // the count; a counter written by an earlier version counts too.
        let last = match batches.last()? {
            Some((k, _)) => read_u64(&k, "batch record key")?,
            None => 0,
        };
        let counted = match facts.get(ACCEPTED)? {
            Some(v) => read_u64(&v, "accepted-batch counter")?,
            None => 0,
        };
        let held = last.max(counted);
        if let Some(flushed) = high_water.get().filter(|f| *f > held) {
            return Err(StoreError::RolledBack {
                store: path.display().to_string(),
                mark: mark_path.display().to_string(),
                held,
                flushed,
            });
        }
        let store = Self {
            db,
            facts,
            batches,
            accepted: AtomicU64::new(held),
            high_water,
            path: path.to_owned(),
        };
        legacy::migrate(&store)?;
        if store.high_water.get().is_none() {
            store.flush()?;
        }
        Ok(store)
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database, for the modules that keep their own trees in it (dead
    /// letters, alerts, the delivery queue): one flush makes them all durable.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Appends an accepted batch to the log (not flushed); returns its arrival number.
    pub fn append(&self, received: DateTime<Utc>, a: &Accepted) -> Result<u64, StoreError> {
        let arrival = self.accepted.load(Ordering::SeqCst).saturating_add(1);
        self.batches
            .insert(arrival.to_be_bytes(), record::encode(received, a))?;
        self.accepted.store(arrival, Ordering::SeqCst);
        Ok(arrival)
    }

    /// Batches accepted ever.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Makes everything written so far durable, then raises the high-water
    /// mark to the batches it holds.
    pub fn flush(&self) -> Result<(), StoreError> {
        let accepted = self.accepted.load(Ordering::SeqCst);
        self.db.flush()?;
        self.high_water.raise(accepted)?;
        Ok(())
    }

    /// Rebuilds the ledger and the read model from everything stored: the
    /// batch log replayed in arrival order, then the agents' presences that
    /// `admit` lets in — a presence stored before its agent was unbound (or
    /// before presences were checked) makes no agent now.
    pub fn rebuild(
        &self,
        ledger: &mut Ledger,
        state: &mut State,
        catalog: &Catalog,
        admit: &dyn Fn(&Presence) -> bool,
    ) -> Result<(), StoreError> {
        for kv in self.batches.iter() {
            let (key, v) = kv?;
            let rec = record::decode(&v).ok_or_else(|| {
                StoreError::Corrupt(format!("batch record {:?} in {}", key.as_ref(), self.path.display()))
            })?;
            let a = &rec.batch;
            if let Some(applied) = ledger.apply(a, catalog) {
                state.apply_applied(a, &applied, catalog, None);
                state.note_batch(
                    &a.zone,
                    &a.agent,
                    a.outbox.as_ref(),
                    a.boot,
                    a.seq,
                    a.sent_at,
                    rec.received,
                );
                if a.backfill {
                    state.note_backfill(&a.zone, &a.agent, applied.new_readings as u64);
                }
            }
        }
        for kv in self.facts.scan_prefix(b"a") {
            let (key, v) = kv?;
            let p: Presence = serde_json::from_slice(&v)
                .map_err(|_| StoreError::Corrupt(format!("presence key {:?}", String::from_utf8_lossy(&key))))?;
            if admit(&p) {
                state.apply_presence(&p, p.at);
            }
        }
        Ok(())
    }

    /// Remembers an agent's last presence message. Not flushed.
    pub fn put_presence(&self, p: &Presence) -> Result<(), StoreError> {
        let key = k(&[p.zone.as_str().as_bytes(), p.agent.as_str().as_bytes()], b'a');
        self.facts.insert(key, serde_json::to_vec(p).unwrap_or_default())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{id, register, utc};
    use zonesync_proto::{AgentId, CanonicalReading, ZoneId};

    fn accepted(seq: u64, readings: Vec<CanonicalReading>) -> Accepted {
        Accepted {
            agent: AgentId::parse("gw-1").expect("agent id"),
            boot: 1,
            outbox: None,
            seq,
            digest: format!("d{seq}"),
            sent_at: utc("2026-11-23T08:00:00Z"),
            zone: ZoneId::parse("z").expect("zone id"),
            enterprise: id(1),
            backfill: false,
            readings,
            declarations: vec![],
            refused: vec![],
        }
    }

    #[test]
    fn the_log_replays_into_what_was_live() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store");
        let cat = Catalog::builtin().expect("catalog");
        let store = Store::open(&path, 1 << 20).expect("store");
        let (mut ledger, mut live) = (Ledger::default(), State::default());
        let batches = [
            accepted(
                1,
                vec![
                    register(10.0, "2026-11-23T07:00:00Z"),
                    register(30.0, "2026-11-23T09:00:00Z"),
                ],
            ),
            accepted(2, vec![register(20.0, "2026-11-23T08:00:00Z")]),
            accepted(1, vec![register(99.0, "2026-11-23T08:30:00Z")]),
            // A declaration: its time (the batch's sent_at) is kept with it.
            zonesync_proto::Accepted {
                declarations: vec![("dt_maturity".into(), zonesync_proto::DeclaredValue::Integer(3))],
                ..accepted(3, vec![])
            },
        ];
        for a in &batches {
            if ledger.identify(a) == crate::facts::Identity::New {
                store.append(utc("2026-11-23T10:00:00Z"), a).expect("append");
                let applied = ledger.apply(a, &cat).expect("applied");
                live.apply_applied(a, &applied, &cat, None);
            }
        }
        store.flush().expect("flush");
        assert_eq!(store.accepted(), 3, "the reused mark was never logged");
        drop(store);
        let store = Store::open(&path, 1 << 20).expect("store");
        let (mut ledger2, mut rebuilt) = (Ledger::default(), State::default());
        store
            .rebuild(&mut ledger2, &mut rebuilt, &cat, &|_| true)
            .expect("rebuild");
        let z = ZoneId::parse("z").expect("zone");
        let month = zonesync_proto::Period::Month(2026, 11);
        let kwh = |s: &State| s.zones[&z].enterprises[&id(1)].amount("electricity", month);
        assert_eq!(kwh(&rebuilt), kwh(&live));
        assert_eq!(kwh(&live).map(|(v, _)| v), Some(20.0));
        assert_eq!(rebuilt.zones[&z].readings_stored, 3);
        let history = |s: &State| s.zones[&z].enterprises[&id(1)].declared_history.clone();
        assert_eq!(history(&rebuilt), history(&live));
        assert_eq!(
            history(&live)["dt_maturity"],
            vec![(utc("2026-11-23T08:00:00Z"), zonesync_proto::DeclaredValue::Integer(3))]
        );
    }

    #[test]
    fn a_store_put_back_from_an_older_copy_is_refused_at_open_naming_both_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store");
        let store = Store::open(&path, 1 << 20).expect("store");
        store
            .append(
                utc("2026-11-23T08:00:00Z"),
                &accepted(1, vec![register(1.0, "2026-11-23T07:45:00Z")]),
            )
            .expect("append");
        store.flush().expect("flush");
        drop(store);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let copy = dir.path().join("copy");
        copy_dir(&path, &copy);
        let store = Store::open(&path, 1 << 20).expect("store");
        for seq in 2..=4 {
            store
                .append(
                    utc("2026-11-23T08:00:00Z"),
                    &accepted(seq, vec![register(seq as f64, "2026-11-23T07:45:00Z")]),
                )
                .expect("append");
        }
        store.flush().expect("flush");
        drop(store);
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::remove_dir_all(&path).expect("remove");
        copy_dir(&copy, &path);
        let e = match Store::open(&path, 1 << 20) {
            Err(e) => e,
            Ok(_) => panic!("a store that lost three flushed batches must not open"),
        };
        let text = e.to_string();
        assert!(
            matches!(
                e,
                StoreError::RolledBack {
                    held: 1,
                    flushed: 4,
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains(&path.display().to_string()) && text.contains("store.high-water"),
            "{text}"
        );
        // Moving the mark aside is the documented way to accept the loss.
        std::fs::remove_file(high_water_path(&path)).expect("remove mark");
        assert!(Store::open(&path, 1 << 20).is_ok());
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read dir") {
            let e = e.expect("entry");
            let target = to.join(e.file_name());
            if e.file_type().expect("type").is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).expect("copy");
            }
        }
    }
}

//! The zone store's epoch: its identity for the center, made once when the
//! store first publishes and kept in the store itself (tree `federation`).
//!
//! A zone's data version counts the batches its store holds, so a store that
//! was wiped and started afresh counts from zero again. Without an epoch the
//! center would keep the old store's higher version until the new one passed
//! it; with it, the center orders snapshots by (epoch, version) and takes the
//! new store at once. The epoch is the creation time in milliseconds: a new
//! store on the same machine is later than the one it replaces. It lives in
//! the store, not beside it, so it goes exactly when the store's data goes.

use chrono::{DateTime, Utc};

/// The tree and key the epoch is kept under.
const TREE: &str = "federation";
const KEY: &[u8] = b"epoch";

/// Why the epoch could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    #[error("zone store epoch: {0}")]
    Sled(#[from] sled::Error),
    #[error("zone store epoch is corrupt ({0} bytes, 8 expected)")]
    Corrupt(usize),
}

/// The store's epoch: the one it holds, or `now` in milliseconds (at least
/// 1, 0 meaning "no epoch"), written and flushed before it is first used.
pub fn load_or_create(db: &sled::Db, now: DateTime<Utc>) -> Result<u64, EpochError> {
    let tree = db.open_tree(TREE)?;
    if let Some(v) = tree.get(KEY)? {
        let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| EpochError::Corrupt(v.len()))?;
        return Ok(u64::from_be_bytes(bytes));
    }
    let epoch = u64::try_from(now.timestamp_millis()).unwrap_or(0).max(1);
    // Another caller may have made it meanwhile: the first one written wins.
    match tree.compare_and_swap(KEY, None::<&[u8]>, Some(&epoch.to_be_bytes()[..]))? {
        Ok(()) => {
            db.flush()?;
            Ok(epoch)
        }
        Err(cas) => {
            let v = cas.current.ok_or(EpochError::Corrupt(0))?;
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| EpochError::Corrupt(v.len()))?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::utc;

    #[test]
    fn a_store_keeps_its_epoch_and_a_new_store_gets_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let first = {
            let db = sled::open(&path).unwrap();
            let e = load_or_create(&db, utc("2026-11-01T08:00:00+08:00")).unwrap();
            assert_eq!(load_or_create(&db, utc("2026-11-05T08:00:00+08:00")).unwrap(), e);
            e
        };
        let db = sled::open(&path).unwrap();
        assert_eq!(
            load_or_create(&db, utc("2026-12-01T08:00:00+08:00")).unwrap(),
            first,
            "kept across a reopen"
        );
        drop(db);
        std::fs::remove_dir_all(&path).unwrap();
        let db = sled::open(&path).unwrap();
        let reset = load_or_create(&db, utc("2026-12-01T08:00:00+08:00")).unwrap();
        assert!(reset > first, "a reset store is a later epoch");
    }
}

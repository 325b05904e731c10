//! Moving an outbox kept by an earlier agent in sled into the redb store, once,
//! at open: a gateway upgraded with readings still held must not lose them,
//! nor be told to drain first (its broker may be the reason they are held).
//!
//! sled's files (`conf`, `db`, `snap.*`, `blobs/`) sit in the outbox
//! directory where the redb file now goes. The copy is written under
//! `migrating/`, made durable, then renamed to `outbox.redb`; only then are
//! sled's files removed. A crash at any step leaves either
//! sled's files alone (the copy is thrown away and made again) or the
//! complete redb file beside them (they are removed). Every key and value
//! is copied as it is: the layout did not change, so the counters, cursors,
//! identity and sequence number carry over exactly.
//!
//! A sled store that cannot be read stops the agent with the error naming
//! it, as before the change; the sled code stays in the agent only for this.

use super::store::{Tree, WriteBatch, FILE};
use super::OutboxError;
use std::path::{Path, PathBuf};

/// Entries copied per transaction (the copy is only kept once complete).
const PER_COMMIT: usize = 1_000;

/// sled's files in an outbox directory.
fn sled_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "conf" || n == "db" || n == "blobs" || n.starts_with("snap."))
        })
        .collect()
}

/// Whether `dir` holds an outbox written by sled.
pub(super) fn has_sled(dir: &Path) -> bool {
    dir.join("conf").exists() || dir.join("db").exists()
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> OutboxError + '_ {
    move |e| OutboxError::OpenStore {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Copies a sled outbox in `dir` into the redb store, if there is one.
/// Returns the entries copied (`None`: there was nothing to migrate).
pub(super) fn from_sled(dir: &Path, cache_bytes: u64) -> Result<Option<u64>, OutboxError> {
    if !has_sled(dir) {
        return Ok(None);
    }
    let target = dir.join(FILE);
    if target.exists() {
        // Copied and renamed before a crash: only sled's files are left to go.
        remove(dir)?;
        return Ok(None);
    }
    let staging = dir.join("migrating");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let config = sled::Config::new().path(dir).cache_capacity(cache_bytes);
    let db = zonesync_runtime::open_sled(&config, dir)?;
    let from = db.open_tree("outbox")?;
    // The copy is built in its own directory, so nothing named `outbox.redb`
    // exists until it is complete.
    let copy = Tree::open(&staging, cache_bytes)?;
    let mut n = 0u64;
    let mut batch = WriteBatch::default();
    for kv in from.iter() {
        let (k, v) = kv?;
        batch.insert(&k, &v);
        n += 1;
        if n.is_multiple_of(PER_COMMIT as u64) {
            copy.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    copy.apply_batch(batch)?;
    copy.flush()?;
    drop(copy);
    drop(from);
    drop(db);
    std::fs::rename(staging.join(FILE), &target).map_err(io(&target))?;
    std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    remove(dir)?;
    tracing::warn!(
        outbox = %dir.display(),
        entries = n,
        "outbox moved from sled to redb: every reading, batch, cursor and counter it held was copied, sled's files removed"
    );
    Ok(Some(n))
}

fn remove(dir: &Path) -> Result<(), OutboxError> {
    for p in sled_files(dir) {
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(io(&p))?;
    }
    Ok(())
}

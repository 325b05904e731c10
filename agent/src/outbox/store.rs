//! The outbox's key-value store: one redb table behind the few calls the
//! outbox makes (get, atomic batches, ordered range scans, a durable flush).
//!
//! Why redb and not sled (the design card's first choice): with a
//! 1,000,000-reading backlog sled alone put the agent over the 10 MB bound
//! before a reading was sent (its page table and caches at open), and redb,
//! measured on the same bench and fault harness, did not (README, "Design
//! notes"; docs/profiles.md). redb is a copy-on-write B-tree in one file:
//! nothing is replayed at open, its cache is bounded by `cache_bytes`, and
//! it starts no thread.
//!
//! Durability follows what the outbox asked of sled: [`Tree::apply_batch`]
//! is atomic and visible at once but not yet on disk (redb's
//! `Durability::None`); [`Tree::flush`] makes everything applied so far
//! durable (an `Immediate` commit: the data, then the header, synced).
//! Where the outbox promised durability (an append, a seal before its
//! batches go out, an identity change) it flushes, as it did with sled.

use super::OutboxError;
use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};

/// The one table: the outbox's key layout (see the module above) lives in its keys.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outbox");

/// The file inside the outbox directory (a directory, as sled's was, so
/// the high-water marks beside it and every path in the configuration keep
/// their meaning).
pub const FILE: &str = "outbox.redb";

/// The cache the integrity check at open reads the file through.
const CHECK_CACHE_BYTES: usize = 256 << 10;

/// What a store operation failed with; redb's own error, whichever call.
pub type StoreError = redb::Error;

fn err(e: impl Into<redb::Error>) -> OutboxError {
    OutboxError::Store(e.into())
}

/// Writes applied together or not at all.
#[derive(Debug, Default)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// Sets `k` to `v`.
    pub fn insert(&mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) {
        self.ops.push((k.as_ref().to_vec(), Some(v.as_ref().to_vec())));
    }

    /// Removes `k` (nothing if it is absent).
    pub fn remove(&mut self, k: impl AsRef<[u8]>) {
        self.ops.push((k.as_ref().to_vec(), None));
    }
}

/// Writes `batch` into `tx`'s table.
fn apply_ops(tx: &redb::WriteTransaction, batch: WriteBatch) -> Result<(), OutboxError> {
    let mut t = tx.open_table(TABLE).map_err(err)?;
    for (k, v) in &batch.ops {
        match v {
            Some(v) => {
                t.insert(k.as_slice(), v.as_slice()).map_err(err)?;
            }
            None => {
                t.remove(k.as_slice()).map_err(err)?;
            }
        }
    }
    Ok(())
}

/// One durable write in steps ([`Tree::begin_durable`]). What it has
/// applied is seen by no reader until it commits.
pub struct Durable {
    tx: redb::WriteTransaction,
}

impl Durable {
    /// Applies `batch` to this write.
    pub fn apply(&mut self, batch: WriteBatch) -> Result<(), OutboxError> {
        apply_ops(&self.tx, batch)
    }

    /// Commits everything applied, durably (one sync).
    pub fn commit(self) -> Result<(), OutboxError> {
        self.tx.commit().map_err(err)
    }
}

/// The outbox's store.
pub struct Tree {
    db: Database,
    file: PathBuf,
}

/// Entries in key order, each copied out of the store.
pub struct Iter {
    inner: Option<Owned>,
    failed: Option<OutboxError>,
    /// Values are left empty (a scan that only needs keys copies no payload).
    keys_only: bool,
}

type Owned = redb::OwnedRange<&'static [u8], &'static [u8]>;
type Guards = (
    redb::OwnedAccessGuard<&'static [u8]>,
    redb::OwnedAccessGuard<&'static [u8]>,
);

impl Iter {
    /// The next entry from one end or the other (`step`), copied out.
    fn step(
        &mut self,
        step: impl FnOnce(&mut Owned) -> Option<Result<Guards, redb::StorageError>>,
    ) -> Option<<Self as Iterator>::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        let kv = step(self.inner.as_mut()?)?;
        let keys_only = self.keys_only;
        Some(
            kv.map(|(k, v)| {
                let v = if keys_only { Vec::new() } else { v.value().to_vec() };
                (k.value().to_vec(), v)
            })
            .map_err(err),
        )
    }
}

impl Iterator for Iter {
    type Item = Result<(Vec<u8>, Vec<u8>), OutboxError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(Iterator::next)
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(DoubleEndedIterator::next_back)
    }
}

impl Tree {
    /// Opens (or creates) the store in directory `dir` with a page cache of
    /// `cache_bytes`. An error names the file, so an operator knows what to
    /// move aside or restore.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, OutboxError> {
        let file = dir.join(FILE);
        let opening = |source: redb::Error| OutboxError::OpenStore {
            path: file.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| opening(e.into()))?;
        // The integrity check verifies every page's checksum before anything
        // is trusted: redb's plain open reads the file unverified and panics
        // on a damaged page (its issue #1334), where the agent must stop with
        // this file's name. It reads the whole file once per start
        // (docs/benchmarks.md, figure 7, gives the time), through a cache of
        // its own, small: with the store's cache every page read would stay
        // in it, 3.5 MiB more at open for a 1,000,000-reading backlog
        // (figure 4b). The store is then opened again, plainly, to run.
        Database::builder()
            .set_cache_size(CHECK_CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(&file)
            .map_err(|e| opening(e.into()))?;
        let db = Database::builder()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .create(&file)
            .map_err(|e| opening(e.into()))?;
        // The table exists from the first open on, so a reader never meets
        // a store without it.
        let tx = db.begin_write().map_err(|e| opening(e.into()))?;
        tx.open_table(TABLE).map_err(|e| opening(e.into()))?;
        tx.commit().map_err(|e| opening(e.into()))?;
        Ok(Self { db, file })
    }

    /// The value of `k`.
    pub fn get(&self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, OutboxError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(TABLE).map_err(err)?;
        let v = redb::ReadableTable::get(&t, k.as_ref()).map_err(err)?;
        Ok(v.map(|g| g.value().to_vec()))
    }

    /// The length of `k`'s value and its first `n` bytes, without copying
    /// the rest (a sealed batch's payload is ~75 KB; its header is 4 bytes).
    pub fn get_head(&self, k: impl AsRef<[u8]>, n: usize) -> Result<Option<(usize, Vec<u8>)>, OutboxError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(TABLE).map_err(err)?;
        let v = redb::ReadableTable::get(&t, k.as_ref()).map_err(err)?;
        Ok(v.map(|g| {
            let v = g.value();
            (v.len(), v[..n.min(v.len())].to_vec())
        }))
    }

    /// Whether `k` is held.
    pub fn contains_key(&self, k: impl AsRef<[u8]>) -> Result<bool, OutboxError> {
        Ok(self.get_head(k, 0)?.is_some())
    }

    /// Sets `k` to `v` (not yet durable).
    pub fn insert(&self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> Result<(), OutboxError> {
        let mut b = WriteBatch::default();
        b.insert(k, v);
        self.apply_batch(b)
    }

    /// Removes `k` (not yet durable).
    pub fn remove(&self, k: impl AsRef<[u8]>) -> Result<(), OutboxError> {
        let mut b = WriteBatch::default();
        b.remove(k);
        self.apply_batch(b)
    }

    /// Applies `batch` atomically; visible at once, durable at the next [`Tree::flush`].
    pub fn apply_batch(&self, batch: WriteBatch) -> Result<(), OutboxError> {
        self.commit(batch, redb::Durability::None)
    }

    /// Applies `batch` atomically and makes it, and everything applied
    /// before it, durable: one commit and one sync, where
    /// [`Tree::apply_batch`] then [`Tree::flush`] would take two commits.
    pub fn apply_durable(&self, batch: WriteBatch) -> Result<(), OutboxError> {
        self.commit(batch, redb::Durability::Immediate)
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.commit(WriteBatch::default(), redb::Durability::Immediate)
    }

    /// Starts one durable write that several batches go into, each built
    /// after the one before was applied, so a caller with more to write than
    /// it wants to hold at once (a seal of a backlog) pays one commit and one
    /// sync for all of it. All or nothing: dropped without
    /// [`Durable::commit`], nothing of it is applied. Other writers wait
    /// until it ends.
    pub fn begin_durable(&self) -> Result<Durable, OutboxError> {
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(redb::Durability::Immediate).map_err(err)?;
        Ok(Durable { tx })
    }

    fn commit(&self, batch: WriteBatch, durability: redb::Durability) -> Result<(), OutboxError> {
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(durability).map_err(err)?;
        apply_ops(&tx, batch)?;
        tx.commit().map_err(err)
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        let lo = prefix.as_ref().to_vec();
        let hi = successor(&lo);
        self.iter(Bound::Included(lo), hi.map_or(Bound::Unbounded, Bound::Excluded))
    }

    /// Entries whose key starts with `prefix` and comes after `after`, in
    /// key order (a scan that goes on where an earlier one stopped).
    pub fn scan_prefix_after(&self, prefix: impl AsRef<[u8]>, after: Vec<u8>) -> Iter {
        let hi = successor(prefix.as_ref());
        self.iter(Bound::Excluded(after), hi.map_or(Bound::Unbounded, Bound::Excluded))
    }

    /// Entries with keys in `range`, in key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        let own = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.iter(own(range.start_bound()), own(range.end_bound()))
    }

    /// Like [`Tree::range`], but every value comes back empty.
    pub fn range_keys<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        Iter {
            keys_only: true,
            ..self.range(range)
        }
    }

    fn iter(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> Iter {
        let open = || -> Result<_, OutboxError> {
            let tx = self.db.begin_read().map_err(err)?;
            let t = tx.open_table(TABLE).map_err(err)?;
            t.range_owned((slice(&lo), slice(&hi))).map_err(err)
        };
        match open() {
            Ok(r) => Iter {
                inner: Some(r),
                failed: None,
                keys_only: false,
            },
            Err(e) => Iter {
                inner: None,
                failed: Some(e),
                keys_only: false,
            },
        }
    }

    /// Entries held (for tests; counts the table, not the file).
    pub fn entries(&self) -> Result<u64, OutboxError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(TABLE).map_err(err)?;
        t.len().map_err(err)
    }

    /// The store file's size, bytes (redb reuses freed pages but does not
    /// shrink its file, so this stays near the largest backlog held).
    pub fn size_on_disk(&self) -> Result<u64, OutboxError> {
        std::fs::metadata(&self.file).map(|m| m.len()).map_err(err)
    }
}

fn slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key above every key starting with `prefix` (`None`: there is none).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < u8::MAX {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_ranges_and_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tree::open(dir.path(), 1 << 20).unwrap();
        let mut b = WriteBatch::default();
        for (k, v) in [(&b"a1"[..], &b"x"[..]), (b"b1", b"y"), (b"b2", b"z"), (b"c", b"w")] {
            b.insert(k, v);
        }
        b.remove(b"c");
        t.apply_batch(b).unwrap();
        t.flush().unwrap();
        let keys = |it: Iter| it.map(|kv| kv.unwrap().0).collect::<Vec<_>>();
        assert_eq!(keys(t.scan_prefix(b"b")), vec![b"b1".to_vec(), b"b2".to_vec()]);
        assert_eq!(
            keys(t.range(&b"a1"[..]..&b"b2"[..])),
            vec![b"a1".to_vec(), b"b1".to_vec()]
        );
        assert_eq!(t.get(b"c").unwrap(), None);
        drop(t);
        let t = Tree::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(t.get(b"b2").unwrap(), Some(b"z".to_vec()));
        assert_eq!(t.entries().unwrap(), 3);
    }

    /// Damaged pages (a page-type byte no page has) give an error naming
    /// the file, never a panic. Without the integrity check on open, redb
    /// panics here (`unreachable!` in its B-tree descent), in release
    /// builds as well.
    #[test]
    fn a_damaged_page_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tree::open(dir.path(), 1 << 20).unwrap();
        let mut b = WriteBatch::default();
        for i in 0u32..2_000 {
            b.insert(i.to_be_bytes(), [7u8; 200]);
        }
        t.apply_batch(b).unwrap();
        t.flush().unwrap();
        drop(t);
        let file = dir.path().join(FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        // Every 4 KiB page after redb's header region gets type byte 254.
        for page in bytes.chunks_mut(4096).skip(1) {
            page[0] = 254;
        }
        std::fs::write(&file, bytes).unwrap();
        let e = Tree::open(dir.path(), 1 << 20).err().expect("a damaged store opened");
        assert!(e.to_string().contains(FILE), "{e}");
    }

    /// One flipped byte anywhere in the file: the store either refuses to
    /// open, naming the file, or opens and reads back exactly what was
    /// written (the byte was in free space). Never a panic, never a wrong
    /// value. The offsets step by a prime, so they land at every position
    /// within a page over the file.
    #[test]
    fn one_flipped_byte_anywhere_is_refused_or_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tree::open(dir.path(), 1 << 20).unwrap();
        let written: Vec<(Vec<u8>, Vec<u8>)> = (0u32..600)
            .map(|i| (i.to_be_bytes().to_vec(), vec![(i % 251) as u8; 100 + (i as usize % 50)]))
            .collect();
        for chunk in written.chunks(100) {
            let mut b = WriteBatch::default();
            for (k, v) in chunk {
                b.insert(k, v);
            }
            t.apply_batch(b).unwrap();
            t.flush().unwrap();
        }
        drop(t);
        let file = dir.path().join(FILE);
        let pristine = std::fs::read(&file).unwrap();
        let (mut refused, mut harmless) = (0, 0);
        for at in (0..pristine.len()).step_by(389) {
            let mut bytes = pristine.clone();
            bytes[at] ^= 0x5a;
            std::fs::write(&file, &bytes).unwrap();
            match Tree::open(dir.path(), 1 << 20) {
                Err(e) => {
                    assert!(e.to_string().contains(FILE), "byte {at}: {e}");
                    refused += 1;
                }
                Ok(t) => {
                    let read: Result<Vec<_>, _> = t.range::<&[u8], _>(..).collect();
                    assert_eq!(read.as_ref().ok(), Some(&written), "byte {at}: read back");
                    harmless += 1;
                }
            }
        }
        assert!(refused > 0 && harmless > 0, "refused {refused}, harmless {harmless}");
    }

    #[test]
    fn successor_skips_full_bytes() {
        assert_eq!(successor(b"a"), Some(b"b".to_vec()));
        assert_eq!(successor(&[1, 255]), Some(vec![2]));
        assert_eq!(successor(&[255]), None);
    }
}

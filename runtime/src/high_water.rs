//! A durable counter kept in a small file beside a store, never inside it.
//!
//! A store that loses its newest writes — sled recovering past a damaged
//! segment, a disk image restored from an older copy, a file system that
//! dropped a write — opens without complaint and simply knows less than it
//! once told others. A counter that only grows, written after the store's
//! own flush and kept in another file, is what tells that apart: if the
//! store's count is below the mark, the store rolled back.
//!
//! The file has two slots, each a value with its CRC; writes alternate
//! between them and are synced before returning. A write torn by a crash
//! damages at most the slot being written, and the other still holds the
//! previous value, so the mark never reads lower than the last completed
//! write.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const SLOT: u64 = 16;
const MAGIC: &[u8; 4] = b"zshw";

/// What went wrong with a high-water file.
#[derive(Debug, thiserror::Error)]
pub enum HighWaterError {
    #[error("high-water mark {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("high-water mark {path} is damaged (neither slot's checksum holds): restore it with its store from a backup, or remove it to accept the store as it is")]
    Damaged { path: PathBuf },
}

/// The mark and the file it lives in.
#[derive(Debug)]
pub struct HighWater {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    value: Option<u64>,
    next_slot: u64,
}

fn encode(value: u64) -> [u8; SLOT as usize] {
    let mut b = [0u8; SLOT as usize];
    b[..4].copy_from_slice(MAGIC);
    b[4..12].copy_from_slice(&value.to_be_bytes());
    let crc = crc32fast::hash(&b[..12]);
    b[12..].copy_from_slice(&crc.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Option<u64> {
    let head = b.get(..12)?;
    let crc = u32::from_be_bytes(b.get(12..16)?.try_into().ok()?);
    if head.get(..4)? != MAGIC || crc32fast::hash(head) != crc {
        return None;
    }
    Some(u64::from_be_bytes(head.get(4..12)?.try_into().ok()?))
}

impl HighWater {
    /// Opens the mark at `path`, creating an empty one (no value yet) if the
    /// file does not exist. A file whose slots are both damaged is refused.
    pub fn open(path: &Path) -> Result<Self, HighWaterError> {
        let io = |source| HighWaterError::Io {
            path: path.to_owned(),
            source,
        };
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let slots = [
            bytes.get(..SLOT as usize).and_then(decode),
            bytes.get(SLOT as usize..2 * SLOT as usize).and_then(decode),
        ];
        if existed && !bytes.is_empty() && slots.iter().all(Option::is_none) {
            return Err(HighWaterError::Damaged { path: path.to_owned() });
        }
        let value = slots.iter().flatten().max().copied();
        // Overwrite the older (or damaged) slot next.
        let next_slot = match slots {
            [Some(a), Some(b)] if a > b => 1,
            [Some(_), None] => 1,
            _ => 0,
        };
        if !existed {
            sync_dir(path);
        }
        Ok(Self {
            path: path.to_owned(),
            inner: Mutex::new(Inner { file, value, next_slot }),
        })
    }

    /// The mark: the highest value ever set (`None`: never set).
    pub fn get(&self) -> Option<u64> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).value
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raises the mark to `value`, durably (synced) before returning. A value
    /// at or below the mark changes nothing: the mark never goes down.
    pub fn raise(&self, value: u64) -> Result<(), HighWaterError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.value.is_some_and(|v| v >= value) {
            return Ok(());
        }
        let io = |source| HighWaterError::Io {
            path: self.path.clone(),
            source,
        };
        let slot = inner.next_slot;
        inner.file.seek(SeekFrom::Start(slot * SLOT)).map_err(io)?;
        inner.file.write_all(&encode(value)).map_err(io)?;
        inner.file.sync_data().map_err(io)?;
        inner.value = Some(value);
        inner.next_slot = 1 - slot;
        Ok(())
    }
}

/// Makes a new file's directory entry durable (best effort: not every file
/// system lets a directory be opened for sync).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_only_grows_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw");
        let hw = HighWater::open(&path).unwrap();
        assert_eq!(hw.get(), None);
        hw.raise(5).unwrap();
        hw.raise(3).unwrap();
        hw.raise(9).unwrap();
        assert_eq!(hw.get(), Some(9));
        drop(hw);
        assert_eq!(HighWater::open(&path).unwrap().get(), Some(9));
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_previous_value_and_both_torn_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw");
        let hw = HighWater::open(&path).unwrap();
        hw.raise(7).unwrap(); // slot 0
        hw.raise(8).unwrap(); // slot 1
        drop(hw);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT as usize + 6] ^= 0xff; // tear slot 1
        std::fs::write(&path, &bytes).unwrap();
        let hw = HighWater::open(&path).unwrap();
        assert_eq!(hw.get(), Some(7));
        hw.raise(10).unwrap(); // rewrites the torn slot, keeps 7 in the other
        drop(hw);
        assert_eq!(HighWater::open(&path).unwrap().get(), Some(10));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        bytes[SLOT as usize + 3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = HighWater::open(&path).unwrap_err();
        assert!(matches!(e, HighWaterError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()));
    }
}

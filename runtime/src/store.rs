//! Opening a sled store, with a clear error when it cannot be read.
//!
//! sled releases its file lock from a background thread after the last
//! handle is dropped, so opening the same database right after closing it (a
//! restart in the same process: tests, the demo) can find the lock still
//! held: the open is retried for a second. sled 0.34 *panics* on some damaged
//! files (a truncated segment) instead of returning an error; that panic is
//! caught here and returned as [`StoreOpenError::Damaged`], naming the
//! directory and what to do. (Under `panic = "abort"` — the gateway profile —
//! nothing can be caught: the process ends, systemd restarts it, and the
//! journal holds sled's panic message.)

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long to wait for the lock, at most: 20 tries 50 ms apart.
const TRIES: u32 = 20;
const PAUSE: Duration = Duration::from_millis(50);

/// Why a store did not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    #[error("store {path}: {source}")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("store {path} is damaged and cannot be read ({detail}). Stop the service, move {path} aside, and restore it from a backup; or start with an empty store in its place (what it held is then gone from this machine)")]
    Damaged { path: PathBuf, detail: String },
}

impl StoreOpenError {
    /// The underlying sled error, if sled returned one.
    pub fn sled(&self) -> Option<&sled::Error> {
        match self {
            Self::Sled { source, .. } => Some(source),
            Self::Damaged { .. } => None,
        }
    }
}

/// Opens `config` (whose path is `path`), retrying for up to a second while
/// its file lock is still held; a damaged store is an error, never a panic.
pub fn open_sled(config: &sled::Config, path: &Path) -> Result<sled::Db, StoreOpenError> {
    let mut waits = 0;
    loop {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        match opened {
            Err(panic) => {
                let detail = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "sled panicked while reading it".into());
                return Err(StoreOpenError::Damaged {
                    path: path.to_owned(),
                    detail,
                });
            }
            Ok(Err(sled::Error::Io(e))) if is_lock_held(&e) && waits < TRIES => {
                waits += 1;
                std::thread::sleep(PAUSE);
            }
            Ok(Err(sled::Error::Corruption { at, bt: _ })) => {
                return Err(StoreOpenError::Damaged {
                    path: path.to_owned(),
                    detail: format!("sled found corruption at {at:?}"),
                })
            }
            Ok(Err(source)) => {
                return Err(StoreOpenError::Sled {
                    path: path.to_owned(),
                    source,
                })
            }
            Ok(Ok(db)) => return Ok(db),
        }
    }
}

/// Whether sled refused because the file lock is held. sled 0.34 wraps the
/// `WouldBlock` from the lock call in an `Other` error with a message, so
/// the kind alone does not tell.
fn is_lock_held(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_held_by_another_handle_is_refused_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let config = sled::Config::new().path(&path);
        let held = open_sled(&config, &path).unwrap();
        match open_sled(&config, &path) {
            Err(StoreOpenError::Sled {
                source: sled::Error::Io(e),
                ..
            }) => assert!(is_lock_held(&e), "{e}"),
            other => panic!("the lock is held the whole time: {:?}", other.map(|_| ())),
        }
        drop(held);
        assert!(
            open_sled(&config, &path).is_ok(),
            "released after the first handle went"
        );
    }

    #[test]
    fn a_truncated_store_is_an_error_naming_it_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let config = sled::Config::new().path(&path);
        {
            let db = open_sled(&config, &path).unwrap();
            for i in 0u32..2000 {
                db.insert(i.to_be_bytes(), vec![7u8; 100]).unwrap();
            }
            db.flush().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        let file = path.join("db");
        let len = std::fs::metadata(&file).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(len / 3).unwrap();
        drop(f);
        match open_sled(&config, &path) {
            Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
            // sled may also recover what precedes the cut; it must not panic either way.
            Ok(db) => assert!(db.len() < 2000, "a third of the file cannot hold every key"),
        }
    }
}

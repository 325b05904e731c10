//! Opening a sled database that this process may just have closed.
//!
//! sled releases its file lock from a background thread after the last
//! handle is dropped, so opening the same database right after closing it (a
//! restart in the same process: the aggregator's and the agent's tests, the
//! demo) can find the lock still held. Both the agent's outbox and the
//! aggregator's store open through here.

use std::time::Duration;

/// How long to wait for the lock, at most: 20 tries 50 ms apart.
const TRIES: u32 = 20;
const PAUSE: Duration = Duration::from_millis(50);

/// Opens `config`, retrying for up to a second while its file lock is still
/// held; any other error (and a lock held longer, e.g. by another running
/// process) returns at once or after the last try.
pub fn open_when_released(config: &sled::Config) -> sled::Result<sled::Db> {
    let mut waits = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if is_lock_held(&e) && waits < TRIES => {
                waits += 1;
                std::thread::sleep(PAUSE);
            }
            other => return other,
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
        let config = sled::Config::new().path(dir.path().join("db"));
        let held = open_when_released(&config).unwrap();
        match open_when_released(&config) {
            Err(sled::Error::Io(e)) => assert!(is_lock_held(&e), "{e}"),
            other => panic!("the lock is held the whole time: {:?}", other.map(|_| ())),
        }
        drop(held);
        assert!(
            open_when_released(&config).is_ok(),
            "released after the first handle went"
        );
    }
}

//! Keeps a source running: a source task that fails (its outbox append
//! returned an error — a full disk, say) is started again after a backoff,
//! from the cursor it stored with its last durable items, so nothing it had
//! appended is produced twice and nothing it read but could not store is
//! lost (it is read again from where the cursor points, as far as the plant
//! side still has it).
//!
//! sled 0.34 keeps the first failed write to its log as an error every later
//! flush returns, until the store is reopened: in that state no restart can
//! help. So after each failure the outbox is asked to take a small write
//! ([`Outbox::check_writable`]); if it cannot, the failure is returned, and
//! the agent stops with an error so that its service manager starts it again
//! (systemd `Restart=always`), which reopens the store — once there is room
//! again, the agent is back.

use crate::outbox::{Outbox, OutboxError};
use crate::shutdown::Shutdown;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a failed source is restarted.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first wait.
    pub min: Duration,
    /// The longest wait (doubling up to it).
    pub max: Duration,
    /// A run at least this long starts the waits again from `min`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(300),
        }
    }
}

/// Runs `start()` until it ends without error or shutdown, starting it again
/// after each failure while the outbox still takes writes. `restarts` counts
/// the restarts (status).
pub async fn supervise<F, Fut>(
    name: String,
    outbox: Arc<Outbox>,
    mut shutdown: Shutdown,
    backoff: Backoff,
    restarts: Arc<AtomicU64>,
    mut start: F,
) -> Result<(), OutboxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), OutboxError>>,
{
    let mut wait = backoff.min;
    loop {
        let started = Instant::now();
        let err = match start().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if shutdown.is_triggered() {
            return Err(err);
        }
        if let Err(probe) = outbox.check_writable() {
            tracing::error!(source = %name, error = %err, probe = %probe,
                "source failed and the outbox store no longer takes writes: stopping the agent so that it is started again and reopens its store");
            return Err(err);
        }
        if started.elapsed() >= backoff.reset_after {
            wait = backoff.min;
        }
        restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source = %name, error = %err, delay_ms = wait.as_millis() as u64,
            "source failed: starting it again from its stored cursor");
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn fast() -> Backoff {
        Backoff {
            min: Duration::from_millis(5),
            max: Duration::from_millis(20),
            reset_after: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_failing_source_is_started_again_until_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());
        let (_trigger, shutdown) = crate::shutdown::channel();
        let runs = Arc::new(AtomicU32::new(0));
        let restarts = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        let res = supervise("sim".into(), outbox, shutdown, fast(), restarts.clone(), move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(OutboxError::Corrupt {
                        key: "p".into(),
                        problem: "disk full (simulated)".into(),
                    })
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(res.is_ok());
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(restarts.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn shutdown_during_the_backoff_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());
        let (trigger, shutdown) = crate::shutdown::channel();
        let slow = Backoff {
            min: Duration::from_secs(3600),
            ..fast()
        };
        let task = tokio::spawn(supervise(
            "sim".into(),
            outbox,
            shutdown,
            slow,
            Arc::new(AtomicU64::new(0)),
            || async { Err(OutboxError::NoUpstream) },
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.fire();
        let res = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(
            matches!(res, Ok(Ok(Ok(())))),
            "ended by the shutdown, not after an hour"
        );
    }
}

//! A shutdown signal every long-running task holds and `select!`s on.
//!
//! A `watch` channel rather than `broadcast`, so a task that subscribes late
//! still sees a shutdown that already happened.

use tokio::sync::watch;

/// Fires the shutdown; dropping it fires it too.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Held by each task; resolves `wait()` once shutdown is triggered.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Makes a linked trigger and signal.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Asks every holder of the signal to stop.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// A new signal linked to this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Whether shutdown has been asked for.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown is asked for (or the trigger is dropped).
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which also means stop.
        let _ = self.0.wait_for(|v| *v).await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn os_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_subscribers_see_an_earlier_shutdown() {
        let (t, mut s) = channel();
        t.fire();
        s.wait().await;
        let mut late = t.subscribe();
        late.wait().await;
        assert!(late.is_triggered());
    }
}

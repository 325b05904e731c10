//! Whether the aggregator is working, for `/healthz` and for `main`: a task
//! that must run for the life of the process and ended, or a store that
//! could not be written, makes it unhealthy. A process in that state is not
//! "ok": `/healthz` answers 503 with the reasons, and `main` ends the
//! process (non-zero) so systemd restarts it on a store it can open afresh.

use std::sync::Mutex;
use tokio::sync::Notify;

/// The aggregator's health: problems so far, and a wake-up for `main`.
#[derive(Debug, Default)]
pub struct Health {
    problems: Mutex<Vec<String>>,
    fatal: Notify,
}

impl Health {
    /// Records a problem that ends the process: wakes whoever waits in
    /// [`Health::wait_fatal`].
    pub fn fail(&self, problem: impl Into<String>) {
        let problem = problem.into();
        tracing::error!("unhealthy: {problem}");
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).push(problem);
        self.fatal.notify_one();
    }

    /// The problems recorded, oldest first (empty: healthy).
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resolves once a fatal problem is recorded.
    pub async fn wait_fatal(&self) {
        if !self.problems().is_empty() {
            return;
        }
        self.fatal.notified().await;
    }

    /// A guard for a task that must run until shutdown: dropped before
    /// [`TaskGuard::finished`] is called (the task returned early or
    /// panicked), it records the task as dead.
    pub fn task<'a>(&'a self, name: &'static str) -> TaskGuard<'a> {
        TaskGuard {
            health: self,
            name,
            finished: false,
        }
    }
}

/// See [`Health::task`].
pub struct TaskGuard<'a> {
    health: &'a Health,
    name: &'static str,
    finished: bool,
}

impl TaskGuard<'_> {
    /// The task ended as it should (shutdown).
    pub fn finished(mut self) {
        self.finished = true;
    }
}

impl Drop for TaskGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let how = if std::thread::panicking() { "panicked" } else { "ended" };
            self.health
                .fail(format!("the {} task {how} before shutdown", self.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_that_ends_early_or_panics_is_a_problem_and_one_that_finishes_is_not() {
        let h = Health::default();
        h.task("ingest").finished();
        assert!(h.problems().is_empty());
        drop(h.task("ingest"));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = h.task("alerts");
            panic!("boom");
        }));
        assert!(r.is_err());
        let p = h.problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("ingest task ended") && p[1].contains("alerts task panicked"),
            "{p:?}"
        );
    }
}

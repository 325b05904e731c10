//! One platform's counters, shared with status and metrics: what it
//! acknowledged, what was left out and why, and every failed upload by kind.

use super::record::NotUploaded;
use crate::status::PlatformCounts;
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters of one platform upstream in this run.
#[derive(Debug, Default)]
pub struct PlatformStats {
    uploads: AtomicU64,
    uploads_succeeded: AtomicU64,
    records_uploaded: AtomicU64,
    batches_acked: AtomicU64,
    items_acked: AtomicU64,
    last_success_unix_ms: AtomicU64,
    not_mapped: AtomicU64,
    declarations: AtomicU64,
    quarterly: AtomicU64,
    unreadable_items: AtomicU64,
    failures: Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    by_kind: BTreeMap<&'static str, u64>,
    last: Option<String>,
    last_unix_ms: u64,
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

impl PlatformStats {
    pub(super) fn attempt(&self) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn uploaded(&self, records: u64) {
        self.uploads_succeeded.fetch_add(1, Ordering::Relaxed);
        self.records_uploaded.fetch_add(records, Ordering::Relaxed);
        self.last_success_unix_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(super) fn acked(&self, items: usize) {
        self.batches_acked.fetch_add(1, Ordering::Relaxed);
        self.items_acked.fetch_add(items as u64, Ordering::Relaxed);
    }

    pub(super) fn left_out(&self, n: &NotUploaded) {
        self.not_mapped.fetch_add(n.not_mapped, Ordering::Relaxed);
        self.declarations.fetch_add(n.declarations, Ordering::Relaxed);
        self.quarterly.fetch_add(n.quarterly, Ordering::Relaxed);
    }

    pub(super) fn unreadable(&self, items: u64) {
        self.unreadable_items.fetch_add(items, Ordering::Relaxed);
    }

    pub(super) fn failed(&self, kind: &'static str, why: String) {
        if let Ok(mut f) = self.failures.lock() {
            *f.by_kind.entry(kind).or_default() += 1;
            f.last = Some(format!("{kind}: {why}"));
            f.last_unix_ms = now_ms();
        }
    }

    /// A snapshot for status.
    pub fn counts(&self) -> PlatformCounts {
        let (failures, last_failure, last_failure_unix_ms) = self
            .failures
            .lock()
            .map(|f| {
                (
                    f.by_kind.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                    f.last.clone(),
                    f.last_unix_ms,
                )
            })
            .unwrap_or_default();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PlatformCounts {
            uploads: get(&self.uploads),
            uploads_succeeded: get(&self.uploads_succeeded),
            records_uploaded: get(&self.records_uploaded),
            batches_acked: get(&self.batches_acked),
            items_acked: get(&self.items_acked),
            last_success_unix_ms: get(&self.last_success_unix_ms),
            readings_not_mapped: get(&self.not_mapped),
            declarations_not_uploaded: get(&self.declarations),
            quarterly_not_uploaded: get(&self.quarterly),
            unreadable_items: get(&self.unreadable_items),
            failures,
            last_failure,
            last_failure_unix_ms,
        }
    }
}

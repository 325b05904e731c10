//! A link's counters, shared with status reporting and the presence
//! message: what the upstream acknowledged, confirmed, refused or denied.

use super::confirm::ClockOffset;
use chrono::Utc;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Stands for "no measurement" in the clock fields.
const UNKNOWN: i64 = i64::MIN;

/// Link counters, shared with status reporting.
#[derive(Debug, Serialize)]
pub struct LinkStats {
    /// Whether a session is up.
    pub connected: AtomicBool,
    /// Sessions opened.
    pub sessions: AtomicU64,
    /// Batches acknowledged by this upstream (PUBACK, or confirmation in confirm mode).
    pub batches_acked: AtomicU64,
    /// Items (readings and declarations) in acknowledged batches.
    pub items_acked: AtomicU64,
    /// Batches published, including resends.
    pub batches_sent: AtomicU64,
    /// When this upstream last acknowledged a batch, Unix milliseconds (0: not yet).
    pub last_ack_unix_ms: AtomicU64,
    /// Confirm mode: batches republished because their confirmation did not come in time.
    pub resends: AtomicU64,
    /// Confirm mode: batches published and awaiting confirmation.
    pub awaiting_confirm: AtomicU64,
    /// Confirm mode: confirmation messages received.
    pub confirms_received: AtomicU64,
    /// Confirm mode: sequence numbers confirmed that this upstream had no batch
    /// for (acknowledged already, dropped, or never sent).
    pub confirm_unknown_seqs: AtomicU64,
    /// Confirm mode: confirmation payloads refused (not JSON of the right
    /// shape, for another agent, or without digests from an upstream that
    /// has sent them).
    pub confirms_malformed: AtomicU64,
    /// Confirm mode: confirmations about an earlier outbox identity, ignored.
    pub confirms_other_outbox: AtomicU64,
    /// Confirm mode: sequence numbers confirmed with a digest that is not our
    /// batch's (someone else's bytes stored under our number): kept.
    pub confirm_digest_mismatches: AtomicU64,
    /// Confirm mode: batches the aggregator refused for a reason other than a
    /// reused number (`seq_ahead`, `sent_at_future`): kept and sent again.
    pub refusals: AtomicU64,
    /// Fresh outbox identities this link asked for (each logged with its reason).
    pub identity_rotations: AtomicU64,
    /// MQTT 5: batches whose PUBACK carried a refusal (e.g. 0x87 not
    /// authorized: the broker's ACL denied the topic), in this run. Each is
    /// kept in the outbox and published again later.
    pub broker_denied_batches: AtomicU64,
    /// MQTT 5: presence messages the broker refused, in this run.
    pub broker_denied_presences: AtomicU64,
    /// The last refusal, as "topic: reason (0xNN)"; shown in status.
    last_broker_denial: Mutex<Option<String>>,
    /// The agent's clock minus the aggregator's, ms, as confirmations measure it.
    clock_offset_ms: AtomicI64,
    /// Its uncertainty, ± ms.
    clock_uncertainty_ms: AtomicI64,
    /// Whether this upstream has sent a confirmation with digests: from then
    /// on one without them is not trusted (see [`confirm::judge`]).
    pub(super) digests_seen: AtomicBool,
}

impl Default for LinkStats {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(false),
            sessions: AtomicU64::new(0),
            batches_acked: AtomicU64::new(0),
            items_acked: AtomicU64::new(0),
            batches_sent: AtomicU64::new(0),
            last_ack_unix_ms: AtomicU64::new(0),
            resends: AtomicU64::new(0),
            awaiting_confirm: AtomicU64::new(0),
            confirms_received: AtomicU64::new(0),
            confirm_unknown_seqs: AtomicU64::new(0),
            confirms_malformed: AtomicU64::new(0),
            confirms_other_outbox: AtomicU64::new(0),
            confirm_digest_mismatches: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            identity_rotations: AtomicU64::new(0),
            broker_denied_batches: AtomicU64::new(0),
            broker_denied_presences: AtomicU64::new(0),
            last_broker_denial: Mutex::new(None),
            clock_offset_ms: AtomicI64::new(UNKNOWN),
            clock_uncertainty_ms: AtomicI64::new(UNKNOWN),
            digests_seen: AtomicBool::new(false),
        }
    }
}

impl LinkStats {
    /// The clock offset measured from confirmations, if any.
    pub fn clock_offset(&self) -> Option<ClockOffset> {
        let offset_ms = self.clock_offset_ms.load(Ordering::Relaxed);
        let uncertainty_ms = self.clock_uncertainty_ms.load(Ordering::Relaxed);
        (offset_ms != UNKNOWN && uncertainty_ms != UNKNOWN).then_some(ClockOffset {
            offset_ms,
            uncertainty_ms,
        })
    }

    /// The broker's last refusal of a publish, if any in this run.
    pub fn last_broker_denial(&self) -> Option<String> {
        self.last_broker_denial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn broker_denied(&self, batch: bool, what: String) {
        let counter = if batch {
            &self.broker_denied_batches
        } else {
            &self.broker_denied_presences
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *self
            .last_broker_denial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(what);
    }

    pub(super) fn set_clock_offset(&self, c: ClockOffset) {
        self.clock_offset_ms.store(c.offset_ms, Ordering::Relaxed);
        self.clock_uncertainty_ms.store(c.uncertainty_ms, Ordering::Relaxed);
    }

    pub(super) fn acked(&self, items: usize) {
        self.batches_acked.fetch_add(1, Ordering::Relaxed);
        self.items_acked.fetch_add(items as u64, Ordering::Relaxed);
        let now = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        self.last_ack_unix_ms.store(now, Ordering::Relaxed);
    }
}

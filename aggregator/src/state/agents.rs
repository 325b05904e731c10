//! What the aggregator knows about each agent: liveness, clock offset, what
//! its outbox dropped, and per outbox the numbering it announced and sent —
//! the bound a batch's seq is judged against.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use zonesync_proto::{OutboxId, PresenceStatus};

/// How far past what an outbox announced (its presence's `next_seq`) or
/// what is held from it (highest seq + 1) a batch's seq may be. An agent
/// numbers batches one by one and announces its next number at every
/// connect, so a real batch is never this far ahead; a seq near u64::MAX is
/// a forgery (or a broken outbox) and is refused, not stored.
pub const MAX_SEQ_AHEAD: u64 = 100_000;

/// What the aggregator knows about an agent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentState {
    /// From the last presence message.
    pub status: Option<PresenceStatus>,
    /// Boot counter last seen.
    pub boot: u64,
    /// Highest sequence number stored.
    pub last_seq: Option<u64>,
    /// Sequence numbers skipped (a jump forward), summed.
    pub seq_gaps: u64,
    /// Last message received from it.
    pub last_seen: Option<DateTime<Utc>>,
    /// Its clock minus ours when its last batch arrived, seconds (includes transit and backlog).
    pub clock_offset_secs: Option<i64>,
    /// Its clock minus ours as the agent itself measured it from our end-to-end
    /// confirmations (round-trip bounded, so without transit or backlog), from its
    /// last presence; `None` until an agent in confirm mode has measured it.
    pub measured_clock_offset_ms: Option<i64>,
    /// When its last batch arrived (since start).
    pub last_batch_at: Option<DateTime<Utc>>,
    /// Backfilled (historical) readings stored from it since start.
    pub backfilled_readings: u64,
    /// Readings its outbox policy dropped before publishing them to us, as its
    /// last presence reported (a running total kept by the agent): readings
    /// that will never arrive.
    pub dropped_readings: u64,
    /// Readings its outbox policy dropped after publishing them to us without
    /// an acknowledgement, as its last presence reported: some may be stored.
    pub dropped_sent_readings: u64,
    /// Batches its broker refused in the agent's current run (MQTT 5 PUBACK
    /// reason code, e.g. an ACL denial), as its last presence reported: kept
    /// by the agent, but nothing of them arrives until the broker is fixed.
    pub broker_denied_batches: u64,
    /// `next_seq` and `boot` of its last presence, and when that arrived.
    pub announced: Option<Announced>,
    /// The outbox its last presence named (`None`: an agent older than outbox ids).
    pub outbox: Option<OutboxId>,
    /// Per outbox numbering seen from it: highest seq handled, next seq announced.
    pub numberings: BTreeMap<String, Numbering>,
    /// Batches refused because their (outbox, seq) was held with other content.
    pub refused_reused_seq: u64,
    /// Batches refused because their seq was far beyond what the outbox announced.
    pub refused_seq_ahead: u64,
    /// When the last batch was refused for its numbering (reused or far ahead).
    pub last_numbering_refusal_at: Option<DateTime<Utc>>,
}

/// What is known of one outbox's numbering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Numbering {
    /// Highest seq stored.
    pub highest: Option<u64>,
    /// The `next_seq` its last presence announced.
    pub announced: Option<u64>,
}

impl Numbering {
    /// The highest seq a batch of this outbox may carry now: [`MAX_SEQ_AHEAD`]
    /// past the highest held + 1 — or, for an outbox nothing is held from
    /// yet, past what its presence announced. Once batches are held, an
    /// announcement cannot move the limit (a forged presence announcing
    /// u64::MAX would otherwise let a forged batch at u64::MAX through); an
    /// agent refused as `seq_ahead` moves to a fresh outbox.
    pub fn seq_limit(&self) -> u64 {
        let base = match self.highest {
            Some(h) => h.saturating_add(1),
            None => self.announced.unwrap_or(0),
        }
        .max(1);
        base.saturating_add(MAX_SEQ_AHEAD)
    }
}

/// The key of an outbox's numbering in [`AgentState::numberings`] (empty: legacy).
pub fn numbering_key(outbox: Option<&OutboxId>) -> String {
    outbox.map_or_else(String::new, |o| o.as_str().to_owned())
}

/// What an agent's presence message said about its sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Announced {
    /// The agent's boot counter.
    pub boot: u64,
    /// The next sequence number it will assign: everything below was assigned.
    pub next_seq: u64,
    /// When the presence arrived.
    pub at: DateTime<Utc>,
}

impl AgentState {
    /// Sequence numbers the agent said it assigned (its presence's `next_seq`)
    /// that were never stored, when nothing arrived for `grace_secs` since: the
    /// range `[from, to]`. A reinstalled outbox (boot lower than the batches')
    /// numbers afresh, so it is no gap; an agent never heard from has no known start.
    pub fn missing_seqs(&self, now: DateTime<Utc>, grace_secs: i64) -> Option<(u64, u64)> {
        let an = self.announced?;
        let last = self.last_seq?;
        let quiet = |t: DateTime<Utc>| (now - t).num_seconds() >= grace_secs;
        let settled = quiet(an.at) && self.last_batch_at.is_none_or(quiet);
        let first = last.checked_add(1)?;
        (an.boot >= self.boot && settled && first < an.next_seq).then(|| (first, an.next_seq - 1))
    }

    /// The numbering of `outbox`, created on first use.
    pub fn numbering_mut(&mut self, outbox: Option<&OutboxId>) -> &mut Numbering {
        self.numberings.entry(numbering_key(outbox)).or_default()
    }
}

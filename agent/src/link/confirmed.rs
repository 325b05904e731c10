//! The link's handling of one end-to-end confirmation: which held batches
//! it releases for this upstream, which it keeps, and when the outbox must
//! move to a fresh identity. The judgement itself is pure ([`super::confirm`]);
//! this applies it to the outbox and the counters.

use super::confirm::{self, ClockEstimator, ClockOffset, Marks};
use super::{Link, Wire, MAX_CONFIRMED_SEQS};
use crate::outbox::OutboxError;
use chrono::Utc;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Link {
    /// A confirmation from the aggregator: each sequence number it names
    /// with our batch's digest is acknowledged for this upstream only (see
    /// [`confirm::judge`]); one that shows other bytes under our marks moves
    /// the outbox to a fresh identity. Malformed ones are counted and logged,
    /// never fatal; sequence numbers unknown here are counted.
    pub(super) fn on_confirm(
        &self,
        payload: &[u8],
        wire: &mut Wire,
        marks: &mut Marks,
        clock: &mut ClockEstimator,
    ) -> Result<(), OutboxError> {
        let received_ms = Utc::now().timestamp_millis();
        let c = match confirm::parse(payload, &self.agent) {
            Ok(c) => c,
            Err(e) => {
                self.stats.confirms_malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(agent = %self.agent, upstream = %self.name(), bytes = payload.len(), "confirmation ignored: {e}");
                return Ok(());
            }
        };
        self.stats.confirms_received.fetch_add(1, Ordering::Relaxed);
        let ours = self.outbox.identity();
        if !c.digests.is_empty() {
            self.stats.digests_seen.store(true, Ordering::Relaxed);
        }
        let digests_seen = self.stats.digests_seen.load(Ordering::Relaxed);
        let next_seq = self.outbox.next_seq();
        let verdict = confirm::judge(&c, ours.as_ref(), next_seq, digests_seen, MAX_CONFIRMED_SEQS, |seq| {
            Ok::<_, OutboxError>(self.outbox.sealed_one(seq)?.map(|b| zonesync_proto::digest(&b.payload)))
        })?;
        if verdict.other_outbox {
            // An earlier identity's (in flight across a rotation): its
            // batches are sent again under the current one.
            self.stats.confirms_other_outbox.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(agent = %self.agent, outbox = c.outbox.as_ref().map(|o| o.as_str()), "confirmation for an earlier outbox identity ignored");
            return Ok(());
        }
        // The newest batch confirmed that was published once: with a resend
        // the confirmation may answer an earlier publication, and the send
        // time would not bound the aggregator's flush.
        let mut newest: Option<(u64, i64)> = None;
        // One store write for the whole confirmation.
        let answers = self.outbox.ack_many(self.upstream, &verdict.ack)?;
        for (&seq, answer) in verdict.ack.iter().zip(answers) {
            let mark = marks.remove(seq);
            match answer {
                Some(items) => self.stats.acked(items),
                None => {
                    self.stats.confirm_unknown_seqs.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(agent = %self.agent, seq, "confirmation for a batch not held for this upstream");
                }
            }
            if let Some(m) = mark.filter(|m| m.attempts == 1) {
                if newest.is_none_or(|(s, _)| seq > s) {
                    newest = Some((seq, m.sent_unix_ms));
                }
            }
        }
        if !verdict.undigested.is_empty() {
            self.stats.confirms_malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = %self.agent, upstream = %self.name(), seqs = verdict.undigested.len(),
                "confirmation without digests from an upstream that sends them: ignored (forged or stale)");
        }
        for &seq in &verdict.unknown {
            marks.remove(seq);
            self.stats.confirm_unknown_seqs.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(agent = %self.agent, seq, "confirmation for a batch not held");
        }
        if !verdict.withheld.is_empty() {
            self.stats
                .confirm_digest_mismatches
                .fetch_add(verdict.withheld.len() as u64, Ordering::Relaxed);
            tracing::warn!(agent = %self.agent, upstream = %self.name(), seqs = ?verdict.withheld,
                "confirmed without our batch's digest: other bytes are stored under these numbers; batches kept");
        }
        for r in &verdict.refused {
            self.stats.refusals.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = %self.agent, upstream = %self.name(), seq = r.seq, reason = %r.reason,
                "the aggregator refused a batch: kept, sent again after a fresh presence");
            wire.reannounce = true;
        }
        if let Some(reason) = verdict.rotate {
            self.stats.identity_rotations.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = %self.agent, upstream = %self.name(), reason = reason.label(), detail = ?reason,
                "other bytes are held under our outbox's numbers: moving to a fresh outbox identity");
            self.outbox.rotate_identity()?;
        }
        if let Some(m) = newest.and_then(|(_, t1)| ClockOffset::measure(t1, received_ms, c.at.timestamp_millis())) {
            clock.add(Instant::now(), m);
            if let Some(best) = clock.best(Instant::now()) {
                self.stats.set_clock_offset(best);
            }
        }
        self.stats.awaiting_confirm.store(marks.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

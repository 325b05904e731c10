//! End-to-end confirmation, without I/O: which batches of one upstream await
//! the aggregator's [`Confirm`], when each is due to be published again, what
//! a confirmation means for the batches held ([`judge`]), and the clock
//! offset the confirmations measure.
//!
//! Only marks (sequence number, send times, attempts) are held — never
//! payloads: a window of 256 batches of 500 readings would otherwise keep
//! tens of MiB resident; a resend re-reads its payload from the outbox.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use zonesync_proto::{AgentId, Confirm, OutboxId, Refusal, REFUSED_REUSED_SEQ};

/// One published batch awaiting confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// When it was last published (monotonic).
    pub sent: Instant,
    /// The same moment by the wall clock, Unix milliseconds.
    pub sent_unix_ms: i64,
    /// Publications so far (1 after the first).
    pub attempts: u32,
}

/// Batches awaiting confirmation, by sequence number.
#[derive(Debug)]
pub struct Marks {
    by_seq: BTreeMap<u64, Mark>,
    timeout: Duration,
    max_timeout: Duration,
}

impl Marks {
    /// Resend after `timeout`, doubling per attempt up to `max_timeout`.
    pub fn new(timeout: Duration, max_timeout: Duration) -> Self {
        Self {
            by_seq: BTreeMap::new(),
            timeout,
            max_timeout: max_timeout.max(timeout),
        }
    }

    /// Batches awaiting confirmation.
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Whether none awaits confirmation.
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// Whether `seq` awaits confirmation (or a resend).
    pub fn contains(&self, seq: u64) -> bool {
        self.by_seq.contains_key(&seq)
    }

    /// Records that `seq` was (re)published now.
    pub fn sent(&mut self, seq: u64, now: Instant, unix_ms: i64) {
        let attempts = self.by_seq.get(&seq).map_or(0, |m| m.attempts).saturating_add(1);
        self.by_seq.insert(
            seq,
            Mark {
                sent: now,
                sent_unix_ms: unix_ms,
                attempts,
            },
        );
    }

    /// Forgets `seq` (confirmed, or no longer held); its mark, if it had one.
    pub fn remove(&mut self, seq: u64) -> Option<Mark> {
        self.by_seq.remove(&seq)
    }

    /// How long after its latest publication a batch published `attempts` times is due again.
    pub fn wait(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.timeout
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_timeout)
            .min(self.max_timeout)
    }

    /// Batches due for a resend at `now`, oldest sequence number first.
    pub fn due(&self, now: Instant) -> Vec<u64> {
        self.by_seq
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.sent) >= self.wait(m.attempts))
            .map(|(s, _)| *s)
            .collect()
    }
}

/// Why a confirm payload was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfirmError {
    #[error("not a confirmation: {0}")]
    Malformed(String),
    #[error("a confirmation for agent {0}, not this one")]
    OtherAgent(String),
}

/// Decodes a confirmation meant for `agent`.
pub fn parse(payload: &[u8], agent: &AgentId) -> Result<Confirm, ConfirmError> {
    let c: Confirm = serde_json::from_slice(payload).map_err(|e| ConfirmError::Malformed(e.to_string()))?;
    if &c.agent != agent {
        return Err(ConfirmError::OtherAgent(c.agent.to_string()));
    }
    Ok(c)
}

/// Why a confirmation makes the outbox move to a fresh identity: in each
/// case other bytes are (or will be) stored under one of our marks, and
/// nothing sent again under the same identity could fix that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateReason {
    /// Our batch `seq` was refused: the aggregator holds other bytes under it.
    ReusedSeq { seq: u64 },
    /// `seq` was confirmed with a digest that is not our batch's.
    DigestMismatch { seq: u64 },
    /// The aggregator holds numbers up to `highest` in our outbox, at or past our `next_seq`.
    HighestAhead { highest: u64, next_seq: u64 },
    /// Our batch `seq` was refused as far ahead of what the aggregator holds
    /// from our outbox (batches dropped unsent by the disk budget, or a
    /// forger's numbers): only a fresh numbering is judged afresh.
    SeqAhead { seq: u64 },
}

impl RotateReason {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::ReusedSeq { .. } => "reused_seq",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::HighestAhead { .. } => "highest_ahead",
            Self::SeqAhead { .. } => "seq_ahead",
        }
    }
}

/// What one confirmation means for the batches this agent holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// About another (earlier) outbox identity: nothing in it applies.
    pub other_outbox: bool,
    /// Confirmed with our own digest (or by an aggregator that sends no
    /// digests): acknowledge them.
    pub ack: Vec<u64>,
    /// Confirmed, but not with our batch's digest: kept.
    pub withheld: Vec<u64>,
    /// Confirmed, but not held here.
    pub unknown: Vec<u64>,
    /// Confirmed without any digest by an upstream that has sent digests
    /// before: forged or stale, nothing released.
    pub undigested: Vec<u64>,
    /// Refusals (other than [`REFUSED_REUSED_SEQ`]) of batches we hold: kept
    /// and sent again after a fresh presence.
    pub refused: Vec<Refusal>,
    /// The first reason found to move to a fresh identity.
    pub rotate: Option<RotateReason>,
}

/// Judges confirmation `c` against what is held: `ours` is the outbox's
/// identity now, `next_seq` its next number, and `held(seq)` the digest of
/// our held batch `seq` (`None`: not held). At most `max_seqs` sequence
/// numbers and refusals are looked at. Pure but for `held`.
///
/// A batch is released only when the aggregator holds exactly our bytes:
/// a confirmation of what someone else stored under our number must not
/// delete the real batch. A confirmation without any digests comes from an
/// aggregator older than digests and is trusted as before — unless
/// `digests_seen` (this upstream has sent digests already): then it is
/// forged or stale. Sequence numbers start at 1, so a forged range over
/// small numbers would otherwise release real batches.
pub fn judge<E>(
    c: &Confirm,
    ours: Option<&OutboxId>,
    next_seq: u64,
    digests_seen: bool,
    max_seqs: usize,
    mut held: impl FnMut(u64) -> Result<Option<String>, E>,
) -> Result<Verdict, E> {
    let mut v = Verdict::default();
    if c.outbox.is_some() && c.outbox.as_ref() != ours {
        v.other_outbox = true;
        return Ok(v);
    }
    // Refusals first: a refusal of our own bytes is the most direct reason.
    for r in c.refused.iter().take(max_seqs) {
        let Some(mine) = held(r.seq)? else {
            continue;
        };
        if r.reason == REFUSED_REUSED_SEQ {
            // Only when the bytes refused are ours: a forger's refused
            // batch under our number leaves ours stored and confirmable.
            if r.digest == mine {
                v.rotate.get_or_insert(RotateReason::ReusedSeq { seq: r.seq });
            }
        } else if r.reason == "seq_ahead" && r.digest == mine {
            v.rotate.get_or_insert(RotateReason::SeqAhead { seq: r.seq });
        } else {
            v.refused.push(r.clone());
        }
    }
    for seq in c.iter_seqs(max_seqs) {
        if c.digests.is_empty() {
            match digests_seen {
                false => v.ack.push(seq),
                true => v.undigested.push(seq),
            }
            continue;
        }
        let Some(mine) = held(seq)? else {
            v.unknown.push(seq);
            continue;
        };
        match c.digest_of(seq) {
            Some(theirs) if theirs == mine => v.ack.push(seq),
            Some(_) => {
                v.withheld.push(seq);
                v.rotate.get_or_insert(RotateReason::DigestMismatch { seq });
            }
            // Digests listed, but none for this one: not proof of our bytes.
            None => v.withheld.push(seq),
        }
    }
    if let (Some(highest), Some(_)) = (c.highest, &c.outbox) {
        if highest >= next_seq {
            v.rotate.get_or_insert(RotateReason::HighestAhead { highest, next_seq });
        }
    }
    Ok(v)
}

/// The agent's clock minus the aggregator's, milliseconds, and how far off it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    /// Positive: the agent is ahead.
    pub offset_ms: i64,
    /// The true offset lies within ± this.
    pub uncertainty_ms: i64,
}

impl ClockOffset {
    /// From a batch published at `t1` and confirmed at `t2` (agent's clock,
    /// Unix ms), the aggregator having flushed it at `at` (its clock): `at`
    /// happened between `t1` and `t2`, so the offset is their midpoint minus
    /// `at`, give or take half the round trip. `None` if `t2` precedes `t1`
    /// (the wall clock was stepped back meanwhile).
    pub fn measure(t1: i64, t2: i64, at: i64) -> Option<Self> {
        let span = t2.checked_sub(t1).filter(|s| *s >= 0)?;
        let mid = t1.checked_add(span / 2)?;
        Some(Self {
            offset_ms: mid.checked_sub(at)?,
            uncertainty_ms: span - span / 2,
        })
    }
}

/// Keeps the offset measurements of a recent window and answers the one with
/// the smallest uncertainty (a quick round trip bounds the offset best).
#[derive(Debug)]
pub struct ClockEstimator {
    samples: VecDeque<(Instant, ClockOffset)>,
    keep: Duration,
}

/// Most measurements kept.
const MAX_SAMPLES: usize = 64;

impl ClockEstimator {
    /// Keeps measurements for `keep`.
    pub fn new(keep: Duration) -> Self {
        Self {
            samples: VecDeque::new(),
            keep,
        }
    }

    /// Adds a measurement taken at `now`.
    pub fn add(&mut self, now: Instant, m: ClockOffset) {
        if self.samples.len() >= MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, m));
    }

    /// The best measurement of the window ending at `now` (the newest among equals).
    pub fn best(&mut self, now: Instant) -> Option<ClockOffset> {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > self.keep)
        {
            self.samples.pop_front();
        }
        self.samples
            .iter()
            .rev()
            .min_by_key(|(_, m)| m.uncertainty_ms)
            .map(|(_, m)| *m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn resends_back_off_doubling_up_to_the_cap() {
        let t0 = Instant::now();
        let mut m = Marks::new(Duration::from_secs(30), Duration::from_secs(100));
        m.sent(7, t0, 0);
        m.sent(9, t0, 0);
        assert_eq!(m.due(t0 + Duration::from_secs(29)), Vec::<u64>::new());
        assert_eq!(m.due(t0 + Duration::from_secs(30)), vec![7, 9]);
        let t1 = t0 + Duration::from_secs(30);
        m.sent(7, t1, 1);
        assert_eq!(m.wait(2), Duration::from_secs(60));
        assert_eq!(m.due(t1 + Duration::from_secs(59)), vec![9]);
        assert_eq!(m.due(t1 + Duration::from_secs(60)), vec![7, 9]);
        m.sent(7, t1, 1);
        assert_eq!(m.wait(3), Duration::from_secs(100), "capped");
        assert_eq!(m.wait(u32::MAX), Duration::from_secs(100));
        assert_eq!(m.remove(9).map(|k| k.attempts), Some(1));
        assert_eq!(m.remove(9), None);
        assert_eq!((m.len(), m.remove(7).map(|k| k.attempts)), (1, Some(3)));
        assert!(m.is_empty());
    }

    #[test]
    fn confirmations_for_another_agent_or_malformed_are_refused() {
        let me = AgentId::parse("gw-1").unwrap();
        let at = Utc.timestamp_millis_opt(1_800_000_000_000).unwrap();
        let ok = Confirm::from_seqs(me.clone(), vec![1, 2], at);
        assert_eq!(parse(&ok.to_payload(), &me).unwrap(), ok);
        let other = Confirm::from_seqs(AgentId::parse("gw-2").unwrap(), vec![1], at);
        assert!(matches!(
            parse(&other.to_payload(), &me),
            Err(ConfirmError::OtherAgent(_))
        ));
        for bad in [&b""[..], b"{", b"{\"v\":1}", b"\xff\xfe", b"[1,2]"] {
            assert!(matches!(parse(bad, &me), Err(ConfirmError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn clock_offset_is_the_midpoint_and_the_tightest_recent_one_wins() {
        // Agent 2 s ahead: sent at 10_000 (agent), aggregator flushed at 8_100 (its clock), confirmed at 10_400.
        assert_eq!(
            ClockOffset::measure(10_000, 10_400, 8_100),
            Some(ClockOffset {
                offset_ms: 2_100,
                uncertainty_ms: 200
            })
        );
        assert_eq!(ClockOffset::measure(10_000, 9_999, 0), None, "clock stepped back");
        assert_eq!(
            ClockOffset::measure(0, 3, 0).map(|c| c.uncertainty_ms),
            Some(2),
            "rounded up"
        );
        let t0 = Instant::now();
        let mut e = ClockEstimator::new(Duration::from_secs(60));
        assert_eq!(e.best(t0), None);
        let loose = ClockOffset {
            offset_ms: 5,
            uncertainty_ms: 300,
        };
        let tight = ClockOffset {
            offset_ms: -7,
            uncertainty_ms: 20,
        };
        e.add(t0, tight);
        e.add(t0 + Duration::from_secs(30), loose);
        assert_eq!(e.best(t0 + Duration::from_secs(30)), Some(tight));
        assert_eq!(
            e.best(t0 + Duration::from_secs(61)),
            Some(loose),
            "the tight one aged out"
        );
        for i in 0..200 {
            e.add(t0 + Duration::from_secs(61), ClockOffset { offset_ms: i, ..loose });
        }
        assert_eq!(e.samples.len(), MAX_SAMPLES);
    }

    fn ob(n: u8) -> OutboxId {
        OutboxId::from_random([n; 16])
    }

    fn at() -> chrono::DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000).unwrap()
    }

    /// We hold seqs 5..=7, each with payload "p{seq}".
    fn held(seq: u64) -> Result<Option<String>, std::convert::Infallible> {
        Ok((5..=7)
            .contains(&seq)
            .then(|| zonesync_proto::digest(format!("p{seq}").as_bytes())))
    }

    fn ours(seq: u64) -> String {
        zonesync_proto::digest(format!("p{seq}").as_bytes())
    }

    fn refusal(seq: u64, digest: String, reason: &str) -> Refusal {
        Refusal {
            seq,
            digest,
            reason: reason.into(),
        }
    }

    #[test]
    fn only_our_own_digest_releases_a_batch_and_another_one_rotates() {
        let me = AgentId::parse("gw-1").unwrap();
        let c = Confirm::handled(
            me,
            Some(ob(1)),
            vec![(5, ours(5)), (6, zonesync_proto::digest(b"forged")), (9, ours(9))],
            vec![],
            Some(7),
            at(),
        );
        let v = judge(&c, Some(&ob(1)), 8, false, 100, held).unwrap();
        assert_eq!(v.ack, vec![5]);
        assert_eq!(v.withheld, vec![6], "someone else's bytes under our number: kept");
        assert_eq!(v.unknown, vec![9]);
        assert_eq!(v.rotate, Some(RotateReason::DigestMismatch { seq: 6 }));
    }

    #[test]
    fn a_refusal_of_our_bytes_as_a_reused_seq_rotates_and_other_refusals_keep_the_batch() {
        let me = AgentId::parse("gw-1").unwrap();
        let refused = vec![
            refusal(7, ours(7), "seq_ahead"),
            refusal(6, ours(6), REFUSED_REUSED_SEQ),
            refusal(99, ours(99), REFUSED_REUSED_SEQ),
        ];
        let c = Confirm::handled(me.clone(), Some(ob(1)), vec![], refused, None, at());
        let v = judge(&c, Some(&ob(1)), 8, false, 100, held).unwrap();
        // The first reason found wins; a seq_ahead refusal of ours rotates too.
        assert_eq!(v.rotate, Some(RotateReason::SeqAhead { seq: 7 }));
        assert!(v.refused.is_empty());
        assert!(v.ack.is_empty());
        // A forger's bytes refused under our number: ours are what is stored.
        let c = Confirm::handled(
            me,
            Some(ob(1)),
            vec![],
            vec![refusal(6, zonesync_proto::digest(b"forged"), REFUSED_REUSED_SEQ)],
            None,
            at(),
        );
        assert_eq!(judge(&c, Some(&ob(1)), 8, false, 100, held).unwrap().rotate, None);
    }

    #[test]
    fn numbers_held_ahead_of_ours_rotate_and_another_outbox_is_ignored() {
        let me = AgentId::parse("gw-1").unwrap();
        let ahead = Confirm::handled(me.clone(), Some(ob(1)), vec![(5, ours(5))], vec![], Some(8), at());
        let v = judge(&ahead, Some(&ob(1)), 8, false, 100, held).unwrap();
        assert_eq!(
            v.rotate,
            Some(RotateReason::HighestAhead {
                highest: 8,
                next_seq: 8
            })
        );
        assert_eq!(v.ack, vec![5], "what is ours is still released");
        assert_eq!(judge(&ahead, Some(&ob(1)), 9, false, 100, held).unwrap().rotate, None);
        let v = judge(&ahead, Some(&ob(2)), 8, false, 100, held).unwrap();
        assert_eq!(
            v,
            Verdict {
                other_outbox: true,
                ..Verdict::default()
            }
        );
    }

    #[test]
    fn a_confirmation_without_digests_is_trusted_as_before() {
        let me = AgentId::parse("gw-1").unwrap();
        let c = Confirm::from_seqs(me, vec![5, 6, 42], at());
        let v = judge(&c, Some(&ob(1)), 8, false, 100, held).unwrap();
        assert_eq!(v.ack, vec![5, 6, 42]);
        assert_eq!(v.rotate, None);
        let v = judge(&c, Some(&ob(1)), 8, true, 100, held).unwrap();
        assert!(v.ack.is_empty(), "not from an upstream that sends digests");
        assert_eq!(v.undigested, vec![5, 6, 42]);
    }
}

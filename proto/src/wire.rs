//! Wire format v1: the batch envelope an agent publishes and the presence
//! (birth / death) message it keeps retained.
//!
//! A batch is named by (agent, outbox, seq) and de-duplicated by that mark
//! *and* a digest of its payload: MQTT QoS 1 may deliver a batch twice and
//! rumqttc keeps its session only in memory, so the agent's durable sequence
//! number within its outbox is what makes "exactly once" possible; the digest
//! is what tells a redelivery (same mark, same bytes) from a reused sequence
//! number (same mark, other bytes: an outbox restored from a copy, or a
//! forger claiming numbers ahead), which is refused and never confirmed.
//! See `docs/protocol.md` for examples of every message.

use crate::ids::{AgentId, EnterpriseId, OutboxId, ZoneId};
use crate::period::Period;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The wire format version carried in every message as `v`.
pub const WIRE_VERSION: u32 = 1;

/// A batch of readings and declarations for one enterprise, from one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Wire format version, [`WIRE_VERSION`].
    pub v: u32,
    /// Sending agent.
    pub agent: AgentId,
    /// Agent boot counter: grows by one on every start, so a restart is told from a gap.
    pub boot: u64,
    /// The outbox that numbered this batch (absent from agents older than
    /// outbox identities: their batches share one legacy numbering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxId>,
    /// Sequence number within the outbox; only grows, survives restarts.
    pub seq: u64,
    /// When the agent (first) sent the batch, by the agent's clock.
    pub sent_at: DateTime<Utc>,
    /// Zone the enterprise belongs to.
    pub zone: ZoneId,
    /// Enterprise the readings are about.
    pub enterprise: EnterpriseId,
    /// True for historical data sent after the fact; never overwrites newer live values.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
    /// Readings, in the order they were taken.
    #[serde(default)]
    pub readings: Vec<Reading>,
    /// Declared attributes (profile, levels, scenarios).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declarations: Vec<Declaration>,
}

/// A [`Batch`] whose readings and declarations are JSON already — an
/// agent's outbox holds each item as the JSON it was appended as — written
/// exactly as the same `Batch` would be ([`Batch::to_payload`]), with the
/// items spliced in instead of decoded and encoded again, which was most of
/// the agent's work while draining a backlog (docs/profiles.md).
#[derive(Debug, Serialize)]
pub struct RawBatch<'a> {
    /// As [`Batch::v`].
    pub v: u32,
    /// As [`Batch::agent`].
    pub agent: &'a AgentId,
    /// As [`Batch::boot`].
    pub boot: u64,
    /// As [`Batch::outbox`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<&'a OutboxId>,
    /// As [`Batch::seq`].
    pub seq: u64,
    /// As [`Batch::sent_at`].
    pub sent_at: DateTime<Utc>,
    /// As [`Batch::zone`].
    pub zone: &'a ZoneId,
    /// As [`Batch::enterprise`].
    pub enterprise: &'a EnterpriseId,
    /// As [`Batch::backfill`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
    /// Each a [`Reading`]'s JSON.
    pub readings: &'a [&'a serde_json::value::RawValue],
    /// Each a [`Declaration`]'s JSON.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub declarations: &'a [&'a serde_json::value::RawValue],
}

impl RawBatch<'_> {
    /// Serialises the batch to its JSON payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One reading as sent: exactly one of `ts` and `period` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Catalog indicator code, e.g. `electricity`.
    pub indicator: String,
    /// Measuring point within the enterprise (meter id); empty for enterprise totals.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub point: String,
    /// The value in `unit`.
    pub value: f64,
    /// One of the indicator's accepted units.
    pub unit: String,
    /// When the value was read (UTC), for counters and gauges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<DateTime<Utc>>,
    /// Reporting period (China time) for amounts, e.g. `2026-10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
}

/// When a validated reading applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadingTime {
    /// An instant.
    Ts(DateTime<Utc>),
    /// A reporting period.
    Period(Period),
}

/// A declared attribute: the value's JSON type is given by the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Declaration {
    /// Catalog code of a `declaration` indicator, e.g. `dt_maturity`.
    pub indicator: String,
    /// The declared value.
    pub value: serde_json::Value,
}

/// Whether an agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// Published retained on connect (birth).
    Online,
    /// The broker's last will, or a clean goodbye (death).
    Offline,
}

/// The retained presence message on `zonesync/v1/{zone}/{agent}/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// Wire format version.
    pub v: u32,
    /// The agent.
    pub agent: AgentId,
    /// Its zone.
    pub zone: ZoneId,
    /// Online (birth) or offline (death).
    pub status: PresenceStatus,
    /// Boot counter, as in batches.
    pub boot: u64,
    /// When this session connected, by the agent's clock.
    pub at: DateTime<Utc>,
    /// The outbox whose numbers `next_seq` is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxId>,
    /// The next sequence number the agent will assign; lets the aggregator see gaps.
    pub next_seq: u64,
    /// Readings (and declarations) the agent's outbox has ever dropped because
    /// its disk budget was full, before publishing them on this link: they
    /// will never arrive. 0 from older agents (which counted the next field
    /// in this one).
    #[serde(default)]
    pub dropped_readings: u64,
    /// Readings (and declarations) the outbox dropped for a full disk budget
    /// after publishing them on this link without an acknowledgement (the
    /// session broke, or the end-to-end confirmation never came): they may
    /// have been stored. Lost readings are at least `dropped_readings` and at
    /// most the sum of both. 0 from older agents.
    #[serde(default)]
    pub dropped_sent_readings: u64,
    /// The agent's clock minus the aggregator's, milliseconds, as the agent
    /// last measured it from an end-to-end confirmation (`None`: not known —
    /// no confirmation yet, or an older agent). Positive: the agent is ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// Batches this link's broker refused in this run (an MQTT 5 PUBACK with
    /// a reason code such as 0x87 not authorized: its ACL denies the
    /// topic). Each is kept in the agent's outbox and published again, so
    /// nothing is lost yet, but nothing arrives until the broker is fixed.
    /// 0 from MQTT 3.1.1 links (which cannot see a denial) and older agents.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub broker_denied_batches: u64,
    /// Agent software version.
    pub version: String,
    /// Enterprises this agent reports for.
    #[serde(default)]
    pub enterprises: Vec<EnterpriseId>,
}

/// The aggregator's end-to-end confirmation on `zonesync/v1/{zone}/{agent}/confirm`:
/// these sequence numbers of this agent's outbox are durably handled — stored,
/// found already stored with the same digest, or dead-lettered with a reason
/// (resending those would not help) — and these were refused. Published at
/// QoS 1, not retained, after the store's flush.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confirm {
    /// Wire format version.
    pub v: u32,
    /// The agent whose batches these are.
    pub agent: AgentId,
    /// The outbox the sequence numbers belong to (`None`: legacy numbering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxId>,
    /// Inclusive ranges `[first, last]` of sequence numbers handled, ascending, not overlapping.
    pub seqs: Vec<[u64; 2]>,
    /// The digest ([`digest`]) of each handled batch as the aggregator holds
    /// it, ascending by seq. An agent forgets a batch only when its own
    /// digest is the one listed: a confirmation of what a forger sent under
    /// its numbers must not delete the real batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digests: Vec<(u64, String)>,
    /// Batches refused and not handled, each with its reason; see [`Refusal`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Refusal>,
    /// The highest sequence number the aggregator holds under this outbox.
    /// Above the agent's own next number, someone else numbered batches in
    /// its outbox: the agent moves to a fresh outbox identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest: Option<u64>,
    /// The aggregator's clock when it flushed them; with the agent's own
    /// send and receive times this bounds the agent's clock offset.
    pub at: DateTime<Utc>,
}

/// A batch the aggregator refused without handling it: not stored, not
/// confirmed, so the agent keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Its sequence number.
    pub seq: u64,
    /// The digest of the payload refused.
    pub digest: String,
    /// Why, as a metric label: [`REFUSED_REUSED_SEQ`] (another batch is held
    /// under this mark: move to a fresh outbox identity and resend),
    /// `seq_ahead` (far beyond what the outbox announced), `sent_at_future`.
    pub reason: String,
}

/// The refusal that tells an agent its (outbox, seq) was used by other bytes.
pub const REFUSED_REUSED_SEQ: &str = "reused_seq";

/// The digest that names a batch's content: the first 16 bytes of SHA-256
/// of its exact payload, lower-case hex. A sealed batch's payload never
/// changes, so every resend has the same digest.
pub fn digest(payload: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, payload);
    d.as_ref().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl Confirm {
    /// Builds a confirmation from sequence numbers in any order, merging runs
    /// into ranges (no digests: see [`Confirm::handled`]).
    pub fn from_seqs(agent: AgentId, mut seqs: Vec<u64>, at: DateTime<Utc>) -> Self {
        seqs.sort_unstable();
        seqs.dedup();
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        for s in seqs {
            match ranges.last_mut() {
                Some(r) if r[1].checked_add(1) == Some(s) => r[1] = s,
                _ => ranges.push([s, s]),
            }
        }
        Self {
            v: WIRE_VERSION,
            agent,
            outbox: None,
            seqs: ranges,
            digests: Vec::new(),
            refused: Vec::new(),
            highest: None,
            at,
        }
    }

    /// A confirmation for `outbox` of batches handled with their digests,
    /// and of refusals.
    pub fn handled(
        agent: AgentId,
        outbox: Option<OutboxId>,
        mut handled: Vec<(u64, String)>,
        refused: Vec<Refusal>,
        highest: Option<u64>,
        at: DateTime<Utc>,
    ) -> Self {
        handled.sort();
        handled.dedup_by_key(|(s, _)| *s);
        let mut c = Self::from_seqs(agent, handled.iter().map(|(s, _)| *s).collect(), at);
        c.outbox = outbox;
        c.digests = handled;
        c.refused = refused;
        c.highest = highest;
        c
    }

    /// The digest confirmed for `seq`, if the confirmation lists digests.
    pub fn digest_of(&self, seq: u64) -> Option<&str> {
        self.digests
            .binary_search_by_key(&seq, |(s, _)| *s)
            .ok()
            .and_then(|i| self.digests.get(i))
            .map(|(_, d)| d.as_str())
    }

    /// Whether `seq` is among those confirmed.
    pub fn contains(&self, seq: u64) -> bool {
        self.seqs.iter().any(|[a, b]| (*a..=*b).contains(&seq))
    }

    /// Every sequence number confirmed, ascending (ranges are bounded by what
    /// one flush handled; a forged huge range is capped at `limit` numbers).
    pub fn iter_seqs(&self, limit: usize) -> impl Iterator<Item = u64> + '_ {
        self.seqs
            .iter()
            .filter(|[a, b]| a <= b)
            .flat_map(|[a, b]| *a..=*b)
            .take(limit)
    }

    /// Serialises the confirmation to its JSON payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Batch {
    /// Serialises the batch to its JSON payload.
    pub fn to_payload(&self) -> Vec<u8> {
        // Serialising plain structs of strings and finite numbers cannot fail;
        // an empty payload would be dead-lettered rather than panic.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Presence {
    /// Serialises the presence message to its JSON payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod raw_batch_tests {
    use super::*;
    use serde_json::value::RawValue;

    /// Spliced items make the very bytes the decoded batch does, with and
    /// without the optional fields.
    #[test]
    fn a_raw_batch_is_written_byte_for_byte_as_the_batch() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T08:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc);
        let reading = |point: &str, ts: bool| Reading {
            indicator: "electricity".into(),
            point: point.into(),
            value: 12.5e3,
            unit: "kWh".into(),
            ts: ts.then_some(at),
            period: (!ts).then(|| Period::parse("2026-10").unwrap()),
        };
        let declaration = Declaration {
            indicator: "dt_maturity".into(),
            value: serde_json::json!(3),
        };
        for (outbox, backfill, declarations) in [
            (
                Some(OutboxId::parse("0123456789abcdef").unwrap()),
                true,
                vec![declaration.clone()],
            ),
            (None, false, vec![]),
        ] {
            let b = Batch {
                v: WIRE_VERSION,
                agent: AgentId::parse("gw-1").unwrap(),
                boot: 3,
                outbox,
                seq: 42,
                sent_at: at,
                zone: ZoneId::parse("jiyuan-hitech").unwrap(),
                enterprise: EnterpriseId::parse("91350100M000100Y43").unwrap(),
                backfill,
                readings: vec![reading("M1", true), reading("", false), reading("M\"2\"", true)],
                declarations,
            };
            let readings: Vec<String> = b.readings.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
            let decls: Vec<String> = b
                .declarations
                .iter()
                .map(|d| serde_json::to_string(d).unwrap())
                .collect();
            let raw_r: Vec<&RawValue> = readings.iter().map(|s| serde_json::from_str(s).unwrap()).collect();
            let raw_d: Vec<&RawValue> = decls.iter().map(|s| serde_json::from_str(s).unwrap()).collect();
            let raw = RawBatch {
                v: b.v,
                agent: &b.agent,
                boot: b.boot,
                outbox: b.outbox.as_ref(),
                seq: b.seq,
                sent_at: b.sent_at,
                zone: &b.zone,
                enterprise: &b.enterprise,
                backfill: b.backfill,
                readings: &raw_r,
                declarations: &raw_d,
            };
            assert_eq!(
                String::from_utf8(raw.to_payload()).unwrap(),
                String::from_utf8(b.to_payload()).unwrap()
            );
        }
    }
}

#[cfg(test)]
mod confirm_tests {
    use super::*;

    #[test]
    fn runs_become_ranges_and_round_trip() {
        let agent = AgentId::parse("gw-1").unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = Confirm::from_seqs(agent, vec![7, 3, 4, 5, 9, 4, u64::MAX], at);
        assert_eq!(c.seqs, vec![[3, 5], [7, 7], [9, 9], [u64::MAX, u64::MAX]]);
        assert!(c.contains(4) && !c.contains(6) && c.contains(u64::MAX));
        assert_eq!(c.iter_seqs(4).collect::<Vec<_>>(), vec![3, 4, 5, 7]);
        let back: Confirm = serde_json::from_slice(&c.to_payload()).unwrap();
        assert_eq!(back, c);
        let forged = Confirm {
            seqs: vec![[9, 2], [0, u64::MAX]],
            ..c
        };
        assert_eq!(forged.iter_seqs(3).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn handled_batches_carry_their_digests_and_refusals() {
        let agent = AgentId::parse("gw-1").unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ob = OutboxId::from_random([7; 16]);
        let refused = vec![Refusal {
            seq: 9,
            digest: digest(b"other"),
            reason: REFUSED_REUSED_SEQ.into(),
        }];
        let c = Confirm::handled(
            agent,
            Some(ob.clone()),
            vec![(4, digest(b"b")), (3, digest(b"a")), (4, digest(b"b"))],
            refused.clone(),
            Some(9),
            at,
        );
        assert_eq!(c.seqs, vec![[3, 4]]);
        assert_eq!(c.digest_of(3), Some(digest(b"a").as_str()));
        assert_eq!(c.digest_of(5), None);
        let back: Confirm = serde_json::from_slice(&c.to_payload()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.outbox, Some(ob));
        assert_eq!(back.refused, refused);
        assert_ne!(digest(b"a"), digest(b"b"));
        assert_eq!(digest(b"a").len(), 32);
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

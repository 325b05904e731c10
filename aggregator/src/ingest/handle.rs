//! One message at a time: validate, admit, identify, log and apply through
//! the ledger — or dead-letter with the reason — and say what to confirm and
//! what to change in memory once the group is durable.

use super::{Group, Ingest, ReadGroup};
use crate::dead_letters::DeadLetter;
use crate::facts::{Applied, Identity, SeriesLimit, SeriesLimits};
use crate::state::{numbering_key, Numbering};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use zonesync_proto::{
    Accepted, AgentId, OutboxId, Presence, Problem, Reason, Refusal, Topic, TopicKind, Validator, ZoneId,
    REFUSED_REUSED_SEQ,
};

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// New batch stored (possibly with some items dead-lettered).
    Stored,
    /// Batch seen before; nothing written.
    Duplicate,
    /// Whole message refused.
    DeadLettered,
    /// Refused and not confirmed: the agent keeps the batch (a reused
    /// sequence number, a sequence far ahead, a clock far ahead).
    Refused,
    /// Presence message.
    Presence,
    /// An empty message on a data topic: `zonesync-agent check` testing its
    /// route (login, ACL); acknowledged and counted, nothing stored.
    Probe,
}

pub(super) fn excerpt(payload: &[u8]) -> String {
    String::from_utf8_lossy(&payload[..payload.len().min(512)]).into_owned()
}

pub(super) fn dead(
    ing: &Ingest,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
    reasons: Vec<(String, &'static str)>,
) -> DeadLetter {
    let t = Topic::parse_with_test_prefix(topic, ing.validator.limits.test_prefix.as_deref()).ok();
    for (_, label) in &reasons {
        ing.metrics.reject(label);
    }
    ing.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
    DeadLetter {
        id: 0,
        received_at: now,
        topic: topic.chars().take(256).collect(),
        zone: t.as_ref().map(|t| t.zone.to_string()),
        agent: t.as_ref().map(|t| t.agent.to_string()),
        seq: None,
        labels: reasons.iter().map(|(_, l)| (*l).to_owned()).collect(),
        reasons: reasons.into_iter().map(|(r, _)| r).collect(),
        whole_batch: true,
        payload_bytes: payload.len(),
        excerpt: excerpt(payload),
    }
}

pub(super) fn problems(ps: &[Problem]) -> Vec<(String, &'static str)> {
    ps.iter().map(|p| (p.to_string(), p.label())).collect()
}

/// What a handled message changes in memory once the store has made it
/// durable: nothing in the state or the counts moves before the flush.
#[derive(Debug)]
pub(super) enum Effect {
    None,
    Presence(Presence),
    Stored {
        acc: Accepted,
        applied: Applied,
    },
    Refused {
        zone: ZoneId,
        agent: AgentId,
        label: &'static str,
    },
}

/// What the confirmation to the batch's agent says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// Durably handled: the agent may forget it if the digest is its own.
    Handled { seq: u64, digest: String },
    /// Not handled; the agent keeps it.
    Refused(Refusal),
}

/// One message's outcome: for the caller, for the confirmation, for memory.
pub(super) struct Outcome1 {
    handled: Handled,
    /// To whom (the topic's zone and agent, which the broker's ACL pins to
    /// the publisher) and under which outbox, and what.
    answer: Option<(ConfirmKey, Answer)>,
    effect: Effect,
}

impl Outcome1 {
    fn plain(handled: Handled) -> Self {
        Self {
            handled,
            answer: None,
            effect: Effect::None,
        }
    }
}

/// The numberings this group has moved so far (announced by a presence,
/// raised by a stored batch) over the state, which moves only after the
/// flush: a seq is judged against both.
#[derive(Default)]
pub(super) struct GroupView {
    numberings: HashMap<(ZoneId, AgentId, String), Numbering>,
}

impl GroupView {
    fn numbering(&mut self, ing: &Ingest, zone: &ZoneId, agent: &AgentId, outbox: Option<&OutboxId>) -> &mut Numbering {
        let key = (zone.clone(), agent.clone(), numbering_key(outbox));
        self.numberings.entry(key).or_insert_with(|| {
            ing.state
                .read()
                .ok()
                .and_then(|st| {
                    st.zones
                        .get(zone)
                        .and_then(|z| z.agents.get(agent))
                        .and_then(|a| a.numberings.get(&numbering_key(outbox)).copied())
                })
                .unwrap_or_default()
        })
    }
}

/// Handles one message and applies what it changes in memory at once,
/// without flushing (tests, the bench's goal figure). The ingest task
/// instead applies a whole group's changes after the flush.
pub fn handle(ing: &Ingest, topic: &str, payload: &[u8], now: DateTime<Utc>) -> Result<Handled, StoreError> {
    let r = read(&ing.validator, topic, payload, now);
    let o = handle_one(ing, &mut GroupView::default(), topic, payload, r, now)?;
    apply_effect(ing, o.effect, now);
    Ok(o.handled)
}

/// A message judged as far as it can be without the facts held: its topic
/// and, on a data topic, its validated batch or every problem it has. The
/// ingest task has this done on a stage of its own ([`super::run`]), on the
/// other core, while it handles the messages before.
#[derive(Debug)]
pub(super) enum Read {
    /// Not one of zonesync's topics.
    BadTopic(String),
    /// A presence (read in [`handle_one`]: it is small and rare).
    Presence(Topic),
    /// A batch, validated (boxed: an `Accepted` is large, and reads queue
    /// by the thousand between the stage and the loop).
    Batch(Topic, Box<Result<Accepted, Vec<Problem>>>),
}

/// Reads and validates one message: pure, no state.
pub(super) fn read(validator: &Validator, topic: &str, payload: &[u8], now: DateTime<Utc>) -> Read {
    match Topic::parse_with_test_prefix(topic, validator.limits.test_prefix.as_deref()) {
        Err(e) => Read::BadTopic(e.to_string()),
        Ok(t) if t.kind == TopicKind::State => Read::Presence(t),
        Ok(t) => {
            let v = validator.batch(Some(&t), payload, now);
            Read::Batch(t, Box::new(v))
        }
    }
}

/// Only the sequence number (and outbox) of a batch the validator refused
/// whole: enough to confirm it (resending a refused batch would never help the agent).
#[derive(serde::Deserialize)]
struct SeqOnly {
    seq: u64,
    #[serde(default)]
    outbox: Option<OutboxId>,
}

pub(super) fn refusal(seq: u64, digest: String, reason: &str) -> Answer {
    Answer::Refused(Refusal {
        seq,
        digest,
        reason: reason.to_owned(),
    })
}

/// Validates, admits and stores one message, or dead-letters it; says what
/// to confirm and what to change in memory after the flush. A batch gets a
/// confirmation when it is stored, found already stored with the same
/// digest, or dead-lettered with a readable `seq`, on a data topic (whose
/// agent level the broker's ACL pins to the publisher, so the confirmation
/// goes back to that agent only).
pub(super) fn handle_one(
    ing: &Ingest,
    view: &mut GroupView,
    topic: &str,
    payload: &[u8],
    read: Read,
    now: DateTime<Utc>,
) -> Result<Outcome1, StoreError> {
    ing.metrics.messages_received.fetch_add(1, Ordering::Relaxed);
    let (t, validated) = match read {
        Read::BadTopic(e) => {
            ing.dead_letters
                .put(dead(ing, topic, payload, now, vec![(e, "bad_topic")]))?;
            return Ok(Outcome1::plain(Handled::DeadLettered));
        }
        Read::Presence(t) => (t, None),
        Read::Batch(t, v) => (t, Some(v)),
    };
    if !ing.zones.contains(&t.zone) {
        let why = format!("zone {} is not served by this aggregator", t.zone);
        ing.dead_letters
            .put(dead(ing, topic, payload, now, vec![(why, "unknown_zone")]))?;
        return Ok(Outcome1::plain(Handled::DeadLettered));
    }
    let Some(validated) = validated else {
        return match serde_json::from_slice::<Presence>(payload) {
            Ok(p) if p.zone == t.zone && p.agent == t.agent => {
                // Only an agent the registry binds becomes an agent of the
                // zone: a refused presence is dead-lettered, counted, and
                // creates nothing (no agent, no numbering, no drop counts).
                if let Err(refusal) = ing.registry.admit_presence(&p.zone, &p.agent, &p.enterprises) {
                    ing.dead_letters.put(dead(
                        ing,
                        topic,
                        payload,
                        now,
                        vec![(refusal.to_string(), refusal.label())],
                    ))?;
                    return Ok(Outcome1::plain(Handled::DeadLettered));
                }
                ing.store.put_presence(&p)?;
                view.numbering(ing, &p.zone, &p.agent, p.outbox.as_ref()).announced = Some(p.next_seq);
                Ok(Outcome1 {
                    handled: Handled::Presence,
                    answer: None,
                    effect: Effect::Presence(p),
                })
            }
            Ok(p) => {
                let why = format!("presence names {}/{} but came on {topic}", p.zone, p.agent);
                ing.dead_letters
                    .put(dead(ing, topic, payload, now, vec![(why, "topic_mismatch")]))?;
                Ok(Outcome1::plain(Handled::DeadLettered))
            }
            Err(e) => {
                let why = format!("presence message is not valid: {e}");
                ing.dead_letters
                    .put(dead(ing, topic, payload, now, vec![(why, "bad_presence")]))?;
                Ok(Outcome1::plain(Handled::DeadLettered))
            }
        };
    };
    if payload.is_empty() {
        ing.metrics.probes_received.fetch_add(1, Ordering::Relaxed);
        return Ok(Outcome1::plain(Handled::Probe));
    }
    let acc = match *validated {
        Ok(a) => a,
        Err(ps) => {
            let head = serde_json::from_slice::<SeqOnly>(payload).ok();
            let mut d = dead(ing, topic, payload, now, problems(&ps));
            d.seq = head.as_ref().map(|h| h.seq);
            ing.dead_letters.put(d)?;
            let digest = zonesync_proto::digest(payload);
            // A clock far ahead is the agent's to fix: the batch is kept
            // (not confirmed) and is accepted once the clocks agree.
            let future = ps.iter().any(|p| matches!(p.reason, Reason::SentAtFuture { .. }));
            let answer = head.map(|h| {
                let a = if future {
                    refusal(h.seq, digest, "sent_at_future")
                } else {
                    Answer::Handled { seq: h.seq, digest }
                };
                ((t.zone.clone(), t.agent.clone(), h.outbox), a)
            });
            return Ok(Outcome1 {
                handled: if future {
                    Handled::Refused
                } else {
                    Handled::DeadLettered
                },
                answer,
                effect: Effect::None,
            });
        }
    };
    let outbox = acc.outbox.clone();
    let confirm_as = |answer: Answer| Some(((t.zone.clone(), t.agent.clone(), outbox.clone()), answer));
    if let Err(refusal) = ing.registry.admit(&acc.zone, &acc.agent, &acc.enterprise) {
        let mut d = dead(ing, topic, payload, now, vec![(refusal.to_string(), refusal.label())]);
        d.seq = Some(acc.seq);
        ing.dead_letters.put(d)?;
        return Ok(Outcome1 {
            handled: Handled::DeadLettered,
            answer: confirm_as(Answer::Handled {
                seq: acc.seq,
                digest: acc.digest.clone(),
            }),
            effect: Effect::None,
        });
    }
    let limit = view
        .numbering(ing, &acc.zone, &acc.agent, acc.outbox.as_ref())
        .seq_limit();
    if acc.seq > limit {
        let why = format!(
            "seq {} is far beyond what outbox {} announced or sent (at most {limit} accepted): a forged or broken numbering",
            acc.seq,
            acc.outbox.as_ref().map_or("(legacy)", |o| o.as_str()),
        );
        let mut d = dead(ing, topic, payload, now, vec![(why, "seq_ahead")]);
        d.seq = Some(acc.seq);
        ing.dead_letters.put(d)?;
        return Ok(Outcome1 {
            handled: Handled::Refused,
            answer: confirm_as(refusal(acc.seq, acc.digest.clone(), "seq_ahead")),
            effect: Effect::Refused {
                zone: acc.zone.clone(),
                agent: acc.agent.clone(),
                label: "seq_ahead",
            },
        });
    }
    let mut ledger = ing.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match ledger.identify(&acc) {
        Identity::Duplicate => {
            ing.metrics.batches_duplicate.fetch_add(1, Ordering::Relaxed);
            Ok(Outcome1 {
                handled: Handled::Duplicate,
                answer: confirm_as(Answer::Handled {
                    seq: acc.seq,
                    digest: acc.digest.clone(),
                }),
                effect: Effect::None,
            })
        }
        Identity::Reused { held } => {
            drop(ledger);
            let why = format!(
                "seq {} of outbox {} is held with other content (digest {held}, this one {}): a reused sequence number — an outbox restored from a copy, or batches numbered ahead by someone else; refused, the agent must move to a fresh outbox identity and resend",
                acc.seq,
                acc.outbox.as_ref().map_or("(legacy)", |o| o.as_str()),
                acc.digest
            );
            tracing::warn!(zone = %acc.zone, agent = %acc.agent, seq = acc.seq, "{why}");
            let mut d = dead(ing, topic, payload, now, vec![(why, REFUSED_REUSED_SEQ)]);
            d.seq = Some(acc.seq);
            ing.dead_letters.put(d)?;
            Ok(Outcome1 {
                handled: Handled::Refused,
                answer: confirm_as(refusal(acc.seq, acc.digest.clone(), REFUSED_REUSED_SEQ)),
                effect: Effect::Refused {
                    zone: acc.zone.clone(),
                    agent: acc.agent.clone(),
                    label: REFUSED_REUSED_SEQ,
                },
            })
        }
        Identity::New => {
            // Readings that would take the enterprise or the agent past its
            // series limit are taken out before the batch is logged, so the
            // replay after a restart holds what was live.
            let limits = SeriesLimits {
                per_enterprise: ing.validator.limits.max_series_per_enterprise,
                per_agent: ing.validator.limits.max_series_per_agent,
            };
            let over = ledger.over_series_limits(&acc, limits);
            let (acc, over) = without(acc, over);
            // Logged first: if the store refuses, the ledger has not moved
            // and the message is tried again.
            ing.store.append(now, &acc)?;
            let applied = ledger.apply(&acc, &ing.catalog).unwrap_or_default();
            drop(ledger);
            let n = view.numbering(ing, &acc.zone, &acc.agent, acc.outbox.as_ref());
            n.highest = Some(n.highest.map_or(acc.seq, |h| h.max(acc.seq)));
            if !acc.refused.is_empty() {
                let mut d = dead(ing, topic, payload, now, problems(&acc.refused));
                d.seq = Some(acc.seq);
                d.whole_batch = false;
                ing.dead_letters.put(d)?;
            }
            if !over.is_empty() {
                let mut d = dead(ing, topic, payload, now, over);
                d.seq = Some(acc.seq);
                d.whole_batch = false;
                ing.dead_letters.put(d)?;
            }
            Ok(Outcome1 {
                handled: Handled::Stored,
                answer: confirm_as(Answer::Handled {
                    seq: acc.seq,
                    digest: acc.digest.clone(),
                }),
                effect: Effect::Stored { acc, applied },
            })
        }
    }
}

/// The batch without the readings over a series limit, and each of those
/// with its reason. The batch is still stored and confirmed (sending it
/// again would not help); the refused readings are in a dead letter.
fn without(mut acc: Accepted, over: Vec<(usize, SeriesLimit)>) -> (Accepted, Vec<(String, &'static str)>) {
    if over.is_empty() {
        return (acc, Vec::new());
    }
    let mut reasons = Vec::with_capacity(over.len());
    let mut refused = over.into_iter().peekable();
    let mut kept = Vec::with_capacity(acc.readings.len());
    for (i, r) in std::mem::take(&mut acc.readings).into_iter().enumerate() {
        let Some((_, limit)) = refused.next_if(|(at, _)| *at == i) else {
            kept.push(r);
            continue;
        };
        let why = match limit {
            SeriesLimit::Enterprise(n) => format!(
                "{} at point {:?}: enterprise {} holds {n} distinct series, its limit (max_series_per_enterprise); a new one is refused",
                r.indicator, r.point, acc.enterprise
            ),
            SeriesLimit::Agent(n) => format!(
                "{} at point {:?}: agent {} brought in {n} distinct series, its limit (max_series_per_agent); a new one is refused",
                r.indicator, r.point, acc.agent
            ),
        };
        reasons.push((why, limit.label()));
    }
    acc.readings = kept;
    (acc, reasons)
}

/// Applies what a durably handled message changes in memory: the state and
/// the counts of what is stored.
pub(super) fn apply_effect(ing: &Ingest, effect: Effect, now: DateTime<Utc>) {
    match effect {
        Effect::None => {}
        Effect::Presence(p) => {
            if let Ok(mut st) = ing.state.write() {
                st.apply_presence(&p, now);
            }
            ing.metrics.presence_received.fetch_add(1, Ordering::Relaxed);
        }
        Effect::Refused { zone, agent, label } => {
            if let Ok(mut st) = ing.state.write() {
                let a = st.zone_mut(&zone).agents.entry(agent).or_default();
                match label {
                    REFUSED_REUSED_SEQ => a.refused_reused_seq += 1,
                    _ => a.refused_seq_ahead += 1,
                }
                a.last_numbering_refusal_at = Some(now);
            }
        }
        Effect::Stored { acc, applied } => {
            let m = &ing.metrics;
            let new_readings = applied.new_readings as u64;
            m.batches_stored.fetch_add(1, Ordering::Relaxed);
            m.readings_stored.fetch_add(new_readings, Ordering::Relaxed);
            m.readings_replaced
                .fetch_add(applied.replaced as u64, Ordering::Relaxed);
            m.readings_duplicate
                .fetch_add(applied.duplicate_readings as u64, Ordering::Relaxed);
            m.declarations_stored
                .fetch_add(applied.declarations as u64, Ordering::Relaxed);
            if acc.backfill {
                m.readings_backfilled.fetch_add(new_readings, Ordering::Relaxed);
                m.backfill_stale.fetch_add(applied.stale as u64, Ordering::Relaxed);
            } else {
                m.overtaken_stale.fetch_add(applied.stale as u64, Ordering::Relaxed);
            }
            if let Ok(mut st) = ing.state.write() {
                let mut tallies = ing.tallies.lock(&acc.zone);
                let follower = tallies.as_deref_mut().map(|t| t as &mut dyn crate::state::Follower);
                st.apply_applied(&acc, &applied, &ing.catalog, follower);
                drop(tallies);
                st.note_batch(
                    &acc.zone,
                    &acc.agent,
                    acc.outbox.as_ref(),
                    acc.boot,
                    acc.seq,
                    acc.sent_at,
                    now,
                );
                if acc.backfill {
                    st.note_backfill(&acc.zone, &acc.agent, new_readings);
                }
            }
        }
    }
}

/// Whom a confirmation goes to: (zone, agent, outbox).
pub(super) type ConfirmKey = (ZoneId, AgentId, Option<OutboxId>);

/// What the confirmations say once the group is flushed, per (zone, agent, outbox).
pub(super) type Confirms = BTreeMap<ConfirmKey, Vec<Answer>>;

/// Handles a group of messages in arrival order; returns those handled
/// (stored, refused or recognised as duplicates), which may be acknowledged
/// once flushed, the confirmations to send then, and what to change in
/// memory then. A message the store failed on is left out, so neither
/// acknowledged nor confirmed.
pub(super) fn handle_group(
    ing: &Ingest,
    group: ReadGroup,
    now: DateTime<Utc>,
) -> (Group, Confirms, Vec<Effect>, Group) {
    let mut failed = Vec::new();
    let mut done = Vec::with_capacity(group.len());
    let mut confirms = Confirms::new();
    let mut effects = Vec::with_capacity(group.len());
    let mut view = GroupView::default();
    for (g, p, read) in group {
        match handle_one(ing, &mut view, &p.topic, &p.payload, read, now) {
            Ok(o) => {
                if let Some((to, answer)) = o.answer {
                    confirms.entry(to).or_default().push(answer);
                }
                effects.push(o.effect);
                done.push((g, p));
            }
            Err(e) => {
                ing.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(topic = %p.topic, "not stored, not acknowledged: {e}");
                failed.push((g, p));
            }
        }
    }
    (done, confirms, effects, failed)
}

/// Applies a flushed group's effects in arrival order.
pub(super) fn apply_effects(ing: &Ingest, effects: Vec<Effect>, now: DateTime<Utc>) {
    for e in effects {
        apply_effect(ing, e, now);
    }
}

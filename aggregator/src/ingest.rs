//! Ingest: MQTT in, validated and de-duplicated facts out to the store and
//! the in-memory state, dead letters for everything refused.
//!
//! The session is persistent (clean_session = false) and acks are manual: a
//! PUBACK goes out only after the batch is durably stored (flush), in arrival
//! order, so neither a crash nor a restart loses a batch the broker handed
//! us. Acks from a previous connection are dropped (their packet ids may
//! mean other messages now); the broker redelivers those and the (agent, seq)
//! de-duplication makes the redelivery harmless.

use crate::app::App;
use crate::config::MqttConfig;
use crate::facts::{Applied, Identity};
use crate::state::{numbering_key, Numbering};
use crate::store::{DeadLetter, StoreError};
use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, Packet, Publish, QoS, SubscribeFilter};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use zonesync_proto::{
    Accepted, AgentId, Confirm, OutboxId, Presence, Problem, Reason, Refusal, Topic, TopicKind, ZoneId,
    REFUSED_REUSED_SEQ,
};
use zonesync_runtime::shutdown::Shutdown;

/// Largest group of messages stored under one flush.
const GROUP: usize = 512;

/// Messages with the connection generation they arrived on, in arrival order.
type Group = Vec<(u64, Publish)>;

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
}

fn excerpt(payload: &[u8]) -> String {
    String::from_utf8_lossy(&payload[..payload.len().min(512)]).into_owned()
}

fn dead(
    app: &App,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
    reasons: Vec<(String, &'static str)>,
) -> DeadLetter {
    let t = Topic::parse_with_test_prefix(topic, app.validator.limits.test_prefix.as_deref()).ok();
    for (_, label) in &reasons {
        app.metrics.reject(label);
    }
    app.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
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

fn problems(ps: &[Problem]) -> Vec<(String, &'static str)> {
    ps.iter().map(|p| (p.to_string(), p.label())).collect()
}

/// What a handled message changes in memory once the store has made it
/// durable: nothing in the state or the counts moves before the flush.
#[derive(Debug)]
enum Effect {
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
enum Answer {
    /// Durably handled: the agent may forget it if the digest is its own.
    Handled { seq: u64, digest: String },
    /// Not handled; the agent keeps it.
    Refused(Refusal),
}

/// One message's outcome: for the caller, for the confirmation, for memory.
struct Outcome1 {
    handled: Handled,
    answer: Option<(Option<OutboxId>, Answer)>,
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
struct GroupView {
    numberings: HashMap<(ZoneId, AgentId, String), Numbering>,
}

impl GroupView {
    fn numbering(&mut self, app: &App, zone: &ZoneId, agent: &AgentId, outbox: Option<&OutboxId>) -> &mut Numbering {
        let key = (zone.clone(), agent.clone(), numbering_key(outbox));
        self.numberings.entry(key).or_insert_with(|| {
            app.state
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
pub fn handle(app: &App, topic: &str, payload: &[u8], now: DateTime<Utc>) -> Result<Handled, StoreError> {
    let o = handle_one(app, &mut GroupView::default(), topic, payload, now)?;
    apply_effect(app, o.effect, now);
    Ok(o.handled)
}

/// Only the sequence number (and outbox) of a batch the validator refused
/// whole: enough to confirm it (resending a refused batch would never help the agent).
#[derive(serde::Deserialize)]
struct SeqOnly {
    seq: u64,
    #[serde(default)]
    outbox: Option<OutboxId>,
}

fn refusal(seq: u64, digest: String, reason: &str) -> Answer {
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
fn handle_one(
    app: &App,
    view: &mut GroupView,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<Outcome1, StoreError> {
    app.metrics.messages_received.fetch_add(1, Ordering::Relaxed);
    let t = match Topic::parse_with_test_prefix(topic, app.validator.limits.test_prefix.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            app.store
                .dead_letter(dead(app, topic, payload, now, vec![(e.to_string(), "bad_topic")]))?;
            return Ok(Outcome1::plain(Handled::DeadLettered));
        }
    };
    if !app.zones.contains(&t.zone) {
        let why = format!("zone {} is not served by this aggregator", t.zone);
        app.store
            .dead_letter(dead(app, topic, payload, now, vec![(why, "unknown_zone")]))?;
        return Ok(Outcome1::plain(Handled::DeadLettered));
    }
    if t.kind == TopicKind::State {
        return match serde_json::from_slice::<Presence>(payload) {
            Ok(p) if p.zone == t.zone && p.agent == t.agent => {
                app.store.put_presence(&p)?;
                view.numbering(app, &p.zone, &p.agent, p.outbox.as_ref()).announced = Some(p.next_seq);
                Ok(Outcome1 {
                    handled: Handled::Presence,
                    answer: None,
                    effect: Effect::Presence(p),
                })
            }
            Ok(p) => {
                let why = format!("presence names {}/{} but came on {topic}", p.zone, p.agent);
                app.store
                    .dead_letter(dead(app, topic, payload, now, vec![(why, "topic_mismatch")]))?;
                Ok(Outcome1::plain(Handled::DeadLettered))
            }
            Err(e) => {
                let why = format!("presence message is not valid: {e}");
                app.store
                    .dead_letter(dead(app, topic, payload, now, vec![(why, "bad_presence")]))?;
                Ok(Outcome1::plain(Handled::DeadLettered))
            }
        };
    }
    let acc = match app.validator.batch(Some(&t), payload, now) {
        Ok(a) => a,
        Err(ps) => {
            let head = serde_json::from_slice::<SeqOnly>(payload).ok();
            let mut d = dead(app, topic, payload, now, problems(&ps));
            d.seq = head.as_ref().map(|h| h.seq);
            app.store.dead_letter(d)?;
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
                (h.outbox, a)
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
    let confirm_as = |answer: Answer| Some((outbox.clone(), answer));
    if let Err(refusal) = app.registry.admit(&acc.zone, &acc.agent, &acc.enterprise) {
        let mut d = dead(app, topic, payload, now, vec![(refusal.to_string(), refusal.label())]);
        d.seq = Some(acc.seq);
        app.store.dead_letter(d)?;
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
        .numbering(app, &acc.zone, &acc.agent, acc.outbox.as_ref())
        .seq_limit();
    if acc.seq > limit {
        let why = format!(
            "seq {} is far beyond what outbox {} announced or sent (at most {limit} accepted): a forged or broken numbering",
            acc.seq,
            acc.outbox.as_ref().map_or("(legacy)", |o| o.as_str()),
        );
        let mut d = dead(app, topic, payload, now, vec![(why, "seq_ahead")]);
        d.seq = Some(acc.seq);
        app.store.dead_letter(d)?;
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
    let mut ledger = app.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match ledger.identify(&acc) {
        Identity::Duplicate => {
            app.metrics.batches_duplicate.fetch_add(1, Ordering::Relaxed);
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
            let mut d = dead(app, topic, payload, now, vec![(why, REFUSED_REUSED_SEQ)]);
            d.seq = Some(acc.seq);
            app.store.dead_letter(d)?;
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
            // Logged first: if the store refuses, the ledger has not moved
            // and the message is tried again.
            app.store.append(now, &acc)?;
            let applied = ledger.apply(&acc, &app.catalog).unwrap_or_default();
            drop(ledger);
            let n = view.numbering(app, &acc.zone, &acc.agent, acc.outbox.as_ref());
            n.highest = Some(n.highest.map_or(acc.seq, |h| h.max(acc.seq)));
            if !acc.refused.is_empty() {
                let mut d = dead(app, topic, payload, now, problems(&acc.refused));
                d.seq = Some(acc.seq);
                d.whole_batch = false;
                app.store.dead_letter(d)?;
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

/// Applies what a durably handled message changes in memory: the state and
/// the counts of what is stored.
fn apply_effect(app: &App, effect: Effect, now: DateTime<Utc>) {
    match effect {
        Effect::None => {}
        Effect::Presence(p) => {
            if let Ok(mut st) = app.state.write() {
                st.apply_presence(&p, now);
            }
            app.metrics.presence_received.fetch_add(1, Ordering::Relaxed);
        }
        Effect::Refused { zone, agent, label } => {
            if let Ok(mut st) = app.state.write() {
                let a = st.zone_mut(&zone).agents.entry(agent).or_default();
                match label {
                    REFUSED_REUSED_SEQ => a.refused_reused_seq += 1,
                    _ => a.refused_seq_ahead += 1,
                }
                a.last_numbering_refusal_at = Some(now);
            }
        }
        Effect::Stored { acc, applied } => {
            let m = &app.metrics;
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
            if let Ok(mut st) = app.state.write() {
                st.apply_applied(&acc.zone, &acc.enterprise, &applied, &app.catalog);
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

/// What the confirmations say once the group is flushed, per (zone, agent, outbox).
type Confirms = BTreeMap<(ZoneId, AgentId, Option<OutboxId>), Vec<Answer>>;

/// Handles a group of messages in arrival order; returns those handled
/// (stored, refused or recognised as duplicates), which may be acknowledged
/// once flushed, the confirmations to send then, and what to change in
/// memory then. A message the store failed on is left out, so neither
/// acknowledged nor confirmed.
fn handle_group(app: &App, group: Group, now: DateTime<Utc>) -> (Group, Confirms, Vec<Effect>, Group) {
    let mut failed = Vec::new();
    let mut done = Vec::with_capacity(group.len());
    let mut confirms = Confirms::new();
    let mut effects = Vec::with_capacity(group.len());
    let mut view = GroupView::default();
    for (g, p) in group {
        match handle_one(app, &mut view, &p.topic, &p.payload, now) {
            Ok(o) => {
                if let Some((outbox, answer)) = o.answer {
                    if let Ok(t) = Topic::parse_with_test_prefix(&p.topic, app.validator.limits.test_prefix.as_deref())
                    {
                        confirms.entry((t.zone, t.agent, outbox)).or_default().push(answer);
                    }
                }
                effects.push(o.effect);
                done.push((g, p));
            }
            Err(e) => {
                app.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(topic = %p.topic, "not stored, not acknowledged: {e}");
                failed.push((g, p));
            }
        }
    }
    (done, confirms, effects, failed)
}

/// Publishes one confirmation per agent and outbox for what the last flush
/// made durable, with the digests held, the refusals, and the highest seq
/// held under that outbox. Every agent gets them; only those asking for
/// end-to-end confirmation subscribe. A confirmation lost on the way only
/// means the agent resends and the batch is confirmed again as a duplicate.
async fn confirm(app: &App, client: &AsyncClient, confirms: Confirms) {
    let at = Utc::now();
    for ((zone, agent, outbox), answers) in confirms {
        let mut handled = Vec::new();
        let mut refused = Vec::new();
        for a in answers {
            match a {
                Answer::Handled { seq, digest } => handled.push((seq, digest)),
                Answer::Refused(r) => refused.push(r),
            }
        }
        let highest = app
            .ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .highest(&zone, &agent, &outbox);
        let payload = Confirm::handled(agent.clone(), outbox, handled, refused, highest, at).to_payload();
        match client
            .publish(Topic::confirm(&zone, &agent), QoS::AtLeastOnce, false, payload)
            .await
        {
            Ok(()) => {
                app.metrics.confirms_published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(%agent, "confirmation not queued: {e}"),
        }
    }
}

/// Tries at storing and flushing one group before the store counts as
/// broken (about half a minute with the backoff below).
const STORE_TRIES: u32 = 8;

/// A group stored and flushed: what to acknowledge, confirm and apply.
struct Stored {
    done: Group,
    confirms: Confirms,
    effects: Vec<Effect>,
    at: DateTime<Utc>,
}

enum GroupError {
    Shutdown,
    Store(StoreError),
}

/// Stores a group and flushes it. A message the store failed on (disk full)
/// is tried again, with backoff, as is the flush; what was handled before
/// keeps its effects until a flush makes it durable, so nothing in memory
/// runs ahead of the store.
async fn store_group(app: &App, group: Group, shutdown: &mut Shutdown) -> Result<Stored, GroupError> {
    let at = Utc::now();
    let mut out = Stored {
        done: Vec::with_capacity(group.len()),
        confirms: Confirms::new(),
        effects: Vec::with_capacity(group.len()),
        at,
    };
    let mut todo = group;
    let mut backoff = Duration::from_millis(250);
    for attempt in 1..=STORE_TRIES {
        let (done, confirms, effects, failed) = handle_group(app, todo, at);
        out.done.extend(done);
        for (k, v) in confirms {
            out.confirms.entry(k).or_default().extend(v);
        }
        out.effects.extend(effects);
        let flushed = app.store.flush();
        let error = match (flushed, failed.is_empty()) {
            (Ok(()), true) => return Ok(out),
            (Err(e), _) => e,
            (Ok(()), false) => StoreError::Corrupt(format!("{} messages could not be written", failed.len())),
        };
        app.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
        if attempt == STORE_TRIES {
            return Err(GroupError::Store(error));
        }
        tracing::warn!(
            attempt,
            delay_ms = backoff.as_millis() as u64,
            "store: {error}; trying again"
        );
        tokio::select! {
            _ = shutdown.wait() => return Err(GroupError::Shutdown),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(8));
        todo = failed;
    }
    Err(GroupError::Shutdown)
}

/// Applies a flushed group's effects in arrival order.
fn apply_effects(app: &App, effects: Vec<Effect>, now: DateTime<Utc>) {
    for e in effects {
        apply_effect(app, e, now);
    }
}

/// Subscribes to the served zones and ingests until shutdown.
pub async fn run(app: Arc<App>, mqtt: MqttConfig, mut shutdown: Shutdown) {
    let alive = app.health.task("ingest");
    let mut opts = match mqtt.connect_settings(mqtt.client_id.clone(), 64 * 1024).options() {
        Ok(o) => o,
        Err(e) => {
            // Without a usable TLS setting there is nothing to connect with; say so and stop ingest.
            tracing::error!("MQTT TLS settings: {e}; ingest is not started");
            return;
        }
    };
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    // Unacknowledged messages are bounded by the broker's in-flight window,
    // far below this capacity, so `ack().await` below never waits on the poller.
    let (client, mut events) = AsyncClient::new(opts, 4096);
    let (tx, mut rx) = mpsc::channel::<(u64, Publish)>(4096);
    let generation = Arc::new(AtomicU64::new(0));
    let filters: Vec<SubscribeFilter> = app
        .zones
        .iter()
        .flat_map(Topic::zone_filters)
        .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce))
        .collect();

    let poller = {
        let app = app.clone();
        let client = client.clone();
        let generation = generation.clone();
        let mut shutdown = shutdown.clone();
        let mut backoff = mqtt.backoff();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = shutdown.wait() => break,
                    ev = events.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        let g = generation.fetch_add(1, Ordering::SeqCst) + 1;
                        app.metrics.mqtt_connected.store(1, Ordering::Relaxed);
                        backoff.reset();
                        tracing::info!(
                            session_present = ack.session_present,
                            generation = g,
                            "connected to broker"
                        );
                        if let Err(e) = client.try_subscribe_many(filters.clone()) {
                            tracing::error!("subscribe request failed: {e}");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let g = generation.load(Ordering::SeqCst);
                        if tx.send((g, p)).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        app.metrics.mqtt_connected.store(0, Ordering::Relaxed);
                        tracing::warn!(delay_ms = backoff.delay().as_millis() as u64, "broker connection: {e}");
                        if !backoff.wait(&mut shutdown).await {
                            break;
                        }
                    }
                }
            }
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
            app.metrics.mqtt_connected.store(0, Ordering::Relaxed);
        })
    };

    loop {
        let first = tokio::select! {
            _ = shutdown.wait() => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        let mut group = vec![first];
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(m) => group.push(m),
                Err(_) => break,
            }
        }
        match store_group(&app, group, &mut shutdown).await {
            Ok(Stored {
                done,
                confirms,
                effects,
                at,
            }) => {
                // Durable: now the state and the counts may move, then the broker
                // and the agents are told.
                apply_effects(&app, effects, at);
                let current = generation.load(Ordering::SeqCst);
                for (g, p) in done {
                    if g == current && client.ack(&p).await.is_ok() {
                        app.metrics.acks_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                confirm(&app, &client, confirms).await;
            }
            Err(GroupError::Shutdown) => break,
            Err(GroupError::Store(e)) => {
                // Nothing of the group was acknowledged: the broker keeps it
                // (persistent session) and hands it to the restarted process.
                app.health.fail(format!(
                    "store {} cannot be written after {STORE_TRIES} tries ({e}); the process ends so that systemd restarts it",
                    app.store.path().display()
                ));
                break;
            }
        }
    }
    if let Err(e) = app.store.flush() {
        tracing::error!("final flush failed: {e}");
    }
    let _ = poller.await;
    if shutdown.is_triggered() {
        alive.finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AggregatorConfig;
    use crate::testkit::utc;
    use rumqttc::{Publish, QoS};
    use zonesync_proto::{AgentId, Batch, EnterpriseId, Period, PresenceStatus, Reading, ZoneId, WIRE_VERSION};

    const NOW: &str = "2026-11-23T08:00:00Z";

    fn zone() -> ZoneId {
        ZoneId::parse("jiyuan-hitech").expect("zone id")
    }
    fn agent() -> AgentId {
        AgentId::parse("jy-hitech-gw01").expect("agent id")
    }
    fn ent() -> EnterpriseId {
        EnterpriseId::from_stored("91419001MA0000001N").expect("credit code")
    }

    /// An aggregator on the example registry with its store in `dir`.
    fn open(dir: &std::path::Path) -> App {
        let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/registry.toml");
        let body = format!(
            "data_dir = {:?}\nregistry = {registry:?}\n[store]\ncache_capacity_bytes = 1048576\n",
            dir.join("data").display().to_string()
        );
        let path = dir.join("aggregator.toml");
        std::fs::write(&path, body).expect("write config");
        App::open(&AggregatorConfig::load(&path).expect("config")).expect("open app")
    }

    fn gauge(value: f64, ts: &str) -> Reading {
        Reading {
            indicator: "electricity".into(),
            point: "M1".into(),
            value,
            unit: "kWh".into(),
            ts: Some(utc(ts)),
            period: None,
        }
    }

    fn amount(value: f64, month: u32) -> Reading {
        Reading {
            indicator: "value_added".into(),
            point: String::new(),
            value,
            unit: "10k_yuan".into(),
            ts: None,
            period: Some(Period::Month(2026, month)),
        }
    }

    fn batch(seq: u64, backfill: bool, readings: Vec<Reading>) -> Batch {
        Batch {
            v: WIRE_VERSION,
            agent: agent(),
            boot: 1,
            outbox: None,
            seq,
            sent_at: utc(NOW),
            zone: zone(),
            enterprise: ent(),
            backfill,
            readings,
            declarations: vec![],
        }
    }

    fn send(app: &App, b: &Batch) -> Handled {
        let topic = Topic::data(&b.zone, &b.agent, &b.enterprise);
        handle(app, &topic, &b.to_payload(), utc(NOW)).expect("handled")
    }

    /// (zone readings, enterprise readings) as the API shows them.
    fn counts(app: &App) -> (u64, u64) {
        let st = app.state.read().expect("state");
        let zs = st.zones.get(&zone()).expect("zone state");
        (zs.readings_stored, zs.enterprises.get(&ent()).map_or(0, |e| e.readings))
    }

    /// The enterprise's reported value added for October 2026, as the state holds it.
    fn october_value_added(app: &App) -> Option<f64> {
        let st = app.state.read().expect("state");
        let es = st
            .zones
            .get(&zone())
            .and_then(|z| z.enterprises.get(&ent()))
            .expect("enterprise");
        es.reported
            .get("value_added")
            .and_then(|m| m.get(&Period::Month(2026, 10)))
            .copied()
    }

    #[test]
    fn reading_counts_are_the_same_before_and_after_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        let first = batch(
            1,
            false,
            vec![
                gauge(100.0, "2026-11-23T07:00:00Z"),
                gauge(110.0, "2026-11-23T07:15:00Z"),
                amount(50.0, 10),
            ],
        );
        assert_eq!(send(&app, &first), Handled::Stored);
        // Redelivery of the same batch, then a batch repeating a register
        // unchanged and correcting the month-to-date figure twice in itself.
        assert_eq!(send(&app, &first), Handled::Duplicate);
        let second = batch(
            2,
            false,
            vec![
                gauge(110.0, "2026-11-23T07:15:00Z"),
                amount(55.0, 10),
                amount(56.0, 10),
                gauge(120.0, "2026-11-23T07:30:00Z"),
            ],
        );
        assert_eq!(send(&app, &second), Handled::Stored);
        assert_eq!(counts(&app), (4, 4));
        let m = &app.metrics;
        assert_eq!(m.readings_stored.load(Ordering::Relaxed), 4);
        assert_eq!(m.readings_replaced.load(Ordering::Relaxed), 2);
        assert_eq!(m.readings_duplicate.load(Ordering::Relaxed), 1);
        app.store.flush().expect("flush");
        drop(app);

        let app = open(dir.path());
        assert_eq!(counts(&app), (4, 4));
        assert_eq!(october_value_added(&app), Some(56.0));
    }

    #[test]
    fn backfill_in_order_restates_a_period_figure() {
        // A backlog drained after an outage arrives in the order it was made:
        // its later month-to-date figure is the newer one and replaces the held one.
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        let first = batch(10, true, vec![amount(40.0, 10)]);
        assert_eq!(send(&app, &first), Handled::Stored);
        let later = batch(11, true, vec![amount(1240.0, 10)]);
        assert_eq!(send(&app, &later), Handled::Stored);
        assert_eq!(october_value_added(&app), Some(1240.0));
        assert_eq!(app.metrics.backfill_stale.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_resent_live_batch_never_restates_what_the_agent_sent_after_it() {
        // After a broker crash the agent resends batches the broker lost; by
        // then later ones may be stored. Not backfilled, but overtaken.
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        assert_eq!(send(&app, &batch(7, false, vec![amount(56.0, 10)])), Handled::Stored);
        assert_eq!(send(&app, &batch(5, false, vec![amount(50.0, 10)])), Handled::Stored);
        assert_eq!(october_value_added(&app), Some(56.0));
        assert_eq!(app.metrics.overtaken_stale.load(Ordering::Relaxed), 1);
        assert_eq!(app.metrics.readings_replaced.load(Ordering::Relaxed), 0);
        // In order, a restated figure still replaces the held one.
        assert_eq!(send(&app, &batch(8, false, vec![amount(61.0, 10)])), Handled::Stored);
        assert_eq!(october_value_added(&app), Some(61.0));
        assert_eq!(app.metrics.readings_replaced.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_resent_restatement_replaces_older_ones_even_when_later_batches_overtook_it() {
        // Seen in the fault harness (broker SIGKILL, seed 5): the month-to-date
        // figure of seq 20 was lost with the broker and resent after seq 21
        // (meter readings only) was stored. It is newer than the held figure
        // (seq 10), so it must replace it; a still older resend must not.
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        assert_eq!(send(&app, &batch(10, false, vec![amount(20.0, 10)])), Handled::Stored);
        let meters = batch(21, false, vec![gauge(120.0, "2026-11-23T07:30:00Z")]);
        assert_eq!(send(&app, &meters), Handled::Stored);
        assert_eq!(send(&app, &batch(20, false, vec![amount(310.0, 10)])), Handled::Stored);
        assert_eq!(october_value_added(&app), Some(310.0));
        assert_eq!(send(&app, &batch(15, false, vec![amount(150.0, 10)])), Handled::Stored);
        assert_eq!(october_value_added(&app), Some(310.0));
        assert_eq!(app.metrics.overtaken_stale.load(Ordering::Relaxed), 1);
        // The rebuilt state agrees.
        app.store.flush().expect("flush");
        drop(app);
        assert_eq!(october_value_added(&open(dir.path())), Some(310.0));
    }

    #[test]
    fn late_registers_between_held_ones_split_consumption_as_a_rebuild_does() {
        // After a broker crash the lost batches are resent after later ones:
        // their registers land between held ones, across a month boundary.
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        let kwh = |app: &App, month: u32| {
            let st = app.state.read().expect("state");
            let zs = st.zones.get(&zone()).expect("zone");
            let es = zs.enterprises.get(&ent()).expect("enterprise");
            (
                es.amount("electricity", Period::Month(2026, month)).map(|(v, _)| v),
                es.late_readings,
            )
        };
        let held = batch(
            2,
            false,
            vec![
                gauge(1000.0, "2026-10-31T14:00:00Z"),
                gauge(1080.0, "2026-10-31T19:00:00Z"),
            ],
        );
        assert_eq!(send(&app, &held), Handled::Stored);
        // Held: 22:00 China time on 31 October and 03:00 on 1 November (80 kWh,
        // split 2 h : 3 h by time). Late: 23:00 and 01:00, so in time order
        // October gets 10 + 30 and November 30 + 10.
        let late = batch(
            1,
            false,
            vec![
                gauge(1010.0, "2026-10-31T15:00:00Z"),
                gauge(1070.0, "2026-10-31T17:00:00Z"),
            ],
        );
        assert_eq!(send(&app, &late), Handled::Stored);
        let live = (kwh(&app, 10), kwh(&app, 11));
        // Both arrived after a later register: counted late, split in exactly.
        assert_eq!(live, ((Some(40.0), 2), (Some(40.0), 2)));
        app.store.flush().expect("flush");
        drop(app);
        let rebuilt = open(dir.path());
        assert_eq!((kwh(&rebuilt, 10), kwh(&rebuilt, 11)), live);
    }

    #[test]
    fn a_group_confirms_stored_duplicate_and_refused_batches_to_their_agent() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        let topic = Topic::data(&zone(), &agent(), &ent());
        let publish = |payload: Vec<u8>| (1u64, Publish::new(&topic, QoS::AtLeastOnce, payload));
        let good = batch(3, false, vec![amount(50.0, 10)]).to_payload();
        let mut unknown_unit = batch(4, false, vec![amount(50.0, 10)]);
        unknown_unit.readings[0].unit = "furlong".into();
        let handled = |seq, payload: &[u8]| Answer::Handled {
            seq,
            digest: zonesync_proto::digest(payload),
        };
        let answers = vec![
            handled(3, &good),
            handled(3, &good),
            handled(4, &unknown_unit.to_payload()),
        ];
        let group = vec![
            publish(good.clone()),
            publish(good),
            publish(unknown_unit.to_payload()),
            publish(b"{\"seq\": tru".to_vec()),
            (
                1,
                Publish::new(Topic::state(&zone(), &agent()), QoS::AtLeastOnce, b"{}".to_vec()),
            ),
        ];
        let (done, confirms, _, failed) = handle_group(&app, group, utc(NOW));
        assert_eq!(done.len(), 5, "everything handled is acknowledged");
        assert!(failed.is_empty());
        let mut expected = Confirms::new();
        expected.insert((zone(), agent(), None), answers);
        assert_eq!(
            confirms, expected,
            "truncated JSON and presence carry no seq to confirm"
        );
    }

    #[test]
    fn backfill_never_replaces_a_newer_live_value() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        let live = batch(10, false, vec![gauge(120.0, "2026-11-23T07:30:00Z"), amount(56.0, 10)]);
        assert_eq!(send(&app, &live), Handled::Stored);
        // Drained after an outage: an older register, a reading stored live at
        // the same instant with another value, and the period figure as it was
        // before the live correction.
        let old = batch(
            4,
            true,
            vec![
                gauge(100.0, "2026-11-23T07:00:00Z"),
                gauge(119.0, "2026-11-23T07:30:00Z"),
                amount(50.0, 10),
            ],
        );
        assert_eq!(send(&app, &old), Handled::Stored);
        let check = |app: &App| {
            let st = app.state.read().expect("state");
            let zs = st.zones.get(&zone()).expect("zone");
            let es = zs.enterprises.get(&ent()).expect("enterprise");
            let latest = es.latest.get(&("electricity".to_owned(), "M1".to_owned())).copied();
            assert_eq!(
                latest,
                Some((zonesync_proto::ReadingTime::Ts(utc("2026-11-23T07:30:00Z")), 120.0))
            );
            assert_eq!(
                es.reported
                    .get("value_added")
                    .and_then(|m| m.get(&Period::Month(2026, 10))),
                Some(&56.0)
            );
            assert_eq!(
                es.points
                    .get(&("electricity".to_owned(), "M1".to_owned()))
                    .and_then(|p| p.last),
                Some(utc("2026-11-23T07:30:00Z"))
            );
            assert_eq!(zs.readings_stored, 3);
        };
        check(&app);
        assert_eq!(app.metrics.readings_backfilled.load(Ordering::Relaxed), 1);
        assert_eq!(app.metrics.backfill_stale.load(Ordering::Relaxed), 2);
        {
            let st = app.state.read().expect("state");
            let a = st
                .zones
                .get(&zone())
                .and_then(|z| z.agents.get(&agent()))
                .expect("agent");
            assert_eq!(a.backfilled_readings, 1);
        }
        app.store.flush().expect("flush");
        drop(app);
        // What was kept is what the store holds.
        check(&open(dir.path()));
    }

    fn outbox(name: &str) -> OutboxId {
        OutboxId::parse(&format!("outbox-{name}")).expect("outbox id")
    }

    fn batch_in(ob: &str, seq: u64, readings: Vec<Reading>) -> Batch {
        Batch {
            outbox: Some(outbox(ob)),
            ..batch(seq, false, readings)
        }
    }

    fn announce(app: &App, ob: &str, next_seq: u64) {
        let p = Presence {
            outbox: Some(outbox(ob)),
            ..presence(1, next_seq, 0)
        };
        say(app, &p, utc(NOW));
    }

    fn dead_labels(app: &App) -> Vec<String> {
        let mut v: Vec<String> = app
            .store
            .dead_letters(100, None)
            .expect("dead letters")
            .into_iter()
            .flat_map(|d| d.labels)
            .collect();
        v.sort();
        v
    }

    fn agent_state(app: &App) -> crate::state::AgentState {
        let st = app.state.read().expect("state");
        st.zones
            .get(&zone())
            .and_then(|z| z.agents.get(&agent()))
            .cloned()
            .expect("agent")
    }

    #[test]
    fn a_forged_seq_at_u64_max_is_refused_and_later_corrections_still_win() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        announce(&app, "a", 5);
        assert_eq!(send(&app, &batch_in("a", 4, vec![amount(20.0, 10)])), Handled::Stored);
        let forged = batch_in("a", u64::MAX, vec![amount(999.0, 10)]);
        assert_eq!(send(&app, &forged), Handled::Refused);
        assert_eq!(october_value_added(&app), Some(20.0));
        assert_eq!(send(&app, &batch_in("a", 5, vec![amount(30.0, 10)])), Handled::Stored);
        assert_eq!(october_value_added(&app), Some(30.0));
        assert_eq!(agent_state(&app).refused_seq_ahead, 1);
        assert_eq!(dead_labels(&app), vec!["seq_ahead".to_owned()]);
        app.store.flush().expect("flush");
        drop(app);
        let app = open(dir.path());
        assert_eq!(october_value_added(&app), Some(30.0));
        // Still refused after a restart, and still no panic.
        assert_eq!(send(&app, &forged), Handled::Refused);
        assert_eq!(send(&app, &batch_in("a", 6, vec![amount(31.0, 10)])), Handled::Stored);
        assert_eq!(october_value_added(&app), Some(31.0));
    }

    #[test]
    fn a_reinstalled_gateway_restates_what_its_fast_clock_outbox_sent() {
        // The first outbox was made while the clock ran years ahead (older
        // agents started their numbers at the clock in µs).
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        let fast = 1_900_000_000_000_000;
        announce(&app, "fast", fast);
        let old = batch_in("fast", fast - 1, vec![amount(50.0, 10)]);
        assert_eq!(send(&app, &old), Handled::Stored);
        // Reinstalled with the right clock: a new outbox numbering from 1.
        announce(&app, "fresh", 1);
        assert_eq!(
            send(&app, &batch_in("fresh", 1, vec![amount(60.0, 10)])),
            Handled::Stored
        );
        assert_eq!(october_value_added(&app), Some(60.0));
        assert_eq!(
            send(&app, &batch_in("fresh", 2, vec![amount(61.0, 10)])),
            Handled::Stored
        );
        // A late redelivery of the old outbox's batch changes nothing.
        assert_eq!(send(&app, &old), Handled::Duplicate);
        assert_eq!(october_value_added(&app), Some(61.0));
        app.store.flush().expect("flush");
        drop(app);
        assert_eq!(october_value_added(&open(dir.path())), Some(61.0));
    }

    #[test]
    fn the_same_mark_with_other_content_is_refused_and_never_confirmed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        announce(&app, "a", 1);
        // A forger holding the agent's credentials numbers ahead of it.
        let forged = batch_in("a", 1, vec![amount(999.0, 10)]);
        assert_eq!(send(&app, &forged), Handled::Stored);
        let topic = Topic::data(&zone(), &agent(), &ent());
        let real = batch_in("a", 1, vec![amount(20.0, 10)]);
        let group = vec![
            (1u64, Publish::new(&topic, QoS::AtLeastOnce, real.to_payload())),
            (1u64, Publish::new(&topic, QoS::AtLeastOnce, forged.to_payload())),
        ];
        let (done, confirms, effects, _) = handle_group(&app, group, utc(NOW));
        assert_eq!(done.len(), 2, "both are handled: acknowledged to the broker");
        let answers = confirms.get(&(zone(), agent(), Some(outbox("a")))).expect("answers");
        assert_eq!(
            answers[0],
            Answer::Refused(Refusal {
                seq: 1,
                digest: zonesync_proto::digest(&real.to_payload()),
                reason: REFUSED_REUSED_SEQ.into()
            }),
            "the real batch is refused, not confirmed: the agent keeps it"
        );
        assert_eq!(
            answers[1],
            Answer::Handled {
                seq: 1,
                digest: zonesync_proto::digest(&forged.to_payload())
            },
            "the forger's redelivery is a duplicate, confirmed with its own digest"
        );
        assert_eq!(dead_labels(&app), vec![REFUSED_REUSED_SEQ.to_owned()]);
        // Nothing moves in memory before the flush that makes it durable.
        assert_eq!(agent_state(&app).refused_reused_seq, 0);
        apply_effects(&app, effects, utc(NOW));
        assert_eq!(agent_state(&app).refused_reused_seq, 1);
        // Someone must look at that gateway: an alert, raised at once.
        let events = crate::alerts::evaluate_once(&app, &Default::default(), utc(NOW)).expect("alerts");
        let raised: Vec<_> = events.iter().filter(|e| e.obs.rule == "batch_identity").collect();
        assert_eq!(raised.len(), 1, "{events:?}");
        assert!(
            raised[0].obs.detail.contains("jy-hitech-gw01"),
            "{}",
            raised[0].obs.detail
        );
        // The agent moves to a fresh outbox and resends: its figure wins.
        announce(&app, "b", 1);
        assert_eq!(send(&app, &batch_in("b", 1, vec![amount(20.0, 10)])), Handled::Stored);
        assert_eq!(october_value_added(&app), Some(20.0));
    }

    #[test]
    fn presence_figures_at_their_limits_overflow_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        for name in ["jy-hitech-gw01", "forged-gw"] {
            let p = Presence {
                agent: AgentId::parse(name).expect("agent"),
                next_seq: u64::MAX,
                clock_offset_ms: Some(i64::MIN),
                ..presence_sent(u64::MAX, u64::MAX, u64::MAX, u64::MAX)
            };
            say(&app, &p, utc(NOW));
        }
        let zone_reg = app.registry.zone(&zone()).expect("zone").clone();
        let st = app.state.read().expect("state");
        let r = crate::quality::report(
            &zone_reg,
            st.zones.get(&zone()),
            Period::Month(2026, 11),
            utc(NOW) + chrono::Duration::days(1),
            &app.catalog,
            &app.quality,
        );
        assert_eq!(r.readings_dropped_at_source, u64::MAX);
        assert_eq!(r.readings_dropped_sent_at_source, u64::MAX);
    }

    #[test]
    fn a_sent_at_beyond_the_skew_limit_is_refused_and_decides_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        assert_eq!(send(&app, &batch(1, false, vec![amount(20.0, 10)])), Handled::Stored);
        let future = Batch {
            sent_at: utc("2099-01-01T00:00:00Z"),
            ..batch(2, false, vec![amount(99.0, 10)])
        };
        assert_eq!(send(&app, &future), Handled::Refused);
        assert_eq!(october_value_added(&app), Some(20.0));
        assert_eq!(dead_labels(&app), vec!["sent_at_future".to_owned()]);
        assert_eq!(send(&app, &batch(3, false, vec![amount(25.0, 10)])), Handled::Stored);
        assert_eq!(october_value_added(&app), Some(25.0));
    }

    fn presence(boot: u64, next_seq: u64, dropped: u64) -> Presence {
        presence_sent(boot, next_seq, dropped, 0)
    }

    fn presence_sent(boot: u64, next_seq: u64, dropped: u64, dropped_sent: u64) -> Presence {
        Presence {
            v: WIRE_VERSION,
            agent: agent(),
            zone: zone(),
            status: PresenceStatus::Online,
            boot,
            at: utc(NOW),
            outbox: None,
            next_seq,
            version: "test".into(),
            enterprises: vec![ent()],
            dropped_readings: dropped,
            dropped_sent_readings: dropped_sent,
            clock_offset_ms: None,
        }
    }

    fn say(app: &App, p: &Presence, at: DateTime<Utc>) {
        let topic = Topic::state(&p.zone, &p.agent);
        assert_eq!(
            handle(app, &topic, &p.to_payload(), at).expect("handled"),
            Handled::Presence
        );
    }

    #[test]
    fn dropped_readings_are_kept_per_agent_and_shown_as_lost() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        say(&app, &presence(1, 1, 7), utc(NOW));
        say(&app, &presence_sent(2, 1, 12, 5), utc(NOW));
        let zone_reg = app.registry.zone(&zone()).expect("zone").clone();
        let report = |app: &App| {
            let st = app.state.read().expect("state");
            crate::quality::report(
                &zone_reg,
                st.zones.get(&zone()),
                Period::Month(2026, 11),
                utc(NOW),
                &app.catalog,
                &app.quality,
            )
        };
        let r = report(&app);
        assert_eq!(r.readings_dropped_at_source, 12);
        assert_eq!(r.readings_dropped_sent_at_source, 5);
        assert_eq!(
            r.agents.iter().map(|a| a.dropped_readings).collect::<Vec<_>>(),
            vec![12]
        );
        let text = {
            let st = app.state.read().expect("state");
            crate::metrics::render_agents(&st)
        };
        assert!(text.contains(
            "zonesync_aggregator_agent_dropped_readings{zone=\"jiyuan-hitech\",agent=\"jy-hitech-gw01\"} 12"
        ));
        assert!(text.contains(
            "zonesync_aggregator_agent_dropped_sent_readings{zone=\"jiyuan-hitech\",agent=\"jy-hitech-gw01\"} 5"
        ));
        app.store.flush().expect("flush");
        drop(app);
        assert_eq!(report(&open(dir.path())).readings_dropped_at_source, 12);
    }

    #[test]
    fn an_agents_measured_clock_offset_is_kept_and_flagged_beyond_the_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        let zone_reg = app.registry.zone(&zone()).expect("zone").clone();
        let liveness = |app: &App| {
            let st = app.state.read().expect("state");
            let r = crate::quality::report(
                &zone_reg,
                st.zones.get(&zone()),
                Period::Month(2026, 11),
                utc(NOW),
                &app.catalog,
                &app.quality,
            );
            let a = &r.agents[0];
            (a.clock_offset_ms, a.clock_off, a.flagged)
        };
        let mut p = presence(1, 1, 0);
        p.clock_offset_ms = Some(1_500);
        say(&app, &p, utc(NOW));
        assert_eq!(liveness(&app), (Some(1_500), false, false));
        // A later presence without a measurement keeps the last one.
        say(&app, &presence(1, 1, 0), utc(NOW));
        assert_eq!(liveness(&app).0, Some(1_500));
        p.clock_offset_ms = Some(-61_000);
        say(&app, &p, utc(NOW));
        assert_eq!(liveness(&app), (Some(-61_000), true, true));
    }

    #[test]
    fn seqs_a_presence_announced_but_never_stored_are_listed_after_the_grace() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = open(dir.path());
        let grace = app.quality.missing_seq_grace_secs;
        let t0 = utc(NOW);
        for seq in [1, 2, 3] {
            assert_eq!(send(&app, &batch(seq, false, vec![])), Handled::Stored);
        }
        // The agent restarts (boot 2) and says it numbered up to 7: 4..=7 are owed.
        say(&app, &presence(2, 8, 0), t0);
        let missing = |app: &App, at: DateTime<Utc>| {
            let st = app.state.read().expect("state");
            st.zones
                .get(&zone())
                .and_then(|z| z.agents.get(&agent()))
                .and_then(|a| a.missing_seqs(at, grace))
        };
        // Within the grace the agent may still be draining its outbox.
        assert_eq!(missing(&app, t0), None);
        let later = t0 + chrono::Duration::seconds(grace);
        assert_eq!(missing(&app, later), Some((4, 7)));
        // 7 arrives: nothing is owed after it, and 4..=6 become an ordinary
        // gap between stored batches, counted once.
        let topic = Topic::data(&zone(), &agent(), &ent());
        let b = Batch {
            boot: 2,
            ..batch(7, false, vec![])
        };
        assert_eq!(
            handle(&app, &topic, &b.to_payload(), later).expect("handled"),
            Handled::Stored
        );
        assert_eq!(missing(&app, later + chrono::Duration::seconds(grace)), None);
        {
            let st = app.state.read().expect("state");
            let a = st
                .zones
                .get(&zone())
                .and_then(|z| z.agents.get(&agent()))
                .expect("agent");
            assert_eq!(a.seq_gaps, 3);
        }
        // A reinstalled outbox (boot back to 1, numbers from the clock) is no gap.
        say(&app, &presence(1, 1_795_443_515_176_888, 0), later);
        assert_eq!(missing(&app, later + chrono::Duration::seconds(2 * grace)), None);
    }
}

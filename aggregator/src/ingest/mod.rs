//! Ingest: MQTT in, validated and de-duplicated facts out to the store and
//! the in-memory state, dead letters for everything refused.
//!
//! The session is persistent (clean_session = false) and acks are manual: a
//! PUBACK goes out only after the batch is durably stored (flush), in arrival
//! order, so neither a crash nor a restart loses a batch the broker handed
//! us. Acks from a previous connection are dropped (their packet ids may
//! mean other messages now); the broker redelivers those and the (agent, outbox, seq)
//! de-duplication makes the redelivery harmless.

mod handle;

use handle::{apply_effects, handle_group, read, Answer, Confirms, Effect, Read};
pub use handle::{handle, Handled};

use crate::config::MqttConfig;
use crate::dead_letters::DeadLetters;
use crate::facts::Ledger;
use crate::goals::incremental::Tallies;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::state::State;
use crate::store::Store;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, Packet, Publish, QoS, SubscribeFilter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use zonesync_proto::{Catalog, Validator, ZoneId};
use zonesync_proto::{Confirm, Topic};
use zonesync_runtime::shutdown::Shutdown;

/// What the ingest task uses, and nothing more: the write side of the
/// aggregator. Made by [`crate::app::App::ingest`]; the goal tables, alerts
/// and the HTTP API read what it writes through the same shared parts.
#[derive(Clone)]
pub struct Ingest {
    /// Zones served: messages for others are dead-lettered.
    pub(crate) zones: Arc<[ZoneId]>,
    /// Payload validation.
    pub(crate) validator: Arc<Validator>,
    /// Who may report for which enterprise.
    pub(crate) registry: Arc<Registry>,
    /// Indicator kinds for the ledger and the read model.
    pub(crate) catalog: Arc<Catalog>,
    /// The batch log.
    pub(crate) store: Arc<Store>,
    /// The facts and their rules; only ingest changes them.
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    /// The read model, moved after each flush.
    pub(crate) state: Arc<RwLock<State>>,
    /// The goal tallies that follow the read model.
    pub(crate) tallies: Arc<Tallies>,
    /// Where refused messages go, with their reasons.
    pub(crate) dead_letters: Arc<DeadLetters>,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
    /// Where a store that cannot be written is reported.
    pub(crate) health: Arc<Health>,
}

/// Largest group of messages stored under one flush.
const GROUP: usize = 512;

/// Messages with the connection generation they arrived on, in arrival order.
type Group = Vec<(u64, Publish)>;

/// Messages as [`Group`], each with what the reading stage made of it.
type ReadGroup = Vec<(u64, Publish, Read)>;

/// Publishes one confirmation per agent and outbox for what the last flush
/// made durable, with the digests held, the refusals, and the highest seq
/// held under that outbox. Every agent gets them; only those asking for
/// end-to-end confirmation subscribe. A confirmation lost on the way only
/// means the agent resends and the batch is confirmed again as a duplicate.
async fn confirm(ing: &Ingest, client: &AsyncClient, confirms: Confirms) {
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
        let highest = ing
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
                ing.metrics.confirms_published.fetch_add(1, Ordering::Relaxed);
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
async fn store_group(ing: &Ingest, group: ReadGroup, shutdown: &mut Shutdown) -> Result<Stored, GroupError> {
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
        let (done, confirms, effects, failed) = handle_group(ing, todo, at);
        out.done.extend(done);
        for (k, v) in confirms {
            out.confirms.entry(k).or_default().extend(v);
        }
        out.effects.extend(effects);
        let flushed = ing.store.flush();
        let error = match (flushed, failed.is_empty()) {
            (Ok(()), true) => return Ok(out),
            (Err(e), _) => e,
            (Ok(()), false) => StoreError::Corrupt(format!("{} messages could not be written", failed.len())),
        };
        ing.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
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
        // Read again: what a message was read as went with the try.
        let now = Utc::now();
        todo = failed
            .into_iter()
            .map(|(g, p)| {
                let r = read(&ing.validator, &p.topic, &p.payload, now);
                (g, p, r)
            })
            .collect();
    }
    Err(GroupError::Shutdown)
}

/// Subscribes to the served zones and ingests until shutdown.
pub async fn run(ing: Ingest, mqtt: MqttConfig, mut shutdown: Shutdown) {
    let alive = ing.health.task("ingest");
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
    let (tx, mut raw) = mpsc::channel::<(u64, Publish)>(4096);
    let (read_tx, mut rx) = mpsc::channel::<(u64, Publish, Read)>(1024);
    let generation = Arc::new(AtomicU64::new(0));
    let filters: Vec<SubscribeFilter> = ing
        .zones
        .iter()
        .flat_map(Topic::zone_filters)
        .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce))
        .collect();

    let poller = {
        let metrics = ing.metrics.clone();
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
                        metrics.mqtt_connected.store(1, Ordering::Relaxed);
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
                        metrics.mqtt_connected.store(0, Ordering::Relaxed);
                        tracing::warn!(delay_ms = backoff.delay().as_millis() as u64, "broker connection: {e}");
                        if !backoff.wait(&mut shutdown).await {
                            break;
                        }
                    }
                }
            }
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
            metrics.mqtt_connected.store(0, Ordering::Relaxed);
        })
    };

    // The reading stage: topic parsing and validation (JSON, digest, units,
    // times), which need no facts, run here on the other core while the
    // loop below handles the messages before. In order, one at a time, so
    // arrival order holds.
    let reader = {
        let validator = ing.validator.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let (g, p) = tokio::select! {
                    _ = shutdown.wait() => break,
                    m = raw.recv() => match m { Some(m) => m, None => break },
                };
                let r = read(&validator, &p.topic, &p.payload, Utc::now());
                if read_tx.send((g, p, r)).await.is_err() {
                    break;
                }
            }
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
        match store_group(&ing, group, &mut shutdown).await {
            Ok(Stored {
                done,
                confirms,
                effects,
                at,
            }) => {
                // Durable: now the state and the counts may move, then the broker
                // and the agents are told.
                apply_effects(&ing, effects, at);
                let current = generation.load(Ordering::SeqCst);
                for (g, p) in done {
                    if g == current && client.ack(&p).await.is_ok() {
                        ing.metrics.acks_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                confirm(&ing, &client, confirms).await;
            }
            Err(GroupError::Shutdown) => break,
            Err(GroupError::Store(e)) => {
                // Nothing of the group was acknowledged: the broker keeps it
                // (persistent session) and hands it to the restarted process.
                ing.health.fail(format!(
                    "store {} cannot be written after {STORE_TRIES} tries ({e}); the process ends so that systemd restarts it",
                    ing.store.path().display()
                ));
                break;
            }
        }
    }
    if let Err(e) = ing.store.flush() {
        tracing::error!("final flush failed: {e}");
    }
    let _ = poller.await;
    let _ = reader.await;
    if shutdown.is_triggered() {
        alive.finished();
    }
}

#[cfg(test)]
mod tests;

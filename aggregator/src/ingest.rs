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
use crate::store::{DeadLetter, Outcome, StoreError};
use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeFilter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use zonesync_agent::shutdown::Shutdown;
use zonesync_proto::{Presence, Problem, Topic, TopicKind};

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

/// Handles one message: validate, admit, store, update state; or dead-letter.
/// Writes are not flushed here; the caller flushes before acknowledging.
pub fn handle(app: &App, topic: &str, payload: &[u8], now: DateTime<Utc>) -> Result<Handled, StoreError> {
    app.metrics.messages_received.fetch_add(1, Ordering::Relaxed);
    let t = match Topic::parse_with_test_prefix(topic, app.validator.limits.test_prefix.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            app.store
                .dead_letter(dead(app, topic, payload, now, vec![(e.to_string(), "bad_topic")]))?;
            return Ok(Handled::DeadLettered);
        }
    };
    if !app.zones.contains(&t.zone) {
        let why = format!("zone {} is not served by this aggregator", t.zone);
        app.store
            .dead_letter(dead(app, topic, payload, now, vec![(why, "unknown_zone")]))?;
        return Ok(Handled::DeadLettered);
    }
    if t.kind == TopicKind::State {
        return match serde_json::from_slice::<Presence>(payload) {
            Ok(p) if p.zone == t.zone && p.agent == t.agent => {
                app.store.put_presence(&p)?;
                if let Ok(mut st) = app.state.write() {
                    st.apply_presence(&p, now);
                }
                app.metrics.presence_received.fetch_add(1, Ordering::Relaxed);
                Ok(Handled::Presence)
            }
            Ok(p) => {
                let why = format!("presence names {}/{} but came on {topic}", p.zone, p.agent);
                app.store
                    .dead_letter(dead(app, topic, payload, now, vec![(why, "topic_mismatch")]))?;
                Ok(Handled::DeadLettered)
            }
            Err(e) => {
                let why = format!("presence message is not valid: {e}");
                app.store
                    .dead_letter(dead(app, topic, payload, now, vec![(why, "bad_presence")]))?;
                Ok(Handled::DeadLettered)
            }
        };
    }
    let mut acc = match app.validator.batch(Some(&t), payload, now) {
        Ok(a) => a,
        Err(ps) => {
            app.store.dead_letter(dead(app, topic, payload, now, problems(&ps)))?;
            return Ok(Handled::DeadLettered);
        }
    };
    if let Err(refusal) = app.registry.admit(&acc.zone, &acc.agent, &acc.enterprise) {
        let mut d = dead(app, topic, payload, now, vec![(refusal.to_string(), refusal.label())]);
        d.seq = Some(acc.seq);
        app.store.dead_letter(d)?;
        return Ok(Handled::DeadLettered);
    }
    match app.store.apply(&mut acc)? {
        Outcome::Duplicate => {
            app.metrics.batches_duplicate.fetch_add(1, Ordering::Relaxed);
            Ok(Handled::Duplicate)
        }
        Outcome::Stored { duplicate_readings } => {
            // `acc.readings` now holds only the readings new to the store.
            let fresh = &acc.readings;
            let m = &app.metrics;
            m.batches_stored.fetch_add(1, Ordering::Relaxed);
            m.readings_stored.fetch_add(fresh.len() as u64, Ordering::Relaxed);
            m.readings_duplicate
                .fetch_add(duplicate_readings as u64, Ordering::Relaxed);
            m.declarations_stored
                .fetch_add(acc.declarations.len() as u64, Ordering::Relaxed);
            if let Ok(mut st) = app.state.write() {
                st.apply(&acc.zone, &acc.enterprise, fresh, &acc.declarations, &app.catalog);
                st.note_batch(&acc.zone, &acc.agent, acc.boot, acc.seq, acc.sent_at, now);
            }
            if !acc.refused.is_empty() {
                let mut d = dead(app, topic, payload, now, problems(&acc.refused));
                d.seq = Some(acc.seq);
                d.whole_batch = false;
                app.store.dead_letter(d)?;
            }
            Ok(Handled::Stored)
        }
    }
}

/// Handles a group of messages in arrival order; returns those handled
/// (stored, refused or recognised as duplicates), which may be acknowledged
/// once flushed. A message the store failed on is left out, so never acknowledged.
fn handle_group(app: &App, group: Group) -> Group {
    let now = Utc::now();
    let mut done = Vec::with_capacity(group.len());
    for (g, p) in group {
        match handle(app, &p.topic, &p.payload, now) {
            Ok(_) => done.push((g, p)),
            Err(e) => {
                app.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(topic = %p.topic, "not stored, not acknowledged: {e}");
            }
        }
    }
    done
}

/// Subscribes to the served zones and ingests until shutdown.
pub async fn run(app: Arc<App>, mqtt: MqttConfig, mut shutdown: Shutdown) {
    let mut opts = MqttOptions::new(mqtt.client_id.clone(), mqtt.host.clone(), mqtt.port);
    match zonesync_agent::tls::transport(mqtt.tls.as_ref()) {
        Ok(t) => {
            opts.set_transport(t);
        }
        Err(e) => {
            // Without a usable TLS setting there is nothing to connect with; say so and stop ingest.
            tracing::error!("MQTT TLS settings: {e}; ingest is not started");
            return;
        }
    }
    opts.set_keep_alive(Duration::from_secs(mqtt.keep_alive_secs.max(5)));
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    opts.set_max_packet_size(mqtt.max_packet_bytes, 64 * 1024);
    if let (Some(u), Some(p)) = (&mqtt.username, &mqtt.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
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
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let ev = tokio::select! {
                    _ = shutdown.wait() => break,
                    ev = events.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        let g = generation.fetch_add(1, Ordering::SeqCst) + 1;
                        app.metrics.mqtt_connected.store(1, Ordering::Relaxed);
                        backoff = Duration::from_millis(200);
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
                        tracing::warn!(delay_ms = backoff.as_millis() as u64, "broker connection: {e}");
                        tokio::select! {
                            _ = shutdown.wait() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
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
        let done = handle_group(&app, group);
        if let Err(e) = app.store.flush() {
            app.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("flush failed, {} messages left unacknowledged: {e}", done.len());
            continue;
        }
        let current = generation.load(Ordering::SeqCst);
        for (g, p) in done {
            if g == current && client.ack(&p).await.is_ok() {
                app.metrics.acks_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Err(e) = app.store.flush() {
        tracing::error!("final flush failed: {e}");
    }
    let _ = poller.await;
}

//! The zone side's task: whenever a served zone's data version moves (and
//! now and then when it does not), take its tallies and publish them to the
//! zone stream on its own leaf node, which JetStream sources to the hub,
//! and/or signed and retained on the zone's MQTT broker, which a bridge
//! carries to the center's (`super::signed`). With both, a snapshot is sent
//! to NATS first, then to MQTT; one that is down holds the other back, and
//! loses nothing, since every snapshot is whole.
//!
//! Publishing is idempotent: each message carries `Nats-Msg-Id`
//! `<zone>:<epoch>:<version>:<published_at>`, kept across retries of the same
//! snapshot, so a publish whose ack was lost and is sent again is stored
//! once. A failed publish is retried with backoff until it is acknowledged
//! or a newer snapshot replaces it; while the leaf node is down nothing is
//! lost but time, since every snapshot is whole.

use super::config::FederationConfig;
use super::nats::{connect, context, ensure_stream, zone_stream, NatsError};
use super::signed::{seal, topic as mqtt_topic, KeyError, ZoneKey};
use super::snapshot::{cells_for, message, take};
use super::wire::{subject, ZoneTallies};
use crate::goals::incremental::Tallies;
use crate::goals::{GoalDef, GoalSettings};
use crate::outbound::publisher::Publisher;
use crate::state::State;
use async_nats::jetstream::message::PublishMessage;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use zonesync_proto::ZoneId;
use zonesync_runtime::shutdown::Shutdown;

/// What the publisher reads: the zones' state and tallies, and the goals.
#[derive(Clone)]
pub struct Sources {
    /// Zones served (one message each).
    pub zones: Vec<ZoneId>,
    /// The read model (versions).
    pub state: Arc<RwLock<State>>,
    /// The zones' goal tallies.
    pub tallies: Arc<Tallies>,
    /// The goal catalog.
    pub goals: Arc<[GoalDef]>,
    /// Goal settings.
    pub settings: GoalSettings,
    /// The zone store's epoch (`super::epoch`).
    pub epoch: u64,
}

/// The publisher's counts (`/metrics`, tests).
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Snapshots acknowledged by the zone stream.
    pub published: AtomicU64,
    /// Of those, the stream said it already held (a duplicate id).
    pub duplicates: AtomicU64,
    /// Publish attempts that failed (then retried).
    pub failed: AtomicU64,
    /// Snapshots the zone's MQTT broker acknowledged (the MQTT path).
    pub mqtt_published: AtomicU64,
}

/// Per zone: the version last published, when, and when its data reached it.
struct Sent {
    version: u64,
    at: Instant,
    data_at: DateTime<Utc>,
}

/// Why the publisher stopped (it then ends the aggregator, as any task that stops early does).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("federation.mqtt: {0}")]
    Key(#[from] KeyError),
    #[error("[federation] has neither `nats` nor `[federation.mqtt]`: nowhere to publish")]
    Nowhere,
}

/// The MQTT path: the aggregator's own broker, the topic prefix and the zone's key.
struct MqttSink {
    publisher: Publisher,
    prefix: String,
    key: ZoneKey,
}

/// Connects to the leaf node and makes sure the zone stream exists (when
/// `nats` is set), loads the signing key (when `mqtt` is), then publishes
/// until shutdown. `broker` is the aggregator's MQTT publisher, used by the MQTT path.
pub async fn run(
    cfg: FederationConfig,
    src: Sources,
    broker: Publisher,
    stats: Arc<PublishStats>,
    mut shutdown: Shutdown,
) -> Result<(), PublishError> {
    let mqtt = match &cfg.mqtt {
        Some(m) => Some(MqttSink {
            publisher: broker,
            prefix: m.topic_prefix.clone(),
            key: ZoneKey::load(&m.key_file)?,
        }),
        None => None,
    };
    let js = match &cfg.nats {
        Some(nats) => match zone_stream_ready(&cfg, nats, &src, &mut shutdown).await? {
            Some(js) => Some(js),
            None => return Ok(()),
        },
        None if mqtt.is_none() => return Err(PublishError::Nowhere),
        None => None,
    };
    let mut sent: HashMap<ZoneId, Sent> = HashMap::new();
    let interval = Duration::from_millis(cfg.interval_ms.max(20));
    let heartbeat = Duration::from_millis(cfg.heartbeat_ms.max(100));
    loop {
        for zone in &src.zones {
            let version = match src.state.read() {
                Ok(st) => st.zones.get(zone).map_or(0, |z| z.version),
                Err(_) => return Ok(()),
            };
            let now = Utc::now();
            let Some(data_at) = due(sent.get(zone), version, heartbeat, Instant::now(), now) else {
                continue;
            };
            let asks = match cfg.asks(now) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "federation periods or spans are not valid; nothing published");
                    return Ok(());
                }
            };
            let (src2, zone2) = (src.clone(), zone.clone());
            // Building a span's tallies the first time is a scan: off the async workers.
            let built = tokio::task::spawn_blocking(move || snapshot(&src2, &zone2, &asks, data_at, now)).await;
            let Ok(Some(msg)) = built else { continue };
            let version = msg.version;
            if let Some(js) = &js {
                if !publish(js, &msg, &stats, &mut shutdown).await {
                    return Ok(());
                }
            }
            if let Some(m) = &mqtt {
                if !publish_mqtt(m, &msg, &stats, &mut shutdown).await {
                    return Ok(());
                }
            }
            sent.insert(
                zone.clone(),
                Sent {
                    version,
                    at: Instant::now(),
                    data_at,
                },
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return Ok(()),
        }
    }
}

/// JetStream on the zone's leaf node, its zone stream made; None if shut down first.
async fn zone_stream_ready(
    cfg: &FederationConfig,
    nats: &super::config::NatsConnect,
    src: &Sources,
    shutdown: &mut Shutdown,
) -> Result<Option<async_nats::jetstream::Context>, NatsError> {
    let client = tokio::select! {
        c = connect(nats, "zonesync-zone-publisher") => c?,
        _ = shutdown.wait() => return Ok(None),
    };
    let js = context(client, cfg.domain.as_deref());
    let mut backoff = Duration::from_millis(200);
    // The leaf node may still be electing its JetStream: retry until it answers.
    loop {
        match ensure_stream(&js, zone_stream(cfg, &src.zones)).await {
            Ok(()) => return Ok(Some(js)),
            Err(e) => {
                tracing::warn!(error = %e, "zone stream not ready; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait() => return Ok(None),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Publishes `msg` signed and retained at QoS 1 until the broker
/// acknowledges it; false if shut down first. The retained message is the
/// zone's latest snapshot for a center subscribing later, or after a restart.
async fn publish_mqtt(m: &MqttSink, msg: &ZoneTallies, stats: &PublishStats, shutdown: &mut Shutdown) -> bool {
    let payload = match seal(msg, &m.key) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, zone = %msg.zone, "tallies could not be encoded");
            return true;
        }
    };
    let topic = mqtt_topic(&m.prefix, &msg.zone);
    let mut backoff = Duration::from_millis(200);
    loop {
        let acked = tokio::select! {
            a = m.publisher.publish(topic.clone(), payload.clone(), true, Duration::from_secs(10)) => a,
            _ = shutdown.wait() => return false,
        };
        if acked {
            stats.mqtt_published.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(zone = %msg.zone, version = msg.version, %topic, "tallies published over MQTT");
            return true;
        }
        stats.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(zone = %msg.zone, version = msg.version, %topic, "publishing tallies over MQTT failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait() => return false,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Whether a zone at `version` is due a message, given what was last sent
/// for it: when it has never been sent, its version moved, or `heartbeat`
/// passed. The data time it carries is when the version was first seen here,
/// so a heartbeat repeats it rather than making old data look new.
fn due(
    sent: Option<&Sent>,
    version: u64,
    heartbeat: Duration,
    now: Instant,
    utc: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match sent {
        None => Some(utc),
        Some(s) if s.version != version => Some(utc),
        Some(s) if now.saturating_duration_since(s.at) >= heartbeat => Some(s.data_at),
        Some(_) => None,
    }
}

fn snapshot(
    src: &Sources,
    zone: &ZoneId,
    asks: &[crate::goals::Asked],
    data_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<ZoneTallies> {
    let cells = cells_for(&src.goals, asks, &src.settings);
    let st = src.state.read().ok()?;
    let taken = take(&st, &src.tallies, zone, &cells)?;
    drop(st);
    Some(message(
        zone,
        src.epoch,
        taken,
        &src.goals,
        &cells,
        &src.settings,
        data_at,
        now,
    ))
}

/// Publishes `msg` until the zone stream acknowledges it; false if shut down first.
async fn publish(
    js: &async_nats::jetstream::Context,
    msg: &ZoneTallies,
    stats: &PublishStats,
    shutdown: &mut Shutdown,
) -> bool {
    let payload = match serde_json::to_vec(msg) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, zone = %msg.zone, "tallies could not be encoded");
            return true;
        }
    };
    let id = format!(
        "{}:{}:{}:{}",
        msg.zone,
        msg.epoch,
        msg.version,
        msg.published_at.timestamp_millis()
    );
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            let ack = js
                .send_publish(
                    subject(&msg.zone),
                    PublishMessage::build()
                        .payload(payload.clone().into())
                        .message_id(id.as_str()),
                )
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        let outcome = tokio::select! {
            r = attempt => r,
            _ = shutdown.wait() => return false,
        };
        match outcome {
            Ok(ack) => {
                stats.published.fetch_add(1, Ordering::Relaxed);
                if ack.duplicate {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(zone = %msg.zone, version = msg.version, seq = ack.sequence, "tallies published");
                return true;
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(zone = %msg.zone, version = msg.version, error = %e, "publishing tallies failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait() => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_is_due_on_a_new_version_or_a_heartbeat_which_keeps_the_data_time() {
        let hb = Duration::from_secs(30);
        let t0 = Instant::now();
        let at = |s: i64| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(s);
        assert_eq!(due(None, 0, hb, t0, at(100)), Some(at(100)), "first message");
        let sent = Sent {
            version: 7,
            at: t0,
            data_at: at(100),
        };
        assert_eq!(due(Some(&sent), 7, hb, t0 + Duration::from_secs(29), at(129)), None);
        assert_eq!(
            due(Some(&sent), 7, hb, t0 + hb, at(130)),
            Some(at(100)),
            "a heartbeat carries the version's own data time"
        );
        assert_eq!(
            due(Some(&sent), 8, hb, t0 + Duration::from_secs(1), at(101)),
            Some(at(101))
        );
    }
}

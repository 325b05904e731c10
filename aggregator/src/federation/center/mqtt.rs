//! Feeding the center from its MQTT broker, for shops that run Mosquitto or
//! EMQX only: each zone's broker bridges `<prefix>/<zone>/tallies` to the
//! center's broker, where the zone's latest snapshot sits retained.
//!
//! On (re)connecting the center subscribes to `<prefix>/+/tallies` and the
//! broker hands it every zone's retained snapshot: that is its rebuild (the
//! center keeps nothing on disk). After that it takes what arrives live.
//! Each message is opened with its zone's key (`crate::federation::signed`)
//! before the merge sees it; the merge's version and epoch rules then make a
//! replay, a duplicate or an old snapshot change nothing, as on NATS.

use super::consume::{count, ConsumeStats};
use super::merge::{Arrival, Merge};
use crate::federation::config::CenterMqtt;
use crate::federation::signed::{open, topic_zone, ZoneKey};
use chrono::Utc;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use zonesync_proto::ZoneId;
use zonesync_runtime::shutdown::Shutdown;

/// Largest packet the center sends (subscriptions only).
const MAX_OUTGOING: usize = 64 * 1024;

/// Offers one MQTT message to the merge: opened with its zone's key, then
/// taken as the tallies of the zone its topic names. `retained` messages
/// are the broker's stored snapshots (a rebuild), the rest arrived live.
pub fn take(
    merge: &Mutex<Merge>,
    keys: &BTreeMap<ZoneId, ZoneKey>,
    stats: &ConsumeStats,
    prefix: &str,
    topic: &str,
    payload: &[u8],
    retained: bool,
) {
    stats.consumed.fetch_add(1, Ordering::Relaxed);
    if retained {
        stats.rebuilt.fetch_add(1, Ordering::Relaxed);
    }
    let Ok(mut m) = merge.lock() else { return };
    let Some(zone) = topic_zone(prefix, topic) else {
        tracing::warn!(topic, "not a tally topic; refused");
        m.refuse_unopened("wrong_subject", None);
        stats.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let msg = match open(payload, keys, |z| m.is_registered(z)) {
        Ok(msg) => msg,
        Err(why) => {
            tracing::warn!(topic, reason = why.label(), error = %why, "tally message refused");
            m.refuse_unopened(why.label(), why.zone());
            stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let now = Utc::now();
    let arrival = if retained {
        Arrival::Rebuild(now)
    } else {
        Arrival::Live(now)
    };
    let outcome = m.offer(Some(&zone), msg, arrival);
    count(stats, topic, &outcome);
}

/// Subscribes to every zone's tally topic and feeds the merge until shutdown,
/// reconnecting (and so re-reading the retained snapshots) after any failure.
pub async fn run(
    cfg: CenterMqtt,
    keys: BTreeMap<ZoneId, ZoneKey>,
    merge: Arc<Mutex<Merge>>,
    stats: Arc<ConsumeStats>,
    mut shutdown: Shutdown,
) {
    let filter = format!("{}/+/tallies", cfg.topic_prefix.trim_end_matches('/'));
    let settings = cfg.broker.connect_settings(cfg.broker.client_id.clone(), MAX_OUTGOING);
    let mut backoff = cfg.broker.backoff();
    loop {
        let options = match settings.options() {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "center MQTT TLS settings; the MQTT source is off");
                return;
            }
        };
        let (client, mut events) = AsyncClient::new(options, 64);
        loop {
            let ev = tokio::select! {
                ev = events.poll() => ev,
                _ = shutdown.wait() => {
                    let _ = client.try_disconnect();
                    return;
                }
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, "subscribing to the tally topics failed");
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    tracing::info!(%filter, "center subscribed; retained snapshots follow");
                    stats.ready.store(true, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    take(&merge, &keys, &stats, &cfg.topic_prefix, &p.topic, &p.payload, p.retain);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, host = %cfg.broker.host, port = cfg.broker.port, "center MQTT connection failed; reconnecting");
                    break;
                }
            }
        }
        if !backoff.wait(&mut shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::signed::seal;

    #[test]
    fn forged_unsigned_and_foreign_messages_are_refused_and_counted_by_zone() {
        let zone = |id: &str| {
            let reg = crate::registry::Registry::from_toml(
                &format!("[[zone]]\nid = \"{id}\"\nname_zh = \"z\"\ncity = \"济源\"\n"),
                "r.toml",
            )
            .unwrap();
            let z = reg.zones().next().unwrap().clone();
            z
        };
        let goals: Arc<[crate::goals::GoalDef]> = Vec::new().into();
        let merge = Mutex::new(Merge::new(
            [zone("jy-a"), zone("jy-b")],
            goals,
            crate::goals::GoalSettings::default(),
        ));
        let a = ZoneId::parse("jy-a").unwrap();
        let keys: BTreeMap<ZoneId, ZoneKey> = [(a.clone(), ZoneKey::new(b"jy-a-secret-0123456"))].into();
        let stats = ConsumeStats::default();
        let msg = crate::federation::wire::ZoneTallies {
            schema: crate::federation::wire::SCHEMA,
            zone: a.clone(),
            epoch: 1,
            version: 1,
            data_at: Utc::now(),
            published_at: Utc::now(),
            settings: crate::goals::GoalSettings::default(),
            cells: vec![],
        };
        let t = "zonesync/federation/jy-a/tallies";
        let p = "zonesync/federation";
        // Good: taken (no cells, so it changes nothing, but is not refused).
        take(&merge, &keys, &stats, p, t, &seal(&msg, &keys[&a]).unwrap(), false);
        assert_eq!(stats.refused.load(Ordering::Relaxed), 0);
        // Signed with another secret: refused against jy-a.
        let forged = seal(&msg, &ZoneKey::new(b"not-jy-a-secret-xyz")).unwrap();
        take(&merge, &keys, &stats, p, t, &forged, false);
        // Bare tallies, and jy-a's good message on jy-b's topic.
        take(&merge, &keys, &stats, p, t, &serde_json::to_vec(&msg).unwrap(), false);
        let good = seal(&msg, &keys[&a]).unwrap();
        take(
            &merge,
            &keys,
            &stats,
            p,
            "zonesync/federation/jy-b/tallies",
            &good,
            true,
        );
        let m = merge.lock().unwrap();
        assert_eq!(stats.refused.load(Ordering::Relaxed), 3);
        assert_eq!(m.refused.get("bad_signature"), Some(&1));
        assert_eq!(m.refused.get("unsigned"), Some(&1));
        assert_eq!(m.refused.get("wrong_subject"), Some(&1));
        assert_eq!(
            m.held(&a).map(|h| h.refused),
            Some(2),
            "the forgery and the misplaced one name jy-a"
        );
        assert_eq!(stats.consumed.load(Ordering::Relaxed), 4);
        assert_eq!(stats.rebuilt.load(Ordering::Relaxed), 1);
    }
}

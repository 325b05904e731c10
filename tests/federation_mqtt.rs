//! Federation over MQTT only (issue 18, item 3): for shops that run
//! Mosquitto or EMQX and no NATS. Three zone aggregators, each on its own
//! Mosquitto, publish their tallies signed and retained; each zone broker is
//! joined to the center's Mosquitto by a `connection` bridge; the center
//! subscribes there. Against the oracle (one aggregator holding every zone,
//! fed the same batches) its city and province tables must be equal field
//! by field; forged messages — signed with a wrong key, unsigned, and a
//! zone's genuine tallies on another zone's topic — are refused, counted
//! and change nothing; after a SIGKILL the center rebuilds from the
//! retained snapshots alone (the zones' heartbeats are far apart).

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::time::{Duration, Instant};
use zonesync_aggregator::federation::signed::{seal, Signed, ZoneKey};
use zonesync_aggregator::federation::wire::ZoneTallies;
use zonesync_e2e::federation::{
    aggregator_config, compare, feed_round, print_and_assert, registry, spawn_center, until_equal, WAIT, ZONES,
};
use zonesync_e2e::hostile::{publish, Msg};
use zonesync_e2e::{Api, Mosquitto, Proc};

const PREFIX: &str = "zonesync/federation";

fn secret(zone: &str) -> String {
    format!("{zone}-secret-of-the-zone-0123456789")
}

/// The retained message on `topic` at the broker on `port`.
async fn retained(port: u16, topic: &str) -> Vec<u8> {
    let mut o = MqttOptions::new(format!("peek-{}", std::process::id()), "127.0.0.1", port);
    o.set_max_packet_size(16 << 20, 1 << 16);
    let (client, mut events) = AsyncClient::new(o, 16);
    client.subscribe(topic, QoS::AtLeastOnce).await.expect("subscribe");
    let deadline = Instant::now() + WAIT;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.poll()).await;
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) = ev {
            let _ = client.disconnect().await;
            return p.payload.to_vec();
        }
        assert!(Instant::now() < deadline, "no retained message on {topic}");
    }
}

/// The tallies inside a signed message.
fn tallies_of(payload: &[u8]) -> ZoneTallies {
    let env: Signed = serde_json::from_slice(payload).expect("a signed message");
    serde_json::from_str(&env.tallies).expect("tallies")
}

async fn status(center: &Api) -> serde_json::Value {
    center.get("/api/v1/center/status").await
}

fn center_config(d: &Path, reg: &Path, port: u16) -> std::path::PathBuf {
    let keys: String = ZONES
        .iter()
        .map(|(z, _)| format!("{z} = \"{}\"\n", d.join(format!("keys/{z}.key")).display()))
        .collect();
    let p = d.join("center.toml");
    std::fs::write(
        &p,
        format!(
            "registry = \"{}\"\nstale_after_s = 600\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\ntopic_prefix = \"{PREFIX}\"\n[mqtt.keys]\n{keys}[mqtt.broker]\nport = {port}\nclient_id = \"zonesync-center\"\n",
            reg.display()
        ),
    )
    .expect("center config");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_center_over_mosquitto_bridges_equals_the_oracle_and_refuses_forgeries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let reg = d.join("registry.toml");
    std::fs::write(&reg, registry()).expect("registry");
    std::fs::create_dir_all(d.join("keys")).expect("keys dir");
    for (z, _) in ZONES {
        std::fs::write(d.join(format!("keys/{z}.key")), secret(z)).expect("key");
    }
    let mk = |name: &str| {
        let p = d.join(name);
        std::fs::create_dir_all(&p).expect("dir");
        p
    };

    let center_mq = Mosquitto::start(&mk("center-mq"));
    let oracle_mq = Mosquitto::start(&mk("oracle-mq"));
    let (_oracle, oracle) = zonesync_e2e::spawn_aggregator(&aggregator_config(d, "oracle", oracle_mq.port, &reg, ""));

    // Each zone: its Mosquitto bridged to the center's, and its aggregator
    // publishing signed, retained tallies there. Heartbeats ten minutes
    // apart: after the center's restart only the retained snapshots can
    // make its tables whole again.
    let mut zones: Vec<(Mosquitto, Proc, u64)> = Vec::new();
    for (id, _) in ZONES {
        let zd = mk(id);
        let broker = Mosquitto::start_bridged(
            &zd,
            &format!("bridge-{id}"),
            center_mq.port,
            &format!("{PREFIX}/# out 1"),
        );
        let extra = format!(
            "zones = [\"{id}\"]\n[federation]\nperiods = [\"2026-10\"]\nspans = [\"basis\", \"month\"]\ninterval_ms = 100\nheartbeat_ms = 600000\n[federation.mqtt]\ntopic_prefix = \"{PREFIX}\"\nkey_file = \"{}\"\n",
            d.join(format!("keys/{id}.key")).display()
        );
        let (aggregator, _) = zonesync_e2e::spawn_aggregator(&aggregator_config(&zd, id, broker.port, &reg, &extra));
        zones.push((broker, aggregator, 1));
    }
    let center_cfg = center_config(d, &reg, center_mq.port);
    let (mut center_proc, mut center) = spawn_center(&center_cfg);

    let mut batches_sent = 0;
    for round in 0..2 {
        for (zi, (id, _)) in ZONES.iter().enumerate() {
            let (broker, _, seq) = &mut zones[zi];
            batches_sent += feed_round(broker.port, oracle_mq.port, zi, id, seq, round).await;
        }
    }
    println!("batches: {batches_sent} to the zones, the same to the oracle");
    print_and_assert("fed over the bridges", &until_equal(&center, &oracle).await);

    // Forgeries. 1: jy-a's snapshot, a far higher version and other
    // figures, signed with a key that is not jy-a's, straight on the
    // center's broker. 2: the same tallies bare, unsigned. 3: py-a's genuine,
    // well-signed snapshot on jy-a's topic, through py-a's own bridged broker.
    let real = tallies_of(&retained(center_mq.port, &format!("{PREFIX}/jy-a/tallies")).await);
    let mut forged = real.clone();
    forged.version += 1000;
    forged.cells[0].tally.in_scope += 999;
    let wrong_key = seal(&forged, &ZoneKey::new(b"a-key-that-is-not-jy-a-s")).expect("seal");
    let bare = serde_json::to_vec(&forged).expect("json");
    let py_a = retained(center_mq.port, &format!("{PREFIX}/py-a/tallies")).await;
    let on = |payload: Vec<u8>| Msg {
        topic: format!("{PREFIX}/jy-a/tallies"),
        payload,
        retain: false,
    };
    publish(center_mq.port, vec![on(wrong_key), on(bare)]).await;
    publish(zones[2].0.port, vec![on(py_a)]).await;
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        let s = status(&center).await;
        if s["refused"].as_u64() == Some(3) {
            break s["refused_by_reason"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the forgeries were not all refused: {}",
            s["refused_by_reason"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("forgeries refused: {refused}");
    assert_eq!(refused["bad_signature"], 1);
    assert_eq!(refused["unsigned"], 1);
    assert_eq!(refused["wrong_subject"], 1);
    print_and_assert("forgeries refused", &compare(&center, &oracle).await);
    let before_kill = status(&center).await;

    // SIGKILL the center and start it again: the retained snapshots rebuild it.
    center_proc.kill9();
    (center_proc, center) = spawn_center(&center_cfg);
    let deadline = Instant::now() + WAIT;
    while status(&center).await["rebuilt"].as_u64().unwrap_or(0) < ZONES.len() as u64 {
        assert!(Instant::now() < deadline, "the retained snapshots never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rebuilt = status(&center).await;
    print_and_assert(
        "center SIGKILLed, rebuilt from retained",
        &compare(&center, &oracle).await,
    );

    // A round more, live after the restart.
    for (zi, (id, _)) in ZONES.iter().enumerate() {
        let (broker, _, seq) = &mut zones[zi];
        batches_sent += feed_round(broker.port, oracle_mq.port, zi, id, seq, 2).await;
    }
    print_and_assert("fed after the restart", &until_equal(&center, &oracle).await);
    let after = status(&center).await;
    let max_lag = after["zones"].as_array().map_or(0, |zs| {
        zs.iter().filter_map(|z| z["max_lag_ms"].as_i64()).max().unwrap_or(0)
    });
    println!(
        "figures: batches {batches_sent}; before the kill consumed {} (applied {}, unchanged {}, refused {}); \
         after: rebuilt {} retained, consumed {} (applied {}, unchanged {}, refused {}); max lag after the restart {max_lag} ms",
        before_kill["consumed"],
        before_kill["applied"],
        before_kill["unchanged"],
        before_kill["refused"],
        rebuilt["rebuilt"],
        after["consumed"],
        after["applied"],
        after["unchanged"],
        after["refused"],
    );
    center_proc.kill9();
}

//! Federation end to end (issue 18): three zone aggregators (each with its
//! own Mosquitto, store and NATS leaf node in its own JetStream domain), a
//! hub whose stream sources every zone stream, and a center reading the hub
//! stream on a 3-node hub (replicas 3, one node SIGKILLed midway) — against the oracle, one aggregator holding every zone's data,
//! fed the very same batches. The center's city and province tables must
//! equal the oracle's field by field; still after the center is SIGKILLed
//! and restarted (it rebuilds from the stream); and after one zone's leaf
//! link is cut (the center shows it stale meanwhile, with its last figures)
//! and healed. A forged message, another zone's tallies on jy-a's subject,
//! is refused and counted; jy-a's own hub credentials publishing on py-a's
//! subject (or listening to every zone's) get the hub's permission
//! violation, read from the server, and the tables do not move. The figures
//! are printed.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::{Duration, Instant};
use zonesync_e2e::federation::{
    aggregator_config, compare, feed_round, last_seq, print_and_assert, registry, spawn_center, standing, until_equal,
    TABLES, WAIT, ZONES,
};
use zonesync_e2e::nats::{hub_client, password, NatsServer};
use zonesync_e2e::proxy::Proxy;
use zonesync_e2e::{Api, Mosquitto, Proc};

/// One zone: its broker, leaf node (linked to the hub through a proxy), aggregator.
struct Zone {
    id: &'static str,
    mosquitto: Mosquitto,
    link: Proxy,
    leaf: NatsServer,
    aggregator: Proc,
    config: std::path::PathBuf,
    api: Api,
    next_seq: u64,
}

/// Publishes zone `zi`'s round to its own broker and to the oracle's.
async fn feed(zones: &mut [Zone], zi: usize, oracle_port: u16, round: u32) -> u64 {
    let z = &mut zones[zi];
    feed_round(z.mosquitto.port, oracle_port, zi, z.id, &mut z.next_seq, round).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_center_equals_one_aggregator_holding_every_zone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let reg = d.join("registry.toml");
    std::fs::write(&reg, registry()).expect("registry");

    // A 3-node hub; leaf nodes and the center all talk to hub-1, and hub-3
    // is SIGKILLed midway: the hub stream (replicas 3) goes on with two.
    let mut hubs = NatsServer::hub_cluster(&d.join("hub"), &ZONES.map(|(z, _)| z), 3);
    let hub_leaf = hubs[0].leaf_port.expect("hub leaf port");
    let hub_url = hubs[0].url();

    // The oracle: one aggregator serving every zone, on its own broker.
    let oracle_mq = Mosquitto::start(&{
        let p = d.join("oracle-mq");
        std::fs::create_dir_all(&p).expect("dir");
        p
    });
    let (_oracle, oracle) = zonesync_e2e::spawn_aggregator(&aggregator_config(d, "oracle", oracle_mq.port, &reg, ""));

    let mut zones = Vec::new();
    for (id, _) in ZONES {
        let zd = d.join(id);
        std::fs::create_dir_all(&zd).expect("zone dir");
        let mosquitto = Mosquitto::start(&zd);
        let link = Proxy::start(hub_leaf).await;
        let leaf = NatsServer::leaf(&zd.join("leaf"), &format!("zone-{id}"), id, link.port);
        let extra = format!(
            "zones = [\"{id}\"]\n[federation]\nnats = {{ url = \"{}\" }}\ndomain = \"zone-{id}\"\nperiods = [\"2026-10\"]\nspans = [\"basis\", \"month\"]\ninterval_ms = 100\nheartbeat_ms = 1000\n",
            leaf.url()
        );
        let config = aggregator_config(&zd, id, mosquitto.port, &reg, &extra);
        let (aggregator, api) = zonesync_e2e::spawn_aggregator(&config);
        zones.push(Zone {
            id,
            mosquitto,
            link,
            leaf,
            aggregator,
            config,
            api,
            next_seq: 1,
        });
    }

    let sources: String = ZONES
        .iter()
        .map(|(id, _)| format!("[[nats.source]]\nzone = \"{id}\"\ndomain = \"zone-{id}\"\n"))
        .collect();
    let center_cfg = d.join("center.toml");
    std::fs::write(
        &center_cfg,
        format!(
            "registry = \"{}\"\nstale_after_s = 3\n[http]\nlisten = \"127.0.0.1:0\"\n[nats]\nurl = \"{}\"\nuser = \"center\"\npassword = \"{}\"\ndomain = \"hub\"\ncreate_stream = true\nreplicas = 3\n{sources}",
            reg.display(),
            hub_url,
            password("center")
        ),
    )
    .expect("center config");
    let (mut center_proc, mut center) = spawn_center(&center_cfg);

    // Two rounds of every zone's data, to the zones and to the oracle.
    let mut batches_sent = 0;
    for round in 0..2 {
        for zi in 0..ZONES.len() {
            batches_sent += feed(&mut zones, zi, oracle_mq.port, round).await;
        }
    }
    println!("batches: {batches_sent} to the zones, the same to the oracle");
    let r = until_equal(&center, &oracle).await;
    print_and_assert("fed", &r);
    // The figures are real: some row counts members and has a value.
    let t = center.get(TABLES[4]).await;
    let valued = t["goals"]
        .as_array()
        .map_or(0, |g| g.iter().filter(|r| !r["value"].is_null()).count());
    println!(
        "province table: {} rows, {valued} with a value",
        t["goals"].as_array().map_or(0, Vec::len)
    );
    assert!(valued > 5, "{t}");
    for z in &zones {
        assert_eq!(standing(&t, z.id), "fresh");
        let _ = z.api.get("/healthz").await;
    }

    // A forged message: py-a's tallies published on jy-a's subject in jy-a's domain.
    {
        let client = hub_client(&hub_url, "center").await;
        let js = async_nats::jetstream::with_domain(client, "hub");
        let stream = js.get_stream("ZONESYNC_TALLIES").await.expect("hub stream");
        let real = stream
            .get_last_raw_message_by_subject("zonesync.tallies.py-a")
            .await
            .expect("py-a's last message");
        let leaf = async_nats::connect(zones[0].leaf.url()).await.expect("jy-a leaf");
        let ljs = async_nats::jetstream::with_domain(leaf, "zone-jy-a");
        ljs.publish("zonesync.tallies.jy-a", real.payload.clone())
            .await
            .expect("publish")
            .await
            .expect("stored by jy-a's stream");
    }
    let deadline = Instant::now() + WAIT;
    while center.get("/api/v1/center/status").await["refused_by_reason"]["wrong_subject"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "the forged message was never refused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    print_and_assert("forged message refused", &compare(&center, &oracle).await);

    // jy-a's leaf stores py-a's subject too, and jy-a puts a forged py-a
    // snapshot there (a far higher version, other figures). The hub sources
    // jy-a's stream for jy-a's subject only, so it never reaches the center:
    // once a later jy-a heartbeat has arrived (sourcing keeps order), the
    // tables are still the oracle's.
    let forged_at = {
        let client = hub_client(&hub_url, "center").await;
        let js = async_nats::jetstream::with_domain(client, "hub");
        let stream = js.get_stream("ZONESYNC_TALLIES").await.expect("hub stream");
        let real = stream
            .get_last_raw_message_by_subject("zonesync.tallies.py-a")
            .await
            .expect("py-a's last message");
        let mut forged: Value = serde_json::from_slice(&real.payload).expect("a tally message");
        forged["version"] = serde_json::json!(1_000_000);
        forged["cells"][0]["tally"]["in_scope"] = serde_json::json!(999);
        let leaf = async_nats::connect(zones[0].leaf.url()).await.expect("jy-a leaf");
        let ljs = async_nats::jetstream::with_domain(leaf, "zone-jy-a");
        let mut zone_stream = ljs.get_stream("ZONESYNC_ZONE_TALLIES").await.expect("jy-a's stream");
        let mut cfg = zone_stream.info().await.expect("stream info").config.clone();
        cfg.subjects.push("zonesync.tallies.py-a".into());
        ljs.update_stream(cfg)
            .await
            .expect("jy-a's stream takes py-a's subject");
        let at = Utc::now();
        ljs.publish(
            "zonesync.tallies.py-a",
            serde_json::to_vec(&forged).expect("json").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored by jy-a's stream");
        at
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let s = center.get("/api/v1/center/status").await;
        let heard = s["zones"]
            .as_array()
            .and_then(|zs| zs.iter().find(|z| z["zone"] == "jy-a"))
            .and_then(|z| z["heard_at"].as_str().map(str::to_owned))
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
        if heard.is_some_and(|t| t > forged_at) {
            break;
        }
        assert!(Instant::now() < deadline, "no jy-a heartbeat after the forged message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    print_and_assert(
        "py-a forged in jy-a's stream, not sourced",
        &compare(&center, &oracle).await,
    );

    // jy-a's own hub credentials, used to publish py-a's tallies (a far
    // higher version, other figures) on py-a's subject and to listen to
    // every zone's: the hub itself refuses both, as the server's
    // permission violations say, and the center's tables do not move.
    let violations = {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let jy_a = async_nats::ConnectOptions::with_user_and_password("jy-a".into(), password("jy-a"))
            .event_callback(move |ev| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = ev {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(&hub_url)
            .await
            .expect("jy-a connects to the hub");
        let hub = async_nats::jetstream::with_domain(hub_client(&hub_url, "center").await, "hub");
        let real = hub
            .get_stream("ZONESYNC_TALLIES")
            .await
            .expect("hub stream")
            .get_last_raw_message_by_subject("zonesync.tallies.py-a")
            .await
            .expect("py-a's last message");
        let mut forged: Value = serde_json::from_slice(&real.payload).expect("a tally message");
        forged["version"] = serde_json::json!(2_000_000);
        forged["cells"][0]["tally"]["in_scope"] = serde_json::json!(777);
        jy_a.publish(
            "zonesync.tallies.py-a",
            serde_json::to_vec(&forged).expect("json").into(),
        )
        .await
        .expect("handed to the client");
        jy_a.flush().await.expect("flush");
        let _listen = jy_a.subscribe("zonesync.tallies.>").await.expect("subscribe sent");
        jy_a.flush().await.expect("flush");
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match tokio::time::timeout(WAIT, rx.recv()).await {
                Ok(Some(e)) => seen.push(e),
                _ => panic!("the hub reported no permission violation for jy-a (seen: {seen:?})"),
            }
        }
        seen
    };
    println!("hub, to jy-a's credentials: {violations:?}");
    assert!(
        violations
            .iter()
            .any(|e| e.contains("Permissions Violation for Publish") && e.contains("zonesync.tallies.py-a")),
        "{violations:?}"
    );
    assert!(
        violations
            .iter()
            .any(|e| e.contains("Permissions Violation for Subscription") && e.contains("zonesync.tallies.>")),
        "{violations:?}"
    );
    let s = center.get("/api/v1/center/status").await;
    let py = s["zones"]
        .as_array()
        .and_then(|zs| zs.iter().find(|z| z["zone"] == "py-a"))
        .cloned()
        .unwrap_or_default();
    assert!(
        py["version"].as_u64().unwrap_or(0) < 2_000_000,
        "the forged version reached the center: {py}"
    );
    print_and_assert(
        "jy-a's credentials refused py-a's subject by the hub",
        &compare(&center, &oracle).await,
    );

    // SIGKILL one hub node: the rest of the test runs on two of three.
    hubs[2].kill9();
    println!("hub-3 SIGKILLed");

    // SIGKILL the center and start it again: it rebuilds from the hub stream.
    let before_kill = center.get("/api/v1/center/status").await;
    let lag_before_kill = before_kill["zones"].as_array().map_or(0, |zs| {
        zs.iter().filter_map(|z| z["max_lag_ms"].as_i64()).max().unwrap_or(0)
    });
    println!("max lag before the kill: {lag_before_kill} ms (zone data change to the center holding it)");
    center_proc.kill9();
    let (p, a) = spawn_center(&center_cfg);
    (center_proc, center) = (p, a);
    let deadline = Instant::now() + WAIT;
    while center.get("/api/v1/center/status").await["ready"] != true {
        assert!(Instant::now() < deadline, "the center never finished its rebuild");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Compared once, at once: equal from the rebuild alone, not from the
    // zones' next heartbeats (each zone's comes about once a second).
    let r = compare(&center, &oracle).await;
    print_and_assert("center SIGKILLed and restarted", &r);
    let after = center.get("/api/v1/center/status").await;
    println!(
        "center rebuild: {} messages in {} ms",
        after["rebuilt"], after["rebuild_ms"]
    );
    assert!(after["rebuilt"].as_u64().unwrap_or(0) > 0);

    // Cut py-a's leaf link, keep feeding it: stale at the center, its last figures kept.
    zones[2].link.cut_and_refuse();
    let cut_at = Instant::now();
    batches_sent += feed(&mut zones, 2, oracle_mq.port, 2).await;
    let deadline = Instant::now() + WAIT;
    let stale = loop {
        let t = center.get(TABLES[2]).await;
        if standing(&t, "py-a") == "stale" {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "py-a never shown stale: {}\nleaf log:\n{}\nhub log:\n{}",
            t["zone_standing"],
            std::fs::read_to_string(d.join("py-a/leaf/nats.log")).unwrap_or_default(),
            std::fs::read_to_string(d.join("hub/nats.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let py = stale["zone_standing"]
        .as_array()
        .and_then(|a| a.iter().find(|z| z["zone"] == "py-a"))
        .cloned()
        .unwrap_or_default();
    println!(
        "link cut: py-a {} after {:.1} s, data age {} s, heard {} s ago; completeness {}",
        py["standing"],
        cut_at.elapsed().as_secs_f64(),
        py["data_age_s"],
        py["heard_age_s"],
        stale["completeness"]
    );
    assert_eq!(stale["completeness"]["stale"], 1);
    let in_scope: u64 = stale["goals"]
        .as_array()
        .map_or(0, |g| g.iter().filter_map(|r| r["in_scope"].as_u64()).sum());
    assert!(in_scope > 0, "a stale zone's figures are kept, never zero");
    let during = compare(&center, &oracle).await;
    for (t, e) in &during {
        println!(
            "[link cut] {t}: equal {}",
            if e.is_ok() {
                "yes"
            } else {
                "no (stale, as expected for 濮阳 and the province)"
            }
        );
    }
    assert!(
        during[2].1.is_err(),
        "the oracle has py-a's new round; the center cannot yet"
    );

    zones[2].link.heal();
    let r = until_equal(&center, &oracle).await;
    print_and_assert("link healed", &r);
    let t = center.get(TABLES[2]).await;
    assert_eq!(standing(&t, "py-a"), "fresh");

    // SIGKILL jy-b's aggregator, feed jy-b meanwhile (its broker queues the
    // batches for the aggregator's session), start it again: equal.
    zones[1].aggregator.kill9();
    batches_sent += feed(&mut zones, 1, oracle_mq.port, 2).await;
    let (p, a) = zonesync_e2e::spawn_aggregator(&zones[1].config);
    (zones[1].aggregator, zones[1].api) = (p, a);
    let r = until_equal(&center, &oracle).await;
    print_and_assert("jy-b's aggregator SIGKILLed, fed, restarted", &r);

    // Figures.
    let mut published = 0;
    for z in &zones {
        let leaf = async_nats::connect(z.leaf.url()).await.expect("leaf");
        published += last_seq(leaf, &format!("zone-{}", z.id), "ZONESYNC_ZONE_TALLIES").await;
    }
    let sourced = last_seq(hub_client(&hub_url, "center").await, "hub", "ZONESYNC_TALLIES").await;
    let info = async_nats::jetstream::with_domain(hub_client(&hub_url, "center").await, "hub")
        .get_stream("ZONESYNC_TALLIES")
        .await
        .expect("hub stream")
        .get_info()
        .await
        .expect("hub stream info");
    let peers: Vec<(String, bool, bool)> = info
        .cluster
        .as_ref()
        .map(|c| {
            c.replicas
                .iter()
                .map(|r| (r.name.clone(), r.current, r.offline))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "hub stream: replicas {}, leader {:?}, other peers (name, current, offline) {peers:?}",
        info.config.num_replicas,
        info.cluster.as_ref().and_then(|c| c.leader.clone())
    );
    assert_eq!(info.config.num_replicas, 3);
    let status = center.get("/api/v1/center/status").await;
    let max_lag = status["zones"].as_array().map_or(0, |zs| {
        zs.iter().filter_map(|z| z["max_lag_ms"].as_i64()).max().unwrap_or(0)
    });
    println!(
        "figures: batches {batches_sent}; tally messages published {published} (zone streams, the forged one included), sourced {sourced} (hub stream); \
         consumed {} before the kill + {} after; refused {} before + {} after ({}); max lag {max_lag} ms (since the restart; py-a's includes the cut)",
        before_kill["consumed"], status["consumed"], before_kill["refused"], status["refused"], status["refused_by_reason"]
    );
    // A zone stream keeps the last few snapshots per zone: those it replaced
    // while the link was cut are never sourced, and need not be (each is whole).
    assert!(sourced > 0 && status["consumed"].as_u64().unwrap_or(0) > 0);
    center_proc.kill9();
}

//! Who may connect and read: TLS with client certificates, the broker ACL, the read token.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_end_to_end_and_no_certificate_no_entry() {
    use zonesync_e2e::certs::Certs;
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let broker = Mosquitto::start_with(dir.path(), &certs.mosquitto_listener());
    let ds = dataset::write(dir.path(), broker.port, 97, 2);
    for (path, cn) in [
        (&ds.agent_a, "agent-a"),
        (&ds.agent_b, "agent-b"),
        (&ds.aggregator, "zonesync-aggregator"),
    ] {
        let (cert, key) = certs.client(cn);
        let mut text = std::fs::read_to_string(path).unwrap();
        text.push_str(&format!(
            "\n[mqtt.tls]\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            certs.ca.display(),
            cert.display(),
            key.display()
        ));
        std::fs::write(path, text).unwrap();
    }
    let (_agg, api) = spawn_aggregator(&ds.aggregator);
    let _a = spawn_agent(&ds.agent_a);
    let _b = spawn_agent(&ds.agent_b);
    assert_hand_computed_goals(&api, &ds).await;

    // Without a client certificate, or without TLS at all, the broker lets no one in.
    let no_cert = zonesync_agent::tls::TlsConfig {
        ca_file: certs.ca.clone(),
        client_cert_file: None,
        client_key_file: None,
    };
    for transport in [
        zonesync_agent::tls::transport(Some(&no_cert)).unwrap(),
        rumqttc::Transport::tcp(),
    ] {
        let mut o = rumqttc::MqttOptions::new("intruder", "127.0.0.1", broker.port);
        o.set_transport(transport);
        let (_c, mut events) = rumqttc::AsyncClient::new(o, 8);
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(!outcome, "a client without a certificate must not connect");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_acl_pins_each_agent_to_its_own_zone_agent_and_enterprises() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let dir = tempfile::tempdir().unwrap();
    // Users and an ACL in the shape of deploy/mosquitto/zonesync.acl.
    let passwd = dir.path().join("passwd");
    for (i, (user, pass)) in [
        ("zonesync-aggregator", "agg-pass"),
        ("gw-a", "a-pass"),
        ("gw-b", "b-pass"),
    ]
    .iter()
    .enumerate()
    {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(&passwd)
            .arg(user)
            .arg(pass)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mosquitto_passwd");
    }
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        format!(
            "user zonesync-aggregator\ntopic read zonesync/v1/{ZONE}/+/state\ntopic read zonesync/v1/{ZONE}/+/data/+\n\
             topic write zonesync/v1/{ZONE}/+/confirm\n\n\
             user gw-a\ntopic write zonesync/v1/{ZONE}/gw-a/state\ntopic write zonesync/v1/{ZONE}/gw-a/data/{}\n\
             topic read zonesync/v1/{ZONE}/gw-a/confirm\n\n\
             user gw-b\ntopic write zonesync/v1/{ZONE}/gw-b/data/{}\ntopic read zonesync/v1/{ZONE}/gw-b/confirm\n",
            E[0], E[1]
        ),
    )
    .unwrap();
    let broker = Mosquitto::start_with(
        dir.path(),
        &format!("password_file {}\nacl_file {}", passwd.display(), acl.display()),
    );
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    let cfg = std::fs::read_to_string(&ds.aggregator).unwrap().replace(
        "[mqtt]\n",
        "[mqtt]\nusername = \"zonesync-aggregator\"\npassword = \"agg-pass\"\n",
    );
    std::fs::write(&ds.aggregator, cfg).unwrap();
    let (trigger, signal) = shutdown::channel();
    let running = zonesync_aggregator::start(AggregatorConfig::load(&ds.aggregator).unwrap(), signal)
        .await
        .unwrap();
    let api = Api::new(&format!("http://{}", running.http_addr));
    api.wait_metric("zonesync_aggregator_mqtt_connected", 1.0, WAIT).await;

    let now = chrono::Utc::now();
    let ts = (now - chrono::Duration::minutes(1)).to_rfc3339();
    let batch = |agent: &str, seq: u64, e: &str| -> Vec<u8> {
        serde_json::to_vec(&json!({"v": 1, "agent": agent, "boot": 1, "seq": seq, "sent_at": now.to_rfc3339(), "zone": ZONE,
            "enterprise": e, "readings": [{"indicator": "electricity", "point": "M1", "value": seq as f64, "unit": "kWh", "ts": ts}]}))
        .unwrap()
    };
    // gw-b listens for its confirmations; gw-a for its own.
    let listen = |user: &'static str, pass: &'static str| {
        let mut o = MqttOptions::new(format!("{user}-listen"), "127.0.0.1", broker.port);
        o.set_credentials(user, pass);
        let (client, mut events) = AsyncClient::new(o, 16);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<zonesync_proto::Confirm>();
        tokio::spawn(async move {
            while let Ok(ev) = events.poll().await {
                match ev {
                    Event::Incoming(Packet::ConnAck(_)) => {
                        let t = format!("zonesync/v1/{ZONE}/{user}/confirm");
                        client.subscribe(t, QoS::AtLeastOnce).await.unwrap();
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        if let Ok(c) = serde_json::from_slice(&p.payload) {
                            let _ = tx.send(c);
                        }
                    }
                    _ => {}
                }
            }
        });
        rx
    };
    let mut confirms_a = listen("gw-a", "a-pass");
    let mut confirms_b = listen("gw-b", "b-pass");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut o = MqttOptions::new("gw-a", "127.0.0.1", broker.port);
    o.set_credentials("gw-a", "a-pass");
    let (client, mut events) = AsyncClient::new(o, 16);
    let forged = zonesync_proto::Confirm::from_seqs(zonesync_proto::AgentId::parse("gw-b").unwrap(), vec![777], now);
    let attempts = vec![
        // As enterprise E2, which gw-a is not allowed to speak for.
        (format!("zonesync/v1/{ZONE}/gw-a/data/{}", E[1]), batch("gw-a", 1, E[1])),
        // Under another agent's name.
        (format!("zonesync/v1/{ZONE}/gw-b/data/{}", E[0]), batch("gw-b", 1, E[0])),
        // A confirmation forged for gw-b, which would make it drop unsaved batches.
        (format!("zonesync/v1/{ZONE}/gw-b/confirm"), forged.to_payload()),
        // Its own: allowed.
        (format!("zonesync/v1/{ZONE}/gw-a/data/{}", E[0]), batch("gw-a", 2, E[0])),
    ];
    let n = attempts.len();
    for (t, p) in attempts {
        client.publish(t, QoS::AtLeastOnce, false, p).await.unwrap();
    }
    let mut acked = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while acked < n {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap();
    api.wait_metric("zonesync_aggregator_readings_stored_total", 1.0, WAIT)
        .await;
    // The aggregator confirms what it stored, to the agent that sent it only.
    let c = tokio::time::timeout(WAIT, confirms_a.recv()).await.unwrap().unwrap();
    assert_eq!((c.agent.as_str(), c.seqs.clone()), ("gw-a", vec![[2, 2]]));
    // gw-b's own batch, in a unit the catalog does not know, is refused, and
    // confirmed all the same: resending it cannot help.
    let mut o = MqttOptions::new("gw-b", "127.0.0.1", broker.port);
    o.set_credentials("gw-b", "b-pass");
    let (client_b, mut events_b) = AsyncClient::new(o, 16);
    client_b
        .publish(
            format!("zonesync/v1/{ZONE}/gw-b/data/{}", E[1]),
            QoS::AtLeastOnce,
            false,
            String::from_utf8(batch("gw-b", 9, E[1]))
                .unwrap()
                .replace("\"kWh\"", "\"furlong\""),
        )
        .await
        .unwrap();
    tokio::spawn(async move { while events_b.poll().await.is_ok() {} });
    let c = tokio::time::timeout(WAIT, confirms_b.recv()).await.unwrap().unwrap();
    assert_eq!(
        c.seqs,
        vec![[9, 9]],
        "the first confirmation gw-b sees is the aggregator's, not gw-a's forgery"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Mosquitto acknowledges and drops what the ACL forbids (MQTT 3.1.1 has no negative PUBACK).
    assert_eq!(api.metric("zonesync_aggregator_messages_received_total").await, 2.0);
    assert_eq!(api.metric("zonesync_aggregator_readings_stored_total").await, 1.0);
    assert_eq!(api.metric("zonesync_aggregator_confirms_published_total").await, 2.0);
    assert!(confirms_a.try_recv().is_err() && confirms_b.try_recv().is_err());
    let e2 = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[1])).await;
    assert_eq!(
        e2["readings"],
        json!(0),
        "nothing stored for the enterprise gw-a may not speak for"
    );
    // A wrong password is refused outright.
    let mut o = MqttOptions::new("gw-x", "127.0.0.1", broker.port);
    o.set_credentials("gw-a", "wrong");
    let (_c, mut ev) = AsyncClient::new(o, 4);
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return false,
                Ok(_) => {}
                Err(_) => return true,
            }
        }
    })
    .await
    .unwrap_or(true);
    assert!(refused, "a wrong password must be refused");
    trigger.fire();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_guards_the_api_but_not_health() {
    let dir = tempfile::tempdir().unwrap();
    let t = InProcess::start(dir.path(), 1, 1 << 20, |c| {
        c.replace("[http]\n", "[http]\nread_token = \"r3ad\"\nwrite_token = \"wr1te\"\n")
    })
    .await;
    let base = format!("http://{}", t.running.http_addr);
    let http = reqwest::Client::new();
    let status = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap().status().as_u16() };
    assert_eq!(status(http.get(format!("{base}/api/v1/zones"))).await, 401);
    assert_eq!(
        status(http.get(format!("{base}/api/v1/zones")).bearer_auth("wrong")).await,
        401
    );
    assert_eq!(
        status(http.get(format!("{base}/api/v1/zones")).bearer_auth("r3ad")).await,
        200
    );
    assert_eq!(
        status(http.get(format!("{base}/api/v1/zones")).bearer_auth("wr1te")).await,
        200
    );
    assert_eq!(status(http.get(format!("{base}/healthz"))).await, 200);
    assert_eq!(status(http.get(format!("{base}/metrics"))).await, 200);
    // The read token does not allow writes.
    let ack = json!({"key": "x", "by": "someone"});
    assert_eq!(
        status(
            http.post(format!("{base}/api/v1/alerts/ack"))
                .bearer_auth("r3ad")
                .json(&ack)
        )
        .await,
        401
    );
    // A malformed query string is refused in JSON, saying what was wrong.
    let r = http
        .get(format!("{base}/api/v1/dead-letters?limit=many"))
        .bearer_auth("r3ad")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("a JSON error body");
    let why = body["error"].as_str().unwrap_or_default();
    assert!(why.starts_with("query string: ") && why.contains("limit"), "{body}");
    // The report command reads with a token given on the line or in a file.
    let report = |extra: &[&str]| {
        let mut args = vec!["report", "--api", base.as_str(), "--zone", ZONE, "--format", "md"];
        args.extend_from_slice(extra);
        zonesync_e2e::run_to_end("zonesync-aggregator", &args)
    };
    let refused = report(&[]);
    assert!(!refused.status.success(), "report without the token");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"), "{refused:?}");
    let with_token = report(&["--token", "r3ad"]);
    assert!(with_token.status.success(), "{with_token:?}");
    assert!(String::from_utf8_lossy(&with_token.stdout).contains("| 编号 | 指标 |"));
    let file = dir.path().join("read-token");
    std::fs::write(&file, "r3ad\n").unwrap();
    let from_file = report(&["--token-file", file.to_str().unwrap()]);
    assert!(from_file.status.success(), "{from_file:?}");
    t.stop().await;
}

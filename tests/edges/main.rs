//! The edges of zonesync tried as an attacker or a careless operator would
//! (issue 15), each against real processes: a Mosquitto broker and the
//! aggregator and agent binaries on free loopback ports.

use chrono::Utc;
use serde_json::{json, Value};
use std::time::Duration;
use zonesync_e2e::hostile::{publish, Msg};
use zonesync_e2e::{dataset, run_to_end, spawn_aggregator, Api, Mosquitto, Proc};
use zonesync_proto::{AgentId, Batch, EnterpriseId, OutboxId, Reading, ZoneId, WIRE_VERSION};

const WAIT: Duration = Duration::from_secs(60);

/// A broker, the data set's files and an aggregator process whose
/// configuration's `[http]` section got `http_extra`.
struct Zone {
    _dir: tempfile::TempDir,
    broker: Mosquitto,
    ds: dataset::Dataset,
    aggregator: Proc,
    api: Api,
}

fn zone_with(http_extra: &str, top_extra: &str) -> Zone {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    let text = std::fs::read_to_string(&ds.aggregator).expect("aggregator config");
    let text = format!(
        "{top_extra}{}",
        text.replace("[http]\n", &format!("[http]\n{http_extra}\n"))
    );
    std::fs::write(&ds.aggregator, text).expect("write aggregator config");
    let (aggregator, api) = spawn_aggregator(&ds.aggregator);
    Zone {
        _dir: dir,
        broker,
        ds,
        aggregator,
        api,
    }
}

/// POSTs `body` to the alert acknowledgement with `auth` as the Authorization header.
async fn ack(base: &str, auth: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/api/v1/alerts/ack"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.expect("POST ack");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_token_is_checked_before_the_body_and_its_scheme_in_any_case() {
    let z = zone_with("write_token = \"wr1te-t0ken\"", "");
    let base = z.api.base().to_owned();
    // 1 MiB of something that is not JSON, with no token: refused for the
    // token, not parsed (main parsed it first and answered 400 for the JSON).
    let junk = vec![b'{'; 1 << 20];
    let (status, body) = ack(&base, None, junk.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing or wrong bearer token")),
        "{body}"
    );
    for wrong in [
        "Bearer wr1te",
        "Bearer wr1te-t0ken-and-more",
        "Bearer WR1TE-T0KEN",
        "Basic wr1te-t0ken",
    ] {
        let (status, body) = ack(&base, Some(wrong), junk.clone()).await;
        assert_eq!(status, 401, "{wrong}: {body}");
    }
    // The scheme is case-insensitive: each spelling gets past the guard to
    // the handler, which says there is no such alert.
    let good = serde_json::to_vec(&json!({"key": "no-such-alert", "by": "tester"})).unwrap();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, body) = ack(&base, Some(&format!("{scheme} wr1te-t0ken")), good.clone()).await;
        assert_eq!(status, 404, "{scheme}: {body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains("no alert"),
            "{body}"
        );
    }
    // Even with the token, an acknowledgement is small: 64 KiB is refused unread.
    let (status, _) = ack(&base, Some("Bearer wr1te-t0ken"), vec![b' '; 64 << 10]).await;
    assert_eq!(status, 413, "an oversized acknowledgement body");
    let (status, body) = z.api.get_with_status("/healthz").await;
    assert_eq!(status, 200, "{body}");
    drop(z);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_written_where_its_file_belongs_is_never_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "agent_id = \"gw-1\"\nzone = \"{}\"\ndata_dir = \"{}\"\n[mqtt]\nport = 1\nusername = \"gw-1\"\npassword_file = \"Sup3r-Secret-Pw\"\n",
            dataset::ZONE,
            dir.path().join("data").display()
        ),
    )
    .expect("write agent config");
    for cmd in ["check", "run"] {
        let out = run_to_end("zonesync-agent", &[cmd, "-c", config.to_str().expect("utf-8 path")]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{cmd}: an unreadable password_file stops it:\n{text}"
        );
        assert!(
            text.contains("password_file cannot be read"),
            "{cmd}: says why:\n{text}"
        );
        assert!(
            !text.contains("Sup3r-Secret-Pw"),
            "{cmd}: the value is never printed:\n{text}"
        );
    }
}

/// A batch of `items` readings whose indicator, `name_len` characters long,
/// no catalog has: refused item by item, each reason quoting the name.
fn unknown_indicators(seq: u64, items: usize, name_len: usize) -> Msg {
    let b = Batch {
        v: WIRE_VERSION,
        agent: AgentId::parse("flood-gw").expect("agent id"),
        boot: 1,
        outbox: Some(OutboxId::from_random([7; 16])),
        seq,
        sent_at: Utc::now(),
        zone: ZoneId::parse(dataset::ZONE).expect("zone id"),
        enterprise: EnterpriseId::parse(dataset::E[0]).expect("credit code"),
        backfill: false,
        readings: (0..items)
            .map(|i| Reading {
                indicator: format!("{i}{}", "x".repeat(name_len)),
                point: String::new(),
                value: 1.0,
                unit: "kWh".into(),
                ts: Some(Utc::now()),
                period: None,
            })
            .collect(),
        declarations: vec![],
    };
    Msg::batch(&b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_capped_in_bytes_and_read_in_bounded_pages() {
    const SENT: u64 = 40;
    const CAP: u64 = 256 * 1024;
    const ITEMS: usize = 380;
    let z = zone_with("", "");
    // The cap goes into the [store] section the data set writes.
    drop(z.aggregator);
    let text = std::fs::read_to_string(&z.ds.aggregator).expect("aggregator config");
    std::fs::write(
        &z.ds.aggregator,
        text.replace("[store]\n", &format!("[store]\ndead_letters_max_bytes = {CAP}\n")),
    )
    .expect("write aggregator config");
    let (_aggregator, api) = spawn_aggregator(&z.ds.aggregator);

    // 40 payloads of ~235 KB (under the 256 KiB limit), each with 380
    // refused readings whose reasons quote a 500-character name: on main
    // each dead letter kept ~250 KB of reasons.
    let msgs: Vec<Msg> = (1..=SENT).map(|seq| unknown_indicators(seq, ITEMS, 500)).collect();
    let sent_bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
    let sizes: Vec<usize> = msgs.iter().map(|m| m.payload.len()).collect();
    assert!(sizes.iter().all(|&n| n < 256 * 1024 && n > 200_000), "{sizes:?}");
    publish(z.broker.port, msgs).await;
    api.wait_metric("zonesync_aggregator_dead_letters_total", SENT as f64, WAIT)
        .await;
    assert_eq!(
        api.metric("zonesync_aggregator_rejected_total{reason=\"unknown_indicator\"}")
            .await,
        (SENT * ITEMS as u64) as f64,
        "every refused item is counted"
    );

    // Asked for 10,000 at once: one bounded page.
    let r = reqwest::get(format!("{}/api/v1/dead-letters?limit=10000", api.base()))
        .await
        .expect("GET dead letters");
    assert_eq!(r.status().as_u16(), 200);
    let raw = r.bytes().await.expect("body");
    assert!(
        raw.len() <= 1_200_000,
        "one page is at most ~1 MiB; got {} bytes for {sent_bytes} bytes sent",
        raw.len()
    );
    let first: Value = serde_json::from_slice(&raw).expect("JSON");
    let stored = first["total_stored"].as_u64().expect("total_stored");
    let stored_bytes = first["stored_bytes"].as_u64().expect("stored_bytes");
    assert!(stored_bytes <= CAP, "stored {stored_bytes} bytes, cap {CAP}");
    assert!(
        (1..SENT).contains(&stored),
        "the oldest went to keep the cap: {stored} kept"
    );

    // Every page is bounded; following next_before visits each kept letter once, newest first.
    let (mut ids, mut before): (Vec<u64>, Option<u64>) = (Vec::new(), None);
    loop {
        let q = before.map_or(String::new(), |b| format!("&before={b}"));
        let page = api.get(&format!("/api/v1/dead-letters?limit=5{q}")).await;
        let letters = page["dead_letters"].as_array().cloned().unwrap_or_default();
        assert!(letters.len() <= 5, "{}", letters.len());
        for l in &letters {
            assert!(l["excerpt"].as_str().is_some_and(|e| e.len() <= 512), "excerpt bounded");
            let reasons = l["reasons"].as_array().map_or(0, Vec::len);
            assert!(reasons <= 21, "{reasons} reasons kept");
            assert_eq!(l["labels"].as_array().map_or(0, Vec::len), ITEMS, "every label kept");
            ids.push(l["id"].as_u64().expect("id"));
        }
        match page["next_before"].as_u64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(ids.len() as u64, stored, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, none twice: {ids:?}");
    let (status, body) = api.get_with_status("/healthz").await;
    assert_eq!(status, 200, "{body}");
}

/// The aggregator's HTTP port, from its API base URL.
fn http_port(api: &Api) -> u16 {
    api.base()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the API URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_clients_cannot_take_the_file_descriptors_the_ingest_needs() {
    // The aggregator runs under an open-file limit of 400 (as LimitNOFILE
    // would set it): the HTTP server may hold 400 - 256 = 144 connections.
    const NOFILE: u64 = 400;
    const FLOOD: usize = 600;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broker = Mosquitto::start(dir.path());
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    let text = std::fs::read_to_string(&ds.aggregator).expect("aggregator config");
    std::fs::write(
        &ds.aggregator,
        text.replace("[http]\n", "[http]\nheader_timeout_ms = 3000\n"),
    )
    .expect("write aggregator config");
    let aggregator = Proc::spawn_with_nofile(
        "zonesync-aggregator",
        &["run", "-c", ds.aggregator.to_str().expect("utf-8 path")],
        NOFILE,
    );
    let addr = aggregator.line_after("API on http://", Duration::from_secs(20));
    let api = Api::new(&format!("http://{addr}"));
    let (status, _) = api.get_with_status("/healthz").await;
    assert_eq!(status, 200);
    let baseline = aggregator.open_fds();

    // 600 clients connect and never send a byte; the test holds them open.
    let port = http_port(&api);
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        connecting.spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            .ok()
            .and_then(Result::ok)
        });
    }
    let mut flood = Vec::new();
    while let Some(c) = connecting.join_next().await {
        flood.extend(c.expect("connect task"));
    }
    assert!(
        flood.len() > 144 + 50,
        "{} connections made: more than the cap",
        flood.len()
    );

    // Whatever the moment, the process keeps its reserve: main reached the limit.
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(aggregator.open_fds());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("descriptors: {baseline} before the flood, at most {most} during it");
    assert!(
        most <= baseline + 144 + 8,
        "{most} descriptors open (baseline {baseline}): more than the connection cap allows"
    );

    // A broker blip while the flood holds its connections; then a batch.
    broker.restart();
    let ts = Utc::now();
    let b = Batch {
        v: WIRE_VERSION,
        agent: AgentId::parse("blip-gw").expect("agent id"),
        boot: 1,
        outbox: Some(OutboxId::from_random([9; 16])),
        seq: 1,
        sent_at: ts,
        zone: ZoneId::parse(dataset::ZONE).expect("zone id"),
        enterprise: EnterpriseId::parse(dataset::E[0]).expect("credit code"),
        backfill: false,
        readings: vec![Reading {
            indicator: "electricity".into(),
            point: "M1".into(),
            value: 1234.0,
            unit: "kWh".into(),
            ts: Some(ts),
            period: None,
        }],
        declarations: vec![],
    };
    publish(broker.port, vec![Msg::batch(&b)]).await;

    // The idle connections are closed after 3 s each, the API answers
    // again, the ingest reconnected and stored the batch.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let answered = tokio::time::timeout(Duration::from_secs(5), api.try_get_with_status("/healthz")).await;
        if let Ok(Some((200, _))) = answered {
            let zones = api.get("/api/v1/zones").await;
            if zones["zones"][0]["readings_stored"].as_u64() == Some(1) {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the flood and the broker blip: /healthz {answered:?}, {} descriptors open",
            aggregator.open_fds()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(api.metric("zonesync_aggregator_mqtt_connected").await, 1.0);
    drop(flood);
}

mod bounds;
mod broker;

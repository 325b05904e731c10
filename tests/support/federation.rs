//! What the federation tests share (issue 18): the zones and their
//! registry, the batches each round feeds a zone and the oracle (one
//! aggregator holding every zone), the tables compared field by field, and
//! starting a center. Used by the NATS test (`tests/federation.rs`) and the
//! MQTT-bridge test (`tests/federation_mqtt.rs`), so both judge the same.

use crate::dataset::E;
use crate::hostile::{publish, Msg};
use crate::{Api, Proc};
use chrono::{DateTime, Duration as Span, Utc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zonesync_proto::{
    AgentId, Batch, Declaration, EnterpriseId, OutboxId, Period, Presence, PresenceStatus, Reading, ZoneId,
    WIRE_VERSION,
};

/// Zones: two of 济源, one of 濮阳.
pub const ZONES: [(&str, &str); 3] = [("jy-a", "济源"), ("jy-b", "济源"), ("py-a", "濮阳")];

/// Tables compared: each city and the province, over October 2026 by each goal's basis and by the month alone.
pub const TABLES: [&str; 6] = [
    "/api/v1/cities/济源/goals?period=2026-10",
    "/api/v1/cities/济源/goals?period=2026-10&span=month",
    "/api/v1/cities/濮阳/goals?period=2026-10",
    "/api/v1/cities/濮阳/goals?period=2026-10&span=month",
    "/api/v1/province/goals?period=2026-10",
    "/api/v1/province/goals?period=2026-10&span=month",
];

pub const WAIT: Duration = Duration::from_secs(60);

pub fn registry() -> String {
    let mut s = String::new();
    for (z, city) in ZONES {
        s.push_str(&format!(
            "[[zone]]\nid = \"{z}\"\nname_zh = \"{z}\"\ncity = \"{city}\"\nprovince = \"河南\"\n"
        ));
        for (i, e) in E.iter().enumerate() {
            s.push_str(&format!(
                "[[zone.enterprise]]\nid = \"{e}\"\nabove_scale = {}\n",
                i != 4
            ));
        }
    }
    s
}

pub fn aggregator_config(dir: &Path, name: &str, mqtt_port: u16, registry: &Path, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "data_dir = \"{}\"\nregistry = \"{}\"\n{extra}\n[mqtt]\nport = {mqtt_port}\nclient_id = \"agg-{name}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\ncache_capacity_bytes = 16777216\n",
            dir.join(name).display(),
            registry.display()
        ),
    )
    .expect("write config");
    p
}

pub fn outbox(zi: usize) -> OutboxId {
    OutboxId::from_random([zi as u8 + 1; 16])
}

pub fn agent(zone: &str) -> AgentId {
    AgentId::parse(&format!("gw-{zone}")).expect("agent id")
}

pub fn amount(indicator: &str, value: f64) -> Reading {
    Reading {
        indicator: indicator.into(),
        point: String::new(),
        value,
        unit: "10k_yuan".into(),
        ts: None,
        period: Some(Period::Month(2026, 10)),
    }
}

pub fn register(value: f64, ts: DateTime<Utc>) -> Reading {
    Reading {
        indicator: "electricity".into(),
        point: "M1".into(),
        value,
        unit: "kWh".into(),
        ts: Some(ts),
        period: None,
    }
}

/// Round `round`'s batches for zone `zi`: each of E1–E3 reports October's
/// value added and revenue (restated each round), two meter readings and
/// declarations; E4 never reports, E5 is below scale.
pub fn batches(zi: usize, zone: &str, round: u32, seq: &mut u64) -> Vec<Msg> {
    let mut out = Vec::new();
    if *seq == 1 {
        out.push(Msg::presence(&Presence {
            v: WIRE_VERSION,
            agent: agent(zone),
            zone: ZoneId::parse(zone).expect("zone"),
            status: PresenceStatus::Online,
            boot: 1,
            at: Utc::now(),
            outbox: Some(outbox(zi)),
            next_seq: 1,
            dropped_readings: 0,
            dropped_sent_readings: 0,
            broker_denied_batches: 0,
            clock_offset_ms: None,
            version: "federation-test".into(),
            enterprises: vec![],
        }));
    }
    let oct1 = DateTime::parse_from_rfc3339("2026-10-01T00:00:00+08:00")
        .expect("ts")
        .with_timezone(&Utc);
    for (i, e) in E.iter().enumerate().take(3) {
        let f = (zi * 10 + i) as f64 + f64::from(round) * 0.7;
        let ts = oct1 + Span::hours(i64::from(round) * 24);
        let b = Batch {
            v: WIRE_VERSION,
            agent: agent(zone),
            boot: 1,
            outbox: Some(outbox(zi)),
            seq: *seq,
            sent_at: Utc::now(),
            zone: ZoneId::parse(zone).expect("zone"),
            enterprise: EnterpriseId::parse(e).expect("credit code"),
            backfill: false,
            readings: vec![
                amount("value_added", 100.1 * f + 3.3),
                amount("revenue", 410.7 * f + 1.9),
                register(1000.0 + 250.3 * f + f64::from(round) * 97.1, ts),
            ],
            declarations: vec![
                Declaration {
                    indicator: "dt_maturity".into(),
                    value: serde_json::json!((zi + i + round as usize) % 5),
                },
                Declaration {
                    indicator: "rd_activity".into(),
                    value: serde_json::json!((zi + i).is_multiple_of(2)),
                },
            ],
        };
        *seq += 1;
        out.push(Msg::batch(&b));
    }
    out
}

/// Publishes round `round` of zone `zi` (`zone`) to its own broker and the
/// same batches to the oracle's, numbering from `next_seq`; the batches sent.
pub async fn feed_round(
    zone_port: u16,
    oracle_port: u16,
    zi: usize,
    zone: &str,
    next_seq: &mut u64,
    round: u32,
) -> u64 {
    let mut seq_zone = *next_seq;
    let msgs = batches(zi, zone, round, &mut seq_zone);
    let mut seq_oracle = *next_seq;
    let copy = batches(zi, zone, round, &mut seq_oracle);
    let n = msgs.iter().filter(|m| !m.retain).count() as u64;
    publish(zone_port, msgs).await;
    publish(oracle_port, copy).await;
    *next_seq = seq_zone;
    n
}

/// Per table: equal or not, and the first difference.
pub async fn compare(center: &Api, oracle: &Api) -> Vec<(&'static str, Result<(), String>)> {
    let mut out = Vec::new();
    for t in TABLES {
        let (c, o) = (center.get(t).await, oracle.get(t).await);
        out.push((t, diff(&c["goals"], &o["goals"])));
    }
    out
}

/// The first field where two goal tables differ.
pub fn diff(c: &Value, o: &Value) -> Result<(), String> {
    let (Some(cr), Some(or)) = (c.as_array(), o.as_array()) else {
        return Err(format!("not tables: {c} / {o}"));
    };
    if cr.len() != or.len() {
        return Err(format!("{} rows against {}", cr.len(), or.len()));
    }
    if or.is_empty() {
        return Err("no rows".into());
    }
    for (a, b) in cr.iter().zip(or) {
        let (Some(am), Some(bm)) = (a.as_object(), b.as_object()) else {
            return Err("row is not an object".into());
        };
        for (k, v) in bm {
            if am.get(k) != Some(v) {
                return Err(format!("goal {}: {k} = {:?}, oracle {v}", b["id"], am.get(k)));
            }
        }
        if am.len() != bm.len() {
            return Err(format!("goal {}: {} fields against {}", b["id"], am.len(), bm.len()));
        }
    }
    Ok(())
}

/// Polls until every table is equal (or WAIT passes), returning the last comparison.
pub async fn until_equal(center: &Api, oracle: &Api) -> Vec<(&'static str, Result<(), String>)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = compare(center, oracle).await;
        if r.iter().all(|(_, e)| e.is_ok()) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn print_and_assert(stage: &str, r: &[(&str, Result<(), String>)]) {
    for (t, e) in r {
        println!(
            "[{stage}] {t}: equal {}",
            match e {
                Ok(()) => "yes".to_owned(),
                Err(d) => format!("NO ({d})"),
            }
        );
    }
    for (t, e) in r {
        assert!(e.is_ok(), "{stage}: {t}: {e:?}");
    }
}

/// Last sequence of `stream` in JetStream `domain` on the server at `url`.
pub async fn last_seq(client: async_nats::Client, domain: &str, stream: &str) -> u64 {
    let js = async_nats::jetstream::with_domain(client, domain);
    let s = js.get_stream(stream).await.expect("stream");
    s.get_info().await.expect("stream info").state.last_sequence
}

pub fn standing(table: &Value, zone: &str) -> String {
    table["zone_standing"]
        .as_array()
        .and_then(|a| a.iter().find(|z| z["zone"] == zone))
        .map_or_else(|| "absent".into(), |z| z["standing"].as_str().unwrap_or("").to_owned())
}

pub fn spawn_center(config: &Path) -> (Proc, Api) {
    let p = Proc::spawn(
        "zonesync-aggregator",
        &["center", "-c", config.to_str().expect("utf-8 path")],
    );
    let addr = p.line_after("API on http://", Duration::from_secs(20));
    (p, Api::new(&format!("http://{addr}")))
}

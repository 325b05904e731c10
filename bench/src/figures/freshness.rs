//! Figure 6: end-to-end freshness — from the moment a reading is made at an
//! agent to the moment the aggregator's API state shows it — at about
//! 10,000 readings per second.
//!
//! Four in-process agents (`zonesync_agent::run`, simulator sources, default
//! outbox and link settings) each simulate 25 enterprises × 100 meters with
//! one tick per second, so 10,000 readings are made every second; they
//! publish through Mosquitto to an in-process aggregator. A reading is
//! "made" at its timestamp: the simulator produces tick k at
//! `start + k s`, never earlier. The harness samples the aggregator's state
//! (what the API serves) every millisecond and notes when each enterprise's
//! newest register reading moves to a later tick: that tick's 100 readings
//! are visible from then on. Each (enterprise, tick) is one sample.
//!
//! The baseline is the broker alone: a rumqttc client publishes payloads of
//! the same size at QoS 1 and another receives them, at the same message
//! rate; each message's transit time is one sample.

use crate::data;
use crate::mosquitto::{prepare_session, Broker};
use crate::report::{Row, Unit};
use crate::{stats, Ctx};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use zonesync_agent::config::AgentConfig;
use zonesync_agent::shutdown;
use zonesync_proto::{EnterpriseId, ReadingTime, Topic};

const AGENTS: usize = 4;
const ENTERPRISES_PER_AGENT: usize = 25;
const METERS: usize = 100;

fn agent_config(
    dir: &std::path::Path,
    a: usize,
    port: u16,
    ents: &[EnterpriseId],
    start: DateTime<Utc>,
    ticks: u64,
) -> Result<AgentConfig> {
    let mut text = format!(
        "agent_id = \"bench-fresh-{a}\"\nzone = \"{}\"\ndata_dir = \"{}\"\n[mqtt]\nport = {port}\n\
         [simulator]\ninterval_ms = 10\nstep_secs = 1\nstart = \"{}\"\nmax_ticks = {ticks}\nmeters_per_enterprise = {METERS}\n",
        data::ZONE,
        dir.join(format!("agent-{a}")).display(),
        start.to_rfc3339()
    );
    for e in ents {
        text.push_str(&format!("[[simulator.enterprises]]\nid = \"{e}\"\n"));
    }
    Ok(toml::from_str(&text)?)
}

/// One run: freshness samples (ms) and the readings stored per second.
async fn run_once(ctx: &Ctx, run: usize) -> Result<(Vec<f64>, f64)> {
    let dir = ctx.scratch(&format!("fresh-{run}"));
    let broker = Broker::start(&dir.join("broker")).await?;
    let zone = data::zone(data::ZONE)?;
    let ents: Vec<EnterpriseId> = (0..(AGENTS * ENTERPRISES_PER_AGENT) as u32)
        .map(|i| data::enterprise(2_000 + i))
        .collect::<Result<_>>()?;
    let registry = dir.join("registry.toml");
    data::write_registry(&registry, &zone, &ents)?;
    let cfg = data::aggregator_config(&dir, &registry, broker.port, "bench-aggregator-fresh")?;
    prepare_session(broker.port, "bench-aggregator-fresh", &Topic::zone_filters(&zone)).await?;
    let (trigger, signal) = shutdown::channel();
    let running = zonesync_aggregator::start(cfg, signal.clone()).await?;
    let app = running.app.clone();

    let ticks = ctx.sizes.freshness_ticks;
    // A whole second ahead, so every agent is connected before its first tick.
    let start = Utc::now() + chrono::Duration::milliseconds(1500);
    let mut agents = Vec::new();
    for (a, chunk) in ents.chunks(ENTERPRISES_PER_AGENT).enumerate() {
        let cfg = agent_config(&dir, a, broker.port, chunk, start, ticks)?;
        agents.push(tokio::spawn(zonesync_agent::run(cfg, signal.clone())));
    }

    let key = ("electricity".to_owned(), format!("M{METERS}"));
    let mut seen: HashMap<EnterpriseId, i64> = ents.iter().map(|e| (e.clone(), -1)).collect();
    let mut samples = Vec::with_capacity(ents.len() * ticks as usize);
    let last = ticks as i64 - 1;
    let deadline = Instant::now() + Duration::from_secs(ticks + 30);
    while Instant::now() < deadline && seen.values().any(|k| *k < last) {
        let now = Utc::now();
        if let Ok(st) = app.state.read() {
            if let Some(zs) = st.zones.get(&zone) {
                for (e, k_seen) in seen.iter_mut() {
                    let Some((ReadingTime::Ts(t), _)) =
                        zs.enterprises.get(e).and_then(|es| es.latest.get(&key.0, &key.1))
                    else {
                        continue;
                    };
                    let k = ((*t - start).num_milliseconds() as f64 / 1000.0).round() as i64;
                    for tick in (*k_seen + 1)..=k.min(last) {
                        let made = start + chrono::Duration::seconds(tick);
                        samples.push((now - made).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                    }
                    *k_seen = (*k_seen).max(k);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stored = app.metrics.readings_stored.load(Ordering::Relaxed);
    let missing: i64 = seen.values().map(|k| last - k).sum();
    trigger.fire();
    for a in agents {
        let _ = tokio::time::timeout(Duration::from_secs(10), a).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), running.wait()).await;
    broker.stop().await;
    if missing > 0 {
        bail!(
            "{missing} enterprise-ticks never became visible within {} s",
            ticks + 30
        );
    }
    Ok((samples, stored as f64 / ticks as f64))
}

/// Broker-only transit times (ms) of `n` QoS 1 messages of `bytes` at `per_sec`.
async fn broker_transit(ctx: &Ctx, run: usize, n: usize, bytes: usize, per_sec: u64) -> Result<Vec<f64>> {
    let broker = Broker::start(&ctx.scratch(&format!("transit-{run}"))).await?;
    let opts = |id: &str| {
        let mut o = MqttOptions::new(id, "127.0.0.1", broker.port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_keep_alive(Duration::from_secs(30));
        o
    };
    let (sub, mut sub_events) = AsyncClient::new(opts("bench-transit-sub"), 64);
    sub.subscribe("bench/transit", QoS::AtLeastOnce).await?;
    // Wait for the SUBACK, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if Instant::now() > deadline {
            bail!("no SUBACK within 10 s");
        }
        if let Ok(Ok(Event::Incoming(Packet::SubAck(_)))) =
            tokio::time::timeout(Duration::from_secs(1), sub_events.poll()).await
        {
            break;
        }
    }
    let (publ, mut pub_events) = AsyncClient::new(opts("bench-transit-pub"), 64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let receiver = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), sub_events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let at = Instant::now();
                    let idx = p
                        .payload
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes);
                    if let Some(i) = idx {
                        if tx.send((i, at)).is_err() {
                            break;
                        }
                    }
                }
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
    });
    let pub_poller = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if tokio::time::timeout(Duration::from_secs(5), pub_events.poll())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut sent = Vec::with_capacity(n);
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / per_sec.max(1)));
    for i in 0..n as u64 {
        interval.tick().await;
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(bytes.max(8), b'x');
        sent.push(Instant::now());
        publ.publish("bench/transit", QoS::AtLeastOnce, false, payload).await?;
    }
    let mut lat = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lat.len() < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some((i, at))) => {
                if let Some(s) = sent.get(i as usize) {
                    lat.push(at.duration_since(*s).as_secs_f64() * 1000.0);
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    receiver.abort();
    pub_poller.abort();
    broker.stop().await;
    if lat.len() < n {
        bail!("{} of {n} messages arrived", lat.len());
    }
    Ok(lat)
}

/// Figures 6 (p50) and 6b (p99).
pub async fn measure(ctx: &Ctx) -> Vec<Row> {
    let mut p50 = Row::new(
        "6",
        "End-to-end freshness p50: reading made at the agent → visible in the aggregator's API state, ~10,000 readings/s",
        Unit::Millis,
    );
    let mut p99 = Row::new("6b", "End-to-end freshness p99 (same runs)", Unit::Millis);
    let (mut b50, mut b99, mut rates, mut counts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let batch_bytes = ctx.payload_bytes / ctx.batches.max(1);
    for run in 0..ctx.runs {
        match run_once(ctx, run).await.context("agents → aggregator") {
            Ok((s, rate)) => {
                p50.runs.extend(stats::percentile(&s, 50.0));
                p99.runs.extend(stats::percentile(&s, 99.0));
                rates.push(rate);
                counts.push(s.len());
            }
            Err(e) => {
                p50.fail(format!("run {}: {e:#}", run + 1));
                p99.fail(format!("run {}: {e:#}", run + 1));
            }
        }
        // Same message rate as the agents: 10,000 readings/s in batches of 100.
        match broker_transit(ctx, run, ctx.sizes.transit_messages, batch_bytes, 100).await {
            Ok(l) => {
                b50.extend(stats::percentile(&l, 50.0));
                b99.extend(stats::percentile(&l, 99.0));
            }
            Err(e) => p50.notes.push(format!("baseline run {} failed: {e:#}", run + 1)),
        }
    }
    if let Some(b) = stats::median(&b50) {
        p50.baseline = Some(("broker transit p50".into(), b));
    }
    if let Some(b) = stats::median(&b99) {
        p99.baseline = Some(("broker transit p99".into(), b));
    }
    let rate = stats::median(&rates).unwrap_or(0.0);
    let how = format!(
        "{AGENTS} in-process agents × {ENTERPRISES_PER_AGENT} enterprises × {METERS} meters, one simulated tick per \
         second for {} s ({} readings/s stored at the median; samples per run: {}); default agent settings \
         (max_batch_items 500, max_batch_age_ms 1000, 16 in flight), default aggregator settings, Mosquitto between. \
         Freshness = the moment the harness saw the tick in the aggregator's state (sampled every ~1 ms: the newest \
         reading per meter that GET /api/v1/zones/{{zone}}/enterprises/{{id}} returns, without the HTTP hop of figure 5) − the tick's timestamp.",
        ctx.sizes.freshness_ticks,
        crate::report::thousands(rate),
        counts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
    );
    let base = format!(
        "Baseline: {} QoS 1 messages of {} bytes at 100 messages/s (= 10,000 readings/s in batches of \
         100) from one rumqttc client through the same Mosquitto settings to another; transit = received − \
         published instants in the harness.",
        ctx.sizes.transit_messages,
        crate::report::thousands(batch_bytes as f64)
    );
    p50.notes.push(how);
    p50.notes.push(base);
    p99.notes.push("Same runs and baseline as 6.".into());
    vec![p50, p99]
}

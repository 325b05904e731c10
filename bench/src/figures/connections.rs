//! Figure 8: many agents on one broker — K rumqttc clients (bounded) connect
//! to one Mosquitto at once, each publishes one retained-free QoS 1 message
//! and stays connected; how fast do they all get in, and what does each
//! connection cost the broker in memory?
//!
//! Baseline: clients connecting one after another (connect, CONNACK,
//! disconnect) to the same broker, as connections per second.

use crate::mosquitto::{memory_of, Broker};
use crate::report::{Row, Unit};
use crate::{stats, Ctx};
use anyhow::{bail, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What a client reports.
enum Step {
    Connected,
    Acked,
}

fn options(id: String, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60));
    o
}

/// One client: connect, publish one QoS 1 message, stay until `stop`.
async fn client(i: usize, port: u16, tx: mpsc::UnboundedSender<Step>, mut stop: watch::Receiver<bool>) {
    let (c, mut events) = AsyncClient::new(options(format!("bench-conn-{i}"), port), 10);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut published = false;
    while Instant::now() < deadline {
        let ev = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            ev = events.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = tx.send(Step::Connected);
                if !published {
                    published = true;
                    let topic = format!("zonesync/v1/bench-zone/conn-{i}/state");
                    let _ = c.try_publish(topic, QoS::AtLeastOnce, false, b"{}".to_vec());
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                let _ = tx.send(Step::Acked);
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let _ = c.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
}

/// The kernel's count of connections dropped because a listen queue was
/// full (TcpExt ListenOverflows in /proc/net/netstat), for this network namespace.
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names.split_whitespace().position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// One run's findings.
struct Storm {
    rate: f64,
    bytes_per_conn: f64,
    all_acked_secs: f64,
    overflows: Option<u64>,
}

/// One run of `k` clients connecting at once.
async fn concurrent(ctx: &Ctx, run: usize, k: usize) -> Result<Storm> {
    let broker = Broker::start(&ctx.scratch(&format!("conn-{run}"))).await?;
    let pid = broker.pid();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = pid.and_then(memory_of).map(|m| m.1).unwrap_or(0);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let overflows_before = listen_overflows();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(k);
    for i in 0..k {
        tasks.push(tokio::spawn(client(i, broker.port, tx.clone(), stop_rx.clone())));
    }
    drop(tx);
    let (mut connected, mut acked) = (0, 0);
    let (mut t_conn, mut t_ack) = (None, None);
    let deadline = t0 + Duration::from_secs(60);
    while (connected < k || acked < k) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(Step::Connected)) => {
                connected += 1;
                if connected == k {
                    t_conn = Some(t0.elapsed());
                }
            }
            Ok(Some(Step::Acked)) => {
                acked += 1;
                if acked == k {
                    t_ack = Some(t0.elapsed());
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = pid.and_then(memory_of).map(|m| m.1).unwrap_or(0);
    let overflows = listen_overflows()
        .zip(overflows_before)
        .map(|(a, b)| a.saturating_sub(b));
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    broker.stop().await;
    let (Some(tc), Some(ta)) = (t_conn, t_ack) else {
        bail!("{connected} of {k} connected and {acked} acknowledged within 60 s");
    };
    Ok(Storm {
        rate: k as f64 / tc.as_secs_f64(),
        bytes_per_conn: after.saturating_sub(before) as f64 / k as f64,
        all_acked_secs: ta.as_secs_f64(),
        overflows,
    })
}

/// Sequential connects (connect, CONNACK, disconnect); connections/s.
async fn sequential(ctx: &Ctx, run: usize, n: usize) -> Result<f64> {
    let broker = Broker::start(&ctx.scratch(&format!("conn-seq-{run}"))).await?;
    let t0 = Instant::now();
    for i in 0..n {
        let (c, mut events) = AsyncClient::new(options(format!("bench-seq-{i}"), broker.port), 10);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if Instant::now() > deadline {
                bail!("client {i}: no CONNACK within 10 s");
            }
            if let Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) =
                tokio::time::timeout(Duration::from_secs(1), events.poll()).await
            {
                break;
            }
        }
        let _ = c.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(100), events.poll()).await;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    broker.stop().await;
    Ok(rate)
}

/// Figures 8 and 8b.
pub async fn measure(ctx: &Ctx) -> Vec<Row> {
    let k = ctx.sizes.connections;
    let mut rate = Row::new(
        "8",
        &format!("Connections: {k} rumqttc clients connecting at once to one Mosquitto"),
        Unit::Rate("connections/s"),
    );
    let mut mem = Row::new(
        "8b",
        &format!("Connections: Mosquitto resident memory per connection ({k} connected)"),
        Unit::KiB,
    );
    let (mut seq, mut acks, mut drops) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..ctx.runs {
        match concurrent(ctx, run, k).await {
            Ok(s) => {
                rate.runs.push(s.rate);
                mem.runs.push(s.bytes_per_conn);
                acks.push(format!("{:.2} s", s.all_acked_secs));
                drops.push(s.overflows.map_or_else(|| "unknown".into(), |d| d.to_string()));
            }
            Err(e) => {
                rate.fail(format!("run {}: {e:#}", run + 1));
                mem.fail(format!("run {}: {e:#}", run + 1));
            }
        }
        match sequential(ctx, run, 50).await {
            Ok(r) => seq.push(r),
            Err(e) => rate.notes.push(format!("baseline run {} failed: {e:#}", run + 1)),
        }
    }
    if let Some(s) = stats::median(&seq) {
        rate.baseline = Some(("50 clients one after another".into(), s));
    }
    rate.notes.push(format!(
        "Each client (all in the harness process): connect (keep-alive 60 s), publish one QoS 1 message, stay \
         connected until the run ends. Timed from the first spawn to the {k}-th CONNACK; every client's PUBACK had \
         arrived after: {}. Bounded at 60 s per run; a fresh broker per run.",
        acks.join(", ")
    ));
    rate.notes.push(format!(
        "Connection attempts the kernel dropped because a listen queue was full during each run (TcpExt \
         ListenOverflows, /proc/net/netstat, whole network namespace): {}. A dropped SYN is retried by the client's \
         kernel after about 1 s, which shows up as a run lasting just over a second.",
        drops.join(", ")
    ));
    mem.notes.push(
        "(VmRSS of Mosquitto with all clients connected − VmRSS before the first client) ÷ clients; no baseline: a \
         broker's per-connection cost has no same-run counterpart here."
            .into(),
    );
    vec![rate, mem]
}

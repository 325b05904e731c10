//! Figure 7: recovery time for a backlog — an agent whose outbox filled up
//! while the zone's link was down reconnects; how long until the
//! aggregator has stored every reading?
//!
//! Each run copies an outbox template (filled while no broker existed, as in
//! figure 3), starts a fresh Mosquitto and an in-process aggregator
//! (connected, persistent session in place), then starts the agent's link;
//! the clock runs from the link's start until `readings_stored` reaches the
//! backlog. The baseline is the time figure 1's broker path would need for
//! the same number of readings at its median rate.

use crate::data;
use crate::figures::drain;
use crate::mosquitto::{prepare_session, Broker};
use crate::report::{Row, Target, Unit};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zonesync_agent::link::LinkStats;
use zonesync_agent::shutdown;
use zonesync_proto::Topic;

/// What one run measured.
struct Run {
    /// Seconds from the link's start until the aggregator stored every reading.
    stored: f64,
    /// Seconds until the agent's outbox was empty.
    agent_done: Option<f64>,
    /// Seconds the outbox took to open (redb verifies every page at open).
    open: f64,
}

async fn run_once(ctx: &Ctx, run: usize) -> Result<Run> {
    let template = ctx.recovery_template()?;
    let dir = ctx.scratch(&format!("recovery-{run}"));
    let broker = Broker::start(&dir.join("broker")).await?;
    let zone = data::zone(data::ZONE)?;
    let registry = dir.join("registry.toml");
    data::write_registry(&registry, &zone, &drain::enterprises()?)?;
    let cfg = data::aggregator_config(&dir, &registry, broker.port, "bench-aggregator-recovery")?;
    prepare_session(broker.port, "bench-aggregator-recovery", &Topic::zone_filters(&zone)).await?;
    let (trigger, signal) = shutdown::channel();
    let running = zonesync_aggregator::start(cfg, signal.clone()).await?;
    let app = running.app.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metrics.mqtt_connected.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let path = dir.join("outbox");
    data::copy_dir(&template.path, &path)?;
    let opening = Instant::now();
    let outbox = Arc::new(drain::open_outbox(&path)?);
    let open = opening.elapsed().as_secs_f64();
    let stats = Arc::new(LinkStats::default());
    let link = drain::link(outbox, broker.port, "bench-recovery", stats.clone())?;
    let total = template.items as u64;
    let t0 = Instant::now();
    let task = tokio::spawn(link.run(signal));
    let deadline = t0 + ctx.limit();
    let mut agent_done = None;
    let mut stored = 0;
    while Instant::now() < deadline {
        if agent_done.is_none() && stats.items_acked.load(Ordering::Relaxed) >= total {
            agent_done = Some(t0.elapsed().as_secs_f64());
        }
        stored = app.metrics.readings_stored.load(Ordering::Relaxed);
        if stored >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    // The agent handles its last PUBACKs a moment after the broker forwarded
    // the batches, so it may finish after the aggregator: keep looking, bounded.
    let grace = Instant::now() + Duration::from_secs(5);
    while agent_done.is_none() && Instant::now() < grace {
        if stats.items_acked.load(Ordering::Relaxed) >= total {
            agent_done = Some(t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    trigger.fire();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), running.wait()).await;
    broker.stop().await;
    if stored < total {
        bail!("only {stored} of {total} readings stored within {:?}", ctx.limit());
    }
    Ok(Run {
        stored: elapsed,
        agent_done,
        open,
    })
}

/// Figure 7.
pub async fn measure(ctx: &Ctx, ceiling: Option<f64>) -> Row {
    let items = ctx.sizes.recovery_readings;
    let mut row = Row::new(
        "7",
        &format!(
            "Recovery: an agent's backlog of {} readings, from reconnecting to all stored by the aggregator",
            crate::report::thousands(items as f64)
        ),
        Unit::Secs,
    );
    if let Some(c) = ceiling {
        row.baseline = Some(("same readings at figure 1's rate".into(), items as f64 / c));
    }
    // Issue 13: a one-hour backlog at 1,000 readings/s (3.6 M) recovered in ≤ 10 s.
    if items >= 3_600_000 {
        row.targets = vec![Target::AtMost(10.0)];
    }
    let mut agent_side = Vec::new();
    let mut opens = Vec::new();
    for run in 0..ctx.runs {
        match run_once(ctx, run).await.context("recovery") {
            Ok(r) => {
                row.runs.push(r.stored);
                agent_side.push(r.agent_done.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "–".into()));
                opens.push(format!("{:.2} s", r.open));
            }
            Err(e) => row.fail(format!("run {}: {e:#}", run + 1)),
        }
    }
    row.notes.push(format!(
        "Backlog: {} enterprises × {} meters per one-second tick, default agent batching and aggregator settings, \
         both in-process, a fresh Mosquitto per run. The agent's outbox was empty (every batch acknowledged by the \
         broker) after: {}.",
        drain::ENTERPRISES,
        drain::METERS,
        agent_side.join(", ")
    ));
    // Not in the figure (its clock starts at the link), but a restarted
    // agent pays it before its first publish: the store's integrity check.
    row.notes.push(format!(
        "Opening the backlog's outbox before the clock starts (redb verifies every page's checksum): {}.",
        opens.join(", ")
    ));
    if let Some(m) = row.median() {
        row.notes.push(format!(
            "That is {} readings/s end to end; a day's backlog of 50 meters at 1 s (4,320,000 readings) would take \
             about {:.0} s at this rate.",
            crate::report::thousands(items as f64 / m),
            4_320_000.0 * m / items as f64
        ));
    }
    row
}

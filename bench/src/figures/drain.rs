//! Figure 3: how fast an agent empties a large outbox once the broker is
//! reachable again.
//!
//! The outbox is filled once, while no broker exists, the way the sources
//! fill it (ticks of 5 enterprises × 20 meters, appended durably), and the
//! closed store is kept as a template; each run drains its own copy. The
//! agent's link (`zonesync_agent::link::Link`, as `run.rs` builds it, with
//! the default batching: 500 items per seal, 16 batches in flight) then
//! publishes to a fresh Mosquitto with no subscriber, so the broker only
//! acknowledges; the clock stops when every item is acknowledged and
//! deleted, and the outbox's own stats are checked to be empty.

use crate::data;
use crate::mosquitto::Broker;
use crate::report::{Row, Target, Unit};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zonesync_agent::config::{MqttConfig, OutboxConfig};
use zonesync_agent::link::{Link, LinkStats};
use zonesync_agent::outbox::Outbox;
use zonesync_agent::shutdown;

/// Enterprises and meters per tick in the outbox template.
pub const ENTERPRISES: u32 = 5;
/// Meters per enterprise.
pub const METERS: usize = 20;

/// Enterprise ids of the template.
pub fn enterprises() -> Result<Vec<zonesync_proto::EnterpriseId>> {
    (0..ENTERPRISES).map(|i| data::enterprise(100 + i)).collect()
}

/// Disk budget of the bench's outboxes: room for figure 7's one-hour backlog
/// of 3.6 M readings (about 300 MB held), which the default 256 MiB budget
/// would partly drop — a gateway meant to ride out an hour at 1,000
/// readings/s needs `disk_budget_bytes` raised likewise.
pub const BENCH_BUDGET_BYTES: u64 = 2 << 30;

/// Opens a bench outbox at `dir`: default settings but [`BENCH_BUDGET_BYTES`].
pub fn open_outbox(dir: &Path) -> Result<Outbox> {
    let cfg = OutboxConfig {
        disk_budget_bytes: BENCH_BUDGET_BYTES,
        ..OutboxConfig::default()
    };
    Ok(Outbox::open_with(
        dir,
        zonesync_agent::outbox::OutboxOptions::from(&cfg),
    )?)
}

/// Builds the outbox template at `dir` with `readings` items; returns the time it took.
pub fn build_template(dir: &Path, readings: usize) -> Result<(usize, Duration)> {
    let t0 = Instant::now();
    let outbox = open_outbox(dir)?;
    let n = data::fill_outbox(&outbox, &enterprises()?, METERS, readings)?;
    outbox.flush()?;
    drop(outbox);
    Ok((n, t0.elapsed()))
}

/// A link for `outbox` to the broker on `port`, with the default settings.
pub fn link(outbox: Arc<Outbox>, port: u16, agent: &str, stats: Arc<LinkStats>) -> Result<Link> {
    Ok(Link {
        agent: data::agent(agent)?,
        zone: data::zone(data::ZONE)?,
        boot: 1,
        enterprises: enterprises()?,
        mqtt: MqttConfig {
            port,
            // The figure is the drain into the broker, PUBACK by PUBACK, as
            // measured before confirmations became the default (no aggregator here).
            end_to_end_confirm: false,
            ..MqttConfig::default()
        },
        upstream: 0,
        batching: OutboxConfig::default(),
        outbox,
        stats,
    })
}

async fn run_once(ctx: &Ctx, template: &Path, items: usize, run: usize) -> Result<f64> {
    let dir = ctx.scratch(&format!("drain-{run}"));
    let path = dir.join("outbox");
    data::copy_dir(template, &path)?;
    let outbox = Arc::new(open_outbox(&path)?);
    let before = outbox.stats();
    if before.pending_items != items as u64 {
        bail!("the outbox copy holds {} items, expected {items}", before.pending_items);
    }
    let broker = Broker::start(&dir.join("broker")).await?;
    let stats = Arc::new(LinkStats::default());
    let l = link(outbox.clone(), broker.port, "bench-drain", stats.clone())?;
    let (trigger, signal) = shutdown::channel();
    let t0 = Instant::now();
    let task = tokio::spawn(l.run(signal));
    let deadline = t0 + ctx.limit();
    while Instant::now() < deadline && stats.items_acked.load(Ordering::Relaxed) < items as u64 {
        if task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = t0.elapsed();
    let acked = stats.items_acked.load(Ordering::Relaxed);
    trigger.fire();
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("the link failed: {e}"),
        Ok(Err(e)) => bail!("the link task failed: {e}"),
        Err(_) => bail!("the link did not stop within 10 s"),
    }
    broker.stop().await;
    let after = outbox.stats();
    if acked < items as u64 || after.pending_items > 0 || after.sealed_batches > 0 {
        bail!(
            "after {elapsed:?}: {acked} of {items} acknowledged; outbox still holds {} pending items and {} sealed batches",
            after.pending_items,
            after.sealed_batches
        );
    }
    drop(outbox);
    // Copies of a large outbox add up; each run's goes once measured.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(acked as f64 / elapsed.as_secs_f64())
}

/// Figure 3, against the publish-only ceiling (figure 1b).
pub async fn measure(ctx: &Ctx, publish_ceiling: Option<f64>) -> Row {
    let mut row = Row::new(
        "3",
        "Agent drain: a full outbox (filled while no broker was reachable) emptied through the link into Mosquitto",
        Unit::Rate("readings/s"),
    );
    row.targets = vec![Target::AtLeast(200_000.0)];
    if let Some(c) = publish_ceiling {
        row.baseline = Some(("figure 1b, publish only".into(), c));
    }
    let template = match ctx.outbox_template() {
        Ok(t) => t,
        Err(e) => {
            row.fail(format!("building the outbox: {e:#}"));
            return row;
        }
    };
    for run in 0..ctx.runs {
        match run_once(ctx, &template.path, template.items, run)
            .await
            .context("draining")
        {
            Ok(v) => row.runs.push(v),
            Err(e) => row.fail(format!("run {}: {e:#}", run + 1)),
        }
    }
    row.notes.push(format!(
        "{} readings in the outbox ({} enterprises × {METERS} meters per one-second tick; filling it took {:.1} s, \
         {} readings/s, appended in durable chunks of about 10,000); each run drains a copy of it. Default batching \
         (max_batch_items 500, max_in_flight 16): each seal of 500 items yields {} batches of {} readings.",
        crate::report::thousands(template.items as f64),
        ENTERPRISES,
        template.fill.as_secs_f64(),
        crate::report::thousands(template.items as f64 / template.fill.as_secs_f64()),
        ENTERPRISES,
        500 / ENTERPRISES as usize
    ));
    row.notes.push(
        "Timed from the link's start (connecting included) until LinkStats.items_acked reached the total; \
         afterwards Outbox::stats() reported 0 pending items and 0 sealed batches in every successful run. \
         Nobody subscribes, so Mosquitto only acknowledges (the aggregator's side is figure 2)."
            .into(),
    );
    if let Some(m) = row.median() {
        if m < 200_000.0 {
            row.notes.push(format!(
                "Target missed: at the median rate a 1,000,000-reading backlog takes {:.1} s instead of ≤ 5 s.",
                1_000_000.0 / m
            ));
        }
    }
    row
}

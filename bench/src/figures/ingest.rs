//! Figure 2: readings per second through the aggregator — MQTT in,
//! validation, de-duplication, sled storage with a flush before every
//! acknowledgement, and the zone state update.
//!
//! The aggregator runs in-process (`zonesync_aggregator::start`) against a
//! fresh Mosquitto and a fresh store per run, with a registry of the
//! enterprise the batches are about. Its persistent session is created before
//! it starts, so no batch can arrive before its subscription. Two shapes:
//! - **2**: the publisher runs while the aggregator consumes, exactly like
//!   figure 1 with the aggregator in the subscriber's place;
//! - **2b**: every batch is queued in the broker first (an aggregator coming
//!   back after an outage), then the aggregator starts and drains the queue;
//! - **2n**: as 2, with the same batches published newest first (an agent's
//!   backlog drained newest first): every register lands before the ones
//!   already held, against figure 2's median in the same run.
//!
//! Timing ends when `app.metrics.readings_stored` reaches the total.

use crate::data::{self, READINGS_PER_BATCH, ZONE};
use crate::mosquitto::{prepare_session, publisher, wait_child, Broker};
use crate::report::{Row, Target, Unit};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use zonesync_agent::shutdown;
use zonesync_proto::Topic;

const CLIENT_ID: &str = "bench-aggregator";

/// What one run saw.
struct Outcome {
    rate: f64,
    dead_letters: u64,
    duplicates: u64,
    reasons: String,
}

/// How a run feeds the aggregator.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Published while it consumes, oldest first (figure 2).
    Live,
    /// Queued in the broker before it starts (figure 2b).
    Queued,
    /// Published while it consumes, newest first (figure 2n).
    NewestFirst,
}

async fn run_once(ctx: &Ctx, run: usize, shape: Shape) -> Result<Outcome> {
    let queued_first = shape == Shape::Queued;
    let lines = if shape == Shape::NewestFirst {
        &ctx.lines_newest_first
    } else {
        &ctx.lines
    };
    let dir = ctx.scratch(&format!(
        "ingest-{}-{run}",
        match shape {
            Shape::Live => "live",
            Shape::Queued => "queued",
            Shape::NewestFirst => "newest-first",
        }
    ));
    let broker = Broker::start(&dir.join("broker")).await?;
    let zone = data::zone(ZONE)?;
    let registry = dir.join("registry.toml");
    data::write_registry(&registry, &zone, std::slice::from_ref(&ctx.enterprise))?;
    let cfg = data::aggregator_config(&dir, &registry, broker.port, CLIENT_ID)?;
    prepare_session(broker.port, CLIENT_ID, &Topic::zone_filters(&zone)).await?;
    let total = (ctx.batches * READINGS_PER_BATCH) as u64;

    let mut publ = None;
    if queued_first {
        let mut p = publisher(broker.port, &ctx.topic, lines)?;
        let st = wait_child(&mut p, "mosquitto_pub -l", ctx.limit()).await?;
        if !st.success() {
            bail!("mosquitto_pub exited with {st}");
        }
    }
    let (trigger, signal) = shutdown::channel();
    let running = zonesync_aggregator::start(cfg, signal)
        .await
        .context("starting the aggregator")?;
    let app = running.app.clone();
    let t0 = if queued_first {
        Instant::now()
    } else {
        // Connected first, so the clock measures ingest, not the aggregator's start-up.
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.metrics.mqtt_connected.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let t0 = Instant::now();
        publ = Some(publisher(broker.port, &ctx.topic, lines)?);
        t0
    };
    let deadline = t0 + ctx.limit();
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = app.metrics.readings_stored.load(Ordering::Relaxed);
        if stored >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = t0.elapsed();
    if let Some(mut p) = publ {
        wait_child(&mut p, "mosquitto_pub -l", Duration::from_secs(30)).await?;
    }
    let out = Outcome {
        rate: stored as f64 / elapsed.as_secs_f64(),
        dead_letters: app.metrics.dead_letters.load(Ordering::Relaxed),
        duplicates: app.metrics.batches_duplicate.load(Ordering::Relaxed),
        reasons: app
            .dead_letters
            .list(5, None)
            .unwrap_or_default()
            .into_iter()
            .map(|d| format!("{} on {} ({})", d.labels.join("+"), d.topic, d.reasons.join("; ")))
            .collect::<Vec<_>>()
            .join(" | "),
    };
    trigger.fire();
    let _ = tokio::time::timeout(Duration::from_secs(10), running.wait()).await;
    broker.stop().await;
    if stored < total {
        bail!(
            "only {stored} of {total} readings stored within {:?} ({} readings/s so far)",
            ctx.limit(),
            out.rate as u64
        );
    }
    Ok(out)
}

/// Figures 2 and 2b, against the ceiling of figure 1.
pub async fn measure(ctx: &Ctx, ceiling: Option<f64>) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for shape in [Shape::Live, Shape::Queued, Shape::NewestFirst] {
        let queued_first = shape == Shape::Queued;
        let mut row = match shape {
            Shape::Queued => Row::new(
                "2b",
                "Aggregator ingest, draining batches queued in Mosquitto before it starts",
                Unit::Rate("readings/s"),
            ),
            Shape::Live => Row::new(
                "2",
                "Aggregator ingest: mosquitto_pub -l → Mosquitto → aggregator (validate, de-duplicate, store, state)",
                Unit::Rate("readings/s"),
            ),
            Shape::NewestFirst => Row::new(
                "2n",
                "Aggregator ingest as figure 2, the same batches published newest first",
                Unit::Rate("readings/s"),
            ),
        };
        if shape == Shape::NewestFirst {
            // Against oldest first in the same run: within 2 × means ≥ 0.5 ×.
            row.targets = vec![Target::RatioAtLeast(0.5)];
            if let Some(m) = rows.first().and_then(Row::median) {
                row.baseline = Some(("figure 2, oldest first".into(), m));
            }
        } else {
            row.targets = vec![Target::AtLeast(1_000_000.0), Target::RatioAtLeast(0.4)];
            if let Some(c) = ceiling {
                row.baseline = Some(("figure 1, broker path".into(), c));
            }
        }
        let mut odd = Vec::new();
        for run in 0..ctx.runs {
            match run_once(ctx, run, shape).await {
                Ok(o) => {
                    row.runs.push(o.rate);
                    if o.dead_letters > 0 || o.duplicates > 0 {
                        odd.push(format!(
                            "run {}: dead letters {}, duplicate batches {}: {}",
                            run + 1,
                            o.dead_letters,
                            o.duplicates,
                            o.reasons
                        ));
                    }
                }
                Err(e) => row.fail(format!("run {}: {e:#}", run + 1)),
            }
        }
        row.notes.push(format!(
            "{} batches × {READINGS_PER_BATCH} readings (the file of figure 1); in-process aggregator with its \
             default settings (store cache 256 MiB, sled flush before each group of acknowledgements), \
             Mosquitto allowing 100 unacknowledged messages in flight to it as deploy/mosquitto/zonesync.conf does; \
             fresh store and broker per run.",
            crate::report::thousands(ctx.batches as f64)
        ));
        if queued_first {
            row.notes.push(
                "Timed from the moment `zonesync_aggregator::start` returned (store open, connecting) until the \
                 last reading was stored; the publisher had finished before."
                    .into(),
            );
        } else {
            row.notes.push(
                "Timed from the publisher's start (aggregator already connected) until the last reading was \
                 stored; publisher, broker and aggregator share the machine's cores."
                    .into(),
            );
        }
        if odd.is_empty() {
            row.notes
                .push("Every run stored every reading exactly once: no dead letters, no duplicate batches.".into());
        } else {
            row.notes.extend(odd);
        }
        if let (Some(m), Some(c), false) = (row.median(), ceiling, shape == Shape::NewestFirst) {
            let need = (1_000_000.0f64).max(0.4 * c);
            if m < need {
                row.notes.push(format!(
                    "To meet both targets the median must rise from {} to {} readings/s ({:.1} × faster).",
                    crate::report::thousands(m),
                    crate::report::thousands(need),
                    need / m
                ));
            }
        }
        rows.push(row);
    }
    rows
}

//! Figure 9: start-up rebuild — how long an aggregator takes from `App::open`
//! to serving when its store holds millions of readings: the batch log read
//! back and replayed through the ledger and the read model (what makes the
//! rebuilt state the live one).
//!
//! The store is written once through `Store::append` (the same records
//! ingest writes: batches of 100 registers of 100 meters, enterprises in
//! turn, one minute apart), then opened `runs` times.

use crate::data::{self, ZONE};
use crate::report::{Row, Unit};
use crate::Ctx;
use anyhow::{Context, Result};
use chrono::{Duration, Utc};
use std::time::Instant;
use zonesync_aggregator::app::App;
use zonesync_aggregator::store::Store;
use zonesync_proto::{Accepted, AgentId, CanonicalReading, ReadingTime};

/// Enterprises the readings are spread over.
const ENTERPRISES: u32 = 100;
/// Meters per enterprise, one reading each per batch.
const METERS: usize = 100;

fn write_store(ctx: &Ctx, dir: &std::path::Path, readings: usize) -> Result<std::path::PathBuf> {
    let zone = data::zone(ZONE)?;
    let ents: Vec<_> = (1..=ENTERPRISES).map(data::enterprise).collect::<Result<_>>()?;
    let registry = dir.join("registry.toml");
    data::write_registry(&registry, &zone, &ents)?;
    let store = Store::open(&dir.join("aggregator").join("store"), 256 << 20)?;
    let agent = AgentId::parse("bench-agent")?;
    let batches = readings.div_ceil(METERS);
    let start = Utc::now() - Duration::minutes(batches as i64 / i64::from(ENTERPRISES) + 60);
    for b in 0..batches {
        let e = &ents[b % ents.len()];
        let tick = (b / ents.len()) as i64;
        let ts = start + Duration::minutes(tick);
        let a = Accepted {
            agent: agent.clone(),
            boot: 1,
            outbox: None,
            seq: b as u64 + 1,
            digest: format!("{b:032x}"),
            sent_at: ts,
            zone: zone.clone(),
            enterprise: e.clone(),
            backfill: false,
            readings: (0..METERS)
                .map(|m| CanonicalReading {
                    indicator: "electricity".into(),
                    point: format!("M{}", m + 1).into(),
                    value: 10_000.0 * (m as f64 + 1.0) + 2.5 * tick as f64,
                    at: ReadingTime::Ts(ts),
                })
                .collect(),
            declarations: vec![],
            refused: vec![],
        };
        store.append(ts, &a)?;
    }
    store.flush()?;
    let _ = ctx;
    Ok(registry)
}

/// Figure 9.
pub async fn measure(ctx: &Ctx) -> Row {
    let readings = ctx.sizes.rebuild_readings;
    let mut row = Row::new(
        "9",
        &format!(
            "Start-up rebuild: App::open on a store of {} readings (batch log replayed through the ledger)",
            crate::report::thousands(readings as f64)
        ),
        Unit::Secs,
    );
    let dir = ctx.scratch("rebuild");
    let t = Instant::now();
    let registry = match write_store(ctx, &dir, readings).context("writing the store") {
        Ok(r) => r,
        Err(e) => {
            row.fail(format!("{e:#}"));
            return row;
        }
    };
    let written = t.elapsed();
    for run in 0..ctx.runs {
        let cfg = match data::aggregator_config(&dir, &registry, 1, "bench-rebuild") {
            Ok(c) => c,
            Err(e) => {
                row.fail(format!("{e:#}"));
                return row;
            }
        };
        let t = Instant::now();
        match App::open(&cfg) {
            Ok(app) => {
                row.runs.push(t.elapsed().as_secs_f64());
                let held: u64 = app
                    .state
                    .read()
                    .map(|st| st.zones.values().map(|z| z.readings_stored).sum())
                    .unwrap_or(0);
                if held != readings as u64 {
                    row.fail(format!("run {}: {held} readings rebuilt of {readings}", run + 1));
                }
            }
            Err(e) => row.fail(format!("run {}: {e:#}", run + 1)),
        }
        // sled lets go of its lock from a background thread.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    row.notes.push(format!(
        "{} batches of {METERS} registers over {ENTERPRISES} enterprises, written once through Store::append in \
         {:.1} s; each run opens the store afresh (sled, 256 MiB cache) and replays every record into the ledger \
         and the zone state; every run rebuilt all {} readings.",
        crate::report::thousands(readings.div_ceil(METERS) as f64),
        written.as_secs_f64(),
        crate::report::thousands(readings as f64),
    ));
    row
}

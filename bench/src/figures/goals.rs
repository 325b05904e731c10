//! Figure 5: latency of `GET /api/v1/zones/{zone}/goals` for a zone of
//! 25,000 enterprises, against `GET /healthz` on the same server.
//!
//! The aggregator runs in-process with a generated registry; every
//! enterprise's declarations and monthly figures go through
//! `zonesync_aggregator::ingest::handle` (validation, registry admission,
//! store, state: the same path as MQTT, without the broker), then the store
//! is flushed. Requests are sequential, over one keep-alive connection
//! (reqwest), bounded in count and in time; each run is one round.
//!
//! The aggregator keeps each zone's goal tallies up to date as batches are
//! applied (`goals::incremental`) and keeps the last table per zone and
//! period until the zone's data changes (`goals::cache`), so two cases are
//! measured:
//! - **cached**: nothing changed since the previous request (5, 5b);
//! - **after a change**: one new monthly figure is ingested just before each
//!   request, as happens all the time while meters report, so the table is
//!   made again from the tallies the ingest just updated (5c, 5d). Only the
//!   GET is timed; the ingest of the change (which now includes the tally
//!   update) is timed apart and given in 5c's notes.

use crate::data;
use crate::mosquitto::Broker;
use crate::report::{Row, Target, Unit};
use crate::{stats, Ctx};
use anyhow::{bail, Context, Result};
use chrono::{Datelike, Utc};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use zonesync_agent::shutdown;
use zonesync_aggregator::ingest::{handle, Handled};
use zonesync_proto::{AgentId, EnterpriseId, Period, Topic, ZoneId, CST};

const ZONE: &str = "bench-large";

/// Latencies (ms) of up to `n` sequential GETs of `url`, within `limit`; and the last body's size.
async fn round(http: &reqwest::Client, url: &str, n: usize, limit: Duration) -> Result<(Vec<f64>, usize)> {
    let deadline = Instant::now() + limit;
    let mut lat = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        if Instant::now() >= deadline {
            break;
        }
        let (ms, b) = get(http, url).await?;
        lat.push(ms);
        bytes = b;
    }
    Ok((lat, bytes))
}

/// One timed GET: milliseconds and body size; an error status is an error.
async fn get(http: &reqwest::Client, url: &str) -> Result<(f64, usize)> {
    let t0 = Instant::now();
    let r = http.get(url).send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        bail!(
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok((ms, body.len()))
}

/// The month before the current one, China time.
fn last_month() -> Period {
    let now = Utc::now().with_timezone(&CST);
    let (y, m) = if now.month() == 1 {
        (now.year() - 1, 12)
    } else {
        (now.year(), now.month() - 1)
    };
    Period::Month(y, m)
}

/// An aggregator serving one generated zone, fed and flushed.
struct Served {
    running: zonesync_aggregator::Running,
    trigger: shutdown::Trigger,
    broker: Broker,
    zone: ZoneId,
    ents: Vec<EnterpriseId>,
    agent: AgentId,
    period: Period,
    feed: Duration,
    next_seq: u64,
}

impl Served {
    fn goals_url(&self) -> String {
        format!(
            "http://{}/api/v1/zones/{ZONE}/goals?period={}",
            self.running.http_addr, self.period
        )
    }

    /// Ingests one corrected monthly figure for the `i`-th enterprise (the zone's data changes).
    fn change(&mut self, i: usize) -> Result<()> {
        let e = &self.ents[i % self.ents.len()];
        self.next_seq += 1;
        let payload = data::correction_batch(&self.agent, &self.zone, e, self.next_seq, self.period, i);
        let topic = Topic::data(&self.zone, &self.agent, e);
        match handle(&self.running.app.ingest(), &topic, &payload, Utc::now())? {
            Handled::Stored => Ok(()),
            other => bail!("a correction batch was not stored: {other:?}"),
        }
    }

    /// Latencies (ms) of up to `n` GETs, each right after a change, within `limit`;
    /// and how long ingesting each change took (ms).
    async fn after_changes(
        &mut self,
        http: &reqwest::Client,
        n: usize,
        limit: Duration,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let url = self.goals_url();
        let deadline = Instant::now() + limit;
        let mut lat = Vec::with_capacity(n);
        let mut ingest = Vec::with_capacity(n);
        for i in 0..n {
            if Instant::now() >= deadline {
                break;
            }
            let t0 = Instant::now();
            self.change(i * 7919)?;
            ingest.push(t0.elapsed().as_secs_f64() * 1000.0);
            lat.push(get(http, &url).await?.0);
        }
        Ok((lat, ingest))
    }

    async fn stop(self) {
        self.trigger.fire();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.running.wait()).await;
        self.broker.stop().await;
    }
}

/// Starts an aggregator for a zone of `n` enterprises and feeds each one's
/// declarations and monthly figures through `ingest::handle`.
async fn serve_zone(ctx: &Ctx, n: usize, name: &str) -> Result<Served> {
    let dir = ctx.scratch(name);
    let broker = Broker::start(&dir.join("broker")).await?;
    let zone = data::zone(ZONE)?;
    let ents: Vec<_> = (0..n as u32)
        .map(|i| data::enterprise(1_000_000 + i))
        .collect::<Result<_>>()?;
    let registry = dir.join("registry.toml");
    data::write_registry(&registry, &zone, &ents)?;
    let cfg = data::aggregator_config(&dir, &registry, broker.port, "bench-aggregator-goals")?;
    let (trigger, signal) = shutdown::channel();
    let running = zonesync_aggregator::start(cfg, signal)
        .await
        .context("starting the aggregator")?;
    let app = running.app.clone();
    let ingest = app.ingest();
    let period = last_month();
    let agent = data::agent("bench-profile")?;
    let t0 = Instant::now();
    let now = Utc::now();
    let mut stored = 0;
    for (i, e) in ents.iter().enumerate() {
        let payload = data::profile_batch(&agent, &zone, e, i, i as u64 + 1, period);
        let topic = Topic::data(&zone, &agent, e);
        if handle(&ingest, &topic, &payload, now)? == Handled::Stored {
            stored += 1;
        }
    }
    app.store.flush()?;
    let feed = t0.elapsed();
    let dead = app.metrics.dead_letters.load(Ordering::Relaxed);
    if stored != n || dead > 0 {
        bail!(
            "fed {n} enterprises: {stored} stored, {dead} dead letters (first: {:?})",
            app.dead_letters
                .list(1, None)
                .ok()
                .and_then(|d| d.into_iter().next())
                .map(|d| d.reasons)
        );
    }
    Ok(Served {
        running,
        trigger,
        broker,
        zone,
        ents,
        agent,
        period,
        feed,
        next_seq: n as u64 + 1,
    })
}

/// The p50 after a change on a zone of `n` enterprises (a scaling point).
async fn p50_after_change_at(ctx: &Ctx, n: usize, requests: usize) -> Result<(f64, usize)> {
    let mut served = serve_zone(ctx, n, &format!("goals-{n}")).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    round(&http, &served.goals_url(), 1, Duration::from_secs(30)).await?;
    let res = served.after_changes(&http, requests, Duration::from_secs(10)).await;
    served.stop().await;
    let (lat, _) = res?;
    Ok((stats::median(&lat).unwrap_or(f64::NAN), lat.len()))
}

/// Figures 5 and 5b (cached), 5c and 5d (after a change).
pub async fn measure(ctx: &Ctx) -> Vec<Row> {
    let n = crate::report::thousands(ctx.sizes.goal_enterprises as f64);
    let mut rows = vec![
        Row::new(
            "5",
            &format!("Goal query p50, cached: GET /api/v1/zones/{{zone}}/goals, zone of {n} enterprises"),
            Unit::Millis,
        ),
        Row::new("5b", &format!("Goal query p99, cached, zone of {n}"), Unit::Millis),
        Row::new(
            "5c",
            &format!(
                "Goal query p50 right after the zone's data changed (table made from the kept tallies), zone of {n}"
            ),
            Unit::Millis,
        ),
        Row::new(
            "5d",
            &format!("Goal query p99 right after a change, zone of {n}"),
            Unit::Millis,
        ),
    ];
    rows[1].targets = vec![Target::AtMost(5.0)];
    rows[3].targets = vec![Target::AtMost(5.0)];
    if let Err(e) = measure_into(ctx, &mut rows).await {
        for r in &mut rows {
            r.fail(format!("{e:#}"));
        }
    }
    rows
}

async fn measure_into(ctx: &Ctx, rows: &mut [Row]) -> Result<()> {
    let n = ctx.sizes.goal_enterprises;
    let mut served = serve_zone(ctx, n, "goals").await?;
    let (period, feed) = (served.period, served.feed);
    let goals_url = served.goals_url();
    let health_url = format!("http://{}/healthz", served.running.http_addr);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    // Warm-up: connection set up, table computed once; not counted.
    round(&http, &goals_url, 1, Duration::from_secs(30)).await?;
    round(&http, &health_url, 20, Duration::from_secs(5)).await?;
    let (mut health50, mut health99) = (Vec::new(), Vec::new());
    let (mut counts, mut cold_counts, mut ingest_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut body = 0;
    for _ in 0..ctx.runs {
        let (g, bytes) = round(&http, &goals_url, ctx.sizes.goal_requests, ctx.sizes.goal_round_limit).await?;
        let (h, _) = round(&http, &health_url, ctx.sizes.health_requests, Duration::from_secs(20)).await?;
        let (c, ing) = served
            .after_changes(&http, ctx.sizes.goal_cold_requests, ctx.sizes.goal_round_limit)
            .await?;
        ingest_ms.extend(ing);
        body = bytes;
        counts.push(format!(
            "{} cached + {} after a change / {} healthz",
            g.len(),
            c.len(),
            h.len()
        ));
        cold_counts.push(c.len());
        rows[0].runs.extend(stats::percentile(&g, 50.0));
        rows[1].runs.extend(stats::percentile(&g, 99.0));
        rows[2].runs.extend(stats::percentile(&c, 50.0));
        rows[3].runs.extend(stats::percentile(&c, 99.0));
        health50.extend(stats::percentile(&h, 50.0));
        health99.extend(stats::percentile(&h, 99.0));
    }
    served.stop().await;

    for (i, r) in rows.iter_mut().enumerate() {
        let (name, v) = if i % 2 == 0 {
            ("GET /healthz p50", stats::median(&health50))
        } else {
            ("GET /healthz p99", stats::median(&health99))
        };
        if let Some(v) = v {
            r.baseline = Some((name.into(), v));
        }
    }

    // Scaling points, so any growth with the zone's size shows in the same run.
    let mut points = Vec::new();
    for m in [n / 25, n / 5] {
        match p50_after_change_at(ctx, m, 10).await {
            Ok((v, k)) => points.push(format!(
                "{} enterprises: p50 {} over {k} requests",
                crate::report::thousands(m as f64),
                Unit::Millis.show(v)
            )),
            Err(e) => points.push(format!("{m} enterprises: failed ({e:#})")),
        }
    }

    let fed = format!(
        "Zone of {} enterprises (80 % above-scale, 90 % industrial, 6 industry codes), every goal preset of \
         goals.toml applying; each enterprise fed one batch of 9 declarations and 7 monthly figures for {period} \
         through ingest::handle ({:.1} s for all, {} batches/s, while the aggregator's goal refresher ran), then \
         queried with ?period={period}. Response: {} bytes.",
        crate::report::thousands(n as f64),
        feed.as_secs_f64(),
        crate::report::thousands(n as f64 / feed.as_secs_f64()),
        crate::report::thousands(body as f64)
    );
    let per_run = format!(
        "Each run: up to {} sequential cached requests, then {} sequential /healthz requests, then up to {} \
         requests each right after ingesting one corrected monthly figure (each series at most {:?}); one \
         keep-alive connection, after 1 + 20 warm-up requests; percentiles by nearest rank. Requests per run: {}.",
        ctx.sizes.goal_requests,
        ctx.sizes.health_requests,
        ctx.sizes.goal_cold_requests,
        ctx.sizes.goal_round_limit,
        counts.join("; ")
    );
    rows[0].notes.push(fed);
    rows[0].notes.push(per_run);
    for r in rows.iter_mut().skip(1) {
        r.notes.push("Set-up and requests as in 5, same runs.".into());
    }
    rows[2].notes.push(format!(
        "The same after-a-change query on smaller zones, same run, fed the same way: {}.",
        points.join("; ")
    ));
    rows[2].notes.push(
        "While meters report, every stored batch changes the zone's data, so this is the path a query takes; the \
         table is made from tallies the ingest keeps up to date (goals::incremental), with no scan of the \
         zone's enterprises."
            .into(),
    );
    if let (Some(p50), Some(max)) = (
        stats::percentile(&ingest_ms, 50.0),
        ingest_ms.iter().copied().reduce(f64::max),
    ) {
        rows[2].notes.push(format!(
            "Ingesting each change (ingest::handle: validation, store write, state and tally update; not flushed) \
             took p50 {} and at most {} over {} changes, same runs.",
            Unit::Millis.show(p50),
            Unit::Millis.show(max),
            ingest_ms.len()
        ));
    }
    let fewest = cold_counts.iter().copied().min().unwrap_or(0);
    if fewest < 100 {
        rows[3].notes.push(format!(
            "With {fewest} requests in a run, the nearest-rank p99 of that run is its slowest request."
        ));
    }
    if ctx.sizes.goal_enterprises != 25_000 {
        for r in rows.iter_mut() {
            r.notes.push(
                "Quick mode uses a smaller zone than the issue's 25,000 enterprises; run without --quick for the \
                 figure the target refers to."
                    .into(),
            );
        }
    }
    Ok(())
}

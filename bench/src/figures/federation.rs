//! Figure 10: a federation center fed by 180 zones (issue 18) — how long a
//! zone's change takes to reach the center, the center's resident memory,
//! and its rebuild time from the stream.
//!
//! The zones are synthesised: each zone's snapshot is made directly with the
//! federation wire types (every preset × the basis, month, quarter, year and
//! year-to-date spans of one month, the cells a zone publishes), so 180
//! zones need no 180 aggregators. They are published to one local
//! nats-server with JetStream: a single hub node, its stream taking the
//! zones' subjects directly (on a real hub the stream sources each zone's
//! leaf stream; sourcing is NATS's work and not measured here). The center
//! is the release `zonesync-aggregator center` process, reading that stream
//! with its durable consumer, as deployed.
//!
//! - Change to center: per change, one zone's snapshot at a new version
//!   with one figure changed; its `data_at` is the moment the zone's table
//!   changed (the snapshot made), and the center measures, on the same
//!   clock, when its merge — which every table request reads — holds it
//!   (`lag_ms`). The zone's own table update is the start of the interval.
//! - Memory: the center's VmRSS once it holds all 180 zones.
//! - Rebuild: the center SIGKILLed and started again, from the start until
//!   its rebuild from the stream is over and it holds all 180 zones.

use crate::report::{Row, Target, Unit};
use crate::Ctx;
use anyhow::{anyhow, bail, Context, Result};
use async_nats::jetstream;
use chrono::Utc;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zonesync_aggregator::federation::snapshot::cells_for;
use zonesync_aggregator::federation::wire::{subject, Cell, SpanKey, ZoneTallies, SCHEMA};
use zonesync_aggregator::goals::{Asked, GoalDef, GoalSettings, SpanChoice, Tally};
use zonesync_proto::{Period, ZoneId};

/// Zones (a province has about 180).
const ZONES: usize = 180;
/// Cities the zones are spread over.
const CITIES: usize = 18;
/// Changes timed per run.
const CHANGES: usize = 200;
/// The month the snapshots are for.
const PERIOD: Period = Period::Month(2026, 10);
/// Longest wait for the center to hold something.
const WAIT: Duration = Duration::from_secs(120);

fn zone_id(i: usize) -> Result<ZoneId> {
    Ok(ZoneId::parse(&format!("z{i:03}"))?)
}

/// One zone's snapshot at `version`; `bump` changes one figure.
fn snapshot(
    zone: &ZoneId,
    version: u64,
    cells: &[(usize, zonesync_aggregator::goals::Span)],
    goals: &[GoalDef],
    bump: u64,
) -> ZoneTallies {
    let now = Utc::now();
    ZoneTallies {
        schema: SCHEMA,
        zone: zone.clone(),
        epoch: 1,
        version,
        data_at: now,
        published_at: now,
        settings: GoalSettings::default(),
        cells: cells
            .iter()
            .enumerate()
            .filter_map(|(k, &(gi, span))| {
                let mut t = Tally {
                    in_scope: 40 + k % 7,
                    reported: 35 + k % 5,
                    unknown: 5 - k % 5,
                    months: 1,
                    ..Tally::default()
                };
                t.num
                    .add(1000.0 + k as f64 * 3.25 + if k == 0 { bump as f64 } else { 0.0 });
                t.den.add(5000.0 + k as f64 * 1.5);
                Some(Cell {
                    goal: goals.get(gi)?.id.clone(),
                    span: SpanKey(span),
                    tally: t,
                })
            })
            .collect(),
    }
}

/// The center process.
struct Center {
    child: Child,
    base: String,
}

impl Center {
    fn start(bin: &Path, config: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(["center", "-c"])
            .arg(config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("API on ")
            .ok_or_else(|| anyhow!("the center said {line:?}"))?;
        Ok(Self {
            child,
            base: addr.to_owned(),
        })
    }

    async fn status(&self, http: &reqwest::Client) -> Result<Value> {
        Ok(http
            .get(format!("{}/api/v1/center/status", self.base))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Polls until every zone is held at `version` or later (per zone), returning the status.
    async fn until_holds(&self, http: &reqwest::Client, want: impl Fn(&str) -> u64) -> Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status(http).await?;
            let all = s["ready"] == true
                && s["zones"].as_array().is_some_and(|zs| {
                    zs.iter()
                        .all(|z| z["version"].as_u64().unwrap_or(0) >= want(z["zone"].as_str().unwrap_or("")))
                });
            if all {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("the center did not come to hold every zone in {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn rss(&self) -> Option<u64> {
        crate::mosquitto::memory_of(self.child.id()).map(|(_, now)| now)
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Center {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The aggregator binary of the bench's own profile (release, as the bench
/// is meant to run), built first unless `--no-build`.
async fn aggregator_binary(build: bool) -> Result<PathBuf> {
    let ws = crate::workspace();
    if build {
        let mut args = vec!["build", "-p", "zonesync-aggregator", "--bin", "zonesync-aggregator"];
        if !cfg!(debug_assertions) {
            args.push("--release");
        }
        let st = tokio::process::Command::new("cargo")
            .args(&args)
            .current_dir(&ws)
            .status()
            .await?;
        if !st.success() {
            bail!("cargo {} failed", args.join(" "));
        }
    }
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .ok_or_else(|| anyhow!("no directory for {}", exe.display()))?
        .join("zonesync-aggregator");
    if !p.exists() {
        bail!(
            "{} is missing: build it (cargo build --release -p zonesync-aggregator)",
            p.display()
        );
    }
    Ok(p)
}

fn nats_binary() -> Result<PathBuf> {
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .ok_or_else(|| anyhow!("nats-server is not installed (scripts/test.sh installs it)"))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Nats(Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Figure 10's rows.
pub async fn measure(ctx: &Ctx) -> Vec<Row> {
    let title = format!("Federation: center fed by {ZONES} zones × every preset × 5 spans");
    let mut p50 = Row::new(
        "10",
        &format!("{title}: zone table change → center holds it, p50"),
        Unit::Millis,
    );
    let mut p99 = Row::new(
        "10b",
        &format!("{title}: zone table change → center holds it, p99"),
        Unit::Millis,
    );
    p99.targets.push(Target::AtMost(500.0));
    let mut mem = Row::new("10c", &format!("{title}: center resident memory"), Unit::Bytes);
    mem.targets.push(Target::AtMost(150.0 * 1024.0 * 1024.0));
    let mut rebuild = Row::new("10d", &format!("{title}: center rebuild from the stream"), Unit::Secs);
    rebuild.targets.push(Target::AtMost(10.0));
    if let Err(e) = run(ctx, &mut p50, &mut p99, &mut mem, &mut rebuild).await {
        for r in [&mut p50, &mut p99, &mut mem, &mut rebuild] {
            r.fail(format!("{e:#}"));
        }
    }
    vec![p50, p99, mem, rebuild]
}

async fn run(ctx: &Ctx, p50: &mut Row, p99: &mut Row, mem: &mut Row, rebuild: &mut Row) -> Result<()> {
    let bin = aggregator_binary(ctx.build_agent).await?;
    let dir = ctx.scratch("federation");
    // The hub: one nats-server with JetStream.
    let port = free_port()?;
    std::fs::write(
        dir.join("nats.conf"),
        format!(
            "listen: \"127.0.0.1:{port}\"\nserver_name: bench-hub\njetstream {{ store_dir: \"{}\", domain: \"hub\" }}\n",
            dir.join("js").display()
        ),
    )?;
    let _nats = Nats(
        Command::new(nats_binary()?)
            .arg("-c")
            .arg(dir.join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let url = format!("nats://127.0.0.1:{port}");
    let client = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match async_nats::connect(&url).await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let js = jetstream::with_domain(client, "hub");
    js.create_stream(jetstream::stream::Config {
        name: "ZONESYNC_TALLIES".into(),
        subjects: vec!["zonesync.tallies.>".into()],
        max_messages_per_subject: 4,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow!("creating the hub stream: {e}"))?;

    // 180 zones over 18 cities, every preset in force.
    let mut registry = String::new();
    let ids: Vec<ZoneId> = (0..ZONES).map(zone_id).collect::<Result<_>>()?;
    for (i, z) in ids.iter().enumerate() {
        registry.push_str(&format!(
            "[[zone]]\nid = \"{z}\"\nname_zh = \"{z}\"\ncity = \"city-{:02}\"\nprovince = \"河南\"\n",
            i % CITIES
        ));
    }
    std::fs::write(dir.join("registry.toml"), registry)?;
    let config = dir.join("center.toml");
    std::fs::write(
        &config,
        format!(
            "registry = \"{}\"\nstale_after_s = 3600\n[http]\nlisten = \"127.0.0.1:0\"\n[nats]\nurl = \"{url}\"\ndomain = \"hub\"\n",
            dir.join("registry.toml").display()
        ),
    )?;
    let catalog = zonesync_proto::Catalog::builtin()?;
    let goals = zonesync_aggregator::goals::file::load(true, &[], &catalog)?.goal;
    let asks: Vec<Asked> = [
        SpanChoice::Basis,
        SpanChoice::Month,
        SpanChoice::Quarter,
        SpanChoice::Year,
        SpanChoice::YearToDate,
    ]
    .into_iter()
    .map(|s| Asked::new(PERIOD, s))
    .collect::<Result<_, _>>()?;
    let cells = cells_for(&goals, &asks, &GoalSettings::default());

    let publish = |msg: ZoneTallies| {
        let js = js.clone();
        async move {
            let payload = serde_json::to_vec(&msg)?;
            js.publish(subject(&msg.zone), payload.into())
                .await
                .map_err(|e| anyhow!("publish: {e}"))?
                .await
                .map_err(|e| anyhow!("ack: {e}"))?;
            Ok::<_, anyhow::Error>(())
        }
    };
    let mut versions = vec![1u64; ZONES];
    let mut bytes = 0;
    for z in &ids {
        let msg = snapshot(z, 1, &cells, &goals, 0);
        bytes = serde_json::to_vec(&msg)?.len();
        publish(msg).await?;
    }
    let http = reqwest::Client::new();
    let mut center = Center::start(&bin, &config)?;
    center.until_holds(&http, |_| 1).await?;
    let mut rng = zonesync_proto::rng::SplitMix64::new(10);
    let mut table_ms = Vec::new();
    for run in 0..ctx.runs {
        // Changes, one at a time: each zone's new version and the lag the center measured for it.
        let mut lags = Vec::with_capacity(CHANGES);
        for n in 0..CHANGES {
            let zi = rng.below(ZONES as u64) as usize;
            versions[zi] += 1;
            let v = versions[zi];
            publish(snapshot(&ids[zi], v, &cells, &goals, (run * CHANGES + n) as u64 + 1)).await?;
            let zone = ids[zi].to_string();
            let deadline = Instant::now() + WAIT;
            let lag = loop {
                let s = center.status(&http).await?;
                let z = s["zones"]
                    .as_array()
                    .and_then(|zs| zs.iter().find(|z| z["zone"] == zone.as_str()))
                    .cloned()
                    .unwrap_or_default();
                if z["version"].as_u64() == Some(v) {
                    break z["lag_ms"].as_f64().unwrap_or(f64::NAN);
                }
                if Instant::now() > deadline {
                    bail!("zone {zone} version {v} never reached the center");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            lags.push(lag);
        }
        lags.sort_by(f64::total_cmp);
        let q = |p: f64| lags[((lags.len() as f64 * p).ceil() as usize).clamp(1, lags.len()) - 1];
        p50.runs.push(q(0.50));
        p99.runs.push(q(0.99));
        // The province table over all 180 zones, as the dashboard asks it.
        let t = Instant::now();
        let r = http
            .get(format!("{}/api/v1/province/goals?period={PERIOD}", center.base))
            .send()
            .await?;
        let body: Value = r.json().await?;
        table_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if body["goals"].as_array().is_none_or(Vec::is_empty) {
            bail!("the province table is empty: {}", body["completeness"]);
        }
        mem.runs
            .push(center.rss().ok_or_else(|| anyhow!("no VmRSS for the center"))? as f64);
    }
    // Rebuild: SIGKILL, start again, until it holds every zone's newest version.
    let mut rebuilt_msgs = 0;
    for _ in 0..ctx.runs {
        center.kill9();
        let t = Instant::now();
        center = Center::start(&bin, &config)?;
        let s = center.until_holds(&http, |z| {
            z.strip_prefix('z')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|i| versions.get(i).copied())
                .unwrap_or(u64::MAX)
        });
        let s = s.await?;
        rebuild.runs.push(t.elapsed().as_secs_f64());
        rebuilt_msgs = s["rebuilt"].as_u64().unwrap_or(0);
    }
    let load = crate::machine::loadavg();
    table_ms.sort_by(f64::total_cmp);
    p50.notes.push(format!(
        "{ZONES} zones in {CITIES} cities, each snapshot {} cells ({} goals × basis/month/quarter/year/YTD of {PERIOD}), \
         {} KiB of JSON; one nats-server (JetStream, domain hub) on loopback whose stream takes the zones' subjects \
         directly — a single hub node, not the 3-node cluster, and no leaf sourcing; the center is the release \
         `zonesync-aggregator center` process on its durable consumer. Per run {CHANGES} changes, one at a time, to \
         random zones; the interval is the center's own `lag_ms` (arrival minus the snapshot's data_at, one clock), \
         in whole milliseconds (0: under 1 ms), starting when the zone's table changed (the snapshot made). \
         Province table over all zones: {:.0} ms median request. Load average at the end: {load}.",
        cells.len(),
        goals.len(),
        bytes / 1024,
        table_ms.get(table_ms.len() / 2).copied().unwrap_or(f64::NAN),
    ));
    mem.notes.push(format!(
        "VmRSS of the center process holding all {ZONES} zones' cells, after each run's changes."
    ));
    rebuild.notes.push(format!(
        "From starting the process (SIGKILLed before) until its status is ready and every zone is held at its \
         newest version; the stream keeps 4 snapshots per zone, the rebuild read {rebuilt_msgs} messages."
    ));
    Ok(())
}

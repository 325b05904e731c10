//! zonesync's benchmark harness: each figure of the issue measured against a
//! baseline taken in the same run on the same machine, written as
//! `docs/benchmarks.md`. Numbers are reported, never asserted.
//!
//! `main.rs` parses arguments; [`run`] does the work. Everything runs on
//! loopback with brokers started by the harness on free ports; every loop is
//! bounded in count and in time (see [`Sizes`]).

pub mod data;
pub mod figures;
pub mod machine;
pub mod mosquitto;
pub mod report;
pub mod stats;

use anyhow::{Context, Result};
use report::{Report, Row};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use zonesync_proto::EnterpriseId;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Short run (under a minute) instead of the full one.
    pub quick: bool,
    /// Runs per figure (at least 3).
    pub runs: usize,
    /// Where the report goes.
    pub out: PathBuf,
    /// Build the agent (gateway profile) before measuring its footprint.
    pub build_agent: bool,
    /// Only these figures (by number); empty means all.
    pub only: Vec<String>,
}

/// How much work each figure does; every count is also its loop's bound.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Batches of 100 readings in figures 1 and 2.
    pub batches: usize,
    /// Readings in the outbox of figures 3 and 4.
    pub drain_readings: usize,
    /// Seconds an agent (and collectd) process runs in figure 4.
    pub footprint_secs: u64,
    /// Enterprises in the zone of figure 5.
    pub goal_enterprises: usize,
    /// Goal requests per run in figure 5.
    pub goal_requests: usize,
    /// Goal requests per run right after a data change in figure 5.
    pub goal_cold_requests: usize,
    /// Longest a run of goal requests may take.
    pub goal_round_limit: Duration,
    /// /healthz requests per run in figure 5.
    pub health_requests: usize,
    /// Simulated seconds per run in figure 6.
    pub freshness_ticks: u64,
    /// Backlog of figure 7.
    pub recovery_readings: usize,
    /// Messages per run of figure 6's broker-transit baseline (at 100 per second).
    pub transit_messages: usize,
    /// Clients in figure 8.
    pub connections: usize,
    /// Readings in the store figure 9 rebuilds from.
    pub rebuild_readings: usize,
    /// Longest any single throughput run may take.
    pub limit: Duration,
}

impl Sizes {
    /// The full run (about five minutes on two shared cores) or the quick one.
    pub fn for_mode(quick: bool) -> Self {
        if quick {
            Self {
                batches: 1_000,
                drain_readings: 50_000,
                footprint_secs: 2,
                goal_enterprises: 5_000,
                goal_requests: 20,
                goal_cold_requests: 5,
                goal_round_limit: Duration::from_secs(5),
                health_requests: 100,
                freshness_ticks: 3,
                recovery_readings: 20_000,
                transit_messages: 100,
                connections: 100,
                rebuild_readings: 1_000_000,
                limit: Duration::from_secs(30),
            }
        } else {
            Self {
                batches: 6_000,
                drain_readings: 1_000_000,
                footprint_secs: 6,
                goal_enterprises: 25_000,
                goal_requests: 100,
                goal_cold_requests: 10,
                goal_round_limit: Duration::from_secs(10),
                health_requests: 500,
                freshness_ticks: 6,
                recovery_readings: 3_600_000,
                transit_messages: 300,
                connections: 1_000,
                rebuild_readings: 10_000_000,
                limit: Duration::from_secs(120),
            }
        }
    }
}

/// A closed outbox filled while no broker was reachable, copied by each run.
pub struct Template {
    /// Its sled directory.
    pub path: PathBuf,
    /// Readings in it.
    pub items: usize,
    /// How long filling it took.
    pub fill: Duration,
}

/// Shared by every figure: sizes, scratch space, the batch file, templates.
pub struct Ctx {
    /// Runs per figure.
    pub runs: usize,
    /// Work per figure.
    pub sizes: Sizes,
    /// Build the agent (gateway profile) in figure 4.
    pub build_agent: bool,
    work: tempfile::TempDir,
    /// The batch file `mosquitto_pub -l` reads (figures 1, 2).
    pub lines: PathBuf,
    /// The same batches, newest first (figure 2n: a backlog drained newest first).
    pub lines_newest_first: PathBuf,
    /// Its topic.
    pub topic: String,
    /// Batches in it.
    pub batches: usize,
    /// Its size, bytes.
    pub payload_bytes: usize,
    /// The enterprise its batches are about.
    pub enterprise: EnterpriseId,
    drain: OnceLock<std::result::Result<Template, String>>,
    recovery: OnceLock<std::result::Result<Template, String>>,
}

/// The workspace root (where git runs and cargo builds).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Ctx {
    fn new(opts: &Options) -> Result<Self> {
        let sizes = Sizes::for_mode(opts.quick);
        let work = tempfile::Builder::new().prefix("zonesync-bench-").tempdir()?;
        let lines = work.path().join("batches.jsonl");
        let enterprise = data::enterprise(1)?;
        let topic = data::write_batch_lines(
            &lines,
            &data::agent("bench-agent")?,
            &data::zone(data::ZONE)?,
            &enterprise,
            sizes.batches,
        )?;
        let payload_bytes = std::fs::metadata(&lines)?.len() as usize;
        let lines_newest_first = work.path().join("batches-newest-first.jsonl");
        let text = std::fs::read_to_string(&lines)?;
        let mut reversed: Vec<&str> = text.lines().collect();
        reversed.reverse();
        std::fs::write(&lines_newest_first, reversed.join("\n") + "\n")?;
        Ok(Self {
            runs: opts.runs.max(3),
            batches: sizes.batches,
            sizes,
            build_agent: opts.build_agent,
            work,
            lines,
            lines_newest_first,
            topic,
            payload_bytes,
            enterprise,
            drain: OnceLock::new(),
            recovery: OnceLock::new(),
        })
    }

    /// A fresh directory for one run's files.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.work.path().join(name);
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::create_dir_all(&p);
        p
    }

    /// Longest a single throughput run may take.
    pub fn limit(&self) -> Duration {
        self.sizes.limit
    }

    fn template<'a>(
        &'a self,
        cell: &'a OnceLock<std::result::Result<Template, String>>,
        name: &str,
        readings: usize,
    ) -> Result<&'a Template> {
        let built = cell.get_or_init(|| {
            eprintln!("[bench] filling an outbox with {readings} readings (no broker reachable) ...");
            let path = self.work.path().join(name);
            figures::drain::build_template(&path, readings)
                .map(|(items, fill)| Template { path, items, fill })
                .map_err(|e| format!("{e:#}"))
        });
        built.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The large outbox of figures 3 and 4.
    pub fn outbox_template(&self) -> Result<&Template> {
        self.template(&self.drain, "template-drain", self.sizes.drain_readings)
    }

    /// The backlog of figure 7.
    pub fn recovery_template(&self) -> Result<&Template> {
        self.template(&self.recovery, "template-recovery", self.sizes.recovery_readings)
    }
}

/// Figures by number and name, for rows of figures not selected.
const FIGURES: [(&str, &str); 10] = [
    ("1", "Broker path ceiling (baseline)"),
    ("2", "Aggregator ingest"),
    ("3", "Agent drain"),
    ("4", "Agent footprint"),
    ("5", "Goal query latency"),
    ("6", "End-to-end freshness"),
    ("7", "Recovery time for a backlog"),
    ("8", "Connections"),
    ("9", "Start-up rebuild"),
    ("10", "Federation center at 180 zones"),
];

/// Runs every selected figure and returns the report.
pub async fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let machine = machine::Machine::probe(&workspace(), mosquitto::broker_binary().as_deref());
    eprintln!("[bench] writing the batch file ...");
    let ctx = Ctx::new(opts).context("preparing the batch file")?;
    let want = |id: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == id);
    let mut rows: Vec<Row> = Vec::new();
    let mut timings = Vec::new();

    let mut ceiling = None;
    let mut publish_ceiling = None;
    if want("1") || want("2") || want("3") || want("7") {
        eprintln!("[bench] figure 1: broker path ceiling ...");
        let t = Instant::now();
        let (path, only) = figures::broker::measure(&ctx).await;
        timings.push(("1".to_owned(), t.elapsed().as_secs_f64()));
        ceiling = path.median();
        publish_ceiling = only.median();
        rows.push(path);
        rows.push(only);
    }
    let steps: [(&str, &str); 9] = [
        ("2", "aggregator ingest"),
        ("3", "agent drain"),
        ("4", "agent footprint"),
        ("5", "goal query latency"),
        ("6", "end-to-end freshness"),
        ("7", "recovery"),
        ("8", "connections"),
        ("9", "start-up rebuild"),
        ("10", "federation center at 180 zones"),
    ];
    for (id, what) in steps {
        if !want(id) {
            continue;
        }
        eprintln!("[bench] figure {id}: {what} ...");
        let t = Instant::now();
        match id {
            "2" => rows.extend(figures::ingest::measure(&ctx, ceiling).await),
            "3" => rows.push(figures::drain::measure(&ctx, publish_ceiling).await),
            "4" => {
                // Building is not measuring: its time is kept apart.
                let built = figures::footprint::agent_binary(ctx.build_agent).await;
                timings.push(("agent build".to_owned(), t.elapsed().as_secs_f64()));
                let t = Instant::now();
                rows.extend(figures::footprint::measure(&ctx, built).await);
                timings.push((id.to_owned(), t.elapsed().as_secs_f64()));
                continue;
            }
            "5" => rows.extend(figures::goals::measure(&ctx).await),
            "6" => rows.extend(figures::freshness::measure(&ctx).await),
            "7" => rows.push(figures::recovery::measure(&ctx, ceiling).await),
            "9" => rows.push(figures::rebuild::measure(&ctx).await),
            "10" => rows.extend(figures::federation::measure(&ctx).await),
            _ => rows.extend(figures::connections::measure(&ctx).await),
        }
        timings.push((id.to_owned(), t.elapsed().as_secs_f64()));
    }
    for (id, name) in FIGURES {
        if !rows.iter().any(|r| r.id.trim_end_matches(char::is_alphabetic) == id) {
            rows.push(Row::not_measured(id, name, "not selected in this run (--only)"));
        }
    }
    let mut command = format!("cargo run --release -p zonesync-bench -- --out {}", opts.out.display());
    if opts.quick {
        command.push_str(" --quick");
    }
    if opts.runs != 3 {
        command.push_str(&format!(" --runs {}", ctx.runs));
    }
    if !opts.only.is_empty() {
        command.push_str(&format!(" --only {}", opts.only.join(",")));
    }
    Ok(Report {
        mode: if opts.quick { "quick" } else { "full" }.into(),
        command,
        runs: ctx.runs,
        machine,
        finished: (machine::now(), machine::loadavg()),
        elapsed_secs: started.elapsed().as_secs_f64(),
        rows,
        timings,
    })
}

//! A randomized fault-injection harness over real processes: Mosquitto, the
//! aggregator binary and three agent binaries, each agent behind its own TCP
//! proxy (support/proxy.rs) so links can be cut, black-holed or deafened.
//!
//! Every choice (which fault, when, against whom, how long until recovery)
//! comes from one seeded generator, and the seed is printed first, so a run
//! that finds a bug replays with `ZONESYNC_FAULT_SEED=<seed>`. Faults overlap:
//! each one schedules its own recovery after a random delay, and the next
//! fault may strike before that (the aggregator may still be down when the
//! broker is killed). At the end everything is healed, the agents finish
//! their deterministic simulators, and the aggregator's stored figures are
//! compared with the exact ledger of what the simulators produced.
//!
//! When [`FaultKind::OutboxFull`] is drawn, agent-c runs with a small outbox
//! disk budget ([`BUDGET_BYTES`]); every reading its outbox drops must show
//! in the aggregator's `dropped_readings` for it and be missing from the
//! store, one for one.

mod files;
mod plan;
mod report;

pub use plan::{FaultKind, FaultPlan, Rng};
pub use report::FaultReport;

use files::{config_string, declared, simulated, write_files};

use crate::dataset::ZONE;
use crate::ledger::{missing, month_figures_after_drops, produced, Census, Produced, Sim};
use crate::proxy::Proxy;
use crate::{spawn_agent, spawn_aggregator, Api, Mosquitto, Proc};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Ticks each simulator runs: 4000 fifteen-minute ticks end on 2026-11-11,
/// before any "now" these tests run at.
const TICKS: u64 = 4000;

/// The agent that runs with a small outbox disk budget when
/// [`FaultKind::OutboxFull`] is drawn: agent-c, one enterprise (E4).
const BUDGET_AGENT: usize = 2;

/// Its budget: some 180 ticks of its simulator's two meters, so a cut link
/// overflows it within seconds at every production rate the harness uses.
const BUDGET_BYTES: u64 = 64 * 1024;

/// Longest an outbox-full fault waits for the budget to overflow (the
/// simulator may have finished); the report counts the waits that ran out.
const OVERFLOW_WAIT: Duration = Duration::from_secs(30);

/// A recovery a fault scheduled.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    StartAgent(usize),
    StartAggregator,
    StartBroker,
    /// Second phase of a partition or lost acks: cut the link, heal later.
    Cut(usize),
    Heal(usize),
    /// Heal the link of an agent once its status file, written after `since`,
    /// shows its outbox at its budget and more dropped than `dropped_before`.
    HealWhenOverflowed {
        link: usize,
        since: chrono::DateTime<chrono::Utc>,
        started: Instant,
        dropped_before: u64,
    },
}

/// The processes of one run.
struct Cluster {
    broker: Mosquitto,
    proxies: Vec<Proxy>,
    aggregator_cfg: PathBuf,
    aggregator: Option<(Proc, Api)>,
    agent_cfgs: Vec<PathBuf>,
    /// Each agent's id and data directory (where its status.json is).
    agent_ids: Vec<String>,
    data_dirs: Vec<PathBuf>,
    agents: Vec<Option<Proc>>,
    /// Links in a fault (partitioned or deafened) until healed.
    link_faulty: Vec<bool>,
    /// Duplicate counters of aggregator incarnations already gone.
    dup_batches: u64,
    dup_readings: u64,
    /// Outbox-full faults healed after [`OVERFLOW_WAIT`] without seeing an overflow.
    overflow_waits_expired: u32,
}

impl Cluster {
    async fn start(dir: &Path, tick_ms: u64, budget: Option<u64>) -> Self {
        // Extra broker settings for experiments, e.g. ZONESYNC_FAULT_BROKER_OPTS="autosave_on_changes true;autosave_interval 1".
        let opts = std::env::var("ZONESYNC_FAULT_BROKER_OPTS").unwrap_or_default();
        let broker = Mosquitto::start_with(dir, &opts.replace(';', "\n"));
        let mut proxies = Vec::new();
        for _ in 0..3 {
            proxies.push(Proxy::start(broker.port).await);
        }
        let ports: Vec<u16> = proxies.iter().map(|p| p.port).collect();
        let (aggregator_cfg, agent_cfgs) = write_files(dir, broker.port, &ports, tick_ms, budget);
        let agent_ids = agent_cfgs.iter().map(|c| config_string(c, "agent_id")).collect();
        let data_dirs = agent_cfgs
            .iter()
            .map(|c| PathBuf::from(config_string(c, "data_dir")))
            .collect();
        let aggregator = Some(spawn_aggregator(&aggregator_cfg));
        let agents = agent_cfgs.iter().map(|c| Some(spawn_agent(c))).collect();
        Self {
            broker,
            proxies,
            aggregator_cfg,
            aggregator,
            link_faulty: vec![false; agent_cfgs.len()],
            agent_cfgs,
            agent_ids,
            data_dirs,
            agents,
            dup_batches: 0,
            dup_readings: 0,
            overflow_waits_expired: 0,
        }
    }

    /// Agent `i`'s status file as last written (every few seconds while it runs).
    fn status(&self, i: usize) -> Option<zonesync_agent::status::Status> {
        zonesync_agent::status::read(&zonesync_agent::status::path(&self.data_dirs[i])).ok()
    }

    /// Per agent, the readings its outbox dropped as the aggregator shows them
    /// (`zonesync_aggregator_agent_dropped_readings` and `…_dropped_sent_readings`,
    /// from its presence): the figures an operator sees, never sent and sent
    /// without an acknowledgement.
    async fn dropped_now(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for id in &self.agent_ids {
            let n = match &self.aggregator {
                Some((_, api)) => {
                    let of = |m: &str| format!("zonesync_aggregator_agent_{m}{{zone=\"{ZONE}\",agent=\"{id}\"}}");
                    (
                        api.metric(&of("dropped_readings")).await as u64,
                        api.metric(&of("dropped_sent_readings")).await as u64,
                    )
                }
                None => (0, 0),
            };
            out.push(n);
        }
        out
    }

    /// The duplicate counters of the running aggregator.
    async fn duplicates_now(&self) -> (u64, u64) {
        match &self.aggregator {
            Some((_, api)) => (
                api.metric("zonesync_aggregator_batches_duplicate_total").await as u64,
                api.metric("zonesync_aggregator_readings_duplicate_total").await as u64,
            ),
            None => (0, 0),
        }
    }

    fn recover(&mut self, r: Recovery, rng: &mut Rng, due: &mut Vec<(Instant, Recovery)>) {
        match r {
            Recovery::StartAgent(i) => self.agents[i] = Some(spawn_agent(&self.agent_cfgs[i])),
            Recovery::StartAggregator => self.aggregator = Some(spawn_aggregator(&self.aggregator_cfg)),
            Recovery::StartBroker => self.broker.restart(),
            Recovery::Cut(i) => {
                self.proxies[i].cut_and_refuse();
                due.push((Instant::now() + rng.millis(100, 2000), Recovery::Heal(i)));
            }
            Recovery::Heal(i) => {
                self.proxies[i].heal();
                self.link_faulty[i] = false;
            }
            Recovery::HealWhenOverflowed {
                link,
                since,
                started,
                dropped_before,
            } => {
                let full = self.status(link).is_some_and(|s| {
                    s.written_at > since
                        && s.outbox.dropped_readings > dropped_before
                        && s.outbox.held_bytes * 10 >= s.outbox.disk_budget_bytes * 9
                });
                if full || started.elapsed() > OVERFLOW_WAIT {
                    if !full {
                        self.overflow_waits_expired += 1;
                    }
                    self.proxies[link].heal();
                    self.link_faulty[link] = false;
                } else {
                    due.push((Instant::now() + Duration::from_millis(250), r));
                }
            }
        }
    }

    /// Injects `kind` if its target is up; returns whether it did.
    async fn inject(&mut self, kind: FaultKind, rng: &mut Rng, due: &mut Vec<(Instant, Recovery)>) -> bool {
        let now = Instant::now();
        match kind {
            FaultKind::KillAgent => {
                let up: Vec<usize> = (0..self.agents.len()).filter(|i| self.agents[*i].is_some()).collect();
                let Some(&i) = up.get(rng.below(up.len() as u64) as usize) else {
                    return false;
                };
                if let Some(mut p) = self.agents[i].take() {
                    p.kill9();
                }
                due.push((now + rng.millis(0, 1500), Recovery::StartAgent(i)));
            }
            FaultKind::KillAggregator => {
                if self.aggregator.is_none() {
                    return false;
                }
                // Its counters die with it: read them first.
                let (b, r) = self.duplicates_now().await;
                self.dup_batches += b;
                self.dup_readings += r;
                if let Some((mut p, _)) = self.aggregator.take() {
                    p.kill9();
                }
                due.push((Instant::now() + rng.millis(0, 2500), Recovery::StartAggregator));
            }
            FaultKind::KillBroker | FaultKind::StopBroker => {
                if !self.broker.is_running() {
                    return false;
                }
                if kind == FaultKind::KillBroker {
                    self.broker.kill9();
                    due.push((now + rng.millis(0, 2000), Recovery::StartBroker));
                } else {
                    self.broker.stop();
                    due.push((now + rng.millis(500, 3000), Recovery::StartBroker));
                }
            }
            FaultKind::Partition | FaultKind::LostAcks => {
                let free: Vec<usize> = (0..self.proxies.len()).filter(|i| !self.link_faulty[*i]).collect();
                let Some(&i) = free.get(rng.below(free.len() as u64) as usize) else {
                    return false;
                };
                self.link_faulty[i] = true;
                if kind == FaultKind::Partition {
                    self.proxies[i].blackhole();
                } else {
                    self.proxies[i].deafen();
                }
                due.push((now + rng.millis(200, 1500), Recovery::Cut(i)));
            }
            FaultKind::OutboxFull => {
                let i = BUDGET_AGENT;
                if self.link_faulty[i] {
                    return false;
                }
                self.link_faulty[i] = true;
                let dropped_before = self.status(i).map_or(0, |s| s.outbox.dropped_readings);
                self.proxies[i].cut_and_refuse();
                due.push((
                    now + Duration::from_millis(500),
                    Recovery::HealWhenOverflowed {
                        link: i,
                        since: chrono::Utc::now(),
                        started: now,
                        dropped_before,
                    },
                ));
            }
        }
        true
    }

    /// Runs due recoveries; with `all`, waits for and runs every one left.
    async fn run_due(&mut self, due: &mut Vec<(Instant, Recovery)>, rng: &mut Rng, all: bool) {
        loop {
            due.sort_by_key(|(t, _)| *t);
            let Some(&(t, r)) = due.first() else { return };
            if t > Instant::now() {
                if !all {
                    return;
                }
                tokio::time::sleep(t - Instant::now()).await;
            }
            due.remove(0);
            self.recover(r, rng, due);
        }
    }

    /// Per enterprise and month of the ledger: (what, API figure, ledger
    /// figure) for electricity (kWh) and value added, rounded to 1e-6.
    #[allow(clippy::type_complexity)]
    async fn month_figures(&self, ledgers: &[(Sim, Produced)]) -> Vec<(String, Option<i64>, Option<i64>)> {
        let round = |v: f64| Some((v * 1e6).round() as i64);
        let mut out = Vec::new();
        for (sim, ledger) in ledgers {
            for m in &ledger.months {
                let (mut kwh, mut va) = (None, None);
                if let Some((_, api)) = &self.aggregator {
                    let en = api
                        .get(&format!("/api/v1/zones/{ZONE}/energy?period={}", m.period))
                        .await;
                    let row = en["enterprises"]
                        .as_array()
                        .and_then(|a| a.iter().find(|r| r["enterprise"] == sim.enterprise))
                        .cloned()
                        .unwrap_or_default();
                    kwh = row["carriers"]
                        .as_array()
                        .and_then(|c| c.iter().find(|c| c["carrier"] == "electricity").or(c.first()))
                        .and_then(|c| c["amount"].as_f64())
                        .and_then(round);
                    va = row["value_added"].as_f64().and_then(round);
                }
                out.push((format!("{} {} kWh", sim.enterprise, m.period), kwh, round(m.kwh)));
                out.push((
                    format!("{} {} value added", sim.enterprise, m.period),
                    va,
                    round(m.value_added),
                ));
            }
        }
        out
    }

    /// The API's per-enterprise readings figure (shown next to the store's count).
    async fn api_readings(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (_, sim) in simulated() {
            let n = match &self.aggregator {
                Some((_, api)) => api
                    .get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", sim.enterprise))
                    .await["readings"]
                    .as_u64()
                    .unwrap_or(0),
                None => 0,
            };
            out.push(n);
        }
        out
    }
}

/// Runs `plan` in `dir` and returns the figures (it does not judge them).
pub async fn run(plan: &FaultPlan, dir: &Path) -> FaultReport {
    let started = Instant::now();
    eprintln!(
        "fault-injection: seed {} rounds {} (replay with ZONESYNC_FAULT_SEED={} ZONESYNC_FAULT_ROUNDS={})",
        plan.seed, plan.rounds, plan.seed, plan.rounds
    );
    let mut rng = Rng::new(plan.seed);
    // Spread production over the faults: about 1.5 s of simulator time per round.
    let tick_ms = ((u64::from(plan.rounds) * 1500) / TICKS).clamp(2, 200);
    let kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| {
            if plan.only.is_empty() {
                k.drawn_by_default().is_ok()
            } else {
                k.available().is_ok() && plan.only.contains(k)
            }
        })
        .collect();
    assert!(!kinds.is_empty(), "no available fault kind among {:?}", plan.only);
    let budget = kinds.contains(&FaultKind::OutboxFull).then_some(BUDGET_BYTES);
    let mut c = Cluster::start(dir, tick_ms, budget).await;
    let mut report = FaultReport {
        seed: plan.seed,
        rounds: plan.rounds,
        pending: FaultKind::ALL
            .into_iter()
            .filter_map(|k| {
                let why = if plan.only.is_empty() {
                    k.drawn_by_default().err()
                } else {
                    k.available().err()
                };
                why.map(|why| (k, why))
            })
            .collect(),
        ..Default::default()
    };
    let mut due: Vec<(Instant, Recovery)> = Vec::new();
    let mut injected = 0;
    while injected < plan.rounds {
        let gap = rng.millis(100, 1200);
        let until = Instant::now() + gap;
        while Instant::now() < until {
            c.run_due(&mut due, &mut rng, false).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        if c.inject(kind, &mut rng, &mut due).await {
            injected += 1;
            *report.injected.entry(kind).or_default() += 1;
            eprintln!(
                "  round {injected}: {} at {:.1} s",
                kind.name(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    c.run_due(&mut due, &mut rng, true).await;

    // Everything healed: wait until the API shows every month figure of the
    // ledger (the last readings have arrived), then for quiet, then count.
    // An agent whose outbox dropped readings cannot show all of them: its
    // enterprises' figures are judged after the census, and the wait is for
    // its drops to be reported (the aggregator's figure equal to the agent's
    // own status file) and for quiet.
    let ledgers: Vec<(Sim, Produced)> = simulated()
        .into_iter()
        .map(|(_, sim)| {
            (
                sim,
                produced(sim, dataset_start(), chrono::Duration::seconds(900), TICKS),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let figures = c.month_figures(&ledgers).await;
        let drops = c.dropped_now().await;
        let settled = (0..drops.len()).all(|i| {
            c.status(i)
                .is_none_or(|s| s.outbox.dropped_readings == drops[i].0 + drops[i].1)
        });
        let exact = figures.iter().all(|(what, got, want)| {
            got == want
                || simulated()
                    .iter()
                    .any(|(i, sim)| drops[*i] != (0, 0) && what.starts_with(sim.enterprise))
        });
        if Some(&figures) != last.as_ref() {
            last = Some(figures);
            quiet_since = Instant::now();
        } else if exact && settled && quiet_since.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let figures = c.month_figures(&ledgers).await;
    let drops = c.dropped_now().await;
    let (b, r) = c.duplicates_now().await;
    report.duplicate_batches = c.dup_batches + b;
    report.duplicate_readings = c.dup_readings + r;
    report.overflow_waits_expired = c.overflow_waits_expired;
    let api_counts = c.api_readings().await;
    for a in c.agents.iter_mut().flatten() {
        a.kill9();
    }
    if let Some((mut p, _)) = c.aggregator.take() {
        p.terminate();
    }
    let census = Census::read(&dir.join("aggregator/store")).unwrap_or_else(|e| panic!("store census: {e}"));
    // Per agent: what the store lacks, tick by tick, against what it reported dropped.
    let (start, step) = (dataset_start(), chrono::Duration::seconds(900));
    let agents = c.agent_ids.len();
    let (mut meter_missing, mut va_missing, mut decl_missing) = (vec![0; agents], vec![0; agents], vec![0; agents]);
    let mut split = vec![0; agents];
    let mut expected: HashMap<String, Option<Option<i64>>> = HashMap::new();
    let round = |v: f64| (v * 1e6).round() as i64;
    for (agent, sim) in simulated() {
        let m = missing(&census, sim, start, step, TICKS);
        meter_missing[agent] += m.meter_readings;
        va_missing[agent] += m.value_added_reports;
        split[agent] += m.split_ticks;
        if m.ticks.is_empty() {
            continue;
        }
        let dropped: BTreeSet<u64> = m.ticks.iter().copied().collect();
        for (period, kwh, va) in month_figures_after_drops(sim, start, step, TICKS, &dropped) {
            let e = sim.enterprise;
            expected.insert(format!("{e} {period} kWh"), kwh.map(|k| Some(round(k))));
            expected.insert(format!("{e} {period} value added"), Some(va.map(round)));
        }
        let runs = tick_runs(&m.ticks);
        report.lines.push(format!(
            "{}: {} ticks missing from the store, in {} runs: {}",
            sim.enterprise,
            m.ticks.len(),
            runs.len(),
            runs.join(", ")
        ));
    }
    for (agent, e, n) in declared() {
        decl_missing[agent] += n.saturating_sub(census.declarations.get(e).copied().unwrap_or(0));
    }
    for i in 0..agents {
        let attributed = meter_missing[i] + va_missing[i] + decl_missing[i];
        let (never_sent, sent) = drops[i];
        report.dropped_reported += never_sent + sent;
        report.dropped_sent_reported += sent;
        // What is missing must lie between the readings reported dropped
        // before sending (they cannot have arrived) and those plus the ones
        // dropped after sending unacknowledged (which may have). Short of the
        // sum: readings missing that no report covers, which count as lost.
        // Above the first: readings reported as never sent that were stored.
        let short = attributed.saturating_sub(never_sent + sent);
        report.dropped_meter += meter_missing[i].saturating_sub(short);
        report.drops_unattributed += never_sent.saturating_sub(attributed) + split[i];
        report.dropped_sent_stored += (never_sent + sent).saturating_sub(attributed.max(never_sent));
        if never_sent + sent > 0 || attributed > 0 {
            report.lines.push(format!(
                "{}: dropped and reported {} never sent + {} sent unacknowledged (aggregator); missing from the store {} = {} meter readings + {} value-added reports + {} declarations{}",
                c.agent_ids[i],
                never_sent,
                sent,
                attributed,
                meter_missing[i],
                va_missing[i],
                decl_missing[i],
                if split[i] > 0 { format!("; {} ticks with one meter only", split[i]) } else { String::new() }
            ));
        }
    }
    for ((sim, ledger), api_count) in ledgers.iter().zip(api_counts) {
        let stored = census.meter_readings(sim.enterprise);
        report.produced += ledger.meter_readings + ledger.value_added_reports;
        report.produced_meter += ledger.meter_readings;
        report.stored_meter += stored;
        report.superseded_reports += ledger.value_added_reports - ledger.months.len() as u64;
        report.lines.push(format!(
            "{}: meter readings produced {}, stored {}; value-added reports {}, month figures in store {}; API readings figure {}",
            sim.enterprise,
            ledger.meter_readings,
            stored,
            ledger.value_added_reports,
            census.keys(sim.enterprise, "value_added"),
            api_count
        ));
    }
    for (what, got, want) in &figures {
        let want = match expected.get(what) {
            None => *want,
            Some(None) => {
                report.month_figures_unchecked += 1;
                report.lines.push(format!(
                    "{what}: not checked (readings dropped across a month's start or at an end)"
                ));
                continue;
            }
            Some(Some(w)) => *w,
        };
        report.month_figures += 1;
        if *got == want {
            report.month_figures_exact += 1;
            if what.ends_with("value added") {
                report.value_added_exact += 1;
            }
            continue;
        }
        if got.is_some_and(|g| want.is_some_and(|w| g > w)) {
            report.month_figures_over += 1;
        }
        report
            .lines
            .push(format!("{what} (×1e-6): API {got:?}, ledger {want:?}"));
    }
    if report.lost() != 0 || report.counted_twice() != 0 || report.drops_unattributed != 0 {
        report.census = Some(census.to_string());
    }
    report.acks_swallowed_bytes = c
        .proxies
        .iter()
        .map(|p| p.swallowed_down.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    report.publishes_swallowed_bytes = c
        .proxies
        .iter()
        .map(|p| p.swallowed.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    report.elapsed = started.elapsed();
    report
}

/// Consecutive ticks as runs, e.g. `120..=311`.
fn tick_runs(ticks: &[u64]) -> Vec<String> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &t in ticks {
        match runs.last_mut() {
            Some((_, hi)) if *hi + 1 == t => *hi = t,
            _ => runs.push((t, t)),
        }
    }
    runs.iter().map(|(lo, hi)| format!("{lo}..={hi}")).collect()
}

/// Where the data set's simulators start (support/dataset.rs).
fn dataset_start() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-09-30T16:00:00Z")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default()
}

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
//! Fault kinds that need code not yet in this build are declared here and
//! reported as pending rather than silently left out (see [`FaultKind::OutboxFull`]).

use crate::dataset::{self, E, ZONE};
use crate::ledger::{produced, Census, Produced, Sim};
use crate::proxy::Proxy;
use crate::{spawn_agent, spawn_aggregator, Api, Mosquitto, Proc};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Readings per simulated enterprise for the whole run (2 meters per tick
/// plus a value-added figure per simulated midnight). 4000 ticks of 15 min
/// end on 2026-11-11, before any "now" these tests run at.
const TICKS: u64 = 4000;

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Seed of every random choice.
    pub seed: u64,
    /// Faults to inject.
    pub rounds: u32,
    /// Kinds to draw from (`ZONESYNC_FAULT_KINDS`, comma-separated names as
    /// [`FaultKind::key`] gives them); all available kinds when empty.
    pub only: Vec<FaultKind>,
}

impl FaultPlan {
    /// From `ZONESYNC_FAULT_SEED` and `ZONESYNC_FAULT_ROUNDS`, else a fresh
    /// seed (from the clock) and `default_rounds`.
    pub fn from_env(default_rounds: u32) -> Self {
        let seed = std::env::var("ZONESYNC_FAULT_SEED")
            .ok()
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("ZONESYNC_FAULT_SEED={s:?} is not an unsigned integer"))
            })
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        let rounds = std::env::var("ZONESYNC_FAULT_ROUNDS")
            .ok()
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("ZONESYNC_FAULT_ROUNDS={s:?} is not an unsigned integer"))
            })
            .unwrap_or(default_rounds);
        let only = std::env::var("ZONESYNC_FAULT_KINDS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                FaultKind::ALL
                    .into_iter()
                    .find(|k| k.key() == s)
                    .unwrap_or_else(|| panic!("ZONESYNC_FAULT_KINDS: unknown kind {s:?}"))
            })
            .collect();
        Self { seed, rounds, only }
    }
}

/// SplitMix64: tiny, seedable, and the same on every platform, so a seed
/// replays the same schedule anywhere.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A duration uniform in `lo..=hi` milliseconds.
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

/// The kinds of fault the harness injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL of one agent; restarted after a random delay.
    KillAgent,
    /// SIGKILL of the aggregator; restarted after a random delay.
    KillAggregator,
    /// SIGKILL of the broker (no persistence file written); restarted after a random delay.
    KillBroker,
    /// The broker stopped cleanly (SIGTERM) and unreachable for a while.
    StopBroker,
    /// One agent's link black-holed (what it sends vanishes), then cut and
    /// refused, then healed: the broker is unreachable while it produces.
    Partition,
    /// One agent's link deafened (batches reach the broker, PUBACKs never come
    /// back), then cut: the agent resends batches already stored (QoS 1 duplicates).
    LostAcks,
    /// An agent's outbox disk budget exhausted, so the outbox policy drops
    /// readings and reports their count upstream (`dropped_readings`).
    /// Pending: needs the agent's `[outbox] disk_budget_bytes` and the
    /// aggregator's figure of dropped readings, which are not in this build.
    /// Where it plugs in: `available()` returns Ok once they exist; `inject()`
    /// rewrites one agent's config with a small budget and restarts it (or
    /// stops its link so the outbox fills), the recovery restores the budget;
    /// and the final count adds the aggregator's figure of dropped readings
    /// to `FaultReport::dropped_reported`, which `lost()` already allows for.
    OutboxFull,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::KillAgent,
        FaultKind::KillAggregator,
        FaultKind::KillBroker,
        FaultKind::StopBroker,
        FaultKind::Partition,
        FaultKind::LostAcks,
        FaultKind::OutboxFull,
    ];

    /// Whether a run draws it when `ZONESYNC_FAULT_KINDS` does not choose:
    /// every kind this build can inject and survive. A broker SIGKILL loses
    /// data today (docs/reliability.md), so it runs only when asked for, until
    /// delivery is acknowledged end to end.
    pub fn drawn_by_default(self) -> Result<(), &'static str> {
        match self {
            FaultKind::KillBroker => Err(
                "not drawn by default: Mosquitto acknowledges batches before saving them, so a SIGKILL loses them; \
                 include it with ZONESYNC_FAULT_KINDS",
            ),
            _ => self.available(),
        }
    }

    /// Whether this build can inject it; `Err` says what it waits for.
    pub fn available(self) -> Result<(), &'static str> {
        match self {
            FaultKind::OutboxFull => {
                Err("pending: needs the agent's [outbox] disk_budget_bytes and a dropped_readings figure upstream")
            }
            _ => Ok(()),
        }
    }

    /// Its name in `ZONESYNC_FAULT_KINDS`.
    pub fn key(self) -> &'static str {
        match self {
            FaultKind::KillAgent => "kill-agent",
            FaultKind::KillAggregator => "kill-aggregator",
            FaultKind::KillBroker => "kill-broker",
            FaultKind::StopBroker => "stop-broker",
            FaultKind::Partition => "partition",
            FaultKind::LostAcks => "lost-acks",
            FaultKind::OutboxFull => "outbox-full",
        }
    }

    fn name(self) -> &'static str {
        match self {
            FaultKind::KillAgent => "agent SIGKILL",
            FaultKind::KillAggregator => "aggregator SIGKILL",
            FaultKind::KillBroker => "broker SIGKILL",
            FaultKind::StopBroker => "broker stopped",
            FaultKind::Partition => "link partitioned",
            FaultKind::LostAcks => "PUBACKs lost, link cut",
            FaultKind::OutboxFull => "outbox disk budget exhausted",
        }
    }
}

/// A recovery a fault scheduled.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    StartAgent(usize),
    StartAggregator,
    StartBroker,
    /// Second phase of a partition or lost acks: cut the link, heal later.
    Cut(usize),
    Heal(usize),
}

/// The figures a run ends with.
#[derive(Debug, Clone, Default)]
pub struct FaultReport {
    /// Seed of the run.
    pub seed: u64,
    /// Faults asked for.
    pub rounds: u32,
    /// Faults injected, by kind.
    pub injected: BTreeMap<FaultKind, u32>,
    /// Kinds left out of the draw, with why.
    pub pending: Vec<(FaultKind, &'static str)>,
    /// Readings the simulators produced: meter readings plus value-added reports.
    pub produced: u64,
    /// Of which meter readings (each its own fact).
    pub produced_meter: u64,
    /// Meter readings in the aggregator's store.
    pub stored_meter: u64,
    /// Value-added reports that replaced an earlier report of their month
    /// (month-to-date figures: only each month's last one stays).
    pub superseded_reports: u64,
    /// Month figures (kWh and value added per enterprise and month) expected.
    pub month_figures: u64,
    /// Month figures the aggregator's API gives exactly.
    pub month_figures_exact: u64,
    /// Month figures above the ledger (something counted twice).
    pub month_figures_over: u64,
    /// Month value-added figures the API gives exactly.
    pub value_added_exact: u64,
    /// Readings the outbox policy dropped and reported upstream.
    pub dropped_reported: u64,
    /// Batches the aggregator recognised as already stored, summed over its incarnations.
    pub duplicate_batches: u64,
    /// Readings the aggregator recognised as already stored under another batch.
    pub duplicate_readings: u64,
    /// Per enterprise: what the ledger says and what the store and API hold.
    pub lines: Vec<String>,
    /// Bytes of broker replies the proxies swallowed (PUBACKs among them).
    pub acks_swallowed_bytes: u64,
    /// Bytes of agent traffic the proxies swallowed.
    pub publishes_swallowed_bytes: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// The store census, when something does not add up.
    pub census: Option<String>,
}

impl FaultReport {
    /// Meter readings neither stored nor dropped-and-reported, plus month figures short of the ledger.
    pub fn lost(&self) -> u64 {
        (self
            .produced_meter
            .saturating_sub(self.stored_meter + self.dropped_reported))
            + (self.month_figures - self.month_figures_exact - self.month_figures_over)
    }

    /// Meter readings stored beyond the ledger, plus month figures above it.
    pub fn counted_twice(&self) -> u64 {
        self.stored_meter.saturating_sub(self.produced_meter) + self.month_figures_over
    }

    /// Readings accounted for: stored meter readings, value-added reports
    /// standing as their month's figure, and those a later report replaced.
    pub fn stored(&self) -> u64 {
        self.stored_meter + self.value_added_exact + self.superseded_reports
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fault-injection run")?;
        writeln!(
            f,
            "  seed {} (replay: ZONESYNC_FAULT_SEED={} ZONESYNC_FAULT_ROUNDS={})",
            self.seed, self.seed, self.rounds
        )?;
        writeln!(
            f,
            "  rounds {}, wall time {:.1} s",
            self.rounds,
            self.elapsed.as_secs_f64()
        )?;
        for k in FaultKind::ALL {
            if let Some((_, why)) = self.pending.iter().find(|(p, _)| *p == k) {
                writeln!(f, "  faults {:<30} left out ({why})", k.name())?;
            } else {
                writeln!(
                    f,
                    "  faults {:<30} {}",
                    k.name(),
                    self.injected.get(&k).copied().unwrap_or(0)
                )?;
            }
        }
        writeln!(f, "  readings produced             {}", self.produced)?;
        writeln!(
            f,
            "  readings stored               {} ({} meter readings of {}; {} value-added reports, {} standing as month figures, {} replaced by a later month-to-date report)",
            self.stored(),
            self.stored_meter,
            self.produced_meter,
            self.produced - self.produced_meter,
            self.value_added_exact,
            self.superseded_reports
        )?;
        writeln!(
            f,
            "  month figures exact           {} of {}",
            self.month_figures_exact, self.month_figures
        )?;
        writeln!(f, "  dropped and reported          {}", self.dropped_reported)?;
        writeln!(f, "  lost                          {}", self.lost())?;
        writeln!(f, "  counted twice                 {}", self.counted_twice())?;
        writeln!(f, "  duplicate batches suppressed  {}", self.duplicate_batches)?;
        writeln!(f, "  duplicate readings suppressed {}", self.duplicate_readings)?;
        writeln!(
            f,
            "  proxies swallowed {} B of agent traffic, {} B of broker replies",
            self.publishes_swallowed_bytes, self.acks_swallowed_bytes
        )?;
        for l in &self.lines {
            writeln!(f, "  {l}")?;
        }
        if let Some(c) = &self.census {
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The processes of one run.
struct Cluster {
    broker: Mosquitto,
    proxies: Vec<Proxy>,
    aggregator_cfg: PathBuf,
    aggregator: Option<(Proc, Api)>,
    agent_cfgs: Vec<PathBuf>,
    agents: Vec<Option<Proc>>,
    /// Links in a fault (partitioned or deafened) until healed.
    link_faulty: Vec<bool>,
    /// Duplicate counters of aggregator incarnations already gone.
    dup_batches: u64,
    dup_readings: u64,
}

/// Enterprises the simulators produce for: (agent index, rates as in the
/// agent configs of support/dataset.rs, and agent-c's below).
fn simulated() -> [(usize, Sim); 4] {
    let sim = |enterprise, kwh_rate, va_per_day| Sim {
        enterprise,
        kwh_rate,
        va_per_day,
    };
    [
        (0, sim(E[0], 10.0, 40.0)),
        (0, sim(E[1], 20.0, 100.0)),
        (1, sim(E[2], 5.0, 10.0)),
        (2, sim(E[3], 7.0, 10.0)),
    ]
}

/// Writes the data set (support/dataset.rs) plus a third agent for E4, each
/// agent pointed at its own proxy; the aggregator talks to the broker directly.
fn write_files(dir: &Path, broker_port: u16, proxy_ports: &[u16], tick_ms: u64) -> (PathBuf, Vec<PathBuf>) {
    let ds = dataset::write(dir, broker_port, TICKS, tick_ms);
    let profile_c = dir.join("profile-c.toml");
    std::fs::write(
        &profile_c,
        format!(
            "[[enterprise]]\nid = \"{}\"\n[enterprise.declare]\ndt_maturity = 2\n",
            E[3]
        ),
    )
    .expect("write profile-c");
    let agent_c = dir.join("agent-c.toml");
    let text_b = std::fs::read_to_string(&ds.agent_b).expect("read agent-b config");
    let text_c = text_b
        .replace("agent-b", "agent-c")
        .replace(E[2], E[3])
        .replace(
            &dir.join("profile-b.toml").display().to_string(),
            &profile_c.display().to_string(),
        )
        .replace("kwh_rate = 5", "kwh_rate = 7");
    std::fs::write(&agent_c, text_c).expect("write agent-c config");
    let cfgs = vec![ds.agent_a, ds.agent_b, agent_c];
    for (cfg, proxy) in cfgs.iter().zip(proxy_ports) {
        let text = std::fs::read_to_string(cfg)
            .expect("read agent config")
            .replace(&format!("port = {broker_port}\n"), &format!("port = {proxy}\n"));
        std::fs::write(cfg, text).expect("write agent config");
    }
    (ds.aggregator, cfgs)
}

impl Cluster {
    async fn start(dir: &Path, tick_ms: u64) -> Self {
        // Extra broker settings for experiments, e.g. ZONESYNC_FAULT_BROKER_OPTS="autosave_on_changes true;autosave_interval 1".
        let opts = std::env::var("ZONESYNC_FAULT_BROKER_OPTS").unwrap_or_default();
        let broker = Mosquitto::start_with(dir, &opts.replace(';', "\n"));
        let mut proxies = Vec::new();
        for _ in 0..3 {
            proxies.push(Proxy::start(broker.port).await);
        }
        let ports: Vec<u16> = proxies.iter().map(|p| p.port).collect();
        let (aggregator_cfg, agent_cfgs) = write_files(dir, broker.port, &ports, tick_ms);
        let aggregator = Some(spawn_aggregator(&aggregator_cfg));
        let agents = agent_cfgs.iter().map(|c| Some(spawn_agent(c))).collect();
        Self {
            broker,
            proxies,
            aggregator_cfg,
            aggregator,
            link_faulty: vec![false; agent_cfgs.len()],
            agent_cfgs,
            agents,
            dup_batches: 0,
            dup_readings: 0,
        }
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
                due.push((Instant::now() + rng.ms(100, 2000), Recovery::Heal(i)));
            }
            Recovery::Heal(i) => {
                self.proxies[i].heal();
                self.link_faulty[i] = false;
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
                due.push((now + rng.ms(0, 1500), Recovery::StartAgent(i)));
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
                due.push((Instant::now() + rng.ms(0, 2500), Recovery::StartAggregator));
            }
            FaultKind::KillBroker | FaultKind::StopBroker => {
                if !self.broker.is_running() {
                    return false;
                }
                if kind == FaultKind::KillBroker {
                    self.broker.kill9();
                    due.push((now + rng.ms(0, 2000), Recovery::StartBroker));
                } else {
                    self.broker.stop();
                    due.push((now + rng.ms(500, 3000), Recovery::StartBroker));
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
                due.push((now + rng.ms(200, 1500), Recovery::Cut(i)));
            }
            FaultKind::OutboxFull => return false,
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
    let mut c = Cluster::start(dir, tick_ms).await;
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
        let gap = rng.ms(100, 1200);
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
        let exact = figures.iter().all(|(_, got, want)| got == want);
        if Some(&figures) != last.as_ref() {
            last = Some(figures);
            quiet_since = Instant::now();
        } else if exact && quiet_since.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let figures = c.month_figures(&ledgers).await;
    let (b, r) = c.duplicates_now().await;
    report.duplicate_batches = c.dup_batches + b;
    report.duplicate_readings = c.dup_readings + r;
    let api_counts = c.api_readings().await;
    for a in c.agents.iter_mut().flatten() {
        a.kill9();
    }
    if let Some((mut p, _)) = c.aggregator.take() {
        p.terminate();
    }
    let census = Census::read(&dir.join("aggregator/store")).unwrap_or_else(|e| panic!("store census: {e}"));
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
        report.month_figures += 1;
        if got == want {
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
    if report.lost() != 0 || report.counted_twice() != 0 {
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

/// Where the data set's simulators start (support/dataset.rs).
fn dataset_start() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-09-30T16:00:00Z")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_choices() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(42);
                move |_| r.below(1000)
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(42);
                move |_| r.below(1000)
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            a,
            (0..5)
                .map({
                    let mut r = Rng::new(43);
                    move |_| r.below(1000)
                })
                .collect::<Vec<_>>()
        );
    }
}

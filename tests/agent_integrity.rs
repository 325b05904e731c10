//! The agent's side of issue 13 ("A core you can trust"), through a real
//! Mosquitto, a real aggregator process and real `zonesync-agent` processes:
//! a fast clock at first install, seqs claimed ahead by a forger, an outbox
//! restored from a copy (with and without its high-water mark), damaged
//! outbox files, a full disk. Each test checks both sides: every reading the
//! agent produced ends stored and the month's figure is the real one (the
//! aggregator's API, compared with what the deterministic simulator and the
//! CSV drops produced), and the hostile or damaged input is refused or
//! reported with its reason (dead letters, `/metrics`, the agent's status and
//! presence, its exit status and stderr).
//!
//! The agent reports for E1 (and E2 in the full-disk test) of the data set's
//! registry (`support/dataset.rs`): a simulator from 2026-10-01 00:00 China
//! time in 15-minute ticks (value added at each simulated midnight, 40 a
//! day for E1) and a CSV drop folder for month figures, confirmed end to end.

use chrono::{DateTime, Duration as Span, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zonesync_e2e::dataset::{self, E, ZONE};
use zonesync_e2e::hostile::{copy_tree, fill, flip_middle, publish, truncate, Msg, Tmpfs};
use zonesync_e2e::{run_to_end, try_spawn_aggregator, AggregatorStart, Api, Mosquitto, Proc};
use zonesync_proto::{
    digest, AgentId, Batch, EnterpriseId, OutboxId, Period, Presence, PresenceStatus, Reading, Topic, ZoneId,
    REFUSED_REUSED_SEQ, WIRE_VERSION,
};

const WAIT: Duration = Duration::from_secs(30);

/// The agent under test.
const AGENT: &str = "agent-a";

/// The month whose value added the tests follow.
const MONTH: Period = Period::Month(2026, 10);

/// The simulator's first tick: 2026-10-01 00:00 China time.
const SIM_START: &str = "2026-09-30T16:00:00Z";

/// Simulated time per tick, seconds.
const STEP_SECS: i64 = 900;

/// Ticks per simulated day.
const TICKS_PER_DAY: u64 = 96;

/// E1's simulated value added per day, 10k yuan.
const E1_VA_PER_DAY: f64 = 40.0;

fn zone() -> ZoneId {
    ZoneId::parse(ZONE).expect("zone id")
}

fn agent_id() -> AgentId {
    AgentId::parse(AGENT).expect("agent id")
}

fn enterprise(i: usize) -> EnterpriseId {
    EnterpriseId::parse(E[i]).expect("credit code")
}

// ---------------------------------------------------------------------------
// What the agent produces.

/// Stored readings of `enterprises` simulated enterprises over `ticks`
/// ticks with `meters` meters each: one per meter and tick, and one
/// value-added figure for October once a simulated midnight has passed
/// (later midnights restate it).
fn sim_readings(enterprises: u64, meters: u64, ticks: u64) -> u64 {
    enterprises * (meters * ticks + u64::from(ticks > TICKS_PER_DAY))
}

/// October's value added as the simulator last reported it after `ticks`
/// ticks: days elapsed at the last midnight × the daily figure.
fn sim_value_added(ticks: u64, per_day: f64) -> f64 {
    per_day * (ticks.saturating_sub(1) / TICKS_PER_DAY) as f64
}

/// The instant of simulator tick `tick`.
fn tick_time(tick: u64) -> DateTime<Utc> {
    let start: DateTime<Utc> = SIM_START.parse().expect("start time");
    start + Span::seconds(STEP_SECS * tick as i64)
}

/// How an agent process is configured.
#[derive(Debug, Clone)]
struct AgentOpts {
    /// Simulator ticks in all (the simulator resumes from its stored cursor).
    ticks: u64,
    /// Real milliseconds between ticks.
    tick_ms: u64,
    /// Meters per simulated enterprise.
    meters: u32,
    /// Simulated enterprises (indexes into `E`), E1 at 40 a day, E2 at 100.
    enterprises: Vec<usize>,
    /// Most readings per batch.
    batch_items: usize,
}

impl Default for AgentOpts {
    fn default() -> Self {
        Self {
            ticks: 100,
            tick_ms: 5,
            meters: 2,
            enterprises: vec![0],
            batch_items: 10,
        }
    }
}

/// A real agent's files: its configuration, data directory and CSV drop folder.
struct Agent {
    config: PathBuf,
    data: PathBuf,
    drop: PathBuf,
    port: u16,
    opts: AgentOpts,
}

static DROPS: AtomicU64 = AtomicU64::new(0);

impl Agent {
    /// Writes the configuration of agent `AGENT` in `dir` for the broker on `port`, keeping its data in `data`.
    fn new(dir: &Path, port: u16, data: &Path, opts: AgentOpts) -> Self {
        let drop = dir.join("finance-drop");
        std::fs::create_dir_all(&drop).expect("drop folder");
        let a = Self {
            config: dir.join("agent-under-test.toml"),
            data: data.to_owned(),
            drop,
            port,
            opts,
        };
        a.write();
        a
    }

    fn write(&self) {
        let o = &self.opts;
        let mut s = format!(
            "agent_id = \"{AGENT}\"\nzone = \"{ZONE}\"\ndata_dir = \"{data}\"\n\
             [mqtt]\nport = {port}\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\nend_to_end_confirm = true\n\
             [outbox]\nmax_batch_items = {items}\nmax_batch_age_ms = 50\nmax_in_flight = 8\n\
             confirm_timeout_secs = 2\nconfirm_timeout_max_secs = 4\n\
             [simulator]\ninterval_ms = {tick_ms}\nstep_secs = {STEP_SECS}\nstart = \"{SIM_START}\"\nmax_ticks = {ticks}\n\
             meters_per_enterprise = {meters}\n",
            data = self.data.display(),
            port = self.port,
            items = o.batch_items,
            tick_ms = o.tick_ms,
            ticks = o.ticks,
            meters = o.meters,
        );
        for &e in &o.enterprises {
            let per_day = if e == 0 { E1_VA_PER_DAY } else { 100.0 };
            s.push_str(&format!(
                "[[simulator.enterprises]]\nid = \"{}\"\nkwh_rate = {}\nvalue_added_per_day = {per_day}\n",
                E[e],
                10.0 * (e + 1) as f64
            ));
        }
        s.push_str(&format!(
            "[[csv_drop]]\nname = \"finance\"\nfolder = \"{}\"\nenterprise_column = \"credit_code\"\n\
             period_column = \"period\"\npoll_secs = 1\nsettle_secs = 0\n\
             [[csv_drop.columns]]\nheader = \"value_added\"\nindicator = \"value_added\"\nunit = \"10k_yuan\"\n",
            self.drop.display()
        ));
        std::fs::write(&self.config, s).expect("write agent config");
    }

    /// Sets the simulator's total ticks for the next start.
    fn set_ticks(&mut self, ticks: u64) {
        self.opts.ticks = ticks;
        self.write();
    }

    /// Starts `zonesync-agent run`, keeping its stderr.
    fn start(&self) -> Proc {
        Proc::spawn_capturing("zonesync-agent", &["run", "-c", self.config.to_str().expect("utf-8")])
    }

    /// `zonesync-agent status`: the running agent's status file, or the stopped agent's outbox.
    fn status(&self) -> Value {
        let out = run_to_end(
            "zonesync-agent",
            &["status", "-c", self.config.to_str().expect("utf-8")],
        );
        assert!(
            out.status.success(),
            "zonesync-agent status: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Drops a finance CSV with month figures of value added (enterprise index, period, value).
    fn drop_csv(&self, rows: &[(usize, &str, f64)]) {
        let mut text = String::from("credit_code,period,value_added\n");
        for (e, period, v) in rows {
            text.push_str(&format!("{},{period},{v}\n", E[*e]));
        }
        let n = DROPS.fetch_add(1, Ordering::SeqCst);
        let tmp = self.drop.join(format!("figures-{n}.part"));
        std::fs::write(&tmp, text).expect("write drop file");
        std::fs::rename(&tmp, self.drop.join(format!("figures-{n}.csv"))).expect("drop file in place");
    }
}

/// The outbox part of `zonesync-agent status` (running: `.outbox`; stopped: the whole document).
fn outbox_of(status: &Value) -> &Value {
    if status["outbox"].is_object() {
        &status["outbox"]
    } else {
        status
    }
}

/// Stops an agent with SIGTERM: a clean exit, no panic on its stderr.
fn stop_agent(mut p: Proc) {
    let status = p.terminate();
    std::thread::sleep(Duration::from_millis(200));
    let stderr = p.stderr_text();
    assert!(
        status.success(),
        "agent: clean exit on SIGTERM, got {status}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "agent: no panic:\n{stderr}");
}

/// Polls `zonesync-agent status` until `ok` holds for a running agent's
/// status written after `after` (it rewrites its file every 5 s, so an
/// older one may show a state long gone, e.g. the empty outbox at start).
async fn wait_status(agent: &Agent, what: &str, after: DateTime<Utc>, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = agent.status();
        let written = s["written_at"].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
        if written.is_some_and(|w| w > after) && ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: agent status never showed it:\n{s:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------
// MQTT: publishing as a forger, reading presence, sniffing the agent's batches.

/// One MQTT message to publish.
/// A batch of `AGENT` for E`ent+1` under outbox `ob` (`None`: an agent older than outbox ids).
fn batch(ob: Option<&OutboxId>, seq: u64, ent: usize, readings: Vec<Reading>) -> Msg {
    let b = Batch {
        v: WIRE_VERSION,
        agent: agent_id(),
        boot: 1,
        outbox: ob.cloned(),
        seq,
        sent_at: Utc::now(),
        zone: zone(),
        enterprise: enterprise(ent),
        backfill: false,
        readings,
        declarations: vec![],
    };
    Msg::batch(&b)
}

/// The retained presence of `AGENT` announcing outbox `ob` numbering next from `next_seq`.
fn presence(ob: Option<&OutboxId>, next_seq: u64) -> Msg {
    let p = Presence {
        v: WIRE_VERSION,
        agent: agent_id(),
        zone: zone(),
        status: PresenceStatus::Online,
        boot: 1,
        at: Utc::now(),
        outbox: ob.cloned(),
        next_seq,
        dropped_readings: 0,
        dropped_sent_readings: 0,
        clock_offset_ms: None,
        broker_denied_batches: 0,
        version: "old-install".into(),
        enterprises: vec![enterprise(0)],
    };
    Msg::presence(&p)
}

/// October's value added, month to date, in 10k yuan.
fn value_added(value: f64) -> Reading {
    Reading {
        indicator: "value_added".into(),
        point: String::new(),
        value,
        unit: "10k_yuan".into(),
        ts: None,
        period: Some(MONTH),
    }
}

static CLIENTS: AtomicU64 = AtomicU64::new(0);

fn client_id(role: &str) -> String {
    format!(
        "agent-integrity-{role}-{}-{}",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::SeqCst)
    )
}

/// Subscribes to `filter` and passes every message (topic, payload) to
/// `sink` until the returned task is aborted; returns once subscribed.
async fn subscribe(
    port: u16,
    filter: String,
    sink: impl Fn(String, Vec<u8>) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let mut o = MqttOptions::new(client_id("sub"), "127.0.0.1", port);
    o.set_max_packet_size(1 << 22, 1 << 22);
    let (client, mut events) = AsyncClient::new(o, 64);
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .subscribe(filter.clone(), QoS::AtLeastOnce)
                        .await
                        .expect("subscribe");
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => sink(p.topic.clone(), p.payload.to_vec()),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(WAIT, subscribed)
        .await
        .expect("subscribed")
        .expect("subscriber task");
    task
}

/// Waits for `AGENT`'s presence (the retained one first, then live ones) until `ok` holds for one.
async fn wait_presence(port: u16, what: &str, ok: impl Fn(&Presence) -> bool) -> Presence {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = subscribe(port, Topic::state(&zone(), &agent_id()), move |_, payload| {
        if let Ok(p) = serde_json::from_slice::<Presence>(&payload) {
            let _ = tx.send(p);
        }
    })
    .await;
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(p)) if ok(&p) => {
                task.abort();
                return p;
            }
            Ok(Some(p)) => seen.push(p),
            _ => panic!("{what}: no such presence of {AGENT}; seen: {seen:#?}"),
        }
    }
}

/// Every batch `AGENT` published, as (outbox, seq) → the digests seen under
/// it, and the instants of the meter readings they carried.
#[derive(Clone, Default)]
struct Sniffed(Arc<Mutex<SniffedBatches>>);

#[derive(Clone, Default)]
struct SniffedBatches {
    marks: BTreeMap<(String, u64), BTreeSet<String>>,
    meter_times: BTreeSet<DateTime<Utc>>,
}

impl Sniffed {
    /// Starts recording what `AGENT` publishes on the broker at `port`,
    /// until the returned task is aborted.
    #[must_use]
    async fn start(&self, port: u16) -> tokio::task::JoinHandle<()> {
        let seen = self.0.clone();
        let filter = format!("{}/{ZONE}/{AGENT}/data/+", zonesync_proto::topic::ROOT);
        subscribe(port, filter, move |_, payload| {
            if let Ok(b) = serde_json::from_slice::<Batch>(&payload) {
                let ob = b.outbox.map(|o| o.as_str().to_owned()).unwrap_or_default();
                let mut m = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                m.marks.entry((ob, b.seq)).or_default().insert(digest(&payload));
                m.meter_times.extend(b.readings.iter().filter_map(|r| r.ts));
            }
        })
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SniffedBatches> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A separate record starting from what this one holds.
    fn fork(&self) -> Sniffed {
        Sniffed(Arc::new(Mutex::new(self.lock().clone())))
    }

    /// (outbox, seq) marks published with more than one payload.
    fn reused(&self) -> Vec<((String, u64), BTreeSet<String>)> {
        self.lock()
            .marks
            .iter()
            .filter(|(_, d)| d.len() > 1)
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect()
    }

    /// Sequence numbers published under `outbox`.
    fn seqs(&self, outbox: &str) -> Vec<u64> {
        self.lock()
            .marks
            .keys()
            .filter(|(o, _)| o == outbox)
            .map(|(_, s)| *s)
            .collect()
    }

    /// Marks seen.
    fn len(&self) -> usize {
        self.lock().marks.len()
    }

    /// Waits until a batch with a meter reading at `ts` was published.
    async fn wait_meter_time(&self, ts: DateTime<Utc>) {
        let deadline = Instant::now() + WAIT;
        while !self.lock().meter_times.contains(&ts) {
            assert!(Instant::now() < deadline, "no batch with a reading at {ts} published");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// The aggregator.

/// The test's broker, registry and aggregator config, in a fresh directory.
struct Setup {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    config: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    Setup {
        config: ds.aggregator,
        broker,
        dir,
    }
}

/// Starts an aggregator process on `config` that must come up.
fn start(config: &Path) -> (Proc, Api) {
    match try_spawn_aggregator(config, WAIT) {
        AggregatorStart::Serving(p, api) => (p, api),
        AggregatorStart::Exited(status, stderr) => panic!("the aggregator ended at start ({status}):\n{stderr}"),
    }
}

/// Stops an aggregator with SIGTERM: a clean exit, no panic on its stderr.
fn stop(mut p: Proc) {
    let status = p.terminate();
    std::thread::sleep(Duration::from_millis(200));
    let stderr = p.stderr_text();
    assert!(
        status.success(),
        "aggregator: clean exit on SIGTERM, got {status}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "aggregator: no panic:\n{stderr}");
}

/// October's value added for E`ent+1` as the enterprise page shows it.
async fn shown_value_added(api: &Api, ent: usize) -> Option<f64> {
    let e = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[ent])).await;
    e["latest"]
        .as_array()?
        .iter()
        .find(|r| r["indicator"] == "value_added" && r["period"] == MONTH.to_string())?["value"]
        .as_f64()
}

/// Waits until E`ent+1`'s October value added shows `want`, and checks the energy page agrees.
async fn wait_value_added(api: &Api, ent: usize, want: f64) {
    let deadline = Instant::now() + WAIT;
    let mut seen = None;
    while Instant::now() < deadline {
        seen = shown_value_added(api, ent).await;
        if seen == Some(want) {
            let en = api.get(&format!("/api/v1/zones/{ZONE}/energy?period={MONTH}")).await;
            let row = en["enterprises"]
                .as_array()
                .and_then(|a| a.iter().find(|r| r["enterprise"] == E[ent]).cloned());
            if row.as_ref().and_then(|r| r["value_added"].as_f64()) == Some(want) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("value added of E{} shows {seen:?}, expected {want}", ent + 1);
}

/// Readings the zone holds, as `/api/v1/zones` counts them.
async fn readings_stored(api: &Api) -> u64 {
    api.get("/api/v1/zones").await["zones"][0]["readings_stored"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until the zone holds `want` readings; then checks no more arrive.
async fn wait_readings(api: &Api, want: u64) {
    let deadline = Instant::now() + WAIT;
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = readings_stored(api).await;
        if seen >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, want, "readings stored vs produced");
}

/// Dead letters of `AGENT` carrying `label`, oldest first.
async fn dead_letters(api: &Api, label: &str) -> Vec<Value> {
    let dl = api.get("/api/v1/dead-letters?limit=1000").await;
    let mut v: Vec<Value> = dl["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d["agent"] == AGENT && d["labels"].as_array().is_some_and(|l| l.iter().any(|x| x == label)))
        .collect();
    v.sort_by_key(|d| d["id"].as_u64().unwrap_or(0));
    v
}

fn rejected(label: &str) -> String {
    format!("zonesync_aggregator_rejected_total{{reason=\"{label}\"}}")
}

/// Waits until the aggregator has handled a presence of `AGENT` announcing
/// `next_seq`: then it is subscribed, and a batch published now reaches it
/// (on a fresh broker nothing holds a batch published before that).
async fn wait_announced(api: &Api, next_seq: u64) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let a = api.get(&format!("/api/v1/zones/{ZONE}/agents")).await;
        let announced = a["agents"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["agent"] == AGENT))
            .map(|x| x["state"]["announced"]["next_seq"].clone());
        if announced == Some(Value::from(next_seq)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the aggregator never handled {AGENT}'s presence announcing {next_seq}");
}

/// The agents page's entry for `AGENT`.
async fn agent_state(api: &Api) -> Value {
    let a = api.get(&format!("/api/v1/zones/{ZONE}/agents")).await;
    a["agents"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["agent"] == AGENT))
        .map(|x| x["state"].clone())
        .unwrap_or_else(|| panic!("{AGENT} missing from {a}"))
}

/// Every batch the aggregator's store at `store` holds, as (agent, outbox,
/// seq) → the digests held under it (the aggregator must have stopped).
fn stored_batches(store: &Path) -> BTreeMap<(String, String, u64), BTreeSet<String>> {
    let db = sled::Config::new()
        .path(store)
        .open()
        .unwrap_or_else(|e| panic!("open {}: {e}", store.display()));
    let batches = db.open_tree("batches").expect("batches tree");
    let mut out: BTreeMap<_, BTreeSet<String>> = BTreeMap::new();
    for kv in batches.iter() {
        let (k, v) = kv.expect("read the store");
        let rec = zonesync_aggregator::store::record::decode(&v)
            .unwrap_or_else(|| panic!("batch record {k:?} does not decode"));
        let a = rec.batch;
        let ob = a.outbox.map(|o| o.as_str().to_owned()).unwrap_or_default();
        out.entry((a.agent.to_string(), ob, a.seq))
            .or_default()
            .insert(a.digest);
    }
    out
}

/// The aggregator's store holds no two different batches under one (agent, outbox, seq).
fn assert_one_batch_per_mark(store: &Path) -> usize {
    let held = stored_batches(store);
    let twice: Vec<_> = held.iter().filter(|(_, d)| d.len() > 1).collect();
    assert!(twice.is_empty(), "two batches under one mark: {twice:#?}");
    held.len()
}

// ---------------------------------------------------------------------------
// Files.

// ---------------------------------------------------------------------------
// 1. A fast clock at first install, then a reinstall.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstalled_agent_after_a_fast_clock_install_wins_with_small_seqs_and_keeps_winning() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);

    // The first install, clock fast: its outbox numbered from clock
    // microseconds, first without an outbox id, then (after an upgrade drew
    // one) under outbox A, carrying on from the same numbers.
    let a0: u64 = 1_900_000_000_000_000;
    let old = OutboxId::from_random([0xa0; 16]);
    publish(port, vec![presence(None, a0)]).await;
    wait_announced(&api, a0).await;
    let legacy = batch(None, a0, 0, vec![value_added(300.0)]);
    let legacy_again = Msg {
        topic: legacy.topic.clone(),
        payload: legacy.payload.clone(),
        retain: false,
    };
    publish(port, vec![legacy]).await;
    wait_value_added(&api, 0, 300.0).await;
    publish(port, vec![presence(Some(&old), a0 + 1)]).await;
    let last_old = batch(Some(&old), a0 + 2, 0, vec![value_added(330.0)]);
    let last_old_again = Msg {
        topic: last_old.topic.clone(),
        payload: last_old.payload.clone(),
        retain: false,
    };
    publish(
        port,
        vec![batch(Some(&old), a0 + 1, 0, vec![value_added(320.0)]), last_old],
    )
    .await;
    wait_value_added(&api, 0, 330.0).await;

    // Reinstalled: a fresh data directory. The real agent reports E1 for
    // one simulated day (97 ticks): its value added (40) must replace 330.
    let mut agent = Agent::new(
        s.dir.path(),
        port,
        &s.dir.path().join("agent-data"),
        AgentOpts {
            ticks: 97,
            ..AgentOpts::default()
        },
    );
    let p = agent.start();
    wait_readings(&api, sim_readings(1, 2, 97)).await;
    wait_value_added(&api, 0, sim_value_added(97, E1_VA_PER_DAY)).await;
    let birth = wait_presence(port, "the reinstalled agent's presence", |p| p.version != "old-install").await;
    let fresh = birth.outbox.clone().expect("the new agent names its outbox");
    assert_ne!(fresh, old, "a fresh outbox id");
    let st = agent_state(&api).await;
    assert_eq!(st["outbox"], fresh.as_str(), "{st:#}");
    let last = st["last_seq"].as_u64().expect("last_seq");
    assert!(
        (1..1000).contains(&last),
        "the new outbox numbers from 1, never from the clock: last_seq {last}"
    );
    let status = wait_status(&agent, "the outbox under its fresh id", Utc::now(), |v| {
        outbox_of(v)["outbox_id"] == fresh.as_str()
    })
    .await;
    assert!(outbox_of(&status)["next_seq"].as_u64() < Some(1000), "{status:#}");

    // The old outbox's batches delivered again (a broker's redelivery): duplicates, nothing changes.
    let dups = api.metric("zonesync_aggregator_batches_duplicate_total").await;
    publish(port, vec![legacy_again, last_old_again]).await;
    api.wait_metric("zonesync_aggregator_batches_duplicate_total", dups + 2.0, WAIT)
        .await;
    assert_eq!(shown_value_added(&api, 0).await, Some(40.0));

    // The agent goes on (restarted, a second simulated day): 80 wins too.
    stop_agent(p);
    agent.set_ticks(193);
    let p = agent.start();
    wait_readings(&api, sim_readings(1, 2, 193)).await;
    wait_value_added(&api, 0, sim_value_added(193, E1_VA_PER_DAY)).await;
    stop(agg);

    // After an aggregator restart the figure stands, and finance's correction
    // of the month (a CSV) wins over everything before it.
    let (agg, api) = start(&s.config);
    assert_eq!(shown_value_added(&api, 0).await, Some(80.0));
    agent.drop_csv(&[(0, "2026-10", 85.5)]);
    wait_value_added(&api, 0, 85.5).await;
    wait_readings(&api, sim_readings(1, 2, 193)).await;
    let st = agent_state(&api).await;
    assert_eq!(st["outbox"], fresh.as_str(), "{st:#}");
    assert!(st["last_seq"].as_u64() < Some(1000), "{st:#}");
    for label in [REFUSED_REUSED_SEQ, "seq_ahead"] {
        assert_eq!(api.metric(&rejected(label)).await, 0.0, "{label}");
        assert!(dead_letters(&api, label).await.is_empty(), "{label}");
    }
    stop_agent(p);
    stop(agg);
}

// ---------------------------------------------------------------------------
// 2. Seqs claimed ahead by a forger.

/// Waits until the aggregator has refused batches of `AGENT` as reused_seq; returns them.
async fn wait_reused_seq_refusals(api: &Api, after: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let dl = dead_letters(api, REFUSED_REUSED_SEQ).await;
        if dl.len() > after || Instant::now() > deadline {
            return dl;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The forger: three batches of wrong figures under `AGENT`'s outbox `ob` at `next`, `next + 1`, `next + 2`.
fn forged(ob: &OutboxId, next: u64, figure: f64) -> Vec<Msg> {
    (0..3)
        .map(|i| batch(Some(ob), next + i, 0, vec![value_added(figure - i as f64)]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_claimed_ahead_by_a_forger_make_the_agent_rotate_and_resend_everything() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    // One reading per batch, so three CSV rows make three batches.
    let agent = Agent::new(
        s.dir.path(),
        port,
        &s.dir.path().join("agent-data"),
        AgentOpts {
            ticks: 97,
            batch_items: 1,
            ..AgentOpts::default()
        },
    );
    let p = agent.start();
    let mut want = sim_readings(1, 2, 97);
    wait_readings(&api, want).await;
    wait_value_added(&api, 0, 40.0).await;

    // (a) While the agent runs. Idle and fully confirmed, its next seq is
    // the one its status shows. The forger holds the agent's credentials: it
    // reads the outbox id from the agent's retained presence and claims the
    // next three seqs. The aggregator's confirmation of the forged batches
    // goes to the agent's confirm topic too: it shows numbers at or past the
    // agent's next seq held under its id (or, had the agent sealed first,
    // its own batches are refused as reused_seq): either way it must move to
    // a fresh id and nothing of its own may be lost.
    let status = wait_status(&agent, "every batch confirmed", Utc::now(), |v| {
        let o = outbox_of(v);
        o["sealed_batches"] == 0 && o["pending_items"] == 0
    })
    .await;
    let next = outbox_of(&status)["next_seq"].as_u64().expect("next_seq");
    let birth = wait_presence(port, "the agent's retained presence", |p| p.outbox.is_some()).await;
    let x = birth.outbox.clone().expect("outbox");
    assert_eq!(outbox_of(&status)["outbox_id"], x.as_str());
    publish(port, forged(&x, next, 999.0)).await;
    wait_value_added(&api, 0, 997.0).await;
    let rotated = wait_presence(port, "a presence under a fresh outbox id", |p| {
        p.outbox.as_ref().is_some_and(|o| o != &x)
    })
    .await;
    let y = rotated.outbox.expect("outbox");
    // Finance's figures arrive: sealed at the claimed seqs, under the fresh id.
    agent.drop_csv(&[(0, "2026-08", 31.0), (0, "2026-09", 32.0), (0, "2026-10", 55.0)]);
    want += 2;
    wait_value_added(&api, 0, 55.0).await;
    wait_readings(&api, want).await;
    let refused_a = dead_letters(&api, REFUSED_REUSED_SEQ).await;
    for d in &refused_a {
        let seq = d["seq"].as_u64().expect("seq");
        assert!((next..next + 3).contains(&seq), "{d:#}");
    }
    let status = wait_status(&agent, "the rotation and every batch confirmed", Utc::now(), |v| {
        let o = outbox_of(v);
        o["outbox_id"] == y.as_str() && o["sealed_batches"] == 0 && o["pending_items"] == 0
    })
    .await;
    assert!(
        status["upstreams"][0]["identity_rotations"].as_u64() >= Some(1),
        "{status:#}"
    );
    assert_eq!(agent_state(&api).await["outbox"], y.as_str());
    stop_agent(p);

    // (b) While the agent is down (it misses the confirmations of the
    // forged batches): its own batches at the claimed seqs are refused as
    // reused_seq when it comes back, and it rotates and resends.
    let stopped = agent.status();
    let next = outbox_of(&stopped)["next_seq"].as_u64().expect("next_seq");
    let offline = wait_presence(port, "the agent's goodbye", |p| p.status == PresenceStatus::Offline).await;
    assert_eq!(offline.outbox.as_ref(), Some(&y));
    publish(port, forged(&y, next, 899.0)).await;
    wait_value_added(&api, 0, 897.0).await;
    agent.drop_csv(&[(0, "2026-06", 21.0), (0, "2026-07", 22.0), (0, "2026-10", 66.0)]);
    want += 2;
    let p = agent.start();
    let refused_b = wait_reused_seq_refusals(&api, refused_a.len()).await;
    assert!(
        refused_b.len() > refused_a.len(),
        "the agent's batches under the forged seqs are refused as reused_seq"
    );
    for d in &refused_b[refused_a.len()..] {
        let seq = d["seq"].as_u64().expect("seq");
        assert!((next..next + 3).contains(&seq), "{d:#}");
        assert_eq!(d["whole_batch"], true, "{d:#}");
    }
    let rotated = wait_presence(port, "a presence under another fresh outbox id", |p| {
        p.outbox.as_ref().is_some_and(|o| o != &x && o != &y)
    })
    .await;
    let z = rotated.outbox.expect("outbox");
    wait_value_added(&api, 0, 66.0).await;
    wait_readings(&api, want).await;
    let status = wait_status(
        &agent,
        "the second rotation and every resend confirmed",
        Utc::now(),
        |v| {
            let o = outbox_of(v);
            o["outbox_id"] == z.as_str() && o["sealed_batches"] == 0 && o["pending_items"] == 0
        },
    )
    .await;
    assert!(
        status["upstreams"][0]["identity_rotations"].as_u64() >= Some(1),
        "{status:#}"
    );
    assert!(
        outbox_of(&status)["identity_rotations"].as_u64() >= Some(2),
        "{status:#}"
    );
    let st = agent_state(&api).await;
    assert_eq!(st["outbox"], z.as_str(), "{st:#}");
    assert!(st["refused_reused_seq"].as_u64() >= Some(1), "{st:#}");
    assert_eq!(api.metric(&rejected("seq_ahead")).await, 0.0);
    stop_agent(p);
    stop(agg);
    let marks = assert_one_batch_per_mark(&s.dir.path().join("aggregator").join("store"));
    eprintln!(
        "forged while running: {} refused as reused_seq; while down: {} refused; {marks} marks held",
        refused_a.len(),
        refused_b.len() - refused_a.len()
    );
}

// ---------------------------------------------------------------------------
// 3. An outbox restored from a copy.

/// What [`restore_and_run_again`] leaves running and what it saw.
struct Restored {
    s: Setup,
    agg: Proc,
    api: Api,
    agent: Agent,
    running: Proc,
    sniffed: Sniffed,
    /// The outbox id of the copy.
    copied_id: String,
    /// The copy's next seq.
    copied_next: u64,
    /// The next seq the outbox had reached when the copy was put back.
    reached: u64,
}

/// Runs the agent, copies its stopped data directory, runs it on, puts the
/// copy back (with its high-water mark file, or keeping the current one)
/// and runs it again, with a correction of the month after the restore.
async fn restore_and_run_again(with_mark: bool) -> Restored {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    let sniffed = Sniffed::default();
    let _sniffer = sniffed.start(port).await;
    let data = s.dir.path().join("agent-data");
    let mut agent = Agent::new(s.dir.path(), port, &data, AgentOpts::default());
    let p = agent.start();
    wait_readings(&api, sim_readings(1, 2, 100)).await;
    // Copied with nothing held: after the restore the first batches it
    // publishes are new seals under reused numbers. (With a batch still held,
    // its resend's confirmation would show the aggregator's `highest` past
    // the restored next seq and the agent would rotate before reissuing any.)
    wait_status(&agent, "every batch confirmed before the copy", Utc::now(), |v| {
        let o = outbox_of(v);
        o["sealed_batches"] == 0 && o["pending_items"] == 0
    })
    .await;
    stop_agent(p);
    let snapshot = s.dir.path().join("agent-data-copy");
    copy_tree(&data, &snapshot);
    let hw = zonesync_agent::outbox::identity::high_water_path(&data.join("outbox"));
    assert!(hw.exists(), "the mark lives beside the outbox: {}", hw.display());
    let first = agent.status();
    let copied_id = outbox_of(&first)["outbox_id"].as_str().expect("outbox id").to_owned();
    let copied_next = outbox_of(&first)["next_seq"].as_u64().expect("next_seq");

    agent.set_ticks(150);
    let p = agent.start();
    wait_readings(&api, sim_readings(1, 2, 150)).await;
    stop_agent(p);
    let second = agent.status();
    assert_eq!(outbox_of(&second)["outbox_id"], copied_id.as_str());
    let reached = outbox_of(&second)["next_seq"].as_u64().expect("next_seq");
    assert!(
        reached > copied_next,
        "the second run sent more: {copied_next} → {reached}"
    );

    // Put the copy back: everything (a VM snapshot), or all but the mark.
    let kept_mark = std::fs::read(&hw).expect("mark");
    std::fs::remove_dir_all(&data).expect("remove data dir");
    copy_tree(&snapshot, &data);
    if !with_mark {
        std::fs::write(&hw, kept_mark).expect("keep the current mark");
    }
    agent.set_ticks(200);
    let running = agent.start();
    // Nothing produced after the restore is lost; then finance corrects the month.
    wait_readings(&api, sim_readings(1, 2, 200)).await;
    wait_value_added(&api, 0, sim_value_added(200, E1_VA_PER_DAY)).await;
    agent.drop_csv(&[(0, "2026-10", 77.0)]);
    wait_value_added(&api, 0, 77.0).await;
    Restored {
        s,
        agg,
        api,
        agent,
        running,
        sniffed,
        copied_id,
        copied_next,
        reached,
    }
}

/// Waits until the running agent has everything confirmed under an outbox id other than `old`.
async fn wait_rotated_and_confirmed(agent: &Agent, old: &str) -> Value {
    wait_status(agent, "a fresh outbox id, everything confirmed", Utc::now(), |v| {
        let o = outbox_of(v);
        o["outbox_id"] != old && o["sealed_batches"] == 0 && o["pending_items"] == 0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_restored_with_its_mark_like_a_vm_snapshot_is_caught_by_digest_and_rotates() {
    let r = restore_and_run_again(true).await;
    // The restored outbox numbered from copied_next again under the same
    // id: the aggregator holds other bytes there and refuses them by reason.
    assert!(
        !r.sniffed.reused().is_empty(),
        "the snapshot did publish seqs again with other bytes"
    );
    let dl = dead_letters(&r.api, REFUSED_REUSED_SEQ).await;
    assert!(!dl.is_empty(), "the reused seqs are refused as reused_seq");
    for d in &dl {
        let seq = d["seq"].as_u64().expect("seq");
        assert!((r.copied_next..r.reached).contains(&seq), "{d:#}");
    }
    let status = wait_rotated_and_confirmed(&r.agent, &r.copied_id).await;
    assert!(
        status["upstreams"][0]["identity_rotations"].as_u64() >= Some(1),
        "{status:#}"
    );
    let st = agent_state(&r.api).await;
    assert_eq!(st["outbox"], outbox_of(&status)["outbox_id"], "{st:#}");
    stop_agent(r.running);
    stop(r.agg);
    let marks = assert_one_batch_per_mark(&r.s.dir.path().join("aggregator").join("store"));
    eprintln!(
        "snapshot with its mark: seqs {}..{} reissued, {} refused as reused_seq, {marks} marks held",
        r.copied_next,
        r.reached,
        dl.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_restored_without_its_mark_never_reissues_a_seq() {
    let r = restore_and_run_again(false).await;
    // The mark knew better than the store: numbering went on from it, under a fresh id.
    let status = wait_rotated_and_confirmed(&r.agent, &r.copied_id).await;
    let o = outbox_of(&status);
    assert!(o["store_rollbacks"].as_u64() >= Some(1), "{status:#}");
    assert!(o["next_seq"].as_u64() > Some(r.reached), "{status:#}");
    let reused = r.sniffed.reused();
    assert!(reused.is_empty(), "seqs published twice with other bytes: {reused:#?}");
    let again: Vec<u64> = r
        .sniffed
        .seqs(&r.copied_id)
        .into_iter()
        .filter(|s| *s >= r.reached)
        .collect();
    assert!(
        again.is_empty(),
        "nothing sealed under the restored id after the restore: {again:?}"
    );
    assert_eq!(r.api.metric(&rejected(REFUSED_REUSED_SEQ)).await, 0.0);
    assert!(dead_letters(&r.api, REFUSED_REUSED_SEQ).await.is_empty());
    stop_agent(r.running);
    stop(r.agg);
    let marks = assert_one_batch_per_mark(&r.s.dir.path().join("aggregator").join("store"));
    eprintln!(
        "copy without its mark: {marks} marks held, {} published",
        r.sniffed.len()
    );
}

// ---------------------------------------------------------------------------
// 4. Damaged outbox files.

/// How an agent came out of a start on a damaged outbox.
#[derive(Debug)]
enum Verdict {
    /// Refused to start, non-zero, with an error naming the outbox.
    Refused,
    /// Ran, lost nothing and reissued no seq.
    Intact,
}

/// Where the pristine state of the damaged-outbox cases is kept.
struct Pristine {
    agent_data: PathBuf,
    aggregator_data: PathBuf,
    sniffed: Sniffed,
}

/// Ticks the agent had produced before the damage (the last 20 held unconfirmed).
const BEFORE_DAMAGE: u64 = 120;
/// Ticks in all once the damaged agent has run.
const AFTER_DAMAGE: u64 = 140;

/// One damage case on its own copies of the stopped agent's and the
/// aggregator's data, with its own broker: the agent must refuse to start
/// (non-zero, an error naming the outbox) or run on with everything stored
/// and no seq reissued with other bytes.
async fn damaged_case(root: &Path, name: &str, pristine: &Pristine, damage: impl FnOnce(&Path)) -> Verdict {
    let dir = root.join(format!("case-{name}"));
    std::fs::create_dir_all(&dir).expect("case dir");
    let broker = Mosquitto::start(&dir);
    let ds = dataset::write(&dir, broker.port, 1, 2);
    copy_tree(&pristine.aggregator_data, &dir.join("aggregator"));
    let data = dir.join("agent-data");
    copy_tree(&pristine.agent_data, &data);
    let outbox = data.join("outbox");
    damage(&outbox);
    let agent = Agent::new(
        &dir,
        broker.port,
        &data,
        AgentOpts {
            ticks: AFTER_DAMAGE,
            ..AgentOpts::default()
        },
    );
    let (agg, api) = start(&ds.aggregator);
    let sniffed = pristine.sniffed.fork();
    let sniffer = sniffed.start(broker.port).await;
    let mut p = agent.start();
    let want = sim_readings(1, 2, AFTER_DAMAGE);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = p.try_wait() {
            std::thread::sleep(Duration::from_millis(200));
            let stderr = p.stderr_text();
            eprintln!("{name}: the agent refused to start ({status}):\n{stderr}");
            assert!(!status.success(), "{name}: a refusal ends non-zero");
            assert!(
                stderr.contains("Error:") && stderr.contains(&outbox.display().to_string()),
                "{name}: the error names the outbox {}, not only a panic:\n{stderr}",
                outbox.display()
            );
            assert!(!stderr.contains("panicked"), "{name}: no panic:\n{stderr}");
            sniffer.abort();
            stop(agg);
            return Verdict::Refused;
        }
        if readings_stored(&api).await >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the agent runs but the zone holds {} readings of {want}: a silent loss\n{}",
            readings_stored(&api).await,
            p.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_readings(&api, want).await;
    // Every simulated reading is in: finance's correction is the last word.
    agent.drop_csv(&[(0, "2026-10", 61.0)]);
    wait_value_added(&api, 0, 61.0).await;
    let reused = sniffed.reused();
    assert!(
        reused.is_empty(),
        "{name}: seqs published again with other bytes: {reused:#?}"
    );
    assert_eq!(api.metric(&rejected(REFUSED_REUSED_SEQ)).await, 0.0, "{name}");
    let status = agent.status();
    eprintln!(
        "{name}: ran on; outbox {}",
        serde_json::to_string(outbox_of(&status)).unwrap_or_default()
    );
    sniffer.abort();
    stop_agent(p);
    stop(agg);
    assert_one_batch_per_mark(&dir.join("aggregator").join("store"));
    Verdict::Intact
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_outbox_files_stop_the_agent_with_their_path_or_lose_and_reissue_nothing() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    let sniffed = Sniffed::default();
    let _sniffer = sniffed.start(port).await;
    let data = s.dir.path().join("agent-data");
    let mut agent = Agent::new(s.dir.path(), port, &data, AgentOpts::default());
    let p = agent.start();
    wait_readings(&api, sim_readings(1, 2, 100)).await;
    stop_agent(p);
    stop(agg);
    // Twenty more ticks published while the aggregator is down: held, unconfirmed.
    agent.set_ticks(BEFORE_DAMAGE);
    let p = agent.start();
    sniffed.wait_meter_time(tick_time(BEFORE_DAMAGE - 1)).await;
    stop_agent(p);
    let held = agent.status();
    assert!(outbox_of(&held)["sealed_batches"].as_u64() > Some(0), "{held:#}");
    let pristine = Pristine {
        agent_data: s.dir.path().join("pristine-agent-data"),
        aggregator_data: s.dir.path().join("pristine-aggregator"),
        sniffed,
    };
    copy_tree(&data, &pristine.agent_data);
    copy_tree(&s.dir.path().join("aggregator"), &pristine.aggregator_data);
    let files: Vec<String> = std::fs::read_dir(data.join("outbox"))
        .expect("outbox dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    eprintln!("outbox files: {files:?}");

    let root = s.dir.path();
    let mut verdicts = Vec::new();
    verdicts.push((
        "flipped db",
        damaged_case(root, "flipped-db", &pristine, |o| flip_middle(&o.join("db"), 64)).await,
    ));
    verdicts.push((
        "truncated db",
        damaged_case(root, "truncated-db", &pristine, |o| {
            let len = std::fs::metadata(o.join("db")).expect("db").len();
            truncate(&o.join("db"), len / 3);
        })
        .await,
    ));
    verdicts.push((
        "torn db tail",
        damaged_case(root, "torn-db", &pristine, |o| {
            let len = std::fs::metadata(o.join("db")).expect("db").len();
            truncate(&o.join("db"), len.saturating_sub(100));
        })
        .await,
    ));
    verdicts.push((
        "flipped conf",
        damaged_case(root, "flipped-conf", &pristine, |o| flip_middle(&o.join("conf"), 1)).await,
    ));
    for snap in files.iter().filter(|f| f.starts_with("snap.")) {
        let v = damaged_case(root, &format!("flipped-{snap}"), &pristine, |o| {
            flip_middle(&o.join(snap), 1)
        })
        .await;
        verdicts.push(("flipped snapshot", v));
    }
    for (case, v) in &verdicts {
        eprintln!(
            "{case}: {}",
            match v {
                Verdict::Refused => "refused at start",
                Verdict::Intact => "ran on, nothing lost, no seq reissued",
            }
        );
    }
}

// ---------------------------------------------------------------------------
// 5. A full disk.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_agent_with_an_error_and_after_a_restart_everything_is_stored() {
    let s = setup();
    let port = s.broker.port;
    let (agg, api) = start(&s.config);
    let disk = Tmpfs::mount(&s.dir.path().join("agent-disk"), "4m");
    let ticks = 400;
    let agent = Agent::new(
        s.dir.path(),
        port,
        &disk.path.join("data"),
        AgentOpts {
            ticks,
            tick_ms: 25,
            ..AgentOpts::default()
        },
    );
    let mut p = agent.start();
    let deadline = Instant::now() + WAIT;
    while readings_stored(&api).await < 40 {
        assert!(Instant::now() < deadline, "the agent never sent 40 readings");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filler = fill(&disk.path);
    // The simulator's appends fail; the outbox takes no write: the agent
    // ends non-zero so that systemd starts it again.
    let exited = p.wait_exit(Duration::from_secs(45));
    std::thread::sleep(Duration::from_millis(200));
    let stderr = p.stderr_text();
    eprintln!("full disk: exit {exited:?}, stderr:\n{stderr}");
    let status =
        exited.unwrap_or_else(|| panic!("with its disk full the agent did not end within 45 s; stderr:\n{stderr}"));
    assert!(
        !status.success(),
        "ends non-zero on an outbox it cannot write: {status}"
    );
    assert!(stderr.contains("Error:"), "the error is printed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "no panic on a full disk:\n{stderr}");
    let during = readings_stored(&api).await;
    assert!(
        during < sim_readings(1, 2, ticks),
        "the disk filled before the simulator finished ({during} readings stored)"
    );

    // Room again; started again as systemd would.
    std::fs::remove_file(&filler).expect("remove filler");
    let p = agent.start();
    wait_readings(&api, sim_readings(1, 2, ticks)).await;
    wait_value_added(&api, 0, sim_value_added(ticks, E1_VA_PER_DAY)).await;
    let status = wait_status(&agent, "everything confirmed after the restart", Utc::now(), |v| {
        let o = outbox_of(v);
        o["sealed_batches"] == 0 && o["pending_items"] == 0
    })
    .await;
    assert_eq!(outbox_of(&status)["dropped_readings"], 0, "{status:#}");
    assert_eq!(api.metric(&rejected(REFUSED_REUSED_SEQ)).await, 0.0);
    stop_agent(p);
    stop(agg);
    assert_one_batch_per_mark(&s.dir.path().join("aggregator").join("store"));
    drop(disk);
}

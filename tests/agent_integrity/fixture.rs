//! What every agent integrity test uses: the broker, the agent and aggregator
//! processes, messages a forger sends, what the agent published, and reading
//! back what was stored and shown.

pub(crate) use chrono::{DateTime, Duration as Span, Utc};
pub(crate) use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
pub(crate) use serde_json::Value;
pub(crate) use std::collections::{BTreeMap, BTreeSet};
pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
pub(crate) use std::sync::{Arc, Mutex};
pub(crate) use std::time::{Duration, Instant};
pub(crate) use zonesync_e2e::attack::{enterprise, rejected, setup, start, value_added, zone, Setup, MONTH};
pub(crate) use zonesync_e2e::dataset::{self, E, ZONE};
pub(crate) use zonesync_e2e::hostile::{copy_tree, fill, flip_middle, publish, truncate, Msg, Tmpfs};
pub(crate) use zonesync_e2e::{run_to_end, Api, Mosquitto, Proc};
pub(crate) use zonesync_proto::{
    digest, AgentId, Batch, OutboxId, Presence, PresenceStatus, Reading, Topic, REFUSED_REUSED_SEQ, WIRE_VERSION,
};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// The agent under test.
pub(crate) const AGENT: &str = "agent-a";

/// The simulator's first tick: 2026-10-01 00:00 China time.
pub(crate) const SIM_START: &str = "2026-09-30T16:00:00Z";

/// Simulated time per tick, seconds.
pub(crate) const STEP_SECS: i64 = 900;

/// Ticks per simulated day.
pub(crate) const TICKS_PER_DAY: u64 = 96;

/// E1's simulated value added per day, 10k yuan.
pub(crate) const E1_VA_PER_DAY: f64 = 40.0;

pub(crate) fn agent_id() -> AgentId {
    AgentId::parse(AGENT).expect("agent id")
}

// ---------------------------------------------------------------------------
// What the agent produces.

/// Stored readings of `enterprises` simulated enterprises over `ticks`
/// ticks with `meters` meters each: one per meter and tick, and one
/// value-added figure for October once a simulated midnight has passed
/// (later midnights restate it).
pub(crate) fn sim_readings(enterprises: u64, meters: u64, ticks: u64) -> u64 {
    enterprises * (meters * ticks + u64::from(ticks > TICKS_PER_DAY))
}

/// October's value added as the simulator last reported it after `ticks`
/// ticks: days elapsed at the last midnight × the daily figure.
pub(crate) fn sim_value_added(ticks: u64, per_day: f64) -> f64 {
    per_day * (ticks.saturating_sub(1) / TICKS_PER_DAY) as f64
}

/// The instant of simulator tick `tick`.
pub(crate) fn tick_time(tick: u64) -> DateTime<Utc> {
    let start: DateTime<Utc> = SIM_START.parse().expect("start time");
    start + Span::seconds(STEP_SECS * tick as i64)
}

/// How an agent process is configured.
#[derive(Debug, Clone)]
pub(crate) struct AgentOpts {
    /// Simulator ticks in all (the simulator resumes from its stored cursor).
    pub(crate) ticks: u64,
    /// Real milliseconds between ticks.
    pub(crate) tick_ms: u64,
    /// Meters per simulated enterprise.
    pub(crate) meters: u32,
    /// Simulated enterprises (indexes into `E`), E1 at 40 a day, E2 at 100.
    pub(crate) enterprises: Vec<usize>,
    /// Most readings per batch.
    pub(crate) batch_items: usize,
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
pub(crate) struct Agent {
    pub(crate) config: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) drop: PathBuf,
    pub(crate) port: u16,
    pub(crate) opts: AgentOpts,
}

pub(crate) static DROPS: AtomicU64 = AtomicU64::new(0);

impl Agent {
    /// Writes the configuration of agent `AGENT` in `dir` for the broker on `port`, keeping its data in `data`.
    pub(crate) fn new(dir: &Path, port: u16, data: &Path, opts: AgentOpts) -> Self {
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

    pub(crate) fn write(&self) {
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
    pub(crate) fn set_ticks(&mut self, ticks: u64) {
        self.opts.ticks = ticks;
        self.write();
    }

    /// Starts `zonesync-agent run`, keeping its stderr.
    pub(crate) fn start(&self) -> Proc {
        Proc::spawn_capturing("zonesync-agent", &["run", "-c", self.config.to_str().expect("utf-8")])
    }

    /// `zonesync-agent status`: the running agent's status file, or the stopped agent's outbox.
    pub(crate) fn status(&self) -> Value {
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
    pub(crate) fn drop_csv(&self, rows: &[(usize, &str, f64)]) {
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
pub(crate) fn outbox_of(status: &Value) -> &Value {
    if status["outbox"].is_object() {
        &status["outbox"]
    } else {
        status
    }
}

/// Stops an agent with SIGTERM: a clean exit, no panic on its stderr.
pub(crate) fn stop_agent(mut p: Proc) {
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
pub(crate) async fn wait_status(agent: &Agent, what: &str, after: DateTime<Utc>, ok: impl Fn(&Value) -> bool) -> Value {
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
pub(crate) fn batch(ob: Option<&OutboxId>, seq: u64, ent: usize, readings: Vec<Reading>) -> Msg {
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
pub(crate) fn presence(ob: Option<&OutboxId>, next_seq: u64) -> Msg {
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

pub(crate) static CLIENTS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn client_id(role: &str) -> String {
    format!(
        "agent-integrity-{role}-{}-{}",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::SeqCst)
    )
}

/// Subscribes to `filter` and passes every message (topic, payload) to
/// `sink` until the returned task is aborted; returns once subscribed.
pub(crate) async fn subscribe(
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
pub(crate) async fn wait_presence(port: u16, what: &str, ok: impl Fn(&Presence) -> bool) -> Presence {
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
pub(crate) struct Sniffed(Arc<Mutex<SniffedBatches>>);

#[derive(Clone, Default)]
pub(crate) struct SniffedBatches {
    pub(crate) marks: BTreeMap<(String, u64), BTreeSet<String>>,
    pub(crate) meter_times: BTreeSet<DateTime<Utc>>,
}

impl Sniffed {
    /// Starts recording what `AGENT` publishes on the broker at `port`,
    /// until the returned task is aborted.
    #[must_use]
    pub(crate) async fn start(&self, port: u16) -> tokio::task::JoinHandle<()> {
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

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SniffedBatches> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A separate record starting from what this one holds.
    pub(crate) fn fork(&self) -> Sniffed {
        Sniffed(Arc::new(Mutex::new(self.lock().clone())))
    }

    /// (outbox, seq) marks published with more than one payload.
    pub(crate) fn reused(&self) -> Vec<((String, u64), BTreeSet<String>)> {
        self.lock()
            .marks
            .iter()
            .filter(|(_, d)| d.len() > 1)
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect()
    }

    /// Sequence numbers published under `outbox`.
    pub(crate) fn seqs(&self, outbox: &str) -> Vec<u64> {
        self.lock()
            .marks
            .keys()
            .filter(|(o, _)| o == outbox)
            .map(|(_, s)| *s)
            .collect()
    }

    /// Marks seen.
    pub(crate) fn len(&self) -> usize {
        self.lock().marks.len()
    }

    /// Waits until a batch with a meter reading at `ts` was published.
    pub(crate) async fn wait_meter_time(&self, ts: DateTime<Utc>) {
        let deadline = Instant::now() + WAIT;
        while !self.lock().meter_times.contains(&ts) {
            assert!(Instant::now() < deadline, "no batch with a reading at {ts} published");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// The aggregator.

/// Stops an aggregator with SIGTERM: a clean exit, no panic on its stderr.
pub(crate) fn stop(mut p: Proc) {
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
pub(crate) async fn shown_value_added(api: &Api, ent: usize) -> Option<f64> {
    let e = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[ent])).await;
    e["latest"]
        .as_array()?
        .iter()
        .find(|r| r["indicator"] == "value_added" && r["period"] == MONTH.to_string())?["value"]
        .as_f64()
}

/// Waits until E`ent+1`'s October value added shows `want`, and checks the energy page agrees.
pub(crate) async fn wait_value_added(api: &Api, ent: usize, want: f64) {
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
pub(crate) async fn readings_stored(api: &Api) -> u64 {
    api.get("/api/v1/zones").await["zones"][0]["readings_stored"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until the zone holds `want` readings; then checks no more arrive.
pub(crate) async fn wait_readings(api: &Api, want: u64) {
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
pub(crate) async fn dead_letters(api: &Api, label: &str) -> Vec<Value> {
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

/// Waits until the aggregator has handled a presence of `AGENT` announcing
/// `next_seq`: then it is subscribed, and a batch published now reaches it
/// (on a fresh broker nothing holds a batch published before that).
pub(crate) async fn wait_announced(api: &Api, next_seq: u64) {
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
pub(crate) async fn agent_state(api: &Api) -> Value {
    let a = api.get(&format!("/api/v1/zones/{ZONE}/agents")).await;
    a["agents"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["agent"] == AGENT))
        .map(|x| x["state"].clone())
        .unwrap_or_else(|| panic!("{AGENT} missing from {a}"))
}

/// Every batch the aggregator's store at `store` holds, as (agent, outbox,
/// seq) → the digests held under it (the aggregator must have stopped).
pub(crate) fn stored_batches(store: &Path) -> BTreeMap<(String, String, u64), BTreeSet<String>> {
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
pub(crate) fn assert_one_batch_per_mark(store: &Path) -> usize {
    let held = stored_batches(store);
    let twice: Vec<_> = held.iter().filter(|(_, d)| d.len() > 1).collect();
    assert!(twice.is_empty(), "two batches under one mark: {twice:#?}");
    held.len()
}

// ---------------------------------------------------------------------------
// Files.

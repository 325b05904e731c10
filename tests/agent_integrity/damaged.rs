//! Damaged outbox files.

use super::fixture::*;

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
    // The outbox is one redb file (agent/src/outbox/store.rs).
    let store = zonesync_agent::outbox::store::FILE;
    assert!(files.iter().any(|f| f == store), "{files:?}");
    verdicts.push((
        "flipped store",
        damaged_case(root, "flipped-store", &pristine, |o| flip_middle(&o.join(store), 64)).await,
    ));
    verdicts.push((
        "truncated store",
        damaged_case(root, "truncated-store", &pristine, |o| {
            let len = std::fs::metadata(o.join(store)).expect("store").len();
            truncate(&o.join(store), len / 3);
        })
        .await,
    ));
    verdicts.push((
        "torn store tail",
        damaged_case(root, "torn-store", &pristine, |o| {
            let len = std::fs::metadata(o.join(store)).expect("store").len();
            truncate(&o.join(store), len.saturating_sub(100));
        })
        .await,
    ));
    verdicts.push((
        "flipped header",
        damaged_case(root, "flipped-header", &pristine, |o| {
            // redb's header and its two commit slots are at the file's start.
            let mut bytes = std::fs::read(o.join(store)).expect("store");
            for b in bytes.iter_mut().skip(64).take(256) {
                *b = !*b;
            }
            std::fs::write(o.join(store), bytes).expect("write store");
        })
        .await,
    ));
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

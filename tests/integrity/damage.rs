//! A damaged or rolled-back store, and a full disk that later frees.

use super::fixture::*;

/// Sixty batches for E1 with 20 new meter registers each (4 points × 5
/// minutes), seqs after `set` earlier sets; the set's last batch also states
/// October's value added as `va`. Returns the messages and the readings they add.
fn register_set(ob: &OutboxId, set: u64, va: f64) -> (Vec<Msg>, u64) {
    let base = Utc::now() - Span::days(3);
    let mut msgs = Vec::new();
    for b in 0..60u64 {
        let seq = set * 60 + b + 1;
        let mut readings = Vec::new();
        for j in 0..5u64 {
            let tick = (seq - 1) * 5 + j;
            for p in 1..=4u64 {
                let ts = base + Span::minutes(tick as i64);
                readings.push(register(&format!("M{p}"), (tick * 10 + p) as f64, ts));
            }
        }
        if b == 59 {
            readings.push(value_added(va));
        }
        msgs.push(batch("agent-a", ob, seq, 0, Utc::now(), readings));
    }
    // The month's figure is one stored reading, restated by later sets.
    (msgs, 60 * 20 + u64::from(set == 0))
}

/// Readings the zone holds, as `/api/v1/zones` counts them.
async fn readings_stored(api: &Api) -> u64 {
    api.get("/api/v1/zones").await["zones"][0]["readings_stored"]
        .as_u64()
        .unwrap_or(0)
}

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
    assert_eq!(seen, want, "readings stored");
}

/// How a damaged store came out at start.
#[derive(Debug)]
enum Verdict {
    /// Refused at start, with this message.
    Refused(String),
    /// Opened with every batch and reading there.
    Intact,
}

/// Starts an aggregator on a damaged store: it must either refuse to start
/// (non-zero exit, an error message naming the store) or hold everything
/// that was stored — never start with less.
async fn judge(case: &str, config: &Path, store: &Path, want_readings: u64, want_va: f64) -> Verdict {
    match try_spawn_aggregator(config, WAIT) {
        AggregatorStart::Exited(status, stderr) => {
            eprintln!("{case}: refused at start ({status}):\n{stderr}");
            assert!(!status.success(), "{case}: a refusal ends non-zero");
            assert!(
                stderr.contains("Error:") && stderr.contains(&store.display().to_string()),
                "{case}: the error names the store {}, not only a panic:\n{stderr}",
                store.display()
            );
            Verdict::Refused(stderr)
        }
        AggregatorStart::Serving(p, api) => {
            let held = readings_stored(&api).await;
            assert_eq!(
                held, want_readings,
                "{case}: the store opened but holds {held} readings of {want_readings}: a silent loss"
            );
            assert_eq!(shown_value_added(&api, 0).await, Some(want_va), "{case}");
            assert_eq!(agent_state(&api, "agent-a").await["last_seq"], 120, "{case}");
            assert_healthy(&api).await;
            eprintln!("{case}: opened intact ({held} readings)");
            stop(p);
            Verdict::Intact
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_rolled_back_store_is_refused_at_start_or_found_intact_never_silently_short() {
    let s = setup();
    let port = s.broker.port;
    let data = s.dir.path().join("aggregator");
    let store = data.join("store");
    let ob = outbox(0x51);
    let (agg, api) = start(&s.config);
    announce(&api, port, "agent-a", &ob, 1).await;
    let (first, n1) = register_set(&ob, 0, 40.0);
    publish(port, first).await;
    wait_readings(&api, n1).await;
    stop(agg);
    let after_first = s.dir.path().join("store-after-first-set");
    copy_tree(&store, &after_first);

    let (agg, api) = start(&s.config);
    let (second, n2) = register_set(&ob, 1, 41.0);
    publish(port, second).await;
    wait_readings(&api, n1 + n2).await;
    wait_value_added(&api, 0, 41.0).await;
    stop(agg);
    let want = n1 + n2;
    let files: Vec<String> = std::fs::read_dir(&store)
        .expect("store dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    eprintln!("store files: {files:?}");

    // Each case damages its own copy of the stopped aggregator's data directory.
    let config_text = std::fs::read_to_string(&s.config).expect("config");
    let case = |name: &str| {
        let d = s.dir.path().join(format!("case-{name}"));
        copy_tree(&data, &d);
        let cfg = s.dir.path().join(format!("aggregator-{name}.toml"));
        let text = config_text.replace(
            &format!("data_dir = \"{}\"", data.display()),
            &format!("data_dir = \"{}\"", d.display()),
        );
        assert_ne!(text, config_text, "data_dir replaced");
        std::fs::write(&cfg, text).expect("write config");
        (cfg, d.join("store"))
    };

    // (a) Bytes flipped in the middle of sled's data file.
    let (cfg, st) = case("flipped-db");
    flip_middle(&st.join("db"), 64);
    let a = judge("flipped db", &cfg, &st, want, 41.0).await;

    // (b) The data file truncated to a third: refused, with a message naming the store.
    let (cfg, st) = case("truncated-db");
    let db = st.join("db");
    let len = std::fs::metadata(&db).expect("db").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .and_then(|f| f.set_len(len / 3))
        .expect("truncate db");
    let b = judge("truncated db", &cfg, &st, want, 41.0).await;
    assert!(
        matches!(b, Verdict::Refused(_)),
        "a third of the data file cannot hold it all: {b:?}"
    );

    // (c) A byte flipped in sled's `conf`, and in its snapshot if there is one.
    let (cfg, st) = case("flipped-conf");
    flip_middle(&st.join("conf"), 1);
    let c1 = judge("flipped conf", &cfg, &st, want, 41.0).await;
    let snaps: Vec<PathBuf> = std::fs::read_dir(&store)
        .expect("store dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("snap."))
        .map(|e| e.file_name().into())
        .collect();
    let mut c2 = Vec::new();
    for snap in &snaps {
        let (cfg, st) = case(&format!("flipped-{}", snap.display()));
        flip_middle(&st.join(snap), 1);
        c2.push(judge(&format!("flipped {}", snap.display()), &cfg, &st, want, 41.0).await);
    }

    // (d) The store put back to a copy taken after the first set: the
    // high-water mark beside it knows more was stored and confirmed.
    let (cfg, st) = case("rolled-back");
    std::fs::remove_dir_all(&st).expect("remove store");
    copy_tree(&after_first, &st);
    match judge("rolled back", &cfg, &st, want, 41.0).await {
        Verdict::Refused(stderr) => assert!(
            stderr.contains("rolled back") && stderr.contains("store.high-water"),
            "the rollback message names the mark:\n{stderr}"
        ),
        Verdict::Intact => panic!("a store missing the second set cannot be intact"),
    }
    eprintln!("flipped db: {a:?}\nflipped conf: {c1:?}\nflipped snapshots {snaps:?}: {c2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_acknowledgements_and_every_batch_is_stored_once_there_is_room() {
    let s = setup();
    let port = s.broker.port;
    let mnt = s.dir.path().join("small-disk");
    let disk = Tmpfs::mount(&mnt, "8m");
    let config = s.dir.path().join("aggregator-small-disk.toml");
    let text = std::fs::read_to_string(&s.config).expect("config");
    let data = s.dir.path().join("aggregator");
    let text = text.replace(
        &format!("data_dir = \"{}\"", data.display()),
        &format!("data_dir = \"{}\"", disk.path.display()),
    );
    std::fs::write(&config, text).expect("write config");

    let ob = outbox(0x61);
    let (mut agg, api) = start(&config);
    announce(&api, port, "agent-a", &ob, 1).await;
    let (first, n1) = register_set(&ob, 0, 40.0);
    publish(port, first).await;
    wait_readings(&api, n1).await;
    let mut confirms = listen_confirms(port, "agent-a").await;

    let filler = fill(&disk.path);
    let (second, n2) = register_set(&ob, 1, 41.0);
    publish(port, second).await;
    // Nothing of the second set may be confirmed or shown before it is
    // durable: sled may still fit a few records into log space it allocated
    // before the disk filled (then its flush succeeds and they are durable and
    // confirmed), but nothing may be shown beyond what was confirmed. Within
    // some 40 s the process says it is unhealthy (503) or ends non-zero so
    // that systemd restarts it.
    let deadline = Instant::now() + Duration::from_secs(45);
    let (mut unhealthy, mut exited) = (None, None);
    let mut confirmed_second = std::collections::BTreeSet::new();
    while Instant::now() < deadline && exited.is_none() {
        while let Ok(c) = confirms.try_recv() {
            confirmed_second.extend((61..=120u64).filter(|seq| c.contains(*seq)));
        }
        if let Some(status) = agg.try_wait() {
            exited = Some(status);
            break;
        }
        if let Some((code, body)) = api.try_get_with_status("/healthz").await {
            if code == 503 {
                unhealthy.get_or_insert(body);
            }
            if let Some((200, z)) = api.try_get_with_status("/api/v1/zones").await {
                let held = z["zones"][0]["readings_stored"].as_u64().unwrap_or(0);
                // Confirmations of a flush go out right after its state is
                // applied: let them arrive before judging.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while let Ok(c) = confirms.try_recv() {
                    confirmed_second.extend((61..=120u64).filter(|seq| c.contains(*seq)));
                }
                assert!(
                    held <= n1 + 20 * confirmed_second.len() as u64,
                    "nothing shown before it is durable: {held} readings shown, {n1} + 20 × {} confirmed",
                    confirmed_second.len()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "full disk: /healthz {unhealthy:?}, exit {exited:?}, stderr:\n{}",
        agg.stderr_text()
    );
    assert!(
        unhealthy.is_some() || exited.is_some_and(|s| !s.success()),
        "with its disk full the aggregator neither showed 503 nor ended non-zero within 45 s"
    );
    if let Some(status) = exited {
        assert!(!status.success(), "ends non-zero on a store it cannot write: {status}");
    }
    if let Some(body) = &unhealthy {
        assert!(
            body["problems"].as_array().is_some_and(|p| !p.is_empty()),
            "503 says why: {body}"
        );
    }
    while let Ok(c) = confirms.try_recv() {
        confirmed_second.extend((61..=120u64).filter(|seq| c.contains(*seq)));
    }
    assert!(
        confirmed_second.len() < 60,
        "the disk was full: not every batch of the second set can have been made durable ({confirmed_second:?})"
    );
    assert!(
        !agg.stderr_text().contains("panicked"),
        "no panic on a full disk:\n{}",
        agg.stderr_text()
    );

    // Room again; restarted as systemd would (a process still up is stopped first),
    // it gets the unacknowledged batches from the broker's persistent session.
    std::fs::remove_file(&filler).expect("remove filler");
    if exited.is_none() {
        agg.kill9();
    }
    drop(agg);
    let (agg, api) = start(&config);
    wait_readings(&api, n1 + n2).await;
    wait_value_added(&api, 0, 41.0).await;
    // Those made durable (and confirmed) while the disk was full are not
    // delivered again; every other one is confirmed now.
    confirms_until(&mut confirms, "the second set after the restart", |cs| {
        (61..=120).all(|seq| confirmed_second.contains(&seq) || cs.iter().any(|c| c.contains(seq)))
    })
    .await;
    let a = agent_state(&api, "agent-a").await;
    assert_eq!(a["last_seq"], 120, "{a:#}");
    assert_eq!(api.metric("zonesync_aggregator_store_errors_total").await, 0.0);
    assert_healthy(&api).await;
    stop(agg);
    drop(disk);
}

//! Local history end to end: an agent with no broker reachable still fills
//! its history; after SIGTERM `zonesync-agent export` gives a CSV for Excel
//! (BOM, bilingual header, CRLF) with exactly one row per item the agent
//! reports having taken in its outbox — and the days split at China midnight.

use std::path::Path;
use std::time::{Duration, Instant};
use zonesync_agent::history::export::{DECLARATION_COLUMNS, READING_COLUMNS};
use zonesync_e2e::{free_port, run_to_end, spawn_agent};

const WAIT: Duration = Duration::from_secs(60);

/// Runs `zonesync-agent export -c CONFIG ARGS…`; panics unless it succeeds.
fn export(config: &Path, args: &[&str]) -> Vec<u8> {
    let mut all = vec!["export", "-c", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run_to_end("zonesync-agent", &all);
    assert!(
        out.status.success(),
        "export {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Data rows of an export, after checking its BOM, header and line ends.
fn rows(csv: &[u8], header: &[&str]) -> Vec<String> {
    let text = std::str::from_utf8(csv).expect("UTF-8");
    let text = text.strip_prefix('\u{feff}').expect("starts with the UTF-8 BOM");
    assert_eq!(
        text.matches('\n').count(),
        text.matches("\r\n").count(),
        "every line ends in CRLF"
    );
    let mut lines = text.split("\r\n");
    assert_eq!(lines.next(), Some(header.join(",").as_str()), "bilingual header");
    let rows: Vec<String> = lines.map(str::to_owned).collect();
    assert_eq!(rows.last().map(String::as_str), Some(""), "the file ends with CRLF");
    rows[..rows.len() - 1].to_vec()
}

#[test]
fn history_fills_without_a_broker_and_exports_every_reading_taken() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Simulated 15-minute readings from two days ago, as fast as the clock
    // allows, so the run crosses China-time midnights; the broker port has
    // nothing listening.
    let start = (chrono::Utc::now() - chrono::Duration::hours(40)).format("%Y-%m-%dT%H:00:00Z");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"agent_id = "gw-history"
zone = "jiyuan-hitech"
data_dir = "{}"
[mqtt]
port = {}
reconnect_min_ms = 100
reconnect_max_ms = 500
[simulator]
interval_ms = 10
step_secs = 900
start = "{start}"
meters_per_enterprise = 3
[[simulator.enterprises]]
id = "91419001MA0000001N"
[[simulator.enterprises]]
id = "91419001MA0000002R"
"#,
            data.display(),
            free_port()
        ),
    )
    .unwrap();

    let mut agent = spawn_agent(&config);
    let status_file = zonesync_agent::status::path(&data);
    let deadline = Instant::now() + WAIT;
    loop {
        let s = zonesync_agent::status::read(&status_file).ok();
        let (days, bytes) = s
            .as_ref()
            .and_then(|s| s.history.as_ref())
            .map_or((0, 0), |h| (h.days, h.bytes));
        if s.is_some_and(|s| s.outbox.pending_items >= 600) && days >= 2 && bytes > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never queued 600 readings over two days"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Export works while the agent runs (it reads the day files only).
    assert!(!rows(&export(&config, &[]), &READING_COLUMNS).is_empty());
    assert!(agent.terminate().success(), "clean exit on SIGTERM");

    // What the agent says it took: with no broker nothing was acknowledged,
    // so every item is still in the outbox.
    let out = run_to_end("zonesync-agent", &["status", "-c", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["dropped_readings"], 0);
    let taken = stats["pending_items"].as_u64().unwrap() + stats["sealed_items"].as_u64().unwrap();

    let readings = rows(&export(&config, &[]), &READING_COLUMNS);
    let declarations = rows(&export(&config, &["--declarations"]), &DECLARATION_COLUMNS);
    assert_eq!(
        readings.len() + declarations.len(),
        taken as usize,
        "one row per item the outbox took"
    );
    assert!(
        readings.iter().any(|r| r.contains(",value_added,工业增加值,")),
        "the month-to-date amounts at China midnight are there too"
    );

    // Day by day: each day's rows are that China-time day's, and together they are all.
    let days = zonesync_agent::history::list_days(&zonesync_agent::history::dir(&data)).unwrap();
    assert!(days.len() >= 2);
    let mut sum = 0;
    for (day, _) in &days {
        let d = day.format("%Y-%m-%d").to_string();
        let rows = rows(&export(&config, &["--from", &d, "--to", &d]), &READING_COLUMNS);
        for r in &rows {
            let cst = r.split(',').nth(6).unwrap();
            assert!(cst.is_empty() || cst.starts_with(&d), "{r} is not of {d}");
        }
        sum += rows.len();
    }
    assert_eq!(sum, readings.len());

    // Filters and -o.
    let csv = dir.path().join("e2.csv");
    export(
        &config,
        &[
            "--enterprise",
            "91419001MA0000002R",
            "--indicator",
            "electricity",
            "-o",
            csv.to_str().unwrap(),
        ],
    );
    let e2 = rows(&std::fs::read(&csv).unwrap(), &READING_COLUMNS);
    let want = readings
        .iter()
        .filter(|r| r.starts_with("91419001MA0000002R,electricity,"))
        .count();
    assert_eq!(e2.len(), want);
    assert!(want > 0);

    // Bad input: a clear message and a non-zero exit.
    let bad = run_to_end(
        "zonesync-agent",
        &["export", "-c", config.to_str().unwrap(), "--from", "2026-02-30"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("YYYY-MM-DD"));
    std::fs::remove_dir_all(zonesync_agent::history::dir(&data)).unwrap();
    let missing = run_to_end("zonesync-agent", &["export", "-c", config.to_str().unwrap()]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no history"));
}

//! A year of hourly meter counters loaded from a file (issue 14, item 6), end
//! to end: one agent takes a meter system's export (enterprise, point,
//! timestamp, value; GBK, China time) from its CSV drop; another sends the same
//! registers as a live source does (its simulator, with a backfill window
//! wider than the year, so its batches go unmarked); both over a real broker
//! into an in-process aggregator. The monthly kWh must come out the same for
//! both, and equal to the figure worked out by hand.
//!
//! The registers: E1 (file) and E2 (live), meter M1, one reading an hour from
//! 2025-01-01 00:00 to 2026-01-01 00:00 China time (8,761 readings), starting
//! at 10,000 kWh and adding 2 × w kWh an hour, w = 1 (00–08h), 3 (08–20h),
//! 2 (20–24h): 2 × (8 + 36 + 8) = 104 kWh a day, so a month of d days holds
//! 104 × d kWh and the year 37,960 kWh.

use chrono::{DateTime, Duration, Utc};
use std::time::Duration as StdDuration;
use zonesync_agent::config::AgentConfig;
use zonesync_agent::sources::simulator::{initial_counter, weight};
use zonesync_e2e::dataset::{E, ZONE};
use zonesync_e2e::inprocess::InProcess;
use zonesync_e2e::{approx, Api};
use zonesync_proto::CST;

const WAIT: StdDuration = StdDuration::from_secs(180);
/// Hourly readings from 2025-01-01 00:00 to 2026-01-01 00:00 China time, both ends included.
const TICKS: i64 = 365 * 24 + 1;
/// kWh an hour at weight 1.
const RATE: f64 = 2.0;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-12-31T16:00:00Z")
        .expect("start")
        .with_timezone(&Utc)
}

/// The export a meter system would write for E1: GBK, a Chinese header, China time.
fn export() -> Vec<u8> {
    let mut text = String::from("企业名称,统一社会信用代码,表计,采集时间,正向有功总电能(kWh)\r\n");
    let mut register = initial_counter(0, 0);
    for k in 0..TICKS {
        let ts = start() + Duration::hours(k);
        let local = ts.with_timezone(&CST).format("%Y-%m-%d %H:%M:%S");
        text.push_str(&format!("示例企业,{},M1,{local},{register}\r\n", E[0]));
        register += RATE * weight(ts);
    }
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable);
    bytes.into_owned()
}

fn write_agents(dir: &std::path::Path, port: u16) -> (std::path::PathBuf, std::path::PathBuf) {
    let drop = dir.join("drop");
    std::fs::create_dir_all(&drop).expect("drop folder");
    std::fs::write(drop.join("meter-export-2025.csv"), export()).expect("export");
    let common = |id: &str| {
        format!(
            "agent_id = \"{id}\"\nzone = \"{ZONE}\"\ndata_dir = \"{}\"\n\
             [mqtt]\nprotocol = \"3.1.1\"\nport = {port}\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n",
            dir.join(id).display()
        )
    };
    let file = format!(
        "{}[outbox]\nmax_batch_items = 500\nmax_batch_age_ms = 50\nmax_in_flight = 8\n\
         [[csv_drop]]\nname = \"meters\"\nfolder = \"{}\"\nenterprise_column = \"统一社会信用代码\"\n\
         timestamp_column = \"采集时间\"\npoint_column = \"表计\"\nencoding = \"gbk\"\npoll_secs = 1\nsettle_secs = 0\n\
         [[csv_drop.columns]]\nheader = \"正向有功总电能(kWh)\"\nindicator = \"electricity\"\nunit = \"kWh\"\n",
        common("agent-file"),
        drop.display()
    );
    // The live agent's batches are never marked backfill: its window spans the year.
    let live = format!(
        "{}[outbox]\nmax_batch_items = 500\nmax_batch_age_ms = 50\nmax_in_flight = 8\nbackfill_after_secs = 100000000\n\
         [simulator]\ninterval_ms = 1\nstep_secs = 3600\nstart = \"{}\"\nmax_ticks = {TICKS}\nmeters_per_enterprise = 1\n\
         [[simulator.enterprises]]\nid = \"{}\"\nkwh_rate = {RATE}\nvalue_added_per_day = 1.0\n",
        common("agent-live"),
        start().to_rfc3339(),
        E[1]
    );
    let (pf, pl) = (dir.join("agent-file.toml"), dir.join("agent-live.toml"));
    std::fs::write(&pf, file).expect("file agent config");
    std::fs::write(&pl, live).expect("live agent config");
    (pf, pl)
}

fn electricity(energy: &serde_json::Value, id: &str) -> (f64, String) {
    let e = energy["enterprises"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["enterprise"] == id))
        .unwrap_or_else(|| panic!("{id} missing from {energy}"));
    let c = e["carriers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["indicator"] == "electricity"))
        .unwrap_or_else(|| panic!("{id} has no electricity in {e}"));
    (
        c["amount"].as_f64().unwrap_or(f64::NAN),
        c["source"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn month_kwh(api: &Api, period: &str) -> ((f64, String), (f64, String)) {
    let en = api.get(&format!("/api/v1/zones/{ZONE}/energy?period={period}")).await;
    (electricity(&en, E[0]), electricity(&en, E[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_hourly_counters_from_a_file_gives_the_monthly_kwh_of_the_same_readings_sent_live() {
    let dir = tempfile::tempdir().unwrap();
    let t = InProcess::start(dir.path(), 1, 1 << 20, |c| c).await;
    let (file_cfg, live_cfg) = write_agents(dir.path(), t.broker.addr.port());
    let file_agent = tokio::spawn(zonesync_agent::run(
        AgentConfig::load(&file_cfg).unwrap(),
        t.signal.clone(),
    ));
    let live_agent = tokio::spawn(zonesync_agent::run(
        AgentConfig::load(&live_cfg).unwrap(),
        t.signal.clone(),
    ));
    // Both registers, and the live agent's twelve month-to-date value-added keys.
    let stored = 2.0 * TICKS as f64 + 12.0;
    t.api
        .wait_metric("zonesync_aggregator_readings_stored_total", stored, WAIT)
        .await;
    // Every one of the file's readings, and none of the live ones, came as backfill.
    assert_eq!(
        t.api.metric("zonesync_aggregator_readings_backfilled_total").await,
        TICKS as f64
    );
    assert!(dir.path().join("drop/done/meter-export-2025.csv").exists());

    let days = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    for (m, d) in days.iter().enumerate() {
        let period = format!("2025-{:02}", m + 1);
        let ((file, file_src), (live, live_src)) = month_kwh(&t.api, &period).await;
        assert_eq!(file, live, "{period}: file {file} kWh, live {live} kWh");
        approx(&serde_json::json!(file), 104.0 * f64::from(*d), &period);
        assert_eq!((file_src.as_str(), live_src.as_str()), ("metered", "metered"));
    }
    let ((file, _), (live, _)) = month_kwh(&t.api, "2025").await;
    assert_eq!(file, live);
    approx(&serde_json::json!(file), 104.0 * 365.0, "2025");

    t.stop().await;
    file_agent.await.unwrap().unwrap();
    live_agent.await.unwrap().unwrap();
}

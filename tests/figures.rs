//! Figures an official can sign (issue 14, items 1–5), end to end: an agent
//! loads two years of monthly figures from its CSV drop, declarations from its
//! profile and a month of hourly meter readings from its simulator, over a
//! real broker, into an in-process aggregator; the API's figures are checked
//! against values worked out by hand.
//!
//! Data (zone `test-zone`, E1–E4 above-scale industrial, E5 below scale):
//! | | declares | CSV, every month Jan–Oct of 2025 and 2026 |
//! |---|---|---|
//! | E1 | smart_retrofit = false, dt_maturity = 4 | value added 100, raw coal 2 t (2025) / 1.8 t (2026) |
//! | E2 | dt_maturity = 3 (no flag) | value added 100, raw coal 1 t, electricity 10,000 kWh — in 2025 only from September (meters installed) |
//! | E3 | smart_retrofit = true | – |
//! | E4 | nothing | – |
//! | E5 | – | hourly meter M1 from 1 Oct 2026 00:00 to 1 Nov 00:00 (745 readings), simulated |

use serde_json::Value;
use std::time::Duration;
use zonesync_agent::config::AgentConfig;
use zonesync_e2e::dataset::{E, ZONE};
use zonesync_e2e::inprocess::InProcess;
use zonesync_e2e::{approx, goal, Api};

const WAIT: Duration = Duration::from_secs(90);
const COAL: f64 = 0.7143; // tce per t (catalog)
const KWH: f64 = 0.0001229; // tce per kWh (catalog)

fn csv() -> String {
    let mut s = String::from("credit_code,period,value_added,raw_coal,electricity\n");
    for y in [2025, 2026] {
        for m in 1..=10 {
            let coal = if y == 2025 { 2.0 } else { 1.8 };
            s.push_str(&format!("{},{y}-{m:02},100,{coal},\n", E[0]));
            let kwh = if y == 2026 || m >= 9 { "10000" } else { "" };
            s.push_str(&format!("{},{y}-{m:02},100,1,{kwh}\n", E[1]));
        }
    }
    s
}

fn profile() -> String {
    format!(
        "[[enterprise]]\nid = \"{}\"\n[enterprise.declare]\nsmart_retrofit = false\ndt_maturity = 4\n\n\
         [[enterprise]]\nid = \"{}\"\n[enterprise.declare]\ndt_maturity = 3\n\n\
         [[enterprise]]\nid = \"{}\"\n[enterprise.declare]\nsmart_retrofit = true\n",
        E[0], E[1], E[2]
    )
}

/// The agent's configuration; MQTT 3.1.1, as the embedded broker (rumqttd)
/// has no MQTT 5 listener here.
fn agent_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let drop = dir.join("drop");
    std::fs::create_dir_all(&drop).expect("drop folder");
    std::fs::write(drop.join("figures.csv"), csv()).expect("csv");
    let profile_path = dir.join("profile-f.toml");
    std::fs::write(&profile_path, profile()).expect("profile");
    let text = format!(
        "agent_id = \"agent-f\"\nzone = \"{ZONE}\"\ndata_dir = \"{data}\"\n\
         [mqtt]\nport = {port}\nprotocol = \"3.1.1\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
         [outbox]\nmax_batch_items = 50\nmax_batch_age_ms = 50\nmax_in_flight = 8\n\
         [profile]\npath = \"{profile}\"\npoll_secs = 1\n\
         [simulator]\ninterval_ms = 1\nstep_secs = 3600\nstart = \"2026-09-30T16:00:00Z\"\nmax_ticks = 745\nmeters_per_enterprise = 1\n\
         [[simulator.enterprises]]\nid = \"{e5}\"\nkwh_rate = 1.0\nvalue_added_per_day = 1.0\n\
         [[csv_drop]]\nname = \"figures\"\nfolder = \"{drop}\"\nenterprise_column = \"credit_code\"\n\
         period_column = \"period\"\npoll_secs = 1\nsettle_secs = 0\n\
         [[csv_drop.columns]]\nheader = \"value_added\"\nindicator = \"value_added\"\nunit = \"10k_yuan\"\n\
         [[csv_drop.columns]]\nheader = \"raw_coal\"\nindicator = \"raw_coal\"\nunit = \"t\"\n\
         [[csv_drop.columns]]\nheader = \"electricity\"\nindicator = \"electricity\"\nunit = \"kWh\"\n",
        data = dir.join("agent-f").display(),
        profile = profile_path.display(),
        e5 = E[4],
        drop = drop.display(),
    );
    let path = dir.join("agent-f.toml");
    std::fs::write(&path, text).expect("agent config");
    path
}

/// Readings the aggregator stores: 745 registers and one October value-added
/// key (month to date, replaced each midnight) from the simulator; from the CSV
/// E1 40 (value added and coal, 20 months), E2 52 (the same and 12 electricity).
const STORED: f64 = 746.0 + 40.0 + 52.0;

async fn loaded(api: &Api) {
    api.wait_metric("zonesync_aggregator_readings_stored_total", STORED, WAIT)
        .await;
    api.wait_metric("zonesync_aggregator_declarations_stored_total", 4.0, WAIT)
        .await;
    assert_eq!(api.metric("zonesync_aggregator_readings_stored_total").await, STORED);
}

fn enterprise<'a>(v: &'a Value, list: &str, id: &str) -> &'a Value {
    v[list]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["enterprise"] == id))
        .unwrap_or_else(|| panic!("{id} missing from {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_match_the_months_declarations_and_readings_behind_them() {
    let dir = tempfile::tempdir().unwrap();
    let t = InProcess::start(dir.path(), 1, 1 << 20, |c| c).await;
    let cfg = agent_config(dir.path(), t.broker.addr.port());
    let agent = tokio::spawn(zonesync_agent::run(AgentConfig::load(&cfg).unwrap(), t.signal.clone()));
    loaded(&t.api).await;
    let api = &t.api;

    // 1. A declared "no" beats the maturity proxy. PY-07 smart retrofit over E1–E4:
    // E1 declared false (maturity 4 does not overturn it), E2 by proxy (3 ≥ 3),
    // E3 declared true, E4 unknown: 2 of 4 = 50 %, under the 60 % target
    // (flag OR maturity would read 3 of 4 = 75 %, met).
    let g = api.get(&format!("/api/v1/zones/{ZONE}/goals?period=2026-10")).await;
    let py07 = goal(&g, "PY-07");
    approx(&py07["value"], 0.5, "PY-07");
    assert_eq!(py07["numerator_from_proxy"], 1, "{py07}");
    assert_eq!(py07["unknown"], 1);
    assert_eq!(py07["status"], "not_met");

    // 2. Same months on both sides. EI for 2025 to October: E1 over ten months,
    // 20 t × 0.7143 = 14.286 tce over 1000; E2 only over September and October
    // (the months with electricity): 2 × 0.7143 + 20,000 × 0.0001229 = 3.8866 tce
    // over 200; 18.1726 ÷ 1200 = 0.0151438…, E2's 8 other months left out.
    let g25 = api.get(&format!("/api/v1/zones/{ZONE}/goals?period=2025-10")).await;
    let ei = goal(&g25, "EI");
    let e2_months = 2.0 * COAL + 20_000.0 * KWH;
    approx(&ei["value"], (20.0 * COAL + e2_months) / 1200.0, "EI 2025 YTD");
    assert_eq!(ei["partial_months"], 8, "{ei}");
    // (10 + 2) member-months of 4 in scope × 10.
    approx(&ei["completeness"], 0.3, "EI completeness");
    // PY-06, 2026 against 2025 to October, each enterprise over the months known in both:
    // (18 × 0.7143 + 3.8866) ÷ (20 × 0.7143 + 3.8866) − 1 = 16.744 ÷ 18.1726 − 1 = −7.861 %.
    let py06 = goal(&g, "PY-06");
    approx(
        &py06["value"],
        (18.0 * COAL + e2_months) / (20.0 * COAL + e2_months) - 1.0,
        "PY-06",
    );
    assert_eq!(py06["partial_months"], 8);
    assert_eq!(py06["status"], "met");

    // 5. Monthly figures from the goal API: October 2026 against October 2025.
    // (1.8 × 0.7143 + 0.7143 + 1.229) ÷ (2 × 0.7143 + 0.7143 + 1.229) − 1 = −4.237 %.
    let m = api
        .get(&format!("/api/v1/zones/{ZONE}/goals?period=2026-10&span=month"))
        .await;
    assert_eq!(m["span"], "month");
    let oct = |coal: f64| coal * COAL + COAL + 10_000.0 * KWH;
    approx(&goal(&m, "EI")["value"], oct(1.8) / 200.0, "EI October 2026");
    assert_eq!(goal(&m, "EI")["period"], "2026-10");
    let t_oct = goal(&m, "PY-06");
    assert_eq!(t_oct["period"], "2026-10 vs 2025-10");
    approx(&t_oct["value"], oct(1.8) / oct(2.0) - 1.0, "PY-06 October");
    let (status, err) = api
        .get_with_status(&format!("/api/v1/zones/{ZONE}/goals?period=2026-Q3&span=month"))
        .await;
    assert_eq!(status, 400, "{err}");

    // 4. Partial energy is marked, never shown as whole: E2 in March 2025 has coal
    // (1 t = 0.7143 tce) and value added but no electricity: its tce is the coal's,
    // marked partial, with no intensity.
    let en = api.get(&format!("/api/v1/zones/{ZONE}/energy?period=2025-03")).await;
    let e2 = enterprise(&en, "enterprises", E[1]);
    assert_eq!(e2["partial"], true, "{e2}");
    approx(&e2["tce"], COAL, "E2 March 2025 tce, coal alone");
    assert_eq!(e2["intensity"], Value::Null);
    assert_eq!(e2["missing"].as_array().map(Vec::len), Some(1), "{e2}");
    assert_eq!(e2["missing"][0]["indicator"], "electricity");
    assert_eq!(e2["missing"][0]["months"][0], "2025-03");
    let e1 = enterprise(&en, "enterprises", E[0]);
    assert_eq!(e1["partial"], false);
    approx(&e1["intensity"], 2.0 * COAL / 100.0, "E1 March 2025");

    // 3. A complete hourly month is 100 %: 744 readings due in October, 744 came.
    // 1. The declaration the proxy contradicts is listed.
    let q = api.get(&format!("/api/v1/zones/{ZONE}/quality?period=2026-10")).await;
    let e5 = enterprise(&q["quality"], "enterprises", E[4]);
    let p = &e5["points"][0];
    assert_eq!(
        (p["received"].clone(), p["expected"].clone()),
        (744.into(), 744.into()),
        "{p}"
    );
    approx(&p["completeness"], 1.0, "M1 completeness");
    assert_eq!(p["flagged"], false);
    let c = &q["quality"]["contradictions"];
    assert_eq!(c.as_array().map(Vec::len), Some(1), "{c}");
    assert_eq!(c[0]["enterprise"], E[0]);
    assert_eq!(
        (c[0]["declared"].clone(), c[0]["proxy"].clone()),
        (false.into(), true.into())
    );
    assert_eq!(c[0]["evidence"], "dt_maturity 4 ≥ 3");

    t.stop().await;
    agent.await.unwrap().unwrap();
}

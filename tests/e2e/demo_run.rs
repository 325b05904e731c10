//! The demo: one command, non-empty goals within a minute.

use super::*;

/// The demo's goals that its simulated data can answer: every coverage goal,
/// energy intensity, and the ratios and totals of the simulated monthly figures.
fn filled(goals: &Value) -> bool {
    let rows = goals["goals"].as_array().cloned().unwrap_or_default();
    let needed = ["EI", "JY27-07", "JY27-08", "JY27-09", "JY27-01", "JY27-02", "JY27-10"];
    !rows.is_empty()
        && rows
            .iter()
            .filter(|g| g["kind"] == "coverage" || needed.contains(&g["id"].as_str().unwrap_or("")))
            .all(|g| g["value"].is_number())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_non_empty_goals_within_a_minute() {
    tracing_init();
    let dir = tempfile::tempdir().unwrap();
    let (trigger, signal) = shutdown::channel();
    let opts = demo::DemoOptions {
        data_dir: dir.path().to_path_buf(),
        http_port: 0,
        mqtt_port: 0,
        tick_ms: 10,
        read_token: None,
    };
    let started = std::time::Instant::now();
    let h = demo::start(&opts, signal).await.unwrap();
    let api = Api::new(&format!("http://{}", h.http_addr));
    let period = demo::last_month(chrono::Utc::now());
    let mut last = Value::Null;
    while started.elapsed() < Duration::from_secs(60) {
        last = api
            .get(&format!("/api/v1/zones/jiyuan-hitech/goals?period={period}"))
            .await;
        if filled(&last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rows = last["goals"].as_array().cloned().unwrap_or_default();
    assert!(rows.len() >= 7, "{last}");
    assert!(
        filled(&last),
        "coverage, energy and the simulated monthly figures have values within a minute: {last}"
    );
    // The demo's silent enterprise shows up as unknown, not as covered.
    assert_eq!(goal(&last, "HN27-03")["unknown"], json!(1), "{last}");
    eprintln!(
        "demo served {} goals with values after {:?}",
        rows.len(),
        started.elapsed()
    );
    trigger.fire();
    for a in h.agents {
        a.await.unwrap();
    }
    h.running.wait().await;
}

//! `scripts/federation-demo.sh` (issue 18, item 7), run briefly as a person
//! would: it starts a 3-node hub, Jiyuan's three demo zones as separate zone
//! aggregators with their agents and leaf nodes, and a Jiyuan city center,
//! and prints the center's dashboard URL. The center must serve the page,
//! say it is a center serving 济源's three zones, and answer 济源's goals
//! (JY27-…) with each figure's parts from all three zones; then Ctrl-C stops
//! everything the script started.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zonesync_e2e::{bin, free_port, Api};

const WAIT: Duration = Duration::from_secs(120);

/// The script's process group: SIGTERMed when the test ends, so a failing
/// run leaves no hub, zone or center behind (a passing one has stopped them).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_federated_demo_serves_jiyuan_s_goals_from_three_zones_and_stops_on_ctrl_c() {
    // The script runs the binaries scripts/test.sh built; say so if they are missing.
    bin("zonesync-demo");
    bin("zonesync-aggregator");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/federation-demo.sh");
    let files = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new("bash")
        .arg(script)
        .arg("--no-build")
        .env("FEDERATION_DEMO_PORT", free_port().to_string())
        .env("FEDERATION_DEMO_DIR", files.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("run scripts/federation-demo.sh");
    let _group = Group(child.id());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo> {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    let base = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the script printed no center dashboard URL");
        if let Some(url) = line.trim().strip_prefix("center dashboard:") {
            break url.trim().trim_end_matches('/').to_owned();
        }
    };
    let center = Api::new(&base);

    let page = reqwest::get(format!("{base}/dashboard/"))
        .await
        .expect("the center serves the dashboard");
    assert!(page.status().is_success(), "{}", page.status());
    let cities = center.get("/api/v1/cities").await;
    println!("/api/v1/cities: {cities}");
    assert_eq!(cities["role"], "center");
    assert_eq!(cities["cities"][0]["city"], "济源");
    assert_eq!(cities["cities"][0]["zones"].as_array().map(Vec::len), Some(3));

    // Every zone's agent catches up on last month; the city's JY27 goals
    // show once all three zones have sent their tallies.
    let goals = loop {
        let t: Value = center.get("/api/v1/cities/济源/goals").await;
        let jy: Vec<&Value> = t["goals"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter(|r| r["id"].as_str().is_some_and(|id| id.starts_with("JY27-")))
                    .collect()
            })
            .unwrap_or_default();
        let all_three = jy.iter().all(|r| {
            r["id"]
                .as_str()
                .and_then(|id| t["parts"][id].as_array())
                .is_some_and(|p| p.len() == 3)
        });
        if !jy.is_empty() && all_three && t["completeness"]["fresh"] == 3 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "济源's JY27 goals never came with parts from three zones: {}",
            t["completeness"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ids: Vec<&str> = goals["goals"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|r| r["id"].as_str())
                .filter(|id| id.starts_with("JY27-"))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "济源 {}: {} JY27 goals ({ids:?}), parts from 3 zones each",
        goals["period"],
        ids.len()
    );
    assert!(ids.contains(&"JY27-01"), "{ids:?}");

    // The center's page in a real browser: the city view only (a center
    // holds no zone's own data), each JY27 figure as the center's API has
    // it with its three zones' parts. The zones keep sending, so the page is
    // read between two equal API tables.
    let b = zonesync_e2e::browser::Browser::start(1920, 1080).await;
    let deadline = Instant::now() + WAIT;
    let (rows, table) = loop {
        let before = center.get("/api/v1/cities/济源/goals").await["goals"].clone();
        b.goto(&format!("{base}/dashboard/")).await;
        b.wait_for(
            "the center's city view",
            "return document.querySelectorAll('tr.goal[data-level=\"city:济源\"]').length > 0 && !document.querySelector('.error');",
            serde_json::json!([]),
            WAIT,
        )
        .await;
        let rows = b
            .js(
                "const out = {}; for (const r of document.querySelectorAll('tr.goal[data-level=\"city:济源\"]'))
                   out[r.dataset.goal] = [r.dataset.value === '' ? null : Number(r.dataset.value), r.querySelectorAll('li.part').length];
                 return [out, [...document.querySelectorAll('#tabs a')].filter(a => !a.hidden).map(a => a.dataset.tab)];",
                serde_json::json!([]),
            )
            .await;
        let after = center.get("/api/v1/cities/济源/goals").await["goals"].clone();
        if before == after {
            break (rows, after);
        }
        assert!(
            Instant::now() < deadline,
            "the center's table never held still for a page load"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        rows[1],
        serde_json::json!(["city"]),
        "a center's page has the city view only"
    );
    let mut compared = 0;
    for g in table.as_array().into_iter().flatten().filter(|g| g["scope"] == "city") {
        let id = g["id"].as_str().unwrap_or_default();
        let shown = &rows[0][id];
        assert!(shown.is_array(), "{id} is not on the center's page");
        match (shown[0].as_f64(), g["value"].as_f64()) {
            (Some(a), Some(v)) => assert!((a - v).abs() <= 1e-9 * v.abs().max(1.0), "{id}: page {a}, API {v}"),
            (a, v) => assert_eq!(a, v, "{id}"),
        }
        assert_eq!(shown[1], 3, "{id}: each of the three zones' parts");
        compared += 1;
    }
    assert!(compared >= 10, "city rows compared on the center's page: {compared}");
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    b.screenshot(&shots.join("center-zh.png")).await;
    b.quit().await;

    // Ctrl-C: the script stops what it started and ends.
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().expect("kill");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the script did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.join();
    let said: Vec<String> = rx.try_iter().collect();
    println!("script ended: {status}");
    assert!(said.iter().any(|l| l == "stopped"), "{said:?}");
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "the center still answers after Ctrl-C"
    );
}

//! End-to-end test of the HTTP/JSON pull source: a real HTTP server (axum,
//! in the test) playing a plant's energy management system behind a bearer
//! token, the agent in-process, a Mosquitto broker process, and the figures
//! checked through the aggregator's HTTP API. The same source is probed
//! directly against the server to see the reason given for each kind of bad
//! response.
//!
//! | point | JSON pointer | first | while the document is bad |
//! |-------|--------------|-------|---------------------------|
//! | EMS-1 | /plant/energy/kwh (with /time, /unit) | 1500.5 kWh | refused, last value stays |
//! | EMS-P | /plant/power_kw | 12.5 kW | 13.0, 13.5, ... (proves the polls went on) |
//! | EMS-F | /plant/later/kwh | stamped 8 h ahead: never sent |
//! | EMS-OLD | /plant/old/kwh | stamped before E1 was established: never sent |

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{Duration as ChronoDuration, Utc};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zonesync_e2e::dataset::E;
use zonesync_e2e::plant::{latest_of, Plant, WAIT};

const TOKEN: &str = "s3cret-ems-token";

/// What the server answers, and how many answers it gave.
#[derive(Clone, Default)]
struct Ems {
    reply: Arc<Mutex<(u16, String)>>,
    served: Arc<AtomicU64>,
    unauthorised: Arc<AtomicU64>,
}

async fn now(State(ems): State<Ems>, headers: HeaderMap) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        ems.unauthorised.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let (status, body) = ems.reply.lock().unwrap().clone();
    ems.served.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

impl Ems {
    async fn start() -> (Self, String) {
        let ems = Ems::default();
        let app = axum::Router::new().route("/api/now", get(now)).with_state(ems.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/now", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (ems, url)
    }

    fn set(&self, status: u16, body: String) {
        *self.reply.lock().unwrap() = (status, body);
    }

    /// Waits until the server has answered `more` further authorised requests.
    async fn wait_served(&self, more: u64) {
        let want = self.served.load(Ordering::SeqCst) + more;
        let deadline = Instant::now() + WAIT;
        while self.served.load(Ordering::SeqCst) < want {
            assert!(Instant::now() < deadline, "the agent stopped polling");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A document with energy `kwh` (stamped `time`, in `unit`) and power `kw`.
fn doc(kwh: Value, unit: &str, time: &str, kw: f64) -> String {
    let ahead = (Utc::now() + ChronoDuration::hours(8)).to_rfc3339();
    json!({"plant": {
        "energy": {"kwh": kwh, "unit": unit, "time": time},
        "power_kw": kw,
        "later": {"kwh": 10.0, "time": ahead},
        "old": {"kwh": 20.0, "time": "2019-06-01T00:00:00Z"},
    }})
    .to_string()
}

fn sources(url: &str, token_file: &std::path::Path) -> String {
    let e = E[0];
    format!(
        r#"
[[http_pull]]
name = "ems"
url = "{url}"
bearer_token_file = "{token}"
poll_ms = 100
timeout_ms = 3000

[[http_pull.mappings]]
pointer = "/plant/energy/kwh"
timestamp_pointer = "/plant/energy/time"
unit_pointer = "/plant/energy/unit"
indicator = "electricity"
unit = "kWh"
enterprise = "{e}"
point = "EMS-1"

[[http_pull.mappings]]
pointer = "/plant/power_kw"
indicator = "active_power"
unit = "kW"
enterprise = "{e}"
point = "EMS-P"

[[http_pull.mappings]]
pointer = "/plant/later/kwh"
timestamp_pointer = "/plant/later/time"
indicator = "electricity"
unit = "kWh"
enterprise = "{e}"
point = "EMS-F"

[[http_pull.mappings]]
pointer = "/plant/old/kwh"
timestamp_pointer = "/plant/old/time"
indicator = "electricity"
unit = "kWh"
enterprise = "{e}"
point = "EMS-OLD"
"#,
        token = token_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_flow_bad_documents_are_refused_with_reasons_and_polling_goes_on() {
    let mut plant = Plant::start(true).await;
    let (ems, url) = Ems::start().await;
    let t1 = (Utc::now() - ChronoDuration::minutes(1)).to_rfc3339();
    ems.set(200, doc(json!(1500.5), "kWh", &t1, 12.5));
    let token = plant.dir.path().join("ems.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    // E1 was established in 2020: a value stamped 2019 is a clock problem.
    let profile = plant.dir.path().join("profile.toml");
    std::fs::write(
        &profile,
        format!("[[enterprise]]\nid = \"{}\"\nestablished = \"2020-01-01\"\n", E[0]),
    )
    .unwrap();
    let config = format!(
        "{}\n[profile]\npath = \"{}\"\npoll_secs = 1\n{}",
        plant.agent_header("http-gw"),
        profile.display(),
        sources(&url, &token)
    );
    plant.start_agent(&config);

    plant.wait_latest("EMS-1", 1500.5).await;
    plant.wait_latest("EMS-P", 12.5).await;

    // The same source, probed directly: each bad document gets its reason.
    let cfg: zonesync_agent::config::AgentConfig =
        zonesync_agent::config::AgentConfig::load(&plant.dir.path().join("agent.toml")).unwrap();
    let validator = zonesync_proto::Validator::new(zonesync_proto::Catalog::builtin().unwrap(), Default::default());
    let probe = zonesync_agent::sources::http_pull::check_all(&cfg.http_pull, &validator)
        .unwrap()
        .remove(0);
    let energy_row = |rows: Vec<zonesync_agent::sources::probe::ProbeRow>| rows[0].result.clone();

    // (status, body, the reason given, the power value the document still carries)
    let bad: [(u16, String, &str, Option<f64>); 5] = [
        (500, "{\"error\": \"database down\"}".into(), "HTTP status 500", None),
        (200, "<html>maintenance</html>".into(), "response is not JSON", None),
        (
            200,
            json!({"plant": {"power_kw": 13.5}}).to_string(),
            "pointer \"/plant/energy/kwh\" is not in the document",
            Some(13.5),
        ),
        (
            200,
            doc(json!("1501.0"), "kWh", &t1, 14.5),
            "is text, not a number",
            Some(14.5),
        ),
        (
            200,
            doc(json!(1501.0), "MWh", &t1, 15.5),
            "unit at \"/plant/energy/unit\" is \"MWh\"",
            Some(15.5),
        ),
    ];
    for (status, body, reason, kw) in bad {
        ems.set(status, body);
        let got = energy_row(probe.probe().await);
        assert!(
            got.as_ref().is_err_and(|e| e.contains(reason)),
            "expected {reason:?}, got {got:?}"
        );
        ems.wait_served(3).await;
        if let Some(kw) = kw {
            // The power value in the same document still goes through.
            plant.wait_latest("EMS-P", kw).await;
        }
    }
    assert_eq!(plant.latest("EMS-1").await, Some(1500.5), "no bad value was sent");

    // A good document again: the next value goes through.
    let t2 = (Utc::now() - ChronoDuration::seconds(5)).to_rfc3339();
    ems.set(200, doc(json!(1502.25), "kWh", &t2, 20.0));
    plant.wait_latest("EMS-1", 1502.25).await;
    plant.wait_latest("EMS-P", 20.0).await;

    let e = plant.enterprise().await;
    assert_eq!(
        latest_of(&e, "EMS-F"),
        None,
        "a value stamped 8 h ahead is refused: {e}"
    );
    assert_eq!(
        latest_of(&e, "EMS-OLD"),
        None,
        "a value from before E1 existed is refused: {e}"
    );
    assert_eq!(
        ems.unauthorised.load(Ordering::SeqCst),
        0,
        "every request carried the token"
    );
    assert!(plant.agent_running());
    plant.stop().await;
}

//! The edges of zonesync tried as an attacker or a careless operator would
//! (issue 15), each against real processes: a Mosquitto broker and the
//! aggregator and agent binaries on free loopback ports.

use serde_json::{json, Value};
use zonesync_e2e::{dataset, run_to_end, spawn_aggregator, Api, Mosquitto, Proc};

/// A broker, the data set's files and an aggregator process whose
/// configuration's `[http]` section got `http_extra`.
struct Zone {
    _dir: tempfile::TempDir,
    broker: Mosquitto,
    ds: dataset::Dataset,
    aggregator: Proc,
    api: Api,
}

fn zone_with(http_extra: &str, top_extra: &str) -> Zone {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    let text = std::fs::read_to_string(&ds.aggregator).expect("aggregator config");
    let text = format!(
        "{top_extra}{}",
        text.replace("[http]\n", &format!("[http]\n{http_extra}\n"))
    );
    std::fs::write(&ds.aggregator, text).expect("write aggregator config");
    let (aggregator, api) = spawn_aggregator(&ds.aggregator);
    Zone {
        _dir: dir,
        broker,
        ds,
        aggregator,
        api,
    }
}

/// POSTs `body` to the alert acknowledgement with `auth` as the Authorization header.
async fn ack(base: &str, auth: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/api/v1/alerts/ack"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.expect("POST ack");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_token_is_checked_before_the_body_and_its_scheme_in_any_case() {
    let z = zone_with("write_token = \"wr1te-t0ken\"", "");
    let base = z.api.base().to_owned();
    // 1 MiB of something that is not JSON, with no token: refused for the
    // token, not parsed (main parsed it first and answered 400 for the JSON).
    let junk = vec![b'{'; 1 << 20];
    let (status, body) = ack(&base, None, junk.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing or wrong bearer token")),
        "{body}"
    );
    for wrong in [
        "Bearer wr1te",
        "Bearer wr1te-t0ken-and-more",
        "Bearer WR1TE-T0KEN",
        "Basic wr1te-t0ken",
    ] {
        let (status, body) = ack(&base, Some(wrong), junk.clone()).await;
        assert_eq!(status, 401, "{wrong}: {body}");
    }
    // The scheme is case-insensitive: each spelling gets past the guard to
    // the handler, which says there is no such alert.
    let good = serde_json::to_vec(&json!({"key": "no-such-alert", "by": "tester"})).unwrap();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, body) = ack(&base, Some(&format!("{scheme} wr1te-t0ken")), good.clone()).await;
        assert_eq!(status, 404, "{scheme}: {body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains("no alert"),
            "{body}"
        );
    }
    // Even with the token, an acknowledgement is small: 64 KiB is refused unread.
    let (status, _) = ack(&base, Some("Bearer wr1te-t0ken"), vec![b' '; 64 << 10]).await;
    assert_eq!(status, 413, "an oversized acknowledgement body");
    let (status, body) = z.api.get_with_status("/healthz").await;
    assert_eq!(status, 200, "{body}");
    drop(z);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_written_where_its_file_belongs_is_never_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "agent_id = \"gw-1\"\nzone = \"{}\"\ndata_dir = \"{}\"\n[mqtt]\nport = 1\nusername = \"gw-1\"\npassword_file = \"Sup3r-Secret-Pw\"\n",
            dataset::ZONE,
            dir.path().join("data").display()
        ),
    )
    .expect("write agent config");
    for cmd in ["check", "run"] {
        let out = run_to_end("zonesync-agent", &[cmd, "-c", config.to_str().expect("utf-8 path")]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{cmd}: an unreadable password_file stops it:\n{text}"
        );
        assert!(
            text.contains("password_file cannot be read"),
            "{cmd}: says why:\n{text}"
        );
        assert!(
            !text.contains("Sup3r-Secret-Pw"),
            "{cmd}: the value is never printed:\n{text}"
        );
    }
}

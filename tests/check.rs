//! `zonesync-agent check -c FILE` as a process, against real peers: the
//! pymodbus meter, the DL/T 645 bus (PyPI `dlt645`), an HTTP server (axum,
//! in the test), a CSV drop folder, a profile file and the simulator, and
//! every upstream broker (Mosquitto with a password file and an ACL). Every
//! source is probed once and shows what it read, every upstream is logged in
//! to and test-published on; a source or upstream that fails makes the exit
//! status non-zero and says why.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use zonesync_e2e::dataset::{self, E, ZONE};
use zonesync_e2e::peers::{Dlt645Bus, ModbusMeter};
use zonesync_e2e::{free_port, mosquitto_passwords, spawn_aggregator, Mosquitto};

fn config(dir: &Path, mqtt: u16, modbus: u16, dlt645: u16, http: &str, extra: &str) -> String {
    let e = E[0];
    let profile = dir.join("profile.toml");
    std::fs::write(
        &profile,
        format!(
            "[[enterprise]]\nid = \"{e}\"\nestablished = \"2015-06-01\"\n[enterprise.declare]\ndt_maturity = 3\n\
             [[enterprise.figures]]\nindicator = \"value_added\"\nperiod = \"2026-10\"\nvalue = 930.0\nunit = \"万元\"\n"
        ),
    )
    .unwrap();
    let drop = dir.join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    format!(
        r#"agent_id = "check-gw"
zone = "{ZONE}"
data_dir = "{data}"

[mqtt]
port = {mqtt}

[profile]
path = "{profile}"

[simulator]
meters_per_enterprise = 1
[[simulator.enterprises]]
id = "{e}"

[[csv_drop]]
name = "finance"
folder = "{drop}"
enterprise_column = "统一社会信用代码"
period_column = "期间"
[[csv_drop.columns]]
header = "工业增加值(万元)"
indicator = "value_added"
unit = "万元"

[[modbus]]
name = "meter-1"
host = "127.0.0.1"
port = {modbus}
enterprise = "{e}"
timeout_ms = 2000
retries = 1
[[modbus.points]]
point = "MB1"
indicator = "electricity"
register = 0
data_type = "u32"
unit = "kWh"

[[dlt645]]
gateway = "127.0.0.1:{dlt645}"
address = "202311230001"
quantity = "forward"
enterprise = "{e}"
point = "D1"
timeout_ms = 10000
retries = 2

[[http_pull]]
name = "ems"
url = "{http}"
[[http_pull.mappings]]
pointer = "/kwh"
indicator = "electricity"
unit = "kWh"
enterprise = "{e}"
point = "H1"
{extra}"#,
        data = dir.join("data").display(),
        profile = profile.display(),
        drop = drop.display(),
    )
}

async fn check(dir: &Path, name: &str, text: String) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(zonesync_e2e::bin("zonesync-agent"))
            .args(["check", "-c"])
            .arg(&path)
            .env("RUST_LOG", "error")
            .output()
            .expect("run zonesync-agent check")
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn line_with<'a>(out: &'a str, parts: &[&str]) -> &'a str {
    out.lines()
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no line with {parts:?} in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probes_every_source_and_fails_on_any_error() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut meter = ModbusMeter::start(dir.path());
    meter.set_holding(0, &[0x0001, 0xE240]);
    let mut bus = Dlt645Bus::start(dir.path());
    bus.set("202311230001", "00010000", 1200.5);
    let app = axum::Router::new().route(
        "/now",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"kwh": 42.5})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}/now", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (ok, out) = check(
        dir.path(),
        "good.toml",
        config(dir.path(), broker.port, meter.port, bus.port, &http, ""),
    )
    .await;
    println!("{out}");
    assert!(ok, "every probe succeeds:\n{out}");
    line_with(&out, &["modbus", "ok", "electricity [MB1] = 123456 kWh"]);
    line_with(
        &out,
        &[
            "dlt645",
            "meter 202311230001 forward",
            "ok",
            "electricity [D1] = 1200.5 kWh",
        ],
    );
    line_with(&out, &["http_pull", "/kwh", "ok", "electricity [H1] = 42.5 kWh"]);
    line_with(
        &out,
        &[
            "profile",
            "1 enterprises, 1 declarations",
            "value_added@2026-10 = 930 万元",
        ],
    );
    line_with(&out, &["csv_drop", "0 csv files waiting", "ok"]);
    line_with(&out, &["simulator", "ok", "electricity [M1] = 10000 kWh"]);
    line_with(
        &out,
        &["mqtt", "upstream primary", "ok", "publishing allowed on 1 data topics"],
    );
    line_with(&out, &["all 7 probes ok"]);

    // A meter not on the bus, a drop folder that is not there, and a
    // mapping the document does not have: each is an error with its reason.
    let extra = format!(
        "\n[[dlt645]]\ngateway = \"127.0.0.1:{}\"\naddress = \"202311230009\"\nenterprise = \"{}\"\npoint = \"D9\"\n\
         timeout_ms = 1000\nretries = 0\n\n[[http_pull]]\nname = \"mes\"\nurl = \"{http}\"\n[[http_pull.mappings]]\n\
         pointer = \"/output/kwh\"\nindicator = \"electricity\"\nunit = \"kWh\"\nenterprise = \"{}\"\npoint = \"H2\"\n\
         \n[[csv_drop]]\nname = \"missing\"\nfolder = \"{}\"\nenterprise_column = \"a\"\nperiod_column = \"b\"\ncolumns = []\n",
        bus.port,
        E[0],
        E[0],
        dir.path().join("no-such-folder").display()
    );
    let (ok, out) = check(
        dir.path(),
        "bad.toml",
        config(dir.path(), broker.port, meter.port, bus.port, &http, &extra),
    )
    .await;
    assert!(!ok, "a failed probe fails the command:\n{out}");
    line_with(&out, &["dlt645", "meter 202311230009", "error: no answer in time"]);
    line_with(
        &out,
        &[
            "http_pull",
            "/output/kwh",
            "error: pointer \"/output/kwh\" is not in the document",
        ],
    );
    line_with(&out, &["csv_drop", "no-such-folder", "error: folder not readable"]);
    line_with(&out, &["dlt645", "meter 202311230001 forward", "ok", "1200.5 kWh"]);
    line_with(&out, &["3 of 10 probes failed"]);

    // A second source given the simulator's meter M1 (same enterprise and
    // indicator): their readings would mix in one series, so the
    // configuration is refused before anything is probed, naming both.
    let extra = format!(
        "\n[[http_pull]]\nname = \"mes\"\nurl = \"{http}\"\n[[http_pull.mappings]]\npointer = \"/kwh\"\n\
         indicator = \"electricity\"\nunit = \"kWh\"\nenterprise = \"{}\"\npoint = \"M1\"\n",
        E[0]
    );
    let (ok, out) = check(
        dir.path(),
        "shared.toml",
        config(dir.path(), broker.port, meter.port, bus.port, &http, &extra),
    )
    .await;
    assert!(!ok, "a shared series fails the command:\n{out}");
    line_with(
        &out,
        &["electricity at point \"M1\"", "both simulator and http_pull:mes"],
    );
    assert!(!out.contains("probes"), "nothing is probed:\n{out}");
}

/// An agent configuration reporting for E1 and E2 (simulated) to the
/// broker on `port` as `user`/`pass`, plus `extra` (further upstreams).
fn broker_config(dir: &Path, port: u16, user: &str, pass: &str, extra: &str) -> String {
    format!(
        "agent_id = \"gw-check\"\nzone = \"{ZONE}\"\ndata_dir = \"{data}\"\n\
         [mqtt]\nport = {port}\nusername = \"{user}\"\npassword = \"{pass}\"\n\
         [simulator]\nmeters_per_enterprise = 1\n[[simulator.enterprises]]\nid = \"{e1}\"\n[[simulator.enterprises]]\nid = \"{e2}\"\n{extra}",
        data = dir.join("data").display(),
        e1 = E[0],
        e2 = E[1],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_logs_in_to_every_upstream_and_test_publishes_on_each_data_topic() {
    let dir = tempfile::tempdir().unwrap();
    // Users and an ACL in the shape of deploy/mosquitto/zonesync.acl:
    // gw-check may write both enterprises' topics, gw-narrow only E1's.
    let passwd = dir.path().join("passwd");
    mosquitto_passwords(
        &passwd,
        &[
            ("zonesync-aggregator", "agg-pass"),
            ("gw-check", "pw"),
            ("gw-narrow", "pw"),
        ],
    );
    let acl = dir.path().join("acl");
    let data = |e: &str| format!("topic write zonesync/v1/{ZONE}/gw-check/data/{e}\n");
    std::fs::write(
        &acl,
        format!(
            "user zonesync-aggregator\ntopic read zonesync/v1/{ZONE}/+/state\ntopic read zonesync/v1/{ZONE}/+/data/+\n\n\
             user gw-check\ntopic write zonesync/v1/{ZONE}/gw-check/state\n{}{}\n\
             user gw-narrow\ntopic write zonesync/v1/{ZONE}/gw-check/state\n{}",
            data(E[0]),
            data(E[1]),
            data(E[0]),
        ),
    )
    .unwrap();
    let broker = Mosquitto::start_with(
        dir.path(),
        &format!("password_file {}\nacl_file {}", passwd.display(), acl.display()),
    );
    // An aggregator subscribed, to show the test messages are acknowledged and stored nowhere.
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    let agg = std::fs::read_to_string(&ds.aggregator).unwrap().replace(
        "[mqtt]\n",
        "[mqtt]\nusername = \"zonesync-aggregator\"\npassword = \"agg-pass\"\n",
    );
    std::fs::write(&ds.aggregator, agg).unwrap();
    let (_aggregator, api) = spawn_aggregator(&ds.aggregator);
    api.wait_metric("zonesync_aggregator_mqtt_connected", 1.0, Duration::from_secs(30))
        .await;
    let nobody = free_port();

    // Nothing listening on a second upstream: that upstream's row says so, the first is fine.
    let city = format!("[[upstream]]\nname = \"city\"\nport = {nobody}\nusername = \"gw-check\"\npassword = \"pw\"\n");
    let (ok, out) = check(
        dir.path(),
        "two.toml",
        broker_config(dir.path(), broker.port, "gw-check", "pw", &city),
    )
    .await;
    println!("{out}");
    assert!(!ok, "an upstream nobody answers fails check:\n{out}");
    line_with(
        &out,
        &[
            "mqtt",
            &format!("upstream primary 127.0.0.1:{}", broker.port),
            "ok",
            "logged in as gw-check, publishing allowed on 2 data topics",
        ],
    );
    line_with(
        &out,
        &[
            "mqtt",
            &format!("upstream city 127.0.0.1:{nobody}"),
            "error: cannot connect",
        ],
    );
    line_with(&out, &["1 of 3 probes failed"]);
    // The aggregator acknowledged both test messages as probes: nothing stored or dead-lettered.
    api.wait_metric(
        "zonesync_aggregator_probes_received_total",
        2.0,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(api.metric("zonesync_aggregator_dead_letters_total").await, 0.0);
    assert_eq!(api.metric("zonesync_aggregator_batches_stored_total").await, 0.0);

    // A wrong password.
    let (ok, out) = check(
        dir.path(),
        "wrong.toml",
        broker_config(dir.path(), broker.port, "gw-check", "not-the-pw", ""),
    )
    .await;
    assert!(!ok, "{out}");
    line_with(
        &out,
        &["mqtt", "upstream primary", "error: login refused: not authorized"],
    );

    // A user whose ACL lacks E2: under MQTT 3.1.1 the broker would acknowledge
    // the publish all the same; check sees the MQTT 5 refusal and names the topic.
    let (ok, out) = check(
        dir.path(),
        "narrow.toml",
        broker_config(dir.path(), broker.port, "gw-narrow", "pw", ""),
    )
    .await;
    println!("{out}");
    assert!(!ok, "{out}");
    line_with(
        &out,
        &[
            "mqtt",
            "logged in as gw-narrow, but the broker refused publishing on",
            &format!("zonesync/v1/{ZONE}/gw-check/data/{}: not authorized", E[1]),
        ],
    );
    assert!(
        !out.contains(&format!("gw-check/data/{}:", E[0])),
        "E1 is allowed and not listed:\n{out}"
    );
    let (status, _) = api.get_with_status("/healthz").await;
    assert_eq!(status, 200);
}

//! The key-energy-user monitoring platform as an HTTPS upstream, against
//! real peers: two platforms (the province's and the nation's: the rules
//! want at least two data centers) served by Python's ssl on the test CA,
//! beside a Mosquitto upstream with a subscriber standing in for the zone.
//!
//! The province's platform refuses (503), times out, answers a wrong text,
//! answers an HTML page, drops the connection and redirects before it
//! answers success;
//! the nation's is killed mid-run and started again. Each must end up with
//! every reading it maps exactly once, the MQTT upstream must not wait for
//! them, and a batch must stay in the outbox until every upstream has it.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use zonesync_agent::config::AgentConfig;
use zonesync_agent::shutdown;
use zonesync_e2e::certs::Certs;
use zonesync_e2e::collector::{wait_status, Collector};
use zonesync_e2e::dataset::{self, E, ZONE};
use zonesync_e2e::platform::EnergyPlatform;
use zonesync_e2e::Mosquitto;

const WAIT: Duration = Duration::from_secs(120);
const TICKS: u64 = 97;
const TOKEN: &str = "henan-platform-token-7f3a";

fn platform_table(name: &str, url: &str, ca: Option<&std::path::Path>, token: &std::path::Path, maps: &str) -> String {
    let ca = ca
        .map(|c| format!("ca_file = \"{}\"\n", c.display()))
        .unwrap_or_default();
    format!(
        "\n[[energy_platform]]\nname = \"{name}\"\nurl = \"{url}\"\n{ca}token_file = \"{}\"\n\
         timeout_secs = 2\nretry_min_ms = 100\nretry_max_ms = 400\n{maps}",
        token.display()
    )
}

/// Records by (deviceId, dataCode, statType, statDate); panics on a duplicate.
fn by_key(records: &[Value], who: &str) -> BTreeMap<(String, String, u64, String), f64> {
    let mut out = BTreeMap::new();
    for r in records {
        let key = (
            r["deviceId"].as_str().unwrap_or_default().to_owned(),
            r["dataCode"].as_str().unwrap_or_default().to_owned(),
            r["statType"].as_u64().unwrap_or(99),
            r["statDate"].as_str().unwrap_or_default().to_owned(),
        );
        let v = r["dataValue"].as_f64().unwrap_or(f64::NAN);
        assert!(out.insert(key.clone(), v).is_none(), "{who} received {key:?} twice");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_platforms_get_every_reading_once_through_refusals_timeouts_wrong_answers_and_a_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,zonesync_agent::platform=info"))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let zone = Collector::start(
        broker.port,
        "zone-center",
        &format!("zonesync/v1/{ZONE}/agent-b/data/#"),
        None,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ca_dir = dir.path().join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    let certs = Certs::new(&ca_dir);
    let province = EnergyPlatform::start(&dir.path().join("province"), &certs, TOKEN);
    let mut nation = EnergyPlatform::start(&dir.path().join("nation"), &certs, TOKEN);
    province.set_mode("refuse");
    let token = dir.path().join("platform.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();

    // agent-b of the data set: E3, meters M1 and M2 at 15-minute steps, and
    // one month's value added; sent in batches of 10 over ~5 s.
    let ds = dataset::write(dir.path(), broker.port, TICKS, 50);
    let produced = 2 * TICKS + (TICKS - 1) / 96;
    let value_added = (TICKS - 1) / 96;
    let mut text = std::fs::read_to_string(&ds.agent_b).unwrap();
    text = text.replacen("[mqtt]\n", "[mqtt]\nname = \"zone\"\nend_to_end_confirm = false\n", 1);
    text = text.replacen("max_batch_items = 50", "max_batch_items = 10", 1);
    text.push_str(&platform_table(
        "province",
        &province.url(),
        Some(&certs.ca),
        &token,
        "[[energy_platform.map]]\nindicator = \"electricity\"\ndata_code = \"00-00-0000023400-80\"\nunit = \"MWh\"\n\
         [[energy_platform.map]]\nindicator = \"value_added\"\ndata_code = \"00-00-0000000000-VA\"\n",
    ));
    text.push_str(&platform_table(
        "nation",
        &nation.url(),
        Some(&certs.ca),
        &token,
        "[[energy_platform.map]]\nindicator = \"electricity\"\ndata_code = \"00-00-0000023400-80\"\n",
    ));
    let path = dir.path().join("agent-b-platforms.toml");
    std::fs::write(&path, &text).unwrap();
    let mut cfg = AgentConfig::load(&path).unwrap();
    cfg.profile = None;

    // `check` probes each platform with an empty upload; one more table
    // without the test CA shows an untrusted certificate as such.
    let mut probed = cfg.clone();
    let untrusted: AgentConfig = toml::from_str(&format!(
        "agent_id = \"x\"\nzone = \"{ZONE}\"\n{}",
        platform_table(
            "untrusted",
            &nation.url(),
            None,
            &token,
            "[[energy_platform.map]]\nindicator = \"electricity\"\ndata_code = \"E\"\n"
        )
    ))
    .unwrap();
    probed.energy_platform.extend(untrusted.energy_platform);
    for p in &mut probed.energy_platform {
        p.read_token().unwrap();
    }
    let (probe_stop, probe_signal) = shutdown::channel();
    let rows = zonesync_agent::check::probe_all(&probed, probe_signal).await.unwrap();
    drop(probe_stop);
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.source == "energy_platform" && r.target.starts_with(&format!("{name} (")))
            .unwrap_or_else(|| panic!("no check row for {name}: {rows:?}"))
            .clone()
    };
    let p = row("province").result.unwrap_err();
    assert!(p.contains("http_status") && p.contains("503"), "{p}");
    assert!(row("nation").result.is_ok(), "{:?}", row("nation"));
    let u = row("untrusted").result.unwrap_err();
    assert!(
        u.starts_with("connect") && u.to_lowercase().contains("certificate"),
        "{u}"
    );
    println!("check: province {p:?}; untrusted {u:?}");

    let (trigger, signal) = shutdown::channel();
    let agent = tokio::spawn(zonesync_agent::run(cfg.clone(), signal));

    // The nation's platform goes away after a few uploads and comes back later.
    nation.wait_answered("ok", 1, 3, WAIT).await;
    nation.stop();

    // Everything reaches the zone while both platforms are failing, and the
    // outbox keeps every batch, since the province has acknowledged none.
    zone.wait_readings(produced, WAIT).await;
    let s = wait_status(
        &cfg.data_dir,
        WAIT,
        "zone caught up, province holding everything",
        |s| {
            s.upstreams[0].unacked_items == 0 && s.outbox.pending_items == 0 && s.platforms[0].unacked_items == produced
        },
    )
    .await;
    assert_eq!(s.outbox.sealed_items, produced, "held once, for the platforms");
    assert_eq!(province.records().len(), 0);
    assert!(
        s.platforms[1].unacked_items > 0,
        "the nation's platform is down: {:?}",
        s.platforms[1]
    );

    // The province answers every wrong way, each at least once, then success.
    for mode in ["timeout", "wrong", "html", "drop", "redirect"] {
        let before = province.answered_in(mode);
        province.set_mode(mode);
        province.wait_answered(mode, before, 1, WAIT).await;
    }
    nation.restart();
    province.set_mode("ok");

    let s = wait_status(
        &cfg.data_dir,
        WAIT,
        "both platforms caught up and the outbox empty",
        |s| {
            s.platforms.iter().all(|p| p.unacked_items == 0)
                && s.outbox.sealed_batches == 0
                && s.outbox.pending_items == 0
        },
    )
    .await;
    trigger.fire();
    agent.await.unwrap().unwrap();
    println!("status: {}", serde_json::to_string_pretty(&s.platforms).unwrap());

    // Exactly once each; the province's in MWh, the nation's as read (kWh).
    let (p, n) = (province.records(), nation.records());
    let (pk, nk) = (by_key(&p, "the province"), by_key(&n, "the nation"));
    assert_eq!(pk.len() as u64, produced, "the province maps both indicators");
    assert_eq!(
        nk.len() as u64,
        produced - value_added,
        "the nation maps electricity only"
    );
    for ((device, code, stat, date), kwh) in &nk {
        let mwh = pk
            .get(&(device.clone(), code.clone(), *stat, date.clone()))
            .unwrap_or_else(|| panic!("the province lacks {device} {date}"));
        assert!(
            (mwh * 1000.0 - kwh).abs() < 1e-6 * kwh.abs().max(1.0),
            "{device} {date}: {mwh} MWh vs {kwh} kWh"
        );
        assert_eq!(*stat, 0, "meter readings are real-time data");
    }
    let months: Vec<_> = pk.keys().filter(|k| k.2 == 2).collect();
    assert_eq!(months.len() as u64, value_added);
    let stamp = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok();
    for r in p.iter().chain(&n) {
        assert_eq!(r["enterpriseCode"], E[2]);
        assert!(
            stamp(r["statDate"].as_str().unwrap()) && stamp(r["uploadDate"].as_str().unwrap()),
            "{r}"
        );
        assert_eq!(
            (r["inputType"].as_u64(), r["scope"].as_u64(), r["valid"].as_u64()),
            (Some(4), Some(1), Some(1))
        );
    }
    // The simulator starts at 2026-09-30T16:00Z: 2026-10-01 00:00 in China.
    assert!(
        nk.keys().any(|k| k.3 == "2026-10-01 00:00:00"),
        "statDate in China time"
    );
    let devices: BTreeSet<&str> = nk.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(devices, BTreeSet::from(["M1", "M2"]));

    // Every failure was seen for what it was, and what was left out counted.
    let (ps, ns) = (&s.platforms[0], &s.platforms[1]);
    for kind in ["http_status", "timeout", "wrong_answer", "transport"] {
        assert!(
            ps.counts.failures.get(kind).copied().unwrap_or(0) >= 1,
            "province {kind}: {:?}",
            ps.counts.failures
        );
    }
    assert!(
        ps.counts.failures["wrong_answer"] >= 2,
        "a wrong text and a page: {:?}",
        ps.counts.failures
    );
    assert!(
        ns.counts.failures.get("connect").copied().unwrap_or(0) >= 1,
        "nation down: {:?}",
        ns.counts.failures
    );
    assert_eq!(
        (ps.counts.readings_not_mapped, ns.counts.readings_not_mapped),
        (0, value_added)
    );
    assert_eq!(ps.counts.records_uploaded, produced);
    assert_eq!((ps.dropped_readings, ns.dropped_readings), (0, 0));
    assert_eq!(zone.readings(), produced, "the zone got each reading once");
    assert!(
        province.requests().iter().all(|r| r["auth_ok"] == true),
        "the token went with every upload"
    );
    println!(
        "province: {} uploads ({} ok), failures {:?}; nation: {} uploads, failures {:?}, {} not mapped",
        ps.counts.uploads,
        ps.counts.uploads_succeeded,
        ps.counts.failures,
        ns.counts.uploads,
        ns.counts.failures,
        ns.counts.readings_not_mapped
    );
}

//! Issue 15, item 1: a broker's ACL denial, under MQTT 5 (seen in the
//! PUBACK, counted, kept, reported) and MQTT 3.1.1 (unseen, but kept by the
//! aggregator's confirmation, now the default).

use super::*;

/// A broker with a password file and an ACL in the shape of
/// deploy/mosquitto/zonesync.acl — agent-a may write its presence and E1's
/// data, not E2's — an aggregator logged in to it, and an agent process
/// simulating E1 and E2 with `mqtt_extra` in its `[mqtt]` section. Returns
/// once `done` holds for the agent's status.
async fn acl_denial(
    mqtt_extra: &str,
    what: &str,
    done: impl Fn(&zonesync_agent::status::UpstreamStatus, &zonesync_agent::status::Status) -> bool,
) -> (
    zonesync_agent::status::Status,
    Api,
    Vec<Proc>,
    Mosquitto,
    tempfile::TempDir,
) {
    use zonesync_e2e::dataset::{E, ZONE};
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("passwd");
    zonesync_e2e::mosquitto_passwords(&passwd, &[("zonesync-aggregator", "agg-pass"), ("agent-a", "pw")]);
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        format!(
            "user zonesync-aggregator\ntopic read zonesync/v1/{ZONE}/+/state\ntopic read zonesync/v1/{ZONE}/+/data/+\n\
             topic write zonesync/v1/{ZONE}/+/confirm\n\n\
             user agent-a\ntopic write zonesync/v1/{ZONE}/agent-a/state\ntopic write zonesync/v1/{ZONE}/agent-a/data/{}\n\
             topic read zonesync/v1/{ZONE}/agent-a/confirm\n",
            E[0]
        ),
    )
    .expect("write acl");
    let broker = Mosquitto::start_with(
        dir.path(),
        &format!("password_file {}\nacl_file {}", passwd.display(), acl.display()),
    );
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    let agg = std::fs::read_to_string(&ds.aggregator)
        .expect("aggregator config")
        .replace(
            "[mqtt]\n",
            "[mqtt]\nusername = \"zonesync-aggregator\"\npassword = \"agg-pass\"\n",
        );
    std::fs::write(&ds.aggregator, agg).expect("write aggregator config");
    let (aggregator, api) = spawn_aggregator(&ds.aggregator);
    api.wait_metric("zonesync_aggregator_mqtt_connected", 1.0, WAIT).await;
    let data = dir.path().join("agent");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "agent_id = \"agent-a\"\nzone = \"{ZONE}\"\ndata_dir = \"{}\"\n\
             [mqtt]\nport = {}\nusername = \"agent-a\"\npassword = \"pw\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n{mqtt_extra}\n\
             [outbox]\nmax_batch_items = 5\nmax_batch_age_ms = 50\nconfirm_timeout_secs = 1\nconfirm_timeout_max_secs = 2\n\
             [simulator]\ninterval_ms = 20\nstep_secs = 900\nstart = \"2026-10-01T00:00:00Z\"\nmax_ticks = 20\nmeters_per_enterprise = 1\n\
             [[simulator.enterprises]]\nid = \"{}\"\n[[simulator.enterprises]]\nid = \"{}\"\n",
            data.display(),
            broker.port,
            E[0],
            E[1]
        ),
    )
    .expect("write agent config");
    let agent = zonesync_e2e::spawn_agent(&config);
    let s =
        zonesync_e2e::collector::wait_status(&data, WAIT, what, |s| s.upstreams.first().is_some_and(|u| done(u, s)))
            .await;
    (s, api, vec![agent, aggregator], broker, dir)
}

/// Issue 15, item 1, MQTT 5 (the default): a publish the broker's ACL denies
/// is answered 0x87 and the agent sees it at once — counted, the batch kept
/// in the outbox, reported in status and in its presence — while the
/// enterprise it may report for is confirmed and stored as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_acl_denial_is_seen_counted_kept_and_reported_under_mqtt5() {
    use zonesync_e2e::dataset::{E, ZONE};
    let (s, api, _procs, _broker, _dir) = acl_denial("", "E1 confirmed, E2 denied and kept", |u, s| {
        s.outbox.pending_items == 0
            && u.items_acked > 0
            && u.unacked_items == u.items_acked
            && u.broker_denied_batches >= u.unacked_batches
    })
    .await;
    let u = &s.upstreams[0];
    println!("{}", serde_json::to_string_pretty(u).unwrap_or_default());
    assert_eq!(u.protocol, "5");
    assert!(u.end_to_end_confirm, "confirmation is the default");
    let last = u.last_broker_denial.clone().unwrap_or_default();
    assert!(
        last.contains(&format!("data/{}", E[1])) && last.contains("0x87") && last.contains("not authorized"),
        "{last}"
    );
    // What was confirmed is what the aggregator stored: E1's readings only.
    api.wait_metric("zonesync_aggregator_readings_stored_total", u.items_acked as f64, WAIT)
        .await;
    // The presence carries the count to the zone.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let agents = api.get(&format!("/api/v1/zones/{ZONE}/agents")).await;
        let denied = agents["agents"][0]["state"]["broker_denied_batches"]
            .as_u64()
            .unwrap_or(0);
        if denied > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no presence reported the denial: {agents}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gauge = format!("zonesync_aggregator_agent_broker_denied_batches{{zone=\"{ZONE}\",agent=\"agent-a\"}}");
    assert!(api.metric(&gauge).await > 0.0, "{gauge}");
}

/// Issue 15, item 1, MQTT 3.1.1 (`protocol = "3.1.1"`): the broker
/// acknowledges the denied publish like any other, so the agent cannot see
/// the denial — but with the aggregator's confirmation now the default, the
/// unconfirmed batches stay in the outbox instead of being deleted unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mqtt311_a_denied_batch_is_kept_until_the_aggregator_confirms_it() {
    let (s, api, _procs, _broker, _dir) = acl_denial(
        "protocol = \"3.1.1\"",
        "E1 confirmed, E2 unconfirmed and kept",
        |u, s| s.outbox.pending_items == 0 && u.items_acked > 0 && u.unacked_items == u.items_acked && u.resends > 0,
    )
    .await;
    let u = &s.upstreams[0];
    println!("{}", serde_json::to_string_pretty(u).unwrap_or_default());
    assert_eq!(u.protocol, "3.1.1");
    assert_eq!(u.broker_denied_batches, 0, "MQTT 3.1.1 cannot say denied");
    assert!(
        u.awaiting_confirm > 0,
        "the denied batches await a confirmation that will not come"
    );
    api.wait_metric("zonesync_aggregator_readings_stored_total", u.items_acked as f64, WAIT)
        .await;
}

//! End-to-end tests of the OPC UA source: a real PyPI `asyncua` server
//! (`peers/opcua_server.py`) on a free port, the agent in-process reading
//! its nodes, publishing through Mosquitto to the aggregator, whose API is
//! checked.
//!
//! One test per way a DCS is met: security policy None with an anonymous
//! session and a subscription; Basic256Sha256 (SignAndEncrypt) with a user
//! name, a pinned server certificate, the agent's own instance certificate
//! and polling; Basic256Sha256 signed only, an operator's X.509 user
//! certificate and a subscription. Each probes the server with `zonesync-agent check` first,
//! has the server killed and started again mid-test (the agent must connect
//! again by itself), and ends with a ledger: the aggregator stored exactly
//! as many readings as the agent appended.

use zonesync_e2e::dataset::E;
use zonesync_e2e::peers::{opcua_certificate, Login, OpcUaServer};
use zonesync_e2e::plant::{agent_check as check, count, line_with, Plant};

const ENERGY: &str = "ns=2;s=Feeder1.Energy";
const POWER: &str = "ns=2;s=Feeder1.Power";

fn nodes() -> String {
    format!(
        r#"
[[opcua.nodes]]
node_id = "{ENERGY}"
point = "F1"
indicator = "electricity"
unit = "kWh"

[[opcua.nodes]]
node_id = "{POWER}"
point = "P1"
indicator = "active_power"
unit = "kW"
"#
    )
}

/// The server dies and `meanwhile` moves its values on; the agent's
/// connects fail and are counted; the server starts again. The caller then
/// waits for the new values: the agent must connect again by itself.
async fn outage(plant: &Plant, server: &mut OpcUaServer, source: &str, meanwhile: impl FnOnce(&mut OpcUaServer)) {
    server.stop();
    meanwhile(server);
    plant
        .wait_source("dcs-gw", source, "failed connects while the server is down", |s| {
            count(s, "connection_failures") > 0
        })
        .await;
    server.restart();
}

/// Stops the server for good, so the readings stop growing, waits until
/// the agent has failed to connect since, checks the ledger (the aggregator
/// stored as many readings as the agent appended) and stops the plant.
async fn finish(plant: Plant, mut server: OpcUaServer, source: &str) {
    let before = plant.wait_source("dcs-gw", source, "a status", |s| s.is_object()).await;
    let failed = count(&before, "connection_failures");
    server.stop();
    plant
        .wait_source("dcs-gw", source, "failed connects after the final stop", |s| {
            count(s, "connection_failures") > failed
        })
        .await;
    plant.ledger_balances("dcs-gw", &[source]).await;
    assert!(plant.agent_running(), "a server going away never stops the agent");
    plant.stop().await;
}

/// Policy None, anonymous, by subscription: a UInt16 total rolling over,
/// the server killed and started again, then a replaced meter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_subscription_survives_the_server_going_away() {
    let mut plant = Plant::start(true).await;
    let dir = plant.dir.path().to_owned();
    let mut server = OpcUaServer::start(
        &dir,
        &[
            ("Feeder1.Energy", "UInt16", 65_000.0),
            ("Feeder1.Power", "Double", 12.5),
        ],
    );
    let config = plant.agent_header("dcs-gw")
        + &format!(
            r#"
[[opcua]]
name = "dcs-1"
endpoint = "{}"
enterprise = "{}"
read = "subscription"
interval_ms = 200
timeout_ms = 5000
"#,
            server.endpoint(),
            E[0]
        )
        + &nodes();

    // `check` connects, reads each node once and reports it on its own line.
    let out = check(&dir, &config).await;
    line_with(&out, &["opcua", ENERGY, "ok", "electricity [F1] = 65000 kWh"]);
    line_with(&out, &["opcua", POWER, "ok", "active_power [P1] = 12.5 kW"]);

    plant.start_agent(&config);
    plant.wait_latest("F1", 65_000.0).await;
    plant.wait_latest("P1", 12.5).await;

    // 65000 → 100 on a UInt16 node is a wrap: the value sent keeps growing.
    server.set("Feeder1.Energy", "UInt16", 100.0);
    plant.wait_latest("F1", 65_636.0).await;
    assert_eq!(plant.enterprise().await["counter_resets"], 0);

    // The server dies; its total moves on meanwhile; the agent's connects
    // fail and are counted, and once the server is back it connects again
    // by itself and the new total arrives.
    outage(&plant, &mut server, "opcua:dcs-1", |server| {
        server.set("Feeder1.Energy", "UInt16", 200.0);
        server.set("Feeder1.Power", "Double", 7.25);
    })
    .await;
    plant.wait_latest("F1", 65_736.0).await;
    plant.wait_latest("P1", 7.25).await;
    plant
        .wait_source("dcs-gw", "opcua:dcs-1", "a second connect", |s| {
            count(s, "connects") >= 2
        })
        .await;

    // 200 → 5 is no wrap: a replaced meter, sent as read, one reset.
    server.set("Feeder1.Energy", "UInt16", 5.0);
    plant.wait_latest("F1", 5.0).await;
    assert_eq!(plant.enterprise().await["counter_resets"], 1);
    finish(plant, server, "opcua:dcs-1").await;
}

/// Basic256Sha256 (SignAndEncrypt), a user name and password, the server's
/// certificate pinned, by polling: a wrong password is reported by `check`,
/// the right one reads; the server killed and started again mid-test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_basic256sha256_polls_through_a_server_restart() {
    let mut plant = Plant::start(true).await;
    let dir = plant.dir.path().to_owned();
    let mut server = OpcUaServer::start_secure(
        &dir,
        Login::Password("zonesync", "s3cret-pw"),
        &[("Feeder1.Energy", "Double", 1_234.5), ("Feeder1.Power", "Double", 3.25)],
    );
    let (client_cert, client_key) = opcua_certificate(&dir, "opcua-client", "urn:zonesync:agent");
    let (right, wrong) = (dir.join("opcua.password"), dir.join("opcua-wrong.password"));
    std::fs::write(&right, "s3cret-pw\n").expect("password file");
    std::fs::write(&wrong, "not-it\n").expect("password file");
    let config = |password: &std::path::Path| {
        plant.agent_header("dcs-gw")
            + &format!(
                r#"
[[opcua]]
name = "dcs-2"
endpoint = "{}"
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
user = "zonesync"
password_file = "{}"
server_certificate = "{}"
client_certificate = "{}"
client_private_key = "{}"
enterprise = "{}"
read = "poll"
interval_ms = 300
timeout_ms = 10000
"#,
                server.endpoint(),
                password.display(),
                server.certificate().expect("secure server").display(),
                client_cert.display(),
                client_key.display(),
                E[0]
            )
            + &nodes()
    };
    let (good, bad) = (config(&right), config(&wrong));

    let out = check(&dir, &bad).await;
    let line = line_with(&out, &["opcua", ENERGY, "error"]);
    assert!(!line.contains("1234.5"), "a wrong password reads nothing: {line}");
    let out = check(&dir, &good).await;
    line_with(&out, &["opcua", ENERGY, "ok", "electricity [F1] = 1234.5 kWh"]);
    line_with(&out, &["opcua", POWER, "ok", "active_power [P1] = 3.25 kW"]);

    plant.start_agent(&good);
    plant.wait_latest("F1", 1_234.5).await;
    plant.wait_latest("P1", 3.25).await;
    server.set("Feeder1.Energy", "Double", 1_240.75);
    plant.wait_latest("F1", 1_240.75).await;

    outage(&plant, &mut server, "opcua:dcs-2", |server| {
        server.set("Feeder1.Energy", "Double", 1_250.25)
    })
    .await;
    plant.wait_latest("F1", 1_250.25).await;
    assert_eq!(plant.enterprise().await["counter_resets"], 0);

    finish(plant, server, "opcua:dcs-2").await;
}

/// Basic256Sha256 signed only (Sign), an X.509 user identity (the operator's
/// certificate, not the agent's instance certificate), by subscription:
/// `check` reports a certificate the server does not know, the right one
/// reads; the server killed and started again mid-test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_over_sign_only_subscribes_through_a_server_restart() {
    let mut plant = Plant::start(true).await;
    let dir = plant.dir.path().to_owned();
    let (client_cert, client_key) = opcua_certificate(&dir, "opcua-client", "urn:zonesync:agent");
    let (user_cert, user_key) = opcua_certificate(&dir, "opcua-operator", "urn:zonesync:operator");
    let mut server = OpcUaServer::start_secure(
        &dir,
        Login::Certificate(&user_cert),
        &[
            ("Feeder1.Energy", "UInt32", 4_000_000.0),
            ("Feeder1.Power", "Float", 6.5),
        ],
    );
    let config = |cert: &std::path::Path, key: &std::path::Path| {
        plant.agent_header("dcs-gw")
            + &format!(
                r#"
[[opcua]]
name = "dcs-3"
endpoint = "{}"
security_policy = "Basic256Sha256"
security_mode = "Sign"
user_certificate = "{}"
user_private_key = "{}"
server_certificate = "{}"
client_certificate = "{}"
client_private_key = "{}"
enterprise = "{}"
read = "subscription"
interval_ms = 200
timeout_ms = 10000
"#,
                server.endpoint(),
                cert.display(),
                key.display(),
                server.certificate().expect("secure server").display(),
                client_cert.display(),
                client_key.display(),
                E[0]
            )
            + &nodes()
    };
    // The instance certificate signs a valid token too, but it is not the
    // operator's: the server refuses the session, and `check` says so.
    let (good, stranger) = (config(&user_cert, &user_key), config(&client_cert, &client_key));

    let out = check(&dir, &stranger).await;
    let line = line_with(&out, &["opcua", ENERGY, "error"]);
    assert!(
        !line.contains("4000000"),
        "an unknown user certificate reads nothing: {line}"
    );
    let out = check(&dir, &good).await;
    line_with(&out, &["opcua", ENERGY, "ok", "electricity [F1] = 4000000 kWh"]);
    line_with(&out, &["opcua", POWER, "ok", "active_power [P1] = 6.5 kW"]);

    plant.start_agent(&good);
    plant.wait_latest("F1", 4_000_000.0).await;
    plant.wait_latest("P1", 6.5).await;
    server.set("Feeder1.Energy", "UInt32", 4_000_250.0);
    plant.wait_latest("F1", 4_000_250.0).await;

    outage(&plant, &mut server, "opcua:dcs-3", |server| {
        server.set("Feeder1.Energy", "UInt32", 4_000_900.0)
    })
    .await;
    plant.wait_latest("F1", 4_000_900.0).await;
    plant
        .wait_source("dcs-gw", "opcua:dcs-3", "a second connect", |s| {
            count(s, "connects") >= 2
        })
        .await;
    assert_eq!(plant.enterprise().await["counter_resets"], 0);

    finish(plant, server, "opcua:dcs-3").await;
}

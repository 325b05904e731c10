//! End-to-end tests of meters on the gateway's own serial port: a socat pty
//! pair stands for the RS-485 line (`support/serial.rs`), a real peer on its
//! meter end — pymodbus serving Modbus RTU (`peers/modbus_meter.py --serial`),
//! the PyPI `dlt645` library's RTU meter service (`peers/dlt645_meter.py
//! --serial`) — and the agent in-process on the other end, publishing
//! through Mosquitto to the aggregator, whose API is checked.
//!
//! Each test probes the port with `zonesync-agent check` first, then has the
//! peer fail and return mid-test (the meter process killed; the whole pty
//! pair gone, as an unplugged USB adapter), and ends with a ledger: the
//! aggregator stored exactly as many readings as the agent appended —
//! nothing lost, nothing counted twice.

use std::path::Path;
use zonesync_e2e::dataset::E;
use zonesync_e2e::peers::{Dlt645Bus, ModbusMeter};
use zonesync_e2e::plant::{agent_check as check, count, line_with, Plant};
use zonesync_e2e::serial::SerialPair;

fn modbus_config(plant: &Plant, device: &Path) -> String {
    let e1 = E[0];
    plant.agent_header("rtu-gw")
        + &format!(
            r#"
[[serial]]
name = "rs485-1"
device = "{device}"
baud_rate = 9600
# A pty has no parity bit: the kernel refuses one (EINVAL).
parity = "none"

[[modbus]]
name = "meter-1"
serial = "rs485-1"
unit_id = 1
enterprise = "{e1}"
poll_ms = 200
timeout_ms = 300
retries = 0
[[modbus.points]]
point = "M1"
indicator = "electricity"
register = 0
data_type = "u32"
unit = "kWh"

[[modbus]]
name = "meter-2"
serial = "rs485-1"
unit_id = 2
enterprise = "{e1}"
poll_ms = 200
timeout_ms = 300
retries = 0
[[modbus.points]]
point = "M2"
indicator = "electricity"
register = 30
data_type = "u16"
scale = 0.1
unit = "kWh"
"#,
            device = device.display()
        )
}

/// Two Modbus RTU meters (unit ids 1 and 2) share one serial port: read in
/// turn, a u16 register rolling over, the meter process killed and started
/// again, then a replaced meter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_rtu_meters_on_one_port_survive_the_meter_going_away() {
    let mut plant = Plant::start(true).await;
    let dir = plant.dir.path().to_owned();
    let line = SerialPair::start(&dir, "rs485");
    let mut meter = ModbusMeter::start_serial(&dir, &line.meter_end, &[1, 2]);
    meter.set_holding(0, &[0x0001, 0xE240]); // 123 456 kWh
                                             // Unit 2 reads the peer's register file 1000 higher (peers/modbus_meter.py),
                                             // so a read sent to the wrong unit id gets no value.
    meter.set_holding(1030, &[65_000]); // unit 2, register 30: 6 500.0 kWh
    let config = modbus_config(&plant, &line.agent_end);

    // `check` opens the port and reads every point once, through the same code.
    let out = check(&dir, &config).await;
    let port = format!("{} 9600/8N1", line.agent_end.display());
    line_with(
        &out,
        &[
            "modbus",
            &port,
            "unit 1 holding 0",
            "ok",
            "electricity [M1] = 123456 kWh",
        ],
    );
    line_with(
        &out,
        &[
            "modbus",
            &port,
            "unit 2 holding 30",
            "ok",
            "electricity [M2] = 6500 kWh",
        ],
    );

    plant.start_agent(&config);
    plant.wait_latest("M1", 123_456.0).await;
    plant.wait_latest("M2", 6_500.0).await;

    // 65000 → 100 on a u16 register is a wrap: the value sent keeps growing.
    meter.set_holding(1030, &[100]);
    plant.wait_latest("M2", 65_636.0 * 0.1).await;
    assert_eq!(plant.enterprise().await["counter_resets"], 0);

    // The meter dies; its total moves on meanwhile; reads fail and are
    // counted, and once it answers again the new total arrives.
    let before = plant
        .wait_source("rtu-gw", "modbus:meter-1", "a poll", |s| count(s, "polls") > 0)
        .await;
    meter.stop();
    meter.set_holding(0, &[0x0001, 0xE250]); // 123 472 kWh
    plant
        .wait_source(
            "rtu-gw",
            "modbus:meter-1",
            "failed reads while the meter is down",
            |s| count(s, "failed_reads") > count(&before, "failed_reads") && count(s, "timeouts") > 0,
        )
        .await;
    meter.restart();
    plant.wait_latest("M1", 123_472.0).await;

    // 6563.6 → 0.5 kWh is no wrap: a replaced meter, sent as read, one reset.
    meter.set_holding(1030, &[5]);
    plant.wait_latest("M2", 0.5).await;
    assert_eq!(plant.enterprise().await["counter_resets"], 1);

    meter.stop();
    let down = plant
        .wait_source("rtu-gw", "modbus:meter-2", "", |s| count(s, "failed_reads") > 0)
        .await;
    plant
        .wait_source("rtu-gw", "modbus:meter-2", "failed reads after the final stop", |s| {
            count(s, "failed_reads") > count(&down, "failed_reads")
        })
        .await;
    plant
        .ledger_balances("rtu-gw", &["modbus:meter-1", "modbus:meter-2"])
        .await;
    assert!(plant.agent_running(), "failed reads never stop the agent");
    plant.stop().await;
}

fn dlt645_config(plant: &Plant, device: &Path) -> String {
    let meter = |address: &str, protocol: &str, point: &str| {
        format!(
            "\n[[dlt645]]\nserial = \"bus-1\"\nprotocol = \"{protocol}\"\naddress = \"{address}\"\nenterprise = \"{}\"\n\
             quantity = \"forward\"\npoint = \"{point}\"\npoll_ms = 200\ntimeout_ms = 1000\nretries = 0\n",
            E[0]
        )
    };
    plant.agent_header("dlt-gw")
        + &format!(
            "\n[[serial]]\nname = \"bus-1\"\ndevice = \"{}\"\nbaud_rate = 2400\nparity = \"none\"\n",
            device.display()
        )
        + &meter("202311230002", "2007", "N2")
        + &meter("199700000001", "1997", "O1")
}

/// A DL/T 645-2007 and a DL/T 645-1997 meter on the agent's own port: the
/// 2007 total wraps at 999999.99 kWh, the pty pair disappears and comes
/// back, then the 2007 meter is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlt645_2007_and_1997_meters_on_a_serial_port_survive_the_port_going_away() {
    let mut plant = Plant::start(true).await;
    let dir = plant.dir.path().to_owned();
    let mut line = SerialPair::start(&dir, "bus645");
    let mut bus = Dlt645Bus::start_serial(
        &dir,
        &line.meter_end,
        &[
            ("202311230002", "00010000", 999_990.0),
            ("199700000001", "9010", 1_234.56),
        ],
    );
    let config = dlt645_config(&plant, &line.agent_end);

    let out = check(&dir, &config).await;
    let port = format!("{} 2400/8N1", line.agent_end.display());
    line_with(
        &out,
        &["dlt645", &port, "meter 202311230002 forward", "ok", "[N2] = 999990 kWh"],
    );
    line_with(
        &out,
        &[
            "dlt645",
            &port,
            "meter 199700000001 forward",
            "ok",
            "[O1] = 1234.56 kWh",
        ],
    );

    plant.start_agent(&config);
    plant.wait_latest("N2", 999_990.0).await;
    plant.wait_latest("O1", 1_234.56).await;

    bus.set("202311230002", "00010000", 5.0);
    plant.wait_latest("N2", 1_000_005.0).await;
    assert_eq!(plant.enterprise().await["counter_resets"], 0);

    // The port goes away (socat killed: both ptys vanish, the peer with
    // them); the agent counts failed opens until a new pair appears.
    let source = "dlt645:serial:bus-1";
    let before = plant
        .wait_source("dlt-gw", source, "a read", |s| count(s, "readings") > 0)
        .await;
    line.stop();
    bus.stop();
    bus.set("199700000001", "9010", 1_300.25);
    plant
        .wait_source("dlt-gw", source, "failed opens while the port is gone", |s| {
            count(s, "connect_failures") > count(&before, "connect_failures")
        })
        .await;
    line.restart();
    bus.restart();
    plant.wait_latest("O1", 1_300.25).await;

    bus.set("202311230002", "00010000", 3.0);
    plant.wait_latest("N2", 3.0).await;
    assert_eq!(plant.enterprise().await["counter_resets"], 1);

    bus.stop();
    let down = plant
        .wait_source("dlt-gw", source, "", |s| count(s, "failed_reads") > 0)
        .await;
    plant
        .wait_source("dlt-gw", source, "failed reads after the final stop", |s| {
            count(s, "failed_reads") > count(&down, "failed_reads")
        })
        .await;
    plant.ledger_balances("dlt-gw", &[source]).await;
    assert!(plant.agent_running(), "failed reads never stop the agent");
    plant.stop().await;
}

//! End-to-end test of the Modbus source: a real Modbus TCP server (pymodbus,
//! `peers/modbus_meter.py`) as a separate process, the agent and the
//! aggregator in-process over the embedded broker, and the figures checked
//! through the aggregator's HTTP API.
//!
//! The meter's registers, and what the aggregator must show for them:
//! | point | table, register | type, layout | scale | words → value |
//! |-------|-----------------|--------------|-------|---------------|
//! | M1 | holding 0 | u32, big words | 1 | 0x0001 0xE240 → 123 456 kWh |
//! | M2 | input 10 | u32, little words | 0.01 | 0x5678 0x1234 → 0x12345678 × 0.01 kWh |
//! | P1 | holding 20 | f32, big words, little bytes | 1 | 0x9A44 0x0050 → 1234.5 kW |
//! | P2 | holding 40 | f32 | 1 | 0x7FC0 0x0000 → NaN, never sent |
//! | M3 | holding 30 | u16 | 0.1 | varied: rollover, then a replaced meter |

use std::time::Duration;
use zonesync_e2e::dataset::E;
use zonesync_e2e::peers::ModbusMeter;
use zonesync_e2e::plant::{latest_of, Plant};

/// The `[[modbus]]` tables for one meter at `meter_port` with the points above.
fn device(meter_port: u16) -> String {
    format!(
        r#"
[[modbus]]
name = "meter-1"
host = "127.0.0.1"
port = {meter_port}
unit_id = 1
enterprise = "{e1}"
poll_ms = 100
timeout_ms = 300
retries = 1

[[modbus.points]]
point = "M1"
indicator = "electricity"
register = 0
data_type = "u32"
unit = "kWh"

[[modbus.points]]
point = "M2"
indicator = "electricity"
table = "input"
register = 10
data_type = "u32"
word_order = "little"
scale = 0.01
unit = "kWh"

[[modbus.points]]
point = "P1"
indicator = "active_power"
register = 20
data_type = "f32"
byte_order = "little"
unit = "kW"

[[modbus.points]]
point = "P2"
indicator = "active_power"
register = 40
data_type = "f32"
unit = "kW"

[[modbus.points]]
point = "M3"
indicator = "electricity"
register = 30
data_type = "u16"
scale = 0.1
unit = "kWh"
"#,
        e1 = E[0],
    )
}

/// The plant (broker, aggregator, agent) and the meter it reads.
async fn start() -> (Plant, ModbusMeter) {
    let mut plant = Plant::start(false).await;
    let mut meter = ModbusMeter::start(plant.dir.path());
    meter.set_holding(0, &[0x0001, 0xE240]);
    meter.set_input(10, &[0x5678, 0x1234]);
    meter.set_holding(20, &[0x9A44, 0x0050]);
    meter.set_holding(40, &[0x7FC0, 0x0000]);
    meter.set_holding(30, &[65_000]);
    let config = plant.agent_header("modbus-gw") + &device(meter.port);
    plant.start_agent(&config);
    (plant, meter)
}

/// The value the agent sends for a u16 register with scale 0.1 after `wraps` rollovers.
fn m3(raw: u16, wraps: u32) -> f64 {
    (f64::from(raw) + f64::from(wraps) * 65_536.0) * 0.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_decode_roll_over_and_show_a_replaced_meter() {
    let (plant, mut meter) = start().await;

    // Every layout decodes to the value the meter holds.
    plant.wait_latest("M3", m3(65_000, 0)).await;
    plant.wait_latest("M1", 123_456.0).await;
    plant.wait_latest("M2", f64::from(0x1234_5678u32) * 0.01).await;
    plant.wait_latest("P1", 1234.5).await;
    let e = plant.enterprise().await;
    assert_eq!(latest_of(&e, "P2"), None, "a NaN register is never sent: {e}");
    assert_eq!(e["latest"].as_array().map(Vec::len), Some(4), "{e}");
    assert_eq!(e["counter_resets"], 0, "{e}");

    // Near the top of u16, then past it: the value sent keeps growing.
    meter.set_holding(30, &[65_530]);
    plant.wait_latest("M3", m3(65_530, 0)).await;
    meter.set_holding(30, &[20]);
    plant.wait_latest("M3", m3(20, 1)).await;
    assert!(m3(20, 1) > m3(65_530, 0));
    meter.set_holding(30, &[40_000]);
    plant.wait_latest("M3", m3(40_000, 1)).await;
    assert_eq!(
        plant.enterprise().await["counter_resets"],
        0,
        "a rollover is not a reset"
    );

    // A fall from the middle of the range is a replaced meter: sent as read,
    // and the aggregator books it as a reset.
    meter.set_holding(30, &[100]);
    plant.wait_latest("M3", m3(100, 0)).await;
    let e = plant.enterprise().await;
    assert_eq!(e["counter_resets"], 1, "{e}");
    assert_eq!(e["late_readings"], 0, "{e}");
    plant.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_outage_sends_nothing_and_readings_resume() {
    let (plant, mut meter) = start().await;
    plant.wait_latest("M1", 123_456.0).await;

    meter.stop();
    // Let batches already on their way arrive, then expect no more.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = plant.enterprise().await["readings"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = plant.enterprise().await;
    assert_eq!(
        during["readings"].as_u64(),
        Some(before),
        "no readings while the meter is down: {during}"
    );
    assert!(plant.agent_running(), "failed polls do not stop the agent");

    // The registers moved while the meter was away; the next poll after it
    // is back reconnects and reads them.
    meter.set_holding(0, &[0x0002, 0x0000]);
    meter.set_holding(30, &[65_100]);
    meter.restart();
    plant.wait_latest("M1", 131_072.0).await;
    plant.wait_latest("M3", m3(65_100, 0)).await;
    let after = plant.enterprise().await;
    assert!(after["readings"].as_u64().unwrap() > before, "{after}");
    assert_eq!(after["counter_resets"], 0, "{after}");
    plant.stop().await;
}

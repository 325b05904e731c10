//! End-to-end test of the DL/T 645 source: a bus of meters behind a
//! transparent TCP gateway (the PyPI `dlt645` library's meter service,
//! `peers/dlt645_meter.py`) as a separate process, the agent and the
//! aggregator in-process over the embedded broker, and the figures checked
//! through the aggregator's HTTP API.
//!
//! | meter (nameplate) | total (DI) | point | on the bus |
//! |-------------------|------------|-------|------------|
//! | 202311230001 | combined (00000000) | M1-C | 123456.78 kWh |
//! | 202311230001 | forward (00010000) | M1-F | 120000.50 kWh |
//! | 202311230002 | forward (00010000) | M2 | 999990.00 kWh, then wraps to 5.00, then a new meter at 3.00 |
//! | 202311230003 | forward (00010000) | M3 | not on the bus: never answers |

use zonesync_e2e::dataset::E;
use zonesync_e2e::peers::Dlt645Bus;
use zonesync_e2e::plant::{latest_of, Plant};

fn meters(gateway: u16) -> String {
    let meter = |address: &str, quantity: &str, point: &str| {
        format!(
            "\n[[dlt645]]\ngateway = \"127.0.0.1:{gateway}\"\naddress = \"{address}\"\nenterprise = \"{}\"\n\
             quantity = \"{quantity}\"\npoint = \"{point}\"\npoll_ms = 200\ntimeout_ms = 500\nretries = 0\n",
            E[0]
        )
    };
    [
        meter("202311230001", "combined", "M1-C"),
        meter("202311230001", "forward", "M1-F"),
        meter("202311230002", "forward", "M2"),
        meter("202311230003", "forward", "M3"),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_on_one_gateway_are_read_in_turn_across_a_wrap_and_a_replacement() {
    let mut plant = Plant::start(false).await;
    let mut bus = Dlt645Bus::start(plant.dir.path());
    bus.set("202311230001", "00000000", 123_456.78);
    bus.set("202311230001", "00010000", 120_000.5);
    bus.set("202311230002", "00010000", 999_990.0);
    let config = plant.agent_header("dlt645-gw") + &meters(bus.port);
    plant.start_agent(&config);

    // Every total decodes to what the meter holds; the silent meter costs
    // only its own readings.
    plant.wait_latest("M1-C", 123_456.78).await;
    plant.wait_latest("M1-F", 120_000.5).await;
    plant.wait_latest("M2", 999_990.0).await;
    let e = plant.enterprise().await;
    assert_eq!(
        latest_of(&e, "M3"),
        None,
        "a meter that never answers sends nothing: {e}"
    );
    assert_eq!(e["latest"].as_array().map(Vec::len), Some(3), "{e}");

    // 999990.00 → 5.00 kWh is the eight-digit register wrapping: the value
    // sent keeps growing, and it is not a reset.
    bus.set("202311230002", "00010000", 5.0);
    plant.wait_latest("M2", 1_000_005.0).await;
    assert_eq!(plant.enterprise().await["counter_resets"], 0);

    // 5.00 → 3.00 is no wrap: a replaced meter, sent as read, booked as a reset.
    bus.set("202311230002", "00010000", 3.0);
    plant.wait_latest("M2", 3.0).await;
    let e = plant.enterprise().await;
    assert_eq!(e["counter_resets"], 1, "{e}");

    // The other meter's totals moved meanwhile and are still read.
    bus.set("202311230001", "00010000", 120_001.25);
    plant.wait_latest("M1-F", 120_001.25).await;
    assert!(plant.agent_running(), "failed reads never stop the agent");
    plant.stop().await;
}

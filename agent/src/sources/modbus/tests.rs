//! Tests of the Modbus source: configuration checks, and the poll loop
//! against a minimal in-process Modbus TCP responder (the cross-process test
//! against pymodbus is `tests/modbus.rs`).

use super::*;
use crate::shutdown;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use zonesync_proto::{AgentId, Batch, Catalog, Limits, ZoneId};

const ENTERPRISE: &str = "91350100M000100Y43";

fn validator() -> Validator {
    Validator::new(Catalog::builtin().unwrap(), Limits::default())
}

fn device_toml(port: u16, extra_points: &str) -> String {
    format!(
        r#"
name = "meter-1"
host = "127.0.0.1"
port = {port}
enterprise = "{ENTERPRISE}"
poll_ms = 20
timeout_ms = 150
retries = 1
[[points]]
point = "M1"
indicator = "electricity"
register = 0
data_type = "u16"
unit = "kWh"
{extra_points}
"#
    )
}

fn config(port: u16, extra_points: &str) -> ModbusConfig {
    toml::from_str(&device_toml(port, extra_points)).unwrap()
}

/// Registers by (function code, address), and whether to stay silent.
#[derive(Default)]
struct FakeMeter {
    regs: Mutex<BTreeMap<(u8, u16), u16>>,
    silent: AtomicBool,
    connections: AtomicU64,
}

impl FakeMeter {
    fn set(&self, fc: u8, addr: u16, words: &[u16]) {
        let mut r = self.regs.lock().unwrap();
        for (i, w) in words.iter().enumerate() {
            r.insert((fc, addr + i as u16), *w);
        }
    }
}

/// A Modbus TCP responder for functions 3 and 4, just enough for the client.
async fn fake_meter(meter: Arc<FakeMeter>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let meter = meter.clone();
            meter.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut req = [0u8; 12];
                while s.read_exact(&mut req).await.is_ok() {
                    if meter.silent.load(Ordering::SeqCst) {
                        continue;
                    }
                    let (fc, addr, n) = (
                        req[7],
                        u16::from_be_bytes([req[8], req[9]]),
                        u16::from_be_bytes([req[10], req[11]]),
                    );
                    let words: Option<Vec<u16>> = {
                        let r = meter.regs.lock().unwrap();
                        (0..n).map(|i| r.get(&(fc, addr + i)).copied()).collect()
                    };
                    let pdu = match words {
                        Some(w) => {
                            let mut pdu = vec![fc, (2 * n) as u8];
                            pdu.extend(w.iter().flat_map(|w| w.to_be_bytes()));
                            pdu
                        }
                        None => vec![fc | 0x80, 0x02],
                    };
                    let mut resp = req[..4].to_vec();
                    resp.extend(((pdu.len() + 1) as u16).to_be_bytes());
                    resp.push(req[6]);
                    resp.extend(pdu);
                    if s.write_all(&resp).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn readings_in(outbox: &Outbox) -> Vec<Reading> {
    let (a, z) = (AgentId::parse("gw").unwrap(), ZoneId::parse("z").unwrap());
    let mut out = Vec::new();
    loop {
        let sealed = outbox.seal(1000, &a, &z, 1, Utc::now()).unwrap();
        if sealed.is_empty() {
            return out;
        }
        for s in sealed {
            let b: Batch = serde_json::from_slice(&s.payload).unwrap();
            out.extend(b.readings);
        }
    }
}

/// Runs a device until `until` holds for its stats, then shuts it down.
async fn run_until(
    device: ModbusDevice,
    outbox: Arc<Outbox>,
    until: impl Fn(&ModbusStatsSnapshot) -> bool,
) -> ModbusStatsSnapshot {
    let stats = device.stats.clone();
    let (trigger, signal) = shutdown::channel();
    let task = tokio::spawn(device.run(outbox, signal));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !until(&stats.snapshot()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never got there: {:?}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops promptly on shutdown")
        .unwrap()
        .unwrap();
    stats.snapshot()
}

#[test]
fn defaults_and_unknown_keys() {
    let c = config(502, "");
    assert_eq!((c.unit_id, c.retries), (1, 1));
    let p = &c.points[0];
    assert_eq!(
        (p.table, p.word_order, p.byte_order, p.scale, p.counter),
        (Table::Holding, Order::Big, Order::Big, 1.0, None)
    );
    let c: ModbusConfig = toml::from_str(&format!(
        "name = \"m\"\nhost = \"h\"\nenterprise = \"{ENTERPRISE}\"\npoints = []\n"
    ))
    .unwrap();
    assert_eq!((c.port, c.poll_ms, c.timeout_ms, c.retries), (502, 60_000, 1_000, 2));
    assert!(toml::from_str::<ModbusConfig>(&device_toml(502, "").replace("retries", "retry")).is_err());
    assert!(
        toml::from_str::<ModbusConfig>(&device_toml(502, "").replace("register = 0", "register = 0\nregiser = 1"))
            .is_err(),
        "unknown point keys are refused"
    );
    assert!(toml::from_str::<ModbusConfig>(&device_toml(502, "").replace("\"u16\"", "\"u24\"")).is_err());
}

#[test]
fn counter_default_follows_the_catalog() {
    let v = validator();
    let extra = "[[points]]\npoint = \"P1\"\nindicator = \"active_power\"\nregister = 1\ndata_type = \"f32\"\nunit = \"kW\"\n\
                 [[points]]\npoint = \"M2\"\nindicator = \"electricity\"\nregister = 3\ndata_type = \"u32\"\nunit = \"MWh\"\ncounter = false\n";
    let d = config(502, extra).check(&v).unwrap();
    assert_eq!(
        d.points.iter().map(|p| p.counter).collect::<Vec<_>>(),
        vec![true, false, false]
    );
}

#[test]
fn bad_configurations_are_refused_at_start() {
    let v = validator();
    let refused = |from: &str, to: &str| {
        let c: ModbusConfig = toml::from_str(&device_toml(502, "").replace(from, to)).unwrap();
        c.check(&v).err().unwrap_or_else(|| panic!("{to:?} accepted"))
    };
    assert!(matches!(
        refused("\"electricity\"", "\"electricty\""),
        ModbusConfigError::Point { .. }
    ));
    assert!(matches!(
        refused("\"electricity\"", "\"value_added\""),
        ModbusConfigError::Point { .. }
    ));
    assert!(matches!(refused("\"kWh\"", "\"kW\""), ModbusConfigError::Point { .. }));
    assert!(matches!(
        refused(
            "register = 0\ndata_type = \"u16\"",
            "register = 65535\ndata_type = \"u32\""
        ),
        ModbusConfigError::Point { .. }
    ));
    assert!(matches!(
        refused("register = 0", "register = 0\nscale = -1.0"),
        ModbusConfigError::Point { .. }
    ));
    assert!(matches!(
        refused("register = 0", "register = 0\nscale = 0.0"),
        ModbusConfigError::Point { .. }
    ));
    assert!(matches!(
        refused("point = \"M1\"", "point = \"\""),
        ModbusConfigError::Point { .. }
    ));
    assert!(matches!(
        refused("host = \"127.0.0.1\"", "host = \"\""),
        ModbusConfigError::Device { .. }
    ));
    assert!(matches!(
        refused("timeout_ms = 150", "timeout_ms = 0"),
        ModbusConfigError::Device { .. }
    ));
    // A gauge may have a negative scale (a current transformer wired backwards).
    let c: ModbusConfig = toml::from_str(&device_toml(502, "").replace(
        "indicator = \"electricity\"\nregister = 0\ndata_type = \"u16\"\nunit = \"kWh\"",
        "indicator = \"active_power\"\nregister = 0\ndata_type = \"i32\"\nunit = \"kW\"\nscale = -0.001",
    ))
    .unwrap();
    assert!(c.check(&v).is_ok());

    let a = config(502, "");
    let mut b = config(502, "");
    assert!(matches!(
        check_all(&[a.clone(), b.clone()], &v),
        Err(ModbusConfigError::DuplicateDevice(_))
    ));
    b.name = "meter-2".into();
    assert!(matches!(
        check_all(&[a.clone(), b.clone()], &v),
        Err(ModbusConfigError::DuplicatePoint { .. })
    ));
    b.points[0].point = "M9".into();
    assert_eq!(check_all(&[a, b], &v).unwrap().len(), 2);
}

#[test]
fn the_commented_example_is_valid_once_uncommented() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.toml");
    let text = std::fs::read_to_string(p).unwrap();
    let block: String = text
        .lines()
        .skip_while(|l| *l != "# [[modbus]]")
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .map(|l| format!("{l}\n"))
        .collect();
    #[derive(Deserialize)]
    struct Example {
        modbus: Vec<ModbusConfig>,
    }
    let ex: Example = toml::from_str(&block).unwrap();
    let devices = check_all(&ex.modbus, &validator()).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(
        devices[0].points.iter().map(|p| p.counter).collect::<Vec<_>>(),
        vec![true, false]
    );
}

#[test]
fn loads_through_the_agent_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent.toml");
    let text = format!(
        "agent_id = \"gw-1\"\nzone = \"z\"\n[[modbus]]\n{}",
        device_toml(1502, "").replace("[[points]]", "[[modbus.points]]")
    );
    std::fs::write(&p, &text).unwrap();
    let c = crate::AgentConfig::load(&p).unwrap();
    assert_eq!(c.modbus.len(), 1);
    assert_eq!(
        (c.modbus[0].port, c.modbus[0].points[0].data_type),
        (1502, DataType::U16)
    );
    std::fs::write(&p, text.replace("data_type", "datatype")).unwrap();
    assert!(crate::AgentConfig::load(&p).is_err(), "unknown point keys are refused");
}

#[test]
fn retry_backoff_is_short_and_bounded() {
    let t = Duration::from_millis(1000);
    assert_eq!(retry_backoff(1, t), Duration::from_millis(100));
    assert_eq!(retry_backoff(3, t), Duration::from_millis(400));
    assert_eq!(retry_backoff(30, t), t);
    assert_eq!(retry_backoff(2, Duration::from_millis(150)), Duration::from_millis(150));
}

#[tokio::test]
async fn polls_every_type_and_a_rollover_survives_a_restart() {
    let meter = Arc::new(FakeMeter::default());
    meter.set(3, 0, &[65_000]);
    meter.set(4, 10, &[0x5678, 0x1234]); // u32 0x12345678, little word order
    meter.set(3, 20, &[0x449A, 0x5000]); // f32 1234.5
    meter.set(3, 30, &[0x7FC0, 0x0000]); // f32 NaN: never sent
    let port = fake_meter(meter.clone()).await;
    let extra = "[[points]]\npoint = \"M2\"\nindicator = \"electricity\"\nregister = 10\ntable = \"input\"\ndata_type = \"u32\"\n\
                 word_order = \"little\"\nscale = 0.01\nunit = \"kWh\"\n\
                 [[points]]\npoint = \"P1\"\nindicator = \"active_power\"\nregister = 20\ndata_type = \"f32\"\nunit = \"kW\"\n\
                 [[points]]\npoint = \"P2\"\nindicator = \"active_power\"\nregister = 30\ndata_type = \"f32\"\nunit = \"kW\"\n";
    let cfg = config(port, extra);
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());

    let s = run_until(cfg.check(&validator()).unwrap(), outbox.clone(), |s| s.readings >= 3).await;
    assert_eq!((s.failed_reads, s.timeouts, s.exceptions), (0, 0, 0));
    assert!(s.refused >= 1, "the NaN point is refused: {s:?}");
    let first = readings_in(&outbox);
    let latest = |rs: &[Reading], point: &str| rs.iter().rev().find(|r| r.point == point).map(|r| r.value);
    assert_eq!(latest(&first, "M1"), Some(65_000.0));
    assert_eq!(latest(&first, "M2"), Some(f64::from(0x1234_5678u32) * 0.01));
    assert_eq!(latest(&first, "P1"), Some(1234.5));
    assert_eq!(latest(&first, "P2"), None);
    assert!(first.iter().all(|r| r.ts.is_some() && r.period.is_none()));

    // The register wraps while the agent is down; the cursor in the outbox
    // remembers where it was, so the value sent keeps growing.
    meter.set(3, 0, &[25]);
    let s = run_until(cfg.check(&validator()).unwrap(), outbox.clone(), |s| s.readings >= 3).await;
    assert_eq!((s.rollovers, s.replacements), (1, 0));
    let second = readings_in(&outbox);
    assert_eq!(latest(&second, "M1"), Some(65_561.0));

    // A fall that is not from the top of the range is a replaced meter: sent
    // as read, wraps forgotten.
    meter.set(3, 0, &[10]);
    let s = run_until(cfg.check(&validator()).unwrap(), outbox.clone(), |s| s.readings >= 3).await;
    assert_eq!((s.rollovers, s.replacements), (0, 1));
    assert_eq!(latest(&readings_in(&outbox), "M1"), Some(10.0));
}

#[tokio::test]
async fn an_exception_loses_one_point_and_keeps_the_connection() {
    let meter = Arc::new(FakeMeter::default());
    meter.set(3, 0, &[7]);
    let port = fake_meter(meter.clone()).await;
    let extra = "[[points]]\npoint = \"M2\"\nindicator = \"electricity\"\nregister = 500\ndata_type = \"u16\"\nunit = \"kWh\"\n";
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());
    let device = config(port, extra).check(&validator()).unwrap();
    let s = run_until(device, outbox.clone(), |s| s.readings >= 2).await;
    assert!(s.exceptions >= 2 && s.failed_reads >= 2, "{s:?}");
    assert_eq!((s.timeouts, s.connect_failures), (0, 0));
    assert_eq!(
        meter.connections.load(Ordering::SeqCst),
        1,
        "one connection for every poll"
    );
    assert!(readings_in(&outbox).iter().all(|r| r.point == "M1" && r.value == 7.0));
}

#[tokio::test]
async fn a_silent_meter_times_out_and_sends_nothing() {
    let meter = Arc::new(FakeMeter {
        silent: AtomicBool::new(true),
        ..FakeMeter::default()
    });
    let port = fake_meter(meter).await;
    let extra =
        "[[points]]\npoint = \"M2\"\nindicator = \"electricity\"\nregister = 1\ndata_type = \"u16\"\nunit = \"kWh\"\n";
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());
    let device = config(port, extra).check(&validator()).unwrap();
    let s = run_until(device, outbox.clone(), |s| s.failed_reads >= 2).await;
    // retries = 1: two timed-out attempts on M1, then M2 is skipped.
    assert_eq!((s.timeouts, s.failed_reads, s.readings), (2, 2, 0), "{s:?}");
    assert_eq!(outbox.pending_items(), 0);
}

#[tokio::test]
async fn nothing_listening_counts_connect_failures() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());
    let device = config(port, "").check(&validator()).unwrap();
    let s = run_until(device, outbox.clone(), |s| s.polls >= 3).await;
    assert!(s.connect_failures >= 4 && s.readings == 0, "{s:?}");
}

#[tokio::test]
async fn shutdown_interrupts_a_hanging_read() {
    let meter = Arc::new(FakeMeter {
        silent: AtomicBool::new(true),
        ..FakeMeter::default()
    });
    let port = fake_meter(meter).await;
    let mut cfg = config(port, "");
    cfg.timeout_ms = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());
    let start = std::time::Instant::now();
    let s = run_until(cfg.check(&validator()).unwrap(), outbox, |s| s.polls >= 1).await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(s.timeouts, 0);
}

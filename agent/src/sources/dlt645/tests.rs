//! Counter handling, configuration checks, and the I/O path against a fake
//! gateway on a loopback socket that answers with hand-built frames (the real
//! meter peer is in `tests/dlt645.rs`).

use super::*;
use crate::shutdown;
use tokio::net::TcpListener;
use zonesync_proto::{Catalog, Limits};

fn validator() -> Validator {
    Validator::new(Catalog::builtin().unwrap(), Limits::default())
}

fn cfg(gateway: &str, address: &str, quantity: Quantity) -> Dlt645Config {
    toml::from_str(&format!(
        "gateway = \"{gateway}\"\naddress = \"{address}\"\nenterprise = \"91350100M000100Y43\"\nquantity = \"{}\"\n\
         point = \"{address}-{}\"\ntimeout_ms = 300\nretries = 0\n",
        format!("{quantity:?}").to_lowercase(),
        format!("{quantity:?}").to_lowercase()
    ))
    .unwrap()
}

#[test]
fn bcd_counter_rolls_over_at_a_million_kwh_and_detects_replacement() {
    let (s, c) = BcdCounter::advance(None, 99_999_000);
    assert_eq!((s.kwh(), c), (999_990.0, Change::First));
    // 999990.00 → 000005.00 kWh: top tenth to bottom tenth of 10^8 hundredths.
    let (s, c) = BcdCounter::advance(Some(&s), 500);
    assert_eq!(c, Change::Rollover);
    assert_eq!(s.kwh(), 1_000_005.0);
    let (s, c) = BcdCounter::advance(Some(&s), 700);
    assert_eq!((s.kwh(), c), (1_000_007.0, Change::Rising));
    // 7.00 → 3.00 kWh is no wrap: a new meter, sent as read.
    let (s, c) = BcdCounter::advance(Some(&s), 300);
    assert_eq!(
        (s, c),
        (
            BcdCounter { last: 300, wraps: 0 },
            Change::Replacement {
                previous: crate::sources::modbus::Raw::Unsigned(700)
            }
        )
    );
    // The edges: 90 000 000 is in the top tenth, 9 999 999 in the bottom one.
    assert_eq!(
        BcdCounter::advance(
            Some(&BcdCounter {
                last: 90_000_000,
                wraps: 0
            }),
            9_999_999
        )
        .1,
        Change::Rollover
    );
    assert!(matches!(
        BcdCounter::advance(
            Some(&BcdCounter {
                last: 89_999_999,
                wraps: 0
            }),
            0
        )
        .1,
        Change::Replacement { .. }
    ));
}

#[test]
fn config_is_checked_and_grouped_by_gateway() {
    let v = validator();
    let meters = vec![
        cfg("127.0.0.1:9000", "000000000001", Quantity::Forward),
        cfg("127.0.0.1:9000", "000000000002", Quantity::Forward),
        cfg("127.0.0.1:9001", "000000000001", Quantity::Reverse),
    ];
    let gws = check_all(&meters, &v).unwrap();
    assert_eq!(gws.len(), 2);
    assert_eq!(gws[0].meters.len(), 2);
    assert_eq!(gws[0].source_name(), "dlt645:127.0.0.1:9000");

    let twice = vec![meters[0].clone(), meters[0].clone()];
    assert!(matches!(
        check_all(&twice, &v),
        Err(Dlt645ConfigError::Duplicate { .. })
    ));
    let mut gauge = meters[0].clone();
    gauge.indicator = "active_power".into();
    let err = check_all(&[gauge], &v).unwrap_err().to_string();
    assert!(err.contains("must be a counter measured in kWh"), "{err}");
    let mut no_port = meters[0].clone();
    no_port.gateway = "10.0.0.1".into();
    assert!(check_all(&[no_port], &v).unwrap_err().to_string().contains("host:port"));
    assert!(toml::from_str::<Dlt645Config>(
        "gateway = \"a:1\"\naddress = \"12\"\nenterprise = \"91350100M000100Y43\"\n"
    )
    .is_err());
    assert!(toml::from_str::<Dlt645Config>(
        "gateway = \"a:1\"\naddress = \"000000000001\"\nenterprise = \"91350100M000100Y43\"\nbaud = 1\n"
    )
    .is_err());
}

/// An answer from `address` (nameplate digits) for `di` with value bytes `v0..v3`, built here byte by byte.
fn answer(address: &str, control: u8, di: u32, value: [u8; 4]) -> Vec<u8> {
    let a = Address::parse(address).unwrap().wire();
    let mut f = vec![0xFE, 0xFE, 0x68];
    f.extend_from_slice(&a);
    f.extend_from_slice(&[0x68, control, 8]);
    f.extend(
        di.to_le_bytes()
            .iter()
            .chain(value.iter())
            .map(|b| b.wrapping_add(0x33)),
    );
    let cs = f[2..].iter().fold(0u8, |s, b| s.wrapping_add(*b));
    f.extend_from_slice(&[cs, 0x16]);
    f
}

/// A fake gateway: meter 000000000001 answers 1234.56 kWh forward, preceded
/// by line noise and an answer from another meter; meter 000000000002 never
/// answers; meter 000000000003 refuses with error byte 0x02.
async fn fake_gateway() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 256];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Scan::Frame { frame, used } = scan(&buf) else {
                        continue;
                    };
                    buf.drain(..used);
                    let reply = match frame.address.to_string().as_str() {
                        "000000000001" => {
                            let mut r = vec![0x00, 0x68, 0x13];
                            r.extend(answer("000000000009", 0x91, 0x0001_0000, [0, 0, 0, 0]));
                            r.extend(answer("000000000001", 0x91, 0x0001_0000, [0x56, 0x34, 0x12, 0x00]));
                            r
                        }
                        "000000000003" => {
                            let a = frame.address.wire();
                            let mut r = vec![0x68];
                            r.extend_from_slice(&a);
                            r.extend_from_slice(&[0x68, 0xD1, 0x01, 0x35]);
                            let cs = r.iter().fold(0u8, |s, b| s.wrapping_add(*b));
                            r.extend_from_slice(&[cs, 0x16]);
                            r
                        }
                        _ => continue,
                    };
                    // Split the answer to exercise reassembly.
                    let (a, b) = reply.split_at(reply.len() / 2);
                    if s.write_all(a).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if s.write_all(b).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn one_connection_reads_each_meter_in_turn() {
    let (gw, task) = fake_gateway().await;
    let meters = vec![
        cfg(&gw, "000000000001", Quantity::Forward),
        cfg(&gw, "000000000002", Quantity::Forward),
        cfg(&gw, "000000000003", Quantity::Forward),
    ];
    let gws = check_all(&meters, &validator()).unwrap();
    let (_t, signal) = shutdown::channel();
    let rows = gws[0].probe(signal).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].result.as_ref().unwrap()[0].value, 1234.56);
    assert_eq!(rows[1].result.as_ref().unwrap_err(), "no answer in time");
    let refused = rows[2].result.as_ref().unwrap_err();
    assert!(
        refused.contains("0x02") && refused.contains("no data requested"),
        "{refused}"
    );
    let s = gws[0].stats.snapshot();
    assert_eq!(s["timeouts"], 1);
    assert_eq!(s["meter_errors"], 1);
    assert_eq!(s["connect_failures"], 0, "one connection for all three");
    // The noise before the first answer (a stray 0x68) and the other meter's answer.
    assert_eq!(s["bad_frames"], 2);
    task.abort();
}

#[tokio::test]
async fn an_unreachable_gateway_skips_the_rest_of_the_round() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = format!("127.0.0.1:{port}");
    let meters = vec![
        cfg(&gw, "000000000001", Quantity::Forward),
        cfg(&gw, "000000000002", Quantity::Forward),
    ];
    let gws = check_all(&meters, &validator()).unwrap();
    let (_t, signal) = shutdown::channel();
    let rows = gws[0].probe(signal).await;
    assert!(rows[0]
        .result
        .as_ref()
        .unwrap_err()
        .starts_with("connect to the gateway"));
    assert_eq!(
        rows[1].result.as_ref().unwrap_err(),
        "not tried: the gateway did not answer earlier in this round"
    );
    assert_eq!(gws[0].stats.snapshot()["connect_failures"], 1);
}

/// The commented `[[dlt645]]` block of `deploy/examples/agent.toml`, uncommented.
pub(crate) fn example_block(first: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.toml");
    let text = std::fs::read_to_string(p).unwrap();
    text.lines()
        .skip_while(|l| *l != first)
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_commented_example_is_valid_once_uncommented() {
    #[derive(serde::Deserialize)]
    struct Example {
        dlt645: Vec<Dlt645Config>,
    }
    let ex: Example = toml::from_str(&example_block("# [[dlt645]]")).unwrap();
    let gws = check_all(&ex.dlt645, &validator()).unwrap();
    assert_eq!(gws.len(), 1, "both meters on one gateway");
    assert_eq!(gws[0].meters.len(), 2);
    assert_eq!(
        gws[0].meters[0].cfg.address.wire(),
        [0x01, 0x00, 0x23, 0x11, 0x23, 0x20]
    );
}

#[cfg(feature = "serial")]
#[test]
fn serial_buses_are_keyed_by_port_and_each_edition_is_checked() {
    let v = validator();
    let on_port = |port: &str, address: &str, protocol: &str, quantity: &str| -> Dlt645Config {
        toml::from_str(&format!(
            "serial = \"{port}\"\nprotocol = \"{protocol}\"\naddress = \"{address}\"\n\
             enterprise = \"91350100M000100Y43\"\nquantity = \"{quantity}\"\n"
        ))
        .unwrap()
    };
    let meters = vec![
        on_port("bus-1", "000000000001", "2007", "combined"),
        on_port("bus-1", "000000000002", "1997", "forward"),
        cfg("127.0.0.1:9000", "000000000001", Quantity::Forward),
    ];
    let gws = check_all(&meters, &v).unwrap();
    let names: Vec<String> = gws.iter().map(Dlt645Gateway::source_name).collect();
    assert_eq!(names, ["dlt645:127.0.0.1:9000", "dlt645:serial:bus-1"]);
    assert_eq!(gws[1].serial_port(), Some("bus-1"));
    assert_eq!(gws[1].meters.len(), 2, "one bus, one task, meters read in turn");

    let e = check_all(&[on_port("bus-1", "000000000002", "1997", "combined")], &v)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1997 has no Combined total"), "{e}");
    let mut both = on_port("bus-1", "000000000001", "2007", "forward");
    both.gateway = "10.0.0.1:8899".into();
    let e = check_all(&[both], &v).unwrap_err().to_string();
    assert!(e.contains("not both"), "{e}");
    assert!(toml::from_str::<Dlt645Config>(
        "serial = \"a\"\nprotocol = \"2001\"\naddress = \"000000000001\"\nenterprise = \"91350100M000100Y43\"\n"
    )
    .is_err());

    // Wiring to the `[[serial]]` tables: an unknown port is refused; so is a
    // port that Modbus RTU devices use too.
    use crate::sources::serial::{attach, SerialConfig, SerialConfigError};
    let port: SerialConfig = toml::from_str("name = \"bus-1\"\ndevice = \"/dev/ttyS1\"\n").unwrap();
    let ports = std::collections::BTreeMap::from([("bus-1".to_owned(), port)]);
    let (_, buses) = attach(&ports, vec![], gws.clone()).unwrap();
    assert_eq!(buses[1].endpoint(), "/dev/ttyS1 9600/8E1");
    assert_eq!(buses[0].endpoint(), "127.0.0.1:9000");
    assert!(matches!(
        attach(&Default::default(), vec![], gws.clone()),
        Err(SerialConfigError::Unknown { .. })
    ));
    let rtu: crate::sources::modbus::ModbusConfig = toml::from_str(
        "name = \"m\"\nserial = \"bus-1\"\nenterprise = \"91350100M000100Y43\"\n\
         [[points]]\npoint = \"P\"\nindicator = \"electricity\"\nregister = 0\ndata_type = \"u32\"\nunit = \"kWh\"\n",
    )
    .unwrap();
    let devices = crate::sources::modbus::check_all(&[rtu], &v).unwrap();
    assert_eq!(
        attach(&ports, devices, gws).unwrap_err(),
        SerialConfigError::MixedProtocols { port: "bus-1".into() }
    );
}

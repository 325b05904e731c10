//! The OPC UA source's configuration checks and value mapping, without a
//! server (the end-to-end test, tests/opcua.rs, has a real one).

use super::*;
use opcua_types::{DateTime as UaDateTime, Variant};

const E1: &str = "91419001MA0000001N";

fn validator() -> Validator {
    Validator::new(
        crate::config::load_catalog(None).expect("compiled-in catalog"),
        zonesync_proto::Limits::default(),
    )
}

fn config(extra: &str) -> OpcUaConfig {
    toml::from_str(&format!(
        r#"
name = "dcs-1"
endpoint = "opc.tcp://127.0.0.1:4840/"
enterprise = "{E1}"
{extra}
[[nodes]]
node_id = "ns=2;s=Feeder1.Energy"
point = "F1"
indicator = "electricity"
unit = "kWh"
[[nodes]]
node_id = "ns=2;i=1001"
point = "F1"
indicator = "active_power"
unit = "kW"
"#
    ))
    .expect("config parses")
}

fn check(extra: &str) -> Result<Checked, OpcUaConfigError> {
    config(extra).check(&validator(), std::path::Path::new("/var/lib/zonesync-agent"))
}

#[test]
fn a_plain_server_is_anonymous_without_security_and_keeps_its_pki_in_the_data_dir() {
    let c = check("").unwrap();
    assert_eq!(c.mode, Mode::None);
    assert!(matches!(c.identity, Identity::Anonymous));
    assert!(c.nodes[0].counter && !c.nodes[1].counter);
    assert_eq!(
        c.cfg.pki_dir.as_deref(),
        Some(std::path::Path::new("/var/lib/zonesync-agent/opcua-pki"))
    );
}

#[test]
fn basic256sha256_defaults_to_sign_and_encrypt_and_refuses_mode_none() {
    assert_eq!(
        check(r#"security_policy = "Basic256Sha256""#).unwrap().mode,
        Mode::SignAndEncrypt
    );
    let e = check("security_policy = \"Basic256Sha256\"\nsecurity_mode = \"None\"").unwrap_err();
    assert!(e.to_string().contains("needs security_mode"), "{e}");
    let e = check(r#"security_mode = "Sign""#).unwrap_err();
    assert!(e.to_string().contains("needs a security_policy"), "{e}");
}

#[test]
fn the_password_comes_from_its_file_and_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "s3cret\n").unwrap();
    let c = check(&format!("user = \"op\"\npassword_file = \"{}\"", file.display())).unwrap();
    match &c.identity {
        Identity::User { user, password } => assert_eq!((user.as_str(), password.as_str()), ("op", "s3cret")),
        other => panic!("{other:?}"),
    }
    assert!(!format!("{c:?}").contains("s3cret"));
    let e = check("user = \"op\"\npassword_file = \"s3cret-given-as-path\"").unwrap_err();
    assert!(!e.to_string().contains("s3cret"), "{e}");
    let e = check("user = \"op\"").unwrap_err();
    assert!(e.to_string().contains("identity"), "{e}");
}

#[test]
fn bad_nodes_are_refused_with_the_reason() {
    let mut c = config("");
    c.nodes[0].node_id = "Feeder1.Energy".into();
    let e = c.check(&validator(), std::path::Path::new("/d")).unwrap_err();
    assert!(e.to_string().contains("not a NodeId"), "{e}");
    let mut c = config("");
    c.nodes[0].unit = "MWh/h".into();
    assert!(c.check(&validator(), std::path::Path::new("/d")).is_err());
    let mut c = config("");
    c.nodes[1].indicator = "electricity".into();
    let e = check_all(&[c], &validator(), std::path::Path::new("/d")).unwrap_err();
    assert!(matches!(e, OpcUaConfigError::DuplicatePoint { .. }), "{e}");
}

fn value(v: Variant, ts_ms: i64) -> DataValue {
    let ts = UaDateTime::from(chrono::DateTime::from_timestamp_millis(ts_ms).unwrap());
    DataValue {
        value: Some(v),
        status: Some(StatusCode::Good),
        source_timestamp: Some(ts),
        server_timestamp: Some(ts),
        ..Default::default()
    }
}

#[test]
fn subscription_values_map_to_readings_once_and_counters_roll_over() {
    let src = OpcUaSource::new(check("").unwrap(), validator());
    let now = Utc::now();
    let t0 = now.timestamp_millis() - 60_000;
    let mut refusing = vec![false; 2];
    let (items, cursor) = src.readings(
        vec![
            (0, value(Variant::UInt16(65_000), t0)),
            (1, value(Variant::Double(12.5), t0)),
        ],
        &Cursor::default(),
        &mut refusing,
        None,
        now,
    );
    assert_eq!(items.len(), 2);
    // The same value again (a reconnect) is not sent twice.
    let (again, cursor) = src.readings(
        vec![(0, value(Variant::UInt16(65_000), t0))],
        &cursor,
        &mut refusing,
        None,
        now,
    );
    assert!(again.is_empty());
    assert_eq!(src.stats.counts()["duplicates"], 1);
    let (wrapped, _) = src.readings(
        vec![(0, value(Variant::UInt16(100), t0 + 1_000))],
        &cursor,
        &mut refusing,
        None,
        now,
    );
    match &wrapped[..] {
        [(_, Item::Reading(r))] => assert_eq!(r.value, 65_636.0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_status_or_a_string_gives_no_reading() {
    let src = OpcUaSource::new(check("").unwrap(), validator());
    let now = Utc::now();
    let mut bad = value(Variant::Double(1.0), now.timestamp_millis());
    bad.status = Some(StatusCode::BadNodeIdUnknown);
    let mut refusing = vec![false; 2];
    let (items, cursor) = src.readings(
        vec![(1, bad), (1, value(Variant::from("n/a"), now.timestamp_millis()))],
        &Cursor::default(),
        &mut refusing,
        Some(now),
        now,
    );
    assert!(items.is_empty());
    assert_eq!(cursor, Cursor::default());
    assert_eq!(src.stats.counts()["failed_reads"], 2);
}

//! Configuration checks and the mapping from tag values to readings (the
//! MQTT session is exercised end to end in `tests/gateways.rs`).

use super::*;
use zonesync_proto::{Catalog, Limits};

fn validator() -> Validator {
    Validator::new(Catalog::builtin().unwrap(), Limits::default())
}

const E1: &str = "91350100M000100Y43";

fn gateway(kind: &str, tags: &str) -> MqttGatewayConfig {
    toml::from_str(&format!("name = \"plant\"\nkind = \"{kind}\"\n{tags}")).unwrap()
}

fn tag(node: &str, tagname: &str, point: &str, extra: &str) -> String {
    format!(
        "[[tags]]\nnode = \"{node}\"\ngroup = \"g\"\ntag = \"{tagname}\"\nindicator = \"electricity\"\nunit = \"kWh\"\n\
         enterprise = \"{E1}\"\npoint = \"{point}\"\n{extra}\n"
    )
}

fn value(node: &str, tagname: &str, v: Option<f64>, ts_ms: u64) -> TagValue {
    TagValue {
        node: node.into(),
        group: "g".into(),
        device: None,
        tag: tagname.into(),
        value: v,
        ts_ms: Some(ts_ms),
    }
}

#[test]
fn tags_become_readings_once_each_and_the_rest_is_counted() {
    let cfg = gateway(
        "neuron",
        &(tag("modbus-1", "kwh", "M1", "scale = 0.1") + &tag("modbus-1", "kwh2", "M2", "")),
    );
    let checked = cfg.check(&validator()).unwrap();
    let g = MqttGateway::new(checked, validator(), "gw-plant".into());
    let now = Utc::now();
    let t = u64::try_from(now.timestamp_millis()).unwrap() - 1_000;
    let values = vec![
        value("modbus-1", "kwh", Some(1234.0), t),
        value("modbus-1", "kwh2", None, t),
        value("modbus-1", "other", Some(1.0), t),
        value("modbus-2", "kwh", Some(1.0), t),
    ];
    let (items, cursor) = g.readings(values.clone(), &Cursor::new(), now);
    assert_eq!(items.len(), 1);
    let Item::Reading(r) = &items[0].1 else {
        panic!("{items:?}")
    };
    assert_eq!((r.point.as_str(), r.value, r.unit.as_str()), ("M1", 123.4, "kWh"));
    assert_eq!(r.ts.map(|t| t.timestamp_millis()), Some(t as i64));
    let c = g.stats.counts();
    assert_eq!((c["not_numeric"], c["unmapped_tags"]), (1, 2));
    // Delivered again (a QoS 1 resend, a reconnect): nothing new.
    let (again, same) = g.readings(values[..1].to_vec(), &cursor, now);
    assert!(again.is_empty());
    assert_eq!(same, cursor);
    assert_eq!(g.stats.get("duplicates"), 1);
    // A newer value is sent; so is another value in the same millisecond
    // (a birth and the first DATA); an older one is not.
    let (newer, _) = g.readings(vec![value("modbus-1", "kwh", Some(1240.0), t + 1)], &cursor, now);
    assert_eq!(newer.len(), 1);
    let (same_ms, _) = g.readings(vec![value("modbus-1", "kwh", Some(1235.0), t)], &cursor, now);
    assert_eq!(same_ms.len(), 1);
    let (older, _) = g.readings(vec![value("modbus-1", "kwh", Some(1200.0), t - 1)], &cursor, now);
    assert!(older.is_empty());
    assert_eq!(g.stats.get("duplicates"), 2);
    // A negative counter is refused by the catalog, counted.
    let (neg, _) = g.readings(vec![value("modbus-1", "kwh", Some(-5.0), t + 2)], &cursor, now);
    assert!(neg.is_empty());
    assert_eq!(g.stats.get("refused"), 1);
}

#[test]
fn configuration_mistakes_are_refused() {
    let v = validator();
    for (cfg, why) in [
        (gateway("neuron", "tags = []"), "has no tags"),
        (
            gateway(
                "neuron",
                &tag("n", "t", "P", "indicator = \"nope\"").replace("indicator = \"electricity\"\n", ""),
            ),
            "not in the catalog",
        ),
        (
            gateway("neuron", &tag("n", "t", "P", "").replace("kWh", "MJ/h")),
            "not one of",
        ),
        (
            gateway("neuron", &tag("n", "t", "P", "device = \"d\"")),
            "device is a Sparkplug B id",
        ),
        (
            gateway("neuron", &(tag("n", "t", "P", "") + &tag("n", "t", "Q", ""))),
            "mapped twice",
        ),
        (
            gateway("neuron", &(tag("n", "t", "P", "") + &tag("n", "u", "P", ""))),
            "already another tag's",
        ),
        (gateway("sparkplug", &tag("n", "t", "P", "scale = 0")), "non-zero"),
    ] {
        let e = cfg.check(&v).unwrap_err().to_string();
        assert!(e.contains(why), "{why}: {e}");
    }
    assert!(toml::from_str::<MqttGatewayConfig>("name = \"a\"\nkind = \"opcua\"\ntags = []\n").is_err());
    let sp = gateway(
        "sparkplug",
        &(tag("edge1", "Energy", "P", "") + &tag("edge2", "Energy", "Q", "")),
    );
    assert_eq!(sp.filters(), ["spBv1.0/g/#"]);
    assert_eq!(gateway("neuron", &tag("n", "t", "P", "")).filters(), ["/neuron/#"]);
    assert!(matches!(
        check_all(&[sp.clone(), sp], &v),
        Err(MqttGatewayConfigError::Duplicate(_))
    ));
}

#[test]
fn a_sparkplug_birth_and_data_by_alias_become_readings() {
    use sparkplug_b::{DataType, Metric, Payload, Value};
    let cfg = gateway("sparkplug", &tag("edge1", "Meter/Energy", "M1", ""));
    let g = MqttGateway::new(cfg.check(&validator()).unwrap(), validator(), "c".into());
    let now = Utc::now();
    let t = u64::try_from(now.timestamp_millis()).unwrap() - 5_000;
    let mut host = sparkplug::Host::default();
    let birth = Payload {
        timestamp: Some(t),
        seq: Some(0),
        metrics: vec![
            Metric {
                name: Some("Meter/Energy".into()),
                alias: Some(7),
                datatype: Some(DataType::Double as u32),
                value: Some(Value::DoubleValue(100.0)),
                ..Metric::default()
            },
            Metric {
                name: Some("bdSeq".into()),
                datatype: Some(DataType::Int64 as u32),
                value: Some(Value::LongValue(3)),
                ..Metric::default()
            },
        ],
        ..Payload::default()
    };
    let (v, rebirth) = g.decode(&mut host, "spBv1.0/g/NBIRTH/edge1", &birth.encode_to_vec(), 0);
    assert_eq!(rebirth, None);
    let (items, cursor) = g.readings(v, &Cursor::new(), now);
    assert_eq!(items.len(), 1);
    let data = Payload {
        timestamp: Some(t + 1),
        seq: Some(1),
        metrics: vec![Metric {
            alias: Some(7),
            value: Some(Value::DoubleValue(101.5)),
            ..Metric::default()
        }],
        ..Payload::default()
    };
    let (v, _) = g.decode(&mut host, "spBv1.0/g/NDATA/edge1", &data.encode_to_vec(), 0);
    let (items, _) = g.readings(v, &cursor, now);
    let Item::Reading(r) = &items[0].1 else { panic!() };
    assert_eq!(r.value, 101.5);
    // Garbage on a Sparkplug topic, and an out-of-order message.
    assert!(g
        .decode(&mut host, "spBv1.0/g/NDATA/edge1", &[0xFF, 0xFF], 0)
        .0
        .is_empty());
    let (_, rebirth) = g.decode(&mut host, "spBv1.0/g/NDATA/edge1", &data.encode_to_vec(), 0);
    assert_eq!(rebirth, Some(("g".into(), "edge1".into())));
    let c = g.stats.counts();
    assert_eq!((c["malformed"], c["seq_gaps"], c["births"]), (1, 1, 1));
}

#[test]
fn the_commented_example_is_valid_once_uncommented() {
    #[derive(serde::Deserialize)]
    struct Example {
        mqtt_gateway: Vec<MqttGatewayConfig>,
    }
    let text = crate::sources::dlt645::tests::example_block("# [[mqtt_gateway]]");
    let ex: Example = toml::from_str(&text).unwrap();
    let checked = check_all(&ex.mqtt_gateway, &validator()).unwrap();
    assert_eq!(checked.len(), 2);
    assert_eq!(checked[1].cfg.filters(), ["spBv1.0/plant/#"]);
}

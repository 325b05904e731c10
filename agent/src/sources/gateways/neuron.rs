//! EMQX Neuron's MQTT upload, parsed: pure, unit-tested on the documented
//! shapes. Neuron's MQTT plugin publishes one JSON document per group read,
//! to `/neuron/{app}/upload` (before 2.4) or the topic its group
//! subscription names (2.4 on, default `/neuron/{app}/{driver}/{group}`), in
//! one of two formats (docs.emqx.com, Neuron "MQTT API"):
//!
//! - values-format: `{"timestamp": ms, "node": …, "group": …, "values": {tag: value}, "errors": {tag: code}}`
//! - tags-format: `{"timestamp": ms, "node": …, "group": …, "tags": [{"name": …, "value": …} | {"name": …, "error": code}]}`
//!
//! Neuron 2.0 named the fields `node_name` and `group_name`; both are read.

use super::TagValue;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One upload, either format.
#[derive(Debug, Deserialize)]
struct Upload {
    timestamp: Option<u64>,
    #[serde(alias = "node_name")]
    node: String,
    #[serde(alias = "group_name")]
    group: String,
    #[serde(default)]
    values: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    errors: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
struct Tag {
    name: String,
    value: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
}

/// What an upload held.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    /// Tags read, with their value (`None` when not a number or boolean).
    pub values: Vec<TagValue>,
    /// Tags Neuron could not read, with its error code.
    pub errors: Vec<(String, i64)>,
}

/// Why an upload could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("not a Neuron upload: {0}")]
pub struct NotAnUpload(String);

/// Parses one upload.
pub fn parse(payload: &[u8]) -> Result<Parsed, NotAnUpload> {
    let u: Upload = serde_json::from_slice(payload).map_err(|e| NotAnUpload(e.to_string()))?;
    let tag = |name: String, value: &serde_json::Value| TagValue {
        node: u.node.clone(),
        group: u.group.clone(),
        device: None,
        tag: name,
        value: match value {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        },
        ts_ms: u.timestamp,
    };
    let mut values: Vec<TagValue> = u.values.iter().map(|(k, v)| tag(k.clone(), v)).collect();
    let code = |v: &serde_json::Value| v.as_i64().unwrap_or(-1);
    let mut errors: Vec<(String, i64)> = u.errors.iter().map(|(k, v)| (k.clone(), code(v))).collect();
    for t in &u.tags {
        match (&t.value, &t.error) {
            (_, Some(e)) => errors.push((t.name.clone(), code(e))),
            (Some(v), None) => values.push(tag(t.name.clone(), v)),
            (None, None) => values.push(tag(t.name.clone(), &serde_json::Value::Null)),
        }
    }
    Ok(Parsed { values, errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_format_as_documented() {
        let p = parse(
            br#"{"timestamp": 1650006388943, "node": "modbus", "group": "grp",
                 "values": {"tag0": 123, "on": true, "name": "hello!"}, "errors": {"tag1": 2014}}"#,
        )
        .unwrap();
        let got: Vec<(&str, Option<f64>)> = p.values.iter().map(|v| (v.tag.as_str(), v.value)).collect();
        assert_eq!(got, [("name", None), ("on", Some(1.0)), ("tag0", Some(123.0))]);
        assert_eq!(p.values[0].ts_ms, Some(1_650_006_388_943));
        assert_eq!(
            (p.values[0].node.as_str(), p.values[0].group.as_str()),
            ("modbus", "grp")
        );
        assert_eq!(p.errors, [("tag1".to_owned(), 2014)]);
    }

    #[test]
    fn tags_format_and_the_2_0_field_names() {
        let p = parse(
            br#"{"node_name": "modbus-tcp-2", "group_name": "group-1", "timestamp": 1647497389075,
                 "tags": [{"value": 123.5, "name": "data1"}, {"name": "data2", "error": 2014}]}"#,
        )
        .unwrap();
        assert_eq!(p.values.len(), 1);
        assert_eq!((p.values[0].tag.as_str(), p.values[0].value), ("data1", Some(123.5)));
        assert_eq!(p.values[0].node, "modbus-tcp-2");
        assert_eq!(p.errors, [("data2".to_owned(), 2014)]);
    }

    #[test]
    fn other_documents_are_refused() {
        for bad in [
            &b"not json"[..],
            br#"{"values": {}}"#,
            br#"[1,2]"#,
            br#"{"node": 1, "group": "g"}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

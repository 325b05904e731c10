//! The Sparkplug B payload (Eclipse Tahu `sparkplug_b.proto`, proto2) as
//! prost derives, so the build needs no `protoc`: only the fields a host
//! application reading metrics uses. Fields not declared here (metadata,
//! property sets, data sets, templates, extensions) are skipped by prost's
//! decoder as unknown fields, so payloads that carry them still decode.
//!
//! No maintained Rust Sparkplug crate fits (December 2026): `sparkplug-rs` is
//! EPL-2.0 (copyleft, refused by deny.toml) and generates rust-protobuf code
//! at build time; `lb-sparkplugb-rs` is a 0.1 release without a track record.

/// A Sparkplug B payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Milliseconds since the Unix epoch, when the message was made.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// Sequence number 0–255 (absent in NDEATH).
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    /// Optional payload UUID.
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    /// Optional opaque body.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// One metric of a payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Its name; in DATA messages often left out in favour of the alias.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The alias a BIRTH gave the name.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Milliseconds since the Unix epoch, when the value was taken.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// The Sparkplug data type (see [`DataType`]); required in BIRTHs.
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// A historical value, not the current one.
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// Not to be stored.
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The value is null.
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// The value.
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<Value>,
}

/// A metric's value, by wire field.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// Int8/16/32, UInt8/16/32 (signed ones in two's complement).
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    /// Int64, UInt64, DateTime (signed in two's complement).
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    /// Float.
    #[prost(float, tag = "12")]
    FloatValue(f32),
    /// Double.
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    /// Boolean.
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    StringValue(String),
    /// Bytes, File.
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// Sparkplug B data types that carry one number (spec 3.0, 6.4.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    UInt8 = 5,
    UInt16 = 6,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
}

impl DataType {
    /// The type of wire code `code`, if it is a number or a boolean.
    pub fn from_code(code: u32) -> Option<Self> {
        use DataType::*;
        Some(match code {
            1 => Int8,
            2 => Int16,
            3 => Int32,
            4 => Int64,
            5 => UInt8,
            6 => UInt16,
            7 => UInt32,
            8 => UInt64,
            9 => Float,
            10 => Double,
            11 => Boolean,
            _ => return None,
        })
    }
}

/// A metric's value as a number, read by its data type (`None` for
/// strings, bytes, nulls, and a value whose wire field does not fit the type).
pub fn number(value: &Value, datatype: Option<DataType>) -> Option<f64> {
    use DataType::*;
    Some(match (value, datatype) {
        (Value::IntValue(v), Some(Int8)) => f64::from(*v as u8 as i8),
        (Value::IntValue(v), Some(Int16)) => f64::from(*v as u16 as i16),
        (Value::IntValue(v), Some(Int32)) => f64::from(*v as i32),
        (Value::IntValue(v), _) => f64::from(*v),
        (Value::LongValue(v), Some(Int64)) => *v as i64 as f64,
        (Value::LongValue(v), _) => *v as f64,
        (Value::FloatValue(v), _) => f64::from(*v),
        (Value::DoubleValue(v), _) => *v,
        (Value::BooleanValue(b), _) => f64::from(u8::from(*b)),
        (Value::StringValue(_) | Value::BytesValue(_), _) => return None,
    })
}

/// The NCMD payload asking an edge node to publish its births again.
pub fn rebirth_request(now_ms: u64) -> Payload {
    Payload {
        timestamp: Some(now_ms),
        metrics: vec![Metric {
            name: Some(REBIRTH.into()),
            timestamp: Some(now_ms),
            datatype: Some(DataType::Boolean as u32),
            value: Some(Value::BooleanValue(true)),
            ..Metric::default()
        }],
        ..Payload::default()
    }
}

/// The node control metric that asks for a rebirth.
pub const REBIRTH: &str = "Node Control/Rebirth";
/// The metric carrying the birth/death sequence number.
pub const BD_SEQ: &str = "bdSeq";

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn signed_types_are_read_in_twos_complement_and_text_is_no_number() {
        assert_eq!(number(&Value::IntValue(0xFF), Some(DataType::Int8)), Some(-1.0));
        assert_eq!(number(&Value::IntValue(0xFFFF), Some(DataType::Int16)), Some(-1.0));
        assert_eq!(number(&Value::IntValue(0xFFFF), Some(DataType::UInt16)), Some(65535.0));
        assert_eq!(number(&Value::LongValue(u64::MAX), Some(DataType::Int64)), Some(-1.0));
        assert_eq!(number(&Value::DoubleValue(1.5), Some(DataType::Double)), Some(1.5));
        assert_eq!(number(&Value::BooleanValue(true), Some(DataType::Boolean)), Some(1.0));
        assert_eq!(number(&Value::StringValue("x".into()), None), None);
    }

    #[test]
    fn rebirth_request_round_trips_and_unknown_fields_are_skipped() {
        let bytes = rebirth_request(5).encode_to_vec();
        let back = Payload::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.metrics[0].name.as_deref(), Some(REBIRTH));
        assert_eq!(back.metrics[0].value, Some(Value::BooleanValue(true)));
        // A metric with a property set (field 9) and metadata (field 8), as
        // other edge nodes send: the fields are skipped, the rest decodes.
        let mut m = Metric {
            name: Some("E".into()),
            value: Some(Value::DoubleValue(2.0)),
            ..Metric::default()
        }
        .encode_to_vec();
        m.extend_from_slice(&[0x4A, 0x02, 0x08, 0x01, 0x42, 0x00]);
        let mut p = vec![0x12, m.len() as u8];
        p.extend_from_slice(&m);
        let back = Payload::decode(p.as_slice()).unwrap();
        assert_eq!(back.metrics[0].value, Some(Value::DoubleValue(2.0)));
        assert!(Payload::decode(&[0x12, 0x40, 0x01][..]).is_err(), "truncated");
    }
}

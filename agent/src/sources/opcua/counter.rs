//! A node's value as a number, and cumulative nodes across rollovers and
//! meter replacements: pure, no I/O, so every transition is unit-tested by
//! feeding values.
//!
//! The rule is the Modbus and DL/T 645 sources' ([`is_rollover`]): a fall is
//! a wrap only for an unsigned integer node, from the top tenth of its range
//! to the bottom tenth; any other fall is a replaced or reset meter, sent as
//! read so that the aggregator books the reset. Unlike a Modbus register an
//! OPC UA node says its own type, so the wrap range comes from the value's
//! variant (UInt16, UInt32, UInt64), and a Double total keeps its full
//! precision (the Modbus cursor holds an f32). The last value, the wraps and
//! the last source timestamp sent are the cursor, stored with the readings
//! they produced.

#[cfg(test)]
use crate::sources::cursor::JsonCursor;
use crate::sources::modbus::is_rollover;
use opcua_types::Variant;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A node's value, as far as a number can be made of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Sample {
    /// An unsigned integer that wraps after 2^`bits`.
    Unsigned { value: u64, bits: u32 },
    /// Any other number (signed integers, Float, Double; a Boolean as 0 or 1).
    Number(f64),
}

impl Sample {
    /// The number a variant holds; `None` for strings, arrays and the rest.
    pub fn of(v: &Variant) -> Option<Sample> {
        let n = |x: f64| Some(Sample::Number(x));
        match v {
            Variant::Byte(x) => Some(Sample::Unsigned {
                value: u64::from(*x),
                bits: 8,
            }),
            Variant::UInt16(x) => Some(Sample::Unsigned {
                value: u64::from(*x),
                bits: 16,
            }),
            Variant::UInt32(x) => Some(Sample::Unsigned {
                value: u64::from(*x),
                bits: 32,
            }),
            Variant::UInt64(x) => Some(Sample::Unsigned { value: *x, bits: 64 }),
            Variant::Boolean(b) => n(if *b { 1.0 } else { 0.0 }),
            Variant::SByte(x) => n(f64::from(*x)),
            Variant::Int16(x) => n(f64::from(*x)),
            Variant::Int32(x) => n(f64::from(*x)),
            Variant::Int64(x) => n(*x as f64),
            Variant::Float(x) => n(f64::from(*x)),
            Variant::Double(x) => n(*x),
            _ => None,
        }
    }

    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Sample::Unsigned { value, .. } => value as f64,
            Sample::Number(x) => x,
        }
    }
}

/// What is kept per counter node between reads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterState {
    /// Last value read.
    pub last: Sample,
    /// Rollovers since the meter was installed or last replaced.
    pub wraps: u64,
}

impl CounterState {
    /// The number to send, before scaling: the value plus every wrap.
    pub fn unwrapped(&self) -> f64 {
        match self.last {
            Sample::Unsigned { value, bits } => value as f64 + self.wraps as f64 * 2f64.powi(bits as i32),
            Sample::Number(x) => x,
        }
    }
}

/// How a new value relates to the previous one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// No previous value (first read, or the node's type changed).
    First,
    /// Equal or higher than before.
    Rising,
    /// The node wrapped past its maximum; the value sent keeps growing.
    Rollover,
    /// The node fell otherwise: a new or reset meter, sent as read.
    Replacement {
        /// The value before the fall.
        previous: f64,
    },
}

/// Why a value cannot be a counter reading.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum CounterError {
    #[error("counter node is negative or not finite ({0})")]
    NotCounting(f64),
}

/// Works out the state after reading `now` from a counter node. Negative
/// and non-finite values are refused: a counter never goes below zero.
pub fn advance(prev: Option<&CounterState>, now: Sample) -> Result<(CounterState, Change), CounterError> {
    let x = now.as_f64();
    if !x.is_finite() || x < 0.0 {
        return Err(CounterError::NotCounting(x));
    }
    let fresh = CounterState { last: now, wraps: 0 };
    let Some(prev) = prev else {
        return Ok((fresh, Change::First));
    };
    match (prev.last, now) {
        (Sample::Unsigned { value: a, bits: ba }, Sample::Unsigned { value: b, bits: bb }) if ba == bb => {
            if b >= a {
                Ok((CounterState { last: now, ..*prev }, Change::Rising))
            } else if is_rollover(a, b, 1u128 << ba) {
                Ok((
                    CounterState {
                        last: now,
                        wraps: prev.wraps.saturating_add(1),
                    },
                    Change::Rollover,
                ))
            } else {
                Ok((fresh, Change::Replacement { previous: a as f64 }))
            }
        }
        (Sample::Number(a), Sample::Number(b)) => {
            if b >= a {
                Ok((CounterState { last: now, ..*prev }, Change::Rising))
            } else {
                Ok((fresh, Change::Replacement { previous: a }))
            }
        }
        // The node's type changed (a server reconfigured): start afresh
        // rather than compare numbers of different kinds.
        _ => Ok((fresh, Change::First)),
    }
}

/// What the source keeps about one node between reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCursor {
    /// Counter state (counter nodes only).
    #[serde(default)]
    pub counter: Option<CounterState>,
    /// Source timestamp of the last value sent from a subscription, ms since
    /// the epoch: a server sends a monitored item's current value again
    /// after every reconnect, and that value must not be sent twice.
    #[serde(default)]
    pub last_ts_ms: Option<i64>,
}

/// The OPC UA source's cursor, keyed by `indicator/point`, stored with each append.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// State per `indicator/point`.
    pub nodes: BTreeMap<String, NodeCursor>,
}

impl crate::sources::cursor::JsonCursor for Cursor {}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(values: &[Sample]) -> Vec<(f64, Change)> {
        let mut st: Option<CounterState> = None;
        values
            .iter()
            .map(|v| {
                let (s, c) = advance(st.as_ref(), *v).unwrap();
                st = Some(s);
                (s.unwrapped(), c)
            })
            .collect()
    }

    fn u16v(value: u64) -> Sample {
        Sample::Unsigned { value, bits: 16 }
    }

    #[test]
    fn a_uint16_total_wraps_from_the_top_tenth_to_the_bottom_tenth() {
        let out = feed(&[u16v(65_000), u16v(100), u16v(200)]);
        assert_eq!(out[1], (65_636.0, Change::Rollover));
        assert_eq!(out[2], (65_736.0, Change::Rising));
    }

    #[test]
    fn any_other_fall_is_a_replacement_sent_as_read() {
        let out = feed(&[u16v(30_000), u16v(5)]);
        assert_eq!(out[1], (5.0, Change::Replacement { previous: 30_000.0 }));
        let out = feed(&[Sample::Number(1_234_567.25), Sample::Number(0.5)]);
        assert_eq!(out[1], (0.5, Change::Replacement { previous: 1_234_567.25 }));
    }

    #[test]
    fn a_double_total_keeps_its_precision_and_never_wraps() {
        let out = feed(&[Sample::Number(98_765_432.125), Sample::Number(98_765_432.375)]);
        assert_eq!(out[1], (98_765_432.375, Change::Rising));
    }

    #[test]
    fn negative_and_non_finite_counters_are_refused() {
        assert!(advance(None, Sample::Number(-1.0)).is_err());
        assert!(advance(None, Sample::Number(f64::NAN)).is_err());
    }

    #[test]
    fn a_changed_type_starts_afresh() {
        let (s, _) = advance(None, u16v(60_000)).unwrap();
        let (s, c) = advance(Some(&s), Sample::Unsigned { value: 10, bits: 32 }).unwrap();
        assert_eq!((s.unwrapped(), c), (10.0, Change::First));
    }

    #[test]
    fn variants_become_samples() {
        assert_eq!(
            Sample::of(&Variant::UInt32(7)),
            Some(Sample::Unsigned { value: 7, bits: 32 })
        );
        assert_eq!(Sample::of(&Variant::Double(1.5)), Some(Sample::Number(1.5)));
        assert_eq!(Sample::of(&Variant::Boolean(true)), Some(Sample::Number(1.0)));
        assert_eq!(Sample::of(&Variant::from("text")), None);
    }

    #[test]
    fn the_cursor_survives_a_round_trip() {
        let mut c = Cursor::default();
        c.nodes.insert(
            crate::sources::series::key("electricity", "M1"),
            NodeCursor {
                counter: Some(CounterState {
                    last: u16v(9),
                    wraps: 2,
                }),
                last_ts_ms: Some(1_700_000_000_000),
            },
        );
        assert_eq!(Cursor::from_bytes(Some(&c.to_bytes())), c);
        assert_eq!(Cursor::from_bytes(Some(b"not json")), Cursor::default());
    }
}

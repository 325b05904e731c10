//! Cumulative meter registers across rollovers and meter replacements: pure,
//! no I/O, so every transition is unit-tested by feeding values.
//!
//! A register that falls means one of two things. Either it wrapped around
//! its data type (a `u16` energy register passes 65535 every few weeks on a
//! busy feeder), and the value sent must keep growing, or the meter was
//! replaced or reset, and the aggregator already books a falling register as
//! a reset and counts the new value from zero, so it must see the fall.
//! A wrap is only believed when the old value sat in the top tenth of the
//! type's range and the new one in the bottom tenth; any other fall is a
//! replacement. The last value and the number of wraps are the source's
//! cursor, stored with the readings they produced, so a restart in the middle
//! of a wrap neither loses nor repeats it.

use super::decode::{DataType, Raw};
#[cfg(test)]
use crate::sources::cursor::JsonCursor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What is kept per counter point between polls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterState {
    /// Type the register was decoded as; a changed type starts afresh.
    pub data_type: DataType,
    /// Last raw value read.
    pub last: Raw,
    /// Rollovers since the meter was installed or last replaced.
    pub wraps: u64,
}

/// How a new raw value relates to the previous one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// No previous value (first poll, or the point's type changed).
    First,
    /// Equal or higher than before.
    Rising,
    /// The register wrapped past its maximum; the value sent keeps growing.
    Rollover,
    /// The register fell otherwise: a new or reset meter, sent as read.
    Replacement {
        /// The raw value before the fall.
        previous: Raw,
    },
}

/// Why a raw value cannot be a counter reading.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum CounterError {
    #[error("counter register is negative ({0:?})")]
    Negative(Raw),
}

/// Whether `value` lies in the top (`top = true`) or bottom tenth of `range`.
fn in_tenth(value: u64, range: u128, top: bool) -> bool {
    let v = u128::from(value) * 10;
    if top {
        v >= range * 9
    } else {
        v < range
    }
}

/// Whether a fall from `previous` to `now` on a register that wraps at
/// `range` is a rollover (top tenth to bottom tenth) rather than a replaced
/// meter. Shared by every source that reads wrapping unsigned counters: a
/// binary Modbus register wraps at 2^bits, an eight-digit BCD register of a
/// DL/T 645 meter at 10^8.
pub fn is_rollover(previous: u64, now: u64, range: u128) -> bool {
    now < previous && in_tenth(previous, range, true) && in_tenth(now, range, false)
}

impl CounterState {
    /// The number to send, before scaling: the raw value plus every wrap.
    pub fn unwrapped(&self) -> f64 {
        let range = self.data_type.wrap_bits().map_or(0.0, |b| 2f64.powi(b as i32));
        self.last.as_f64() + self.wraps as f64 * range
    }
}

/// Works out the state after reading `raw` from a counter of `data_type`.
/// Negative values are refused: a counter never goes below zero, and the
/// aggregator would dead-letter it anyway.
pub fn advance(
    prev: Option<&CounterState>,
    data_type: DataType,
    raw: Raw,
) -> Result<(CounterState, Change), CounterError> {
    if raw.is_negative() {
        return Err(CounterError::Negative(raw));
    }
    let fresh = CounterState {
        data_type,
        last: raw,
        wraps: 0,
    };
    let Some(prev) = prev.filter(|p| p.data_type == data_type) else {
        return Ok((fresh, Change::First));
    };
    let fell = match (prev.last, raw) {
        (Raw::Unsigned(a), Raw::Unsigned(b)) => b < a,
        (Raw::Signed(a), Raw::Signed(b)) => b < a,
        (Raw::Float(a), Raw::Float(b)) => b < a,
        // A different representation under the same type cannot come from
        // the decoder; start afresh rather than guess.
        _ => return Ok((fresh, Change::First)),
    };
    if !fell {
        return Ok((CounterState { last: raw, ..*prev }, Change::Rising));
    }
    if let (Some(bits), Raw::Unsigned(a), Raw::Unsigned(b)) = (data_type.wrap_bits(), prev.last, raw) {
        if is_rollover(a, b, 1u128 << bits) {
            return Ok((
                CounterState {
                    last: raw,
                    wraps: prev.wraps.saturating_add(1),
                    data_type,
                },
                Change::Rollover,
            ));
        }
    }
    Ok((fresh, Change::Replacement { previous: prev.last }))
}

/// The Modbus source's cursor: counter state per point, keyed by
/// `indicator/point`, stored with each append.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// State per `indicator/point`.
    pub counters: BTreeMap<String, CounterState>,
}

impl crate::sources::cursor::JsonCursor for Cursor {}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;

    fn st(data_type: DataType, last: Raw, wraps: u64) -> CounterState {
        CounterState { data_type, last, wraps }
    }

    fn feed(data_type: DataType, values: &[Raw]) -> Vec<(f64, Change)> {
        let mut state = None;
        values
            .iter()
            .map(|v| {
                let (s, c) = advance(state.as_ref(), data_type, *v).unwrap();
                state = Some(s);
                (s.unwrapped(), c)
            })
            .collect()
    }

    #[test]
    fn u16_rollover_keeps_growing() {
        let u = Raw::Unsigned;
        let out = feed(U16, &[u(65_000), u(65_535), u(10), u(500), u(65_530), u(3)]);
        assert_eq!(
            out,
            vec![
                (65_000.0, Change::First),
                (65_535.0, Change::Rising),
                (65_546.0, Change::Rollover),
                (66_036.0, Change::Rising),
                (131_066.0, Change::Rising),
                (131_075.0, Change::Rollover),
            ]
        );
    }

    #[test]
    fn rollover_needs_top_and_bottom_tenths_exactly() {
        // 2^16 = 65536: the top tenth starts at 58 983 (≥ 58 982.4), the bottom one ends at 6 553 (< 6 553.6).
        let ok = |a: u64, b: u64, t: DataType| {
            advance(Some(&st(t, Raw::Unsigned(a), 0)), t, Raw::Unsigned(b))
                .unwrap()
                .1
        };
        assert_eq!(ok(58_983, 6_553, U16), Change::Rollover);
        assert_eq!(
            ok(58_982, 0, U16),
            Change::Replacement {
                previous: Raw::Unsigned(58_982)
            }
        );
        assert_eq!(
            ok(65_535, 6_554, U16),
            Change::Replacement {
                previous: Raw::Unsigned(65_535)
            }
        );
        // u32 and u64 use their own ranges.
        assert_eq!(ok(4_000_000_000, 5, U32), Change::Rollover);
        assert_eq!(
            ok(3_000_000_000, 5, U32),
            Change::Replacement {
                previous: Raw::Unsigned(3_000_000_000)
            }
        );
        assert_eq!(ok(u64::MAX - 5, 7, U64), Change::Rollover);
        assert_eq!(
            ok(65_535, 5, U32),
            Change::Replacement {
                previous: Raw::Unsigned(65_535)
            },
            "near the top of u16 is not near the top of u32"
        );
    }

    #[test]
    fn wraps_are_exact_for_each_unsigned_type() {
        let s = st(U32, Raw::Unsigned(7), 2);
        assert_eq!(s.unwrapped(), 2.0 * 4_294_967_296.0 + 7.0);
        let s = st(U64, Raw::Unsigned(0), 1);
        assert_eq!(s.unwrapped(), 18_446_744_073_709_551_616.0);
        let s = st(U16, Raw::Unsigned(1), 3);
        assert_eq!(s.unwrapped(), 3.0 * 65_536.0 + 1.0);
    }

    #[test]
    fn replacement_sends_the_raw_value_and_forgets_wraps() {
        let u = Raw::Unsigned;
        let out = feed(U16, &[u(65_500), u(20), u(40_000), u(120)]);
        assert_eq!(out[1], (65_556.0, Change::Rollover));
        assert_eq!(out[2], (105_536.0, Change::Rising));
        assert_eq!(out[3], (120.0, Change::Replacement { previous: u(40_000) }));
    }

    #[test]
    fn signed_and_float_falls_are_replacements() {
        let out = feed(I32, &[Raw::Signed(i64::from(i32::MAX)), Raw::Signed(1)]);
        assert_eq!(
            out[1],
            (
                1.0,
                Change::Replacement {
                    previous: Raw::Signed(i64::from(i32::MAX))
                }
            )
        );
        let out = feed(
            F32,
            &[Raw::Float(3.0e9), Raw::Float(2.5), Raw::Float(2.5), Raw::Float(7.0)],
        );
        assert_eq!(
            out.iter().map(|o| o.1).collect::<Vec<_>>(),
            vec![
                Change::First,
                Change::Replacement {
                    previous: Raw::Float(3.0e9)
                },
                Change::Rising,
                Change::Rising
            ]
        );
        assert_eq!(out[3].0, 7.0);
    }

    #[test]
    fn negative_counters_are_refused_and_leave_no_state() {
        let prev = st(I32, Raw::Signed(100), 0);
        assert_eq!(
            advance(Some(&prev), I32, Raw::Signed(-1)),
            Err(CounterError::Negative(Raw::Signed(-1)))
        );
        assert_eq!(
            advance(None, F32, Raw::Float(-0.5)),
            Err(CounterError::Negative(Raw::Float(-0.5)))
        );
    }

    #[test]
    fn a_changed_type_starts_afresh() {
        let prev = st(U16, Raw::Unsigned(65_000), 4);
        let (s, c) = advance(Some(&prev), U32, Raw::Unsigned(3)).unwrap();
        assert_eq!((s, c), (st(U32, Raw::Unsigned(3), 0), Change::First));
    }

    #[test]
    fn cursor_round_trips_and_tolerates_garbage() {
        let mut c = Cursor::default();
        c.counters.insert(
            crate::sources::series::key("electricity", "M1"),
            st(U64, Raw::Unsigned(u64::MAX), 2),
        );
        c.counters.insert(
            crate::sources::series::key("electricity", "M2"),
            st(F32, Raw::Float(1.5), 0),
        );
        let bytes = c.to_bytes();
        assert_eq!(Cursor::from_bytes(Some(&bytes)), c, "u64 above 2^53 survives exactly");
        assert_eq!(Cursor::from_bytes(Some(b"{not json")), Cursor::default());
        assert_eq!(Cursor::from_bytes(None), Cursor::default());
    }
}

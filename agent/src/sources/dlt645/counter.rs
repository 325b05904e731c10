//! Counter state of a DL/T 645 energy total: pure, so the wrap and the
//! replacement rules are unit-tested by feeding values.

use crate::sources::modbus::{is_rollover, Change, Raw};
use serde::{Deserialize, Serialize};

/// A BCD total XXXXXX.XX wraps after 999999.99 kWh: 10^8 hundredths.
const BCD_RANGE: u128 = 100_000_000;

/// Counter state of one meter total between reads: the last register value
/// (hundredths of a kWh) and how many times it wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BcdCounter {
    /// Last register value, 0.01 kWh.
    pub last: u64,
    /// Wraps past 999999.99 since the meter was installed or last replaced.
    pub wraps: u64,
}

impl BcdCounter {
    /// The value to send, kWh.
    pub fn kwh(&self) -> f64 {
        (self.last as f64 + self.wraps as f64 * BCD_RANGE as f64) / 100.0
    }

    /// The state after reading `now`, and how it relates to the previous one.
    pub fn advance(prev: Option<&BcdCounter>, now: u64) -> (BcdCounter, Change) {
        let fresh = BcdCounter { last: now, wraps: 0 };
        let Some(prev) = prev else {
            return (fresh, Change::First);
        };
        if now >= prev.last {
            return (BcdCounter { last: now, ..*prev }, Change::Rising);
        }
        if is_rollover(prev.last, now, BCD_RANGE) {
            return (
                BcdCounter {
                    last: now,
                    wraps: prev.wraps.saturating_add(1),
                },
                Change::Rollover,
            );
        }
        (
            fresh,
            Change::Replacement {
                previous: Raw::Unsigned(prev.last),
            },
        )
    }
}

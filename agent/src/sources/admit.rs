//! The last check a polling source makes on a value it read before queueing
//! it: the catalog (indicator, unit, range) and the clock guard (far ahead,
//! before the enterprise existed). One place, so the Modbus, DL/T 645 and
//! HTTP pull sources refuse the same readings for the same reasons.

use super::clock::ClockGuard;
use chrono::{DateTime, Utc};
use zonesync_proto::{EnterpriseId, Reading, Validator};

/// Why a reading is not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The catalog refuses it (the validator's reason).
    Invalid(String),
    /// Its time is not sane; the clock guard has counted and logged it.
    Clock(String),
}

/// Checks `reading` for `enterprise`; the clock guard, when there is one,
/// counts a refusal under its own reason.
pub fn reading(
    validator: &Validator,
    clock: Option<&ClockGuard>,
    source: &str,
    enterprise: &EnterpriseId,
    reading: Reading,
    now: DateTime<Utc>,
) -> Result<Reading, Refused> {
    serde_json::to_value(&reading)
        .map_err(|e| e.to_string())
        .and_then(|v| validator.reading(&v, now).map(|_| ()).map_err(|r| r.to_string()))
        .map_err(Refused::Invalid)?;
    if let Some(clock) = clock {
        clock
            .check_counted(source, enterprise, &reading, now)
            .map_err(|why| Refused::Clock(why.to_string()))?;
    }
    Ok(reading)
}

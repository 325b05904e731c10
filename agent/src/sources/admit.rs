//! The last check a polling source makes on a value it read before queueing
//! it: the catalog (indicator, unit, range) and the clock guard (far ahead,
//! before the enterprise existed). One place, so the Modbus, DL/T 645 and
//! HTTP pull sources refuse the same readings for the same reasons.

use super::clock::ClockGuard;
use chrono::{DateTime, Utc};
use zonesync_proto::{Catalog, EnterpriseId, Indicator, IndicatorKind, Reading, Validator};

/// A configured series (a Modbus point, an OPC UA node, a gateway tag, a
/// pulled value) checked at start-up: its indicator is in the catalog and
/// is a counter or a gauge (`gives` says what the source gives, for the
/// message: "a meter reads"), and its unit is one of the indicator's. One
/// place, so every source refuses the same configuration in the same words.
pub fn series<'c>(catalog: &'c Catalog, indicator: &str, unit: &str, gives: &str) -> Result<&'c Indicator, String> {
    let ind = catalog
        .get(indicator)
        .ok_or_else(|| format!("indicator {indicator:?} is not in the catalog"))?;
    if !matches!(ind.kind, IndicatorKind::Counter | IndicatorKind::Gauge) {
        return Err(format!(
            "indicator {indicator:?} is a {:?}; {gives} counters or gauges",
            ind.kind
        ));
    }
    if ind.factor(unit).is_none() {
        return Err(format!(
            "unit {unit:?} is not one of {indicator:?}'s units ({})",
            ind.units.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(ind)
}

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

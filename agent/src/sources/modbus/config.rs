//! The `[[modbus]]` configuration and its start-up checks against the
//! catalog: what a device and each of its points are, and why one is refused.
//! Checked before any task starts, so a mistyped indicator or unit stops the
//! agent at start-up rather than leaving a meter silently unreported.

use super::decode::{DataType, Order};
use super::{ModbusDevice, ModbusStats, Point};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use zonesync_proto::{EnterpriseId, IndicatorKind, Validator};

/// One Modbus device (`[[modbus]]`): over TCP (`host`), or over RTU on one
/// of the gateway's serial ports (`serial`, a `[[serial]]` table's name).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Device name, unique per agent; names the source's cursor and the logs.
    pub name: String,
    /// Modbus TCP: host name or address of the meter or gateway.
    #[serde(default)]
    pub host: String,
    /// Modbus RTU: the `[[serial]]` port the device is wired to (instead of `host`).
    #[serde(default)]
    pub serial: Option<String>,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Modbus unit id (slave id); gateways use it to pick the meter behind them.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Credit code of the enterprise the meters belong to.
    pub enterprise: EnterpriseId,
    /// Time between polls, milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Longest wait for a connect or a read, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Further attempts after a failed read within one poll.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The registers to read.
    pub points: Vec<PointConfig>,
}

fn default_port() -> u16 {
    502
}
fn default_unit_id() -> u8 {
    1
}
fn default_poll_ms() -> u64 {
    60_000
}
fn default_timeout_ms() -> u64 {
    1_000
}
fn default_retries() -> u32 {
    2
}
fn default_scale() -> f64 {
    1.0
}

/// Which register table a point is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Holding registers (function 3).
    #[default]
    Holding,
    /// Input registers (function 4).
    Input,
}

/// One measured quantity on a device (`[[modbus.points]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Meter or point id, sent as the reading's `point`.
    pub point: String,
    /// Catalog indicator code, e.g. `electricity`.
    pub indicator: String,
    /// Address of the first register (0-based, as on the wire).
    pub register: u16,
    /// Register table.
    #[serde(default)]
    pub table: Table,
    /// How the registers are interpreted.
    pub data_type: DataType,
    /// Whether the first register holds the most significant word (`big`) or the least (`little`).
    #[serde(default)]
    pub word_order: Order,
    /// Byte order within each register.
    #[serde(default)]
    pub byte_order: Order,
    /// Multiplier from the register value to `unit`.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// One of the indicator's catalog units, e.g. `kWh`.
    pub unit: String,
    /// Whether this is a cumulative register (rollover tracking); default:
    /// whether the catalog calls the indicator a counter.
    #[serde(default)]
    pub counter: Option<bool>,
}

/// Why the Modbus configuration was refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ModbusConfigError {
    #[error("modbus device name {0:?} is used twice (names key each device's cursor)")]
    DuplicateDevice(String),
    #[error("modbus device {device:?}: {problem}")]
    Device { device: String, problem: String },
    #[error("modbus device {device:?}, point {point:?}: {problem}")]
    Point {
        device: String,
        point: String,
        problem: String,
    },
    #[error("enterprise {enterprise}: {indicator} at point {point:?} is read twice")]
    DuplicatePoint {
        enterprise: EnterpriseId,
        indicator: String,
        point: String,
    },
}

impl ModbusConfig {
    /// Checks the device against the catalog: every point's indicator must
    /// take timestamped readings in the configured unit, and its registers
    /// must fit the address space.
    pub fn check(&self, validator: &Validator) -> Result<ModbusDevice, ModbusConfigError> {
        let device = |problem: &str| ModbusConfigError::Device {
            device: self.name.clone(),
            problem: problem.to_owned(),
        };
        if self.name.is_empty() {
            return Err(device("name is empty"));
        }
        match (self.host.is_empty(), &self.serial) {
            (true, None) => return Err(device("give host (Modbus TCP) or serial (Modbus RTU)")),
            (false, Some(_)) => return Err(device("give host or serial, not both")),
            #[cfg(not(feature = "serial"))]
            (true, Some(_)) => return Err(device("this agent was built without serial ports (feature `serial`)")),
            _ => {}
        }
        if self.poll_ms == 0 || self.timeout_ms == 0 {
            return Err(device("poll_ms and timeout_ms must be above zero"));
        }
        if self.points.is_empty() {
            return Err(device("has no points"));
        }
        let mut points = Vec::with_capacity(self.points.len());
        for p in &self.points {
            let bad = |problem: String| ModbusConfigError::Point {
                device: self.name.clone(),
                point: p.point.clone(),
                problem,
            };
            if p.point.is_empty() || p.point.chars().count() > 64 || p.point.chars().any(char::is_control) {
                return Err(bad("point ids are 1 to 64 printable characters".into()));
            }
            let ind = crate::sources::admit::series(&validator.catalog, &p.indicator, &p.unit, "a meter reads")
                .map_err(bad)?;
            if u32::from(p.register) + u32::from(p.data_type.words()) > 65_536 {
                return Err(bad(format!(
                    "{:?} at register {} runs past register 65535",
                    p.data_type, p.register
                )));
            }
            let counter = p.counter.unwrap_or(ind.kind == IndicatorKind::Counter);
            if !p.scale.is_finite() || p.scale == 0.0 || (counter && p.scale < 0.0) {
                return Err(bad(format!(
                    "scale {} must be finite, non-zero, and positive for a counter",
                    p.scale
                )));
            }
            points.push(Point {
                cfg: p.clone(),
                counter,
                key: crate::sources::series::key(&p.indicator, &p.point),
            });
        }
        Ok(ModbusDevice {
            config: self.clone(),
            points,
            validator: validator.clone(),
            clock: None,
            #[cfg(feature = "serial")]
            line: None,
            stats: Arc::new(ModbusStats::default()),
        })
    }
}

/// Checks every configured device, and that no two devices share a name and
/// no two points report the same indicator and point id for one enterprise
/// (their readings would overwrite each other downstream).
pub fn check_all(devices: &[ModbusConfig], validator: &Validator) -> Result<Vec<ModbusDevice>, ModbusConfigError> {
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(devices.len());
    for d in devices {
        if !names.insert(d.name.as_str()) {
            return Err(ModbusConfigError::DuplicateDevice(d.name.clone()));
        }
        for p in &d.points {
            if !seen.insert((d.enterprise.clone(), p.indicator.clone(), p.point.clone())) {
                return Err(ModbusConfigError::DuplicatePoint {
                    enterprise: d.enterprise.clone(),
                    indicator: p.indicator.clone(),
                    point: p.point.clone(),
                });
            }
        }
        out.push(d.check(validator)?);
    }
    Ok(out)
}

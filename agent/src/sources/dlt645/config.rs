//! The `[[dlt645]]` configuration and its start-up checks: every meter's
//! indicator must be a kWh counter in the catalog, and a meter total or a
//! point may be configured only once. Meters are grouped by bus here (a
//! gateway's `host:port`, or `serial:` and a port's name), as meters on one
//! bus share its connection.

use super::{Address, Dlt645Gateway, Dlt645Stats, Meter, Protocol, Quantity, UNIT};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use zonesync_proto::{EnterpriseId, IndicatorKind, Validator};

/// One meter reading (`[[dlt645]]`): a meter on a bus — behind a
/// serial-to-TCP gateway (`gateway`) or on the agent's own serial port
/// (`serial`) — and which total to read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dlt645Config {
    /// The serial-to-TCP gateway, `host:port`; meters naming the same gateway share one connection.
    #[serde(default)]
    pub gateway: String,
    /// The `[[serial]]` port the meter is wired to (instead of `gateway`); meters on one port are read in turn.
    #[serde(default)]
    pub serial: Option<String>,
    /// The edition the meter speaks: `"2007"` (default) or `"1997"`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Meter address, the 12 digits on its nameplate.
    pub address: Address,
    /// Credit code of the enterprise the meter belongs to.
    pub enterprise: EnterpriseId,
    /// Point id sent with the readings (default: the address).
    #[serde(default)]
    pub point: Option<String>,
    /// `combined` (DI 00000000), `forward` (00010000) or `reverse` (00020000) active energy.
    #[serde(default)]
    pub quantity: Quantity,
    /// Catalog counter indicator the total is sent as.
    #[serde(default = "default_indicator")]
    pub indicator: String,
    /// Time between reads of this meter, milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Longest wait for the connection or an answer, milliseconds (RS-485 at 2400 baud is slow).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Further attempts after a failed read.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Send four 0xFE bytes before each request to wake the meters' receivers.
    #[serde(default = "default_wake_up")]
    pub wake_up: bool,
}

impl Dlt645Config {
    /// The point id its readings carry: `point`, or else the meter's address.
    pub fn point_id(&self) -> String {
        self.point.clone().unwrap_or_else(|| self.address.to_string())
    }
}

fn default_indicator() -> String {
    "electricity".into()
}
fn default_poll_ms() -> u64 {
    60_000
}
fn default_timeout_ms() -> u64 {
    2_000
}
fn default_retries() -> u32 {
    2
}
fn default_wake_up() -> bool {
    true
}

/// Why the DL/T 645 configuration was refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Dlt645ConfigError {
    #[error("dlt645 meter {address} on {gateway}: {problem}")]
    Meter {
        gateway: String,
        address: Address,
        problem: String,
    },
    #[error("dlt645 meter {address} on {gateway} is configured twice for the {quantity:?} total")]
    Duplicate {
        gateway: String,
        address: Address,
        quantity: Quantity,
    },
    #[error("enterprise {enterprise}: {indicator} at point {point:?} is read twice")]
    DuplicatePoint {
        enterprise: EnterpriseId,
        indicator: String,
        point: String,
    },
}

/// Checks every configured meter against the catalog and groups them by gateway.
pub fn check_all(meters: &[Dlt645Config], validator: &Validator) -> Result<Vec<Dlt645Gateway>, Dlt645ConfigError> {
    let mut by_gateway: BTreeMap<String, Vec<Meter>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut points = BTreeSet::new();
    for m in meters {
        let place = match &m.serial {
            Some(port) => format!("serial port {port}"),
            None => m.gateway.clone(),
        };
        let bad = |problem: String| Dlt645ConfigError::Meter {
            gateway: place.clone(),
            address: m.address,
            problem,
        };
        let bus = match (&m.serial, m.gateway.is_empty()) {
            (Some(_), false) => return Err(bad("give gateway or serial, not both".into())),
            #[cfg(not(feature = "serial"))]
            (Some(_), true) => {
                return Err(bad(
                    "this agent was built without serial ports (feature `serial`)".into()
                ))
            }
            #[cfg(feature = "serial")]
            (Some(port), true) => format!("{}{port}", super::SERIAL_BUS),
            (None, _) => {
                if m.gateway
                    .rsplit_once(':')
                    .and_then(|(h, p)| (!h.is_empty()).then_some(p))
                    .and_then(|p| p.parse::<u16>().ok())
                    .is_none()
                {
                    return Err(bad("gateway must be host:port (or give serial)".into()));
                }
                m.gateway.clone()
            }
        };
        if m.protocol == Protocol::V1997 && m.quantity.data_id_1997().is_none() {
            return Err(bad(format!(
                "DL/T 645-1997 has no {:?} total; read forward or reverse",
                m.quantity
            )));
        }
        if m.poll_ms == 0 || m.timeout_ms == 0 {
            return Err(bad("poll_ms and timeout_ms must be above zero".into()));
        }
        let ind = validator
            .catalog
            .get(&m.indicator)
            .ok_or_else(|| bad(format!("indicator {:?} is not in the catalog", m.indicator)))?;
        if ind.kind != IndicatorKind::Counter || ind.factor(UNIT).is_none() {
            return Err(bad(format!(
                "indicator {:?} must be a counter measured in kWh; a DL/T 645 total is one",
                m.indicator
            )));
        }
        let point = m.point_id();
        if point.is_empty() || point.chars().count() > 64 || point.chars().any(char::is_control) {
            return Err(bad("point ids are 1 to 64 printable characters".into()));
        }
        if !seen.insert((bus.clone(), m.address, m.quantity)) {
            return Err(Dlt645ConfigError::Duplicate {
                gateway: place.clone(),
                address: m.address,
                quantity: m.quantity,
            });
        }
        if !points.insert((m.enterprise.clone(), m.indicator.clone(), point.clone())) {
            return Err(Dlt645ConfigError::DuplicatePoint {
                enterprise: m.enterprise.clone(),
                indicator: m.indicator.clone(),
                point,
            });
        }
        let key = format!("{}/{:?}", m.address, m.quantity).to_lowercase();
        by_gateway.entry(bus).or_default().push(Meter {
            cfg: m.clone(),
            point,
            key,
        });
    }
    Ok(by_gateway
        .into_iter()
        .map(|(gateway, meters)| Dlt645Gateway {
            gateway,
            meters,
            validator: validator.clone(),
            clock: None,
            #[cfg(feature = "serial")]
            serial: None,
            stats: Arc::new(Dlt645Stats::default()),
        })
        .collect())
}

//! The gateway's own serial ports (RS-485 adapters, `/dev/ttyS1`,
//! `/dev/ttyUSB0`): their line settings and how one is opened. A port is a
//! transport only — Modbus RTU devices (`sources::modbus`) and DL/T 645
//! meters (`sources::dlt645`) speak their own protocols over it exactly as
//! they do over TCP, so register maps, counters, rollover and replacement
//! handling are the same code.
//!
//! An RS-485 bus is half-duplex and one port is one bus: every device on it
//! must wait its turn. So a port is opened once and shared through a
//! [`SerialLine`], whose lock a source holds for a whole exchange (a Modbus
//! poll, a DL/T 645 round); the port is closed after a transport error and
//! opened again by the next exchange, which also drops any late bytes.
//!
//! ```toml
//! [[serial]]
//! name = "rs485-1"
//! device = "/dev/ttyS1"
//! baud_rate = 9600
//! parity = "even"
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio_serial::{DataBits, Parity as SerialParity, SerialStream, StopBits};

/// One serial port of the gateway (`[[serial]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Name the `[[modbus]]` and `[[dlt645]]` tables refer to (`serial = "rs485-1"`).
    pub name: String,
    /// The device file, e.g. `/dev/ttyS1` or `/dev/ttyUSB0`.
    pub device: String,
    /// Line speed, bits per second (DL/T 645 meters mostly 2400, Modbus meters 9600).
    #[serde(default = "default_baud")]
    pub baud_rate: u32,
    /// 7 or 8 data bits.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// `none`, `even` (the default of Modbus RTU and DL/T 645) or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// 1 or 2 stop bits.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

/// Parity bit of a serial line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity: what both Modbus RTU (its default 8E1) and DL/T 645 (8E1) specify.
    #[default]
    Even,
    /// Odd parity.
    Odd,
}

/// Why a `[[serial]]` table, or a source's reference to one, was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SerialConfigError {
    #[error("serial port {name:?}: {problem}")]
    Port { name: String, problem: String },
    #[error("serial port name {0:?} is used twice")]
    DuplicateName(String),
    #[error("serial device {0:?} is configured twice (one device is one bus: give it one name)")]
    DuplicateDevice(String),
    #[error("{source_kind} {source_name:?} names serial port {port:?}, which no [[serial]] table defines")]
    Unknown {
        source_kind: &'static str,
        source_name: String,
        port: String,
    },
    #[error("serial port {port:?} is used by both Modbus RTU and DL/T 645: a bus speaks one protocol")]
    MixedProtocols { port: String },
}

impl SerialConfig {
    /// Checks the line settings; an impossible setting is refused at start-up
    /// rather than on every open.
    pub fn check(&self) -> Result<(), SerialConfigError> {
        let bad = |problem: &str| SerialConfigError::Port {
            name: self.name.clone(),
            problem: problem.to_owned(),
        };
        if self.name.is_empty() || self.name.len() > 64 || self.name.chars().any(char::is_control) {
            return Err(bad("name must be 1 to 64 printable characters"));
        }
        if self.device.is_empty() {
            return Err(bad("device is empty"));
        }
        if !(50..=4_000_000).contains(&self.baud_rate) {
            return Err(bad("baud_rate must be between 50 and 4000000"));
        }
        if !matches!(self.data_bits, 7 | 8) {
            return Err(bad("data_bits must be 7 or 8"));
        }
        if !matches!(self.stop_bits, 1 | 2) {
            return Err(bad("stop_bits must be 1 or 2"));
        }
        Ok(())
    }

    /// `device baud/8E1`, for logs and `check`.
    pub fn describe(&self) -> String {
        let p = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        format!(
            "{} {}/{}{p}{}",
            self.device, self.baud_rate, self.data_bits, self.stop_bits
        )
    }

    /// Opens the port with its line settings, for exclusive use by this process.
    pub fn open(&self) -> std::io::Result<SerialStream> {
        let builder = tokio_serial::new(&self.device, self.baud_rate)
            .data_bits(if self.data_bits == 7 {
                DataBits::Seven
            } else {
                DataBits::Eight
            })
            .parity(match self.parity {
                Parity::None => SerialParity::None,
                Parity::Even => SerialParity::Even,
                Parity::Odd => SerialParity::Odd,
            })
            .stop_bits(if self.stop_bits == 2 {
                StopBits::Two
            } else {
                StopBits::One
            });
        SerialStream::open(&builder).map_err(std::io::Error::from)
    }
}

/// One opened-on-demand port shared by the sources on its bus: `T` is what
/// an exchange keeps between turns (a Modbus context), `None` while the port
/// is closed.
pub struct SerialLine<T> {
    /// The port's settings.
    pub config: SerialConfig,
    /// The open port, held by one exchange at a time.
    pub link: tokio::sync::Mutex<Option<T>>,
}

impl<T> std::fmt::Debug for SerialLine<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialLine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T> SerialLine<T> {
    /// A closed line.
    pub fn new(config: SerialConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            link: tokio::sync::Mutex::new(None),
        })
    }
}

/// Checks every `[[serial]]` table: settings valid, names and devices unique.
pub fn check_all(ports: &[SerialConfig]) -> Result<BTreeMap<String, SerialConfig>, SerialConfigError> {
    let mut out = BTreeMap::new();
    let mut devices = BTreeSet::new();
    for p in ports {
        p.check()?;
        if !devices.insert(p.device.as_str()) {
            return Err(SerialConfigError::DuplicateDevice(p.device.clone()));
        }
        if out.insert(p.name.clone(), p.clone()).is_some() {
            return Err(SerialConfigError::DuplicateName(p.name.clone()));
        }
    }
    Ok(out)
}

/// Gives each Modbus RTU device its port, one shared [`SerialLine`] per
/// port, and each DL/T 645 serial bus its port's settings; refuses a port
/// no `[[serial]]` table defines, or one both protocols use.
pub fn attach(
    ports: &BTreeMap<String, SerialConfig>,
    modbus: Vec<super::modbus::ModbusDevice>,
    dlt645: Vec<super::dlt645::Dlt645Gateway>,
) -> Result<(Vec<super::modbus::ModbusDevice>, Vec<super::dlt645::Dlt645Gateway>), SerialConfigError> {
    let find = |kind: &'static str, source: &str, port: &str| {
        ports.get(port).ok_or_else(|| SerialConfigError::Unknown {
            source_kind: kind,
            source_name: source.to_owned(),
            port: port.to_owned(),
        })
    };
    let mut lines: BTreeMap<String, Arc<SerialLine<tokio_modbus::client::Context>>> = BTreeMap::new();
    let mut devices = Vec::with_capacity(modbus.len());
    for d in modbus {
        let Some(port) = d.config().serial.clone() else {
            devices.push(d);
            continue;
        };
        let cfg = find("modbus device", &d.config().name, &port)?;
        let line = lines
            .entry(port)
            .or_insert_with(|| SerialLine::new(cfg.clone()))
            .clone();
        devices.push(d.with_line(line));
    }
    let mut buses = Vec::with_capacity(dlt645.len());
    for g in dlt645 {
        let Some(port) = g.serial_port().map(str::to_owned) else {
            buses.push(g);
            continue;
        };
        if lines.contains_key(&port) {
            return Err(SerialConfigError::MixedProtocols { port });
        }
        let cfg = find("dlt645 bus", &port, &port)?;
        buses.push(g.with_serial(cfg.clone()));
    }
    Ok((devices, buses))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(toml_text: &str) -> SerialConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_are_the_meter_protocols_own_and_impossible_settings_are_refused() {
        let p = port("name = \"rs485-1\"\ndevice = \"/dev/ttyS1\"\n");
        assert_eq!(
            (p.baud_rate, p.data_bits, p.parity, p.stop_bits),
            (9600, 8, Parity::Even, 1)
        );
        assert_eq!(p.describe(), "/dev/ttyS1 9600/8E1");
        assert!(p.check().is_ok());
        for (extra, why) in [
            ("baud_rate = 0", "baud_rate"),
            ("data_bits = 9", "data_bits"),
            ("stop_bits = 3", "stop_bits"),
        ] {
            let p = port(&format!("name = \"a\"\ndevice = \"/dev/x\"\n{extra}\n"));
            let e = p.check().unwrap_err().to_string();
            assert!(e.contains(why), "{extra}: {e}");
        }
        assert!(toml::from_str::<SerialConfig>("name = \"a\"\ndevice = \"/dev/x\"\nparity = \"mark\"\n").is_err());
        assert!(toml::from_str::<SerialConfig>("name = \"a\"\ndevice = \"/dev/x\"\nspeed = 1\n").is_err());
    }

    #[test]
    fn one_device_one_name() {
        let a = port("name = \"a\"\ndevice = \"/dev/ttyS1\"\n");
        let b = port("name = \"b\"\ndevice = \"/dev/ttyS1\"\n");
        let a2 = port("name = \"a\"\ndevice = \"/dev/ttyS2\"\n");
        assert_eq!(
            check_all(&[a.clone(), b]),
            Err(SerialConfigError::DuplicateDevice("/dev/ttyS1".into()))
        );
        assert_eq!(
            check_all(&[a.clone(), a2]),
            Err(SerialConfigError::DuplicateName("a".into()))
        );
        assert_eq!(check_all(&[a]).map(|m| m.len()), Ok(1));
    }

    #[test]
    fn the_commented_example_is_valid_once_uncommented() {
        #[derive(serde::Deserialize)]
        struct Example {
            serial: Vec<SerialConfig>,
            dlt645: Vec<crate::sources::dlt645::Dlt645Config>,
            modbus: Vec<crate::sources::modbus::ModbusConfig>,
        }
        let text = crate::sources::dlt645::tests::example_block("# [[serial]]");
        let ex: Example = toml::from_str(&text).unwrap();
        let v = zonesync_proto::Validator::new(zonesync_proto::Catalog::builtin().unwrap(), Default::default());
        let ports = check_all(&ex.serial).unwrap();
        let modbus = crate::sources::modbus::check_all(&ex.modbus, &v).unwrap();
        let dlt645 = crate::sources::dlt645::check_all(&ex.dlt645, &v).unwrap();
        let (modbus, dlt645) = attach(&ports, modbus, dlt645).unwrap();
        assert_eq!(modbus[0].endpoint(), "/dev/ttyUSB0 9600/8E1");
        assert_eq!(dlt645[0].endpoint(), "/dev/ttyS1 2400/8E1");
    }

    #[tokio::test]
    async fn a_missing_device_is_an_io_error_not_a_panic() {
        let p = port("name = \"a\"\ndevice = \"/nonexistent/ttyZZ\"\n");
        assert!(p.open().is_err());
    }
}

//! Plant-side peers the agent reads from, run as real processes: a pymodbus
//! Modbus TCP meter (`tests/peers/modbus_meter.py`) whose registers the test
//! sets through a JSON file the meter re-reads on every request, and a bus of
//! DL/T 645 meters behind a TCP gateway (`tests/peers/dlt645_meter.py`, the
//! PyPI `dlt645` library's meter service), set the same way.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Modbus meter process — TCP on a free loopback port, or RTU on a serial
/// device — killed when dropped.
pub struct ModbusMeter {
    child: Option<Child>,
    /// Its port (TCP).
    pub port: u16,
    /// RTU: the serial device and the unit ids it answers as.
    serial: Option<(PathBuf, String)>,
    registers: PathBuf,
    log: PathBuf,
    holding: BTreeMap<u16, u16>,
    input: BTreeMap<u16, u16>,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers").join(name)
}

/// Starts a Python peer script with `args`, its stderr in `log`, and waits
/// (generously: the machine is shared) for it to print "listening".
pub(crate) fn spawn_peer(name: &str, args: &[&std::ffi::OsStr], log: &Path, what: &str) -> Child {
    let log_file = std::fs::File::create(log).expect("create peer log");
    let mut child = Command::new("python3")
        .arg(script(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("start python3 for the {what} ({e}); scripts/test.sh checks for it"));
    let out = child.stdout.take().expect("peer stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) if l.starts_with("listening") => return child,
            Ok(_) => {}
            Err(e) => panic!(
                "the {what} did not start ({e}); scripts/test.sh installs its Python package\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    }
}

impl ModbusMeter {
    /// Starts a meter with no registers, its files in `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, None)
    }

    /// Starts an RTU meter on serial device `device` answering as each of `units`.
    pub fn start_serial(dir: &Path, device: &Path, units: &[u8]) -> Self {
        let units = units.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
        Self::start_on(dir, Some((device.to_owned(), units)))
    }

    fn start_on(dir: &Path, serial: Option<(PathBuf, String)>) -> Self {
        let mut m = Self {
            child: None,
            port: crate::free_port(),
            serial,
            registers: dir.join("modbus-registers.json"),
            log: dir.join("modbus-meter.log"),
            holding: BTreeMap::new(),
            input: BTreeMap::new(),
        };
        m.write();
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut args: Vec<&std::ffi::OsStr> = match &self.serial {
            Some((device, units)) => vec![
                "--serial".as_ref(),
                device.as_os_str(),
                "--units".as_ref(),
                units.as_ref(),
            ],
            None => vec!["--port".as_ref(), port.as_ref()],
        };
        args.extend(["--registers".as_ref(), self.registers.as_os_str()]);
        self.child = Some(spawn_peer(
            "modbus_meter.py",
            &args,
            &self.log,
            "Modbus meter (pymodbus 3.x)",
        ));
    }

    /// Writes the register file whole, then renames it into place, so the
    /// meter never reads half of it.
    fn write(&self) {
        let table = |t: &BTreeMap<u16, u16>| -> serde_json::Map<String, serde_json::Value> {
            t.iter().map(|(a, v)| (a.to_string(), (*v).into())).collect()
        };
        let doc = serde_json::json!({ "holding": table(&self.holding), "input": table(&self.input) });
        let tmp = self.registers.with_extension("json.tmp");
        std::fs::write(&tmp, doc.to_string()).expect("write register file");
        std::fs::rename(&tmp, &self.registers).expect("rename register file");
    }

    /// Sets holding registers from `address` on.
    pub fn set_holding(&mut self, address: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            self.holding.insert(address + i as u16, *w);
        }
        self.write();
    }

    /// Sets input registers from `address` on.
    pub fn set_input(&mut self, address: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            self.input.insert(address + i as u16, *w);
        }
        self.write();
    }

    /// Kills the meter (as a power cut would) and waits for it.
    pub fn stop(&mut self) {
        super::kill_child(&mut self.child);
    }

    /// Starts it again on the same port with the current registers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for ModbusMeter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A DL/T 645 bus behind a transparent serial-to-TCP gateway, on a free
/// loopback port; killed when dropped.
pub struct Dlt645Bus {
    child: Option<Child>,
    /// The gateway's port.
    pub port: u16,
    /// The serial device the bus is on instead of a gateway.
    serial: Option<PathBuf>,
    file: PathBuf,
    log: PathBuf,
    /// Nameplate address → data identifier (8 hex digits) → kWh.
    meters: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Dlt645Bus {
    /// Starts a bus with no meters, its files in `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, None)
    }

    /// Starts a bus on serial device `device` (the library's RTU server)
    /// with `meters` (address, data identifier, kWh) on it from the start:
    /// the library takes about a second to make a meter, so meters made
    /// before "listening" answer the first request in time.
    pub fn start_serial(dir: &Path, device: &Path, meters: &[(&str, &str, f64)]) -> Self {
        Self::start_with(dir, Some(device.to_owned()), meters)
    }

    fn start_on(dir: &Path, serial: Option<PathBuf>) -> Self {
        Self::start_with(dir, serial, &[])
    }

    fn start_with(dir: &Path, serial: Option<PathBuf>, meters: &[(&str, &str, f64)]) -> Self {
        let mut b = Self {
            child: None,
            port: crate::free_port(),
            serial,
            file: dir.join("dlt645-meters.json"),
            log: dir.join("dlt645-meter.log"),
            meters: BTreeMap::new(),
        };
        for (address, di, kwh) in meters {
            b.meters
                .entry((*address).to_owned())
                .or_default()
                .insert((*di).to_owned(), *kwh);
        }
        b.write();
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut args: Vec<&std::ffi::OsStr> = match &self.serial {
            Some(device) => vec!["--serial".as_ref(), device.as_os_str()],
            None => vec!["--port".as_ref(), port.as_ref()],
        };
        args.extend(["--meters".as_ref(), self.file.as_os_str()]);
        self.child = Some(spawn_peer(
            "dlt645_meter.py",
            &args,
            &self.log,
            "DL/T 645 meter (PyPI dlt645)",
        ));
    }

    fn write(&self) {
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string(&self.meters).expect("meters json")).expect("write meters file");
        std::fs::rename(&tmp, &self.file).expect("rename meters file");
    }

    /// Sets a meter's total for data identifier `di` (e.g. `"00010000"`), in kWh.
    pub fn set(&mut self, address: &str, di: &str, kwh: f64) {
        self.meters
            .entry(address.to_owned())
            .or_default()
            .insert(di.to_owned(), kwh);
        self.write();
    }

    /// Takes a meter off the bus: it stops answering.
    pub fn remove(&mut self, address: &str) {
        self.meters.remove(address);
        self.write();
    }

    /// Starts it again with the current meters (after [`Self::stop`], or a pty that went away).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Kills the gateway and waits for it.
    pub fn stop(&mut self) {
        super::kill_child(&mut self.child);
    }
}

impl Drop for Dlt645Bus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The one login a secure [`OpcUaServer`] accepts.
pub enum Login<'a> {
    /// A user name and password.
    Password(&'a str, &'a str),
    /// An X.509 user certificate (DER file); asyncua checks the token's signature.
    Certificate(&'a Path),
}

/// An OPC UA server (`tests/peers/opcua_server.py`, PyPI `asyncua`) on a
/// free loopback port, its variables set through a JSON file it re-reads;
/// killed when dropped.
pub struct OpcUaServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    file: PathBuf,
    log: PathBuf,
    /// Basic256Sha256 with these login arguments, and where its certificate and key are.
    secure: Option<(Vec<OsString>, PathBuf, PathBuf)>,
    /// Variable name → (OPC UA type, value).
    values: BTreeMap<String, (String, serde_json::Value)>,
}

impl OpcUaServer {
    /// Starts a server offering security policy None to anonymous users, its files in `dir`.
    pub fn start(dir: &Path, values: &[(&str, &str, f64)]) -> Self {
        Self::start_with(dir, None, values)
    }

    /// Starts a server offering only Basic256Sha256 (Sign, SignAndEncrypt)
    /// to the one `login` it accepts; its certificate is made on the first
    /// start at [`Self::certificate`].
    pub fn start_secure(dir: &Path, login: Login<'_>, values: &[(&str, &str, f64)]) -> Self {
        let login = match login {
            Login::Password(user, password) => vec!["--user".into(), format!("{user}:{password}").into()],
            Login::Certificate(der) => vec!["--user-cert".into(), der.as_os_str().to_owned()],
        };
        let secure = (login, dir.join("opcua-server.der"), dir.join("opcua-server.pem"));
        Self::start_with(dir, Some(secure), values)
    }

    fn start_with(dir: &Path, secure: Option<(Vec<OsString>, PathBuf, PathBuf)>, values: &[(&str, &str, f64)]) -> Self {
        let mut s = Self {
            child: None,
            port: crate::free_port(),
            file: dir.join("opcua-values.json"),
            log: dir.join("opcua-server.log"),
            secure,
            values: BTreeMap::new(),
        };
        for (name, kind, v) in values {
            s.values
                .insert((*name).to_owned(), ((*kind).to_owned(), json_number(kind, *v)));
        }
        s.write();
        s.spawn();
        s
    }

    /// The server's certificate (DER), once started secure.
    pub fn certificate(&self) -> Option<&Path> {
        self.secure.as_ref().map(|(_, cert, _)| cert.as_path())
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/zonesync/", self.port)
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--port".as_ref(),
            port.as_ref(),
            "--values".as_ref(),
            self.file.as_os_str(),
        ];
        if let Some((login, cert, key)) = &self.secure {
            args.extend(login.iter().map(|a| a.as_os_str()));
            args.extend([
                "--secure".as_ref(),
                "--cert".as_ref(),
                cert.as_os_str(),
                "--key".as_ref(),
                key.as_os_str(),
            ]);
        }
        self.child = Some(spawn_peer(
            "opcua_server.py",
            &args,
            &self.log,
            "OPC UA server (PyPI asyncua)",
        ));
    }

    fn write(&self) {
        let doc: serde_json::Map<String, serde_json::Value> = self
            .values
            .iter()
            .map(|(k, (t, v))| (k.clone(), serde_json::json!([t, v])))
            .collect();
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::Value::Object(doc).to_string()).expect("write values file");
        std::fs::rename(&tmp, &self.file).expect("rename values file");
    }

    /// Sets variable `name` (of OPC UA type `kind`, e.g. `UInt16`, `Double`) to `value`.
    pub fn set(&mut self, name: &str, kind: &str, value: f64) {
        self.values
            .insert(name.to_owned(), (kind.to_owned(), json_number(kind, value)));
        self.write();
    }

    /// Kills the server (as a DCS going down would) and waits for it.
    pub fn stop(&mut self) {
        super::kill_child(&mut self.child);
    }

    /// Starts it again on the same port, with the same certificate and the current values.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

/// Integer types are written as JSON integers (asyncua refuses 5.0 for a UInt16).
fn json_number(kind: &str, v: f64) -> serde_json::Value {
    if kind.contains("Int") {
        serde_json::json!(v as i64)
    } else {
        serde_json::json!(v)
    }
}

impl Drop for OpcUaServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes an OPC UA certificate (DER) and key (PEM) for application URI
/// `uri`, as `dir/<stem>.der` and `dir/<stem>.pem`, with the `cryptography`
/// package asyncua brings: a test-built agent would take long to make its
/// own RSA key unoptimised. Serves as the agent's instance certificate and
/// as a user's X.509 identity.
pub fn opcua_certificate(dir: &Path, stem: &str, uri: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{stem}.der")), dir.join(format!("{stem}.pem")));
    let out = Command::new("python3")
        .arg(script("opcua_server.py"))
        .args(["--make-client-cert", uri])
        .arg(&cert)
        .arg(&key)
        .output()
        .expect("run python3 for the OPC UA certificate");
    assert!(
        out.status.success() && cert.exists() && key.exists(),
        "certificate not made: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

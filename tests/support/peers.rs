//! Plant-side peers the agent reads from, run as real processes: a pymodbus
//! Modbus TCP meter (`tests/peers/modbus_meter.py`) whose registers the test
//! sets through a JSON file the meter re-reads on every request.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Modbus TCP meter process on a free loopback port; killed when dropped.
pub struct ModbusMeter {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    registers: PathBuf,
    log: PathBuf,
    holding: BTreeMap<u16, u16>,
    input: BTreeMap<u16, u16>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/modbus_meter.py")
}

impl ModbusMeter {
    /// Starts a meter with no registers, its files in `dir`.
    pub fn start(dir: &Path) -> Self {
        let mut m = Self {
            child: None,
            port: crate::free_port(),
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
        let log = std::fs::File::create(&self.log).expect("create meter log");
        let mut child = Command::new("python3")
            .arg(script())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--registers")
            .arg(&self.registers)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start python3 (needed for the Modbus meter; scripts/test.sh checks for it)");
        let out = child.stdout.take().expect("meter stdout");
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.starts_with("listening") => return,
                Ok(_) => {}
                Err(e) => panic!(
                    "the Modbus meter did not start ({e}); is pymodbus 3.x installed (scripts/test.sh installs it)?\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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

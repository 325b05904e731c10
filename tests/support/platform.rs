//! A key-energy-user monitoring platform's upload endpoint as a real HTTPS
//! peer (`tests/peers/energy_platform.py`, Python's ssl on the test CA's
//! certificate for 127.0.0.1): the test sets how it answers through a mode
//! file it reads per request, and reads back every request it logged.

use crate::certs::Certs;
use crate::peers::spawn_peer;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// A running platform; killed when dropped.
pub struct EnergyPlatform {
    child: Option<Child>,
    /// Its HTTPS port.
    pub port: u16,
    state: PathBuf,
    cert: (PathBuf, PathBuf),
    token: String,
}

impl EnergyPlatform {
    /// Starts a platform with its files in `dir`, serving `certs`' server
    /// certificate and requiring `Authorization: Bearer {token}`.
    pub fn start(dir: &std::path::Path, certs: &Certs, token: &str) -> Self {
        std::fs::create_dir_all(dir).expect("platform dir");
        let mut p = Self {
            child: None,
            port: crate::free_port(),
            state: dir.to_owned(),
            cert: certs.server.clone(),
            token: token.to_owned(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let args: Vec<&std::ffi::OsStr> = vec![
            "--port".as_ref(),
            port.as_ref(),
            "--cert".as_ref(),
            self.cert.0.as_os_str(),
            "--key".as_ref(),
            self.cert.1.as_os_str(),
            "--state".as_ref(),
            self.state.as_os_str(),
            "--token".as_ref(),
            self.token.as_ref(),
        ];
        self.child = Some(spawn_peer(
            "energy_platform.py",
            &args,
            &self.state.join("platform.log"),
            "energy platform (python3's http.server and ssl)",
        ));
    }

    /// The base URL the agent uploads to.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/api/upload", self.port)
    }

    /// How it answers from the next request on: ok, refuse, timeout, wrong, html, drop.
    pub fn set_mode(&self, mode: &str) {
        let tmp = self.state.join("mode.tmp");
        std::fs::write(&tmp, mode).expect("write mode");
        std::fs::rename(&tmp, self.state.join("mode")).expect("rename mode");
    }

    /// Every request logged so far: {"mode", "auth_ok", "records"?}.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state.join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Requests answered in `mode`.
    pub fn answered_in(&self, mode: &str) -> usize {
        self.requests().iter().filter(|r| r["mode"] == mode).count()
    }

    /// Every record it accepted (answered success), in arrival order.
    pub fn records(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["mode"] == "ok" && r["auth_ok"] == true)
            .flat_map(|r| r["records"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until `n` more requests were answered in `mode` than `since`.
    pub async fn wait_answered(&self, mode: &str, since: usize, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.answered_in(mode) < since + n {
            assert!(
                Instant::now() < deadline,
                "the platform answered {} requests in mode {mode}, waited for {}",
                self.answered_in(mode),
                since + n
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it (a data center going away) and waits for it.
    pub fn stop(&mut self) {
        super::kill_child(&mut self.child);
    }

    /// Starts it again on the same port, keeping its log.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for EnergyPlatform {
    fn drop(&mut self) {
        self.stop();
    }
}

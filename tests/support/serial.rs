//! A virtual RS-485 line for the serial-port tests: a socat pseudo-terminal
//! pair (Debian's `socat`), one end for the agent and one for the meter
//! peer, each a symlink in the test's directory. Killing socat takes both
//! ends away, as unplugging a USB RS-485 adapter would; starting it again
//! makes new ptys under the same names.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A socat pty pair; killed when dropped.
pub struct SerialPair {
    child: Option<Child>,
    /// The end the agent opens (its `[[serial]] device`).
    pub agent_end: PathBuf,
    /// The end the meter peer opens.
    pub meter_end: PathBuf,
    log: PathBuf,
}

impl SerialPair {
    /// Starts a pair named `name-agent` and `name-meter` in `dir`.
    pub fn start(dir: &Path, name: &str) -> Self {
        let mut p = Self {
            child: None,
            agent_end: dir.join(format!("{name}-agent")),
            meter_end: dir.join(format!("{name}-meter")),
            log: dir.join(format!("{name}-socat.log")),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).expect("create socat log");
        let end = |p: &Path| format!("pty,raw,echo=0,link={}", p.display());
        let child = Command::new("socat")
            .args(["-d", "-d", &end(&self.agent_end), &end(&self.meter_end)])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start socat ({e}): install Debian's `socat` (scripts/test.sh does) for the serial-port tests")
            });
        self.child = Some(child);
        // Only once socat reports its transfer loop are both ptys made, linked
        // and set raw: a peer that opened its end earlier could have its own
        // line settings overwritten by socat's (and read in canonical mode,
        // waiting for a newline that never comes).
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = |log: &Path| std::fs::read_to_string(log).is_ok_and(|l| l.contains("starting data transfer loop"));
        while !(self.agent_end.exists() && self.meter_end.exists() && ready(&self.log)) {
            assert!(
                Instant::now() < deadline,
                "socat made no pty pair in 30 s:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills socat: both ends go away (the links are removed with them).
    pub fn stop(&mut self) {
        super::kill_child(&mut self.child);
        // A killed socat cannot remove its links; the pty behind them is gone.
        let _ = std::fs::remove_file(&self.agent_end);
        let _ = std::fs::remove_file(&self.meter_end);
    }

    /// Makes a new pair under the same names.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for SerialPair {
    fn drop(&mut self) {
        self.stop();
    }
}

//! Peers for the gateway-source tests: a Sparkplug B edge node (the PyPI
//! `pysparkplug` library, `tests/peers/sparkplug_node.py`) driven line by
//! line over its stdin, and a Neuron-shaped publisher (rumqttc) — both on
//! the plant's own broker, a Mosquitto of its own.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a peer gets to answer a command.
const ANSWER: Duration = Duration::from_secs(60);

/// A Sparkplug B edge node process (group `plant`, node `edge1`, device
/// `meter-1`); killed when dropped.
pub struct SparkplugNode {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Option<Receiver<String>>,
    port: u16,
    state: PathBuf,
    log: PathBuf,
    /// Lines seen while waiting for others (e.g. "rebirth edge1").
    pub seen: Vec<String>,
}

impl SparkplugNode {
    /// Starts the node against the broker on `port`, its files in `dir`.
    pub fn start(dir: &Path, port: u16) -> Self {
        let mut n = Self {
            child: None,
            stdin: None,
            lines: None,
            port,
            state: dir.join("sparkplug-node.json"),
            log: dir.join("sparkplug-node.log"),
            seen: Vec::new(),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).expect("create node log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/sparkplug_node.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "--port",
                &self.port.to_string(),
                "--group",
                "plant",
                "--node",
                "edge1",
                "--state",
            ])
            .arg(&self.state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start python3 for the Sparkplug B node ({e}); scripts/test.sh checks for it"));
        let out = child.stdout.take().expect("node stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.stdin = child.stdin.take();
        self.child = Some(child);
        self.lines = Some(rx);
        self.wait_line("listening");
    }

    /// Waits for a stdout line starting with `prefix`; returns it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        if let Some(i) = self.seen.iter().position(|l| l.starts_with(prefix)) {
            return self.seen.remove(i);
        }
        let deadline = Instant::now() + ANSWER;
        let rx = self.lines.as_ref().expect("node running");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "the Sparkplug B node printed no {prefix:?} (scripts/test.sh installs pysparkplug); seen {:?}\n{}",
                    self.seen,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
    }

    /// Sends one command (see the script) and waits until it is done.
    pub fn command(&mut self, json: &str) {
        let stdin = self.stdin.as_mut().expect("node running");
        writeln!(stdin, "{json}").expect("write to the node");
        stdin.flush().expect("flush to the node");
        self.wait_line("done");
    }

    /// Kills the node (SIGKILL): the broker publishes its will, an NDEATH.
    pub fn kill(&mut self) {
        self.stdin = None;
        super::kill_child(&mut self.child);
        self.lines = None;
    }

    /// Starts it again: bdSeq + 1, last values, new births.
    pub fn restart(&mut self) {
        self.kill();
        self.seen.clear();
        self.spawn();
    }
}

impl Drop for SparkplugNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Publishes `payload` on `topic` at QoS 1 to the broker on `port`, and
/// waits for the broker's acknowledgement.
pub async fn publish(port: u16, topic: &str, payload: Vec<u8>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let id = format!("neuron-{}", crate::free_port());
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("queue the publish");
    let deadline = Instant::now() + ANSWER;
    loop {
        assert!(Instant::now() < deadline, "no PUBACK from the plant broker on {port}");
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), events.poll()).await;
}

//! One enterprise (E1 of the data set) with an aggregator in-process, for the
//! source tests: a broker (embedded rumqttd or a Mosquitto process), the
//! registry and aggregator files, an agent started from a config body the
//! test writes, and waiting on what the aggregator's API shows.

use crate::dataset::{E, ZONE};
use crate::{Api, Mosquitto};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use zonesync_agent::config::AgentConfig;
use zonesync_agent::shutdown::{self, Shutdown, Trigger};
use zonesync_aggregator::config::AggregatorConfig;
use zonesync_demo::broker::EmbeddedBroker;

/// How long a test waits for a value to show up.
pub const WAIT: Duration = Duration::from_secs(60);

/// Which broker the plant talks through.
pub enum Broker {
    /// rumqttd in-process.
    Embedded(EmbeddedBroker),
    /// A Mosquitto process.
    Mosquitto(Mosquitto),
}

impl Broker {
    fn port(&self) -> u16 {
        match self {
            Broker::Embedded(b) => b.addr.port(),
            Broker::Mosquitto(m) => m.port,
        }
    }
}

/// A running aggregator for E1, and the agent once started.
pub struct Plant {
    /// The aggregator's API.
    pub api: Api,
    /// Files of this test.
    pub dir: tempfile::TempDir,
    trigger: Trigger,
    signal: Shutdown,
    agent: Option<tokio::task::JoinHandle<Result<(), zonesync_agent::AgentError>>>,
    aggregator: zonesync_aggregator::Running,
    broker: Broker,
}

impl Plant {
    /// Starts a broker (Mosquitto when `mosquitto`, else embedded) and the aggregator.
    pub async fn start(mosquitto: bool) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn,rumqttd=off"))
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = if mosquitto {
            Broker::Mosquitto(Mosquitto::start(dir.path()))
        } else {
            Broker::Embedded(zonesync_demo::broker::start_embedded(0, 1 << 20).expect("embedded broker"))
        };
        let agg_cfg = write_aggregator(dir.path(), broker.port());
        let (trigger, signal) = shutdown::channel();
        let aggregator = zonesync_aggregator::start(AggregatorConfig::load(&agg_cfg).expect("config"), signal.clone())
            .await
            .expect("aggregator starts");
        let api = Api::new(&format!("http://{}", aggregator.http_addr));
        Self {
            api,
            dir,
            trigger,
            signal,
            agent: None,
            aggregator,
            broker,
        }
    }

    /// The top of an agent config for this plant (id, zone, data dir, broker, quick batching); append source tables.
    pub fn agent_header(&self, agent_id: &str) -> String {
        // The embedded broker (rumqttd) has no MQTT 5 listener here.
        let protocol = match self.broker {
            Broker::Embedded(_) => "protocol = \"3.1.1\"\n",
            Broker::Mosquitto(_) => "",
        };
        format!(
            "agent_id = \"{agent_id}\"\nzone = \"{ZONE}\"\ndata_dir = \"{}\"\n[mqtt]\nport = {}\n{protocol}reconnect_min_ms = 100\n\
             reconnect_max_ms = 1000\n[outbox]\nmax_batch_items = 50\nmax_batch_age_ms = 50\n",
            self.dir.path().join(agent_id).display(),
            self.broker.port()
        )
    }

    /// Writes `config` to `agent.toml` and runs the agent in-process.
    pub fn start_agent(&mut self, config: &str) {
        let path = self.dir.path().join("agent.toml");
        std::fs::write(&path, config).expect("write agent config");
        let cfg = AgentConfig::load(&path).expect("agent config loads");
        self.agent = Some(tokio::spawn(zonesync_agent::run(cfg, self.signal.clone())));
    }

    /// The running agent's status file (`data_dir/status.json`, rewritten every 5 s), if written yet.
    pub fn agent_status(&self, agent_id: &str) -> Option<Value> {
        let text = std::fs::read(self.dir.path().join(agent_id).join("status.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Waits until the agent's status file shows `pred` true of its counters
    /// for source `source` (e.g. `modbus:meter-1`); returns them.
    pub async fn wait_source(&self, agent_id: &str, source: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut seen = Value::Null;
        while Instant::now() < deadline {
            if let Some(s) = self.agent_status(agent_id) {
                seen = s["sources"][source].clone();
                if pred(&seen) {
                    return seen;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("source {source}: {what} not seen within {WAIT:?}; last counters {seen}");
    }

    /// Whether the agent is still running.
    pub fn agent_running(&self) -> bool {
        self.agent.as_ref().is_some_and(|a| !a.is_finished())
    }

    /// E1's page from the API.
    pub async fn enterprise(&self) -> Value {
        self.api
            .get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[0]))
            .await
    }

    /// The latest value of `point`, if any.
    pub async fn latest(&self, point: &str) -> Option<f64> {
        latest_of(&self.enterprise().await, point)
    }

    /// Waits until the latest value of `point` is exactly `want`.
    pub async fn wait_latest(&self, point: &str, want: f64) {
        let deadline = Instant::now() + WAIT;
        let mut seen = None;
        while Instant::now() < deadline {
            seen = self.latest(point).await;
            if seen == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("latest {point}: {seen:?}, expected {want} within {WAIT:?}");
    }

    /// Stops the agent (which must still be running) and the aggregator.
    pub async fn stop(self) {
        if let Some(agent) = self.agent {
            assert!(!agent.is_finished(), "the agent ran until shutdown");
            self.trigger.fire();
            agent.await.expect("agent task").expect("agent ends cleanly");
        } else {
            self.trigger.fire();
        }
        self.aggregator.wait().await;
        drop(self.broker);
    }
}

/// The latest value of `point` on an enterprise page.
pub fn latest_of(e: &Value, point: &str) -> Option<f64> {
    e["latest"]
        .as_array()?
        .iter()
        .find(|r| r["point"] == point)
        .and_then(|r| r["value"].as_f64())
}

/// Registry (zone with E1) and aggregator files; returns the aggregator's.
fn write_aggregator(dir: &Path, broker_port: u16) -> std::path::PathBuf {
    let registry = dir.join("registry.toml");
    std::fs::write(
        &registry,
        format!(
            "[[zone]]\nid = \"{ZONE}\"\nname_zh = \"测试开发区\"\nname_en = \"Test zone\"\ncity = \"济源\"\nprovince = \"河南\"\n\
             [[zone.enterprise]]\nid = \"{}\"\nname = \"E1\"\nabove_scale = true\n",
            E[0]
        ),
    )
    .expect("write registry");
    let aggregator = dir.join("aggregator.toml");
    std::fs::write(
        &aggregator,
        format!(
            "data_dir = \"{}\"\nregistry = \"{}\"\n[mqtt]\nport = {broker_port}\nclient_id = \"zonesync-aggregator-plant\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[store]\ncache_capacity_bytes = 16777216\n",
            dir.join("aggregator").display(),
            registry.display()
        ),
    )
    .expect("write aggregator config");
    aggregator
}

/// Runs `zonesync-agent check` on `config` (written to `dir/check.toml`);
/// its standard output and error.
pub async fn agent_check(dir: &Path, config: &str) -> String {
    let path = dir.join("check.toml");
    std::fs::write(&path, config).expect("write check config");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::bin("zonesync-agent"))
            .args(["check", "-c"])
            .arg(&path)
            .env("RUST_LOG", "error")
            .output()
            .expect("run zonesync-agent check")
    })
    .await
    .expect("check task");
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The line of `out` holding every one of `parts`.
pub fn line_with<'a>(out: &'a str, parts: &[&str]) -> &'a str {
    out.lines()
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no line with {parts:?} in:\n{out}"))
}

/// A counter of a source's status (0 when absent).
pub fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

impl Plant {
    /// Waits until the aggregator holds exactly the readings the agent's
    /// `sources` appended (read from its status file, so call it once they
    /// stopped growing). More would be a reading counted twice; fewer that
    /// stay fewer, one lost.
    pub async fn ledger_balances(&self, agent: &str, sources: &[&str]) {
        let deadline = Instant::now() + WAIT;
        // The status file is rewritten every 5 s: only one written after this
        // call began counts what the sources appended by then.
        let since = chrono::Utc::now();
        let (mut sent, mut stored) = (0, 0);
        while Instant::now() < deadline {
            let fresh = self.agent_status(agent).filter(|s| {
                s["written_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t > since)
            });
            let Some(status) = fresh else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            sent = sources.iter().map(|s| count(&status["sources"][*s], "readings")).sum();
            stored = self.enterprise().await["readings"].as_u64().unwrap_or(0);
            assert!(
                stored <= sent || sent == 0,
                "aggregator holds {stored} readings, the agent appended {sent}"
            );
            if stored == sent && sent > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the agent appended {sent} readings, the aggregator holds {stored}");
    }
}

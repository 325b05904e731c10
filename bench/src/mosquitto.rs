//! Mosquitto, started by the harness on a free loopback port, and its
//! command-line clients `mosquitto_pub` / `mosquitto_sub`.
//!
//! The broker's limits follow `deploy/mosquitto/zonesync.conf` (100 messages
//! in flight per client, 1 MiB packets); the queue is larger so a whole
//! benchmark's batches can wait for a subscriber, and persistence is off
//! (Mosquitto only writes it at autosave or shutdown, never per message).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Where a program is installed, looked up in the usual places.
fn find(name: &str, dirs: &[&str]) -> Option<PathBuf> {
    dirs.iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

/// The broker binary (as `tests/support` finds it).
pub fn broker_binary() -> Option<PathBuf> {
    find(
        "mosquitto",
        &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"],
    )
}

/// `mosquitto_pub` or `mosquitto_sub`.
pub fn client_binary(name: &str) -> Result<PathBuf> {
    find(name, &["/usr/bin", "/usr/local/bin"])
        .with_context(|| format!("{name} is not installed (apt-get install mosquitto-clients)"))
}

/// A free loopback port.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Peak and current resident set size of a process, bytes (VmHWM, VmRSS).
pub fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((kb("VmHWM:")? * 1024, kb("VmRSS:")? * 1024))
}

/// Waits until something accepts connections on the port, at most `limit`.
pub async fn wait_port(port: u16, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("nothing listening on 127.0.0.1:{port} after {limit:?}")
}

/// Waits for a child to exit, at most `limit`; kills it if it does not.
pub async fn wait_child(child: &mut Child, what: &str, limit: Duration) -> Result<std::process::ExitStatus> {
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => Ok(status?),
        Err(_) => {
            let _ = child.kill().await;
            bail!("{what} did not finish within {limit:?} and was killed")
        }
    }
}

/// A Mosquitto process; killed when dropped.
pub struct Broker {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Broker {
    /// Starts a broker with its configuration in `dir`.
    pub async fn start(dir: &Path) -> Result<Self> {
        let binary = broker_binary()
            .context("mosquitto is not installed (apt-get install mosquitto, as scripts/test.sh does)")?;
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n\
                 max_queued_messages 2000000\nmax_queued_bytes 0\nmax_inflight_messages 100\n\
                 max_packet_size 1048576\nmax_connections -1\nlog_dest stderr\nlog_type error\n"
            ),
        )?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting mosquitto")?;
        let b = Self { child, port };
        wait_port(port, Duration::from_secs(10)).await?;
        Ok(b)
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `-t filter` for each filter.
fn topic_args(filters: &[String]) -> Vec<&str> {
    filters.iter().flat_map(|f| ["-t", f.as_str()]).collect()
}

/// Creates a persistent session subscribed to `filters` at QoS 1 for
/// `client_id`, so messages published from now on wait for that client even
/// before it connects. (`mosquitto_sub -c -E`: subscribe, then exit.) Give
/// the aggregator's own filters (`Topic::zone_filters`) for its client id, or
/// the session would also catch what the aggregator publishes.
pub async fn prepare_session(port: u16, client_id: &str, filters: &[String]) -> Result<()> {
    let mut child = Command::new(client_binary("mosquitto_sub")?)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "mqttv311",
            "-c",
            "-i",
            client_id,
        ])
        .args(["-q", "1", "-E"])
        .args(topic_args(filters))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let st = wait_child(&mut child, "mosquitto_sub -E", Duration::from_secs(10)).await?;
    if !st.success() {
        bail!("mosquitto_sub -E for {client_id} failed: {st}");
    }
    Ok(())
}

/// `mosquitto_pub -l -q 1`: one message per line of `lines`, all to `topic`.
pub fn publisher(port: u16, topic: &str, lines: &Path) -> Result<Child> {
    let input = std::fs::File::open(lines).with_context(|| format!("opening {}", lines.display()))?;
    Ok(Command::new(client_binary("mosquitto_pub")?)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-l"])
        .stdin(Stdio::from(input))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// `mosquitto_sub -C count` resuming `client_id`'s session; output discarded.
pub fn subscriber(port: u16, client_id: &str, filters: &[String], count: usize) -> Result<Child> {
    Ok(Command::new(client_binary("mosquitto_sub")?)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "mqttv311",
            "-c",
            "-i",
            client_id,
        ])
        .args(["-q", "1", "-C", &count.to_string()])
        .args(topic_args(filters))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

//! What the integrity tests (tests/integrity.rs, tests/agent_integrity.rs)
//! need to play an attacker or a mishap: raw MQTT messages published as an
//! agent would, files damaged or copied back, a small disk filled up.

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use zonesync_proto::{Batch, Presence, Topic};

/// One message to publish at QoS 1.
pub struct Msg {
    /// Topic.
    pub topic: String,
    /// Exact payload.
    pub payload: Vec<u8>,
    /// Retained (presence).
    pub retain: bool,
}

impl Msg {
    /// A batch on its data topic.
    pub fn batch(b: &Batch) -> Self {
        Self {
            topic: Topic::data(&b.zone, &b.agent, &b.enterprise),
            payload: b.to_payload(),
            retain: false,
        }
    }

    /// A presence, retained, on its state topic.
    pub fn presence(p: &Presence) -> Self {
        Self {
            topic: Topic::state(&p.zone, &p.agent),
            payload: p.to_payload(),
            retain: true,
        }
    }
}

static CLIENTS: AtomicU64 = AtomicU64::new(0);

/// A client id unique in this test process.
pub fn client_id(role: &str) -> String {
    format!(
        "hostile-{role}-{}-{}",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::SeqCst)
    )
}

/// Publishes `msgs` in order at QoS 1 on one fresh connection (the broker
/// keeps their order to each subscriber) and waits for every PUBACK.
pub async fn publish(port: u16, msgs: Vec<Msg>) {
    let mut o = MqttOptions::new(client_id("pub"), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, 256);
    let n = msgs.len();
    let poll = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => panic!("publisher connection: {e}"),
            }
        }
    });
    for m in msgs {
        client
            .publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload)
            .await
            .expect("queue publish");
    }
    tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("every message acknowledged by the broker")
        .expect("publisher task");
}

/// Copies a directory tree (`cp -a`).
pub fn copy_tree(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp")
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// Inverts `n` bytes of `file` from the middle on.
pub fn flip_middle(file: &Path, n: usize) {
    let mut bytes = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    assert!(!bytes.is_empty(), "{} is empty", file.display());
    let from = bytes.len() / 2;
    let to = (from + n).min(bytes.len());
    for b in &mut bytes[from..to] {
        *b ^= 0xff;
    }
    std::fs::write(file, bytes).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
}

/// Cuts `file` to `len` bytes.
pub fn truncate(file: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", file.display()));
}

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Tmpfs {
    /// The mount point.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "4m") at `path`. A test that needs a
    /// full disk cannot run without one: it fails, saying why, never skips.
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs at {} ({}): this test fills a disk and needs root with CAP_SYS_ADMIN; it does not skip",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self { path: path.to_owned() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process that has not quite gone): detach it lazily.
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Fills the file system holding `dir` with a file until a write fails; returns the file.
pub fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    for chunk in [64 * 1024, 512, 1] {
        let block = vec![0xa5u8; chunk];
        while f.write_all(&block).is_ok() {}
    }
    let _ = f.sync_all();
    assert!(
        std::fs::write(dir.join("probe"), [0u8; 4096]).is_err(),
        "{} is full",
        dir.display()
    );
    path
}

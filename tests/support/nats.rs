//! nats-server processes for the federation tests: a hub with JetStream and
//! a leaf-node listener, and leaf nodes, each with its own JetStream domain,
//! on free loopback ports, with their files in the test's directory.

use crate::{free_port, wait_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The nats-server binary; scripts/test.sh installs it (Debian package `nats-server`).
pub fn nats_server_binary() -> PathBuf {
    for p in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nats-server is not installed: run scripts/test.sh, which installs it (apt-get install nats-server)");
}

/// One nats-server process.
pub struct NatsServer {
    child: Option<Child>,
    /// Client port.
    pub port: u16,
    /// Leaf-node listener port (hubs only).
    pub leaf_port: Option<u16>,
    /// MQTT listener port (a zone broker only).
    pub mqtt_port: Option<u16>,
    conf: PathBuf,
}

impl NatsServer {
    /// A hub: JetStream in domain `hub`, accepting leaf nodes, with one
    /// account `FED` holding the center's user and one user per zone, the
    /// one its leaf node connects with (password: the user name, reversed).
    /// A zone user may neither send nor receive any tally subject over its
    /// leaf connection: tallies reach the hub only by JetStream sourcing
    /// from the zone's own stream, so no zone can put its messages on
    /// another zone's subject and have them stored in that zone's stream.
    ///
    /// The hub does not advertise its leaf-node address (nats-server 2.9
    /// still sends one in its INFO: here the discard port, where nothing
    /// answers), or a leaf whose link (through a proxy) was cut would learn
    /// it and reconnect around the proxy.
    pub fn hub(dir: &Path, zones: &[&str]) -> Self {
        Self::hub_cluster(dir, zones, 1).remove(0)
    }

    /// A hub of `nodes` clustered nodes (`hub-1`…), each as [`Self::hub`]
    /// describes, with its files under `dir/hub-N`.
    pub fn hub_cluster(dir: &Path, zones: &[&str], nodes: usize) -> Vec<Self> {
        let users: String = zones
            .iter()
            .map(|z| {
                format!(
                    "      {{ user: \"{z}\", password: \"{}\", permissions: {{ publish: {{ deny: [\"zonesync.tallies.>\"] }}, subscribe: {{ deny: [\"zonesync.tallies.>\"] }} }} }}\n",
                    password(z)
                )
            })
            .collect();
        let routes: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let mut started: Vec<Self> = (0..nodes)
            .map(|i| {
                let leaf_port = free_port();
                let cluster = if nodes > 1 {
                    let others: Vec<String> = routes
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, p)| format!("\"nats-route://127.0.0.1:{p}\""))
                        .collect();
                    format!(
                        "cluster {{ name: zonesync-hub, listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                        routes[i],
                        others.join(", ")
                    )
                } else {
                    String::new()
                };
                let node_dir = if nodes > 1 { dir.join(format!("hub-{}", i + 1)) } else { dir.to_path_buf() };
                Self::prepare(
                    &node_dir,
                    &format!("hub-{}", i + 1),
                    &format!(
                        "jetstream {{ store_dir: \"{}\", domain: \"hub\" }}\n{cluster}\
                         accounts {{\n  FED: {{\n    jetstream: enabled\n    users: [\n      {{ user: \"center\", password: \"{}\" }}\n{users}    ]\n  }}\n}}\n\
                         leafnodes {{ listen: \"127.0.0.1:{leaf_port}\", no_advertise: true, advertise: \"127.0.0.1:9\" }}\n",
                        node_dir.join("js").display(),
                        password("center")
                    ),
                    Some(leaf_port),
                )
            })
            .collect();
        // All started before any is waited for: a JetStream cluster forms only with its peers up.
        for s in &mut started {
            s.launch();
        }
        for s in &started {
            wait_port(s.port, Duration::from_secs(20));
        }
        started
    }

    /// A zone's leaf node: JetStream in domain `domain`, linked as hub user
    /// `user` to a hub's leaf-node listener on `hub_leaf_port` (a proxy's
    /// port, to cut the link).
    pub fn leaf(dir: &Path, domain: &str, user: &str, hub_leaf_port: u16) -> Self {
        Self::start(
            dir,
            domain,
            &format!(
                "jetstream {{ store_dir: \"{}\", domain: \"{domain}\" }}\nleafnodes {{ reconnect: 1, remotes: [ {{ url: \"nats-leaf://{user}:{}@127.0.0.1:{hub_leaf_port}\" }} ] }}\n",
                dir.join("js").display(),
                password(user)
            ),
            None,
        )
    }

    /// A zone's broker for its agents and aggregator: nats-server's own MQTT
    /// listener (which keeps sessions and retained messages in JetStream).
    pub fn mqtt(dir: &Path) -> Self {
        let mqtt_port = free_port();
        let mut s = Self::prepare(
            dir,
            "zone-mqtt",
            &format!(
                "jetstream {{ store_dir: \"{}\" }}\nmqtt {{ listen: \"127.0.0.1:{mqtt_port}\" }}\n",
                dir.join("js").display()
            ),
            None,
        );
        s.mqtt_port = Some(mqtt_port);
        s.spawn();
        wait_port(mqtt_port, Duration::from_secs(10));
        s
    }

    fn start(dir: &Path, name: &str, body: &str, leaf_port: Option<u16>) -> Self {
        let mut s = Self::prepare(dir, name, body, leaf_port);
        s.spawn();
        s
    }

    fn prepare(dir: &Path, name: &str, body: &str, leaf_port: Option<u16>) -> Self {
        std::fs::create_dir_all(dir).expect("nats dir");
        let port = free_port();
        let conf = dir.join("nats.conf");
        let text = format!("server_name: {name}\nlisten: \"127.0.0.1:{port}\"\n{body}");
        std::fs::write(&conf, text).expect("write nats.conf");
        Self {
            child: None,
            port,
            leaf_port,
            mqtt_port: None,
            conf,
        }
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.conf.with_extension("log"))
            .expect("nats log file");
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    fn spawn(&mut self) {
        self.launch();
        wait_port(self.port, Duration::from_secs(10));
    }

    /// `nats://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        super::kill_child(&mut self.child);
    }

    /// Starts it again on the same ports and files.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

/// A hub user's password in these tests: its name reversed.
pub fn password(user: &str) -> String {
    user.chars().rev().collect()
}

/// A client of the hub as its user `user`.
pub async fn hub_client(url: &str, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
        .connect(url)
        .await
        .expect("connect to the hub")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

//! Test helpers for the end-to-end suite, in one place: real brokers
//! (Mosquitto processes, the embedded rumqttd), the zonesync binaries as real
//! processes, an HTTP client for the API, and the hand-computed data set.

pub mod attack;
pub mod browser;
pub mod certs;
pub mod collector;
pub mod corpus;
pub mod dataset;
pub mod faults;
pub mod federation;
pub mod gateways;
pub mod hostile;
pub mod inprocess;
pub mod ledger;
pub mod nats;
pub mod peers;
pub mod plant;
pub mod platform;
pub mod proxy;
pub mod serial;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills a peer's process (SIGKILL, as a power cut would) and reaps it;
/// nothing if it is not running. Every peer's `stop`, `kill9` and `drop`.
pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Path of a workspace binary, built by `cargo build --bins` (scripts/test.sh does it).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (`cargo build --workspace --bins`, as scripts/test.sh does)",
        p.display()
    );
    p
}

/// A free loopback port (there is a small race until it is bound again).
///
/// Never the same port twice in one test process: the tests of one binary run
/// in parallel, and a port the OS handed to one of them and released could be
/// handed to another before the first one's server bound it (two brokers on
/// one port: one fails with "Address already in use" while the other answers
/// for it, then goes away). Ports come from below Linux's ephemeral range
/// (32768–60999), so no outgoing connection takes one meanwhile either; each
/// process starts at its own offset, and a port is checked free by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(u32::MAX, std::process::id() % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN)
}

/// Waits until a TCP port accepts connections.
pub fn wait_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on port {port} after {timeout:?}");
}

/// A Mosquitto broker process on a free loopback port, with persistence so
/// sessions and queued messages survive a clean restart.
pub struct Mosquitto {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    conf: PathBuf,
}

fn mosquitto_binary() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("mosquitto is not installed: run scripts/test.sh, which installs it (apt-get install mosquitto)");
}

impl Mosquitto {
    /// Starts Mosquitto with its files in `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// Starts Mosquitto with `listener_options` (e.g. TLS settings) on its listener.
    pub fn start_with(dir: &Path, listener_options: &str) -> Self {
        Self::start_full(dir, listener_options, "")
    }

    /// Starts Mosquitto with a `connection` bridge named `name` (unique per
    /// bridge: it is the bridge's client id at the far end, and two bridges
    /// of one name throw each other off) to the broker on `remote_port`
    /// carrying `topic` (a Mosquitto `topic` line's arguments, e.g.
    /// `zonesync/federation/# out 1`), as a zone broker bridged to a
    /// center's. The bridge block comes last: every line after `connection` is its.
    pub fn start_bridged(dir: &Path, name: &str, remote_port: u16, topic: &str) -> Self {
        Self::start_full(
            dir,
            "",
            &format!(
                "connection {name}\nremote_clientid {name}\naddress 127.0.0.1:{remote_port}\ntopic {topic}\n\
                 bridge_protocol_version mqttv311\ncleansession false\nrestart_timeout 1\n"
            ),
        )
    }

    fn start_full(dir: &Path, listener_options: &str, tail: &str) -> Self {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        // A size limit among the options (the corpus test uses the shipped one) replaces the default.
        let packet_limit = if listener_options.contains("max_packet_size") {
            ""
        } else {
            "max_packet_size 16777216\n"
        };
        let text = format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\n{listener_options}\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\n\
             max_queued_messages 1000000\nmax_inflight_messages 100\n{packet_limit}\
             log_dest stderr\nlog_type error\nlog_type warning\n{tail}",
            dir.display()
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut m = Self {
            child: None,
            port,
            conf,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        wait_port(self.port, Duration::from_secs(10));
    }

    /// Stops it cleanly (SIGTERM: it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Kills it with SIGKILL, as a power cut would: no persistence file is written.
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// Whether it is running (not stopped or killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// Writes a Mosquitto password file at `path` with `users` (name, password),
/// through `mosquitto_passwd` as an operator would.
pub fn mosquitto_passwords(path: &Path, users: &[(&str, &str)]) {
    for (i, (user, pass)) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(path)
            .arg(user)
            .arg(pass)
            .status()
            .expect("run mosquitto_passwd (package mosquitto)")
            .success();
        assert!(ok, "mosquitto_passwd {user}");
    }
}

/// A zonesync process; SIGKILLed when dropped.
pub struct Proc {
    child: Child,
    /// Lines it printed on stdout.
    pub stdout: std::sync::mpsc::Receiver<String>,
    /// What it printed on stderr, when started by [`Proc::spawn_capturing`].
    stderr: Option<std::sync::Arc<std::sync::Mutex<String>>>,
}

impl Proc {
    /// Starts `binary` with `args`.
    pub fn spawn(binary: &str, args: &[&str]) -> Self {
        Self::spawn_with(binary, args, false)
    }

    /// Starts `binary` with `args`, keeping what it prints on stderr (see
    /// [`Proc::stderr_text`]) and passing it on to the test's own stderr.
    pub fn spawn_capturing(binary: &str, args: &[&str]) -> Self {
        Self::spawn_with(binary, args, true)
    }

    /// Starts `binary` with `args` under an open-file limit of `nofile`
    /// (soft and hard, through util-linux's `prlimit`, which execs it: the
    /// process keeps the id), as a unit's `LimitNOFILE` would set it.
    pub fn spawn_with_nofile(binary: &str, args: &[&str], nofile: u64) -> Self {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(bin(binary));
        Self::spawn_command(cmd, binary, args, false)
    }

    /// Starts an installed `program` (not a workspace build) as system user
    /// `user` with its groups, through util-linux's `setpriv` (the test runs
    /// as root), which execs it: the process keeps the id and is killed by
    /// [`Proc::kill9`], where `runuser` would leave it running.
    pub fn spawn_installed_as(user: &str, program: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", user, "--regid", user, "--init-groups", "--"])
            .arg(program);
        let name = program
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Self::spawn_command(cmd, &name, args, true)
    }

    fn spawn_with(binary: &str, args: &[&str], capture_stderr: bool) -> Self {
        Self::spawn_command(Command::new(bin(binary)), binary, args, capture_stderr)
    }

    fn spawn_command(mut cmd: Command, binary: &str, args: &[&str], capture_stderr: bool) -> Self {
        // The fault harness's knobs (ZONESYNC_FAULT_SEED, …) share the prefix
        // the binaries read configuration overrides from; they are not theirs.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ZONESYNC_FAULT_") {
                cmd.env_remove(k);
            }
        }
        if capture_stderr {
            cmd.stderr(Stdio::piped());
        }
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = child.stderr.take().map(|err| {
            let kept = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let sink = kept.clone();
            let name = binary.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                    let mut s = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    s.push_str(&line);
                    s.push('\n');
                }
            });
            kept
        });
        Self {
            child,
            stdout: rx,
            stderr,
        }
    }

    /// What it printed on stderr so far (empty unless started by [`Proc::spawn_capturing`]).
    pub fn stderr_text(&self) -> String {
        self.stderr
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
            .unwrap_or_default()
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// File descriptors it has open now (from `/proc`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Its exit status if it has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for it to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGKILL and waits.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }

    /// Waits for a stdout line starting with `prefix`; returns the rest.
    pub fn line_after(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l[prefix.len()..].trim().to_owned(),
                Ok(_) => {}
                Err(_) => panic!("no line starting with {prefix:?} within {timeout:?}"),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs a workspace binary to its end (a one-shot command such as
/// `zonesync-agent status` or `export`) and returns what it printed.
pub fn run_to_end(binary: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin(binary))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("run {binary}: {e}"))
}

/// An aggregator process started with `run -c`.
pub fn spawn_aggregator(config: &Path) -> (Proc, Api) {
    let p = Proc::spawn(
        "zonesync-aggregator",
        &["run", "-c", config.to_str().expect("utf-8 path")],
    );
    let addr = p.line_after("API on http://", Duration::from_secs(20));
    (p, Api::new(&format!("http://{addr}")))
}

/// How an aggregator process started with `run -c` came out.
pub enum AggregatorStart {
    /// It serves its API.
    Serving(Proc, Api),
    /// It ended before serving: its exit status and what it printed on stderr.
    Exited(std::process::ExitStatus, String),
}

/// Starts an aggregator process with `run -c`, keeping its stderr, and
/// waits up to `timeout` for it to serve its API or to end.
pub fn try_spawn_aggregator(config: &Path, timeout: Duration) -> AggregatorStart {
    let mut p = Proc::spawn_capturing(
        "zonesync-aggregator",
        &["run", "-c", config.to_str().expect("utf-8 path")],
    );
    let deadline = Instant::now() + timeout;
    loop {
        match p.stdout.recv_timeout(Duration::from_millis(50)) {
            Ok(l) => {
                if let Some(addr) = l.strip_prefix("API on http://") {
                    let api = Api::new(&format!("http://{}", addr.trim()));
                    return AggregatorStart::Serving(p, api);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // stdout closed: the process is ending.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = p
                    .wait_exit(Duration::from_secs(10))
                    .expect("ended after closing stdout");
                // Let the stderr reader drain what is left.
                std::thread::sleep(Duration::from_millis(200));
                return AggregatorStart::Exited(status, p.stderr_text());
            }
        }
        if let Some(status) = p.try_wait() {
            std::thread::sleep(Duration::from_millis(200));
            return AggregatorStart::Exited(status, p.stderr_text());
        }
        assert!(
            Instant::now() < deadline,
            "the aggregator neither served nor ended within {timeout:?}; stderr:\n{}",
            p.stderr_text()
        );
    }
}

/// An agent process started with `run -c`.
pub fn spawn_agent(config: &Path) -> Proc {
    Proc::spawn("zonesync-agent", &["run", "-c", config.to_str().expect("utf-8 path")])
}

/// A small client for the aggregator's API.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:8080`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// GETs a JSON document.
    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        r.json().await.unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// GETs a JSON document with its HTTP status (e.g. `/healthz`, 503 when unhealthy).
    pub async fn get_with_status(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"));
        (status, body)
    }

    /// Like [`Api::get_with_status`], but `None` when nothing answers (the process ended).
    pub async fn try_get_with_status(&self, path: &str) -> Option<(u16, Value)> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.ok()?))
    }

    /// One counter from /metrics (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == name).then(|| v.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    /// Polls a counter until it reaches `want` (or the timeout, then panics with what it saw).
    pub async fn wait_metric(&self, name: &str, want: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = 0.0;
        while Instant::now() < deadline {
            seen = self.metric(name).await;
            if seen >= want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} reached {seen}, expected {want} within {timeout:?}");
    }
}

/// Finds a goal row by id in a goals response.
pub fn goal<'a>(goals: &'a Value, id: &str) -> &'a Value {
    goals["goals"]
        .as_array()
        .and_then(|a| a.iter().find(|g| g["id"] == id))
        .unwrap_or_else(|| panic!("goal {id} missing from {goals}"))
}

/// Asserts two floats agree to 1e-9 relative.
pub fn approx(actual: &Value, expected: f64, what: &str) {
    let a = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {actual} is not a number"));
    assert!(
        (a - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{what}: got {a}, expected {expected}"
    );
}

/// Runs `program args` with `input` on its standard input and panics with
/// its words unless it succeeds; `missing` says how to install it. For the
/// linters and validators the tests hand a document to (promtool,
/// openapi-spec-validator).
pub fn checked_by(program: &str, args: &[&str], input: &[u8], missing: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}; {missing}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .unwrap_or_else(|e| panic!("feeding {program}: {e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {}: {said}", args.join(" "));
    said
}

//! The `[[opcua]]` configuration and its start-up checks: the server, how
//! the agent proves who it is, and which nodes map to which indicators.
//! Checked before any task starts, so a mistyped NodeId, indicator or unit,
//! or an unreadable password file, stops the agent at start-up rather than
//! leaving a DCS tag silently unreported.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zonesync_proto::{EnterpriseId, IndicatorKind, Validator};

/// One OPC UA server (`[[opcua]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaConfig {
    /// Server name, unique per agent; names the source's cursor and the logs.
    pub name: String,
    /// The server's endpoint URL, e.g. `opc.tcp://10.20.3.4:4840/`.
    pub endpoint: String,
    /// `None` or `Basic256Sha256`.
    #[serde(default)]
    pub security_policy: Policy,
    /// `None`, `Sign` or `SignAndEncrypt`; default: `None` under policy
    /// `None`, `SignAndEncrypt` under `Basic256Sha256`.
    #[serde(default)]
    pub security_mode: Option<Mode>,
    /// Credit code of the enterprise the nodes belong to.
    pub enterprise: EnterpriseId,
    /// `subscription` (the server reports changes) or `poll` (a read of
    /// every node each `interval_ms`).
    #[serde(default)]
    pub read: ReadMode,
    /// Polling interval, or the subscription's sampling and publishing
    /// interval, milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Longest wait for a connect or a request, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// User name (with `password_file`); without it, and without
    /// `user_certificate`, the session is anonymous.
    #[serde(default)]
    pub user: Option<String>,
    /// File holding the user's password (one line; never logged).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// X.509 user identity: the user's certificate (DER or PEM) …
    #[serde(default)]
    pub user_certificate: Option<PathBuf>,
    /// … and its private key (PEM).
    #[serde(default)]
    pub user_private_key: Option<PathBuf>,
    /// The client's PKI directory (`own/`, `private/`, `trusted/`,
    /// `rejected/`); default `<data_dir>/opcua-pki`. A server certificate the
    /// agent does not know lands in `rejected/`; moving it to `trusted/`
    /// trusts it.
    #[serde(default)]
    pub pki_dir: Option<PathBuf>,
    /// The client's application instance certificate (DER); default: a
    /// self-signed one the agent makes in `pki_dir/own/` on first use.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// The private key of `client_certificate` (PEM).
    #[serde(default)]
    pub client_private_key: Option<PathBuf>,
    /// The server's certificate (DER or PEM), trusted at start-up by
    /// placing it in `pki_dir/trusted/`.
    #[serde(default)]
    pub server_certificate: Option<PathBuf>,
    /// Trust any server certificate on first sight (stored in `trusted/`).
    /// Off by default: it gives up the server's authentication.
    #[serde(default)]
    pub trust_server_certificate: bool,
    /// The client's application URI; it must match the URI in
    /// `client_certificate` when one is given.
    #[serde(default = "default_application_uri")]
    pub application_uri: String,
    /// The nodes to read.
    pub nodes: Vec<NodeConfig>,
}

fn default_interval_ms() -> u64 {
    10_000
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_scale() -> f64 {
    1.0
}
fn default_application_uri() -> String {
    "urn:zonesync:agent".into()
}

/// The message security policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Policy {
    /// No signing, no encryption.
    #[default]
    None,
    /// RSA 2048+, SHA-256, AES-256 (OPC UA's usual secure policy).
    Basic256Sha256,
}

impl Policy {
    /// The name OPC UA gives the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "None",
            Policy::Basic256Sha256 => "Basic256Sha256",
        }
    }
}

/// The message security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Neither signed nor encrypted.
    None,
    /// Signed.
    Sign,
    /// Signed and encrypted.
    SignAndEncrypt,
}

/// How the nodes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// Monitored items in one subscription: the server sends changes.
    #[default]
    Subscription,
    /// A read of every node each `interval_ms`.
    Poll,
}

/// One node (`[[opcua.nodes]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node, in OPC UA's string form: `ns=2;s=Meter1.Energy`, `ns=3;i=1001`.
    pub node_id: String,
    /// Meter or point id, sent as the reading's `point`.
    pub point: String,
    /// Catalog indicator code, e.g. `electricity`.
    pub indicator: String,
    /// One of the indicator's catalog units, e.g. `kWh`.
    pub unit: String,
    /// Multiplier from the node's value to `unit`.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Whether the node is a cumulative total (rollover and replacement
    /// tracking); default: whether the catalog calls the indicator a counter.
    #[serde(default)]
    pub counter: Option<bool>,
}

/// Why the OPC UA configuration was refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpcUaConfigError {
    #[error("opcua server name {0:?} is used twice (names key each server's cursor)")]
    DuplicateServer(String),
    #[error("opcua server {server:?}: {problem}")]
    Server { server: String, problem: String },
    #[error("opcua server {server:?}, node {node:?}: {problem}")]
    Node {
        server: String,
        node: String,
        problem: String,
    },
    #[error("enterprise {enterprise}: {indicator} at point {point:?} is read twice")]
    DuplicatePoint {
        enterprise: EnterpriseId,
        indicator: String,
        point: String,
    },
}

/// How the session proves who the agent is, read at start-up.
#[derive(Clone)]
pub enum Identity {
    /// No user.
    Anonymous,
    /// User name and the password read from `password_file`.
    User { user: String, password: String },
    /// A user certificate and its key (paths; read when connecting).
    Certificate { cert: PathBuf, key: PathBuf },
}

impl std::fmt::Debug for Identity {
    // The password is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => write!(f, "anonymous"),
            Identity::User { user, .. } => write!(f, "user {user}"),
            Identity::Certificate { cert, .. } => write!(f, "certificate {}", cert.display()),
        }
    }
}

/// A checked node: its configuration, parsed id and counter flag.
#[derive(Debug, Clone)]
pub struct Node {
    /// As configured.
    pub cfg: NodeConfig,
    /// Parsed.
    pub id: opcua_types::NodeId,
    /// Tracked as a counter.
    pub counter: bool,
    /// Its key in the cursor.
    pub key: String,
}

/// A checked server, ready to connect.
#[derive(Debug, Clone)]
pub struct Checked {
    /// As configured, `pki_dir` resolved.
    pub cfg: OpcUaConfig,
    /// The security mode in force.
    pub mode: Mode,
    /// The user identity.
    pub identity: Identity,
    /// The nodes.
    pub nodes: Vec<Node>,
}

impl OpcUaConfig {
    /// Checks the server against the catalog and reads its password file;
    /// `data_dir` places the default PKI directory.
    pub fn check(&self, validator: &Validator, data_dir: &Path) -> Result<Checked, OpcUaConfigError> {
        let bad = |problem: &str| OpcUaConfigError::Server {
            server: self.name.clone(),
            problem: problem.to_owned(),
        };
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad("name: use 1 to 64 letters, digits, '-' or '_'"));
        }
        if !self.endpoint.starts_with("opc.tcp://") {
            return Err(bad("endpoint must be an opc.tcp:// URL"));
        }
        if self.interval_ms == 0 || self.timeout_ms == 0 {
            return Err(bad("interval_ms and timeout_ms must be above zero"));
        }
        let mode = match (self.security_policy, self.security_mode) {
            (Policy::None, None | Some(Mode::None)) => Mode::None,
            (Policy::None, Some(_)) => return Err(bad("security_mode Sign or SignAndEncrypt needs a security_policy")),
            (Policy::Basic256Sha256, None) => Mode::SignAndEncrypt,
            (Policy::Basic256Sha256, Some(Mode::None)) => {
                return Err(bad(
                    "security_policy Basic256Sha256 needs security_mode Sign or SignAndEncrypt",
                ))
            }
            (Policy::Basic256Sha256, Some(m)) => m,
        };
        if self.client_certificate.is_some() != self.client_private_key.is_some() {
            return Err(bad("give client_certificate and client_private_key together"));
        }
        let identity = match (
            &self.user,
            &self.password_file,
            &self.user_certificate,
            &self.user_private_key,
        ) {
            (None, None, None, None) => Identity::Anonymous,
            (Some(user), Some(file), None, None) => {
                if user.is_empty() {
                    return Err(bad("user is empty"));
                }
                // The error kind only: the value may be a password given where a path belongs.
                let password = std::fs::read_to_string(file)
                    .map_err(|e| bad(&format!("password_file cannot be read ({})", e.kind())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                Identity::User {
                    user: user.clone(),
                    password,
                }
            }
            (None, None, Some(cert), Some(key)) => {
                for (what, p) in [("user_certificate", cert), ("user_private_key", key)] {
                    if let Err(e) = std::fs::metadata(p) {
                        return Err(bad(&format!("{what} {} cannot be read ({})", p.display(), e.kind())));
                    }
                }
                Identity::Certificate {
                    cert: cert.clone(),
                    key: key.clone(),
                }
            }
            _ => {
                return Err(bad(
                    "identity: give user and password_file, or user_certificate and user_private_key, or neither (anonymous)",
                ))
            }
        };
        if self.nodes.is_empty() {
            return Err(bad("has no nodes"));
        }
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let bad = |problem: String| OpcUaConfigError::Node {
                server: self.name.clone(),
                node: n.node_id.clone(),
                problem,
            };
            let id = opcua_types::NodeId::from_str(&n.node_id)
                .map_err(|_| bad("not a NodeId (ns=2;s=Name, ns=3;i=1001, …)".into()))?;
            if n.point.is_empty() || n.point.chars().count() > 64 || n.point.chars().any(char::is_control) {
                return Err(bad("point ids are 1 to 64 printable characters".into()));
            }
            let ind = crate::sources::admit::series(&validator.catalog, &n.indicator, &n.unit, "a node gives")
                .map_err(bad)?;
            let counter = n.counter.unwrap_or(ind.kind == IndicatorKind::Counter);
            if !n.scale.is_finite() || n.scale == 0.0 || (counter && n.scale < 0.0) {
                return Err(bad(format!(
                    "scale {} must be finite, non-zero, and positive for a counter",
                    n.scale
                )));
            }
            nodes.push(Node {
                cfg: n.clone(),
                id,
                counter,
                key: crate::sources::series::key(&n.indicator, &n.point),
            });
        }
        let mut cfg = self.clone();
        cfg.pki_dir = Some(self.pki_dir.clone().unwrap_or_else(|| data_dir.join("opcua-pki")));
        Ok(Checked {
            cfg,
            mode,
            identity,
            nodes,
        })
    }
}

/// Checks every configured server, and that no two share a name and no two
/// nodes report the same indicator and point id for one enterprise (their
/// readings would overwrite each other downstream).
pub fn check_all(
    servers: &[OpcUaConfig],
    validator: &Validator,
    data_dir: &Path,
) -> Result<Vec<Checked>, OpcUaConfigError> {
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(servers.len());
    for s in servers {
        if !names.insert(s.name.as_str()) {
            return Err(OpcUaConfigError::DuplicateServer(s.name.clone()));
        }
        for n in &s.nodes {
            if !seen.insert((s.enterprise.clone(), n.indicator.clone(), n.point.clone())) {
                return Err(OpcUaConfigError::DuplicatePoint {
                    enterprise: s.enterprise.clone(),
                    indicator: n.indicator.clone(),
                    point: n.point.clone(),
                });
            }
        }
        out.push(s.check(validator, data_dir)?);
    }
    Ok(out)
}

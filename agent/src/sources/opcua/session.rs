//! One OPC UA session: the client built from the configuration, the
//! connection, its event loop (a child task this module owns and ends), and
//! the reads and subscription made over it. The session never reconnects by
//! itself (its retry limit is zero): when the connection goes, `lost`
//! reports it and the source connects afresh with its own backoff.

use super::config::{Checked, Identity, Mode, Policy, ReadMode};
use super::OpcUaStats;
use futures_util::StreamExt;
use opcua_client::{ClientBuilder, DataChangeCallback, IdentityToken, Session, SessionPollResult};
use opcua_crypto::CertificateStore;
use opcua_types::{
    DataValue, EndpointDescription, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, ReadValueId, TimestampsToReturn, UserTokenPolicy,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Why a session could not be made, or ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client set-up: {0}")]
    Client(String),
    #[error("server certificate {path}: {problem}")]
    ServerCertificate { path: String, problem: String },
    #[error("connect: {0}")]
    Connect(String),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("request: {0}")]
    Request(String),
    #[error("request timed out")]
    RequestTimeout,
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("shut down")]
    Shutdown,
    #[error(transparent)]
    Outbox(crate::outbox::OutboxError),
}

/// Values a subscription delivered: the node's index in the configuration, and the value.
pub type Notification = (usize, DataValue);

/// Most notifications held between two appends; past it they are dropped
/// and counted (the outbox append is far faster than any DCS publishes).
const QUEUE: usize = 4096;

/// A connected session and the task driving it.
pub struct Connected {
    session: Arc<Session>,
    driver: Option<JoinHandle<()>>,
    lost: Option<oneshot::Receiver<String>>,
    limit: Duration,
}

fn message_mode(m: Mode) -> MessageSecurityMode {
    match m {
        Mode::None => MessageSecurityMode::None,
        Mode::Sign => MessageSecurityMode::Sign,
        Mode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

/// Places a pinned server certificate in `trusted/` under the name the
/// certificate store looks it up by (its thumbprint).
fn trust_server_certificate(c: &Checked, pki: &std::path::Path) -> Result<(), SessionError> {
    let Some(path) = &c.cfg.server_certificate else {
        return Ok(());
    };
    let bad = |problem: String| SessionError::ServerCertificate {
        path: path.display().to_string(),
        problem,
    };
    let cert = CertificateStore::read_cert(path).map_err(bad)?;
    let der = cert.to_der().map_err(|e| bad(e.to_string()))?;
    let dir = pki.join("trusted");
    std::fs::create_dir_all(&dir).map_err(|e| bad(format!("creating {}: {e}", dir.display())))?;
    let file = dir.join(CertificateStore::cert_file_name(&cert));
    std::fs::write(&file, der).map_err(|e| bad(format!("writing {}: {e}", file.display())))
}

/// Adds the operator's next step to a refusal of the server's certificate:
/// the store has just filed the certificate in `rejected/`.
fn with_hint(why: String, pki: &std::path::Path) -> String {
    if why.contains("BadCertificateUntrusted") {
        format!(
            "{why} (the server's certificate is not trusted: move it from {} to {}, or pin it with server_certificate)",
            pki.join("rejected").display(),
            pki.join("trusted").display()
        )
    } else {
        why
    }
}

impl Connected {
    /// Builds the client, connects and activates a session, within `timeout_ms` for each step.
    pub async fn open(c: &Checked) -> Result<Connected, SessionError> {
        let cfg = &c.cfg;
        let limit = Duration::from_millis(cfg.timeout_ms);
        let pki: std::path::PathBuf = cfg.pki_dir.clone().unwrap_or_else(|| "opcua-pki".into());
        trust_server_certificate(c, &pki)?;
        let secure = cfg.security_policy != Policy::None;
        let mut builder = ClientBuilder::new()
            .application_name("zonesync-agent")
            .application_uri(cfg.application_uri.clone())
            .product_uri("urn:zonesync")
            .pki_dir(pki.clone())
            // A self-signed instance certificate is made once, in `own/`,
            // when the channel is secured and none was configured.
            .create_sample_keypair(secure && cfg.client_certificate.is_none())
            .trust_server_certs(cfg.trust_server_certificate)
            .session_retry_limit(0)
            .request_timeout(limit)
            .keep_alive_interval(Duration::from_millis(cfg.interval_ms.clamp(1_000, 10_000)))
            .max_failed_keep_alive_count(2)
            .session_name(format!("zonesync {}", cfg.name));
        if let (Some(cert), Some(key)) = (&cfg.client_certificate, &cfg.client_private_key) {
            builder = builder.certificate_path(cert).private_key_path(key);
        }
        let mut client = builder.client().map_err(|e| SessionError::Client(e.join("; ")))?;
        let identity = match &c.identity {
            Identity::Anonymous => IdentityToken::Anonymous,
            Identity::User { user, password } => IdentityToken::new_user_name(user.clone(), password.clone()),
            Identity::Certificate { cert, key } => {
                IdentityToken::new_x509_path(cert, key).map_err(|e| SessionError::Client(e.to_string()))?
            }
        };
        let endpoint: EndpointDescription = (
            cfg.endpoint.as_str(),
            cfg.security_policy.as_str(),
            message_mode(c.mode),
            UserTokenPolicy::anonymous(),
        )
            .into();
        let (session, event_loop) = timeout(limit, client.connect_to_matching_endpoint(endpoint, identity))
            .await
            .map_err(|_| SessionError::ConnectTimeout)?
            .map_err(|e| SessionError::Connect(e.to_string()))?;
        let (up_tx, up_rx) = oneshot::channel();
        let (lost_tx, lost_rx) = oneshot::channel();
        // The event loop runs beside the source's reads (they need it
        // polled to get answers); it ends when the connection does, or
        // when `close` disconnects the session.
        let driver = tokio::spawn(async move {
            let mut up = Some(up_tx);
            let stream = event_loop.enter();
            tokio::pin!(stream);
            let why = loop {
                match stream.next().await {
                    None => break "session closed".to_owned(),
                    Some(Err(code)) => break code.to_string(),
                    Some(Ok(SessionPollResult::ConnectionLost(code))) => break code.to_string(),
                    Some(Ok(SessionPollResult::Reconnected(_))) => {
                        if let Some(tx) = up.take() {
                            let _ = tx.send(());
                        }
                    }
                    Some(Ok(_)) => {}
                }
            };
            let _ = lost_tx.send(why);
        });
        let mut conn = Connected {
            session,
            driver: Some(driver),
            lost: Some(lost_rx),
            limit,
        };
        let started = tokio::select! {
            up = up_rx => up.is_ok(),
            _ = tokio::time::sleep(limit) => false,
        };
        if !started {
            let why = match conn.lost.as_mut().map(|rx| rx.try_recv()) {
                Some(Ok(why)) => SessionError::Connect(with_hint(why, &pki)),
                _ => SessionError::ConnectTimeout,
            };
            conn.close().await;
            return Err(why);
        }
        Ok(conn)
    }

    /// Resolves when the connection is lost; never while it lasts.
    pub async fn lost(&mut self) -> SessionError {
        match self.lost.as_mut() {
            Some(rx) => {
                let why = rx.await.unwrap_or_else(|_| "session task ended".into());
                self.lost = None;
                SessionError::Lost(why)
            }
            None => std::future::pending().await,
        }
    }

    /// Reads the value of every configured node once, in configuration order.
    pub async fn read_all(&self, c: &Checked) -> Result<Vec<DataValue>, SessionError> {
        let ids: Vec<ReadValueId> = c.nodes.iter().map(|n| ReadValueId::from(n.id.clone())).collect();
        let values = timeout(self.limit, self.session.read(&ids, TimestampsToReturn::Both, 0.0))
            .await
            .map_err(|_| SessionError::RequestTimeout)?
            .map_err(|e| SessionError::Request(e.to_string()))?;
        if values.len() != ids.len() {
            return Err(SessionError::Request(format!(
                "asked for {} values, the server returned {}",
                ids.len(),
                values.len()
            )));
        }
        Ok(values)
    }

    /// Creates one subscription monitoring every node, sampled and
    /// published every `interval_ms`; its notifications arrive on the
    /// receiver. A node the server refuses (unknown NodeId, no access) is
    /// counted and logged; the others are still monitored.
    pub async fn subscribe(
        &self,
        c: &Checked,
        stats: Arc<OpcUaStats>,
    ) -> Result<mpsc::Receiver<Notification>, SessionError> {
        debug_assert_eq!(c.cfg.read, ReadMode::Subscription);
        let interval = Duration::from_millis(c.cfg.interval_ms);
        let (tx, rx) = mpsc::channel(QUEUE);
        let n = c.nodes.len();
        let dropped = stats.clone();
        let callback = DataChangeCallback::new(move |value, item| {
            // Handles are the node's index plus one (0 asks the client to choose).
            let Some(index) = (item.client_handle() as usize).checked_sub(1).filter(|i| *i < n) else {
                return;
            };
            if tx.try_send((index, value)).is_err() {
                dropped.bump("dropped_notifications");
            }
        });
        let id = timeout(
            self.limit,
            // Lifetime and keep-alive counts as OPC UA's usual 60 and 10.
            self.session.create_subscription(interval, 60, 10, 0, 0, true, callback),
        )
        .await
        .map_err(|_| SessionError::RequestTimeout)?
        .map_err(|e| SessionError::Request(format!("create subscription: {e}")))?;
        let items: Vec<MonitoredItemCreateRequest> = c
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                MonitoredItemCreateRequest::new(
                    node.id.clone().into(),
                    MonitoringMode::Reporting,
                    MonitoringParameters {
                        client_handle: i as u32 + 1,
                        sampling_interval: interval.as_millis() as f64,
                        // Changes between two publishes are all kept, not only the last.
                        queue_size: 16,
                        discard_oldest: true,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let created = timeout(
            self.limit,
            self.session.create_monitored_items(id, TimestampsToReturn::Both, items),
        )
        .await
        .map_err(|_| SessionError::RequestTimeout)?
        .map_err(|e| SessionError::Request(format!("create monitored items: {e}")))?;
        for (node, result) in c.nodes.iter().zip(&created) {
            if !result.result.status_code.is_good() {
                stats.bump("refused_nodes");
                tracing::warn!(server = %c.cfg.name, node = %node.cfg.node_id, status = %result.result.status_code,
                    "the server refused to monitor the node");
            }
        }
        Ok(rx)
    }

    /// Closes the session (within the timeout) and waits for its task. A
    /// connection already lost has nobody to say goodbye to.
    pub async fn close(&mut self) {
        let gone = match self.lost.as_mut().map(|rx| rx.try_recv()) {
            None | Some(Ok(_)) | Some(Err(oneshot::error::TryRecvError::Closed)) => true,
            Some(Err(oneshot::error::TryRecvError::Empty)) => false,
        };
        if !gone {
            let _ = timeout(self.limit, self.session.disconnect()).await;
        }
        if let Some(mut driver) = self.driver.take() {
            if timeout(self.limit, &mut driver).await.is_err() {
                driver.abort();
                let _ = driver.await;
            }
        }
    }
}

/// A session dropped without [`Connected::close`] (its owner's future
/// cancelled at shutdown while connecting) must not leave its event loop
/// running on its own.
impl Drop for Connected {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            driver.abort();
        }
    }
}

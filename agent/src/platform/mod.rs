//! The provincial key-energy-user platform as an upstream: sealed batches
//! POSTed over HTTPS in the platform's upload format, each acknowledged in
//! the outbox (this upstream's own cursor) only once the platform answered
//! its success text. Until then the batch is sent again, with a doubling
//! wait, for as long as it takes (the rules: "resend until a success
//! reply"); the MQTT upstreams go on meanwhile, and a batch leaves the
//! outbox only when every upstream has it. A platform away for longer than
//! the disk budget lasts loses the oldest readings, counted in its
//! `dropped_readings` like any upstream's.
//!
//! One upload at a time, in sequence order: the platform sees the data in
//! the order it was read, and an answer always belongs to one batch. A
//! resend after a timeout may repeat records the platform did store; they
//! carry the same `dataCode` and `statDate`, which is how the platform
//! tells a value apart (`docs/sources.md`).

pub mod config;
pub mod record;
mod stats;

use crate::config::OutboxConfig;
use crate::outbox::{Outbox, OutboxError, Sealed};
use crate::shutdown::Shutdown;
use chrono::Utc;
pub use config::{PlatformConfig, PlatformConfigError};
use record::{Mapper, Refusal};
pub use stats::PlatformStats;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zonesync_proto::{AgentId, Batch, Catalog, ZoneId};
use zonesync_runtime::mqtt::Backoff;

/// Most bytes of an answer read (the success text is short; an error page
/// need not be read whole).
const MAX_ANSWER: usize = 64 * 1024;

/// The HTTP client for one platform: its timeout, HTTPS only, the public
/// roots (rustls with ring, as every TLS connection of the agent) and the
/// platform's own CA when one is configured.
pub fn client(cfg: &PlatformConfig) -> Result<reqwest::Client, PlatformConfigError> {
    let err = |problem: String| PlatformConfigError {
        name: cfg.name.clone(),
        problem,
    };
    let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("zonesync-agent/", env!("CARGO_PKG_VERSION")))
        .https_only(true)
        // A redirected POST becomes a GET without the records (301/302/303):
        // whatever that answered must not count as the upload's success.
        // A 3xx is a failure like any non-2xx, named in status.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)));
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(err(format!("ca_file {} holds no PEM certificate", path.display())));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| err(format!("HTTPS client: {e}")))
}

/// A platform whose configuration was checked, ready to run or probe.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Its settings.
    pub cfg: PlatformConfig,
    /// Its record mapping.
    pub mapper: Mapper,
    /// Its HTTPS client.
    pub client: reqwest::Client,
}

/// Checks every platform against the catalog and builds its client, so a
/// wrong mapping or an unreadable CA file stops the agent at start-up.
pub fn check_all(cfgs: &[PlatformConfig], catalog: &Catalog) -> Result<Vec<Checked>, PlatformConfigError> {
    cfgs.iter()
        .map(|cfg| {
            cfg.validate(catalog)?;
            Ok(Checked {
                cfg: cfg.clone(),
                mapper: Mapper::new(cfg, catalog),
                client: client(cfg)?,
            })
        })
        .collect()
}

/// `zonesync-agent check`: one upload with no records, to see that the
/// platform is reachable over verified TLS, takes the token and answers its
/// success text. Nothing is stored by it.
pub async fn probe(p: &Checked) -> crate::sources::probe::ProbeRow {
    use crate::sources::probe::ProbeRow;
    let target = format!("{} ({})", p.cfg.name, p.cfg.url);
    match post(&p.client, &p.cfg, p.mapper.body(Vec::new())).await {
        Ok(()) => ProbeRow::ok(
            "energy_platform",
            format!("{target}: answered {:?} to an empty upload", p.cfg.success),
        ),
        Err(e) => ProbeRow::error("energy_platform", target, format!("{}: {e}", e.kind())),
    }
}

/// Why one upload failed: each kind is counted apart.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No answer within `timeout_secs`.
    #[error("no answer within the timeout")]
    Timeout,
    /// The connection (TCP or TLS, e.g. an untrusted certificate) failed.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The request or the answer broke off.
    #[error("the request or the answer broke off: {0}")]
    Transport(String),
    /// The platform answered, but not with success.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl UploadError {
    /// The counter this failure goes to.
    pub fn kind(&self) -> &'static str {
        match self {
            UploadError::Timeout => "timeout",
            UploadError::Connect(_) => "connect",
            UploadError::Transport(_) => "transport",
            UploadError::Refused(r) => r.kind(),
        }
    }
}

fn classify(e: reqwest::Error) -> UploadError {
    // The whole chain: reqwest's own message names only the URL.
    let mut why = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        why = format!("{why}: {s}");
        source = s.source();
    }
    if e.is_timeout() {
        UploadError::Timeout
    } else if e.is_connect() {
        UploadError::Connect(why)
    } else {
        UploadError::Transport(why)
    }
}

/// POSTs one body and judges the answer.
pub async fn post(client: &reqwest::Client, cfg: &PlatformConfig, body: Vec<u8>) -> Result<(), UploadError> {
    let mut req = client
        .post(&cfg.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body);
    if let Some(t) = &cfg.token {
        req = req.header(cfg.token_header.as_str(), format!("{}{t}", cfg.token_prefix));
    }
    let mut resp = req.send().await.map_err(classify)?;
    let status = resp.status().as_u16();
    let mut answer = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        let room = MAX_ANSWER - answer.len();
        answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if answer.len() >= MAX_ANSWER {
            break;
        }
    }
    record::judge(status, &answer, &cfg.success)?;
    Ok(())
}

/// What became of one batch.
enum Outcome {
    /// The platform has it (or none of it was for the platform): acknowledge.
    Done,
    /// Try again after the backoff.
    Again,
    /// Shutdown came first.
    Shutdown,
}

/// Everything one platform's task needs.
pub struct PlatformLink {
    /// Agent id (for sealing and logs).
    pub agent: AgentId,
    /// Zone (for sealing).
    pub zone: ZoneId,
    /// This run's boot counter (for sealing).
    pub boot: u64,
    /// The platform, checked.
    pub platform: Checked,
    /// This upstream's index in the outbox.
    pub upstream: usize,
    /// Batching settings (sealing is shared with the MQTT links).
    pub batching: OutboxConfig,
    /// The outbox.
    pub outbox: Arc<Outbox>,
    /// Counters, shared with status.
    pub stats: Arc<PlatformStats>,
}

impl PlatformLink {
    /// Uploads every batch this platform has not acknowledged, in order,
    /// until shutdown.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), OutboxError> {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.platform.cfg.retry_min_ms),
            Duration::from_millis(self.platform.cfg.retry_max_ms),
        );
        let mut last_seal = Instant::now();
        let mut next_pos = 0u64;
        let poll = Duration::from_millis(self.batching.max_batch_age_ms)
            .clamp(Duration::from_millis(10), Duration::from_millis(500));
        tracing::info!(agent = %self.agent, platform = %self.platform.cfg.name, url = %self.platform.cfg.url, "energy platform upstream started");
        loop {
            if shutdown.is_triggered() {
                return Ok(());
            }
            let Some(batch) = self.outbox.sealed_for(self.upstream, next_pos, 1)?.pop() else {
                if crate::link::seal_if_due(
                    &self.outbox,
                    &self.batching,
                    &mut last_seal,
                    &self.agent,
                    &self.zone,
                    self.boot,
                )? {
                    continue;
                }
                tokio::select! {
                    _ = shutdown.wait() => return Ok(()),
                    _ = tokio::time::sleep(poll) => continue,
                }
            };
            // The disk budget may have dropped it since it was read.
            if !self.outbox.put_on_wire(self.upstream, batch.seq)? {
                next_pos = batch.seq + 1;
                continue;
            }
            match self.deliver(&batch, &mut shutdown).await {
                Outcome::Done => {
                    if let Some(items) = self.outbox.ack(self.upstream, batch.seq)? {
                        self.stats.acked(items);
                    }
                    next_pos = batch.seq + 1;
                    backoff.reset();
                }
                Outcome::Shutdown => return Ok(()),
                Outcome::Again => {
                    // Nothing is on the wire while we wait: the disk budget may drop it.
                    self.outbox.set_on_wire_below(self.upstream, 0);
                    if !backoff.wait(&mut shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn deliver(&self, sealed: &Sealed, shutdown: &mut Shutdown) -> Outcome {
        let name = &self.platform.cfg.name;
        let batch: Batch = match serde_json::from_slice(&sealed.payload) {
            Ok(b) => b,
            Err(e) => {
                // Sealed by this agent, so never expected; it could never
                // be uploaded, and keeping it would stop the platform's
                // cursor for good. Counted and shown, not silent.
                tracing::error!(platform = %name, seq = sealed.seq, "a sealed batch cannot be read, not uploaded: {e}");
                self.stats.unreadable(sealed.items as u64);
                return Outcome::Done;
            }
        };
        let upload = match self.platform.mapper.upload(&batch, Utc::now()) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(platform = %name, seq = sealed.seq, "kept, not uploaded: {e}");
                self.stats.failed("unconvertible", e.to_string());
                return Outcome::Again;
            }
        };
        // Counted once, when the batch is done with, not per attempt.
        if upload.records.is_empty() {
            self.stats.left_out(&upload.left_out);
            return Outcome::Done;
        }
        let records = upload.records.len() as u64;
        let body = self.platform.mapper.body(upload.records);
        self.stats.attempt();
        let result = tokio::select! {
            _ = shutdown.wait() => return Outcome::Shutdown,
            r = post(&self.platform.client, &self.platform.cfg, body) => r,
        };
        match result {
            Ok(()) => {
                self.stats.left_out(&upload.left_out);
                self.stats.uploaded(records);
                tracing::debug!(platform = %name, seq = sealed.seq, records, "uploaded");
                Outcome::Done
            }
            Err(e) => {
                tracing::warn!(platform = %name, seq = sealed.seq, kind = e.kind(), "upload failed, kept and sent again: {e}");
                self.stats.failed(e.kind(), e.to_string());
                Outcome::Again
            }
        }
    }
}

//! The running agent's status, rewritten atomically into `data_dir/status.json`
//! every few seconds, so `zonesync-agent status` can show backlog, drops and
//! the last acknowledgement — per upstream — while the agent holds the outbox
//! (the store lets only one process open it).

use crate::config::Upstream;
use crate::history::{History, HistoryStats};
use crate::link::LinkStats;
use crate::outbox::{Outbox, OutboxStats};
use crate::shutdown::Shutdown;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use zonesync_proto::{AgentId, ZoneId};

/// How often the running agent rewrites its status file.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// What `status.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The agent.
    pub agent: AgentId,
    /// Its zone.
    pub zone: ZoneId,
    /// This run's boot counter (as in batches and presence).
    pub boot: u64,
    /// Process id of the running agent.
    pub pid: u32,
    /// When this file was written.
    pub written_at: DateTime<Utc>,
    /// Whether the first upstream's (`[mqtt]`) session is up; every upstream's is in `upstreams`.
    pub connected: bool,
    /// The first upstream's sessions opened in this run.
    pub sessions: u64,
    /// Batches the first upstream acknowledged in this run.
    pub batches_acked: u64,
    /// Items in them.
    pub items_acked: u64,
    /// When the first upstream last acknowledged a batch.
    pub last_ack: Option<DateTime<Utc>>,
    /// The outbox: backlog, oldest pending reading, drops (each once, however many upstreams missed it).
    pub outbox: OutboxStats,
    /// Local history: span, size, days deleted (absent when disabled).
    #[serde(default)]
    pub history: Option<HistoryStats>,
    /// Each upstream, in configuration order.
    #[serde(default)]
    pub upstreams: Vec<UpstreamStatus>,
    /// Each energy platform upstream, in configuration order.
    #[serde(default)]
    pub platforms: Vec<PlatformStatus>,
    /// Sources started again after a failure in this run (each logged with its error).
    #[serde(default)]
    pub source_restarts: u64,
    /// Each meter or gateway source's counters in this run, by source name:
    /// reads, readings, timeouts, bad frames, refused values, rollovers…
    #[serde(default)]
    pub sources: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Reads a source's counters when the status is written.
pub type SourceCounters = Arc<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>;

/// One upstream's link and cursor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpstreamStatus {
    /// Its name.
    pub name: String,
    /// Its broker, `host:port`.
    pub broker: String,
    /// Whether batches wait for the aggregator's confirmation rather than the PUBACK.
    pub end_to_end_confirm: bool,
    /// The MQTT version spoken to it: "5" or "3.1.1".
    #[serde(default)]
    pub protocol: String,
    /// Whether its session is up.
    pub connected: bool,
    /// Sessions opened in this run.
    pub sessions: u64,
    /// Lowest sequence number it has not acknowledged.
    pub cursor: u64,
    /// Sealed batches it has not acknowledged.
    pub unacked_batches: u64,
    /// Items in them.
    pub unacked_items: u64,
    /// Batches it acknowledged in this run.
    pub batches_acked: u64,
    /// Items in them.
    pub items_acked: u64,
    /// When it last acknowledged a batch.
    pub last_ack: Option<DateTime<Utc>>,
    /// Readings dropped, ever, before it acknowledged them and before they
    /// were ever published to it (its presence reports this).
    pub dropped_readings: u64,
    /// Readings dropped, ever, after being published to it without an
    /// acknowledgement: they may have arrived (its presence reports this too).
    #[serde(default)]
    pub dropped_sent_readings: u64,
    /// Batches published to it, resends included.
    pub batches_sent: u64,
    /// Confirm mode: batches awaiting confirmation now.
    pub awaiting_confirm: u64,
    /// Confirm mode: batches republished for want of a confirmation.
    pub resends: u64,
    /// Confirm mode: confirmation messages received.
    pub confirms_received: u64,
    /// Confirm mode: sequence numbers confirmed that it had no batch for.
    pub confirm_unknown_seqs: u64,
    /// Confirm mode: confirmation payloads refused.
    pub confirms_malformed: u64,
    /// The agent's clock minus the aggregator's, ms (positive: the agent is
    /// ahead), from confirmations; `None` until one is measured.
    pub clock_offset_ms: Option<i64>,
    /// Its uncertainty, ± ms.
    pub clock_uncertainty_ms: Option<i64>,
    /// Confirm mode: confirmations about an earlier outbox identity, ignored.
    #[serde(default)]
    pub confirms_other_outbox: u64,
    /// Confirm mode: sequence numbers confirmed with another batch's digest (kept).
    #[serde(default)]
    pub confirm_digest_mismatches: u64,
    /// Confirm mode: batches refused for a reason other than a reused number (kept).
    #[serde(default)]
    pub refusals: u64,
    /// Fresh outbox identities this upstream's confirmations asked for, in this run.
    #[serde(default)]
    pub identity_rotations: u64,
    /// MQTT 5: batches the broker refused in this run (PUBACK reason code,
    /// e.g. 0x87 not authorized by its ACL); each kept and published again.
    #[serde(default)]
    pub broker_denied_batches: u64,
    /// MQTT 5: presence messages the broker refused in this run.
    #[serde(default)]
    pub broker_denied_presences: u64,
    /// The broker's last refusal in this run: "topic: reason (reason code 0xNN)".
    #[serde(default)]
    pub last_broker_denial: Option<String>,
}

fn unix_ms(ms: u64) -> Option<DateTime<Utc>> {
    (ms > 0)
        .then(|| Utc.timestamp_millis_opt(i64::try_from(ms).unwrap_or(0)).single())
        .flatten()
}

/// A platform link's counters in this run (`platform::PlatformStats::counts`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlatformCounts {
    /// POSTs made, resends included.
    pub uploads: u64,
    /// Of them, answered with the success text.
    pub uploads_succeeded: u64,
    /// Records the platform acknowledged.
    pub records_uploaded: u64,
    /// Batches acknowledged for this platform (uploaded, or nothing in them for it).
    pub batches_acked: u64,
    /// Items in those batches.
    pub items_acked: u64,
    /// When the platform last answered success, Unix ms (0: not in this run).
    pub last_success_unix_ms: u64,
    /// Readings of series no `[[energy_platform.map]]` names: not uploaded.
    pub readings_not_mapped: u64,
    /// Declarations (the platform has no field for them): not uploaded.
    pub declarations_not_uploaded: u64,
    /// Quarterly figures (no `statType` for a quarter): not uploaded.
    pub quarterly_not_uploaded: u64,
    /// Items of sealed batches that could not be read back: not uploaded.
    pub unreadable_items: u64,
    /// Failed uploads by kind: `timeout`, `connect`, `transport`,
    /// `http_status`, `wrong_answer`, `unconvertible`.
    pub failures: BTreeMap<String, u64>,
    /// The last failure, "kind: why".
    pub last_failure: Option<String>,
    /// When, Unix ms (0: none in this run).
    pub last_failure_unix_ms: u64,
}

/// What status shows of one energy platform upstream (`[[energy_platform]]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlatformStatus {
    /// Its name.
    pub name: String,
    /// Where it uploads.
    pub url: String,
    /// Lowest sequence number it has not acknowledged.
    pub cursor: u64,
    /// Batches held that it has not acknowledged.
    pub unacked_batches: u64,
    /// Items in them.
    pub unacked_items: u64,
    /// Readings dropped by the disk budget before it had them.
    pub dropped_readings: u64,
    /// Of those, dropped after an upload that got no success answer (they may have arrived).
    pub dropped_sent_readings: u64,
    /// Its link's counters.
    #[serde(flatten)]
    pub counts: PlatformCounts,
}

/// Each platform's status from its counters and the outbox's cursors.
pub fn platforms(platforms: &[(String, String, PlatformCounts)], outbox: &OutboxStats) -> Vec<PlatformStatus> {
    platforms
        .iter()
        .map(|(name, url, counts)| {
            let o = outbox.upstreams.iter().find(|o| &o.name == name);
            PlatformStatus {
                name: name.clone(),
                url: url.clone(),
                cursor: o.map_or(0, |o| o.cursor),
                unacked_batches: o.map_or(0, |o| o.unacked_batches),
                unacked_items: o.map_or(0, |o| o.unacked_items),
                dropped_readings: o.map_or(0, |o| o.dropped_readings),
                dropped_sent_readings: o.map_or(0, |o| o.dropped_sent_readings),
                counts: counts.clone(),
            }
        })
        .collect()
}

/// Each upstream's status from its link counters and the outbox's cursors.
pub fn upstreams(links: &[(Upstream, Arc<LinkStats>)], outbox: &OutboxStats) -> Vec<UpstreamStatus> {
    links
        .iter()
        .map(|(u, l)| {
            let o = outbox.upstreams.iter().find(|o| o.name == u.name);
            let clock = l.clock_offset();
            UpstreamStatus {
                name: u.name.clone(),
                broker: format!("{}:{}", u.mqtt.host, u.mqtt.port),
                end_to_end_confirm: u.mqtt.end_to_end_confirm,
                protocol: u.mqtt.protocol.as_str().to_owned(),
                connected: l.connected.load(Ordering::Relaxed),
                sessions: l.sessions.load(Ordering::Relaxed),
                cursor: o.map_or(0, |o| o.cursor),
                unacked_batches: o.map_or(0, |o| o.unacked_batches),
                unacked_items: o.map_or(0, |o| o.unacked_items),
                batches_acked: l.batches_acked.load(Ordering::Relaxed),
                items_acked: l.items_acked.load(Ordering::Relaxed),
                last_ack: unix_ms(l.last_ack_unix_ms.load(Ordering::Relaxed)),
                dropped_readings: o.map_or(0, |o| o.dropped_readings),
                dropped_sent_readings: o.map_or(0, |o| o.dropped_sent_readings),
                batches_sent: l.batches_sent.load(Ordering::Relaxed),
                awaiting_confirm: l.awaiting_confirm.load(Ordering::Relaxed),
                resends: l.resends.load(Ordering::Relaxed),
                confirms_received: l.confirms_received.load(Ordering::Relaxed),
                confirm_unknown_seqs: l.confirm_unknown_seqs.load(Ordering::Relaxed),
                confirms_malformed: l.confirms_malformed.load(Ordering::Relaxed),
                clock_offset_ms: clock.map(|c| c.offset_ms),
                clock_uncertainty_ms: clock.map(|c| c.uncertainty_ms),
                confirms_other_outbox: l.confirms_other_outbox.load(Ordering::Relaxed),
                confirm_digest_mismatches: l.confirm_digest_mismatches.load(Ordering::Relaxed),
                refusals: l.refusals.load(Ordering::Relaxed),
                identity_rotations: l.identity_rotations.load(Ordering::Relaxed),
                broker_denied_batches: l.broker_denied_batches.load(Ordering::Relaxed),
                broker_denied_presences: l.broker_denied_presences.load(Ordering::Relaxed),
                last_broker_denial: l.last_broker_denial(),
            }
        })
        .collect()
}

impl Status {
    /// Whether this file was written by an agent that is still running:
    /// recent enough, and its process still exists.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        let fresh = now - self.written_at < chrono::Duration::from_std(INTERVAL * 3).unwrap_or(chrono::Duration::MAX);
        fresh && Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// Where the status file of an agent with this data directory lives.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("status.json")
}

/// Writes `status` to `path` atomically (temporary file, then rename).
pub fn write(path: &Path, status: &Status) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reads a status file.
pub fn read(path: &Path) -> std::io::Result<Status> {
    let text = std::fs::read(path)?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

/// What feeds the status file.
pub struct Reporter {
    /// Where to write.
    pub path: PathBuf,
    /// Agent id.
    pub agent: AgentId,
    /// Zone.
    pub zone: ZoneId,
    /// Boot counter.
    pub boot: u64,
    /// The outbox.
    pub outbox: Arc<Outbox>,
    /// Each upstream and its link's counters, in configuration order.
    pub links: Vec<(Upstream, Arc<LinkStats>)>,
    /// Each energy platform: name, URL, counters.
    #[cfg(feature = "energy-platform")]
    pub platforms: Vec<(String, String, Arc<crate::platform::PlatformStats>)>,
    /// Local history, when enabled.
    pub history: Option<Arc<History>>,
    /// Sources started again after a failure.
    pub source_restarts: Arc<std::sync::atomic::AtomicU64>,
    /// Each source's counters, by source name.
    pub sources: Vec<(String, SourceCounters)>,
}

impl Reporter {
    /// The status right now.
    pub fn snapshot(&self) -> Status {
        let outbox = self.outbox.stats();
        let upstreams = upstreams(&self.links, &outbox);
        let platforms = self.platform_status(&outbox);
        let first = upstreams.first();
        Status {
            agent: self.agent.clone(),
            zone: self.zone.clone(),
            boot: self.boot,
            pid: std::process::id(),
            written_at: Utc::now(),
            connected: first.is_some_and(|u| u.connected),
            sessions: first.map_or(0, |u| u.sessions),
            batches_acked: first.map_or(0, |u| u.batches_acked),
            items_acked: first.map_or(0, |u| u.items_acked),
            last_ack: first.and_then(|u| u.last_ack),
            outbox,
            history: self.history.as_ref().map(|h| h.stats()),
            upstreams,
            platforms,
            source_restarts: self.source_restarts.load(Ordering::Relaxed),
            sources: self.sources.iter().map(|(name, read)| (name.clone(), read())).collect(),
        }
    }

    fn platform_status(&self, outbox: &OutboxStats) -> Vec<PlatformStatus> {
        #[cfg(feature = "energy-platform")]
        let counts: Vec<_> = self
            .platforms
            .iter()
            .map(|(n, u, s)| (n.clone(), u.clone(), s.counts()))
            .collect();
        #[cfg(not(feature = "energy-platform"))]
        let counts = Vec::new();
        platforms(&counts, outbox)
    }

    /// Rewrites the file every [`INTERVAL`] until shutdown, and once more at the end.
    /// A failed write is logged, never fatal: status is for people, not for data.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) -> Result<(), crate::outbox::OutboxError> {
        loop {
            if let Err(e) = write(&self.path, &self.snapshot()) {
                tracing::warn!(agent = %self.agent, path = %self.path.display(), "writing the status file: {e}");
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(INTERVAL) => {}
            }
        }
        if let Err(e) = write(&self.path, &self.snapshot()) {
            tracing::warn!(agent = %self.agent, "writing the status file: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pid: u32, written_at: DateTime<Utc>, outbox: OutboxStats) -> Status {
        Status {
            agent: AgentId::parse("gw").unwrap(),
            zone: ZoneId::parse("z").unwrap(),
            boot: 3,
            pid,
            written_at,
            connected: true,
            sessions: 1,
            batches_acked: 2,
            items_acked: 20,
            last_ack: Some(written_at),
            outbox,
            history: None,
            upstreams: Vec::new(),
            platforms: Vec::new(),
            source_restarts: 0,
            sources: BTreeMap::new(),
        }
    }

    #[test]
    fn written_atomically_read_back_and_judged_live_or_stale() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = crate::outbox::Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap();
        let p = path(dir.path());
        let now = Utc::now();
        write(&p, &status(std::process::id(), now, outbox.stats())).unwrap();
        assert!(!p.with_extension("json.tmp").exists(), "the temporary file is renamed");
        let back = read(&p).unwrap();
        assert_eq!(
            (back.boot, back.items_acked, back.outbox.next_seq),
            (3, 20, outbox.next_seq())
        );
        assert!(back.is_live(now), "this process, just written");
        assert!(
            !back.is_live(now + chrono::Duration::seconds(60)),
            "stale after three intervals"
        );
        let gone = status(u32::MAX, now, outbox.stats());
        assert!(!gone.is_live(now), "no such process");
    }
}

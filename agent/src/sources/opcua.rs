//! OPC UA servers — the DCS and SCADA systems of the process industries
//! (nonferrous metals, steel, chemicals): one task per server reads the
//! configured nodes, by subscription (the server reports changes) or by
//! polling, maps them to indicators and units, and appends them with the
//! source's cursor in one atomic outbox step.
//!
//! The client is `async-opcua` (RustCrypto, no OpenSSL). Its session can
//! reconnect by itself, but only a few times and out of sight of shutdown
//! and status; so its own retries are off and this task owns the life of a
//! session: connect, read until the connection is lost, then wait with a
//! doubling backoff (honouring shutdown) and connect afresh, recreating the
//! subscription. Each connect and request is bounded by `timeout_ms`.
//! A node whose read fails, or whose value has a bad status, produces no
//! reading: the aggregator sees a gap, never a made-up value. Counters go
//! through the same rollover and replacement rule as the Modbus and DL/T 645
//! sources (`counter.rs`).
//!
//! ```toml
//! [[opcua]]
//! name = "dcs-1"
//! endpoint = "opc.tcp://10.20.3.4:4840/"
//! security_policy = "Basic256Sha256"
//! user = "zonesync"
//! password_file = "/etc/zonesync/opcua-dcs-1.password"
//! server_certificate = "/etc/zonesync/dcs-1.der"
//! enterprise = "91419001MA0000001N"
//! read = "subscription"
//! interval_ms = 1000
//! [[opcua.nodes]]
//! node_id = "ns=2;s=Feeder1.ActiveEnergy"
//! point = "F1"
//! indicator = "electricity"
//! unit = "kWh"
//! ```

mod config;
mod counter;
mod session;

use crate::sources::cursor::JsonCursor;
pub use config::{
    check_all, Checked, Identity, Mode, Node, NodeConfig, OpcUaConfig, OpcUaConfigError, Policy, ReadMode,
};
pub use counter::{advance, Change, CounterError, CounterState, Cursor, NodeCursor, Sample};

use crate::outbox::{Item, Outbox, OutboxError};
use crate::shutdown::Shutdown;
use crate::sources::clock::ClockGuard;
use chrono::{DateTime, Utc};
use opcua_types::{DataValue, StatusCode};
use session::{Connected, SessionError};
use std::sync::Arc;
use std::time::Duration;
use zonesync_proto::{EnterpriseId, Reading, Validator};

/// Counters of one server source, by name, for the status file.
pub type OpcUaStats = crate::sources::counts::NamedCounts;

/// One OPC UA server, checked and ready to run.
#[derive(Debug, Clone)]
pub struct OpcUaSource {
    checked: Checked,
    validator: Validator,
    /// Refuses readings stamped before the enterprise existed (see `sources::clock`).
    clock: Option<Arc<ClockGuard>>,
    /// What it did; clone the `Arc` before `run` to watch it.
    pub stats: Arc<OpcUaStats>,
}

/// Longest wait between two connects to a server that is away.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The first wait after a lost connection.
const MIN_BACKOFF: Duration = Duration::from_millis(500);

impl OpcUaSource {
    /// A source for one checked server.
    pub fn new(checked: Checked, validator: Validator) -> Self {
        Self {
            checked,
            validator,
            clock: None,
            stats: Arc::new(OpcUaStats::default()),
        }
    }

    /// The clock check applied before readings are queued.
    pub fn with_clock(mut self, clock: Arc<ClockGuard>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Name under which this server stores its cursor.
    pub fn source_name(&self) -> String {
        format!("opcua:{}", self.checked.cfg.name)
    }

    fn cfg(&self) -> &OpcUaConfig {
        &self.checked.cfg
    }

    /// Connects, reads every node once, and reports per node, for
    /// `zonesync-agent check`: the values as a first read would send them.
    pub async fn probe(&self, mut shutdown: Shutdown) -> Vec<crate::sources::probe::ProbeRow> {
        use crate::sources::probe::{ProbeRead, ProbeRow};
        let target = |n: &Node| format!("{} {}", self.cfg().endpoint, n.cfg.node_id);
        let fail_all = |why: String| {
            self.checked
                .nodes
                .iter()
                .map(|n| ProbeRow::error("opcua", target(n), &why))
                .collect::<Vec<_>>()
        };
        let conn = tokio::select! {
            _ = shutdown.wait() => return fail_all("shut down before connecting".into()),
            c = Connected::open(&self.checked) => c,
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => return fail_all(e.to_string()),
        };
        let values = tokio::select! {
            _ = shutdown.wait() => Err(SessionError::Shutdown),
            v = conn.read_all(&self.checked) => v,
        };
        conn.close().await;
        let values = match values {
            Ok(v) => v,
            Err(e) => return fail_all(e.to_string()),
        };
        self.checked
            .nodes
            .iter()
            .zip(values)
            .map(|(n, dv)| {
                let result = number(&dv).map(|s| {
                    vec![ProbeRead {
                        indicator: n.cfg.indicator.clone(),
                        point: n.cfg.point.clone(),
                        value: s.as_f64() * n.cfg.scale,
                        unit: n.cfg.unit.clone(),
                    }]
                });
                ProbeRow {
                    source: "opcua".into(),
                    target: target(n),
                    result,
                }
            })
            .collect()
    }

    /// Reads until shutdown, connecting again after every lost connection.
    /// Connection failures are logged and counted, never fatal; only an
    /// outbox failure ends the task.
    pub async fn run(self, outbox: Arc<Outbox>, mut shutdown: Shutdown) -> Result<(), OutboxError> {
        let source = self.source_name();
        let mut cursor = Cursor::from_bytes(outbox.cursor(&source)?.as_deref());
        cursor
            .nodes
            .retain(|k, _| self.checked.nodes.iter().any(|n| n.key == *k));
        let name = self.cfg().name.clone();
        tracing::info!(server = %name, endpoint = %self.cfg().endpoint, nodes = self.checked.nodes.len(),
            read = ?self.cfg().read, policy = self.cfg().security_policy.as_str(), "opcua source starting");
        let mut refusing = vec![false; self.checked.nodes.len()];
        let mut wait = MIN_BACKOFF;
        let mut reachable = true;
        loop {
            let conn = tokio::select! {
                _ = shutdown.wait() => break,
                c = Connected::open(&self.checked) => c,
            };
            let ended = match conn {
                Err(e) => Err(e),
                Ok(mut conn) => {
                    self.stats.bump("connects");
                    if !reachable {
                        tracing::info!(server = %name, "opcua server answering again");
                    }
                    reachable = true;
                    wait = MIN_BACKOFF;
                    let r = self
                        .session(&mut conn, &outbox, &source, &mut cursor, &mut refusing, &mut shutdown)
                        .await;
                    conn.close().await;
                    r
                }
            };
            match ended {
                Ok(()) => break,
                Err(SessionError::Outbox(e)) => return Err(e),
                Err(SessionError::Shutdown) => break,
                Err(e) => {
                    self.stats.bump("connection_failures");
                    // Log transitions, not every failed connect: a server down
                    // for a day would otherwise fill the disk.
                    if std::mem::replace(&mut reachable, false) {
                        tracing::warn!(server = %name, endpoint = %self.cfg().endpoint, error = %e,
                            "opcua server not reachable; connecting again with backoff");
                    } else {
                        tracing::debug!(server = %name, error = %e, delay_ms = wait.as_millis() as u64, "opcua connect failed");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        tracing::info!(server = %name, stats = ?self.stats.counts(), "opcua source stopped");
        Ok(())
    }

    /// One session: polls or takes subscription notifications until the
    /// connection is lost (an error) or shutdown (`Ok`).
    async fn session(
        &self,
        conn: &mut Connected,
        outbox: &Outbox,
        source: &str,
        cursor: &mut Cursor,
        refusing: &mut [bool],
        shutdown: &mut Shutdown,
    ) -> Result<(), SessionError> {
        match self.cfg().read {
            ReadMode::Poll => {
                let mut ticker = tokio::time::interval(Duration::from_millis(self.cfg().interval_ms));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.wait() => return Ok(()),
                        lost = conn.lost() => return Err(lost),
                        _ = ticker.tick() => {}
                    }
                    self.stats.bump("polls");
                    let ts = Utc::now();
                    let values = tokio::select! {
                        _ = shutdown.wait() => return Ok(()),
                        v = conn.read_all(&self.checked) => v?,
                    };
                    let batch: Vec<(usize, DataValue)> = values.into_iter().enumerate().collect();
                    self.append(outbox, source, cursor, refusing, batch, Some(ts))?;
                }
            }
            ReadMode::Subscription => {
                let mut rx = conn.subscribe(&self.checked, self.stats.clone()).await?;
                loop {
                    let first = tokio::select! {
                        _ = shutdown.wait() => return Ok(()),
                        lost = conn.lost() => return Err(lost),
                        v = rx.recv() => match v {
                            Some(v) => v,
                            None => return Err(SessionError::Lost("subscription ended".into())),
                        },
                    };
                    // Everything that has arrived goes in one append.
                    let mut batch = vec![first];
                    while let Ok(v) = rx.try_recv() {
                        batch.push(v);
                    }
                    self.append(outbox, source, cursor, refusing, batch, None)?;
                }
            }
        }
    }

    /// Turns values into readings and appends them with the cursor;
    /// `poll_ts` stamps polled values, subscription values carry their
    /// source timestamp.
    fn append(
        &self,
        outbox: &Outbox,
        source: &str,
        cursor: &mut Cursor,
        refusing: &mut [bool],
        values: Vec<(usize, DataValue)>,
        poll_ts: Option<DateTime<Utc>>,
    ) -> Result<(), SessionError> {
        let (items, next) = self.readings(values, cursor, refusing, poll_ts, Utc::now());
        if items.is_empty() {
            return Ok(());
        }
        let n = items.len() as u64;
        outbox
            .append(items, Some((source, &next.to_bytes())))
            .map_err(SessionError::Outbox)?;
        *cursor = next;
        self.stats.add("readings", n);
        Ok(())
    }

    /// Counts a value that is not sent; warns on the first of a run of them
    /// only, as a dead sensor reporting a bad status every read would fill the disk.
    fn refuse(&self, refusing: &mut bool, point: &str, why: &str) {
        self.stats.bump("refused");
        if std::mem::replace(refusing, true) {
            tracing::debug!(server = %self.cfg().name, point, reason = why, "value refused");
        } else {
            tracing::warn!(server = %self.cfg().name, point, reason = why, "value refused; not sent until it is valid again");
        }
    }

    /// The readings a set of values gives, and the cursor that goes with
    /// them. A bad status, a value that is no number, a negative counter or
    /// a reading the catalog refuses produces nothing and leaves that node's
    /// state as it was; a subscription value no newer than the last one
    /// sent (the current value a server repeats after a reconnect) is
    /// skipped.
    fn readings(
        &self,
        values: Vec<(usize, DataValue)>,
        cursor: &Cursor,
        refusing: &mut [bool],
        poll_ts: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> (Vec<(EnterpriseId, Item)>, Cursor) {
        let mut next = cursor.clone();
        let mut items = Vec::new();
        let name = &self.cfg().name;
        for (index, dv) in values {
            let (Some(node), Some(refusing)) = (self.checked.nodes.get(index), refusing.get_mut(index)) else {
                continue;
            };
            let cfg = &node.cfg;
            let sample = match number(&dv) {
                Ok(s) => s,
                Err(why) => {
                    self.stats.bump("failed_reads");
                    self.refuse(refusing, &cfg.point, &why);
                    continue;
                }
            };
            let mut state = next.nodes.get(&node.key).cloned().unwrap_or_default();
            let ts = match poll_ts {
                Some(ts) => ts,
                None => {
                    let ts = dv
                        .source_timestamp
                        .as_ref()
                        .or(dv.server_timestamp.as_ref())
                        .map(|t| t.as_chrono())
                        .unwrap_or(now);
                    let ms = ts.timestamp_millis();
                    if state.last_ts_ms.is_some_and(|last| ms <= last) {
                        self.stats.bump("duplicates");
                        continue;
                    }
                    state.last_ts_ms = Some(ms);
                    ts
                }
            };
            let value = if node.counter {
                match advance(state.counter.as_ref(), sample) {
                    Ok((st, change)) => {
                        match change {
                            Change::Rollover => {
                                self.stats.bump("rollovers");
                                tracing::info!(server = %name, point = %cfg.point, wraps = st.wraps, "counter rolled over");
                            }
                            Change::Replacement { previous } => {
                                self.stats.bump("replacements");
                                tracing::warn!(server = %name, point = %cfg.point, previous, value = sample.as_f64(),
                                    "counter fell: meter replaced or reset, sending the new value as read");
                            }
                            Change::First | Change::Rising => {}
                        }
                        state.counter = Some(st);
                        st.unwrapped()
                    }
                    Err(e) => {
                        self.refuse(refusing, &cfg.point, &e.to_string());
                        continue;
                    }
                }
            } else {
                sample.as_f64()
            };
            let reading = Reading {
                indicator: cfg.indicator.clone(),
                point: cfg.point.clone(),
                value: value * cfg.scale,
                unit: cfg.unit.clone(),
                ts: Some(ts),
                period: None,
            };
            let sent = reading.value;
            let admitted = super::admit::reading(
                &self.validator,
                self.clock.as_deref(),
                &self.source_name(),
                &self.cfg().enterprise,
                reading,
                now,
            );
            match admitted {
                Ok(r) => items.push((self.cfg().enterprise.clone(), Item::Reading(r))),
                Err(super::admit::Refused::Invalid(why)) => {
                    self.refuse(refusing, &cfg.point, &format!("value {sent}: {why}"));
                    continue;
                }
                Err(super::admit::Refused::Clock(_)) => {
                    self.stats.bump("refused");
                    *refusing = true;
                    continue;
                }
            }
            if std::mem::replace(refusing, false) {
                tracing::info!(server = %name, point = %cfg.point, "valid values again");
            }
            next.nodes.insert(node.key.clone(), state);
        }
        (items, next)
    }
}

/// The number in a value the server returned, or why there is none.
fn number(dv: &DataValue) -> Result<Sample, String> {
    let status = dv.status.unwrap_or(StatusCode::Good);
    if !status.is_good() {
        return Err(format!("status {status}"));
    }
    let v = dv.value.as_ref().ok_or("no value")?;
    Sample::of(v).ok_or_else(|| format!("not a number ({:?})", v.type_id()))
}

#[cfg(test)]
mod tests;

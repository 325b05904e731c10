//! DL/T 645-2007 (and 1997) electricity meters on an RS-485 bus, reached
//! either behind a serial-to-TCP gateway in transparent mode — the gateway
//! passes bytes through unchanged, so the agent speaks the meter protocol
//! itself over one TCP connection per gateway — or on the agent's own serial
//! port (`serial`, see `sources::serial`). Either way one task owns the bus
//! and asks its meters in turn (the bus is half-duplex: one question, one
//! answer, then the next meter); only opening the byte stream differs.
//!
//! Answers are matched to questions by meter address and data identifier,
//! never by order: a meter that answers after its timeout only costs that
//! late frame, which is dropped, and the connection stays usable for the
//! others. Only a broken or closed connection is re-opened. Energy totals are
//! counters: an eight-digit BCD register wraps from 999999.99 kWh to zero,
//! and a fall that is not a wrap is a replaced meter, told apart by the same
//! rule the Modbus source uses (`modbus::is_rollover`).
//!
//! ```toml
//! [[dlt645]]
//! gateway = "10.20.1.30:8899"
//! address = "202311230001"
//! enterprise = "91419001MA0000001N"
//! point = "M1"
//! quantity = "forward"
//! ```

mod config;
mod counter;
mod frame;

pub use config::{check_all, Dlt645Config, Dlt645ConfigError};
pub use counter::BcdCounter;

pub use frame::{
    answer, energy, read_request, request, scan, Address, AddressError, AnswerError, Energy, Frame, Protocol, Quantity,
    Scan,
};

/// Prefix of a bus key that names a `[[serial]]` port rather than a gateway.
pub const SERIAL_BUS: &str = "serial:";

use super::clock::ClockGuard;
use super::modbus::Change;
use super::probe::{ProbeRead, ProbeRow};
use crate::outbox::{Item, Outbox, OutboxError};
use crate::shutdown::Shutdown;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use zonesync_proto::{EnterpriseId, Reading, Validator};

/// Largest receive buffer kept while waiting for one answer: a gateway
/// spewing noise must not grow memory.
const MAX_BUFFER: usize = 4096;

/// The unit of every DL/T 645 energy total.
const UNIT: &str = "kWh";

/// A checked meter.
#[derive(Debug, Clone)]
struct Meter {
    cfg: Dlt645Config,
    point: String,
    /// Key of its counter state in the gateway's cursor.
    key: String,
}

/// Counts of what a gateway's polls did.
#[derive(Debug, Default)]
pub struct Dlt645Stats {
    /// Meter reads started.
    pub reads: AtomicU64,
    /// Readings appended to the outbox.
    pub readings: AtomicU64,
    /// Reads given up (after retries, or skipped while the gateway was unreachable).
    pub failed_reads: AtomicU64,
    /// Answers not received in time.
    pub timeouts: AtomicU64,
    /// Connects refused or failed.
    pub connect_failures: AtomicU64,
    /// Answers with control 0xD1 (0xC1 in 1997).
    pub meter_errors: AtomicU64,
    /// Frames dropped: bad checksum, other meters' or late answers, wrong data identifier.
    pub bad_frames: AtomicU64,
    /// Values read but not sent (negative counter, refused by the catalog or the clock check).
    pub refused: AtomicU64,
    /// BCD rollovers absorbed.
    pub rollovers: AtomicU64,
    /// Falls sent as meter replacements.
    pub replacements: AtomicU64,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl Dlt645Stats {
    /// Current counts by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BTreeMap::from([
            ("reads", g(&self.reads)),
            ("readings", g(&self.readings)),
            ("failed_reads", g(&self.failed_reads)),
            ("timeouts", g(&self.timeouts)),
            ("connect_failures", g(&self.connect_failures)),
            ("meter_errors", g(&self.meter_errors)),
            ("bad_frames", g(&self.bad_frames)),
            ("refused", g(&self.refused)),
            ("rollovers", g(&self.rollovers)),
            ("replacements", g(&self.replacements)),
        ])
    }
}

/// Why one meter could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connect to the gateway: {0}")]
    Connect(std::io::Error),
    #[error("open the serial port: {0}")]
    Open(std::io::Error),
    #[error("connect to the gateway timed out")]
    ConnectTimeout,
    #[error("no answer in time")]
    Timeout,
    #[error("bus connection: {0}")]
    Io(std::io::Error),
    #[error("the gateway or serial port closed the connection")]
    Closed,
    #[error("{0}")]
    Answer(AnswerError),
    #[error("not tried: the gateway did not answer earlier in this round")]
    Skipped,
}

impl ReadError {
    /// Whether the connection must be re-opened.
    fn breaks_connection(&self) -> bool {
        matches!(
            self,
            ReadError::Connect(_)
                | ReadError::Open(_)
                | ReadError::ConnectTimeout
                | ReadError::Io(_)
                | ReadError::Closed
        )
    }

    /// Whether asking again may help: a meter that refuses will refuse again.
    fn retryable(&self) -> bool {
        !matches!(
            self,
            ReadError::Answer(AnswerError::Refused(_) | AnswerError::Refused1997(_)) | ReadError::Skipped
        )
    }
}

/// The meters on one bus (a gateway, or a serial port), checked and ready to run.
#[derive(Debug, Clone)]
pub struct Dlt645Gateway {
    /// The gateway's `host:port`, or [`SERIAL_BUS`] and the port's name.
    gateway: String,
    meters: Vec<Meter>,
    validator: Validator,
    clock: Option<Arc<ClockGuard>>,
    /// The serial port's settings when the bus is one of the agent's own ports.
    #[cfg(feature = "serial")]
    serial: Option<super::serial::SerialConfig>,
    /// What its polls did; clone the `Arc` before `run` to watch it.
    pub stats: Arc<Dlt645Stats>,
}

/// A byte stream to a bus: a TCP connection or a serial port.
trait Line: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Line for T {}

/// A bus connection and the bytes received but not yet used.
struct Connection {
    stream: Box<dyn Line>,
    buf: Vec<u8>,
}

impl Dlt645Gateway {
    /// The clock check applied before readings are queued.
    pub fn with_clock(mut self, clock: Arc<ClockGuard>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Name under which this gateway stores its counters' cursor.
    pub fn source_name(&self) -> String {
        format!("dlt645:{}", self.gateway)
    }

    /// The gateway's `host:port`, or `serial:` and the port's name.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// The serial port's name, when the bus is one of the agent's own ports.
    pub fn serial_port(&self) -> Option<&str> {
        self.gateway.strip_prefix(SERIAL_BUS)
    }

    /// The settings of the serial port this bus is on (see `serial::attach_dlt645`).
    #[cfg(feature = "serial")]
    pub fn with_serial(mut self, port: super::serial::SerialConfig) -> Self {
        self.serial = Some(port);
        self
    }

    /// Where the bus is, for logs and `check`: the gateway, or the port and its line settings.
    pub fn endpoint(&self) -> String {
        #[cfg(feature = "serial")]
        if let Some(p) = &self.serial {
            return p.describe();
        }
        self.gateway.clone()
    }

    /// Opens the bus: the serial port, or a TCP connection to the gateway; `None` on shutdown.
    async fn open(&self, limit: Duration, shutdown: &mut Shutdown) -> Option<Result<Box<dyn Line>, ReadError>> {
        #[cfg(feature = "serial")]
        if let Some(p) = &self.serial {
            return Some(match p.open() {
                Ok(s) => Ok(Box::new(s) as Box<dyn Line>),
                Err(e) => Err(ReadError::Open(e)),
            });
        }
        if self.serial_port().is_some() {
            // check_all and attach_dlt645 never leave a serial bus without its settings.
            return Some(Err(ReadError::Open(std::io::Error::other(
                "serial port not configured",
            ))));
        }
        let connect = async {
            let s = TcpStream::connect(self.gateway.as_str()).await?;
            s.set_nodelay(true)?;
            Ok::<_, std::io::Error>(s)
        };
        tokio::select! {
            _ = shutdown.wait() => None,
            r = timeout(limit, connect) => Some(match r {
                Err(_) => Err(ReadError::ConnectTimeout),
                Ok(Err(e)) => Err(ReadError::Connect(e)),
                Ok(Ok(s)) => Ok(Box::new(s) as Box<dyn Line>),
            }),
        }
    }

    /// One attempt at reading meter `m`; `None` on shutdown.
    async fn read_once(
        &self,
        link: &mut Option<Connection>,
        m: &Meter,
        shutdown: &mut Shutdown,
    ) -> Option<Result<Energy, ReadError>> {
        let limit = Duration::from_millis(m.cfg.timeout_ms);
        if link.is_none() {
            let stream = match self.open(limit, shutdown).await? {
                Ok(s) => s,
                Err(e) => return Some(Err(e)),
            };
            tracing::debug!(bus = %self.endpoint(), "bus opened");
            *link = Some(Connection {
                stream,
                buf: Vec::new(),
            });
        }
        let l = link.as_mut()?;
        let exchange = async {
            let wake = if m.cfg.wake_up { 4 } else { 0 };
            // Bytes from an earlier, timed-out exchange cannot answer this one.
            l.buf.clear();
            // `None` only for a total the edition lacks, which check_all refuses.
            let req = request(m.cfg.protocol, m.cfg.address, m.cfg.quantity, wake).ok_or(ReadError::Answer(
                AnswerError::DataId {
                    got: 0,
                    want: m.cfg.quantity.data_id(),
                },
            ))?;
            l.stream.write_all(&req).await.map_err(ReadError::Io)?;
            let deadline = Instant::now() + limit;
            loop {
                match scan(&l.buf) {
                    Scan::Frame { frame, used } => {
                        l.buf.drain(..used);
                        // Another meter's answer, a late one, or an echo of the request.
                        if frame.address != m.cfg.address || frame.control & 0x80 == 0 {
                            bump(&self.stats.bad_frames);
                            continue;
                        }
                        match answer(m.cfg.protocol, &frame, m.cfg.quantity) {
                            Err(AnswerError::DataId { .. }) => {
                                bump(&self.stats.bad_frames);
                                continue;
                            }
                            other => return other.map_err(ReadError::Answer),
                        }
                    }
                    Scan::Corrupt { skip, problem } => {
                        bump(&self.stats.bad_frames);
                        tracing::debug!(gateway = %self.gateway, meter = %m.cfg.address, problem, "corrupt frame skipped");
                        l.buf.drain(..skip);
                        continue;
                    }
                    Scan::Incomplete { skip } => {
                        l.buf.drain(..skip);
                    }
                }
                if l.buf.len() > MAX_BUFFER {
                    l.buf.clear();
                }
                let mut chunk = [0u8; 512];
                let n = match timeout_at(deadline, l.stream.read(&mut chunk)).await {
                    Err(_) => return Err(ReadError::Timeout),
                    Ok(Err(e)) => return Err(ReadError::Io(e)),
                    Ok(Ok(0)) => return Err(ReadError::Closed),
                    Ok(Ok(n)) => n,
                };
                l.buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::select! {
            _ = shutdown.wait() => None,
            r = exchange => Some(r),
        }
    }

    /// Reads meter `m` with retries; `None` on shutdown.
    async fn read(
        &self,
        link: &mut Option<Connection>,
        m: &Meter,
        shutdown: &mut Shutdown,
    ) -> Option<Result<Energy, ReadError>> {
        bump(&self.stats.reads);
        let mut attempt = 0;
        loop {
            let e = match self.read_once(link, m, shutdown).await? {
                Ok(v) => return Some(Ok(v)),
                Err(e) => e,
            };
            match &e {
                ReadError::Timeout | ReadError::ConnectTimeout => bump(&self.stats.timeouts),
                ReadError::Answer(AnswerError::Refused(_) | AnswerError::Refused1997(_)) => {
                    bump(&self.stats.meter_errors)
                }
                ReadError::Answer(_) => bump(&self.stats.bad_frames),
                _ => {}
            }
            if matches!(
                e,
                ReadError::Connect(_) | ReadError::Open(_) | ReadError::ConnectTimeout
            ) {
                bump(&self.stats.connect_failures);
            }
            if e.breaks_connection() {
                *link = None;
            }
            tracing::debug!(gateway = %self.gateway, meter = %m.cfg.address, attempt, error = %e, "dlt645 read failed");
            if attempt >= m.cfg.retries || !e.retryable() {
                return Some(Err(e));
            }
            attempt += 1;
            let pause = Duration::from_millis(50 * (1 << attempt.min(5))).min(Duration::from_millis(m.cfg.timeout_ms));
            tokio::select! {
                _ = shutdown.wait() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Reads the meters at `due` in turn; once the gateway is unreachable the
    /// rest of the round is skipped (each would wait out the same timeout).
    async fn round(
        &self,
        link: &mut Option<Connection>,
        due: &[usize],
        shutdown: &mut Shutdown,
    ) -> Option<Vec<(usize, Result<Energy, ReadError>)>> {
        let mut out = Vec::with_capacity(due.len());
        let mut unreachable = false;
        for &i in due {
            if unreachable {
                bump(&self.stats.reads);
                out.push((i, Err(ReadError::Skipped)));
                continue;
            }
            let r = self.read(link, &self.meters[i], shutdown).await?;
            if matches!(&r, Err(e) if e.breaks_connection()) {
                unreachable = true;
            }
            out.push((i, r));
        }
        Some(out)
    }

    /// Counts and logs a value that is not sent.
    fn refuse(&self, m: &Meter, why: &str) {
        bump(&self.stats.refused);
        tracing::warn!(gateway = %self.gateway, meter = %m.cfg.address, point = %m.point, reason = why, "dlt645 value refused");
    }

    /// Turns one round's answers into readings and the next cursor.
    fn readings(
        &self,
        ts: DateTime<Utc>,
        results: Vec<(usize, Result<Energy, ReadError>)>,
        cursor: &BTreeMap<String, BcdCounter>,
    ) -> (Vec<(EnterpriseId, Item)>, BTreeMap<String, BcdCounter>) {
        let mut next = cursor.clone();
        let mut items = Vec::new();
        for (i, res) in results {
            let m = &self.meters[i];
            let e = match res {
                Ok(e) => e,
                Err(err) => {
                    bump(&self.stats.failed_reads);
                    tracing::debug!(gateway = %self.gateway, meter = %m.cfg.address, error = %err, "dlt645 meter not read");
                    continue;
                }
            };
            let Ok(raw) = u64::try_from(e.hundredths) else {
                self.refuse(m, &format!("negative total {} kWh cannot be a counter", e.kwh()));
                continue;
            };
            let (state, change) = BcdCounter::advance(cursor.get(&m.key), raw);
            match change {
                Change::Rollover => {
                    bump(&self.stats.rollovers);
                    tracing::info!(gateway = %self.gateway, meter = %m.cfg.address, wraps = state.wraps, "BCD total rolled over");
                }
                Change::Replacement { previous } => {
                    bump(&self.stats.replacements);
                    tracing::warn!(gateway = %self.gateway, meter = %m.cfg.address, previous = previous.as_f64() / 100.0,
                        now = raw as f64 / 100.0, "total fell: meter replaced or reset, sending the new value as read");
                }
                Change::First | Change::Rising => {}
            }
            let reading = Reading {
                indicator: m.cfg.indicator.clone(),
                point: m.point.clone(),
                value: state.kwh(),
                unit: UNIT.into(),
                ts: Some(ts),
                period: None,
            };
            let admitted = super::admit::reading(
                &self.validator,
                self.clock.as_deref(),
                &self.source_name(),
                &m.cfg.enterprise,
                reading,
                Utc::now(),
            );
            let item = match admitted {
                Ok(r) => (m.cfg.enterprise.clone(), Item::Reading(r)),
                Err(super::admit::Refused::Invalid(why)) => {
                    self.refuse(m, &why);
                    continue;
                }
                // The guard counts and logs the reason; here it is one more value not sent.
                Err(super::admit::Refused::Clock(_)) => {
                    bump(&self.stats.refused);
                    continue;
                }
            };
            next.insert(m.key.clone(), state);
            items.push(item);
        }
        (items, next)
    }

    /// Polls each meter at its own interval until shutdown. I/O failures are
    /// logged and counted, never fatal; only an outbox failure ends the task.
    pub async fn run(self, outbox: Arc<Outbox>, mut shutdown: Shutdown) -> Result<(), OutboxError> {
        let source = self.source_name();
        let mut cursor: BTreeMap<String, BcdCounter> = outbox
            .cursor(&source)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        cursor.retain(|k, _| self.meters.iter().any(|m| m.key == *k));
        tracing::info!(gateway = %self.gateway, bus = %self.endpoint(), meters = self.meters.len(), "dlt645 source starting");
        let start = Instant::now();
        let mut due_at: Vec<Instant> = vec![start; self.meters.len()];
        let mut link: Option<Connection> = None;
        let mut reachable = true;
        // No meters means no task worth running (check_all never makes such a gateway).
        while let Some(next) = due_at.iter().min().copied() {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
            let now = Instant::now();
            let due: Vec<usize> = (0..self.meters.len()).filter(|i| due_at[*i] <= now).collect();
            for &i in &due {
                // Keep each meter's cadence, but never queue up missed polls.
                let poll = Duration::from_millis(self.meters[i].cfg.poll_ms);
                due_at[i] = (due_at[i] + poll).max(now);
            }
            let ts = Utc::now();
            let Some(results) = self.round(&mut link, &due, &mut shutdown).await else {
                break;
            };
            let all_failed = results.iter().all(|(_, r)| r.is_err());
            match (reachable, all_failed) {
                (true, true) => {
                    let first = results
                        .iter()
                        .find_map(|(_, r)| r.as_ref().err())
                        .map(ToString::to_string);
                    tracing::warn!(gateway = %self.gateway, error = first.as_deref().unwrap_or(""), "dlt645 meters not answering");
                    reachable = false;
                }
                (false, false) => {
                    tracing::info!(gateway = %self.gateway, "dlt645 meters answering again");
                    reachable = true;
                }
                _ => {}
            }
            let (items, next_cursor) = self.readings(ts, results, &cursor);
            if items.is_empty() {
                continue;
            }
            let n = items.len() as u64;
            let bytes = serde_json::to_vec(&next_cursor).unwrap_or_default();
            outbox.append(items, Some((&source, &bytes)))?;
            cursor = next_cursor;
            self.stats.readings.fetch_add(n, Ordering::Relaxed);
        }
        tracing::info!(gateway = %self.gateway, stats = ?self.stats.snapshot(), "dlt645 source stopped");
        Ok(())
    }

    /// Reads every meter once, for `zonesync-agent check`.
    pub async fn probe(&self, mut shutdown: Shutdown) -> Vec<ProbeRow> {
        let mut link = None;
        let all: Vec<usize> = (0..self.meters.len()).collect();
        let results = self.round(&mut link, &all, &mut shutdown).await.unwrap_or_default();
        results
            .into_iter()
            .map(|(i, r)| {
                let m = &self.meters[i];
                ProbeRow {
                    source: "dlt645".into(),
                    target: format!(
                        "{} meter {} {}",
                        self.endpoint(),
                        m.cfg.address,
                        format!("{:?}", m.cfg.quantity).to_lowercase()
                    ),
                    result: r.map_err(|e| e.to_string()).map(|e| {
                        vec![ProbeRead {
                            indicator: m.cfg.indicator.clone(),
                            point: m.point.clone(),
                            value: e.kwh(),
                            unit: UNIT.into(),
                        }]
                    }),
                }
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! Modbus energy meters: one task per device polls its points, decodes
//! the registers and appends all readings of a poll, with the counters'
//! cursor, in one atomic outbox step.
//!
//! A device is reached over TCP (`host`) or over RTU on one of the gateway's
//! serial ports (`serial`, see `sources::serial`); only the transport
//! differs. Devices on one serial port share it: each poll holds the port
//! for all of its points, addressing its own unit id.
//!
//! tokio-modbus has no request timeout of its own and a meter that stops
//! answering would hang a read for ever, so every connect and every read is
//! bounded by `timeout_ms`. A timed-out request may still be answered later,
//! which would pair a stale response with the next request, so after any
//! transport error or timeout the connection is dropped and a fresh one is
//! made. A point whose read fails produces no reading: the aggregator sees a
//! gap, never a made-up value.
//!
//! ```toml
//! [[modbus]]
//! name = "substation-1"
//! host = "10.20.1.15"
//! unit_id = 1
//! enterprise = "91419001MA0000001N"
//! [[modbus.points]]
//! point = "M1"
//! indicator = "electricity"
//! register = 100
//! data_type = "u32"
//! unit = "kWh"
//! ```

mod config;
mod counter;
mod decode;

use crate::sources::cursor::JsonCursor;
pub use config::{check_all, ModbusConfig, ModbusConfigError, PointConfig, Table};
pub use counter::{advance, is_rollover, Change, CounterError, CounterState, Cursor};
pub use decode::{decode, DataType, DecodeError, Order, Raw};

use crate::outbox::{Item, Outbox, OutboxError};
use crate::shutdown::Shutdown;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_modbus::client::{tcp, Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use zonesync_proto::{EnterpriseId, Reading, Validator};

/// Counts of what a device's polls did, for status and tests.
#[derive(Debug, Default)]
pub struct ModbusStats {
    /// Polls started.
    pub polls: AtomicU64,
    /// Readings appended to the outbox.
    pub readings: AtomicU64,
    /// Point reads that gave up (after retries, or skipped while the device was unreachable).
    pub failed_reads: AtomicU64,
    /// Connects or reads that hit `timeout_ms`.
    pub timeouts: AtomicU64,
    /// Connects refused or failed.
    pub connect_failures: AtomicU64,
    /// Modbus exception responses.
    pub exceptions: AtomicU64,
    /// Values read but not sent (NaN, negative counter, refused by the catalog).
    pub refused: AtomicU64,
    /// Counter rollovers absorbed.
    pub rollovers: AtomicU64,
    /// Counter falls sent as meter replacements.
    pub replacements: AtomicU64,
}

/// A plain copy of [`ModbusStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ModbusStatsSnapshot {
    /// Polls started.
    pub polls: u64,
    /// Readings appended.
    pub readings: u64,
    /// Point reads given up.
    pub failed_reads: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Failed connects.
    pub connect_failures: u64,
    /// Exception responses.
    pub exceptions: u64,
    /// Values not sent.
    pub refused: u64,
    /// Rollovers.
    pub rollovers: u64,
    /// Replacements.
    pub replacements: u64,
}

impl ModbusStats {
    /// Current counts by name, for the status file.
    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        let s = self.snapshot();
        [
            ("polls", s.polls),
            ("readings", s.readings),
            ("failed_reads", s.failed_reads),
            ("timeouts", s.timeouts),
            ("connect_failures", s.connect_failures),
            ("exceptions", s.exceptions),
            ("refused", s.refused),
            ("rollovers", s.rollovers),
            ("replacements", s.replacements),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Current counts.
    pub fn snapshot(&self) -> ModbusStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ModbusStatsSnapshot {
            polls: g(&self.polls),
            readings: g(&self.readings),
            failed_reads: g(&self.failed_reads),
            timeouts: g(&self.timeouts),
            connect_failures: g(&self.connect_failures),
            exceptions: g(&self.exceptions),
            refused: g(&self.refused),
            rollovers: g(&self.rollovers),
            replacements: g(&self.replacements),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A checked point: its configuration and whether it is tracked as a counter.
#[derive(Debug, Clone)]
struct Point {
    cfg: PointConfig,
    counter: bool,
    key: String,
}

/// A checked device, ready to run.
#[derive(Debug, Clone)]
pub struct ModbusDevice {
    config: ModbusConfig,
    points: Vec<Point>,
    validator: Validator,
    /// Refuses readings stamped before the enterprise existed (see `sources::clock`).
    clock: Option<Arc<crate::sources::clock::ClockGuard>>,
    /// Modbus RTU: the serial port it shares with the other devices wired to it.
    #[cfg(feature = "serial")]
    line: Option<Arc<super::serial::SerialLine<Context>>>,
    /// What its polls did; clone the `Arc` before `run` to watch it.
    pub stats: Arc<ModbusStats>,
}

/// Why one point could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("read timed out")]
    Timeout,
    #[error("transport: {0}")]
    Transport(tokio_modbus::Error),
    #[error("device answered with exception {0}")]
    Exception(ExceptionCode),
    #[error("not tried: the device did not answer earlier in this poll")]
    Skipped,
}

impl ReadError {
    /// Whether the connection is unusable: a late answer to a timed-out
    /// request would otherwise be taken as the answer to the next one.
    fn breaks_connection(&self) -> bool {
        !matches!(self, ReadError::Exception(_) | ReadError::Skipped)
    }

    /// Whether another attempt may succeed; an exception such as an illegal
    /// address will not go away by asking again, a busy device may.
    fn retryable(&self) -> bool {
        match self {
            ReadError::Exception(c) => matches!(c, ExceptionCode::ServerDeviceBusy | ExceptionCode::Acknowledge),
            ReadError::Skipped => false,
            _ => true,
        }
    }
}

/// Pause before retry `attempt` (1-based): short, doubling, and never longer
/// than the timeout, so one poll's retries stay bounded.
fn retry_backoff(attempt: u32, timeout: Duration) -> Duration {
    let base = Duration::from_millis(50).saturating_mul(1 << attempt.min(6));
    base.min(timeout)
}

impl ModbusDevice {
    /// Name under which this device stores its cursor.
    pub fn source_name(&self) -> String {
        format!("modbus:{}", self.config.name)
    }

    /// The device's configuration.
    pub fn config(&self) -> &ModbusConfig {
        &self.config
    }

    /// The clock check applied before readings are queued.
    pub fn with_clock(mut self, clock: Arc<crate::sources::clock::ClockGuard>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Modbus RTU: the shared serial port this device is read through.
    #[cfg(feature = "serial")]
    pub fn with_line(mut self, line: Arc<super::serial::SerialLine<Context>>) -> Self {
        self.line = Some(line);
        self
    }

    /// Where the device is: `host:port`, or the serial port and its settings.
    pub fn endpoint(&self) -> String {
        #[cfg(feature = "serial")]
        if let Some(line) = &self.line {
            return line.config.describe();
        }
        format!("{}:{}", self.config.host, self.config.port)
    }

    /// Reads every point once, for `zonesync-agent check`: the values as
    /// they would be sent on a first poll (no counter history).
    pub async fn probe(&self, mut shutdown: Shutdown) -> Vec<crate::sources::probe::ProbeRow> {
        use crate::sources::probe::{ProbeRead, ProbeRow};
        let mut ctx = None;
        let results = self.poll(&mut ctx, &mut shutdown).await.unwrap_or_default();
        self.points
            .iter()
            .zip(results)
            .map(|(p, res)| {
                let cfg = &p.cfg;
                let result = res
                    .map_err(|e| e.to_string())
                    .and_then(|words| {
                        decode(&words, cfg.data_type, cfg.word_order, cfg.byte_order).map_err(|e| e.to_string())
                    })
                    .map(|raw| {
                        vec![ProbeRead {
                            indicator: cfg.indicator.clone(),
                            point: cfg.point.clone(),
                            value: raw.as_f64() * cfg.scale,
                            unit: cfg.unit.clone(),
                        }]
                    });
                ProbeRow {
                    source: "modbus".into(),
                    target: format!(
                        "{} unit {} {} {}",
                        self.endpoint(),
                        self.config.unit_id,
                        format!("{:?}", p.cfg.table).to_lowercase(),
                        p.cfg.register
                    ),
                    result,
                }
            })
            .collect()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// Opens the device's transport: its serial port (Modbus RTU) or a TCP
    /// connection; `None` on shutdown.
    async fn open(&self, limit: Duration, shutdown: &mut Shutdown) -> Option<Result<Context, ReadError>> {
        #[cfg(feature = "serial")]
        if let Some(line) = &self.line {
            return Some(match line.config.open() {
                Ok(stream) => {
                    tracing::debug!(device = %self.config.name, port = %line.config.describe(), "serial port opened");
                    Ok(tokio_modbus::client::rtu::attach_slave(
                        stream,
                        Slave(self.config.unit_id),
                    ))
                }
                Err(e) => Err(ReadError::Connect(e)),
            });
        }
        let connect = async {
            let s = TcpStream::connect((self.config.host.as_str(), self.config.port)).await?;
            // Requests are tiny and strictly one at a time.
            s.set_nodelay(true)?;
            Ok::<_, std::io::Error>(s)
        };
        tokio::select! {
            _ = shutdown.wait() => None,
            r = timeout(limit, connect) => Some(match r {
                Err(_) => Err(ReadError::ConnectTimeout),
                Ok(Err(e)) => Err(ReadError::Connect(e)),
                Ok(Ok(s)) => {
                    tracing::debug!(device = %self.config.name, host = %self.config.host, port = self.config.port, "connected");
                    Ok(tcp::attach_slave(s, Slave(self.config.unit_id)))
                }
            }),
        }
    }

    /// One attempt at one point, connecting first if needed; `None` on shutdown.
    async fn read_once(
        &self,
        ctx: &mut Option<Context>,
        p: &PointConfig,
        shutdown: &mut Shutdown,
    ) -> Option<Result<Vec<u16>, ReadError>> {
        let limit = self.timeout();
        if ctx.is_none() {
            match self.open(limit, shutdown).await? {
                Ok(c) => *ctx = Some(c),
                Err(e) => return Some(Err(e)),
            }
        }
        let c = ctx.as_mut()?;
        // A serial port is shared by the devices on its bus: address this one.
        c.set_slave(Slave(self.config.unit_id));
        let n = p.data_type.words();
        let read = match p.table {
            Table::Holding => c.read_holding_registers(p.register, n),
            Table::Input => c.read_input_registers(p.register, n),
        };
        tokio::select! {
            _ = shutdown.wait() => None,
            r = timeout(limit, read) => Some(match r {
                Err(_) => Err(ReadError::Timeout),
                Ok(Err(e)) => Err(ReadError::Transport(e)),
                Ok(Ok(Err(code))) => Err(ReadError::Exception(code)),
                Ok(Ok(Ok(words))) => Ok(words),
            }),
        }
    }

    /// Reads every point once, with retries; `None` on shutdown. Once the
    /// device fails to answer after all retries, the remaining points are
    /// not tried: each would wait out the same timeouts, and the next poll
    /// reconnects anyway.
    async fn poll(
        &self,
        ctx: &mut Option<Context>,
        shutdown: &mut Shutdown,
    ) -> Option<Vec<Result<Vec<u16>, ReadError>>> {
        // On a serial port the bus is held for the whole poll: no other
        // device's request may come between a request and its answer.
        #[cfg(feature = "serial")]
        if let Some(line) = &self.line {
            let mut held = tokio::select! {
                _ = shutdown.wait() => return None,
                g = line.link.lock() => g,
            };
            return self.poll_on(&mut held, shutdown).await;
        }
        self.poll_on(ctx, shutdown).await
    }

    /// [`Self::poll`] over the connection in `ctx`.
    async fn poll_on(
        &self,
        ctx: &mut Option<Context>,
        shutdown: &mut Shutdown,
    ) -> Option<Vec<Result<Vec<u16>, ReadError>>> {
        let mut out = Vec::with_capacity(self.points.len());
        let mut unreachable = false;
        for p in &self.points {
            if unreachable {
                out.push(Err(ReadError::Skipped));
                continue;
            }
            let mut attempt = 0;
            let res = loop {
                let r = self.read_once(ctx, &p.cfg, shutdown).await?;
                let e = match r {
                    Ok(words) => break Ok(words),
                    Err(e) => e,
                };
                match &e {
                    ReadError::Timeout | ReadError::ConnectTimeout => bump(&self.stats.timeouts),
                    ReadError::Exception(_) => bump(&self.stats.exceptions),
                    _ => {}
                }
                if matches!(e, ReadError::Connect(_) | ReadError::ConnectTimeout) {
                    bump(&self.stats.connect_failures);
                }
                if e.breaks_connection() {
                    *ctx = None;
                }
                tracing::debug!(device = %self.config.name, point = %p.cfg.point, attempt, error = %e, "modbus read failed");
                if attempt >= self.config.retries || !e.retryable() {
                    break Err(e);
                }
                attempt += 1;
                tokio::select! {
                    _ = shutdown.wait() => return None,
                    _ = tokio::time::sleep(retry_backoff(attempt, self.timeout())) => {}
                }
            };
            if matches!(&res, Err(e) if e.breaks_connection()) {
                unreachable = true;
            }
            out.push(res);
        }
        Some(out)
    }

    /// Counts a value that is not sent; warns on the first of a run of them
    /// only, as a dead sensor reporting NaN every poll would fill the disk.
    fn refuse(&self, refusing: &mut bool, point: &str, why: &str) {
        bump(&self.stats.refused);
        if std::mem::replace(refusing, true) {
            tracing::debug!(device = %self.config.name, point, reason = why, "value refused");
        } else {
            tracing::warn!(device = %self.config.name, point, reason = why, "value refused; not sent until it is valid again");
        }
    }

    /// Turns one poll's register words into readings and the cursor that goes
    /// with them. A value that cannot be decoded, a negative counter or a
    /// reading the catalog would refuse produces nothing, and leaves that
    /// point's counter state as it was. `refusing` holds, per point, whether
    /// its last value was refused.
    fn readings(
        &self,
        ts: DateTime<Utc>,
        results: Vec<Result<Vec<u16>, ReadError>>,
        cursor: &Cursor,
        refusing: &mut [bool],
    ) -> (Vec<(EnterpriseId, Item)>, Cursor) {
        let mut next = cursor.clone();
        let mut items = Vec::new();
        let name = &self.config.name;
        for ((p, res), refusing) in self.points.iter().zip(results).zip(refusing.iter_mut()) {
            let cfg = &p.cfg;
            let words = match res {
                Ok(w) => w,
                Err(_) => {
                    bump(&self.stats.failed_reads);
                    continue;
                }
            };
            let raw = match decode(&words, cfg.data_type, cfg.word_order, cfg.byte_order) {
                Ok(r) => r,
                Err(e) => {
                    self.refuse(refusing, &cfg.point, &e.to_string());
                    continue;
                }
            };
            let (unscaled, state) = if p.counter {
                match advance(cursor.counters.get(&p.key), cfg.data_type, raw) {
                    Ok((state, change)) => {
                        match change {
                            Change::Rollover => {
                                bump(&self.stats.rollovers);
                                tracing::info!(device = %name, point = %cfg.point, raw = raw.as_f64(), wraps = state.wraps, "counter rolled over");
                            }
                            Change::Replacement { previous } => {
                                bump(&self.stats.replacements);
                                tracing::warn!(device = %name, point = %cfg.point, previous = previous.as_f64(), raw = raw.as_f64(),
                                    "counter fell: meter replaced or reset, sending the new value as read");
                            }
                            Change::First | Change::Rising => {}
                        }
                        (state.unwrapped(), Some(state))
                    }
                    Err(e) => {
                        self.refuse(refusing, &cfg.point, &e.to_string());
                        continue;
                    }
                }
            } else {
                (raw.as_f64(), None)
            };
            let reading = Reading {
                indicator: cfg.indicator.clone(),
                point: cfg.point.clone(),
                value: unscaled * cfg.scale,
                unit: cfg.unit.clone(),
                ts: Some(ts),
                period: None,
            };
            let value = reading.value;
            let admitted = super::admit::reading(
                &self.validator,
                self.clock.as_deref(),
                &self.source_name(),
                &self.config.enterprise,
                reading,
                Utc::now(),
            );
            let item = match admitted {
                Ok(r) => (self.config.enterprise.clone(), Item::Reading(r)),
                Err(super::admit::Refused::Invalid(why)) => {
                    self.refuse(refusing, &cfg.point, &format!("value {value}: {why}"));
                    continue;
                }
                Err(super::admit::Refused::Clock(_)) => {
                    bump(&self.stats.refused);
                    *refusing = true;
                    continue;
                }
            };
            if std::mem::replace(refusing, false) {
                tracing::info!(device = %name, point = %cfg.point, "valid values again");
            }
            if let Some(state) = state {
                next.counters.insert(p.key.clone(), state);
            }
            items.push(item);
        }
        (items, next)
    }

    /// Polls every `poll_ms` until shutdown. I/O failures are logged and
    /// counted, never fatal; only an outbox failure ends the task.
    pub async fn run(self, outbox: Arc<Outbox>, mut shutdown: Shutdown) -> Result<(), OutboxError> {
        let source = self.source_name();
        let mut cursor = Cursor::from_bytes(outbox.cursor(&source)?.as_deref());
        cursor
            .counters
            .retain(|k, _| self.points.iter().any(|p| p.counter && p.key == *k));
        let name = self.config.name.clone();
        tracing::info!(device = %name, endpoint = %self.endpoint(), points = self.points.len(), "modbus source starting");
        let mut ctx: Option<Context> = None;
        let mut reachable = true;
        let mut refusing = vec![false; self.points.len()];
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.poll_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = ticker.tick() => {}
            }
            bump(&self.stats.polls);
            let ts = Utc::now();
            let Some(results) = self.poll(&mut ctx, &mut shutdown).await else {
                break;
            };
            let failed = results.iter().filter(|r| r.is_err()).count();
            let first_error = results.iter().find_map(|r| r.as_ref().err()).map(ToString::to_string);
            // Log transitions, not every failed poll: a meter that is down
            // for a day would otherwise fill the disk.
            match (reachable, failed == results.len()) {
                (true, true) => {
                    tracing::warn!(device = %name, endpoint = %self.endpoint(),
                        error = first_error.as_deref().unwrap_or(""), "modbus device not answering");
                    reachable = false;
                }
                (false, false) => {
                    tracing::info!(device = %name, "modbus device answering again");
                    reachable = true;
                }
                _ if failed > 0 => {
                    tracing::debug!(device = %name, failed, error = first_error.as_deref().unwrap_or(""), "some points not read")
                }
                _ => {}
            }
            let (items, next) = self.readings(ts, results, &cursor, &mut refusing);
            if items.is_empty() {
                continue;
            }
            let n = items.len() as u64;
            outbox.append(items, Some((&source, &next.to_bytes())))?;
            cursor = next;
            self.stats.readings.fetch_add(n, Ordering::Relaxed);
        }
        tracing::info!(device = %name, stats = ?self.stats.snapshot(), "modbus source stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests;

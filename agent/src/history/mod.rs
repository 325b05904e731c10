//! Local history: every reading and declaration the agent took, kept for a
//! configured number of days so an enterprise's energy manager can export it
//! (`zonesync-agent export`) for an inspector or for Excel — whether or not
//! the broker ever got it. The national spec for key energy-using units asks
//! for at least six months of exportable local history; the outbox cannot be
//! that record, because it forgets what was delivered and drops the oldest
//! when full.
//!
//! Layout: `data_dir/history/YYYY-MM-DD.jsonl`, one append-only file per
//! China-time (UTC+8) day, one compact JSON line per item (see [`line`]). A
//! reading goes to the day of its timestamp, a period amount or a
//! declaration to the day it was recorded. Day files make retention a file
//! deletion and export a sequential read of a date range: no index, no
//! database, nothing held in memory but a small write buffer per open day.
//!
//! Durability: history is a copy. The outbox is the durable path (its append
//! is flushed before it returns); history is written only after that append
//! succeeded, buffered, and flushed to disk every [`FLUSH_INTERVAL`] and at
//! shutdown. A power cut can therefore lose the last few seconds of history
//! (never of the outbox), and may leave a partial last line; the next run
//! starts a fresh line after it and export skips and counts it. A write error
//! never fails the outbox append: it is logged and counted.

pub mod export;
pub mod line;

use crate::shutdown::Shutdown;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use zonesync_proto::EnterpriseId;

use crate::outbox::Item;

/// Longest time a recorded item waits in memory before it is written and synced.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// How often retention and the disk budget are applied (also at start).
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// Day files kept open for appending; older ones are closed (backfill may
/// touch several days, but a gateway's memory is small).
const MAX_OPEN_DAYS: usize = 3;
/// Write buffer per open day file.
const BUFFER_BYTES: usize = 32 * 1024;
/// Extension of day files.
pub const EXTENSION: &str = "jsonl";

/// `[history]`: local history retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Keep a local history at all.
    pub enabled: bool,
    /// Whole China-time days kept, today included; older days are deleted.
    pub retention_days: u32,
    /// Most bytes the day files may take; beyond it the oldest days go first.
    pub disk_budget_bytes: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            // Six months plus a margin, as the national spec asks for at least six months.
            retention_days: 190,
            disk_budget_bytes: 512 * 1024 * 1024,
        }
    }
}

/// What went wrong with the history directory.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("[history] retention_days must be at least 1")]
    NoRetention,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The history directory of an agent with this data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("history")
}

/// The day a file name stands for, if it is a day file.
pub fn day_of_file(name: &str) -> Option<NaiveDate> {
    let stem = name.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    NaiveDate::parse_from_str(stem, "%Y-%m-%d").ok()
}

/// The file of one day.
pub fn day_file(dir: &Path, day: NaiveDate) -> PathBuf {
    dir.join(format!("{}.{EXTENSION}", day.format("%Y-%m-%d")))
}

/// Day files in `dir`, oldest first, with their sizes. Other files are ignored.
pub fn list_days(dir: &Path) -> std::io::Result<Vec<(NaiveDate, u64)>> {
    let mut days = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(day) = entry.file_name().to_str().and_then(day_of_file) else {
            continue;
        };
        // A file deleted between listing and stat is simply not counted.
        if let Ok(m) = entry.metadata() {
            days.push((day, m.len()));
        }
    }
    days.sort_unstable();
    Ok(days)
}

/// Items encoded for history before the outbox consumes them; written by
/// [`History::write`] once the outbox append succeeded.
#[derive(Debug, Default)]
pub struct Encoded {
    /// Lines per day, in arrival order.
    days: Vec<(NaiveDate, Vec<u8>, u64)>,
}

impl Encoded {
    fn buffer(&mut self, day: NaiveDate) -> (&mut Vec<u8>, &mut u64) {
        let i = match self.days.iter().position(|d| d.0 == day) {
            Some(i) => i,
            None => {
                self.days.push((day, Vec::new(), 0));
                self.days.len() - 1
            }
        };
        let d = &mut self.days[i];
        (&mut d.1, &mut d.2)
    }
}

/// Counts and span for status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryStats {
    /// Oldest day file (China time).
    pub first_day: Option<NaiveDate>,
    /// Newest day file (China time).
    pub last_day: Option<NaiveDate>,
    /// Day files held.
    pub days: u64,
    /// Bytes the day files take.
    pub bytes: u64,
    /// Configured retention, days.
    pub retention_days: u32,
    /// Configured budget, bytes.
    pub disk_budget_bytes: u64,
    /// Lines written in this run.
    pub lines_written: u64,
    /// Failed writes in this run (history is a copy: the outbox still has them).
    pub write_errors: u64,
    /// Days deleted in this run for being older than the retention.
    pub days_deleted_retention: u64,
    /// Days deleted in this run to stay within the budget.
    pub days_deleted_budget: u64,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Days older than the retention.
    pub expired: Vec<NaiveDate>,
    /// Oldest days deleted to stay within the budget.
    pub over_budget: Vec<NaiveDate>,
    /// Bytes the remaining day files take.
    pub bytes_left: u64,
}

struct OpenDay {
    day: NaiveDate,
    file: BufWriter<File>,
    /// Written since the last sync.
    dirty: bool,
}

/// The history writer, shared by every source through the outbox.
pub struct History {
    dir: PathBuf,
    config: HistoryConfig,
    /// Open day files, most recently used last.
    open: Mutex<Vec<OpenDay>>,
    /// Bytes of the day files: from the last listing plus what was written since.
    bytes: AtomicU64,
    lines_written: AtomicU64,
    write_errors: AtomicU64,
    days_deleted_retention: AtomicU64,
    days_deleted_budget: AtomicU64,
}

impl History {
    /// Opens (creating it if needed) the history directory.
    pub fn open(dir: &Path, config: HistoryConfig) -> Result<Self, HistoryError> {
        if config.retention_days == 0 {
            return Err(HistoryError::NoRetention);
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let bytes = list_days(dir).map_err(io_err(dir))?.iter().map(|d| d.1).sum();
        Ok(Self {
            dir: dir.to_owned(),
            config,
            open: Mutex::new(Vec::new()),
            bytes: AtomicU64::new(bytes),
            lines_written: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            days_deleted_retention: AtomicU64::new(0),
            days_deleted_budget: AtomicU64::new(0),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, Vec<OpenDay>> {
        // A panic while writing leaves at worst a partial line, which export skips.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encodes items (the outbox is about to consume them), stamping period
    /// amounts and declarations with `now`.
    pub fn encode(items: &[(EnterpriseId, Item)], now: DateTime<Utc>) -> Encoded {
        let mut enc = Encoded::default();
        for (enterprise, item) in items {
            match item {
                Item::Reading(r) => {
                    let (buf, n) = enc.buffer(line::reading_day(r, now));
                    line::encode_reading(enterprise, r, buf);
                    *n += 1;
                }
                Item::Declaration(d) => {
                    let (buf, n) = enc.buffer(line::cst_day(now));
                    line::encode_declaration(enterprise, d, now, buf);
                    *n += 1;
                }
            }
        }
        enc
    }

    /// Appends encoded items to their day files (buffered; see [`History::flush`]).
    /// Never fails: history is a copy, so a failure is logged and counted.
    pub fn write(&self, enc: Encoded) {
        let mut open = self.lock();
        for (day, bytes, lines) in enc.days {
            match self.append(&mut open, day, &bytes) {
                Ok(()) => {
                    self.lines_written.fetch_add(lines, Ordering::Relaxed);
                    self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    // Logged on the first failure of a run of them, so a full disk does not flood the log.
                    if self.write_errors.fetch_add(lines, Ordering::Relaxed) == 0 {
                        tracing::warn!(day = %day, dir = %self.dir.display(), lines, "writing history: {e}");
                    }
                    // Drop the handle: the next write reopens and starts a fresh line.
                    open.retain(|o| o.day != day);
                }
            }
        }
    }

    /// Records items directly (tests, tools): encode and write.
    pub fn record(&self, items: &[(EnterpriseId, Item)], now: DateTime<Utc>) {
        self.write(Self::encode(items, now));
    }

    fn append(&self, open: &mut Vec<OpenDay>, day: NaiveDate, bytes: &[u8]) -> std::io::Result<()> {
        let i = match open.iter().position(|o| o.day == day) {
            Some(i) => i,
            None => {
                if open.len() >= MAX_OPEN_DAYS {
                    let mut oldest = open.remove(0);
                    sync(&mut oldest)?;
                }
                open.push(OpenDay {
                    day,
                    file: BufWriter::with_capacity(BUFFER_BYTES, open_for_append(&day_file(&self.dir, day))?),
                    dirty: false,
                });
                open.len() - 1
            }
        };
        let mut o = open.remove(i);
        let res = o.file.write_all(bytes);
        o.dirty = true;
        open.push(o);
        res
    }

    /// Writes every buffered line and syncs the files written to.
    pub fn flush(&self) {
        let mut open = self.lock();
        let mut failed = Vec::new();
        for o in open.iter_mut() {
            if let Err(e) = sync(o) {
                tracing::warn!(day = %o.day, dir = %self.dir.display(), "flushing history: {e}");
                failed.push(o.day);
            }
        }
        open.retain(|o| !failed.contains(&o.day));
    }

    /// Deletes whole days older than the retention (relative to `today`,
    /// China time), then the oldest days while the files exceed the budget.
    /// The newest day is never deleted for the budget: it is being written.
    pub fn enforce(&self, today: NaiveDate) -> Result<Pass, HistoryError> {
        // Under the writer's lock, so a day is never deleted while its file is
        // open (writes to an unlinked file would vanish).
        let mut open = self.lock();
        // Buffered lines count towards the budget too.
        for o in open.iter_mut() {
            if let Err(e) = sync(o) {
                tracing::warn!(day = %o.day, "flushing history: {e}");
            }
        }
        let mut days = list_days(&self.dir).map_err(io_err(&self.dir))?;
        let mut pass = Pass::default();
        let keep = i64::from(self.config.retention_days);
        let remove = |day: NaiveDate, open: &mut Vec<OpenDay>| -> Result<(), HistoryError> {
            open.retain(|o| o.day != day);
            let p = day_file(&self.dir, day);
            match std::fs::remove_file(&p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(&p)(e)),
            }
        };
        while let Some(&(day, _)) = days.first() {
            if (today - day).num_days() < keep {
                break;
            }
            remove(day, &mut open)?;
            pass.expired.push(day);
            days.remove(0);
        }
        let mut total: u64 = days.iter().map(|d| d.1).sum();
        while total > self.config.disk_budget_bytes && days.len() > 1 {
            let (day, size) = days.remove(0);
            remove(day, &mut open)?;
            pass.over_budget.push(day);
            total -= size;
        }
        pass.bytes_left = total;
        drop(open);
        self.bytes.store(total, Ordering::Relaxed);
        self.days_deleted_retention
            .fetch_add(pass.expired.len() as u64, Ordering::Relaxed);
        self.days_deleted_budget
            .fetch_add(pass.over_budget.len() as u64, Ordering::Relaxed);
        if !pass.expired.is_empty() {
            tracing::info!(days = pass.expired.len(), first = %pass.expired[0], retention_days = keep,
                "history: deleted days older than the retention");
        }
        if !pass.over_budget.is_empty() {
            tracing::warn!(days = pass.over_budget.len(), first = %pass.over_budget[0],
                budget = self.config.disk_budget_bytes, "history: deleted the oldest days to stay within the disk budget");
        }
        if total > self.config.disk_budget_bytes {
            tracing::warn!(
                bytes = total,
                budget = self.config.disk_budget_bytes,
                "history: the newest day alone exceeds the disk budget"
            );
        }
        Ok(pass)
    }

    /// Whether the files may have grown past the budget since the last pass.
    pub fn over_budget(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) > self.config.disk_budget_bytes
    }

    /// Span, size and this run's counters.
    pub fn stats(&self) -> HistoryStats {
        let days = list_days(&self.dir).unwrap_or_default();
        HistoryStats {
            first_day: days.first().map(|d| d.0),
            last_day: days.last().map(|d| d.0),
            days: days.len() as u64,
            bytes: days.iter().map(|d| d.1).sum(),
            retention_days: self.config.retention_days,
            disk_budget_bytes: self.config.disk_budget_bytes,
            lines_written: self.lines_written.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            days_deleted_retention: self.days_deleted_retention.load(Ordering::Relaxed),
            days_deleted_budget: self.days_deleted_budget.load(Ordering::Relaxed),
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] and applies retention and the budget
    /// at start and every [`RETENTION_INTERVAL`] (sooner when the budget is
    /// passed), until shutdown; flushes once more at the end.
    pub async fn run(self: std::sync::Arc<Self>, mut shutdown: Shutdown) -> Result<(), crate::outbox::OutboxError> {
        let mut last_pass: Option<tokio::time::Instant> = None;
        loop {
            let due = last_pass.is_none_or(|t| t.elapsed() >= RETENTION_INTERVAL) || self.over_budget();
            if due {
                if let Err(e) = self.enforce(line::cst_day(Utc::now())) {
                    tracing::warn!("history retention: {e}");
                }
                last_pass = Some(tokio::time::Instant::now());
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(FLUSH_INTERVAL) => {}
            }
            self.flush();
        }
        self.flush();
        Ok(())
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.flush();
    }
}

fn sync(o: &mut OpenDay) -> std::io::Result<()> {
    o.file.flush()?;
    if o.dirty {
        o.file.get_ref().sync_data()?;
        o.dirty = false;
    }
    Ok(())
}

/// Opens a day file for appending. A file that does not end in a newline
/// lost the end of its last line in a crash: a newline is written first, so
/// that damage stays one skipped line instead of swallowing the next one.
fn open_for_append(path: &Path) -> std::io::Result<File> {
    let mut f = OpenOptions::new().read(true).append(true).create(true).open(path)?;
    let len = f.metadata()?.len();
    if len > 0 {
        f.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            f.write_all(b"\n")?;
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests;

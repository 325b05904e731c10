//! A drop folder for the monthly figures finance exports (value added, gross
//! output, revenue, tax, R&D spend, land area, energy by carrier) as CSV, or
//! for history a meter system exports as time-stamped readings (enterprise,
//! point, timestamp, value): a zone loading a year of hourly counters needs
//! no MQTT publisher of its own. Which of the two a folder holds is its
//! configuration's choice of `period_column` or `timestamp_column`.
//!
//! Time-stamped readings older than the outbox's backfill window go upstream
//! in batches marked `backfill` (the outbox marks every batch holding one when
//! it seals it), so the aggregator never lets them overwrite newer live values.
//!
//! Chinese Excel exports are usually GBK, so the encoding is configurable
//! (`auto` tries UTF-8, then GBK). A file is taken only once it has not
//! changed for `settle_secs` (so a half-copied file is not read), checked as a
//! whole, and then either queued (its name and fingerprint stored in the same
//! atomic outbox step as its readings, so a crash before the move can never
//! queue it twice) and moved to `done/`, or moved to `rejected/` with a
//! `.reason.txt` beside it saying what is wrong, row by row.

use crate::outbox::{Item, Outbox, OutboxError};
use crate::shutdown::Shutdown;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use zonesync_proto::{EnterpriseId, Period, Reading, Validator, CST};

/// Text encoding of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// UTF-8 if valid (a BOM is skipped), else GBK.
    #[default]
    Auto,
    /// UTF-8.
    Utf8,
    /// GBK (GB 2312 superset), as Chinese Excel writes.
    Gbk,
}

/// One mapped column.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Header text as in the file, e.g. `工业增加值(万元)`.
    pub header: String,
    /// Catalog indicator code.
    pub indicator: String,
    /// Unit of the values in this column.
    pub unit: String,
}

/// A drop folder (`[[csv_drop]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvDropConfig {
    /// Name (cursor key and logs).
    pub name: String,
    /// The folder; `done/` and `rejected/` are made inside it.
    pub folder: PathBuf,
    /// Header of the credit-code column.
    pub enterprise_column: String,
    /// Header of the period column (`2026-10`, `2026-Q3`, `2026`): a folder of period figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_column: Option<String>,
    /// Header of the timestamp column: a folder of time-stamped readings (meter
    /// registers, gauges) instead. RFC 3339 with an offset, or a local time
    /// (`2025-03-01 14:00[:00]`, `2025/3/1 14:00`, `2025-03-01T14:00:00`) taken as China time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_column: Option<String>,
    /// Header of the measuring-point column of time-stamped readings (a meter
    /// id); without it every reading has the empty point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_column: Option<String>,
    /// Mapped value columns; other columns are ignored.
    pub columns: Vec<Column>,
    /// File encoding.
    #[serde(default)]
    pub encoding: Encoding,
    /// How often to look, seconds.
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
    /// A file must be unchanged this long before it is read, seconds.
    #[serde(default = "default_settle")]
    pub settle_secs: u64,
}

fn default_poll() -> u64 {
    30
}
fn default_settle() -> u64 {
    5
}

/// Decodes file bytes per the configured encoding.
pub fn decode(bytes: &[u8], enc: Encoding) -> Result<String, String> {
    let utf8 = |b: &[u8]| std::str::from_utf8(b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)).map(str::to_owned);
    let gbk = |b: &[u8]| {
        let (text, _, bad) = encoding_rs::GBK.decode(b);
        if bad {
            Err("not valid GBK".to_owned())
        } else {
            Ok(text.into_owned())
        }
    };
    match enc {
        Encoding::Utf8 => utf8(bytes).map_err(|e| format!("not valid UTF-8: {e}")),
        Encoding::Gbk => gbk(bytes),
        Encoding::Auto => utf8(bytes).or_else(|_| gbk(bytes).map_err(|_| "neither UTF-8 nor GBK".to_owned())),
    }
}

/// What a drop folder's rows are stamped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Period,
    Timestamp,
}

/// Why a drop folder's configuration cannot work.
#[derive(Debug, thiserror::Error)]
pub enum CsvDropConfigError {
    #[error("[[csv_drop]] {0}: give exactly one of period_column (period figures) and timestamp_column (time-stamped readings)")]
    Stamp(String),
    #[error(
        "[[csv_drop]] {0}: point_column is for time-stamped readings (timestamp_column); period figures have no point"
    )]
    PointWithoutTimestamp(String),
}

impl CsvDropConfig {
    /// Checks the configuration before the folder is watched.
    pub fn check(&self) -> Result<(), CsvDropConfigError> {
        self.stamp().map(|_| ())
    }

    fn stamp(&self) -> Result<(Stamp, &str), CsvDropConfigError> {
        match (&self.period_column, &self.timestamp_column) {
            (Some(_), None) if self.point_column.is_some() => {
                Err(CsvDropConfigError::PointWithoutTimestamp(self.name.clone()))
            }
            (Some(p), None) => Ok((Stamp::Period, p)),
            (None, Some(t)) => Ok((Stamp::Timestamp, t)),
            _ => Err(CsvDropConfigError::Stamp(self.name.clone())),
        }
    }
}

/// Local-time layouts accepted in a timestamp column, as exports and Excel write them.
const LOCAL_TS: [&str; 6] = [
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
];

/// A timestamp cell: RFC 3339 keeps its offset; a time without one is China
/// time (UTC+8), which is what Chinese meter systems write.
pub fn parse_timestamp(cell: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(cell) {
        return Ok(t.with_timezone(&Utc));
    }
    LOCAL_TS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(cell, f).ok())
        .and_then(|naive| naive.and_local_timezone(CST).single())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("{cell:?} is not a time (RFC 3339, or China time as 2025-03-01 14:00:00)"))
}

/// One thing wrong with a drop file, said in Chinese for the enterprise's
/// IT desk and in English for whoever else reads the log: where (row and
/// column, when it is one cell) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 1-based row of the file (the header is row 1); none for the file as a whole.
    pub row: Option<usize>,
    /// The column's header, when the problem is one cell.
    pub column: Option<String>,
    /// What is wrong, in Chinese.
    pub zh: String,
    /// The same in English.
    pub en: String,
}

impl Problem {
    fn file(zh: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            row: None,
            column: None,
            zh: zh.into(),
            en: en.into(),
        }
    }

    fn cell(row: usize, column: &str, zh: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            row: Some(row),
            column: Some(column.to_owned()),
            zh: zh.into(),
            en: en.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    /// `第5行「时间」：… | row 5, 时间: …` — one line, Chinese first.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.row, &self.column) {
            (Some(r), Some(c)) => write!(f, "第{r}行「{c}」：{} | row {r}, {c}: {}", self.zh, self.en),
            (Some(r), None) => write!(f, "第{r}行：{} | row {r}: {}", self.zh, self.en),
            _ => write!(f, "{} | {}", self.zh, self.en),
        }
    }
}

/// The rejection file written beside a rejected drop file: a heading, then
/// every problem of every row, one per line.
pub fn rejection_text(file: &str, problems: &[Problem]) -> String {
    let mut out = format!(
        "文件 {file} 未导入，共 {n} 处问题；请改正后重新放入文件夹。\n\
         File {file} was not taken: {n} problem(s); correct them and drop the file again.\n\n",
        n = problems.len()
    );
    for p in problems {
        out.push_str(&p.to_string());
        out.push('\n');
    }
    out
}

/// Parses and checks a whole file: every reading, or every problem of every
/// row — a row with a bad credit code still has its time and each value
/// checked, so one pass of corrections fixes the file.
pub fn parse(
    text: &str,
    cfg: &CsvDropConfig,
    validator: &Validator,
) -> Result<Vec<(EnterpriseId, Reading)>, Vec<Problem>> {
    let (stamp, stamp_column) = cfg
        .stamp()
        .map_err(|e| vec![Problem::file("文件夹配置有误", e.to_string())])?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(vec![Problem::file("表头行无法读取", format!("header row: {e}"))]),
    };
    let find = |name: &str| headers.iter().position(|h| h == name);
    let mut problems = Vec::new();
    let found = || headers.iter().collect::<Vec<_>>().join(", ");
    let (Some(ei), Some(pi)) = (find(&cfg.enterprise_column), find(stamp_column)) else {
        return Err(vec![Problem::file(
            format!(
                "表头缺少「{}」或「{stamp_column}」列（现有：{}）",
                cfg.enterprise_column,
                found()
            ),
            format!(
                "header row lacks {:?} or {stamp_column:?} (found: {})",
                cfg.enterprise_column,
                found()
            ),
        )]);
    };
    let point_index = match &cfg.point_column {
        Some(p) => match find(p) {
            Some(i) => Some(i),
            None => {
                return Err(vec![Problem::file(
                    format!("表头缺少「{p}」列（现有：{}）", found()),
                    format!("header row lacks {p:?} (found: {})", found()),
                )])
            }
        },
        None => None,
    };
    let cols: Vec<(usize, &Column)> = cfg
        .columns
        .iter()
        .filter_map(|c| find(&c.header).map(|i| (i, c)))
        .collect();
    if cols.is_empty() {
        return Err(vec![Problem::file(
            "表头中没有任何已配置的数值列",
            "none of the configured value columns is in the header row",
        )]);
    }
    let mut out = Vec::new();
    let now = Utc::now();
    for (n, rec) in rdr.records().enumerate() {
        let row = n + 2; // 1-based, after the header row
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem {
                    row: Some(row),
                    column: None,
                    zh: format!("本行无法读取（列数须与表头一致，共 {} 列）", headers.len()),
                    en: e.to_string(),
                });
                continue;
            }
        };
        let ent = EnterpriseId::parse(rec.get(ei).unwrap_or(""))
            .map_err(|e| {
                problems.push(Problem::cell(
                    row,
                    &cfg.enterprise_column,
                    "不是有效的统一社会信用代码（18位，末位为校验码，GB 32100）",
                    e.to_string(),
                ))
            })
            .ok();
        let cell = rec.get(pi).unwrap_or("");
        let when = match stamp {
            Stamp::Period => Period::parse(cell)
                .map(|p| (None, Some(p)))
                .map_err(|e| ("不是有效的期间（如 2025-03、2025-Q1 或 2025）", e.to_string())),
            Stamp::Timestamp => parse_timestamp(cell)
                .map(|t| (Some(t), None))
                .map_err(|e| ("不是有效的时间（北京时间如 2025-03-01 14:00:00，或 RFC 3339）", e)),
        };
        let when = when
            .map_err(|(zh, en)| problems.push(Problem::cell(row, stamp_column, format!("{cell:?} {zh}"), en)))
            .ok();
        let point = point_index.and_then(|i| rec.get(i)).unwrap_or("").to_owned();
        for (i, c) in &cols {
            let cell = rec.get(*i).unwrap_or("").replace(',', "");
            if cell.is_empty() {
                continue; // an empty cell is "not reported", not zero
            }
            let value: f64 = match cell.parse() {
                Ok(v) => v,
                Err(_) => {
                    problems.push(Problem::cell(
                        row,
                        &c.header,
                        format!("{cell:?} 不是数字"),
                        format!("{cell:?} is not a number"),
                    ));
                    continue;
                }
            };
            // Without an enterprise or a time the reading cannot be checked further.
            let (Some(ent), Some((ts, period))) = (&ent, when) else {
                continue;
            };
            let reading = Reading {
                indicator: c.indicator.clone(),
                point: point.clone(),
                value,
                unit: c.unit.clone(),
                ts,
                period,
            };
            match validator.reading(&serde_json::to_value(&reading).unwrap_or_default(), now) {
                Ok(_) => out.push((ent.clone(), reading)),
                Err(e) => problems.push(Problem::cell(row, &c.header, e.zh(), e.to_string())),
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn fingerprint(name: &str, bytes: &[u8]) -> String {
    // FNV-1a: stable across runs and platforms, enough to tell files apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{name}:{}:{h:016x}", bytes.len())
}

fn move_to(file: &Path, sub: &str) -> std::io::Result<PathBuf> {
    let dir = file.parent().unwrap_or(Path::new(".")).join(sub);
    std::fs::create_dir_all(&dir)?;
    let target = dir.join(file.file_name().unwrap_or_default());
    std::fs::rename(file, &target)?;
    Ok(target)
}

impl CsvDropConfig {
    fn cursor_key(&self) -> String {
        format!("csv_drop:{}", self.name)
    }

    /// Looks at the folder once; returns how many files were taken.
    pub fn scan(&self, outbox: &Outbox, validator: &Validator) -> Result<usize, OutboxError> {
        let key = self.cursor_key();
        let mut seen: BTreeSet<String> = outbox
            .cursor(&key)?
            .and_then(|c| serde_json::from_slice(&c).ok())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.folder) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("csv")))
                .collect(),
            Err(e) => {
                tracing::warn!(folder = %self.folder.display(), "drop folder not readable: {e}");
                return Ok(0);
            }
        };
        files.sort();
        let mut taken = 0;
        for file in files {
            let settled = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .map(|t| {
                    SystemTime::now().duration_since(t).unwrap_or_default() >= Duration::from_secs(self.settle_secs)
                })
                .unwrap_or(false);
            if !settled {
                continue;
            }
            let Ok(bytes) = std::fs::read(&file) else { continue };
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let fp = fingerprint(&name, &bytes);
            if seen.contains(&fp) {
                // Queued before a crash stopped the move: just finish the move.
                let _ = move_to(&file, "done");
                continue;
            }
            let parsed = decode(&bytes, self.encoding)
                .map_err(|e| vec![Problem::file("文件编码无法识别（请存为 UTF-8 或 GBK）", e)])
                .and_then(|text| parse(&text, self, validator));
            match parsed {
                Ok(readings) => {
                    seen.insert(fp);
                    let cursor = serde_json::to_vec(&seen).unwrap_or_default();
                    let n = readings.len();
                    outbox.append(
                        readings.into_iter().map(|(e, r)| (e, Item::Reading(r))).collect(),
                        Some((&key, &cursor)),
                    )?;
                    if let Err(e) = move_to(&file, "done") {
                        tracing::warn!(file = %file.display(), "queued but not moved to done/: {e}");
                    }
                    tracing::info!(file = %name, readings = n, "drop file queued");
                    taken += 1;
                }
                Err(problems) => {
                    tracing::warn!(file = %name, problems = problems.len(), "drop file rejected");
                    if let Ok(target) = move_to(&file, "rejected") {
                        let reason = target.with_extension("csv.reason.txt");
                        let _ = std::fs::write(reason, rejection_text(&name, &problems));
                    }
                }
            }
        }
        Ok(taken)
    }

    /// Watches the folder until shutdown.
    pub async fn run(
        self,
        outbox: Arc<Outbox>,
        validator: Validator,
        mut shutdown: Shutdown,
    ) -> Result<(), OutboxError> {
        loop {
            self.scan(&outbox, &validator)?;
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(self.poll_secs.max(1))) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonesync_proto::{Catalog, Limits};

    fn cfg(folder: &Path) -> CsvDropConfig {
        CsvDropConfig {
            name: "finance".into(),
            folder: folder.to_path_buf(),
            enterprise_column: "统一社会信用代码".into(),
            period_column: Some("期间".into()),
            timestamp_column: None,
            point_column: None,
            columns: vec![
                Column {
                    header: "工业增加值(万元)".into(),
                    indicator: "value_added".into(),
                    unit: "万元".into(),
                },
                Column {
                    header: "税收(万元)".into(),
                    indicator: "tax".into(),
                    unit: "万元".into(),
                },
            ],
            encoding: Encoding::Auto,
            poll_secs: 1,
            settle_secs: 0,
        }
    }

    const GOOD: &str = "统一社会信用代码,企业名称,期间,工业增加值(万元),税收(万元)\n\
                        91350100M000100Y43,示例钢铁,2026-10,\"1,520.5\",88\n\
                        91350100M000100Y43,示例钢铁,2026-09,1400,\n";

    #[test]
    fn gbk_and_utf8_files_are_read_once_and_bad_ones_rejected_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let drop = dir.path().join("drop");
        std::fs::create_dir_all(&drop).unwrap();
        let (gbk, _, _) = encoding_rs::GBK.encode(GOOD);
        std::fs::write(drop.join("a-gbk.csv"), &gbk).unwrap();
        std::fs::write(drop.join("b-utf8.csv"), format!("\u{feff}{GOOD}")).unwrap();
        std::fs::write(
            drop.join("c-bad.csv"),
            "统一社会信用代码,期间,工业增加值(万元)\n91350100M000100Y44,2026-10,5\n91350100M000100Y43,2026-13,x\n",
        )
        .unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap();
        let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
        let c = cfg(&drop);
        assert_eq!(c.scan(&outbox, &v).unwrap(), 2);
        // 3 values per good file (the empty tax cell is not reported), both files.
        assert_eq!(outbox.pending_items(), 6);
        assert!(drop.join("done/a-gbk.csv").exists() && drop.join("done/b-utf8.csv").exists());
        let reason = std::fs::read_to_string(drop.join("rejected/c-bad.csv.reason.txt")).unwrap();
        assert!(reason.starts_with("文件 c-bad.csv 未导入，共 3 处问题"), "{reason}");
        assert!(
            reason.contains("第2行「统一社会信用代码」：不是有效的统一社会信用代码"),
            "{reason}"
        );
        assert!(reason.contains("| row 2, 统一社会信用代码: enterprise id"), "{reason}");
        // Row 3: every problem, the period and the value both.
        assert!(reason.contains("第3行「期间」：\"2026-13\" 不是有效的期间"), "{reason}");
        assert!(reason.contains("第3行「工业增加值(万元)」：\"x\" 不是数字"), "{reason}");
        // The same content dropped again after a crash-before-move is not queued twice.
        std::fs::copy(drop.join("done/a-gbk.csv"), drop.join("a-gbk.csv")).unwrap();
        assert_eq!(c.scan(&outbox, &v).unwrap(), 0);
        assert_eq!(outbox.pending_items(), 6);
    }

    fn timed(folder: &Path) -> CsvDropConfig {
        CsvDropConfig {
            name: "meters".into(),
            folder: folder.to_path_buf(),
            enterprise_column: "企业".into(),
            period_column: None,
            timestamp_column: Some("时间".into()),
            point_column: Some("测点".into()),
            columns: vec![Column {
                header: "电量(kWh)".into(),
                indicator: "electricity".into(),
                unit: "kWh".into(),
            }],
            encoding: Encoding::Auto,
            poll_secs: 1,
            settle_secs: 0,
        }
    }

    const HISTORY: &str = "企业,测点,时间,电量(kWh)\n\
                           91350100M000100Y43,M1,2025-03-01 00:00:00,1000\n\
                           91350100M000100Y43,M1,2025/3/1 1:00,1012.5\n\
                           91350100M000100Y43,M2,2025-03-01T02:00:00+08:00,\"2,000\"\n";

    #[test]
    fn time_stamped_history_becomes_register_readings_at_china_time() {
        let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
        let got = parse(HISTORY, &timed(Path::new(".")), &v).unwrap();
        let r: Vec<_> = got
            .iter()
            .map(|(_, r)| (r.point.as_str(), r.value, r.ts, r.period))
            .collect();
        let at = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        assert_eq!(
            r,
            [
                ("M1", 1000.0, at("2025-02-28T16:00:00Z"), None),
                ("M1", 1012.5, at("2025-02-28T17:00:00Z"), None),
                ("M2", 2000.0, at("2025-02-28T18:00:00Z"), None),
            ]
        );
    }

    #[test]
    fn a_history_file_with_a_bad_row_is_rejected_whole_with_each_reason() {
        let dir = tempfile::tempdir().unwrap();
        let drop = dir.path().join("drop");
        std::fs::create_dir_all(&drop).unwrap();
        let (gbk, _, _) = encoding_rs::GBK.encode(HISTORY);
        std::fs::write(drop.join("a-gbk.csv"), &gbk).unwrap();
        let bad = format!("{HISTORY}91350100M000100Y43,M1,2025-03-01 25:00,1013\n91350100M000100Y43,M1,2099-01-01 00:00,1014\n91350100M000100Y43,M1,2025-03-01 03:00,-5\n");
        std::fs::write(drop.join("b-bad.csv"), bad).unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap();
        let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
        assert_eq!(timed(&drop).scan(&outbox, &v).unwrap(), 1);
        assert_eq!(outbox.pending_items(), 3, "only the good file's readings");
        assert!(drop.join("done/a-gbk.csv").exists());
        let reason = std::fs::read_to_string(drop.join("rejected/b-bad.csv.reason.txt")).unwrap();
        let lines: Vec<_> = reason.lines().skip(3).collect();
        assert_eq!(lines.len(), 3, "{reason}");
        assert!(
            lines[0].starts_with("第5行「时间」：\"2025-03-01 25:00\" 不是有效的时间")
                && lines[0].contains("| row 5, 时间: \"2025-03-01 25:00\" is not a time"),
            "{reason}"
        );
        assert!(
            lines[1].starts_with("第6行「电量(kWh)」：时间") && lines[1].contains("比接收端时钟快"),
            "{reason}"
        );
        assert!(
            lines[2].starts_with("第7行「电量(kWh)」：electricity 不能为负数"),
            "{reason}"
        );
    }

    /// A row wrong in several cells lists each: the IT desk corrects the file in one pass.
    #[test]
    fn every_problem_of_every_row_is_listed() {
        let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
        let text = "统一社会信用代码,期间,工业增加值(万元),税收(万元)\n\
                    not-a-code,2026-13,x,-1\n\
                    91350100M000100Y43,2026-10,5,\n\
                    91350100M000100Y43,2026-10,y,z\n";
        let problems = parse(text, &cfg(Path::new(".")), &v).unwrap_err();
        let at: Vec<_> = problems
            .iter()
            .map(|p| (p.row.unwrap_or(0), p.column.clone().unwrap_or_default()))
            .collect();
        let cell = |r: usize, c: &str| (r, c.to_owned());
        assert_eq!(
            at,
            [
                cell(2, "统一社会信用代码"),
                cell(2, "期间"),
                cell(2, "工业增加值(万元)"),
                cell(4, "工业增加值(万元)"),
                cell(4, "税收(万元)"),
            ],
            "{problems:?}"
        );
        // Every line says it in Chinese, then in English.
        for p in &problems {
            let line = p.to_string();
            assert!(line.starts_with('第') && line.contains(" | row "), "{line}");
        }
    }

    #[test]
    fn a_folder_is_either_period_figures_or_time_stamped_readings() {
        let mut c = timed(Path::new("."));
        assert!(c.check().is_ok());
        c.period_column = Some("期间".into());
        assert!(matches!(c.check(), Err(CsvDropConfigError::Stamp(_))));
        c.timestamp_column = None;
        assert!(matches!(c.check(), Err(CsvDropConfigError::PointWithoutTimestamp(_))));
        c.point_column = None;
        assert!(c.check().is_ok());
        c.period_column = None;
        assert!(matches!(c.check(), Err(CsvDropConfigError::Stamp(_))));
    }

    #[test]
    fn values_are_checked_against_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.columns[0].unit = "dollars".into();
        let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
        let err = parse(GOOD, &c, &v).unwrap_err();
        assert!(
            err[0].en.contains("unit \"dollars\" is not accepted for value_added"),
            "{err:?}"
        );
    }
}

//! `zonesync-agent export`: the history as CSV for an inspector or for Excel.
//!
//! UTF-8 with a byte-order mark (Excel on Chinese Windows opens a BOM-less
//! UTF-8 file as GBK and garbles every 中文 header and point name), CRLF line
//! ends, RFC 4180 quoting, and a header in Chinese and English. One row per
//! reading; declarations are a separate export (`--declarations`) with their
//! own columns, because a declared value (a level, a yes/no, a text) has no
//! unit or time of measurement and would leave most reading columns empty.
//!
//! It reads the day files only (never the outbox, which the running agent
//! holds), one day and one line at a time, so it works while the agent runs
//! and its memory does not grow with the history. A line it cannot read — the
//! partial last line of a crash, or the line the agent is writing right now —
//! is skipped and counted, never fatal.

use super::line::{self, Entry};
use chrono::{DateTime, NaiveDate, Utc};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use zonesync_proto::{Catalog, CST};

/// The UTF-8 byte-order mark the file starts with.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Columns of a readings export.
pub const READING_COLUMNS: [&str; 9] = [
    "企业 enterprise",
    "指标 indicator",
    "指标名称 name",
    "测点 point",
    "数值 value",
    "单位 unit",
    "时间(北京时间) time_cst",
    "时间(UTC) time_utc",
    "期间 period",
];

/// Columns of a declarations export.
pub const DECLARATION_COLUMNS: [&str; 6] = [
    "企业 enterprise",
    "指标 indicator",
    "指标名称 name",
    "申报值 value",
    "记录时间(北京时间) recorded_cst",
    "记录时间(UTC) recorded_utc",
];

/// Why an export could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0:?} is not a date: write YYYY-MM-DD (China time), e.g. 2026-11-23")]
    BadDate(String),
    #[error("--from {from} is after --to {to}")]
    BadRange { from: NaiveDate, to: NaiveDate },
    #[error("no history in {dir}: is [history] enabled, and is this the agent's data_dir?")]
    NoHistory { dir: String },
    #[error("no history between {from} and {to}: the history holds {first} to {last}")]
    NoDays {
        from: String,
        to: String,
        first: NaiveDate,
        last: NaiveDate,
    },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("writing the CSV: {0}")]
    Write(#[from] std::io::Error),
}

/// Readings or declarations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// One row per reading.
    #[default]
    Readings,
    /// One row per declaration.
    Declarations,
}

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// First day (China time), inclusive.
    pub from: Option<NaiveDate>,
    /// Last day (China time), inclusive.
    pub to: Option<NaiveDate>,
    /// Only this enterprise (credit code, case-insensitive).
    pub enterprise: Option<String>,
    /// Only this indicator code.
    pub indicator: Option<String>,
    /// Readings or declarations.
    pub kind: Kind,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Day files read.
    pub days: u64,
    /// Rows written (header not counted).
    pub rows: u64,
    /// Lines skipped because they could not be read (crash-cut or being written).
    pub skipped_lines: u64,
    /// First and last day read.
    pub span: Option<(NaiveDate, NaiveDate)>,
}

/// Parses a `--from` / `--to` day.
pub fn parse_day(s: &str) -> Result<NaiveDate, ExportError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| ExportError::BadDate(s.to_owned()))
}

/// Appends one CSV field, quoted when it holds a comma, quote, line break or
/// edge space (RFC 4180; Excel trims unquoted edge spaces).
fn field(out: &mut Vec<u8>, s: &str) {
    let quote = s.contains([',', '"', '\r', '\n']) || s.starts_with(' ') || s.ends_with(' ');
    if quote {
        out.push(b'"');
        for part in s.split('"') {
            out.extend_from_slice(part.as_bytes());
            out.extend_from_slice(b"\"\"");
        }
        // One doubled quote too many was added after the last part.
        out.truncate(out.len() - 2);
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

fn row(out: &mut Vec<u8>, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        field(out, f);
    }
    out.extend_from_slice(b"\r\n");
}

/// China time as Excel reads it (`2026-11-23 00:00:00`), milliseconds only when there are any.
fn time_cst(t: DateTime<Utc>) -> String {
    let fmt = if t.timestamp_subsec_millis() == 0 {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%Y-%m-%d %H:%M:%S%.3f"
    };
    t.with_timezone(&CST).format(fmt).to_string()
}

/// UTC as RFC 3339 (`2026-11-22T16:00:00Z`).
fn time_utc(t: DateTime<Utc>) -> String {
    let fmt = if t.timestamp_subsec_millis() == 0 {
        "%Y-%m-%dT%H:%M:%SZ"
    } else {
        "%Y-%m-%dT%H:%M:%S%.3fZ"
    };
    t.format(fmt).to_string()
}

/// Writes the history in `dir` as CSV to `out`, one day file at a time.
/// `catalog` fills the indicator's Chinese name when given.
pub fn export(
    dir: &Path,
    filter: &Filter,
    catalog: Option<&Catalog>,
    out: &mut dyn Write,
) -> Result<Summary, ExportError> {
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if from > to {
            return Err(ExportError::BadRange { from, to });
        }
    }
    let no_history = || ExportError::NoHistory {
        dir: dir.display().to_string(),
    };
    let all = super::list_days(dir).map_err(|_| no_history())?;
    let (Some(first), Some(last)) = (all.first().map(|d| d.0), all.last().map(|d| d.0)) else {
        return Err(no_history());
    };
    let days: Vec<NaiveDate> = all
        .iter()
        .map(|d| d.0)
        .filter(|d| filter.from.is_none_or(|f| *d >= f) && filter.to.is_none_or(|t| *d <= t))
        .collect();
    if days.is_empty() {
        let show = |d: Option<NaiveDate>| d.map_or_else(|| "…".to_owned(), |d| d.to_string());
        return Err(ExportError::NoDays {
            from: show(filter.from),
            to: show(filter.to),
            first,
            last,
        });
    }
    let mut summary = Summary {
        span: days.first().zip(days.last()).map(|(a, b)| (*a, *b)),
        ..Summary::default()
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    buf.extend_from_slice(BOM);
    match filter.kind {
        Kind::Readings => row(&mut buf, &READING_COLUMNS),
        Kind::Declarations => row(&mut buf, &DECLARATION_COLUMNS),
    }
    let enterprise = filter.enterprise.as_deref().map(str::to_ascii_uppercase);
    let name = |code: &str| catalog.and_then(|c| c.get(code)).map_or("", |i| i.name_zh.as_str());
    let mut text = Vec::with_capacity(256);
    for day in days {
        let path = super::day_file(dir, day);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            // Retention deleted it after the listing: nothing to export for that day.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(read_err(&path, source)),
        };
        summary.days += 1;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        loop {
            text.clear();
            let n = reader.read_until(b'\n', &mut text).map_err(|e| read_err(&path, e))?;
            if n == 0 {
                break;
            }
            // A last line without its newline is cut short (a crash) or still being written.
            let entry = match text.strip_suffix(b"\n") {
                Some(l) => line::decode(l),
                None => None,
            };
            let Some(entry) = entry else {
                summary.skipped_lines += 1;
                continue;
            };
            let written = match (&entry, filter.kind) {
                (
                    Entry::Reading {
                        enterprise: e,
                        reading: r,
                    },
                    Kind::Readings,
                ) => {
                    if enterprise.as_ref().is_some_and(|f| f != e)
                        || filter.indicator.as_ref().is_some_and(|i| *i != r.indicator)
                    {
                        false
                    } else {
                        let value = r.value.to_string();
                        let (cst, utc) =
                            r.ts.map_or((String::new(), String::new()), |t| (time_cst(t), time_utc(t)));
                        let period = r.period.map(|p| p.to_string()).unwrap_or_default();
                        row(
                            &mut buf,
                            &[
                                e,
                                &r.indicator,
                                name(&r.indicator),
                                &r.point,
                                &value,
                                &r.unit,
                                &cst,
                                &utc,
                                &period,
                            ],
                        );
                        true
                    }
                }
                (
                    Entry::Declaration {
                        enterprise: e,
                        recorded,
                        declaration: d,
                    },
                    Kind::Declarations,
                ) => {
                    if enterprise.as_ref().is_some_and(|f| f != e)
                        || filter.indicator.as_ref().is_some_and(|i| *i != d.indicator)
                    {
                        false
                    } else {
                        let value = match &d.value {
                            serde_json::Value::String(s) => s.clone(),
                            v => v.to_string(),
                        };
                        row(
                            &mut buf,
                            &[
                                e,
                                &d.indicator,
                                name(&d.indicator),
                                &value,
                                &time_cst(*recorded),
                                &time_utc(*recorded),
                            ],
                        );
                        true
                    }
                }
                _ => false,
            };
            if written {
                summary.rows += 1;
            }
            if buf.len() >= 60 * 1024 {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(summary)
}

fn read_err(path: &Path, source: std::io::Error) -> ExportError {
    ExportError::Read {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        row(&mut out, &["plain", "a,b", "say \"hi\"", "两\n行", " edge", "", "\""]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"两\n行\",\" edge\",,\"\"\"\"\r\n"
        );
    }

    #[test]
    fn times_in_china_and_utc() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time_cst(t), "2026-11-23 00:00:00");
        assert_eq!(time_utc(t), "2026-11-22T16:00:00Z");
        let t = t + chrono::Duration::milliseconds(250);
        assert_eq!(time_cst(t), "2026-11-23 00:00:00.250");
        assert_eq!(time_utc(t), "2026-11-22T16:00:00.250Z");
    }

    #[test]
    fn bad_dates_are_refused_with_the_expected_form() {
        assert_eq!(
            parse_day("2026-11-23").unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
        );
        for s in ["2026-13-01", "23/11/2026", "", "2026-11-31"] {
            let e = parse_day(s).unwrap_err();
            assert!(e.to_string().contains("YYYY-MM-DD"), "{e}");
        }
    }
}

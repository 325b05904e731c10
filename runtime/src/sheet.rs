//! Spreadsheets as rows of cells: the zone registry and the enterprise
//! profiles are kept by zone offices in Excel, saved as `.xlsx` or as CSV
//! (which Chinese Excel writes in GBK). This module only reads the grid —
//! header row, then rows numbered as Excel numbers them, so a reason can
//! name the row a person sees — and writes CSV back; what a column means
//! is the importer's business.
//!
//! An empty cell stays [`Cell::Empty`], never an empty text or a zero: the
//! importers read it as "not stated", which is not the same as a stated "no"
//! or "none".

use std::io::Cursor;
use std::path::Path;

/// One cell as the file holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Nothing in the cell (or only spaces).
    Empty,
    /// Text, trimmed.
    Text(String),
    /// A number (an .xlsx numeric cell; CSV cells are always text).
    Number(f64),
    /// A TRUE/FALSE cell of an .xlsx file.
    Bool(bool),
    /// A date (an .xlsx date cell), as `YYYY-MM-DD`, or with the time when it has one.
    Date(String),
}

impl Cell {
    /// The cell as text a person would read: a whole number without `.0`;
    /// None for an empty cell.
    pub fn text(&self) -> Option<String> {
        match self {
            Cell::Empty => None,
            Cell::Text(t) | Cell::Date(t) => Some(t.clone()),
            Cell::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => Some(format!("{}", *n as i64)),
            Cell::Number(n) => Some(n.to_string()),
            Cell::Bool(b) => Some(b.to_string()),
        }
    }

    fn from_text(t: &str) -> Cell {
        match t.trim() {
            "" => Cell::Empty,
            t => Cell::Text(t.to_owned()),
        }
    }
}

/// A sheet: its header row and its data rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sheet {
    /// Header cells as text (empty header cells as "").
    pub headers: Vec<String>,
    /// Data rows with their row number as the spreadsheet shows it (the header is row 1
    /// when it is the first row); rows with every cell empty are left out.
    pub rows: Vec<(usize, Vec<Cell>)>,
}

impl Sheet {
    /// Column index of the first header that `matches` accepts.
    pub fn column(&self, matches: impl Fn(&str) -> bool) -> Option<usize> {
        self.headers.iter().position(|h| matches(h))
    }
}

/// Why a sheet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SheetError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: a spreadsheet must be .csv or .xlsx")]
    Kind { path: String },
    #[error("CSV is neither UTF-8 nor GBK")]
    Encoding,
    #[error("CSV: {0}")]
    Csv(String),
    #[error(".xlsx: {0}")]
    Xlsx(String),
    #[error("the workbook has no worksheet")]
    NoWorksheet,
    #[error("the sheet has no header row")]
    NoHeader,
}

/// Whether a path names a spreadsheet this module reads (by extension).
pub fn is_sheet(path: &Path) -> bool {
    path.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("csv") || x.eq_ignore_ascii_case("xlsx"))
}

/// Reads a `.csv` (UTF-8, with or without a BOM, else GBK) or the first worksheet of an `.xlsx`.
pub fn read(path: &Path) -> Result<Sheet, SheetError> {
    let bytes = std::fs::read(path).map_err(|source| SheetError::Read {
        path: path.display().to_string(),
        source,
    })?;
    match path
        .extension()
        .and_then(|x| x.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => from_csv(&bytes),
        Some("xlsx") => from_xlsx(&bytes),
        _ => Err(SheetError::Kind {
            path: path.display().to_string(),
        }),
    }
}

/// Decodes UTF-8 (a BOM skipped) or, failing that, GBK.
pub fn decode(bytes: &[u8]) -> Result<String, SheetError> {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Ok(t) = std::str::from_utf8(body) {
        return Ok(t.to_owned());
    }
    let (text, _, bad) = encoding_rs::GBK.decode(bytes);
    if bad {
        return Err(SheetError::Encoding);
    }
    Ok(text.into_owned())
}

/// Parses CSV bytes (UTF-8 or GBK).
pub fn from_csv(bytes: &[u8]) -> Result<Sheet, SheetError> {
    let text = decode(bytes)?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = rdr.records();
    let headers: Vec<String> = match records.next() {
        Some(Ok(h)) => h.iter().map(|c| c.trim().to_owned()).collect(),
        Some(Err(e)) => return Err(SheetError::Csv(e.to_string())),
        None => return Err(SheetError::NoHeader),
    };
    let mut rows = Vec::new();
    for (i, rec) in records.enumerate() {
        let rec = rec.map_err(|e| SheetError::Csv(e.to_string()))?;
        // Numbered by record as a spreadsheet numbers rows (the header is row
        // 1), not by line: a quoted cell may span lines.
        let line = i + 2;
        let cells: Vec<Cell> = rec.iter().map(Cell::from_text).collect();
        if cells.iter().any(|c| *c != Cell::Empty) {
            rows.push((line, cells));
        }
    }
    Ok(Sheet { headers, rows })
}

/// Reads the first worksheet of an `.xlsx` workbook.
pub fn from_xlsx(bytes: &[u8]) -> Result<Sheet, SheetError> {
    use calamine::{Data, Reader, Xlsx};
    let mut book = Xlsx::new(Cursor::new(bytes)).map_err(|e| SheetError::Xlsx(e.to_string()))?;
    let range = book
        .worksheet_range_at(0)
        .ok_or(SheetError::NoWorksheet)?
        .map_err(|e| SheetError::Xlsx(e.to_string()))?;
    // Row numbers as Excel shows them: the used range may not start at A1.
    let first_row = range.start().map_or(0, |(r, _)| r as usize) + 1;
    let cell = |d: &Data| match d {
        Data::Empty | Data::Error(_) => Cell::Empty,
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => Cell::from_text(s),
        Data::Int(i) => Cell::Number(*i as f64),
        Data::Float(f) => Cell::Number(*f),
        Data::Bool(b) => Cell::Bool(*b),
        Data::DateTime(t) => excel_date(t.as_f64()),
    };
    let mut rows = range.rows().enumerate();
    let headers = match rows.next() {
        Some((_, h)) => h.iter().map(|c| cell(c).text().unwrap_or_default()).collect(),
        None => return Err(SheetError::NoHeader),
    };
    let rows = rows
        .map(|(i, r)| (first_row + i, r.iter().map(cell).collect::<Vec<_>>()))
        .filter(|(_, cells)| cells.iter().any(|c| *c != Cell::Empty))
        .collect();
    Ok(Sheet { headers, rows })
}

/// An Excel date serial (days since 1899-12-30, the 1900 date system) as a date.
fn excel_date(serial: f64) -> Cell {
    let Some(epoch) = chrono::NaiveDate::from_ymd_opt(1899, 12, 30) else {
        return Cell::Number(serial);
    };
    let days = serial.floor();
    let seconds = ((serial - days) * 86_400.0).round() as i64;
    match epoch
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.checked_add_signed(chrono::Duration::days(days as i64)))
        .and_then(|t| t.checked_add_signed(chrono::Duration::seconds(seconds)))
    {
        Some(t) if seconds == 0 => Cell::Date(t.format("%Y-%m-%d").to_string()),
        Some(t) => Cell::Date(t.format("%Y-%m-%d %H:%M:%S").to_string()),
        None => Cell::Number(serial),
    }
}

/// Writes rows as CSV that Excel on Chinese Windows opens as it reads it:
/// UTF-8 with a BOM (without one Excel takes UTF-8 for GBK), CRLF line ends.
pub fn write_csv(headers: &[String], rows: &[Vec<String>]) -> Result<Vec<u8>, SheetError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(b"\xEF\xBB\xBF".to_vec());
    w.write_record(headers).map_err(|e| SheetError::Csv(e.to_string()))?;
    for r in rows {
        w.write_record(r).map_err(|e| SheetError::Csv(e.to_string()))?;
    }
    w.into_inner().map_err(|e| SheetError::Csv(e.to_string()))
}

/// A yes/no cell as zone offices write it (是/否, 有/无, yes/no, true/false,
/// 1/0, ✓/✗); None for anything else, which the importers refuse with the
/// text they found rather than guess.
pub fn yes_no(text: &str) -> Option<bool> {
    match text.trim().to_lowercase().as_str() {
        "是" | "有" | "yes" | "y" | "true" | "1" | "√" | "✓" => Some(true),
        "否" | "无" | "no" | "n" | "false" | "0" | "×" | "✗" => Some(false),
        _ => None,
    }
}

/// Whether a header names a field: its English key (`above_scale`), its
/// Chinese label (`规上`), or both as the export writes them (`规上 above_scale`).
pub fn header_is(header: &str, key: &str, zh: &str) -> bool {
    let h = header.trim();
    h.eq_ignore_ascii_case(key)
        || h == zh
        || h.rsplit(char::is_whitespace)
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbk_and_utf8_csv_read_alike_and_empty_cells_stay_empty() {
        let text = "企业名称,数值\r\n示例,\"1,5\"\r\n,,\r\n乙, \r\n";
        let (gbk, _, _) = encoding_rs::GBK.encode(text);
        let a = from_csv(&gbk).unwrap();
        let b = from_csv(format!("\u{feff}{text}").as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.headers, ["企业名称", "数值"]);
        // The all-empty row 3 is left out; row numbers stay the file's.
        assert_eq!(
            a.rows,
            [
                (2, vec![Cell::Text("示例".into()), Cell::Text("1,5".into())]),
                (4, vec![Cell::Text("乙".into()), Cell::Empty]),
            ]
        );
        assert!(matches!(from_csv(b"\xff\xfe\xfd"), Err(SheetError::Encoding)));
    }

    #[test]
    fn numbers_read_as_people_write_them_and_dates_as_dates() {
        assert_eq!(Cell::Number(3110.0).text().as_deref(), Some("3110"));
        assert_eq!(Cell::Number(1.5).text().as_deref(), Some("1.5"));
        assert_eq!(excel_date(42156.0), Cell::Date("2015-06-01".into()));
        assert_eq!(excel_date(42156.5), Cell::Date("2015-06-01 12:00:00".into()));
    }

    #[test]
    fn headers_match_by_key_label_or_both() {
        assert!(header_is("above_scale", "above_scale", "规上"));
        assert!(header_is("规上", "above_scale", "规上"));
        assert!(header_is("规上 above_scale", "above_scale", "规上"));
        assert!(!header_is("industrial", "above_scale", "规上"));
    }

    #[test]
    fn what_is_written_reads_back() {
        let headers = vec!["名称 name".to_owned(), "代码 code".to_owned()];
        let rows = vec![vec!["甲, \"乙\"".to_owned(), String::new()]];
        let bytes = write_csv(&headers, &rows).unwrap();
        assert!(bytes.starts_with(b"\xEF\xBB\xBF"));
        let back = from_csv(&bytes).unwrap();
        assert_eq!(back.headers, headers);
        assert_eq!(back.rows, [(2, vec![Cell::Text("甲, \"乙\"".into()), Cell::Empty])]);
    }
}

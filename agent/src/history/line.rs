//! One line of a history day file.
//!
//! Each line is a compact JSON array with fixed positions, not a JSON object:
//! - reading: `["r",ts_ms|null,"period"|null,"enterprise","indicator","point",value,"unit"]`
//! - declaration: `["d",recorded_ms,"enterprise","indicator",value]`
//!
//! Why this shape:
//! - JSON escaping handles any point name (Chinese, commas, quotes, tabs)
//!   without a format of our own to get wrong;
//! - a line cut short by a crash can never parse (its closing `]` is
//!   missing), whereas a cut tab-separated line could read as a shorter,
//!   wrong number — the export must skip damaged lines, not misread them;
//! - positions instead of field names and the time as Unix milliseconds keep
//!   a line near 80 bytes instead of about 150 (measured figures are in
//!   docs/reliability.md), which is what decides how many months fit on a
//!   gateway's flash.
//!
//! The tag in front leaves room for other kinds of line later; an unknown tag
//! is skipped and counted like any unreadable line.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use zonesync_proto::{Declaration, EnterpriseId, Period, Reading, CST};

/// A decoded history line.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A reading, as the agent queued it.
    Reading {
        /// Credit code.
        enterprise: String,
        /// The reading (its time to the millisecond).
        reading: Reading,
    },
    /// A declaration, with the time the agent queued it.
    Declaration {
        /// Credit code.
        enterprise: String,
        /// When the agent took it.
        recorded: DateTime<Utc>,
        /// The declaration.
        declaration: Declaration,
    },
}

/// The China-time (UTC+8) day of an instant: the day file it goes to.
pub fn cst_day(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&CST).date_naive()
}

/// The day file a reading belongs to: the China-time day of its timestamp,
/// or — for a period amount without one — the day it was recorded.
pub fn reading_day(r: &Reading, now: DateTime<Utc>) -> NaiveDate {
    cst_day(r.ts.unwrap_or(now))
}

/// Appends a reading's line (with its `\n`) to `out`.
pub fn encode_reading(enterprise: &EnterpriseId, r: &Reading, out: &mut Vec<u8>) {
    let line = (
        "r",
        r.ts.map(|t| t.timestamp_millis()),
        r.period,
        enterprise.as_str(),
        &r.indicator,
        &r.point,
        r.value,
        &r.unit,
    );
    // Serialising strings, numbers and options into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// Appends a declaration's line (with its `\n`) to `out`.
pub fn encode_declaration(enterprise: &EnterpriseId, d: &Declaration, recorded: DateTime<Utc>, out: &mut Vec<u8>) {
    let line = (
        "d",
        recorded.timestamp_millis(),
        enterprise.as_str(),
        &d.indicator,
        &d.value,
    );
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

type ReadingLine = (String, Option<i64>, Option<Period>, String, String, String, f64, String);
type DeclarationLine = (String, i64, String, String, serde_json::Value);

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// Decodes one line (without its `\n`); `None` if it is damaged or of an unknown kind.
pub fn decode(line: &[u8]) -> Option<Entry> {
    // The tag alone first, so each kind is read into its own fixed shape.
    let tag = line.get(..5)?;
    match tag {
        b"[\"r\"," => {
            let (_, ts, period, enterprise, indicator, point, value, unit): ReadingLine =
                serde_json::from_slice(line).ok()?;
            let ts = match ts {
                Some(ms) => Some(millis(ms)?),
                None => None,
            };
            Some(Entry::Reading {
                enterprise,
                reading: Reading {
                    indicator,
                    point,
                    value,
                    unit,
                    ts,
                    period,
                },
            })
        }
        b"[\"d\"," => {
            let (_, recorded, enterprise, indicator, value): DeclarationLine = serde_json::from_slice(line).ok()?;
            Some(Entry::Declaration {
                enterprise,
                recorded: millis(recorded)?,
                declaration: Declaration { indicator, value },
            })
        }
        // Damaged, or a kind this version does not know.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ent() -> EnterpriseId {
        EnterpriseId::parse("91419001MA0000001N").unwrap()
    }

    #[test]
    fn readings_and_declarations_round_trip() {
        let r = Reading {
            indicator: "electricity".into(),
            point: "一号变压器, \"总\"\t表".into(),
            value: 12345.678,
            unit: "kWh".into(),
            ts: Some(utc("2026-11-22T16:00:00.250Z")),
            period: None,
        };
        let amount = Reading {
            indicator: "value_added".into(),
            point: String::new(),
            value: 30.0,
            unit: "万元".into(),
            ts: None,
            period: Some(Period::Month(2026, 11)),
        };
        let d = Declaration {
            indicator: "dt_maturity".into(),
            value: serde_json::json!(3),
        };
        let mut out = Vec::new();
        encode_reading(&ent(), &r, &mut out);
        encode_reading(&ent(), &amount, &mut out);
        encode_declaration(&ent(), &d, utc("2026-11-23T01:02:03Z"), &mut out);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 4, "three lines, each ended by a newline");
        assert!(lines[3].is_empty());
        let e = ent().as_str().to_owned();
        assert_eq!(
            decode(lines[0]),
            Some(Entry::Reading {
                enterprise: e.clone(),
                reading: r
            })
        );
        assert_eq!(
            decode(lines[1]),
            Some(Entry::Reading {
                enterprise: e.clone(),
                reading: amount
            })
        );
        assert_eq!(
            decode(lines[2]),
            Some(Entry::Declaration {
                enterprise: e,
                recorded: utc("2026-11-23T01:02:03Z"),
                declaration: d
            })
        );
    }

    #[test]
    fn every_cut_of_a_line_is_refused() {
        let r = Reading {
            indicator: "electricity".into(),
            point: "M1".into(),
            value: 12345.5,
            unit: "kWh".into(),
            ts: Some(utc("2026-11-22T16:00:00Z")),
            period: None,
        };
        let mut out = Vec::new();
        encode_reading(&ent(), &r, &mut out);
        let line = &out[..out.len() - 1];
        assert!(decode(line).is_some());
        for cut in 0..line.len() {
            assert_eq!(
                decode(&line[..cut]),
                None,
                "cut at {cut}: {}",
                String::from_utf8_lossy(&line[..cut])
            );
        }
        assert_eq!(decode(br#"["x",1]"#), None, "unknown kinds are skipped");
    }

    #[test]
    fn days_are_china_days() {
        let mut r = Reading {
            indicator: "electricity".into(),
            point: "M1".into(),
            value: 1.0,
            unit: "kWh".into(),
            ts: Some(utc("2026-11-22T16:00:00Z")),
            period: None,
        };
        let now = utc("2026-12-01T00:00:00Z");
        assert_eq!(reading_day(&r, now), NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
        r.ts = Some(utc("2026-11-22T15:59:59.999Z"));
        assert_eq!(reading_day(&r, now), NaiveDate::from_ymd_opt(2026, 11, 22).unwrap());
        r.ts = None;
        assert_eq!(reading_day(&r, now), NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
    }
}

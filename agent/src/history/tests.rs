//! History: record → export round trips, China-time days, retention, the
//! budget, damaged lines and filters.

use super::export::{export, ExportError, Filter, Summary};
use super::*;
use zonesync_proto::Reading;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

const E1: &str = "91419001MA0000001N";
const E2: &str = "91419001MA0000002R";

fn ent(s: &str) -> EnterpriseId {
    EnterpriseId::parse(s).unwrap()
}

fn reading(point: &str, value: f64, ts: &str) -> Item {
    Item::Reading(Reading {
        indicator: "electricity".into(),
        point: point.into(),
        value,
        unit: "kWh".into(),
        ts: Some(utc(ts)),
        period: None,
    })
}

fn open(dir: &Path, config: HistoryConfig) -> History {
    History::open(dir, config).unwrap()
}

fn run_export(dir: &Path, filter: &Filter) -> (String, Summary) {
    let mut out = Vec::new();
    let catalog = zonesync_proto::Catalog::builtin().unwrap();
    let summary = export(dir, filter, Some(&catalog), &mut out).unwrap();
    (String::from_utf8(out).unwrap(), summary)
}

/// The round trip read back with the csv crate, an independent reader.
#[cfg(feature = "csv")]
mod csv_round_trip {
    use super::export::{Kind, BOM, READING_COLUMNS};
    use super::*;
    use zonesync_proto::Declaration;

    /// Rows of an export read back with the csv crate (header and BOM checked and removed).
    fn parse(text: &str) -> Vec<Vec<String>> {
        let body = text.strip_prefix('\u{feff}').expect("starts with a BOM");
        let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(body.as_bytes());
        let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
        assert!(
            header == READING_COLUMNS || header == export::DECLARATION_COLUMNS,
            "{header:?}"
        );
        r.records()
            .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn chinese_commas_and_quotes_survive_record_then_export() {
        let dir = tempfile::tempdir().unwrap();
        let h = open(dir.path(), HistoryConfig::default());
        let point = "一号车间, \"总\"表";
        h.record(
            &[
                (ent(E1), reading(point, 12345.678, "2026-11-23T01:00:00Z")),
                (
                    ent(E1),
                    Item::Reading(Reading {
                        indicator: "value_added".into(),
                        point: String::new(),
                        value: 30.5,
                        unit: "万元".into(),
                        ts: None,
                        period: Some(zonesync_proto::Period::Month(2026, 11)),
                    }),
                ),
                (
                    ent(E2),
                    Item::Declaration(Declaration {
                        indicator: "dt_maturity".into(),
                        value: serde_json::json!("L3, \"优化\""),
                    }),
                ),
            ],
            utc("2026-11-23T02:00:00Z"),
        );
        h.flush();
        let (text, summary) = run_export(dir.path(), &Filter::default());
        assert!(text.as_bytes().starts_with(BOM));
        assert!(text.ends_with("\r\n"));
        assert_eq!(
            text.matches("\r\n").count(),
            3,
            "header and two rows, CRLF each:\n{text}"
        );
        assert_eq!(
            parse(&text),
            vec![
                vec![
                    E1,
                    "electricity",
                    "电力",
                    point,
                    "12345.678",
                    "kWh",
                    "2026-11-23 09:00:00",
                    "2026-11-23T01:00:00Z",
                    ""
                ],
                vec![E1, "value_added", "工业增加值", "", "30.5", "万元", "", "", "2026-11"],
            ]
        );
        assert_eq!(
            summary,
            Summary {
                days: 1,
                rows: 2,
                skipped_lines: 0,
                span: Some((day("2026-11-23"), day("2026-11-23")))
            }
        );
        let decl = Filter {
            kind: Kind::Declarations,
            ..Filter::default()
        };
        let (text, summary) = run_export(dir.path(), &decl);
        assert_eq!(summary.rows, 1);
        let rows = parse(&text);
        assert_eq!(rows[0][..2], [E2.to_owned(), "dt_maturity".to_owned()]);
        assert_eq!(rows[0][3], "L3, \"优化\"");
        assert_eq!(rows[0][4], "2026-11-23 10:00:00");
    }
}

#[test]
fn a_reading_at_china_midnight_belongs_to_the_new_day() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), HistoryConfig::default());
    h.record(
        &[
            (ent(E1), reading("M1", 1.0, "2026-11-22T15:59:59Z")),
            (ent(E1), reading("M1", 2.0, "2026-11-22T16:00:00Z")),
        ],
        utc("2026-11-23T03:00:00Z"),
    );
    h.flush();
    let days: Vec<NaiveDate> = list_days(dir.path()).unwrap().into_iter().map(|d| d.0).collect();
    assert_eq!(days, [day("2026-11-22"), day("2026-11-23")]);
    let only = |d: &str| Filter {
        from: Some(day(d)),
        to: Some(day(d)),
        ..Filter::default()
    };
    let (text, s) = run_export(dir.path(), &only("2026-11-23"));
    assert_eq!(s.rows, 1);
    assert!(
        text.contains(",2,kWh,2026-11-23 00:00:00,2026-11-22T16:00:00Z,"),
        "{text}"
    );
    let (text, s) = run_export(dir.path(), &only("2026-11-22"));
    assert_eq!(s.rows, 1);
    assert!(
        text.contains(",1,kWh,2026-11-22 23:59:59,2026-11-22T15:59:59Z,"),
        "{text}"
    );
}

/// One reading per day for `days` days ending at `last`.
fn fill_days(h: &History, last: NaiveDate, days: i64) {
    for i in 0..days {
        let d = last - chrono::Duration::days(i);
        let ts = format!("{}T04:00:00Z", d.format("%Y-%m-%d"));
        h.record(&[(ent(E1), reading("M1", i as f64, &ts))], utc(&ts));
    }
    h.flush();
}

#[test]
fn retention_deletes_exactly_the_days_older_than_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = HistoryConfig {
        retention_days: 5,
        ..HistoryConfig::default()
    };
    let h = open(dir.path(), config);
    let today = day("2026-11-23");
    fill_days(&h, today, 8);
    let pass = h.enforce(today).unwrap();
    assert_eq!(pass.expired, [day("2026-11-16"), day("2026-11-17"), day("2026-11-18")]);
    assert!(pass.over_budget.is_empty());
    let left: Vec<NaiveDate> = list_days(dir.path()).unwrap().into_iter().map(|d| d.0).collect();
    assert_eq!(
        left.first(),
        Some(&day("2026-11-19")),
        "today and the four days before it stay"
    );
    assert_eq!(left.len(), 5);
    let s = h.stats();
    assert_eq!((s.days_deleted_retention, s.days_deleted_budget, s.days), (3, 0, 5));
    assert_eq!(
        h.enforce(today).unwrap(),
        Pass {
            bytes_left: s.bytes,
            ..Pass::default()
        },
        "a second pass deletes nothing"
    );
}

#[test]
fn over_budget_the_oldest_days_go_first_never_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let today = day("2026-11-23");
    {
        let h = open(dir.path(), HistoryConfig::default());
        fill_days(&h, today, 6);
    }
    let sizes = list_days(dir.path()).unwrap();
    let newest_three: u64 = sizes[3..].iter().map(|d| d.1).sum();
    let h = open(
        dir.path(),
        HistoryConfig {
            disk_budget_bytes: newest_three,
            ..HistoryConfig::default()
        },
    );
    assert!(h.over_budget());
    let pass = h.enforce(today).unwrap();
    assert_eq!(
        pass.over_budget,
        [day("2026-11-18"), day("2026-11-19"), day("2026-11-20")]
    );
    assert_eq!(pass.bytes_left, newest_three);
    assert!(!h.over_budget());
    assert_eq!(h.stats().days_deleted_budget, 3);

    // A budget smaller than one day still keeps the newest day.
    let h = open(
        dir.path(),
        HistoryConfig {
            disk_budget_bytes: 1,
            ..HistoryConfig::default()
        },
    );
    let pass = h.enforce(today).unwrap();
    assert_eq!(pass.over_budget, [day("2026-11-21"), day("2026-11-22")]);
    let left: Vec<NaiveDate> = list_days(dir.path()).unwrap().into_iter().map(|d| d.0).collect();
    assert_eq!(left, [today]);
}

#[test]
fn a_crash_cut_line_is_skipped_counted_and_does_not_swallow_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let ts = "2026-11-23T04:00:00Z";
    {
        let h = open(dir.path(), HistoryConfig::default());
        h.record(
            &[(ent(E1), reading("M1", 1.0, ts)), (ent(E1), reading("M2", 2.0, ts))],
            utc(ts),
        );
    }
    // Cut the last line in the middle, as a power cut during a write would.
    let file = day_file(dir.path(), day("2026-11-23"));
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    let (_, s) = run_export(dir.path(), &Filter::default());
    assert_eq!(
        (s.rows, s.skipped_lines),
        (1, 1),
        "the cut last line is skipped and counted"
    );

    // The next run appends after the damage: only the damaged line is lost.
    let h = open(dir.path(), HistoryConfig::default());
    h.record(&[(ent(E1), reading("M3", 3.0, ts))], utc(ts));
    h.flush();
    let (text, s) = run_export(dir.path(), &Filter::default());
    assert_eq!((s.rows, s.skipped_lines), (2, 1));
    assert!(text.contains(",M3,3,kWh,"), "{text}");
}

#[test]
fn filters_by_enterprise_indicator_and_days() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), HistoryConfig::default());
    let gas = Item::Reading(Reading {
        indicator: "natural_gas".into(),
        point: "G1".into(),
        value: 5.0,
        unit: "m3".into(),
        ts: Some(utc("2026-11-21T04:00:00Z")),
        period: None,
    });
    h.record(
        &[
            (ent(E1), reading("M1", 1.0, "2026-11-21T04:00:00Z")),
            (ent(E2), reading("M1", 2.0, "2026-11-21T04:00:00Z")),
            (ent(E1), gas),
            (ent(E1), reading("M1", 3.0, "2026-11-22T04:00:00Z")),
            (ent(E1), reading("M1", 4.0, "2026-11-23T04:00:00Z")),
        ],
        utc("2026-11-23T05:00:00Z"),
    );
    h.flush();
    let rows = |f: Filter| run_export(dir.path(), &f).1.rows;
    assert_eq!(rows(Filter::default()), 5);
    let e1 = Some(E1.to_ascii_lowercase());
    assert_eq!(
        rows(Filter {
            enterprise: e1.clone(),
            ..Filter::default()
        }),
        4,
        "credit codes match case-insensitively"
    );
    assert_eq!(
        rows(Filter {
            indicator: Some("natural_gas".into()),
            ..Filter::default()
        }),
        1
    );
    assert_eq!(
        rows(Filter {
            enterprise: e1,
            indicator: Some("electricity".into()),
            from: Some(day("2026-11-22")),
            ..Filter::default()
        }),
        2
    );
    assert_eq!(
        rows(Filter {
            to: Some(day("2026-11-21")),
            ..Filter::default()
        }),
        3
    );
    let mut out = Vec::new();
    let none = Filter {
        from: Some(day("2027-01-01")),
        ..Filter::default()
    };
    let err = export(dir.path(), &none, None, &mut out).unwrap_err();
    assert!(matches!(err, ExportError::NoDays { .. }), "{err}");
    assert!(err.to_string().contains("2026-11-21 to 2026-11-23"), "{err}");
    let backwards = Filter {
        from: Some(day("2026-11-23")),
        to: Some(day("2026-11-21")),
        ..Filter::default()
    };
    assert!(matches!(
        export(dir.path(), &backwards, None, &mut out),
        Err(ExportError::BadRange { .. })
    ));
    assert!(matches!(
        export(&dir.path().join("nowhere"), &Filter::default(), None, &mut out),
        Err(ExportError::NoHistory { .. })
    ));
}

#[test]
fn backfill_over_many_days_keeps_few_files_open_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), HistoryConfig::default());
    // Alternate between days so files are closed and reopened.
    for round in 0..3 {
        for d in 0..(MAX_OPEN_DAYS as i64 + 3) {
            let ts = format!("2026-11-{:02}T04:00:00Z", 10 + d);
            h.record(&[(ent(E1), reading("M1", round as f64, &ts))], utc(&ts));
        }
    }
    assert!(h.lock().len() <= MAX_OPEN_DAYS);
    h.flush();
    let (_, s) = run_export(dir.path(), &Filter::default());
    assert_eq!(
        (s.rows, s.skipped_lines, s.days),
        (3 * (MAX_OPEN_DAYS as u64 + 3), 0, MAX_OPEN_DAYS as u64 + 3)
    );
    assert_eq!(h.stats().lines_written, s.rows);
}

#[test]
fn zero_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = HistoryConfig {
        retention_days: 0,
        ..HistoryConfig::default()
    };
    assert!(matches!(
        History::open(dir.path(), config),
        Err(HistoryError::NoRetention)
    ));
}

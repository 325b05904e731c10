//! Validation: every problem named, never a panic.

use super::*;
use serde_json::json;

const E: &str = "91350100M000100Y43";

fn now() -> DateTime<Utc> {
    parse_ts("2026-11-23T08:00:00Z").unwrap()
}

fn validator() -> Validator {
    Validator::new(Catalog::builtin().unwrap(), Limits::default())
}

fn batch(readings: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "v": 1, "agent": "gw-1", "boot": 1, "seq": 7, "sent_at": "2026-11-23T07:59:00Z",
        "zone": "jiyuan-hitech", "enterprise": E, "readings": readings
    }))
    .unwrap()
}

fn topic() -> Topic {
    Topic::parse(&format!("zonesync/v1/jiyuan-hitech/gw-1/data/{E}")).unwrap()
}

#[test]
fn good_readings_are_converted_to_canonical_units() {
    let p = batch(json!([
        {"indicator": "electricity", "point": "M1", "value": 1.5, "unit": "MWh", "ts": "2026-11-23T07:45:00Z"},
        {"indicator": "value_added", "value": 2.0, "unit": "亿元", "period": "2026-10"}
    ]));
    let a = validator().batch(Some(&topic()), &p, now()).unwrap();
    assert!(a.refused.is_empty(), "{:?}", a.refused);
    assert_eq!(a.readings[0].value, 1500.0);
    assert_eq!(a.readings[1].value, 20000.0);
    assert_eq!(a.readings[1].at, ReadingTime::Period(Period::Month(2026, 10)));
    assert_eq!(a.seq, 7);
}

#[test]
fn each_bad_reading_gets_its_own_reason_and_good_ones_stay() {
    let p = batch(json!([
        {"indicator": "electricity", "value": 1.0, "unit": "kW", "ts": "2026-11-23T07:45:00Z"},
        {"indicator": "electricity", "value": -5.0, "unit": "kWh", "ts": "2026-11-23T07:45:00Z"},
        {"indicator": "electricity", "value": "12", "unit": "kWh", "ts": "2026-11-23T07:45:00Z"},
        {"indicator": "electricity", "value": 1.0, "unit": "kWh", "ts": "2100-01-01T00:00:00Z"},
        {"indicator": "electricity", "value": 1.0, "unit": "kWh", "ts": "1970-01-01T00:00:00Z"},
        {"indicator": "nonsense", "value": 1.0, "unit": "kWh", "ts": "2026-11-23T07:45:00Z"},
        {"indicator": "value_added", "value": 1.0, "unit": "万元", "ts": "2026-11-23T07:45:00Z"},
        {"indicator": "electricity", "value": 1.0, "unit": "kWh"},
        {"indicator": "electricity", "value": 1e300, "unit": "MWh", "ts": "2026-11-23T07:45:00Z"},
        {"indicator": "electricity", "value": 3.0, "unit": "kWh", "ts": "2026-11-23T07:45:00Z"}
    ]));
    let a = validator().batch(Some(&topic()), &p, now()).unwrap();
    let labels: Vec<_> = a.refused.iter().map(Problem::label).collect();
    assert_eq!(
        labels,
        [
            "unknown_unit",
            "negative",
            "bad_field",
            "clock",
            "clock",
            "unknown_indicator",
            "bad_time",
            "bad_time",
            "out_of_range"
        ]
    );
    assert_eq!(a.readings.len(), 1);
    assert_eq!(a.readings[0].value, 3.0);
    assert!(a.refused[0]
        .to_string()
        .starts_with("reading 0: unit \"kW\" is not accepted for electricity"));
}

#[test]
fn envelope_problems_are_all_reported() {
    let p = serde_json::to_vec(
        &json!({"v": 2, "agent": "a/b", "seq": -1, "zone": "Z", "enterprise": "91350100M000100Y44"}),
    )
    .unwrap();
    let errs = validator().batch(None, &p, now()).unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 7, "{text:?}");
    assert!(text.iter().any(|t| t.contains("wire version 2")));
    assert!(errs.iter().any(|p| p.label() == "version"));
    assert!(text.iter().any(|t| t.contains("check character")));
    assert!(text.iter().any(|t| t.contains("`sent_at` is missing")));
}

#[test]
fn topic_mismatch_oversize_and_garbage_are_refused() {
    let t = Topic::parse("zonesync/v1/jiyuan-hitech/gw-2/data/91350100M000100Y43").unwrap();
    let errs = validator().batch(Some(&t), &batch(json!([])), now()).unwrap_err();
    assert_eq!(errs[0].label(), "topic_mismatch");
    let mut v = validator();
    v.limits.max_payload_bytes = 10;
    assert_eq!(
        v.batch(None, &batch(json!([])), now()).unwrap_err()[0].label(),
        "too_large"
    );
    let v = validator();
    assert_eq!(v.batch(None, b"{\"v\":1,", now()).unwrap_err()[0].label(), "malformed");
    assert_eq!(v.batch(None, &[0xff, 0xfe], now()).unwrap_err()[0].label(), "not_utf8");
    assert_eq!(v.batch(None, b"[1,2]", now()).unwrap_err()[0].label(), "malformed");
    let deep = "[".repeat(100_000);
    assert_eq!(
        v.batch(None, deep.as_bytes(), now()).unwrap_err()[0].label(),
        "malformed"
    );
    assert_eq!(
        v.batch(None, b"{\"v\":NaN}", now()).unwrap_err()[0].label(),
        "malformed"
    );
}

#[test]
fn clock_bounds_are_inclusive_at_the_edges() {
    let ahead = Duration::minutes(5);
    let floor = parse_ts("2015-06-01T00:00:00+08:00").unwrap();
    assert_eq!(check_ts(now() + ahead, now(), ahead, floor), Ok(()));
    assert_eq!(
        check_ts(now() + ahead + Duration::seconds(1), now(), ahead, floor),
        Err(Reason::Future {
            ts: now() + Duration::seconds(301),
            ahead_secs: 301,
            limit_secs: 300
        })
    );
    assert_eq!(check_ts(floor, now(), ahead, floor), Ok(()));
    assert!(matches!(
        check_ts(floor - Duration::seconds(1), now(), ahead, floor),
        Err(Reason::TooOld { .. })
    ));
    // 2015-05 (China time) ends exactly at the floor: refused; 2015-06 starts there: kept.
    assert!(check_period(Period::Month(2015, 5), now(), ahead, floor).is_err());
    assert_eq!(check_period(Period::Month(2015, 6), now(), ahead, floor), Ok(()));
    assert_eq!(
        check_period(Period::Month(2026, 12), now(), ahead, floor),
        Err(Reason::PeriodInFuture(Period::Month(2026, 12)))
    );
}

#[test]
fn declarations_are_typed_by_the_catalog() {
    let v = validator();
    let ok = v.declaration(&json!({"indicator": "dt_maturity", "value": 3})).unwrap();
    assert_eq!(ok.1, DeclaredValue::Integer(3));
    assert!(v.declaration(&json!({"indicator": "dt_maturity", "value": 9})).is_err());
    let s = v
        .declaration(&json!({"indicator": "scenarios", "value": [{"code": "能源智能管控", "level": "advanced"}]}))
        .unwrap();
    assert!(matches!(s.1, DeclaredValue::Scenarios(ref l) if l[0].level == ScenarioLevel::Advanced));
    assert!(v
        .declaration(&json!({"indicator": "scenarios", "value": [{"code": "x", "level": "expert"}]}))
        .is_err());
    assert!(matches!(
        v.declaration(&json!({"indicator": "electricity", "value": 1})),
        Err(Reason::ReadingAsDeclaration(_))
    ));
}

#[test]
fn an_industry_code_is_kept_in_one_form_and_an_impossible_one_refused() {
    let v = validator();
    for raw in ["3110", "C3110"] {
        let d = v
            .declaration(&json!({"indicator": "industry_code", "value": raw}))
            .unwrap();
        assert_eq!(d.1, DeclaredValue::Text("C3110".into()), "{raw}");
    }
    let err = v
        .declaration(&json!({"indicator": "industry_code", "value": "C0610"}))
        .unwrap_err();
    assert!(err.to_string().contains("major group 06 is in division B"), "{err}");
    assert!(v
        .declaration(&json!({"indicator": "industry_code", "value": "9910"}))
        .is_err());
    assert!(v
        .declaration(&json!({"indicator": "industry_code", "value": 3110}))
        .is_err());
}

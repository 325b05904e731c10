//! Fixtures shared by the aggregator's unit tests: one place to build a zone,
//! its enterprises and readings.

use crate::registry::{Enterprise, Zone};
use chrono::{DateTime, Utc};
use zonesync_proto::{CanonicalReading, EnterpriseId, Period, ReadingTime, ZoneId};

/// A valid credit code numbered `n`.
pub fn id(n: u32) -> EnterpriseId {
    EnterpriseId::with_check_char(&format!("91419001MA{n:07}")).expect("valid demo code")
}

/// An industrial enterprise numbered `n`.
pub fn enterprise(n: u32, above_scale: bool, industry: &str) -> Enterprise {
    Enterprise {
        id: id(n),
        name: format!("E{n}"),
        above_scale,
        industrial: true,
        industry: (!industry.is_empty()).then(|| industry.to_owned()),
        agents: vec![],
    }
}

/// Zone `z` of city 济源 with these enterprises and leading industries.
pub fn zone(enterprise: Vec<Enterprise>, leading: &[&str]) -> Zone {
    Zone {
        id: ZoneId::parse("z").expect("valid zone id"),
        name_zh: "z".into(),
        name_en: String::new(),
        city: "济源".into(),
        province: "河南".into(),
        goal_sets: vec![],
        leading_industries: leading.iter().map(|s| (*s).to_owned()).collect(),
        enterprise,
    }
}

/// An RFC 3339 instant.
pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("RFC 3339").with_timezone(&Utc)
}

/// An amount for a period.
pub fn amount(indicator: &str, period: &str, value: f64) -> CanonicalReading {
    CanonicalReading {
        indicator: indicator.into(),
        point: Default::default(),
        value,
        at: ReadingTime::Period(Period::parse(period).expect("period")),
    }
}

/// An electricity register reading on point M1.
pub fn register(value: f64, ts: &str) -> CanonicalReading {
    CanonicalReading {
        indicator: "electricity".into(),
        point: "M1".into(),
        value,
        at: ReadingTime::Ts(utc(ts)),
    }
}

/// A goal row (JY27-18, intermediate scenario coverage, 2 of 3), to change as a test needs.
pub fn goal_row() -> crate::goals::GoalRow {
    crate::goals::GoalRow {
        id: "JY27-18".into(),
        set: "jiyuan-2027".into(),
        name_zh: "中级及以上智能制造场景覆盖率".into(),
        name_en: "Intermediate-or-above scenario coverage".into(),
        source: "003_24b4d967be3f5958.txt".into(),
        clause: "中级场景达到70%以上".into(),
        kind: crate::goals::GoalKind::Coverage,
        scope: crate::goals::Scope::Zone,
        period: "2026-01..2026-10".into(),
        value: Some(2.0 / 3.0),
        numerator: 2.0,
        denominator: 3.0,
        unknown: 1,
        numerator_from_proxy: 0,
        reported: 2,
        in_scope: 3,
        partial_months: 0,
        completeness: Some(2.0 / 3.0),
        target: Some(0.7),
        comparator: ">=".into(),
        status: crate::goals::Status::NotMet,
        definition: "≥ 1 scenario at intermediate, \"or\" advanced".into(),
        definition_zh: "至少1个中级或高级智能制造场景".into(),
        deadline: Some("2027".into()),
        unit: "share".into(),
        note: None,
    }
}

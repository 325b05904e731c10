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
        leading_industry: None,
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
        enterprises_file: None,
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

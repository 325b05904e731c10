//! What one sealed batch becomes for a platform, and whether an answer is
//! the platform's success: pure, so every rule is tested without a network.
//!
//! A reading becomes one record: the enterprise's credit code, the mapped
//! `dataCode`, the value in the mapped unit, `statType` 0 for a reading at an
//! instant (the meter's value when read, as the connection systems upload
//! real-time data), 1/2/3 for a day/month/year figure, and `statDate` in
//! China time. What cannot be uploaded is counted by reason, never dropped
//! silently: declarations (the platform has no field for them), series no
//! mapping names, quarterly figures (no `statType` for a quarter).

use super::config::{DataCodeMap, FieldNames, PlatformConfig};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::HashMap;
use zonesync_proto::{Batch, Catalog, Period, Reading, CST};

/// The upload timestamp format, `yyyy-MM-dd HH:mm:ss`.
const STAMP: &str = "%Y-%m-%d %H:%M:%S";

/// How many characters of a wrong answer are kept for status and logs.
const EXCERPT: usize = 160;

/// What a batch's items that were not uploaded were, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotUploaded {
    /// Readings of a series no mapping names.
    pub not_mapped: u64,
    /// Declarations (no field for them on the platform).
    pub declarations: u64,
    /// Quarterly figures (no `statType` for a quarter).
    pub quarterly: u64,
}

/// One batch's upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// The records, in batch order.
    pub records: Vec<Value>,
    /// What was left out.
    pub left_out: NotUploaded,
}

/// A mapping with its unit factors resolved.
#[derive(Debug, Clone)]
struct Target {
    data_code: String,
    /// Catalog factor of the wanted unit (to the canonical unit); none: as read.
    to_unit: Option<f64>,
    device_id: Option<String>,
    input_type: u8,
    scope: u8,
}

/// Turns batches into upload records for one platform.
#[derive(Debug, Clone)]
pub struct Mapper {
    /// By (indicator, point); point `None` is the indicator's default.
    targets: HashMap<(String, Option<String>), Target>,
    /// Accepted units' factors by indicator, for conversions.
    factors: HashMap<String, HashMap<String, f64>>,
    fields: FieldNames,
    records_key: Option<String>,
}

/// Why a reading's value could not be put in the wanted unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{indicator} at {point:?}: unit {unit:?} cannot be converted to the platform's")]
pub struct Unconvertible {
    indicator: String,
    point: String,
    unit: String,
}

impl Mapper {
    /// From a validated configuration (see [`PlatformConfig::validate`]).
    pub fn new(cfg: &PlatformConfig, catalog: &Catalog) -> Self {
        let mut factors: HashMap<String, HashMap<String, f64>> = HashMap::new();
        let targets = cfg
            .map
            .iter()
            .map(|m: &DataCodeMap| {
                let units = catalog.get(&m.indicator).map(|i| i.units.clone()).unwrap_or_default();
                let to_unit = m.unit.as_ref().and_then(|u| units.get(u).copied());
                factors.insert(m.indicator.clone(), units.into_iter().collect());
                (
                    (m.indicator.clone(), m.point.clone()),
                    Target {
                        data_code: m.data_code.clone(),
                        to_unit,
                        device_id: m.device_id.clone(),
                        input_type: m.input_type.unwrap_or(cfg.input_type),
                        scope: m.scope.unwrap_or(cfg.scope),
                    },
                )
            })
            .collect();
        Self {
            targets,
            factors,
            fields: cfg.fields.clone(),
            records_key: cfg.records_key.clone(),
        }
    }

    fn target(&self, r: &Reading) -> Option<&Target> {
        self.targets
            .get(&(r.indicator.clone(), Some(r.point.clone())))
            .or_else(|| self.targets.get(&(r.indicator.clone(), None)))
    }

    /// The records for `batch`, uploaded at `now`. A reading whose unit the
    /// catalog cannot convert is an error: the outbox only holds validated
    /// readings, so this means the catalog changed under it, and the batch
    /// must wait rather than reach the platform wrong or not at all.
    pub fn upload(&self, batch: &Batch, now: DateTime<Utc>) -> Result<Upload, Unconvertible> {
        let mut left_out = NotUploaded {
            declarations: batch.declarations.len() as u64,
            ..NotUploaded::default()
        };
        let uploaded = now.with_timezone(&CST).format(STAMP).to_string();
        let mut records = Vec::with_capacity(batch.readings.len());
        for r in &batch.readings {
            let Some(t) = self.target(r) else {
                left_out.not_mapped += 1;
                continue;
            };
            let (stat_type, at) = match (r.ts, r.period) {
                (Some(ts), _) => (0u8, ts),
                (None, Some(p @ Period::Month(..))) => (2, p.start()),
                (None, Some(p @ Period::Year(_))) => (3, p.start()),
                (None, Some(Period::Quarter(..))) | (None, None) => {
                    left_out.quarterly += 1;
                    continue;
                }
            };
            let value = match t.to_unit {
                None => r.value,
                Some(to) => {
                    let from = self
                        .factors
                        .get(&r.indicator)
                        .and_then(|u| u.get(&r.unit))
                        .copied()
                        .ok_or_else(|| Unconvertible {
                            indicator: r.indicator.clone(),
                            point: r.point.clone(),
                            unit: r.unit.clone(),
                        })?;
                    r.value * from / to
                }
            };
            let device = t.device_id.clone().unwrap_or_else(|| r.point.clone());
            let f = &self.fields;
            let mut rec = Map::new();
            let mut put = |name: &str, v: Value| {
                if !name.is_empty() {
                    rec.insert(name.to_owned(), v);
                }
            };
            put(&f.enterprise_code, Value::from(batch.enterprise.to_string()));
            put(&f.device_id, Value::from(device));
            put(&f.data_code, Value::from(t.data_code.clone()));
            put(&f.data_value, number(value));
            put(&f.input_type, Value::from(t.input_type));
            put(&f.stat_type, Value::from(stat_type));
            put(
                &f.stat_date,
                Value::from(at.with_timezone(&CST).format(STAMP).to_string()),
            );
            put(&f.upload_date, Value::from(uploaded.clone()));
            put(&f.scope, Value::from(t.scope));
            put(&f.valid, Value::from(1));
            records.push(Value::Object(rec));
        }
        Ok(Upload { records, left_out })
    }

    /// The request body for `records`.
    pub fn body(&self, records: Vec<Value>) -> Vec<u8> {
        let doc = match &self.records_key {
            None => Value::Array(records),
            Some(k) => {
                let mut m = Map::new();
                m.insert(k.clone(), Value::Array(records));
                Value::Object(m)
            }
        };
        serde_json::to_vec(&doc).unwrap_or_default()
    }
}

/// A finite value as a JSON number (the outbox holds validated, finite values).
fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Why an answer was not the platform's success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a 2xx.
    #[error("HTTP {status}: {excerpt}")]
    Status { status: u16, excerpt: String },
    /// A 2xx without the success text.
    #[error("answered {excerpt:?}, not the success text")]
    Wrong { excerpt: String },
}

impl Refusal {
    /// The counter this refusal goes to.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Status { .. } => "http_status",
            Refusal::Wrong { .. } => "wrong_answer",
        }
    }
}

/// Whether `body`, answered with `status`, is the platform's success.
pub fn judge(status: u16, body: &[u8], success: &str) -> Result<(), Refusal> {
    let text = String::from_utf8_lossy(body);
    let excerpt = || {
        text.trim()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(EXCERPT)
            .collect::<String>()
    };
    if !(200..300).contains(&status) {
        return Err(Refusal::Status {
            status,
            excerpt: excerpt(),
        });
    }
    if text.contains(success) {
        Ok(())
    } else {
        Err(Refusal::Wrong { excerpt: excerpt() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use zonesync_proto::{AgentId, Declaration, EnterpriseId, ZoneId};

    const CODE: &str = "91350100M000100Y43";

    fn cfg(extra: &str) -> PlatformConfig {
        let text = format!(
            "name = \"henan\"\nurl = \"https://platform.example/upload\"\n{extra}\n\
             [[map]]\nindicator = \"electricity\"\ndata_code = \"00-00-0000023400-80\"\nunit = \"10^4 kWh\"\n\
             [[map]]\nindicator = \"electricity\"\npoint = \"M2\"\ndata_code = \"01-02-0000023400-80\"\ndevice_id = \"DEV-2\"\ninput_type = 3\n\
             [[map]]\nindicator = \"value_added\"\ndata_code = \"00-00-0000000000-VA\"\n"
        );
        toml::from_str(&text).unwrap()
    }

    fn reading(
        indicator: &str,
        point: &str,
        value: f64,
        unit: &str,
        ts: Option<&str>,
        period: Option<&str>,
    ) -> Reading {
        Reading {
            indicator: indicator.into(),
            point: point.into(),
            value,
            unit: unit.into(),
            ts: ts.map(|t| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)),
            period: period.map(|p| Period::parse(p).unwrap()),
        }
    }

    fn batch(readings: Vec<Reading>, declarations: usize) -> Batch {
        Batch {
            v: zonesync_proto::WIRE_VERSION,
            agent: AgentId::parse("gw-1").unwrap(),
            boot: 1,
            outbox: None,
            seq: 7,
            sent_at: Utc::now(),
            zone: ZoneId::parse("jiyuan-hitech").unwrap(),
            enterprise: EnterpriseId::parse(CODE).unwrap(),
            backfill: false,
            readings,
            declarations: (0..declarations)
                .map(|_| Declaration {
                    indicator: "smart_retrofit".into(),
                    value: Value::Bool(true),
                })
                .collect(),
        }
    }

    #[test]
    fn a_reading_becomes_the_platforms_record_in_china_time_and_the_wanted_unit() {
        let c = cfg("");
        c.validate(&Catalog::builtin().unwrap()).unwrap();
        let m = Mapper::new(&c, &Catalog::builtin().unwrap());
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 16, 30, 5).unwrap();
        let b = batch(
            vec![
                reading("electricity", "M1", 12_345.0, "kWh", Some("2026-12-06T15:45:00Z"), None),
                reading("electricity", "M2", 2.5, "MWh", Some("2026-12-06T15:45:00Z"), None),
                reading("value_added", "", 88.0, "10k_yuan", None, Some("2026-11")),
                reading("value_added", "", 900.0, "10k_yuan", None, Some("2026")),
            ],
            2,
        );
        let up = m.upload(&b, now).unwrap();
        assert_eq!(
            up.left_out,
            NotUploaded {
                declarations: 2,
                ..Default::default()
            }
        );
        let r = &up.records;
        assert_eq!(r.len(), 4);
        assert_eq!(r[0]["enterpriseCode"], CODE);
        assert_eq!(r[0]["deviceId"], "M1");
        assert_eq!(r[0]["dataCode"], "00-00-0000023400-80");
        assert!(
            (r[0]["dataValue"].as_f64().unwrap() - 1.2345).abs() < 1e-12,
            "kWh → 10^4 kWh"
        );
        assert_eq!(r[0]["statType"], 0);
        // 15:45Z is 23:45 in China; uploaded 16:30:05Z is the next day 00:30:05.
        assert_eq!(r[0]["statDate"], "2026-12-06 23:45:00");
        assert_eq!(r[0]["uploadDate"], "2026-12-07 00:30:05");
        assert_eq!(
            (
                r[0]["inputType"].as_u64(),
                r[0]["scope"].as_u64(),
                r[0]["valid"].as_u64()
            ),
            (Some(4), Some(1), Some(1))
        );
        // The point's own mapping wins over the indicator's; no unit: as read.
        assert_eq!(
            (r[1]["dataCode"].as_str(), r[1]["deviceId"].as_str()),
            (Some("01-02-0000023400-80"), Some("DEV-2"))
        );
        assert_eq!(
            (r[1]["dataValue"].as_f64(), r[1]["inputType"].as_u64()),
            (Some(2.5), Some(3))
        );
        // A month's figure applies from the 1st 00:00 China time, a year's from 1 January.
        assert_eq!(
            (r[2]["statType"].as_u64(), r[2]["statDate"].as_str()),
            (Some(2), Some("2026-11-01 00:00:00"))
        );
        assert_eq!(
            (r[3]["statType"].as_u64(), r[3]["statDate"].as_str()),
            (Some(3), Some("2026-01-01 00:00:00"))
        );
    }

    #[test]
    fn what_is_not_uploaded_is_counted_by_reason() {
        let c = cfg("");
        let m = Mapper::new(&c, &Catalog::builtin().unwrap());
        let b = batch(
            vec![
                reading("natural_gas", "G1", 5.0, "m3", Some("2026-12-06T15:45:00Z"), None),
                reading("value_added", "", 250.0, "10k_yuan", None, Some("2026-Q3")),
                reading("electricity", "M1", 1.0, "kWh", Some("2026-12-06T15:45:00Z"), None),
            ],
            1,
        );
        let up = m.upload(&b, Utc::now()).unwrap();
        assert_eq!(up.records.len(), 1);
        assert_eq!(
            up.left_out,
            NotUploaded {
                not_mapped: 1,
                declarations: 1,
                quarterly: 1
            }
        );
    }

    #[test]
    fn field_names_and_the_envelope_follow_the_province() {
        let c = cfg("records_key = \"data\"\n[fields]\nenterprise_code = \"qyCode\"\nvalid = \"\"\n");
        let m = Mapper::new(&c, &Catalog::builtin().unwrap());
        let b = batch(
            vec![reading(
                "electricity",
                "M1",
                1.0,
                "kWh",
                Some("2026-12-06T15:45:00Z"),
                None,
            )],
            0,
        );
        let up = m.upload(&b, Utc::now()).unwrap();
        let body: Value = serde_json::from_slice(&m.body(up.records)).unwrap();
        let rec = &body["data"][0];
        assert_eq!(rec["qyCode"], CODE);
        assert!(
            rec.get("enterpriseCode").is_none() && rec.get("valid").is_none(),
            "{rec}"
        );
        let bare = Mapper::new(&cfg(""), &Catalog::builtin().unwrap());
        assert_eq!(
            serde_json::from_slice::<Value>(&bare.body(vec![])).unwrap(),
            Value::Array(vec![])
        );
    }

    #[test]
    fn only_a_2xx_with_the_success_text_is_success() {
        let ok = "RECEIVE SUCCESS";
        assert_eq!(judge(200, b"RECEIVE SUCCESS", ok), Ok(()));
        assert_eq!(judge(200, b"{\"code\":0,\"msg\":\"RECEIVE SUCCESS\"}", ok), Ok(()));
        assert_eq!(
            judge(200, b"RECEIVE FAIL: unknown dataCode", ok).unwrap_err().kind(),
            "wrong_answer"
        );
        assert_eq!(
            judge(200, b"<html>gateway</html>", ok).unwrap_err().kind(),
            "wrong_answer"
        );
        assert_eq!(judge(200, b"", ok).unwrap_err().kind(), "wrong_answer");
        // The success text in an error page is still an error.
        assert_eq!(
            judge(503, b"RECEIVE SUCCESS\n(maintenance)", ok),
            Err(Refusal::Status {
                status: 503,
                excerpt: "RECEIVE SUCCESS (maintenance)".into()
            })
        );
        let long = "x".repeat(10_000);
        let Err(Refusal::Wrong { excerpt }) = judge(200, long.as_bytes(), ok) else {
            panic!("long body")
        };
        assert_eq!(excerpt.len(), EXCERPT);
    }

    #[test]
    fn configurations_that_could_only_go_wrong_are_refused() {
        let cat = Catalog::builtin().unwrap();
        let bad = |extra: &str, map: &str| {
            let text = format!("name = \"p\"\nurl = \"https://p.example/u\"\n{extra}\n{map}");
            let c: PlatformConfig = toml::from_str(&text).unwrap();
            c.validate(&cat).unwrap_err().to_string()
        };
        let one = "[[map]]\nindicator = \"electricity\"\ndata_code = \"E\"\n";
        assert!(bad("", "").contains("nothing would be uploaded"));
        assert!(bad("", "[[map]]\nindicator = \"nope\"\ndata_code = \"E\"\n").contains("not in the catalog"));
        assert!(bad(
            "",
            "[[map]]\nindicator = \"electricity\"\ndata_code = \"E\"\nunit = \"t\"\n"
        )
        .contains("not one of"));
        assert!(bad("", &format!("{one}{one}")).contains("mapped twice"));
        assert!(bad("success = \" \"", one).contains("success must not be empty"));
        assert!(bad("[fields]\ndevice_id = \"dataCode\"", one).contains("same name"));
        assert!(bad("[fields]\ndata_value = \"\"", one).contains("cannot be left out"));
        let plain: PlatformConfig =
            toml::from_str(&format!("name = \"p\"\nurl = \"http://p.example/u\"\n{one}")).unwrap();
        assert!(plain.validate(&cat).unwrap_err().to_string().contains("https only"));
    }
}

//! Validation of batches: every problem in a payload, each with a specific
//! reason, and never a panic.
//!
//! Problems in the envelope (who sent it, for whom, which sequence number)
//! refuse the whole batch, because nothing in it can be attributed. Problems in
//! a single reading or declaration refuse only that item, so one mis-unit
//! meter never costs the enterprise its other readings.

use crate::catalog::{Catalog, Indicator, IndicatorKind, ValueType};
use crate::ids::{AgentId, EnterpriseId, OutboxId, ZoneId};
use crate::period::Period;
use crate::topic::{Topic, TopicKind};
use crate::wire::{ReadingTime, WIRE_VERSION};
use chrono::{DateTime, Duration, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(crate) use crate::clock::parse_ts;
pub use crate::clock::{check_period, check_ts};
pub use crate::problem::{Location, Problem, Reason};

/// Bounds a payload must respect; all configurable by the aggregator.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest payload accepted, bytes.
    pub max_payload_bytes: usize,
    /// Most readings plus declarations in one batch.
    pub max_items: usize,
    /// How far ahead of the receiver's clock a timestamp may be.
    pub max_future_skew: Duration,
    /// Earliest acceptable timestamp.
    pub earliest: DateTime<Utc>,
    /// Largest absolute value accepted in canonical units.
    pub max_abs_value: f64,
    /// Enterprise ids with this prefix skip the check character (demo data).
    pub test_prefix: Option<String>,
    /// Most distinct series (indicator and point) one enterprise may have:
    /// the receiver holds every series in memory, and point names are
    /// chosen by whoever holds an agent's credentials. Checked by the
    /// aggregator's ingest, not by [`Validator::batch`].
    pub max_series_per_enterprise: usize,
    /// Most distinct series one agent may bring in, over all its enterprises.
    pub max_series_per_agent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
            max_items: 10_000,
            max_future_skew: Duration::minutes(10),
            earliest: DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or_default(), // 2000-01-01
            max_abs_value: 1e15,
            test_prefix: None,
            max_series_per_enterprise: 5_000,
            max_series_per_agent: 20_000,
        }
    }
}

/// Level of an intelligent-manufacturing scenario (初级 / 中级 / 高级).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioLevel {
    /// 初级
    Basic,
    /// 中级
    Intermediate,
    /// 高级
    Advanced,
}

/// One declared intelligent-manufacturing scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    /// Scenario code or name from the 2025 scenario guide.
    pub code: String,
    /// Level reached.
    pub level: ScenarioLevel,
}

/// A validated declaration value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeclaredValue {
    /// A flag.
    Bool(bool),
    /// A level.
    Integer(i64),
    /// A code or name.
    Text(String),
    /// Scenarios with levels.
    Scenarios(Vec<Scenario>),
}

/// A validated reading in the indicator's canonical unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalReading {
    /// Indicator code (inline: catalog codes are short).
    pub indicator: CompactString,
    /// Measuring point (inline up to 24 bytes, which meter ids nearly always are).
    pub point: CompactString,
    /// Value in the catalog's canonical unit.
    pub value: f64,
    /// When it applies.
    pub at: ReadingTime,
}

/// The part of a batch that passed, with the items that did not.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Sender.
    pub agent: AgentId,
    /// Sender's boot counter.
    pub boot: u64,
    /// The outbox that numbered the batch (`None`: an agent older than outbox ids).
    pub outbox: Option<OutboxId>,
    /// Sender's sequence number within its outbox.
    pub seq: u64,
    /// [`crate::wire::digest`] of the payload: with (agent, outbox, seq), what names the batch.
    pub digest: String,
    /// Sender's clock at sending.
    pub sent_at: DateTime<Utc>,
    /// Zone.
    pub zone: ZoneId,
    /// Enterprise.
    pub enterprise: EnterpriseId,
    /// Historical data.
    pub backfill: bool,
    /// Readings that passed.
    pub readings: Vec<CanonicalReading>,
    /// Declarations that passed.
    pub declarations: Vec<(String, DeclaredValue)>,
    /// Items refused, each with its reason.
    pub refused: Vec<Problem>,
}

/// Validates payloads against a catalog and limits.
#[derive(Debug, Clone)]
pub struct Validator {
    /// The catalog in force.
    pub catalog: Catalog,
    /// The limits in force.
    pub limits: Limits,
}

impl Validator {
    /// Makes a validator.
    pub fn new(catalog: Catalog, limits: Limits) -> Self {
        Self { catalog, limits }
    }

    /// Validates a batch payload received on `topic` at `now`.
    ///
    /// `Err` holds every envelope problem: nothing in the batch may be stored.
    /// `Ok` may still carry refused items in [`Accepted::refused`].
    ///
    /// A well-formed batch is read straight into typed fields borrowing the
    /// payload ([`crate::fast`]); anything that is not — or that has any
    /// problem at all — is read again through the generic JSON tree, which
    /// names every problem. Both give the same `Accepted` for a valid batch.
    pub fn batch(&self, topic: Option<&Topic>, payload: &[u8], now: DateTime<Utc>) -> Result<Accepted, Vec<Problem>> {
        if payload.len() <= self.limits.max_payload_bytes {
            if let Some(a) = crate::fast::batch(self, topic, payload, now) {
                return Ok(a);
            }
        }
        self.batch_detailed(topic, payload, now)
    }

    /// [`Validator::batch`] through the generic JSON tree: every problem named.
    pub fn batch_detailed(
        &self,
        topic: Option<&Topic>,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Accepted, Vec<Problem>> {
        let env = |r| vec![Problem::envelope(r)];
        if payload.len() > self.limits.max_payload_bytes {
            return Err(env(Reason::TooLarge {
                size: payload.len(),
                limit: self.limits.max_payload_bytes,
            }));
        }
        let text = std::str::from_utf8(payload).map_err(|e| env(Reason::NotUtf8(e.to_string())))?;
        let value: Value = serde_json::from_str(text).map_err(|e| env(Reason::Malformed(e.to_string())))?;
        let obj = value.as_object().ok_or_else(|| env(Reason::NotAnObject))?;

        let mut problems = Vec::new();
        if let Some(v) = obj
            .get("v")
            .and_then(Value::as_u64)
            .filter(|v| *v != u64::from(WIRE_VERSION))
        {
            problems.push(Problem::envelope(Reason::Version(v)));
        }
        let mut field = |field: &'static str, problem: String| {
            problems.push(Problem::envelope(Reason::Field { field, problem }));
        };
        if obj.get("v").and_then(Value::as_u64).is_none() {
            field("v", "must be the wire version number".into());
        }
        let agent = text_field(obj, "agent", &mut field)
            .and_then(|s| AgentId::parse(s).map_err(|e| field("agent", e.to_string())).ok());
        let zone = text_field(obj, "zone", &mut field)
            .and_then(|s| ZoneId::parse(s).map_err(|e| field("zone", e.to_string())).ok());
        let enterprise = text_field(obj, "enterprise", &mut field).and_then(|s| {
            EnterpriseId::parse_with_test_prefix(s, self.limits.test_prefix.as_deref())
                .map_err(|e| field("enterprise", e.to_string()))
                .ok()
        });
        let seq = uint_field(obj, "seq", &mut field);
        let boot = uint_field(obj, "boot", &mut field);
        let outbox = match obj.get("outbox") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => OutboxId::parse(s).map_err(|e| field("outbox", e.to_string())).ok(),
            Some(v) => {
                field("outbox", format!("must be a string, got {}", json_type(v)));
                None
            }
        };
        let sent_at =
            text_field(obj, "sent_at", &mut field).and_then(|s| parse_ts(s).map_err(|e| field("sent_at", e)).ok());
        let backfill = match obj.get("backfill") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                field("backfill", "must be true or false".into());
                false
            }
        };
        let readings = array_field(obj, "readings", &mut field);
        let declarations = array_field(obj, "declarations", &mut field);

        let count = readings.len() + declarations.len();
        if count > self.limits.max_items {
            problems.push(Problem::envelope(Reason::TooManyItems {
                count,
                limit: self.limits.max_items,
            }));
        }
        if let Some(t) = topic {
            let mut check = |field: &'static str, topic: &str, payload: Option<&str>| {
                if let Some(p) = payload {
                    if p != topic {
                        problems.push(Problem::envelope(Reason::TopicMismatch {
                            field,
                            topic: topic.to_owned(),
                            payload: p.to_owned(),
                        }));
                    }
                }
            };
            check("zone", t.zone.as_str(), zone.as_ref().map(ZoneId::as_str));
            check("agent", t.agent.as_str(), agent.as_ref().map(AgentId::as_str));
            match &t.kind {
                TopicKind::Data(e) => check("enterprise", e.as_str(), enterprise.as_ref().map(EnterpriseId::as_str)),
                TopicKind::State => check("topic kind", "data", Some("state")),
            }
        }
        let (Some(agent), Some(zone), Some(enterprise), Some(seq), Some(boot), Some(sent_at)) =
            (agent, zone, enterprise, seq, boot, sent_at)
        else {
            return Err(problems);
        };
        // A batch stamped far ahead of our clock comes from a wrong clock (or
        // a forger): nothing it says about when may be trusted.
        if sent_at > now + self.limits.max_future_skew {
            problems.push(Problem::envelope(Reason::SentAtFuture {
                sent_at,
                ahead_secs: (sent_at - now).num_seconds(),
                limit_secs: self.limits.max_future_skew.num_seconds(),
            }));
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        let mut accepted = Accepted {
            agent,
            boot,
            outbox,
            seq,
            digest: crate::wire::digest(payload),
            sent_at,
            zone,
            enterprise,
            backfill,
            readings: Vec::with_capacity(readings.len()),
            declarations: Vec::new(),
            refused: Vec::new(),
        };
        for (i, r) in readings.iter().enumerate() {
            match self.reading(r, now) {
                Ok(r) => accepted.readings.push(r),
                Err(reason) => accepted.refused.push(Problem {
                    at: Location::Reading(i),
                    reason,
                }),
            }
        }
        for (i, d) in declarations.iter().enumerate() {
            match self.declaration(d) {
                Ok(d) => accepted.declarations.push(d),
                Err(reason) => accepted.refused.push(Problem {
                    at: Location::Declaration(i),
                    reason,
                }),
            }
        }
        Ok(accepted)
    }

    /// An item's object and its catalog indicator.
    fn item<'v>(&self, v: &'v Value, field: &'static str) -> Result<(&'v Map<String, Value>, &Indicator), Reason> {
        let obj = v.as_object().ok_or(Reason::Field {
            field,
            problem: "must be an object".into(),
        })?;
        let code = str_in(obj, "indicator")?;
        let ind = self
            .catalog
            .get(code)
            .ok_or_else(|| Reason::UnknownIndicator(code.chars().take(64).collect()))?;
        Ok((obj, ind))
    }

    /// Validates one reading object and converts it to the canonical unit.
    pub fn reading(&self, r: &Value, now: DateTime<Utc>) -> Result<CanonicalReading, Reason> {
        let (obj, ind) = self.item(r, "readings[]")?;
        if ind.kind == IndicatorKind::Declaration {
            return Err(Reason::DeclarationAsReading(ind.code.clone()));
        }
        let point = match obj.get("point") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(p)) if p.len() <= 64 && !p.chars().any(char::is_control) => p.clone(),
            Some(_) => {
                return Err(Reason::Field {
                    field: "point",
                    problem: "must be text of at most 64 characters".into(),
                })
            }
        };
        let raw = match obj.get("value") {
            Some(Value::Number(n)) => n.as_f64().ok_or(Reason::NotFinite)?,
            Some(other) => {
                return Err(Reason::Field {
                    field: "value",
                    problem: format!("must be a number, got {}", json_type(other)),
                })
            }
            None => {
                return Err(Reason::Field {
                    field: "value",
                    problem: "is missing".into(),
                })
            }
        };
        let unit = str_in(obj, "unit")?;
        let value = self.canonical_value(ind, raw, unit)?;
        let at = self.time(ind, obj, now)?;
        Ok(CanonicalReading {
            indicator: CompactString::from(ind.code.as_str()),
            point: point.into(),
            value,
            at,
        })
    }

    /// A reading's value in the indicator's canonical unit, within the limits.
    pub(crate) fn canonical_value(&self, ind: &Indicator, raw: f64, unit: &str) -> Result<f64, Reason> {
        let factor = ind.factor(unit).ok_or_else(|| Reason::UnknownUnit {
            indicator: ind.code.clone(),
            unit: unit.chars().take(32).collect(),
            accepted: ind.units.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let value = raw * factor;
        if !value.is_finite() {
            return Err(Reason::NotFinite);
        }
        if value.abs() > self.limits.max_abs_value {
            return Err(Reason::OutOfRange {
                value,
                limit: self.limits.max_abs_value,
            });
        }
        if value < 0.0 && (ind.kind == IndicatorKind::Counter || ind.is_energy()) {
            return Err(Reason::Negative {
                indicator: ind.code.clone(),
                value: raw,
            });
        }
        Ok(value)
    }

    fn time(&self, ind: &Indicator, obj: &Map<String, Value>, now: DateTime<Utc>) -> Result<ReadingTime, Reason> {
        let text = |field: &'static str, v: Option<&'_ Value>, problem: &str| -> Result<Option<String>, Reason> {
            match v.filter(|v| !v.is_null()) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Reason::Field {
                    field,
                    problem: problem.into(),
                }),
            }
        };
        let ts_v = obj.get("ts").filter(|v| !v.is_null());
        let period_v = obj.get("period").filter(|v| !v.is_null());
        if ts_v.is_some() && period_v.is_some() {
            return Err(Reason::TimeCount("both"));
        }
        let ts = text("ts", ts_v, "must be an RFC 3339 text timestamp")?;
        let period = text("period", period_v, "must be text like 2026-10")?;
        self.time_of(ind, ts.as_deref(), period.as_deref(), now)
    }

    /// When a reading applies, from its `ts` or `period` text, checked
    /// against the clock and against what the indicator can carry.
    pub(crate) fn time_of(
        &self,
        ind: &Indicator,
        ts: Option<&str>,
        period: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ReadingTime, Reason> {
        let at = match (ts, period) {
            (Some(_), Some(_)) => return Err(Reason::TimeCount("both")),
            (None, None) => return Err(Reason::TimeCount("neither")),
            (Some(s), None) => {
                let ts = parse_ts(s).map_err(|problem| Reason::Field { field: "ts", problem })?;
                check_ts(ts, now, self.limits.max_future_skew, self.limits.earliest)?;
                ReadingTime::Ts(ts)
            }
            (None, Some(s)) => {
                let p = Period::parse(s).map_err(|e| Reason::Field {
                    field: "period",
                    problem: e.to_string(),
                })?;
                check_period(p, now, self.limits.max_future_skew, self.limits.earliest)?;
                ReadingTime::Period(p)
            }
        };
        let ok = match (ind.kind, &at) {
            (IndicatorKind::Amount, ReadingTime::Ts(_)) => Err(("an amount", "period")),
            (IndicatorKind::Gauge, ReadingTime::Period(_)) if !ind.code.starts_with("land_area") => {
                Err(("a gauge", "ts"))
            }
            _ => Ok(()),
        };
        ok.map_err(|(kind, needs)| Reason::WrongTime {
            indicator: ind.code.clone(),
            kind,
            needs,
        })?;
        Ok(at)
    }

    /// Validates one declaration object against the catalog's value type.
    pub fn declaration(&self, d: &Value) -> Result<(String, DeclaredValue), Reason> {
        let (obj, ind) = self.item(d, "declarations[]")?;
        if ind.kind != IndicatorKind::Declaration {
            return Err(Reason::ReadingAsDeclaration(ind.code.clone()));
        }
        let v = obj.get("value").unwrap_or(&Value::Null);
        let bad = |expected: String| Reason::DeclarationValue {
            indicator: ind.code.clone(),
            expected,
        };
        let value = match ind.value_type {
            ValueType::Bool => DeclaredValue::Bool(v.as_bool().ok_or_else(|| bad("true or false".into()))?),
            ValueType::Integer => {
                let (lo, hi) = (ind.min.unwrap_or(i64::MIN), ind.max.unwrap_or(i64::MAX));
                match v.as_i64() {
                    Some(n) if (lo..=hi).contains(&n) => DeclaredValue::Integer(n),
                    _ => return Err(bad(format!("a whole number from {lo} to {hi}"))),
                }
            }
            ValueType::Text => match v.as_str() {
                Some(s) if !s.is_empty() && s.chars().count() <= 64 => DeclaredValue::Text(s.to_owned()),
                _ => return Err(bad("text of 1 to 64 characters".into())),
            },
            ValueType::IndustryCode => match v.as_str().map(crate::industry::normalise_code) {
                Some(Ok(code)) => DeclaredValue::Text(code),
                Some(Err(e)) => return Err(bad(format!("a GB/T 4754 industry code: {e}"))),
                None => {
                    return Err(bad(
                        "a GB/T 4754 industry code as text, e.g. \"C3110\" or \"3110\"".into()
                    ))
                }
            },
            ValueType::Scenarios => {
                let list: Vec<Scenario> = serde_json::from_value(v.clone()).map_err(|e| {
                    bad(format!(
                        "a list of {{\"code\", \"level\": basic|intermediate|advanced}} ({e})"
                    ))
                })?;
                if list.len() > 200 || list.iter().any(|s| s.code.is_empty() || s.code.chars().count() > 64) {
                    return Err(bad("at most 200 scenarios with codes of 1 to 64 characters".into()));
                }
                DeclaredValue::Scenarios(list)
            }
            ValueType::Number => return Err(bad("a declaration type in the catalog".into())),
        };
        Ok((ind.code.clone(), value))
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn str_in<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, Reason> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Reason::Field {
            field,
            problem: format!("must be text, got {}", json_type(other)),
        }),
        None => Err(Reason::Field {
            field,
            problem: "is missing".into(),
        }),
    }
}

fn text_field<'a>(
    obj: &'a Map<String, Value>,
    name: &'static str,
    field: &mut impl FnMut(&'static str, String),
) -> Option<&'a str> {
    str_in(obj, name)
        .map_err(|r| {
            if let Reason::Field { problem, .. } = r {
                field(name, problem)
            }
        })
        .ok()
}

fn uint_field(
    obj: &Map<String, Value>,
    name: &'static str,
    field: &mut impl FnMut(&'static str, String),
) -> Option<u64> {
    match obj.get(name) {
        Some(v) => v.as_u64().or_else(|| {
            field(name, format!("must be a non-negative integer, got {}", json_type(v)));
            None
        }),
        None => {
            field(name, "is missing".into());
            None
        }
    }
}

fn array_field<'a>(
    obj: &'a Map<String, Value>,
    name: &'static str,
    field: &mut impl FnMut(&'static str, String),
) -> &'a [Value] {
    match obj.get(name) {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(other) => {
            field(name, format!("must be an array, got {}", json_type(other)));
            &[]
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;

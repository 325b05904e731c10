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
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

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
        }
    }
}

/// Where in a payload a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// The batch as a whole.
    Envelope,
    /// The n-th reading (0-based).
    Reading(usize),
    /// The n-th declaration (0-based).
    Declaration(usize),
}

/// What was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reason {
    #[error("payload is {size} bytes, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not UTF-8: {0}")]
    NotUtf8(String),
    #[error("payload is not valid JSON: {0}")]
    Malformed(String),
    #[error("payload must be a JSON object")]
    NotAnObject,
    #[error("field `{field}` {problem}")]
    Field { field: &'static str, problem: String },
    #[error("wire version {0} is not supported (this build speaks {WIRE_VERSION})")]
    Version(u64),
    #[error("{field} in the payload is {payload:?} but the topic says {topic:?}")]
    TopicMismatch {
        field: &'static str,
        topic: String,
        payload: String,
    },
    #[error("batch holds {count} items, the limit is {limit}")]
    TooManyItems { count: usize, limit: usize },
    #[error("indicator {0:?} is not in the catalog")]
    UnknownIndicator(String),
    #[error("indicator {0:?} is a declaration; send it under `declarations`")]
    DeclarationAsReading(String),
    #[error("indicator {0:?} is a reading, not a declaration")]
    ReadingAsDeclaration(String),
    #[error("unit {unit:?} is not accepted for {indicator} (accepted: {accepted})")]
    UnknownUnit {
        indicator: String,
        unit: String,
        accepted: String,
    },
    #[error("value {value} is outside ±{limit}")]
    OutOfRange { value: f64, limit: f64 },
    #[error("value is not a finite number")]
    NotFinite,
    #[error("{indicator} cannot be negative, got {value}")]
    Negative { indicator: String, value: f64 },
    #[error("{indicator} is {kind} and needs `{needs}`")]
    WrongTime {
        indicator: String,
        kind: &'static str,
        needs: &'static str,
    },
    #[error("a reading has exactly one of `ts` and `period`, this one has {0}")]
    TimeCount(&'static str),
    #[error("timestamp {ts} is {ahead_secs} s ahead of the receiver's clock (limit {limit_secs} s)")]
    Future {
        ts: DateTime<Utc>,
        ahead_secs: i64,
        limit_secs: i64,
    },
    #[error("sent_at {sent_at} is {ahead_secs} s ahead of the receiver's clock (limit {limit_secs} s): the sender's clock is wrong")]
    SentAtFuture {
        sent_at: DateTime<Utc>,
        ahead_secs: i64,
        limit_secs: i64,
    },
    #[error("timestamp {ts} is before {earliest}")]
    TooOld { ts: DateTime<Utc>, earliest: DateTime<Utc> },
    #[error("period {0} has not started yet")]
    PeriodInFuture(Period),
    #[error("declaration {indicator} needs {expected}")]
    DeclarationValue { indicator: String, expected: String },
}

/// One problem found in a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Where.
    pub at: Location,
    /// What.
    pub reason: Reason,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Location::Envelope => write!(f, "{}", self.reason),
            Location::Reading(i) => write!(f, "reading {i}: {}", self.reason),
            Location::Declaration(i) => write!(f, "declaration {i}: {}", self.reason),
        }
    }
}

impl Problem {
    fn envelope(reason: Reason) -> Self {
        Self {
            at: Location::Envelope,
            reason,
        }
    }

    /// A short stable label for metrics (`zonesync_aggregator_rejected_total{reason=...}`).
    pub fn label(&self) -> &'static str {
        match self.reason {
            Reason::TooLarge { .. } => "too_large",
            Reason::NotUtf8(_) => "not_utf8",
            Reason::Malformed(_) | Reason::NotAnObject => "malformed",
            Reason::Field { .. } => "bad_field",
            Reason::Version(_) => "version",
            Reason::TopicMismatch { .. } => "topic_mismatch",
            Reason::TooManyItems { .. } => "too_many_items",
            Reason::UnknownIndicator(_) | Reason::DeclarationAsReading(_) | Reason::ReadingAsDeclaration(_) => {
                "unknown_indicator"
            }
            Reason::UnknownUnit { .. } => "unknown_unit",
            Reason::OutOfRange { .. } | Reason::NotFinite => "out_of_range",
            Reason::Negative { .. } => "negative",
            Reason::WrongTime { .. } | Reason::TimeCount(_) => "bad_time",
            Reason::Future { .. } | Reason::TooOld { .. } | Reason::PeriodInFuture(_) => "clock",
            Reason::DeclarationValue { .. } => "bad_declaration",
            Reason::SentAtFuture { .. } => "sent_at_future",
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
    /// Indicator code.
    pub indicator: String,
    /// Measuring point.
    pub point: String,
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
            indicator: ind.code.clone(),
            point,
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

/// Clock sanity for an instant: no later than `max_ahead` past `now`, and not
/// before `earliest`. The one rule for both ends: the aggregator applies it on
/// receipt with its limits, the agent before queueing with its own (tighter
/// ahead limit, and an enterprise's establishment date as `earliest`).
pub fn check_ts(
    ts: DateTime<Utc>,
    now: DateTime<Utc>,
    max_ahead: Duration,
    earliest: DateTime<Utc>,
) -> Result<(), Reason> {
    if ts > now + max_ahead {
        return Err(Reason::Future {
            ts,
            ahead_secs: (ts - now).num_seconds(),
            limit_secs: max_ahead.num_seconds(),
        });
    }
    if ts < earliest {
        return Err(Reason::TooOld { ts, earliest });
    }
    Ok(())
}

/// Clock sanity for a reporting period: it must have started by `now +
/// max_ahead` and must not have ended by `earliest`.
pub fn check_period(p: Period, now: DateTime<Utc>, max_ahead: Duration, earliest: DateTime<Utc>) -> Result<(), Reason> {
    if p.start() > now + max_ahead {
        return Err(Reason::PeriodInFuture(p));
    }
    if p.end() <= earliest {
        return Err(Reason::TooOld {
            ts: p.start(),
            earliest,
        });
    }
    Ok(())
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "{:?} is not an RFC 3339 timestamp ({e})",
                s.chars().take(40).collect::<String>()
            )
        })
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
mod tests {
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
}

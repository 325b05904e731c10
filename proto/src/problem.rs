//! What can be wrong with a payload: where ([`Location`]), what ([`Reason`],
//! with its metric label) — every reason specific enough for an operator to
//! act on, and for a dead letter to say why.

use crate::period::Period;
use crate::wire::WIRE_VERSION;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

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

impl Reason {
    /// The same in Chinese, for the people who fix the data: an enterprise's
    /// IT desk reading a drop folder's rejection file, a zone office reading
    /// dead letters. Values and codes stay as they were sent.
    pub fn zh(&self) -> String {
        match self {
            Reason::TooLarge { size, limit } => format!("数据包 {size} 字节，超过上限 {limit} 字节"),
            Reason::NotUtf8(_) => "数据包不是 UTF-8 编码".into(),
            Reason::Malformed(_) => "数据包不是有效的 JSON".into(),
            Reason::NotAnObject => "数据包必须是 JSON 对象".into(),
            Reason::Field { field, problem } => format!("字段 `{field}` 有误：{problem}"),
            Reason::Version(v) => format!("不支持协议版本 {v}（本程序为 {WIRE_VERSION}）"),
            Reason::TopicMismatch { field, topic, payload } => {
                format!("数据中的 {field} 为 {payload:?}，与主题中的 {topic:?} 不符")
            }
            Reason::TooManyItems { count, limit } => format!("一批 {count} 条，超过上限 {limit} 条"),
            Reason::UnknownIndicator(i) => format!("指标 {i:?} 不在指标目录中"),
            Reason::DeclarationAsReading(i) => format!("指标 {i:?} 是申报项，应放在 declarations 中"),
            Reason::ReadingAsDeclaration(i) => format!("指标 {i:?} 是读数，不是申报项"),
            Reason::UnknownUnit {
                indicator,
                unit,
                accepted,
            } => {
                format!("{indicator} 不接受单位 {unit:?}（可用：{accepted}）")
            }
            Reason::OutOfRange { value, limit } => format!("数值 {value} 超出 ±{limit}"),
            Reason::NotFinite => "数值不是有限数".into(),
            Reason::Negative { indicator, value } => format!("{indicator} 不能为负数，实为 {value}"),
            Reason::WrongTime { indicator, needs, .. } => format!("{indicator} 需要 `{needs}` 时间字段"),
            Reason::TimeCount(has) => format!("读数须有 `ts` 与 `period` 之一，此条为 {has}"),
            Reason::Future { ts, ahead_secs, .. } => format!("时间 {ts} 比接收端时钟快 {ahead_secs} 秒"),
            Reason::SentAtFuture {
                sent_at, ahead_secs, ..
            } => {
                format!("发送时间 {sent_at} 比接收端时钟快 {ahead_secs} 秒：发送端时钟有误")
            }
            Reason::TooOld { ts, earliest } => format!("时间 {ts} 早于可接收的最早时间 {earliest}"),
            Reason::PeriodInFuture(p) => format!("期间 {p} 尚未开始"),
            Reason::DeclarationValue { indicator, expected } => format!("申报项 {indicator} 须为 {expected}"),
        }
    }
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
    pub(crate) fn envelope(reason: Reason) -> Self {
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

//! HTTP/JSON pull from plant systems (MES, EMS): GET a URL at an interval,
//! pick values out of the JSON document with JSON pointers (RFC 6901), and
//! queue them as readings of the mapped indicators.
//!
//! Plant systems change their documents without notice, so every way a
//! response can be wrong (status, not JSON, a pointer that no longer
//! resolves, a value that is not a number, a unit that differs from the
//! mapping, a timestamp that cannot be read) is refused with its own reason,
//! counted, and logged when it starts and when it stops; the task never
//! stops for it. A value whose timestamp did not move since the last one
//! sent is not sent again. The bearer token is read from a file (re-read on
//! every poll, so it can be rotated) or an environment variable, and is never
//! logged.
//!
//! ```toml
//! [[http_pull]]
//! name = "ems"
//! url = "https://ems.example.cn/api/energy/now"
//! bearer_token_file = "/etc/zonesync/ems.token"
//! [[http_pull.mappings]]
//! pointer = "/meters/0/kwh"
//! indicator = "electricity"
//! unit = "kWh"
//! enterprise = "91419001MA0000001N"
//! point = "EMS-1"
//! timestamp_pointer = "/meters/0/time"
//! ```

mod config;

pub use config::{check_all, HttpPullConfig, HttpPullConfigError, MappingConfig};

use super::clock::ClockGuard;
use super::probe::{ProbeRead, ProbeRow};
use crate::outbox::{Item, Outbox, OutboxError};
use crate::shutdown::Shutdown;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zonesync_proto::Reading;
use zonesync_proto::Validator;

/// Largest response body read, bytes: a plant system's status document is
/// small, and a gateway must not be made to buffer a log dump.
const MAX_BODY: usize = 1024 * 1024;

/// A bearer token; its `Debug` never shows it.
#[derive(Clone)]
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(redacted)")
    }
}

/// Why a whole poll produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bearer token: {0}")]
    Token(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("request timed out")]
    Timeout,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("response is not JSON: {0}")]
    NotJson(String),
}

impl FetchError {
    /// Label under which it is counted.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Token(_) => "token",
            FetchError::Request(_) => "request",
            FetchError::Timeout => "timeout",
            FetchError::Status(_) => "status",
            FetchError::TooLarge => "too_large",
            FetchError::NotJson(_) => "not_json",
        }
    }
}

/// Why one mapped value was not sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("pointer {0:?} is not in the document")]
    MissingPointer(String),
    #[error("value at {pointer:?} is {found}, not a number")]
    WrongType { pointer: String, found: &'static str },
    #[error("unit at {pointer:?} is {found:?}, the mapping expects {expected:?}")]
    WrongUnit {
        pointer: String,
        found: String,
        expected: String,
    },
    #[error("timestamp at {pointer:?}: {problem}")]
    BadTimestamp { pointer: String, problem: String },
    #[error("refused by the catalog: {0}")]
    Refused(String),
    #[error("refused by the clock check: {0}")]
    Clock(String),
}

impl ValueError {
    /// Label under which it is counted.
    pub fn label(&self) -> &'static str {
        match self {
            ValueError::MissingPointer(_) => "missing_pointer",
            ValueError::WrongType { .. } => "wrong_type",
            ValueError::WrongUnit { .. } => "wrong_unit",
            ValueError::BadTimestamp { .. } => "bad_timestamp",
            ValueError::Refused(_) => "refused",
            ValueError::Clock(_) => "clock",
        }
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

/// Counts of what the source's polls did.
#[derive(Debug, Default)]
pub struct HttpPullStats {
    /// Polls started.
    pub polls: AtomicU64,
    /// Readings appended.
    pub readings: AtomicU64,
    /// Values not sent again because their timestamp had not moved.
    pub unchanged: AtomicU64,
    /// Problems by label (`status`, `not_json`, `missing_pointer`, `wrong_type`, `wrong_unit`, ...).
    pub problems: Mutex<BTreeMap<&'static str, u64>>,
}

impl HttpPullStats {
    fn count(&self, label: &'static str) {
        if let Ok(mut p) = self.problems.lock() {
            *p.entry(label).or_default() += 1;
        }
    }

    /// Problems counted so far, by label.
    pub fn problems(&self) -> BTreeMap<&'static str, u64> {
        self.problems.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// A checked source, ready to run.
#[derive(Debug, Clone)]
pub struct HttpPull {
    config: HttpPullConfig,
    validator: Validator,
    client: reqwest::Client,
    clock: Option<Arc<ClockGuard>>,
    /// What its polls did; clone the `Arc` before `run` to watch it.
    pub stats: Arc<HttpPullStats>,
}

/// Reads a timestamp value: RFC 3339 text, or Unix seconds / milliseconds.
fn timestamp(v: &Value) -> Result<DateTime<Utc>, String> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("{:?} is not RFC 3339 ({e})", s.chars().take(40).collect::<String>())),
        Value::Number(n) => {
            let f = n
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or("not a usable number")?;
            // Seconds until the year 5138; anything larger is milliseconds.
            let ms = if f >= 1e11 { f } else { f * 1000.0 };
            DateTime::<Utc>::from_timestamp_millis(ms as i64).ok_or_else(|| format!("{f} is out of range"))
        }
        other => Err(format!("is {}, not text or a number", json_type(other))),
    }
}

/// The mapping's key in the cursor.
fn key(m: &MappingConfig) -> String {
    format!("{}|{}|{}", m.enterprise, m.indicator, m.point)
}

impl HttpPull {
    /// The clock check applied before readings are queued.
    pub fn with_clock(mut self, clock: Arc<ClockGuard>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Name under which this source stores its cursor.
    pub fn source_name(&self) -> String {
        format!("http_pull:{}", self.config.name)
    }

    /// The configuration.
    pub fn config(&self) -> &HttpPullConfig {
        &self.config
    }

    fn token(&self) -> Result<Option<Token>, FetchError> {
        if let Some(path) = &self.config.bearer_token_file {
            let t = std::fs::read_to_string(path)
                .map_err(|e| FetchError::Token(format!("reading {}: {e}", path.display())))?;
            let t = t.trim();
            if t.is_empty() {
                return Err(FetchError::Token(format!("{} is empty", path.display())));
            }
            return Ok(Some(Token(t.to_owned())));
        }
        if let Some(var) = &self.config.bearer_token_env {
            let t =
                std::env::var(var).map_err(|_| FetchError::Token(format!("environment variable {var} is not set")))?;
            return Ok(Some(Token(t.trim().to_owned())));
        }
        Ok(None)
    }

    /// GETs and parses the document once.
    pub async fn fetch(&self) -> Result<Value, FetchError> {
        let mut req = self
            .client
            .get(&self.config.url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(Token(t)) = self.token()? {
            req = req.bearer_auth(t);
        }
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout
            } else {
                // Without the URL: it may carry a query-string secret.
                FetchError::Request(e.without_url().to_string())
            }
        };
        let mut resp = req.send().await.map_err(classify)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| FetchError::NotJson(e.to_string()))
    }

    /// One mapping's reading from a document, checked against the catalog and the clock.
    fn value(&self, m: &MappingConfig, doc: &Value, polled: DateTime<Utc>) -> Result<Reading, ValueError> {
        let v = doc
            .pointer(&m.pointer)
            .ok_or_else(|| ValueError::MissingPointer(m.pointer.clone()))?;
        let value = v
            .as_f64()
            .filter(|_| v.is_number())
            .ok_or_else(|| ValueError::WrongType {
                pointer: m.pointer.clone(),
                found: json_type(v),
            })?;
        if let Some(up) = &m.unit_pointer {
            let found = doc.pointer(up).ok_or_else(|| ValueError::MissingPointer(up.clone()))?;
            if found.as_str() != Some(m.unit.as_str()) {
                return Err(ValueError::WrongUnit {
                    pointer: up.clone(),
                    found: found.as_str().map_or_else(|| found.to_string(), str::to_owned),
                    expected: m.unit.clone(),
                });
            }
        }
        let ts = match &m.timestamp_pointer {
            None => polled,
            Some(tp) => {
                let t = doc.pointer(tp).ok_or_else(|| ValueError::MissingPointer(tp.clone()))?;
                timestamp(t).map_err(|problem| ValueError::BadTimestamp {
                    pointer: tp.clone(),
                    problem,
                })?
            }
        };
        let reading = Reading {
            indicator: m.indicator.clone(),
            point: m.point.clone(),
            value,
            unit: m.unit.clone(),
            ts: Some(ts),
            period: None,
        };
        let admitted = super::admit::reading(
            &self.validator,
            self.clock.as_deref(),
            &self.source_name(),
            &m.enterprise,
            reading,
            Utc::now(),
        );
        match admitted {
            Ok(r) => Ok(r),
            Err(super::admit::Refused::Invalid(why)) => Err(ValueError::Refused(why)),
            Err(super::admit::Refused::Clock(why)) => Err(ValueError::Clock(why)),
        }
    }

    /// Polls until shutdown; only an outbox failure ends the task.
    pub async fn run(self, outbox: Arc<Outbox>, mut shutdown: Shutdown) -> Result<(), OutboxError> {
        let source = self.source_name();
        let name = self.config.name.clone();
        let mut last_ts: BTreeMap<String, DateTime<Utc>> = outbox
            .cursor(&source)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        tracing::info!(source = %name, mappings = self.config.mappings.len(), "http_pull source starting");
        // The problem each mapping (and the fetch, as "") had last poll, so
        // a problem is logged when it starts and when it ends, not every poll.
        let mut failing: BTreeMap<String, String> = BTreeMap::new();
        let note = |what: &str, problem: Option<String>, failing: &mut BTreeMap<String, String>| match problem {
            Some(p) => {
                if failing.get(what) != Some(&p) {
                    tracing::warn!(source = %name, mapping = what, "http_pull: {p}");
                    failing.insert(what.to_owned(), p);
                }
            }
            None => {
                if failing.remove(what).is_some() {
                    tracing::info!(source = %name, mapping = what, "http_pull: good again");
                }
            }
        };
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.poll_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = ticker.tick() => {}
            }
            self.stats.polls.fetch_add(1, Ordering::Relaxed);
            let polled = Utc::now();
            let doc = tokio::select! {
                _ = shutdown.wait() => break,
                r = self.fetch() => r,
            };
            let doc = match doc {
                Ok(d) => {
                    note("", None, &mut failing);
                    d
                }
                Err(e) => {
                    self.stats.count(e.label());
                    note("", Some(e.to_string()), &mut failing);
                    continue;
                }
            };
            let mut items = Vec::new();
            let mut next = last_ts.clone();
            for m in &self.config.mappings {
                match self.value(m, &doc, polled) {
                    Ok(r) => {
                        note(&m.pointer, None, &mut failing);
                        let k = key(m);
                        let ts = r.ts.unwrap_or(polled);
                        if m.timestamp_pointer.is_some() && last_ts.get(&k).is_some_and(|t| ts <= *t) {
                            self.stats.unchanged.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        next.insert(k, ts);
                        items.push((m.enterprise.clone(), Item::Reading(r)));
                    }
                    Err(e) => {
                        self.stats.count(e.label());
                        note(&m.pointer, Some(e.to_string()), &mut failing);
                    }
                }
            }
            if items.is_empty() {
                continue;
            }
            let n = items.len() as u64;
            let bytes = serde_json::to_vec(&next).unwrap_or_default();
            outbox.append(items, Some((&source, &bytes)))?;
            last_ts = next;
            self.stats.readings.fetch_add(n, Ordering::Relaxed);
        }
        tracing::info!(source = %name, polls = self.stats.polls.load(Ordering::Relaxed),
            readings = self.stats.readings.load(Ordering::Relaxed), problems = ?self.stats.problems(), "http_pull source stopped");
        Ok(())
    }

    /// Fetches once and reads every mapping, for `zonesync-agent check`.
    pub async fn probe(&self) -> Vec<ProbeRow> {
        let doc = match self.fetch().await {
            Ok(d) => d,
            Err(e) => return vec![ProbeRow::error("http_pull", self.config.url.clone(), e)],
        };
        let now = Utc::now();
        self.config
            .mappings
            .iter()
            .map(|m| ProbeRow {
                source: "http_pull".into(),
                target: format!("{} {}", self.config.url, m.pointer),
                result: self.value(m, &doc, now).map_err(|e| e.to_string()).map(|r| {
                    vec![ProbeRead {
                        indicator: r.indicator,
                        point: r.point,
                        value: r.value,
                        unit: r.unit,
                    }]
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

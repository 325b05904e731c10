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

use super::clock::ClockGuard;
use super::probe::{ProbeRead, ProbeRow};
use crate::outbox::{Item, Outbox, OutboxError};
use crate::shutdown::Shutdown;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zonesync_proto::{EnterpriseId, IndicatorKind, Reading, Validator};

/// Largest response body read, bytes: a plant system's status document is
/// small, and a gateway must not be made to buffer a log dump.
const MAX_BODY: usize = 1024 * 1024;

/// One polled URL (`[[http_pull]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPullConfig {
    /// Unique per agent; names the source in logs and keys its stored cursor.
    pub name: String,
    /// The document's URL (http or https; https is verified with the built-in web PKI roots).
    pub url: String,
    /// File holding a bearer token (whitespace trimmed); re-read on every poll.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Environment variable holding a bearer token (when no file is given).
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// Time between polls, milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Longest wait for the whole response, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Values to take from the document.
    pub mappings: Vec<MappingConfig>,
}

fn default_poll_ms() -> u64 {
    60_000
}
fn default_timeout_ms() -> u64 {
    5_000
}

/// One value in the document (`[[http_pull.mappings]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// JSON pointer to the number, e.g. `/plant/energy/total_kwh`.
    pub pointer: String,
    /// Catalog indicator (a counter or a gauge).
    pub indicator: String,
    /// One of the indicator's catalog units; the value is sent in it.
    pub unit: String,
    /// Credit code of the enterprise the value belongs to.
    pub enterprise: EnterpriseId,
    /// Meter or point id sent with the reading.
    #[serde(default)]
    pub point: String,
    /// JSON pointer to the value's time: RFC 3339 text, or Unix seconds (or
    /// milliseconds, above 10^11). Without it the poll time is used.
    #[serde(default)]
    pub timestamp_pointer: Option<String>,
    /// JSON pointer to a unit text the document gives for the value; when
    /// set, a unit other than `unit` refuses the value instead of mis-scaling it.
    #[serde(default)]
    pub unit_pointer: Option<String>,
}

/// Why the HTTP configuration was refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum HttpPullConfigError {
    #[error("http_pull source name {0:?} is used twice (names key each source's cursor)")]
    DuplicateName(String),
    #[error("http_pull {name:?}: {problem}")]
    Source { name: String, problem: String },
    #[error("http_pull {name:?}, mapping {pointer:?}: {problem}")]
    Mapping {
        name: String,
        pointer: String,
        problem: String,
    },
}

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

/// A pointer is empty (the whole document) or starts with `/` (RFC 6901).
fn pointer_ok(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

/// Checks every configured source against the catalog.
pub fn check_all(sources: &[HttpPullConfig], validator: &Validator) -> Result<Vec<HttpPull>, HttpPullConfigError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(sources.len());
    for s in sources {
        if !names.insert(s.name.as_str()) {
            return Err(HttpPullConfigError::DuplicateName(s.name.clone()));
        }
        out.push(s.check(validator)?);
    }
    Ok(out)
}

impl HttpPullConfig {
    /// Checks the source: URL scheme, intervals, token settings, and every mapping against the catalog.
    pub fn check(&self, validator: &Validator) -> Result<HttpPull, HttpPullConfigError> {
        let src = |problem: String| HttpPullConfigError::Source {
            name: self.name.clone(),
            problem,
        };
        if self.name.is_empty() {
            return Err(src("name is empty".into()));
        }
        let url = reqwest::Url::parse(&self.url).map_err(|e| src(format!("url {:?}: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(src(format!("url scheme {:?} is not http or https", url.scheme())));
        }
        if self.poll_ms == 0 || self.timeout_ms == 0 {
            return Err(src("poll_ms and timeout_ms must be above zero".into()));
        }
        if self.bearer_token_file.is_some() && self.bearer_token_env.is_some() {
            return Err(src("give bearer_token_file or bearer_token_env, not both".into()));
        }
        if self.mappings.is_empty() {
            return Err(src("has no mappings".into()));
        }
        let mut seen = BTreeSet::new();
        for m in &self.mappings {
            let bad = |problem: String| HttpPullConfigError::Mapping {
                name: self.name.clone(),
                pointer: m.pointer.clone(),
                problem,
            };
            for p in [Some(&m.pointer), m.timestamp_pointer.as_ref(), m.unit_pointer.as_ref()]
                .into_iter()
                .flatten()
            {
                if !pointer_ok(p) {
                    return Err(bad(format!("JSON pointer {p:?} must start with '/'")));
                }
            }
            let ind = validator
                .catalog
                .get(&m.indicator)
                .ok_or_else(|| bad(format!("indicator {:?} is not in the catalog", m.indicator)))?;
            if !matches!(ind.kind, IndicatorKind::Counter | IndicatorKind::Gauge) {
                return Err(bad(format!(
                    "indicator {:?} is a {:?}; a pulled value is a counter or a gauge reading",
                    m.indicator, ind.kind
                )));
            }
            if ind.factor(&m.unit).is_none() {
                return Err(bad(format!(
                    "unit {:?} is not one of {:?}'s units ({})",
                    m.unit,
                    m.indicator,
                    ind.units.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            if m.point.chars().count() > 64 || m.point.chars().any(char::is_control) {
                return Err(bad("point ids are at most 64 printable characters".into()));
            }
            if !seen.insert((m.enterprise.clone(), m.indicator.clone(), m.point.clone())) {
                return Err(bad(format!(
                    "enterprise {}: {} at point {:?} is mapped twice",
                    m.enterprise, m.indicator, m.point
                )));
            }
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("zonesync-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| src(format!("HTTP client: {e}")))?;
        Ok(HttpPull {
            config: self.clone(),
            validator: validator.clone(),
            client,
            clock: None,
            stats: Arc::new(HttpPullStats::default()),
        })
    }
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
        let now = Utc::now();
        serde_json::to_value(&reading)
            .map_err(|e| e.to_string())
            .and_then(|j| self.validator.reading(&j, now).map(|_| ()).map_err(|r| r.to_string()))
            .map_err(ValueError::Refused)?;
        if let Some(clock) = &self.clock {
            let item = Item::Reading(reading.clone());
            if let Err(why) = clock.check(&m.enterprise, &item, now) {
                // Let the guard count it under its own reason, too.
                clock.admit(&self.source_name(), vec![(m.enterprise.clone(), item)], now);
                return Err(ValueError::Clock(why.to_string()));
            }
        }
        Ok(reading)
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
mod tests {
    use super::*;
    use serde_json::json;
    use zonesync_proto::{Catalog, Limits};

    fn source(mappings: &str) -> Result<HttpPull, HttpPullConfigError> {
        let c: HttpPullConfig =
            toml::from_str(&format!("name = \"ems\"\nurl = \"http://127.0.0.1:1/now\"\n{mappings}")).unwrap();
        c.check(&Validator::new(Catalog::builtin().unwrap(), Limits::default()))
    }

    const MAPPINGS: &str = r#"
[[mappings]]
pointer = "/meters/0/kwh"
indicator = "electricity"
unit = "kWh"
enterprise = "91350100M000100Y43"
point = "EMS-1"
timestamp_pointer = "/meters/0/time"
unit_pointer = "/meters/0/unit"
[[mappings]]
pointer = "/power"
indicator = "active_power"
unit = "kW"
enterprise = "91350100M000100Y43"
"#;

    #[test]
    fn each_bad_value_gets_its_reason() {
        let s = source(MAPPINGS).unwrap();
        let (m, p) = (&s.config.mappings[0], &s.config.mappings[1]);
        let now = Utc::now();
        let t = (now - chrono::Duration::minutes(1)).to_rfc3339();
        let good = json!({"meters": [{"kwh": 1500.5, "time": t, "unit": "kWh"}], "power": 12});
        let r = s.value(m, &good, now).unwrap();
        assert_eq!((r.value, r.ts.map(|x| x.to_rfc3339())), (1500.5, Some(t.clone())));
        assert_eq!(
            s.value(p, &good, now).unwrap().ts,
            Some(now),
            "no timestamp pointer: the poll time"
        );
        let label = |doc: Value| s.value(m, &doc, now).unwrap_err().label();
        assert_eq!(label(json!({"meters": []})), "missing_pointer");
        assert_eq!(
            label(json!({"meters": [{"kwh": "1500", "time": t, "unit": "kWh"}]})),
            "wrong_type"
        );
        assert_eq!(
            label(json!({"meters": [{"kwh": null, "time": t, "unit": "kWh"}]})),
            "wrong_type"
        );
        assert_eq!(
            label(json!({"meters": [{"kwh": 1.0, "time": t, "unit": "MWh"}]})),
            "wrong_unit"
        );
        assert_eq!(
            label(json!({"meters": [{"kwh": 1.0, "time": "yesterday", "unit": "kWh"}]})),
            "bad_timestamp"
        );
        assert_eq!(
            label(json!({"meters": [{"kwh": -1.0, "time": t, "unit": "kWh"}]})),
            "refused"
        );
        let future = (now + chrono::Duration::hours(8)).to_rfc3339();
        assert_eq!(
            label(json!({"meters": [{"kwh": 1.0, "time": future, "unit": "kWh"}]})),
            "refused"
        );
    }

    #[test]
    fn timestamps_in_text_seconds_and_milliseconds() {
        let want = DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(timestamp(&json!("2026-11-23T16:00:00+08:00")), Ok(want));
        assert_eq!(timestamp(&json!(want.timestamp())), Ok(want));
        assert_eq!(timestamp(&json!(want.timestamp_millis())), Ok(want));
        assert!(timestamp(&json!(true)).is_err());
        assert!(timestamp(&json!(-5)).is_err());
    }

    #[test]
    fn configuration_mistakes_are_refused() {
        let err = |m: &str| source(m).unwrap_err().to_string();
        assert!(err("mappings = []\n").contains("has no mappings"));
        let base = "[[mappings]]\npointer = \"/a\"\nindicator = \"electricity\"\nunit = \"kWh\"\nenterprise = \"91350100M000100Y43\"\n";
        assert!(source(base).is_ok());
        assert!(err(&base.replace("\"/a\"", "\"a\"")).contains("must start with '/'"));
        assert!(err(&base.replace("\"kWh\"", "\"kW\"")).contains("is not one of"));
        assert!(err(&base.replace("electricity", "value_added")).contains("counter or a gauge"));
        assert!(err(&format!("{base}{base}")).contains("mapped twice"));
        let c: HttpPullConfig = toml::from_str(&format!("name = \"x\"\nurl = \"ftp://h/\"\n{base}")).unwrap();
        let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
        assert!(c.check(&v).unwrap_err().to_string().contains("scheme"));
        assert!(
            toml::from_str::<HttpPullConfig>(&format!("name = \"x\"\nurl = \"http://h/\"\ntoken = \"t\"\n{base}"))
                .is_err()
        );
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let t = Token("s3cret".into());
        assert!(!format!("{t:?}").contains("s3cret"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        let mut s = source(MAPPINGS).unwrap();
        s.config.bearer_token_file = Some(f.clone());
        assert_eq!(s.token().unwrap().map(|t| t.0), Some("s3cret".to_owned()));
        assert!(!format!("{s:?}").contains("s3cret"));
        std::fs::write(&f, "  \n").unwrap();
        assert_eq!(
            s.token().unwrap_err().to_string(),
            format!("bearer token: {} is empty", f.display())
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;
    use zonesync_proto::{Catalog, Limits};

    #[test]
    fn the_commented_example_is_valid_once_uncommented() {
        #[derive(serde::Deserialize)]
        struct Example {
            http_pull: Vec<HttpPullConfig>,
        }
        let block = crate::sources::dlt645::tests::example_block("# [[http_pull]]");
        let ex: Example = toml::from_str(&block).unwrap();
        let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
        let sources = check_all(&ex.http_pull, &v).unwrap();
        assert_eq!(sources[0].config.mappings.len(), 1);
        assert!(sources[0].config.mappings[0].unit_pointer.is_some());
    }
}

//! The `[[http_pull]]` configuration and its start-up checks against the
//! catalog: a mistyped pointer, indicator or unit stops the agent at start-up
//! rather than leaving a value silently unreported.

use super::{HttpPull, HttpPullStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use zonesync_proto::{EnterpriseId, Validator};

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
            crate::sources::admit::series(&validator.catalog, &m.indicator, &m.unit, "pulled values are")
                .map_err(bad)?;
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

//! The hostile-payload corpus (tests/corpus/): its manifest, the case files
//! with their time placeholders filled in, and the two cases too big to keep
//! in git, built at test time. Used by the end-to-end corpus test and by the
//! fuzz body's corpus run, so both read the same cases the same way.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Topic a case is published on when the manifest names none.
pub const DEFAULT_TOPIC: &str = "zonesync/v1/test-zone/gw-x/data/91410000MA1000001Y";

/// One case as the manifest describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// File under cases/.
    pub file: Option<String>,
    /// Or a payload built at test time.
    pub generate: Option<String>,
    /// Topic it is published on.
    #[serde(default)]
    pub topic: Option<String>,
    /// Reason labels of its dead letter, in order.
    pub labels: Vec<String>,
    /// Text that must appear among the dead letter's reasons.
    pub says: Vec<String>,
    /// Whole batch refused.
    pub whole: bool,
    /// Readings of the case that are stored.
    #[serde(default)]
    pub kept: u64,
}

impl Case {
    /// A short name for messages.
    pub fn name(&self) -> &str {
        self.file.as_deref().or(self.generate.as_deref()).unwrap_or("?")
    }

    /// Its topic.
    pub fn topic(&self) -> &str {
        self.topic.as_deref().unwrap_or(DEFAULT_TOPIC)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    case: Vec<Case>,
}

/// The corpus directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Every case in manifest order.
pub fn cases() -> Vec<Case> {
    let path = dir().join("manifest.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let m: Manifest = toml::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid: {e}", path.display()));
    m.case
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// A valid batch for E1 padded to 10 MiB with an extra string field: the
/// payload is refused for its size alone.
pub fn ten_megabytes(now: DateTime<Utc>) -> Vec<u8> {
    let head = format!(
        "{{\"v\":1,\"agent\":\"gw-x\",\"boot\":1,\"seq\":900,\"sent_at\":\"{}\",\"zone\":\"test-zone\",\
         \"enterprise\":\"91410000MA1000001Y\",\"readings\":[],\"pad\":\"",
        now.to_rfc3339()
    );
    let total = 10 * 1024 * 1024;
    let mut p = head.into_bytes();
    p.resize(total - 2, b'x');
    p.extend_from_slice(b"\"}");
    p
}

/// 100,000 `[`: deeper than any JSON parser should follow.
pub fn deep_nesting() -> Vec<u8> {
    vec![b'['; 100_000]
}

/// The payload of `case` as sent at `now`.
pub fn payload(case: &Case, now: DateTime<Utc>) -> Vec<u8> {
    match (&case.file, case.generate.as_deref()) {
        (Some(f), None) => {
            let path = dir().join("cases").join(f);
            let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let ts = (now - chrono::Duration::minutes(1)).to_rfc3339();
            let p = replace(&raw, b"{{now}}", now.to_rfc3339().as_bytes());
            replace(&p, b"{{ts}}", ts.as_bytes())
        }
        (None, Some("ten_megabytes")) => ten_megabytes(now),
        (None, Some("deep_nesting")) => deep_nesting(),
        _ => panic!(
            "case {}: give exactly one of `file` and a known `generate`",
            case.name()
        ),
    }
}

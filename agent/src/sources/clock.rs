//! Clock sanity before a reading is queued: a timestamp far ahead of the
//! agent's clock, or before the enterprise existed, is refused here with a
//! counted reason instead of travelling upstream as good data.
//!
//! Gateways without a battery-backed clock boot at 1970 or 2000 until NTP
//! answers, and plant systems sometimes stamp in local time labelled UTC
//! (eight hours ahead); both would otherwise become real-looking history.
//! The rule itself is `zonesync_proto::check_ts` / `check_period`, the same
//! one the aggregator applies on receipt; this module only chooses the
//! bounds: the configured look-ahead, and per enterprise the establishment
//! date its profile declares, or the configured floor.

use crate::outbox::Item;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};
use zonesync_proto::{check_period, check_ts, EnterpriseId, Limits, Reading, Reason, CST};

/// `[clock_sanity]`: bounds on the timestamps the agent queues.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockSanityConfig {
    /// Readings stamped more than this far ahead of the agent's clock are refused, seconds.
    pub max_ahead_secs: u64,
    /// Earliest date (China time) a reading may carry when the enterprise's
    /// profile declares no `established` date.
    pub earliest: NaiveDate,
}

impl Default for ClockSanityConfig {
    fn default() -> Self {
        Self {
            max_ahead_secs: 300,
            earliest: NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default(),
        }
    }
}

/// Midnight China time at the start of `day`, in UTC.
pub fn cst_midnight(day: NaiveDate) -> DateTime<Utc> {
    CST.from_local_datetime(&day.and_time(chrono::NaiveTime::MIN))
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Why a reading was refused, with a stable label for the counts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClockRefusal {
    #[error("{0} (is the source's clock or time zone wrong?)")]
    Future(Reason),
    #[error("{reason}: before enterprise {enterprise} was established")]
    BeforeEstablished { enterprise: EnterpriseId, reason: Reason },
    #[error("{0} (the configured floor; did the gateway boot without a clock?)")]
    BeforeFloor(Reason),
}

impl ClockRefusal {
    /// Label for logs and counts.
    pub fn label(&self) -> &'static str {
        match self {
            ClockRefusal::Future(_) => "future",
            ClockRefusal::BeforeEstablished { .. } => "before_established",
            ClockRefusal::BeforeFloor(_) => "before_floor",
        }
    }
}

/// Counts of refused readings, by reason.
#[derive(Debug, Default)]
pub struct ClockStats {
    /// Stamped too far ahead.
    pub future: AtomicU64,
    /// Before the enterprise's establishment date.
    pub before_established: AtomicU64,
    /// Before the configured floor.
    pub before_floor: AtomicU64,
}

/// Establishment dates read from the profile file, re-read when it changes.
#[derive(Debug, Default)]
struct Established {
    dates: BTreeMap<EnterpriseId, DateTime<Utc>>,
    mtime: Option<SystemTime>,
    checked: Option<Instant>,
}

/// The agent's clock check, shared by its sources.
#[derive(Debug)]
pub struct ClockGuard {
    max_ahead: Duration,
    floor: DateTime<Utc>,
    profile: Option<PathBuf>,
    established: Mutex<Established>,
    /// What was refused.
    pub stats: ClockStats,
}

/// How often the profile file's modification time is looked at.
const PROFILE_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

impl ClockGuard {
    /// A guard with `config`'s bounds, taking establishment dates from the profile file at `profile`.
    pub fn new(config: &ClockSanityConfig, profile: Option<PathBuf>) -> Self {
        Self {
            max_ahead: Duration::seconds(i64::try_from(config.max_ahead_secs).unwrap_or(i64::MAX / 1000)),
            floor: cst_midnight(config.earliest),
            profile,
            established: Mutex::new(Established::default()),
            stats: ClockStats::default(),
        }
    }

    /// The validator's limits with this guard's look-ahead and floor, so the
    /// catalog check every source already makes applies them too.
    pub fn limits(&self, base: Limits) -> Limits {
        Limits {
            max_future_skew: self.max_ahead,
            earliest: self.floor,
            ..base
        }
    }

    /// Sets establishment dates directly (tests, and callers without a profile file).
    pub fn set_established(&self, dates: BTreeMap<EnterpriseId, DateTime<Utc>>) {
        if let Ok(mut e) = self.established.lock() {
            e.dates = dates;
            e.checked = Some(Instant::now());
        }
    }

    /// Re-reads the profile's establishment dates if the file changed.
    fn refresh(&self) {
        let Some(path) = &self.profile else { return };
        let Ok(mut e) = self.established.lock() else { return };
        if e.checked.is_some_and(|t| t.elapsed() < PROFILE_RECHECK) {
            return;
        }
        e.checked = Some(Instant::now());
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if mtime == e.mtime {
            return;
        }
        e.mtime = mtime;
        // The profile source reports a file it cannot parse; here it just
        // means no establishment dates until it is fixed.
        let file = super::profile::read_file(path, None)
            .map(|(f, _)| f)
            .unwrap_or_default();
        e.dates = file
            .enterprise
            .into_iter()
            .filter_map(|p| p.established.map(|d| (p.id, cst_midnight(d))))
            .collect();
    }

    /// Earliest acceptable time for `enterprise`, and whether it is its establishment date.
    fn earliest(&self, enterprise: &EnterpriseId) -> (DateTime<Utc>, bool) {
        self.refresh();
        let established = self
            .established
            .lock()
            .ok()
            .and_then(|e| e.dates.get(enterprise).copied())
            .filter(|d| *d > self.floor);
        match established {
            Some(d) => (d, true),
            None => (self.floor, false),
        }
    }

    /// Checks one item's time against the bounds for its enterprise (declarations carry none).
    pub fn check(&self, enterprise: &EnterpriseId, item: &Item, now: DateTime<Utc>) -> Result<(), ClockRefusal> {
        match item {
            Item::Reading(r) => self.check_reading(enterprise, r, now),
            Item::Declaration(_) => Ok(()),
        }
    }

    /// Checks one reading's time against the bounds for its enterprise.
    pub fn check_reading(
        &self,
        enterprise: &EnterpriseId,
        r: &Reading,
        now: DateTime<Utc>,
    ) -> Result<(), ClockRefusal> {
        let (earliest, established) = self.earliest(enterprise);
        let res = match (r.ts, r.period) {
            (Some(ts), _) => check_ts(ts, now, self.max_ahead, earliest),
            (None, Some(p)) => check_period(p, now, self.max_ahead, earliest),
            (None, None) => Ok(()),
        };
        res.map_err(|reason| match reason {
            Reason::TooOld { .. } if established => ClockRefusal::BeforeEstablished {
                enterprise: enterprise.clone(),
                reason,
            },
            Reason::TooOld { .. } => ClockRefusal::BeforeFloor(reason),
            other => ClockRefusal::Future(other),
        })
    }

    /// Checks one reading's time, counting and logging a refusal under its reason.
    pub fn check_counted(
        &self,
        source: &str,
        enterprise: &EnterpriseId,
        reading: &Reading,
        now: DateTime<Utc>,
    ) -> Result<(), ClockRefusal> {
        self.check_reading(enterprise, reading, now).inspect_err(|refusal| {
            let counter = match refusal {
                ClockRefusal::Future(_) => &self.stats.future,
                ClockRefusal::BeforeEstablished { .. } => &self.stats.before_established,
                ClockRefusal::BeforeFloor(_) => &self.stats.before_floor,
            };
            // Warn on the first of each kind, then every thousandth:
            // a gateway stuck at 1970 would otherwise fill the log.
            let n = counter.fetch_add(1, Ordering::Relaxed);
            if n % 1000 == 0 {
                tracing::warn!(source, enterprise = %enterprise, reason = refusal.label(), refused_so_far = n + 1,
                    "reading refused by the clock check: {refusal}");
            }
        })
    }

    /// Keeps the items whose time is sane; counts and logs the others.
    pub fn admit(
        &self,
        source: &str,
        items: Vec<(EnterpriseId, Item)>,
        now: DateTime<Utc>,
    ) -> Vec<(EnterpriseId, Item)> {
        items
            .into_iter()
            .filter(|(e, item)| match item {
                Item::Reading(r) => self.check_counted(source, e, r, now).is_ok(),
                Item::Declaration(_) => true,
            })
            .collect()
    }

    /// Refused counts as (label, count).
    pub fn counts(&self) -> [(&'static str, u64); 3] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("future", g(&self.stats.future)),
            ("before_established", g(&self.stats.before_established)),
            ("before_floor", g(&self.stats.before_floor)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonesync_proto::{Period, Reading};

    const E1: &str = "91350100M000100Y43";

    fn reading(ts: Option<DateTime<Utc>>, period: Option<Period>) -> Item {
        Item::Reading(Reading {
            indicator: "electricity".into(),
            point: "M1".into(),
            value: 1.0,
            unit: "kWh".into(),
            ts,
            period,
        })
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn future_established_and_floor_are_told_apart_and_counted() {
        let guard = ClockGuard::new(&ClockSanityConfig::default(), None);
        let e1 = EnterpriseId::parse(E1).unwrap();
        let e2 = EnterpriseId::parse("91419001MA0000001N").unwrap();
        guard.set_established(BTreeMap::from([(
            e1.clone(),
            cst_midnight(NaiveDate::from_ymd_opt(2015, 6, 1).unwrap()),
        )]));
        let now = at("2026-11-23T08:00:00Z");
        let items = vec![
            (e1.clone(), reading(Some(now), None)),
            (e1.clone(), reading(Some(at("2026-11-23T08:05:00Z")), None)), // exactly 5 min ahead: kept
            (e1.clone(), reading(Some(at("2026-11-23T08:05:01Z")), None)), // future
            (e1.clone(), reading(Some(at("2026-11-23T16:00:00Z")), None)), // China time labelled UTC
            (e1.clone(), reading(Some(at("2015-05-31T15:59:59Z")), None)), // 1 s before establishment (CST)
            (e1.clone(), reading(Some(at("2015-05-31T16:00:00Z")), None)), // the establishment instant: kept
            (e2.clone(), reading(Some(at("2015-05-31T15:59:59Z")), None)), // no date declared: only the floor
            (e2.clone(), reading(Some(at("1970-01-01T00:00:10Z")), None)), // a clockless boot
            (e1.clone(), reading(None, Some(Period::Month(2015, 5)))),     // a month before establishment
            (e1.clone(), reading(None, Some(Period::Month(2015, 6)))),
        ];
        let kept = guard.admit("test", items, now);
        assert_eq!(kept.len(), 5);
        assert_eq!(
            guard.counts(),
            [("future", 2), ("before_established", 2), ("before_floor", 1)]
        );
    }

    #[test]
    fn establishment_dates_come_from_the_profile_and_follow_its_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("profile.toml");
        std::fs::write(
            &p,
            format!("[[enterprise]]\nid = \"{E1}\"\nestablished = \"2020-01-01\"\n"),
        )
        .unwrap();
        let guard = ClockGuard::new(&ClockSanityConfig::default(), Some(p.clone()));
        let e1 = EnterpriseId::parse(E1).unwrap();
        let now = at("2026-11-23T08:00:00Z");
        let old = reading(Some(at("2019-06-01T00:00:00Z")), None);
        assert!(matches!(
            guard.check(&e1, &old, now),
            Err(ClockRefusal::BeforeEstablished { .. })
        ));
        // A date before the floor never lowers it.
        std::fs::write(
            &p,
            format!("[[enterprise]]\nid = \"{E1}\"\nestablished = \"1990-01-01\"\n"),
        )
        .unwrap();
        if let Ok(mut e) = guard.established.lock() {
            e.checked = None;
            e.mtime = None;
        }
        assert_eq!(guard.check(&e1, &old, now), Ok(()));
        let ancient = reading(Some(at("1995-01-01T00:00:00Z")), None);
        assert!(matches!(
            guard.check(&e1, &ancient, now),
            Err(ClockRefusal::BeforeFloor(_))
        ));
    }

    #[test]
    fn config_defaults_and_limits() {
        let c: ClockSanityConfig = toml::from_str("max_ahead_secs = 60\nearliest = \"2010-01-01\"\n").unwrap();
        let g = ClockGuard::new(&c, None);
        let l = g.limits(Limits::default());
        assert_eq!(l.max_future_skew, Duration::seconds(60));
        assert_eq!(l.earliest, at("2009-12-31T16:00:00Z"));
        assert_eq!(ClockSanityConfig::default().max_ahead_secs, 300);
        assert!(toml::from_str::<ClockSanityConfig>("ahead = 1\n").is_err());
    }
}

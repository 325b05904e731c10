//! The center's pure core: every zone's tallies, merged by version, with
//! what was refused and why. No I/O: the consumer feeds it messages, the
//! HTTP handlers read tables from it (`super::tables`).
//!
//! Per (zone, goal, span) the center keeps the tally of the message with the
//! highest key (the zone store's epoch, its version, then publication time).
//! A message of an epoch older than one already held comes from a store that
//! was since reset: it is refused, and the first message of a new epoch
//! replaces everything the older one had sent. A message only replaces
//! cells whose key it beats, so the end state is that of the highest key
//! whatever order messages come in, and a replay or duplicate changes
//! nothing: figures never move back and nothing counts twice.

use crate::federation::wire::{check_counts, CountError, ZoneTallies, SCHEMA};
use crate::goals::{GoalDef, GoalSettings, Span, Tally};
use crate::registry::Zone;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use zonesync_proto::ZoneId;

/// Which of two snapshots of a zone is newer: the zone store's epoch first
/// (a reset store counts its version from zero again), then its data
/// version; at one version (a zone restarted with another registry), the
/// later one. Fields in that order: the derived order is the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// The zone store's epoch.
    pub epoch: u64,
    /// The zone's data version in it.
    pub version: u64,
    /// When the message was made.
    pub published_at: DateTime<Utc>,
}

impl Key {
    /// The key of `msg`.
    pub fn of(msg: &ZoneTallies) -> Self {
        Self {
            epoch: msg.epoch,
            version: msg.version,
            published_at: msg.published_at,
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("message format {0}, this center reads {SCHEMA}")]
    Schema(u32),
    #[error("zone {0:?} is not in the center's registry")]
    UnknownZone(String),
    #[error("message for zone {zone} arrived on zone {subject}'s subject")]
    WrongSubject { subject: String, zone: ZoneId },
    #[error("zone {0}'s goal settings differ from the center's")]
    Settings(ZoneId),
    #[error("zone {zone}: goal {goal:?} is not in the center's catalog")]
    UnknownGoal { zone: ZoneId, goal: String },
    #[error("zone {zone}: {error}")]
    Count { zone: ZoneId, error: CountError },
    #[error("zone {zone}: version {version} sent twice with different tallies for goal {goal}")]
    Conflict { zone: ZoneId, version: u64, goal: String },
    #[error("zone {zone}: epoch {epoch} is older than the epoch {held} held (a store since reset)")]
    OldEpoch { zone: ZoneId, epoch: u64, held: u64 },
}

impl Refusal {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Schema(_) => "schema",
            Refusal::UnknownZone(_) => "unknown_zone",
            Refusal::WrongSubject { .. } => "wrong_subject",
            Refusal::Settings(_) => "settings",
            Refusal::UnknownGoal { .. } => "unknown_goal",
            Refusal::Count { .. } => "count",
            Refusal::Conflict { .. } => "conflict",
            Refusal::OldEpoch { .. } => "old_epoch",
        }
    }
}

/// When and how a message reached the center.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Delivered live at this time (the center's clock).
    Live(DateTime<Utc>),
    /// Read back from the stream by a rebuild at this time: says nothing of
    /// the link's delay, and the zone was heard when it published (if not later).
    Rebuild(DateTime<Utc>),
}

/// What offering a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was newer for this many cells.
    Applied(usize),
    /// Nothing in it was newer: a duplicate, a replay or an older snapshot.
    Unchanged,
    /// Refused, and counted.
    Refused(Refusal),
}

/// What the center holds of one zone.
#[derive(Debug, Default)]
pub struct Held {
    /// Highest key seen.
    pub key: Option<Key>,
    /// When the zone's data reached the highest version seen.
    pub data_at: Option<DateTime<Utc>>,
    /// When the zone was last heard from, by the center's clock (a zone's
    /// own clock, fast or slow, cannot keep it looking fresh).
    pub heard_at: Option<DateTime<Utc>>,
    /// Tallies by (goal index, span), each with the key of the message it came in.
    pub cells: HashMap<(usize, Span), (Key, Tally)>,
    /// Messages taken.
    pub accepted: u64,
    /// Messages that changed nothing.
    pub unchanged: u64,
    /// Messages refused (those naming this zone).
    pub refused: u64,
    /// Largest delay seen from the zone's data changing to the center holding it, milliseconds.
    pub max_lag_ms: i64,
    /// That delay for the newest version, milliseconds.
    pub lag_ms: i64,
}

/// Every zone's tallies, and the catalog and settings they are read with.
pub struct Merge {
    goals: Arc<[GoalDef]>,
    by_id: HashMap<String, usize>,
    settings: GoalSettings,
    settings_json: serde_json::Value,
    zones: BTreeMap<ZoneId, Zone>,
    held: HashMap<ZoneId, Held>,
    /// Refusals by reason.
    pub refused: BTreeMap<&'static str, u64>,
}

impl Merge {
    /// A center for the zones of `zones` (its registry), reading `goals` with `settings`.
    pub fn new(zones: impl IntoIterator<Item = Zone>, goals: Arc<[GoalDef]>, settings: GoalSettings) -> Self {
        Self {
            by_id: goals.iter().enumerate().map(|(i, g)| (g.id.clone(), i)).collect(),
            goals,
            settings_json: serde_json::to_value(&settings).unwrap_or_default(),
            settings,
            zones: zones.into_iter().map(|z| (z.id.clone(), z)).collect(),
            held: HashMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// The goal catalog.
    pub fn goals(&self) -> &[GoalDef] {
        &self.goals
    }

    /// The goal settings.
    pub fn settings(&self) -> &GoalSettings {
        &self.settings
    }

    /// The registry's zones.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.values()
    }

    /// What is held of `zone`.
    pub fn held(&self, zone: &ZoneId) -> Option<&Held> {
        self.held.get(zone)
    }

    /// Takes `msg`, which arrived on the subject of zone `subject` (None where
    /// the transport names no zone) as `arrival` says.
    pub fn offer(&mut self, subject: Option<&str>, msg: ZoneTallies, arrival: Arrival) -> Outcome {
        match self.check(subject, &msg) {
            Ok(cells) => self.apply(msg, cells, arrival),
            Err(r) => {
                *self.refused.entry(r.label()).or_default() += 1;
                if let Some(h) = self
                    .zones
                    .contains_key(&msg.zone)
                    .then(|| self.held.entry(msg.zone.clone()).or_default())
                {
                    h.refused += 1;
                }
                Outcome::Refused(r)
            }
        }
    }

    /// Everything about `msg` that can be refused, checked before anything
    /// is changed; its cells by (goal index, span) when it passes.
    fn check(&self, subject: Option<&str>, msg: &ZoneTallies) -> Result<Vec<(usize, Span)>, Refusal> {
        if msg.schema != SCHEMA {
            return Err(Refusal::Schema(msg.schema));
        }
        if let Some(s) = subject.filter(|s| *s != msg.zone.as_str()) {
            return Err(Refusal::WrongSubject {
                subject: s.chars().take(40).collect(),
                zone: msg.zone.clone(),
            });
        }
        if !self.zones.contains_key(&msg.zone) {
            return Err(Refusal::UnknownZone(msg.zone.to_string()));
        }
        if serde_json::to_value(&msg.settings).ok().as_ref() != Some(&self.settings_json) {
            return Err(Refusal::Settings(msg.zone.clone()));
        }
        let held = self.held.get(&msg.zone);
        let key = Key::of(msg);
        if let Some(k) = held.and_then(|h| h.key).filter(|k| k.epoch > key.epoch) {
            return Err(Refusal::OldEpoch {
                zone: msg.zone.clone(),
                epoch: key.epoch,
                held: k.epoch,
            });
        }
        let mut cells = Vec::with_capacity(msg.cells.len());
        for c in &msg.cells {
            let gi = *self.by_id.get(&c.goal).ok_or_else(|| Refusal::UnknownGoal {
                zone: msg.zone.clone(),
                goal: c.goal.chars().take(40).collect(),
            })?;
            check_counts(&c.tally).map_err(|error| Refusal::Count {
                zone: msg.zone.clone(),
                error,
            })?;
            if let Some((k, t)) = held.and_then(|h| h.cells.get(&(gi, c.span.0))) {
                if *k == key && *t != c.tally {
                    return Err(Refusal::Conflict {
                        zone: msg.zone.clone(),
                        version: msg.version,
                        goal: c.goal.clone(),
                    });
                }
            }
            cells.push((gi, c.span.0));
        }
        Ok(cells)
    }

    fn apply(&mut self, msg: ZoneTallies, cells: Vec<(usize, Span)>, arrival: Arrival) -> Outcome {
        let key = Key::of(&msg);
        let h = self.held.entry(msg.zone).or_default();
        if h.key.is_some_and(|k| k.epoch < key.epoch) {
            // A reset store: what the old one sent is gone with it.
            h.cells.clear();
        }
        let (heard, received) = match arrival {
            Arrival::Live(t) => (t, Some(t)),
            Arrival::Rebuild(t) => (msg.published_at.min(t), None),
        };
        h.heard_at = h.heard_at.max(Some(heard));
        let mut changed = 0;
        for (cell, c) in cells.into_iter().zip(msg.cells) {
            match h.cells.get_mut(&cell) {
                Some((k, _)) if *k >= key => {}
                // Republished unchanged (the zone saying it is alive): newer, same figure.
                Some((k, t)) if *t == c.tally => *k = key,
                _ => {
                    h.cells.insert(cell, (key, c.tally));
                    changed += 1;
                }
            }
        }
        if h.key.is_none_or(|k| k < key) {
            // A new version: its data time and the delay to here. The same
            // version again (a heartbeat, a zone restarted) keeps both.
            if h.key.is_none_or(|k| (k.epoch, k.version) < (key.epoch, key.version)) {
                if let Some(received) = received {
                    let lag = (received - msg.data_at).num_milliseconds().max(0);
                    h.lag_ms = lag;
                    h.max_lag_ms = h.max_lag_ms.max(lag);
                }
                h.data_at = Some(msg.data_at);
            }
            h.key = Some(key);
        }
        if changed == 0 {
            h.unchanged += 1;
            Outcome::Unchanged
        } else {
            h.accepted += 1;
            Outcome::Applied(changed)
        }
    }

    /// Counts a message that could not even be read (no zone to blame).
    pub fn refuse_unreadable(&mut self) {
        *self.refused.entry("unreadable").or_default() += 1;
    }

    /// Whether `zone` is in the center's registry.
    pub fn is_registered(&self, zone: &ZoneId) -> bool {
        self.zones.contains_key(zone)
    }

    /// Counts a message the transport refused before the merge saw it (a
    /// bad signature, say), against `zone` when it names a registered one.
    pub fn refuse_unopened(&mut self, label: &'static str, zone: Option<&ZoneId>) {
        *self.refused.entry(label).or_default() += 1;
        if let Some(z) = zone.filter(|z| self.zones.contains_key(*z)) {
            self.held.entry(z.clone()).or_default().refused += 1;
        }
    }

    /// `zone`'s tally of goal `gi` over `span`, if it sent one.
    pub fn cell(&self, zone: &ZoneId, gi: usize, span: Span) -> Option<&Tally> {
        self.held.get(zone)?.cells.get(&(gi, span)).map(|(_, t)| t)
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;

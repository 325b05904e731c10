//! A city's or the province's goal table made from the tallies the center
//! holds, with the zones behind it: which are fresh, which stale (and how
//! old their data is), which have sent nothing for the period asked, and
//! each zone's part of every figure.

use super::merge::Merge;
use crate::goals::{cells_read, merged_table, Asked, GoalRow, Level, Span, Tally};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use zonesync_proto::ZoneId;

/// How a zone stands behind a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Heard from within the staleness limit; its figures are in.
    Fresh,
    /// Not heard from within the limit: its last figures are in, with their age.
    Stale,
    /// Nothing (or not every tally) for this period: left out of every figure and named.
    Missing,
}

/// One zone behind a table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneStanding {
    /// Zone id.
    pub zone: ZoneId,
    /// Fresh, stale or missing.
    pub standing: Standing,
    /// Its data version held.
    pub version: Option<u64>,
    /// When its data reached that version.
    pub data_at: Option<DateTime<Utc>>,
    /// Age of that data, seconds.
    pub data_age_s: Option<i64>,
    /// Last heard from (its latest publication), and how long ago, seconds.
    pub heard_at: Option<DateTime<Utc>>,
    /// Seconds since then.
    pub heard_age_s: Option<i64>,
}

/// One zone's part of a row's figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    /// Zone id.
    pub zone: ZoneId,
    /// Its Σ numerator.
    pub numerator: f64,
    /// Its Σ denominator.
    pub denominator: f64,
    /// Its members.
    pub in_scope: usize,
    /// Its members with data.
    pub reported: usize,
    /// Its members whose data does not say.
    pub unknown: usize,
}

/// Zones behind a table, counted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Completeness {
    /// Zones of the level in the registry.
    pub expected: usize,
    /// Fresh.
    pub fresh: usize,
    /// Stale (in the figures with their last data).
    pub stale: usize,
    /// Missing (not in the figures).
    pub missing: usize,
    /// fresh ÷ expected.
    pub share_fresh: Option<f64>,
}

/// A table and the zones behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CenterTable {
    /// Rows, as a zone aggregator holding every zone's data makes them.
    pub rows: Vec<GoalRow>,
    /// Every zone of the level, with how it stands.
    pub zones: Vec<ZoneStanding>,
    /// Zones counted by standing.
    pub completeness: Completeness,
    /// Per goal id, each zone's part of its figure (over the row's own span).
    pub parts: BTreeMap<String, Vec<Part>>,
}

/// The table for `level` and `asked` at `now`; a zone not heard from for
/// `stale_after_s` seconds is stale. None when the level has no zone.
pub fn table(m: &Merge, level: &Level, asked: Asked, now: DateTime<Utc>, stale_after_s: i64) -> Option<CenterTable> {
    let zones: Vec<&crate::registry::Zone> = m
        .zones()
        .filter(|z| match level {
            Level::City(c) => &z.city == c,
            Level::Zone(id) => z.id.as_str() == id,
            Level::Province => true,
        })
        .collect();
    if zones.is_empty() {
        return None;
    }
    let needed = cells_read(m.goals(), asked, m.settings());
    let mut standings = Vec::with_capacity(zones.len());
    let mut complete = Vec::new();
    for z in &zones {
        let held = m.held(&z.id);
        let has_all = needed.iter().all(|&(gi, span)| m.cell(&z.id, gi, span).is_some());
        let heard = held.and_then(|h| h.heard_at);
        let standing = match (has_all, heard) {
            (false, _) | (_, None) => Standing::Missing,
            (true, Some(t)) if (now - t).num_seconds() > stale_after_s => Standing::Stale,
            _ => Standing::Fresh,
        };
        if standing != Standing::Missing {
            complete.push(*z);
        }
        let data_at = held.and_then(|h| h.data_at);
        standings.push(ZoneStanding {
            zone: z.id.clone(),
            standing,
            version: held.and_then(|h| h.key).map(|k| k.version),
            data_at,
            data_age_s: data_at.map(|t| (now - t).num_seconds()),
            heard_at: heard,
            heard_age_s: heard.map(|t| (now - t).num_seconds()),
        });
    }
    let count = |s: Standing| standings.iter().filter(|z| z.standing == s).count();
    let completeness = Completeness {
        expected: zones.len(),
        fresh: count(Standing::Fresh),
        stale: count(Standing::Stale),
        missing: count(Standing::Missing),
        share_fresh: Some(count(Standing::Fresh) as f64 / zones.len() as f64),
    };
    // Only zones holding every tally the table reads are in it, so no figure mixes a zone's periods.
    let mut read: Vec<(usize, Span)> = Vec::new();
    let mut lookup = |gi: usize, span: Span| -> Vec<Tally> {
        read.push((gi, span));
        complete
            .iter()
            .map(|z| m.cell(&z.id, gi, span).cloned().unwrap_or_default())
            .collect()
    };
    let applies = |g: &crate::goals::GoalDef| {
        complete
            .iter()
            .any(|z| z.goal_sets.is_empty() || z.goal_sets.contains(&g.set))
    };
    let rows = merged_table(m.goals(), &mut lookup, applies, level, asked, m.settings());
    let mut parts = BTreeMap::new();
    for row in &rows {
        let own = m
            .goals()
            .iter()
            .position(|g| g.id == row.id)
            .and_then(|gi| read.iter().find(|(i, _)| *i == gi).copied());
        let Some((gi, span)) = own else { continue };
        let list = complete
            .iter()
            .filter_map(|z| {
                let t = m.cell(&z.id, gi, span)?;
                Some(Part {
                    zone: z.id.clone(),
                    numerator: t.num.value(),
                    denominator: t.den.value(),
                    in_scope: t.in_scope,
                    reported: t.reported,
                    unknown: t.unknown,
                })
            })
            .collect();
        parts.insert(row.id.clone(), list);
    }
    Some(CenterTable {
        rows,
        zones: standings,
        completeness,
        parts,
    })
}

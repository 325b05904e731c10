//! The zone side: a zone's tallies for the spans its center serves, taken
//! from the tallies the zone keeps for its own tables.

use super::wire::{Cell, SpanKey, ZoneTallies, SCHEMA};
use crate::goals::incremental::Tallies;
use crate::goals::{cells_read, Asked, GoalDef, GoalSettings, Span};
use crate::state::State;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use zonesync_proto::ZoneId;

/// Every (goal index, span) the tables for `asks` read, each once.
pub fn cells_for(goals: &[GoalDef], asks: &[Asked], settings: &GoalSettings) -> Vec<(usize, Span)> {
    let mut all: Vec<(usize, Span)> = Vec::new();
    for a in asks {
        for c in cells_read(goals, *a, settings) {
            if !all.contains(&c) {
                all.push(c);
            }
        }
    }
    all
}

/// What a zone's snapshot is made from: its version now and its tallies of `cells`.
pub struct Taken {
    /// The zone's data version the tallies belong to.
    pub version: u64,
    /// Per cell of the request, the zone's tally.
    pub tallies: Vec<crate::goals::Tally>,
}

/// Reads `zone`'s version and its tallies of `cells` together, under the
/// state's read lock (which ingest's writes exclude), so the tallies are
/// those of exactly that version. None when the zone has no tallies here.
pub fn take(state: &State, tallies: &Tallies, zone: &ZoneId, cells: &[(usize, Span)]) -> Option<Taken> {
    let empty = BTreeMap::new();
    let zs = state.zones.get(zone);
    let mut ix = tallies.lock(zone)?;
    Some(Taken {
        version: zs.map_or(0, |z| z.version),
        tallies: ix.tallies_of(cells, zs.map_or(&empty, |z| &z.enterprises)),
    })
}

/// The message for what [`take`] read, from the zone store of `epoch`.
#[allow(clippy::too_many_arguments)]
pub fn message(
    zone: &ZoneId,
    epoch: u64,
    taken: Taken,
    goals: &[GoalDef],
    cells: &[(usize, Span)],
    settings: &GoalSettings,
    data_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ZoneTallies {
    ZoneTallies {
        schema: SCHEMA,
        zone: zone.clone(),
        epoch,
        version: taken.version,
        data_at,
        published_at: now,
        settings: settings.clone(),
        cells: cells
            .iter()
            .zip(taken.tallies)
            .filter_map(|(&(gi, span), tally)| {
                Some(Cell {
                    goal: goals.get(gi)?.id.clone(),
                    span: SpanKey(span),
                    tally,
                })
            })
            .collect(),
    }
}

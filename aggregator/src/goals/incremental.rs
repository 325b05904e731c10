//! Goal tallies kept up to date as readings and declarations arrive, so a
//! goal table is made from sums already at hand instead of a scan of every
//! enterprise of the zone.
//!
//! A zone keeps, per span (a month, quarter, year or year to date) and goal,
//! the [`Tally`] of its enterprises' contributions. When a batch is applied
//! to an enterprise, `State::apply` asks [`ZoneGoals::before`] for that
//! enterprise's contributions to the tallies the batch can change (the goals
//! reading a touched indicator or declared attribute, over spans whose reach
//! overlaps the months the batch changed: the span itself, its whole year for
//! energy — whose carriers are those used that year — and the base year's span
//! for a trend), applies the batch, and hands them back to
//! [`ZoneGoals::after`], which takes each old contribution out and puts the
//! new one in. The cost of a batch is therefore O(spans kept × goals touching
//! what it changed), independent of the zone's size, and sums are exact
//! ([`super::exact::ExactSum`]), so the tallies equal a fresh scan bit for bit
//! (checked by the randomised test below against [`super::evaluate`]).
//!
//! Tallies of a (span, goal) are built by one scan the first time a table
//! needs them (a trend of a ratio or total keeps its own, each contribution
//! reading both years over the months known in both; a trend of a coverage or
//! count needs its base goal's tallies over the base year's span) and kept for the
//! [`MAX_SPANS`] spans used most recently.

use super::contribute::{base_span, contribution, summed_base};
use super::eval::{table, Level, Tallies as TallySource};
use super::span::{Asked, Span};
use super::tally::{scan_zone, Contribution, Tally};
use super::{GoalDef, GoalKind, GoalRow, GoalSettings};
use crate::registry::{Registry, Zone};
use crate::state::{EnterpriseState, Follower, Touched, Window, ZoneState};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use zonesync_proto::{Catalog, EnterpriseId, Period, ZoneId};

/// Spans whose tallies a zone keeps; the least recently used beyond this are dropped
/// (and rebuilt by a scan if asked for again). A table needs at most a handful.
pub const MAX_SPANS: usize = 32;

/// One zone's tallies, and what it needs to keep them.
pub struct ZoneGoals {
    zone: Zone,
    /// Registered enterprises: only they contribute.
    registered: HashMap<EnterpriseId, usize>,
    goals: Arc<[GoalDef]>,
    catalog: Catalog,
    settings: GoalSettings,
    /// Goals whose contributions read each indicator (every counted energy carrier for `energy_tce`).
    by_indicator: HashMap<String, Vec<usize>>,
    /// Goals whose contributions read each declared attribute.
    by_attribute: HashMap<String, Vec<usize>>,
    /// Per goal: its contributions read energy (whose carriers are those used
    /// in the span's whole year), and, for a trend, that it reads its base year too.
    reach: Vec<Reach>,
    spans: HashMap<Span, Kept>,
    clock: u64,
    /// (span, goal) tallies built by a scan so far.
    pub scans: u64,
    /// Contributions replaced so far.
    pub updates: u64,
    /// Contributions captured by [`Follower::will_change`], for [`Follower::changed`].
    pending: Option<Pending>,
}

/// What a goal's contribution over a span reads beyond the span's own months.
#[derive(Debug, Clone, Copy, Default)]
struct Reach {
    /// Energy: the carriers are those used anywhere in the span's year.
    whole_years: bool,
    /// A trend made of contributions: the base year's span too.
    trend: bool,
}

/// The tallies of one span, by goal index (None until asked for; always None
/// for a trend of a coverage or count, which is made of its base goal's rows).
struct Kept {
    tallies: Vec<Option<Tally>>,
    last_used: u64,
}

impl std::fmt::Debug for ZoneGoals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneGoals")
            .field("zone", &self.zone.id)
            .field("spans", &self.spans.keys().collect::<Vec<_>>())
            .field("scans", &self.scans)
            .field("updates", &self.updates)
            .finish()
    }
}

/// One enterprise's contributions captured before a batch is applied to it.
pub struct Pending {
    member: usize,
    cells: Vec<(Span, usize, Contribution)>,
}

impl ZoneGoals {
    /// Empty tallies for `zone` (its registry entry) and every goal of `goals`.
    pub fn new(zone: &Zone, goals: Arc<[GoalDef]>, catalog: &Catalog, settings: &GoalSettings) -> Self {
        let mut by_indicator: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_attribute: HashMap<String, Vec<usize>> = HashMap::new();
        let energy: Vec<String> = catalog
            .iter()
            .filter(|i| i.is_energy() && !settings.intensity_excludes.contains(&i.code))
            .map(|i| i.code.clone())
            .collect();
        let mut reach = vec![Reach::default(); goals.len()];
        for (gi, goal) in goals.iter().enumerate() {
            // A trend of a ratio or total reads what its base goal reads; other trends nothing.
            let g = match goal.kind {
                GoalKind::Trend => match summed_base(&goals, goal) {
                    Some(b) => b,
                    None => continue,
                },
                _ => goal,
            };
            let read = [&g.numerator, &g.denominator, &g.indicator]
                .into_iter()
                .flatten()
                .chain(g.threshold.as_ref().map(|t| &t.indicator));
            reach[gi] = Reach {
                whole_years: read.clone().any(|c| c == "energy_tce"),
                trend: goal.kind == GoalKind::Trend,
            };
            for code in read {
                let codes = if code == "energy_tce" {
                    energy.clone()
                } else {
                    vec![code.clone()]
                };
                for c in codes {
                    by_indicator.entry(c).or_default().push(gi);
                }
            }
            let keys = g
                .population
                .declared_keys()
                .iter()
                .chain(g.condition.map_or(&[][..], |c| c.declared_keys()))
                .chain(g.filter.as_ref().map_or(&[][..], |f| f.declared_keys()))
                .chain(g.numerator_filter.as_ref().map_or(&[][..], |f| f.declared_keys()));
            for k in keys {
                by_attribute.entry((*k).to_owned()).or_default().push(gi);
            }
        }
        for list in by_indicator.values_mut().chain(by_attribute.values_mut()) {
            list.sort_unstable();
            list.dedup();
        }
        Self {
            registered: zone
                .enterprise
                .iter()
                .enumerate()
                .map(|(i, e)| (e.id.clone(), i))
                .collect(),
            zone: zone.clone(),
            goals,
            catalog: catalog.clone(),
            settings: settings.clone(),
            by_indicator,
            by_attribute,
            reach,
            spans: HashMap::new(),
            clock: 0,
            scans: 0,
            updates: 0,
            pending: None,
        }
    }

    /// Drops every tally; they are rebuilt by a scan when next asked for.
    pub fn reset(&mut self) {
        self.spans.clear();
    }

    /// Spans whose tallies are kept.
    pub fn spans(&self) -> usize {
        self.spans.len()
    }

    /// The zone's goal table for `period` (the goals of its `goal_sets`), from the tallies.
    pub fn table(
        &mut self,
        states: &BTreeMap<EnterpriseId, EnterpriseState>,
        level: &Level,
        asked: Asked,
    ) -> Vec<GoalRow> {
        self.clock += 1;
        let goals = self.goals.clone();
        let settings = self.settings.clone();
        let sets = self.zone.goal_sets.clone();
        let applies = |g: &GoalDef| sets.is_empty() || sets.contains(&g.set);
        let rows = table(
            &mut Source { ix: self, states },
            &goals,
            applies,
            level,
            asked,
            &settings,
        );
        self.evict();
        rows
    }

    /// The zone's tallies of `cells` (goal index, span), each built by a scan if
    /// not kept yet: what the zone sends a center (`crate::federation`).
    pub fn tallies_of(
        &mut self,
        cells: &[(usize, Span)],
        states: &BTreeMap<EnterpriseId, EnterpriseState>,
    ) -> Vec<Tally> {
        self.clock += 1;
        let out = cells
            .iter()
            .map(|&(gi, span)| match gi < self.goals.len() {
                true => self.tally(gi, span, states),
                false => Tally::default(),
            })
            .collect();
        self.evict();
        out
    }

    fn evict(&mut self) {
        while self.spans.len() > MAX_SPANS {
            let oldest = self.spans.iter().min_by_key(|(_, k)| k.last_used).map(|(s, _)| *s);
            match oldest {
                Some(s) => self.spans.remove(&s),
                None => break,
            };
        }
    }

    /// The tally of goal `gi` over `span`, built by a scan if not kept yet.
    fn tally(&mut self, gi: usize, span: Span, states: &BTreeMap<EnterpriseId, EnterpriseState>) -> Tally {
        let n = self.goals.len();
        let clock = self.clock;
        let kept = self.spans.entry(span).or_insert_with(|| Kept {
            tallies: vec![None; n],
            last_used: clock,
        });
        kept.last_used = clock;
        if let Some(t) = &kept.tallies[gi] {
            return t.clone();
        }
        let t = scan_zone(
            &self.goals,
            gi,
            &self.zone,
            Some(states),
            span,
            &self.catalog,
            &self.settings,
        );
        kept.tallies[gi] = Some(t.clone());
        self.scans += 1;
        t
    }

    fn contribution(&self, gi: usize, member: usize, es: &EnterpriseState, span: Span) -> Contribution {
        contribution(
            &self.goals,
            gi,
            &self.zone,
            &self.zone.enterprise[member],
            Some(es),
            span,
            &self.catalog,
            &self.settings,
        )
    }

    /// Whether a batch for enterprise `e` needs [`Self::before`] at all.
    pub fn watches(&self, e: &EnterpriseId) -> bool {
        !self.spans.is_empty() && self.registered.contains_key(e)
    }

    /// `e`'s current contributions to every kept tally that what `t` describes can change.
    pub fn before(&self, e: &EnterpriseId, es: &EnterpriseState, t: &Touched) -> Option<Pending> {
        let member = *self.registered.get(e)?;
        let mut cells = Vec::new();
        let mut hit: Vec<usize> = Vec::new();
        for (span, kept) in &self.spans {
            hit.clear();
            for a in &t.attributes {
                hit.extend(self.by_attribute.get(a).into_iter().flatten());
            }
            for (code, w) in &t.indicators {
                let goals = self.by_indicator.get(code).into_iter().flatten();
                hit.extend(goals.filter(|gi| self.reads(**gi, *span, w)));
            }
            hit.sort_unstable();
            hit.dedup();
            for &gi in &hit {
                if kept.tallies[gi].is_some() {
                    cells.push((*span, gi, self.contribution(gi, member, es, *span)));
                }
            }
        }
        Some(Pending { member, cells })
    }

    /// Whether goal `gi`'s contributions over `span` read anything in `w`: the
    /// span's months, its whole year for energy, and the base year's for a trend.
    fn reads(&self, gi: usize, span: Span, w: &Window) -> bool {
        let r = self.reach[gi];
        let within = |s: Span| {
            if r.whole_years {
                let y = Period::Year(s.year());
                w.overlaps(y.start(), y.end())
            } else {
                w.overlaps(s.start(), s.end())
            }
        };
        within(span) || (r.trend && within(base_span(&self.goals[gi], span)))
    }

    /// Replaces the contributions `p` captured with the enterprise's new ones.
    pub fn after(&mut self, p: Pending, es: &EnterpriseState) {
        for (span, gi, old) in p.cells {
            let new = self.contribution(gi, p.member, es, span);
            if new == old {
                continue;
            }
            if let Some(Some(t)) = self.spans.get_mut(&span).map(|k| &mut k.tallies[gi]) {
                t.sub(&old);
                t.add(&new);
                self.updates += 1;
            }
        }
    }
}

/// Tallies for `eval::table` from one zone's kept tallies.
struct Source<'a> {
    ix: &'a mut ZoneGoals,
    states: &'a BTreeMap<EnterpriseId, EnterpriseState>,
}

impl TallySource for Source<'_> {
    fn tallies(&mut self, gi: usize, span: Span) -> Vec<Tally> {
        vec![self.ix.tally(gi, span, self.states)]
    }
}

impl Follower for ZoneGoals {
    fn will_change(&mut self, e: &EnterpriseId, es: &EnterpriseState, t: &Touched) {
        self.pending = if self.watches(e) { self.before(e, es, t) } else { None };
    }

    fn changed(&mut self, _e: &EnterpriseId, es: &EnterpriseState) {
        if let Some(p) = self.pending.take() {
            self.after(p, es);
        }
    }
}

/// Every served zone's tallies, each behind its own lock so a goal query can
/// build a missing tally while holding only the state's read lock. Locked
/// after the state, never before.
#[derive(Debug, Default)]
pub struct Tallies {
    zones: HashMap<ZoneId, Mutex<ZoneGoals>>,
}

impl Tallies {
    /// Empty tallies over `goals` for every served zone.
    pub fn new(
        registry: &Registry,
        zones: &[ZoneId],
        goals: &[GoalDef],
        catalog: &Catalog,
        settings: &GoalSettings,
    ) -> Self {
        Self::for_zones(zones.iter().filter_map(|z| registry.zone(z)), goals, catalog, settings)
    }

    /// Empty tallies over `goals` for these zones (their registry entries).
    pub fn for_zones<'a>(
        zones: impl IntoIterator<Item = &'a Zone>,
        goals: &[GoalDef],
        catalog: &Catalog,
        settings: &GoalSettings,
    ) -> Self {
        let goals: Arc<[GoalDef]> = goals.into();
        Self {
            zones: zones
                .into_iter()
                .map(|z| {
                    (
                        z.id.clone(),
                        Mutex::new(ZoneGoals::new(z, goals.clone(), catalog, settings)),
                    )
                })
                .collect(),
        }
    }

    /// One zone's tallies, locked; tallies a panic may have left half changed are dropped first.
    pub fn lock(&self, zone: &ZoneId) -> Option<MutexGuard<'_, ZoneGoals>> {
        let m = self.zones.get(zone)?;
        Some(match m.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                g.reset();
                m.clear_poison();
                g
            }
        })
    }
}

/// The zone's goal table from its tallies; None when the zone has none.
///
/// Holds the zone's tally lock (not the state's write lock) while it works, so
/// other readers go on; a scan for a span not kept yet blocks writers for its
/// duration, once per span.
pub fn zone_table(tallies: &Tallies, zs: &ZoneState, zone: &ZoneId, asked: impl Into<Asked>) -> Option<Vec<GoalRow>> {
    let mut ix = tallies.lock(zone)?;
    let level = Level::Zone(ix.zone.id.to_string());
    Some(ix.table(&zs.enterprises, &level, asked.into()))
}

/// A table over several zones (a city's, or every zone served) from their
/// tallies, merged: the same rows as [`super::evaluate`] over those zones.
/// None when a zone has no tallies over exactly `goals` (then scan instead).
pub fn rollup_table(
    tallies: &Tallies,
    zones: &[(&Zone, &ZoneState)],
    goals: &[GoalDef],
    settings: &GoalSettings,
    level: &Level,
    asked: impl Into<Asked>,
) -> Option<Vec<GoalRow>> {
    let same = |z: &Zone| {
        tallies
            .lock(&z.id)
            .is_some_and(|ix| ix.goals.len() == goals.len() && ix.goals.iter().zip(goals).all(|(a, b)| a.id == b.id))
    };
    if zones.is_empty() || !zones.iter().all(|(z, _)| same(z)) {
        return None;
    }
    for (z, _) in zones {
        if let Some(mut ix) = tallies.lock(&z.id) {
            ix.clock += 1;
        }
    }
    let applies = |g: &GoalDef| {
        zones
            .iter()
            .any(|(z, _)| z.goal_sets.is_empty() || z.goal_sets.contains(&g.set))
    };
    let rows = table(
        &mut Zones { tallies, zones },
        goals,
        applies,
        level,
        asked.into(),
        settings,
    );
    for (z, _) in zones {
        if let Some(mut ix) = tallies.lock(&z.id) {
            ix.evict();
        }
    }
    Some(rows)
}

/// Tallies for `eval::table` from several zones' kept tallies, one zone locked at a time.
struct Zones<'a> {
    tallies: &'a Tallies,
    zones: &'a [(&'a Zone, &'a ZoneState)],
}

impl TallySource for Zones<'_> {
    fn tallies(&mut self, gi: usize, span: Span) -> Vec<Tally> {
        self.zones
            .iter()
            .map(|(z, zs)| {
                self.tallies
                    .lock(&z.id)
                    .map_or_else(Tally::default, |mut ix| ix.tally(gi, span, &zs.enterprises))
            })
            .collect()
    }
}

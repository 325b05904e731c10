//! Goal tables over zones whose tallies are held elsewhere than in this
//! process: what a city or province center (`crate::federation::center`)
//! computes from the tallies its zones sent, and what a zone aggregator
//! records to send them.
//!
//! Both sides go through [`super::eval`]'s own `table`, the function every
//! zone, city and province table of a single aggregator is made by, so a
//! center's rows equal, field by field, those of one process holding every
//! zone's data — provided each zone's tallies are those it would have used.

use super::eval::{table, Tallies};
use super::span::{Asked, Span};
use super::tally::Tally;
use super::{GoalDef, GoalRow, GoalSettings, Level};

/// The rows of every goal `applies` accepts at `level` for `asked`, made from
/// the per-zone tallies `lookup(goal index, span)` returns (one per zone
/// behind the figure; a zone-count goal counts them).
pub fn merged_table(
    goals: &[GoalDef],
    lookup: &mut dyn FnMut(usize, Span) -> Vec<Tally>,
    applies: impl Fn(&GoalDef) -> bool,
    level: &Level,
    asked: Asked,
    settings: &GoalSettings,
) -> Vec<GoalRow> {
    table(&mut Lookup(lookup), goals, applies, level, asked, settings)
}

struct Lookup<'a>(&'a mut dyn FnMut(usize, Span) -> Vec<Tally>);

impl Tallies for Lookup<'_> {
    fn tallies(&mut self, gi: usize, span: Span) -> Vec<Tally> {
        (self.0)(gi, span)
    }
}

/// Every (goal index, span) a table for `asked` over all `goals` reads, in
/// the order it reads them, without duplicates: what a zone must send so a
/// center can make that table. Found by making the table with empty tallies,
/// so it can never drift from what `table` reads.
pub fn cells_read(goals: &[GoalDef], asked: Asked, settings: &GoalSettings) -> Vec<(usize, Span)> {
    let mut read: Vec<(usize, Span)> = Vec::new();
    let mut note = |gi: usize, span: Span| {
        if !read.contains(&(gi, span)) {
            read.push((gi, span));
        }
        vec![Tally::default()]
    };
    merged_table(goals, &mut note, |_| true, &Level::Province, asked, settings);
    read
}

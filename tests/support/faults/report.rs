//! The figures a fault-injection run ends with, and how they print.

use super::plan::FaultKind;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The figures a run ends with.
#[derive(Debug, Clone, Default)]
pub struct FaultReport {
    /// Seed of the run.
    pub seed: u64,
    /// Faults asked for.
    pub rounds: u32,
    /// Faults injected, by kind.
    pub injected: BTreeMap<FaultKind, u32>,
    /// Kinds left out of the draw, with why.
    pub pending: Vec<(FaultKind, &'static str)>,
    /// Readings the simulators produced: meter readings plus value-added reports.
    pub produced: u64,
    /// Of which meter readings (each its own fact).
    pub produced_meter: u64,
    /// Meter readings in the aggregator's store.
    pub stored_meter: u64,
    /// Value-added reports that replaced an earlier report of their month
    /// (month-to-date figures: only each month's last one stays).
    pub superseded_reports: u64,
    /// Month figures (kWh and value added per enterprise and month) expected.
    pub month_figures: u64,
    /// Month figures the aggregator's API gives exactly.
    pub month_figures_exact: u64,
    /// Month figures above the ledger (something counted twice).
    pub month_figures_over: u64,
    /// Month value-added figures the API gives exactly.
    pub value_added_exact: u64,
    /// Readings the outbox policy dropped and reported upstream, as the
    /// aggregator shows them (`zonesync_aggregator_agent_dropped_readings`
    /// plus `…_dropped_sent_readings`).
    pub dropped_reported: u64,
    /// Of those, the ones dropped after being sent without an acknowledgement.
    pub dropped_sent_reported: u64,
    /// Of those, the ones the store holds all the same (they had arrived).
    pub dropped_sent_stored: u64,
    /// Of the meter readings missing from the store, those the agents'
    /// reported drops cover (a shortfall of the report counts as lost).
    pub dropped_meter: u64,
    /// Readings reported as dropped before sending that the store holds
    /// (plus ticks where one meter only is missing).
    pub drops_unattributed: u64,
    /// Month figures not checked: readings dropped across a month's start.
    pub month_figures_unchecked: u64,
    /// Outbox-full faults healed without seeing the budget overflow.
    pub overflow_waits_expired: u32,
    /// Batches the aggregator recognised as already stored, summed over its incarnations.
    pub duplicate_batches: u64,
    /// Readings the aggregator recognised as already stored under another batch.
    pub duplicate_readings: u64,
    /// Per enterprise: what the ledger says and what the store and API hold.
    pub lines: Vec<String>,
    /// Bytes of broker replies the proxies swallowed (PUBACKs among them).
    pub acks_swallowed_bytes: u64,
    /// Bytes of agent traffic the proxies swallowed.
    pub publishes_swallowed_bytes: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// The store census, when something does not add up.
    pub census: Option<String>,
}

impl FaultReport {
    /// Meter readings neither stored nor dropped-and-reported (attributed one
    /// for one), plus month figures short of the ledger.
    pub fn lost(&self) -> u64 {
        (self
            .produced_meter
            .saturating_sub(self.stored_meter + self.dropped_meter))
            + (self.month_figures - self.month_figures_exact - self.month_figures_over)
    }

    /// Meter readings stored beyond the ledger, plus month figures above it.
    pub fn counted_twice(&self) -> u64 {
        self.stored_meter.saturating_sub(self.produced_meter) + self.month_figures_over
    }

    /// Readings accounted for: stored meter readings, value-added reports
    /// standing as their month's figure, and those a later report replaced.
    pub fn stored(&self) -> u64 {
        self.stored_meter + self.value_added_exact + self.superseded_reports
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fault-injection run")?;
        writeln!(
            f,
            "  seed {} (replay: ZONESYNC_FAULT_SEED={} ZONESYNC_FAULT_ROUNDS={})",
            self.seed, self.seed, self.rounds
        )?;
        writeln!(
            f,
            "  rounds {}, wall time {:.1} s",
            self.rounds,
            self.elapsed.as_secs_f64()
        )?;
        for k in FaultKind::ALL {
            if let Some((_, why)) = self.pending.iter().find(|(p, _)| *p == k) {
                writeln!(f, "  faults {:<30} left out ({why})", k.name())?;
            } else {
                writeln!(
                    f,
                    "  faults {:<30} {}",
                    k.name(),
                    self.injected.get(&k).copied().unwrap_or(0)
                )?;
            }
        }
        writeln!(f, "  readings produced             {}", self.produced)?;
        writeln!(
            f,
            "  readings stored               {} ({} meter readings of {}; {} value-added reports, {} standing as month figures, {} replaced by a later month-to-date report)",
            self.stored(),
            self.stored_meter,
            self.produced_meter,
            self.produced - self.produced_meter,
            self.value_added_exact,
            self.superseded_reports
        )?;
        writeln!(
            f,
            "  month figures exact           {} of {}",
            self.month_figures_exact, self.month_figures
        )?;
        writeln!(
            f,
            "  dropped and reported          {} (aggregator's figures; {} meter readings among them; not matching the store: {})",
            self.dropped_reported, self.dropped_meter, self.drops_unattributed
        )?;
        writeln!(
            f,
            "    of which sent unacknowledged {} (may have arrived: {} of them are in the store)",
            self.dropped_sent_reported, self.dropped_sent_stored
        )?;
        if self.month_figures_unchecked > 0 || self.overflow_waits_expired > 0 {
            writeln!(
                f,
                "  month figures not checked     {}; outbox-full faults that saw no overflow {}",
                self.month_figures_unchecked, self.overflow_waits_expired
            )?;
        }
        writeln!(f, "  lost                          {}", self.lost())?;
        writeln!(f, "  counted twice                 {}", self.counted_twice())?;
        writeln!(f, "  duplicate batches suppressed  {}", self.duplicate_batches)?;
        writeln!(f, "  duplicate readings suppressed {}", self.duplicate_readings)?;
        writeln!(
            f,
            "  proxies swallowed {} B of agent traffic, {} B of broker replies",
            self.publishes_swallowed_bytes, self.acks_swallowed_bytes
        )?;
        for l in &self.lines {
            writeln!(f, "  {l}")?;
        }
        if let Some(c) = &self.census {
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

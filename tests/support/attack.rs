//! What the integrity tests (tests/integrity, tests/agent_integrity) share:
//! a broker and the hand-computed data set's aggregator config in a fresh
//! directory, an aggregator process that must come up, the data set's ids,
//! and the month whose value added the attacks restate.

use crate::dataset::{self, E, ZONE};
use crate::{try_spawn_aggregator, AggregatorStart, Api, Mosquitto, Proc};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zonesync_proto::{EnterpriseId, Period, Reading, ZoneId};

/// The month whose value added the tests restate.
pub const MONTH: Period = Period::Month(2026, 10);

/// The data set's zone.
pub fn zone() -> ZoneId {
    ZoneId::parse(ZONE).expect("zone id")
}

/// The data set's enterprise `i`.
pub fn enterprise(i: usize) -> EnterpriseId {
    EnterpriseId::parse(E[i]).expect("credit code")
}

/// October 2026's value added (month to date), in 10k yuan.
pub fn value_added(value: f64) -> Reading {
    Reading {
        indicator: "value_added".into(),
        point: String::new(),
        value,
        unit: "10k_yuan".into(),
        ts: None,
        period: Some(MONTH),
    }
}

/// The `/metrics` sample counting refusals for `label`.
pub fn rejected(label: &str) -> String {
    format!("zonesync_aggregator_rejected_total{{reason=\"{label}\"}}")
}

/// Starts an aggregator process on `config` that must come up.
pub fn start(config: &Path) -> (Proc, Api) {
    match try_spawn_aggregator(config, Duration::from_secs(30)) {
        AggregatorStart::Serving(p, api) => (p, api),
        AggregatorStart::Exited(status, stderr) => panic!("the aggregator ended at start ({status}):\n{stderr}"),
    }
}

/// The test's broker, registry and aggregator config, in a fresh directory.
pub struct Setup {
    /// The directory (removed when dropped).
    pub dir: tempfile::TempDir,
    /// Its Mosquitto.
    pub broker: Mosquitto,
    /// The aggregator's config.
    pub config: PathBuf,
}

/// A fresh [`Setup`].
pub fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let ds = dataset::write(dir.path(), broker.port, 1, 2);
    Setup {
        config: ds.aggregator,
        broker,
        dir,
    }
}

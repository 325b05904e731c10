//! Goal tables served from the zones' goal tallies.
//!
//! Every served zone keeps its goal tallies up to date as batches are applied
//! (`goals::incremental`), so a table is made from sums already at hand, not
//! by scanning the zone's enterprises: milliseconds for 25,000 of them, right
//! after a change as well (see docs/benchmarks.md, figure 5). The last table
//! per (zone, period) is kept with the zone's state version, so asking again
//! before anything changed costs nothing. The refresher builds the last
//! complete and the current month's tables of every zone in the background, which at start-up and at
//! each new month is the one scan per span that builds the tallies, so the
//! dashboard's first request does not pay for it.

use super::incremental::{zone_table, Tallies};
use super::{evaluate, Asked, GoalCatalog, GoalRow, GoalSettings, Level};
use crate::registry::Registry;
use crate::state::State;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use zonesync_proto::{Catalog, Period, ZoneId};
use zonesync_runtime::shutdown::Shutdown;

/// A cached table.
#[derive(Clone)]
pub struct Cached {
    /// The zone's state version it was computed from.
    pub version: u64,
    /// The rows.
    pub rows: Arc<Vec<GoalRow>>,
    /// When it was computed.
    pub computed_at: DateTime<Utc>,
    /// How long computing it took, milliseconds.
    pub took_ms: f64,
}

/// The cache.
#[derive(Default)]
pub struct GoalCache {
    tables: Mutex<HashMap<(ZoneId, Asked), Cached>>,
}

impl GoalCache {
    fn get(&self, zone: &ZoneId, asked: Asked) -> Option<Cached> {
        self.tables.lock().ok()?.get(&(zone.clone(), asked)).cloned()
    }

    fn put(&self, zone: &ZoneId, asked: Asked, c: Cached) {
        if let Ok(mut t) = self.tables.lock() {
            t.insert((zone.clone(), asked), c);
        }
    }
}

/// What reading goal tables takes: the read model, the tallies kept beside
/// it, the goal definitions and the cache — the handle of the refresher, the
/// summaries and every reader of a table, none of ingest's write side.
#[derive(Clone)]
pub struct Tables {
    /// Zones and enterprises.
    pub registry: Arc<Registry>,
    /// Zones served.
    pub zones: Arc<[ZoneId]>,
    /// Indicator catalog.
    pub catalog: Arc<Catalog>,
    /// Goal definitions.
    pub goals: Arc<GoalCatalog>,
    /// Goal thresholds.
    pub settings: Arc<GoalSettings>,
    /// The read model.
    pub state: Arc<RwLock<State>>,
    /// Each served zone's goal tallies.
    pub tallies: Arc<Tallies>,
    /// The last table per (zone, asked).
    pub cache: Arc<GoalCache>,
}

impl Tables {
    /// Makes a zone's table now (from its tallies) and caches it.
    pub fn compute(&self, zone: &ZoneId, asked: impl Into<Asked>) -> Option<Cached> {
        let asked = asked.into();
        let reg = self.registry.zone(zone)?;
        let started = std::time::Instant::now();
        let st = self.state.read().ok()?;
        let zs = st.zones.get(zone);
        let version = zs.map_or(0, |z| z.version);
        // A served zone always has tallies (`App::open` installs them); the scan is the fallback.
        let rows = zs
            .and_then(|zs| zone_table(&self.tallies, zs, zone, asked))
            .unwrap_or_else(|| {
                evaluate(
                    &self.goals.goal,
                    &[(reg, zs)],
                    Level::Zone(zone.to_string()),
                    asked,
                    &self.catalog,
                    &self.settings,
                )
            });
        drop(st);
        let c = Cached {
            version,
            rows: Arc::new(rows),
            computed_at: Utc::now(),
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        self.cache.put(zone, asked, c.clone());
        Some(c)
    }

    /// The table for `asked` (a period, and each goal's basis or a chosen span):
    /// the cached one while the zone's data is unchanged, else made afresh.
    pub fn table(&self, zone: &ZoneId, asked: impl Into<Asked>) -> Option<Cached> {
        let asked = asked.into();
        let version = self.version(zone)?;
        match self.cache.get(zone, asked) {
            Some(c) if c.version == version => Some(c),
            _ => self.compute(zone, asked),
        }
    }

    /// The zone's state version; `None` only when the state lock is poisoned.
    fn version(&self, zone: &ZoneId) -> Option<u64> {
        Some(self.state.read().ok()?.zones.get(zone).map_or(0, |z| z.version))
    }
}

/// Keeps every zone's last-complete-month and current-month tables made (and its tallies built) until shutdown.
pub async fn refresh(tables: Tables, refresh_ms: u64, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(refresh_ms.max(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        // The last complete month is what pages and reports open on; the
        // month running is what alerts and summaries read.
        let now = Utc::now();
        for period in [Period::last_complete_month(now), Period::month_of(now)] {
            for z in tables.zones.iter() {
                let Some(version) = tables.version(z) else { return };
                let stale = tables
                    .cache
                    .get(z, Asked::basis(period))
                    .is_none_or(|c| c.version != version);
                if stale {
                    // Building a span's tallies is a scan: keep it off the async workers.
                    let tables = tables.clone();
                    let z = z.clone();
                    let _ = tokio::task::spawn_blocking(move || tables.compute(&z, period)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::config::AggregatorConfig;
    use crate::testkit::{amount, id};

    #[test]
    fn a_past_period_is_recomputed_only_when_the_zone_changed() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("registry.toml");
        std::fs::write(
            &reg,
            format!(
                "[[zone]]\nid = \"z\"\nname_zh = \"z\"\n[[zone.enterprise]]\nid = \"{}\"\nabove_scale = true\n",
                id(1)
            ),
        )
        .unwrap();
        let cfg: AggregatorConfig = toml::from_str(&format!(
            "data_dir = \"{}\"\nregistry = \"{}\"\n",
            dir.path().join("data").display(),
            reg.display()
        ))
        .unwrap();
        let app = App::open(&cfg).unwrap();
        let z = ZoneId::parse("z").unwrap();
        let p = Period::Month(2026, 10);
        let tables = app.tables();
        let first = tables.table(&z, p).unwrap();
        let again = tables.table(&z, p).unwrap();
        assert!(Arc::ptr_eq(&first.rows, &again.rows), "served from the cache");
        app.state
            .write()
            .unwrap()
            .apply(&z, &id(1), &[amount("value_added", "2026-10", 10.0)], &[], &app.catalog);
        let after = tables.table(&z, p).unwrap();
        assert!(!Arc::ptr_eq(&first.rows, &after.rows), "recomputed after a change");
        assert!(after.version > first.version);
    }
}

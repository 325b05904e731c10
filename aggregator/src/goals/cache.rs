//! Goal tables served from the zones' goal tallies.
//!
//! Every served zone keeps its goal tallies up to date as batches are applied
//! (`goals::incremental`), so a table is made from sums already at hand, not
//! by scanning the zone's enterprises: milliseconds for 25,000 of them, right
//! after a change as well (see docs/benchmarks.md, figure 5). The last table
//! per (zone, period) is kept with the zone's state version, so asking again
//! before anything changed costs nothing. The refresher builds the current
//! month's table of every zone in the background, which at start-up and at
//! each new month is the one scan per span that builds the tallies, so the
//! dashboard's first request does not pay for it.

use super::incremental::zone_table;
use super::{evaluate, Asked, GoalRow, Level};
use crate::app::App;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use zonesync_proto::{Period, ZoneId};
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

/// Makes a zone's table now (from its tallies) and caches it.
pub fn compute(app: &App, zone: &ZoneId, asked: impl Into<Asked>) -> Option<Cached> {
    let asked = asked.into();
    let reg = app.registry.zone(zone)?;
    let started = std::time::Instant::now();
    let st = app.state.read().ok()?;
    let zs = st.zones.get(zone);
    let version = zs.map_or(0, |z| z.version);
    // A served zone always has tallies (`App::open` installs them); the scan is the fallback.
    let rows = zs
        .and_then(|zs| zone_table(&app.tallies, zs, zone, asked))
        .unwrap_or_else(|| {
            evaluate(
                &app.goals.goal,
                &[(reg, zs)],
                Level::Zone(zone.to_string()),
                asked,
                &app.catalog,
                &app.settings,
            )
        });
    drop(st);
    let c = Cached {
        version,
        rows: Arc::new(rows),
        computed_at: Utc::now(),
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    app.goal_cache.put(zone, asked, c.clone());
    Some(c)
}

/// The table for `asked` (a period, and each goal's basis or a chosen span):
/// the cached one while the zone's data is unchanged, else made afresh.
pub fn table(app: &App, zone: &ZoneId, asked: impl Into<Asked>) -> Option<Cached> {
    let asked = asked.into();
    let version = app.state.read().ok()?.zones.get(zone).map_or(0, |z| z.version);
    match app.goal_cache.get(zone, asked) {
        Some(c) if c.version == version => Some(c),
        _ => compute(app, zone, asked),
    }
}

/// Keeps every zone's current-month table made (and its tallies built) until shutdown.
pub async fn refresh(app: Arc<App>, refresh_ms: u64, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(refresh_ms.max(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let period = Period::month_of(Utc::now());
        for z in &app.zones {
            let version = match app.state.read() {
                Ok(st) => st.zones.get(z).map_or(0, |zs| zs.version),
                Err(_) => return,
            };
            let stale = app
                .goal_cache
                .get(z, Asked::basis(period))
                .is_none_or(|c| c.version != version);
            if stale {
                // Building a span's tallies is a scan: keep it off the async workers.
                let app = app.clone();
                let z = z.clone();
                let _ = tokio::task::spawn_blocking(move || compute(&app, &z, period)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let first = table(&app, &z, p).unwrap();
        let again = table(&app, &z, p).unwrap();
        assert!(Arc::ptr_eq(&first.rows, &again.rows), "served from the cache");
        app.state
            .write()
            .unwrap()
            .apply(&z, &id(1), &[amount("value_added", "2026-10", 10.0)], &[], &app.catalog);
        let after = table(&app, &z, p).unwrap();
        assert!(!Arc::ptr_eq(&first.rows, &after.rows), "recomputed after a change");
        assert!(after.version > first.version);
    }
}

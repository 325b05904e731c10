//! The alert engine task: evaluates the rules on a schedule, keeps each
//! alert's lifecycle in the store, and queues every transition for each sink.

use super::lifecycle::{self, step, Phase, Transition, Tuning};
use super::rules::{observe, observe_batch_identity, BATCH_IDENTITY};
use super::store::AlertStore;
use super::{AlertRecord, AlertSettings, Event};
use crate::goals::GoalSettings;
use crate::metrics::Metrics;
use crate::outbound::queue::DeliveryQueue;
use crate::outbound::Delivery;
use crate::registry::Registry;
use crate::state::State;
use crate::store::{Store, StoreError};
use chrono::{Duration, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use zonesync_proto::{Catalog, Period, ZoneId};
use zonesync_runtime::shutdown::Shutdown;

/// Why an acknowledgement was refused.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("no alert {0}")]
    Unknown(String),
    #[error("alert {0} is not active")]
    NotActive(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the alert engine takes: the read model to observe, the alert states
/// and history it keeps, the queue its transitions go out through.
#[derive(Clone)]
pub struct Alerts {
    /// Zones and enterprises.
    pub registry: Arc<Registry>,
    /// Zones served.
    pub zones: Arc<[ZoneId]>,
    /// Indicator catalog.
    pub catalog: Arc<Catalog>,
    /// Goal thresholds (the energy trajectory the rules compare with).
    pub settings: Arc<GoalSettings>,
    /// The read model.
    pub state: Arc<RwLock<State>>,
    /// Alert states and history.
    pub alerts: AlertStore,
    /// Where transitions are queued for the sinks.
    pub deliveries: Arc<DeliveryQueue>,
    /// Flushed after each pass, so what was queued is durable.
    pub store: Arc<Store>,
    /// Raised and cleared counts.
    pub metrics: Arc<Metrics>,
}

fn key(o: &super::Observation) -> String {
    format!(
        "{}|{}|{}",
        o.rule,
        o.subject.zone,
        o.subject.enterprise.as_deref().unwrap_or("*")
    )
}

/// One evaluation pass over every zone served; returns the events it raised.
pub fn evaluate_once(app: &Alerts, cfg: &AlertSettings, now: chrono::DateTime<Utc>) -> Result<Vec<Event>, StoreError> {
    let tuning = Tuning {
        min_duration: Duration::milliseconds((cfg.min_duration_secs * 1000.0) as i64),
        hysteresis: cfg.hysteresis,
    };
    let month = Period::month_of(now);
    let last_month = Period::month_of(month.start() - Duration::seconds(1));
    // The current month where it has data, else last month's figure.
    let mut obs = BTreeMap::new();
    {
        let st = app
            .state
            .read()
            .map_err(|_| StoreError::Corrupt("state lock poisoned".into()))?;
        for z in app.zones.iter().filter_map(|z| app.registry.zone(z)) {
            for m in [last_month, month] {
                for o in observe(z, st.zones.get(&z.id), m, &app.catalog, &app.settings, &cfg.rules) {
                    obs.insert(key(&o), o);
                }
            }
            for o in observe_batch_identity(z, st.zones.get(&z.id), now) {
                obs.insert(key(&o), o);
            }
        }
    }
    let mut events = Vec::new();
    for (k, o) in obs {
        let mut rec = app.alerts.get(&k)?.unwrap_or_else(|| AlertRecord {
            key: k.clone(),
            rule: o.rule.clone(),
            subject: o.subject.clone(),
            phase: Phase::Clear,
            value: o.value,
            limit: o.limit,
            period: o.period.clone(),
            detail: o.detail.clone(),
            updated_at: now,
        });
        let before = rec.phase.clone();
        // A batch refused for its numbering is raised at once.
        let tuning = if o.rule == BATCH_IDENTITY {
            Tuning {
                min_duration: Duration::zero(),
                ..tuning
            }
        } else {
            tuning
        };
        let t = step(&mut rec.phase, o.value, o.limit, now, tuning);
        let changed = before != rec.phase || rec.value != o.value;
        rec.value = o.value;
        rec.limit = o.limit;
        rec.period = o.period.clone();
        rec.detail = o.detail.clone();
        rec.updated_at = now;
        if changed {
            app.alerts.put(&rec)?;
        }
        if let Some(transition) = t {
            let mut e = Event {
                id: 0,
                key: k.clone(),
                transition,
                obs: o,
                at: now,
            };
            e.id = app.alerts.push_history(&e)?;
            for sink in &cfg.sinks {
                app.deliveries.enqueue(Delivery::new(
                    sink.destination(&e.obs.subject.zone),
                    sink.body(&e),
                    "alert",
                ))?;
            }
            match transition {
                Transition::Raised => app.metrics.alerts_raised.fetch_add(1, Ordering::Relaxed),
                Transition::Cleared => app.metrics.alerts_cleared.fetch_add(1, Ordering::Relaxed),
            };
            tracing::info!(alert = %e.key, transition = ?e.transition, value = e.obs.value, limit = e.obs.limit, "alert");
            events.push(e);
        }
    }
    app.store.flush()?;
    Ok(events)
}

/// Runs the engine until shutdown.
pub async fn run(app: Alerts, cfg: AlertSettings, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(cfg.evaluate_every_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = evaluate_once(&app, &cfg, Utc::now()) {
            tracing::error!("alert evaluation failed: {e}");
        }
    }
}

/// Acknowledges an active alert.
pub fn acknowledge(app: &Alerts, key: &str, by: &str) -> Result<AlertRecord, AckError> {
    let mut rec = app.alerts.get(key)?.ok_or_else(|| AckError::Unknown(key.to_owned()))?;
    if !lifecycle::acknowledge(&mut rec.phase, by, Utc::now()) {
        return Err(AckError::NotActive(key.to_owned()));
    }
    app.alerts.put(&rec)?;
    app.store.flush()?;
    Ok(rec)
}

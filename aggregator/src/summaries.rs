//! Each zone's goal table, published on a schedule: retained on
//! `zonesync/v1/{zone}/summary` (so a dashboard or the city's system sees the
//! latest table the moment it subscribes) and, if configured, POSTed to the
//! digital-transformation center's endpoint. Both go through the durable
//! outbound queue; a newer summary replaces one still waiting there.

use crate::goals::cache::Tables;
use crate::outbound::queue::DeliveryQueue;
use crate::outbound::{Delivery, Destination};
use crate::store::{Store, StoreError};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use zonesync_proto::{Period, Topic};
use zonesync_runtime::shutdown::Shutdown;

/// Summary settings (`[summaries]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummarySettings {
    /// How often, seconds; 0 turns summaries off.
    pub every_secs: f64,
    /// Publish retained on MQTT.
    pub mqtt: bool,
    /// Also POST each zone's table here.
    pub http_url: Option<String>,
}

impl Default for SummarySettings {
    fn default() -> Self {
        Self {
            every_secs: 300.0,
            mqtt: true,
            http_url: None,
        }
    }
}

/// What the summaries task takes: the goal tables it publishes and the
/// queue they go out through.
#[derive(Clone)]
pub struct Summaries {
    /// The zones' goal tables.
    pub tables: Tables,
    /// Where summaries are queued.
    pub deliveries: Arc<DeliveryQueue>,
    /// Flushed after each pass, so what was queued is durable.
    pub store: Arc<Store>,
}

/// Queues the current summary of every zone served.
pub fn queue_all(app: &Summaries, s: &SummarySettings) -> Result<usize, StoreError> {
    let now = Utc::now();
    let period = Period::month_of(now);
    let mut n = 0;
    let t = &app.tables;
    for z in t.zones.iter().filter_map(|z| t.registry.zone(z)) {
        // The zone's table as the API serves it, made from its kept tallies (goals::cache).
        let rows = t
            .table(&z.id, period)
            .ok_or_else(|| StoreError::Corrupt("state lock poisoned".into()))?
            .rows;
        let body = json!({
            "zone": z.id, "name_zh": z.name_zh, "name_en": z.name_en, "city": z.city, "province": z.province,
            "period": period, "span": crate::goals::SpanChoice::Basis, "computed_at": now, "settings": &*t.settings,
            "goals": &*rows,
        });
        let mut targets = Vec::new();
        if s.mqtt {
            targets.push(Destination::Mqtt {
                topic: Topic::summary(&z.id),
                retain: true,
            });
        }
        if let Some(url) = &s.http_url {
            targets.push(Destination::Http { url: url.clone() });
        }
        for to in targets {
            app.deliveries.drop_queued("summary", &to)?;
            app.deliveries.enqueue(Delivery::new(to, body.clone(), "summary"))?;
            n += 1;
        }
    }
    app.store.flush()?;
    Ok(n)
}

/// Queues summaries on schedule until shutdown.
pub async fn run(app: Summaries, s: SummarySettings, mut shutdown: Shutdown) {
    if s.every_secs <= 0.0 || (!s.mqtt && s.http_url.is_none()) {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs_f64(s.every_secs.max(0.05)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = queue_all(&app, &s) {
            tracing::error!("summaries not queued: {e}");
        }
    }
}

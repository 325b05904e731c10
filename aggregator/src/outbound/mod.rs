//! Everything the aggregator sends out — alert transitions, zone summaries —
//! goes through one durable queue (sled, in the store) and leaves it only
//! when the receiver has taken it: a 2xx HTTP answer, or the broker's PUBACK.
//! Failures are retried with exponential backoff, so nothing is lost while a
//! receiver or the broker is down.

pub mod publisher;
pub mod queue;

use crate::store::StoreError;
use chrono::{DateTime, Duration, Utc};
use publisher::Publisher;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zonesync_runtime::shutdown::Shutdown;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Destination {
    /// POST as JSON.
    Http {
        /// Receiver URL.
        url: String,
    },
    /// Publish at QoS 1.
    Mqtt {
        /// Topic.
        topic: String,
        /// Retained.
        retain: bool,
    },
}

/// A queued message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// Queue id (orders deliveries).
    pub id: u64,
    /// Where to.
    pub to: Destination,
    /// JSON body.
    pub body: serde_json::Value,
    /// What it is, for logs and metrics (`alert`, `summary`).
    pub what: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before.
    pub next_attempt_at: DateTime<Utc>,
    /// Last failure.
    pub last_error: Option<String>,
}

impl Delivery {
    /// A new delivery, due now.
    pub fn new(to: Destination, body: serde_json::Value, what: &str) -> Self {
        Self {
            id: 0,
            to,
            body,
            what: what.to_owned(),
            attempts: 0,
            next_attempt_at: Utc::now(),
            last_error: None,
        }
    }
}

/// Retry timing.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// First delay, milliseconds; doubles per attempt.
    pub base_ms: u64,
    /// Longest delay, milliseconds.
    pub max_ms: u64,
}

async fn attempt(d: &Delivery, http: &reqwest::Client, mqtt: &Publisher) -> Result<(), String> {
    match &d.to {
        Destination::Http { url } => {
            let r = http
                .post(url)
                .json(&d.body)
                .timeout(std::time::Duration::from_secs(5))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", r.status()))
            }
        }
        Destination::Mqtt { topic, retain } => {
            let payload = serde_json::to_vec(&d.body).unwrap_or_default();
            if mqtt
                .publish(topic.clone(), payload, *retain, std::time::Duration::from_secs(5))
                .await
            {
                Ok(())
            } else {
                Err("no PUBACK from the broker".into())
            }
        }
    }
}

/// What the delivery task uses, and nothing more: the queue, the store
/// whose flush makes the queue durable, and the counters.
#[derive(Clone)]
pub struct Outbound {
    /// The queue.
    pub queue: Arc<queue::DeliveryQueue>,
    /// The store (one flush covers the queue's tree).
    pub store: Arc<crate::store::Store>,
    /// Counters.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Tries every due delivery once.
pub async fn deliver_due(
    o: &Outbound,
    http: &reqwest::Client,
    mqtt: &Publisher,
    retry: Retry,
) -> Result<(), StoreError> {
    let now = Utc::now();
    for mut d in o.queue.due(now, 64)? {
        match attempt(&d, http, mqtt).await {
            Ok(()) => {
                o.queue.remove(d.id)?;
                o.metrics.deliveries.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                d.attempts += 1;
                let delay = retry
                    .base_ms
                    .saturating_mul(1u64 << d.attempts.min(20))
                    .min(retry.max_ms.max(retry.base_ms));
                d.next_attempt_at = now + Duration::milliseconds(delay as i64);
                tracing::warn!(what = %d.what, to = ?d.to, attempts = d.attempts, "delivery failed: {e}");
                d.last_error = Some(e);
                o.metrics.delivery_failures.fetch_add(1, Ordering::Relaxed);
                o.queue.update(&d)?;
            }
        }
    }
    o.store.flush()
}

/// Drains the queue until shutdown.
pub async fn run(o: Outbound, mqtt: Publisher, retry: Retry, mut shutdown: Shutdown) {
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(retry.base_ms.clamp(10, 1000)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = deliver_due(&o, &http, &mqtt, retry).await {
            tracing::error!("outbound queue: {e}");
        }
    }
}

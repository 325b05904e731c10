//! Feeding the center from the hub stream: first a rebuild, reading every
//! message the stream holds (the center keeps nothing on disk: the stream is
//! its store), then the center's durable consumer, each message acknowledged
//! once the merge has taken or refused it.
//!
//! A message the rebuild already read may come again from the durable
//! consumer; the merge takes it as a duplicate, so nothing counts twice.

use super::merge::{Arrival, Merge, Outcome};
use crate::federation::config::CenterNats;
use crate::federation::nats::{connect, context, ensure_stream, hub_stream, NatsError};
use crate::federation::wire::{ZoneTallies, SUBJECT_PREFIX};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, stream::Stream};
use chrono::Utc;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zonesync_runtime::shutdown::Shutdown;

/// The consumer's counts (`/metrics`, `/api/v1/center/status`).
#[derive(Debug, Default)]
pub struct ConsumeStats {
    /// Messages read from the hub stream (rebuild and durable consumer).
    pub consumed: AtomicU64,
    /// Of those, read by the rebuild.
    pub rebuilt: AtomicU64,
    /// How long the rebuild took, milliseconds.
    pub rebuild_ms: AtomicU64,
    /// The rebuild is over: tables are as complete as the stream.
    pub ready: AtomicBool,
    /// Messages that changed a figure.
    pub applied: AtomicU64,
    /// Messages that changed nothing (duplicates, replays, older snapshots, heartbeats).
    pub unchanged: AtomicU64,
    /// Messages refused (undecodable ones included).
    pub refused: AtomicU64,
}

/// Offers one message from the stream to the merge.
pub fn take(merge: &Mutex<Merge>, stats: &ConsumeStats, subject: &str, payload: &[u8], live: bool) {
    stats.consumed.fetch_add(1, Ordering::Relaxed);
    let zone = subject.strip_prefix(SUBJECT_PREFIX).unwrap_or(subject);
    let Ok(mut m) = merge.lock() else { return };
    let outcome = match serde_json::from_slice::<ZoneTallies>(payload) {
        Ok(msg) => {
            let now = Utc::now();
            m.offer(
                Some(zone),
                msg,
                if live {
                    Arrival::Live(now)
                } else {
                    Arrival::Rebuild(now)
                },
            )
        }
        Err(e) => {
            tracing::warn!(subject, error = %e, "tally message not readable; refused");
            m.refuse_unreadable();
            stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    count(stats, subject, &outcome);
}

/// Counts what the merge made of a message (either transport).
pub fn count(stats: &ConsumeStats, subject: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Applied(_) => stats.applied.fetch_add(1, Ordering::Relaxed),
        Outcome::Unchanged => stats.unchanged.fetch_add(1, Ordering::Relaxed),
        Outcome::Refused(why) => {
            tracing::warn!(subject, reason = why.label(), error = %why, "tally message refused");
            stats.refused.fetch_add(1, Ordering::Relaxed)
        }
    };
}

/// Sleeps `d`; false when shutdown came first.
async fn pause(d: Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.wait() => false,
    }
}

/// Connects, (optionally) makes the hub stream, rebuilds, then consumes until shutdown.
pub async fn run(cfg: CenterNats, merge: Arc<Mutex<Merge>>, stats: Arc<ConsumeStats>, mut shutdown: Shutdown) {
    let mut backoff = Duration::from_millis(200);
    let js = loop {
        let attempt = async {
            let client = connect(&cfg.connect, "zonesync-center").await?;
            let js = context(client, cfg.domain.as_deref());
            if cfg.create_stream {
                ensure_stream(&js, hub_stream(&cfg)).await?;
            }
            Ok::<_, NatsError>(js)
        };
        let r = tokio::select! {
            r = attempt => r,
            _ = shutdown.wait() => return,
        };
        match r {
            Ok(js) => break js,
            Err(e) => {
                tracing::warn!(error = %e, "hub not ready; retrying");
                if !pause(backoff, &mut shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let mut inner = shutdown.clone();
    loop {
        let r = tokio::select! {
            r = consume(&js, &cfg, &merge, &stats, &mut inner) => r,
            _ = shutdown.wait() => return,
        };
        match r {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading the hub stream failed; resuming");
                if !pause(Duration::from_secs(1), &mut shutdown).await {
                    return;
                }
            }
        }
    }
}

async fn consume(
    js: &jetstream::Context,
    cfg: &CenterNats,
    merge: &Mutex<Merge>,
    stats: &ConsumeStats,
    shutdown: &mut Shutdown,
) -> Result<(), async_nats::Error> {
    let stream = js.get_stream(&cfg.stream).await?;
    if !stats.ready.load(Ordering::Relaxed) {
        rebuild(&stream, merge, stats).await?;
    }
    let durable = stream
        .get_or_create_consumer(
            &cfg.durable,
            pull::Config {
                durable_name: Some(cfg.durable.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = durable.messages().await?;
    loop {
        let next = tokio::select! {
            n = messages.next() => n,
            _ = shutdown.wait() => return Ok(()),
        };
        let Some(msg) = next else {
            return Err("the durable consumer's message stream ended".into());
        };
        let msg = msg?;
        take(merge, stats, msg.subject.as_str(), &msg.payload, true);
        msg.ack().await?;
    }
}

/// Reads every message the stream holds now, in order, into the merge.
async fn rebuild(stream: &Stream, merge: &Mutex<Merge>, stats: &ConsumeStats) -> Result<(), async_nats::Error> {
    let started = Instant::now();
    let info = stream.get_info().await?;
    if info.state.messages > 0 {
        let ordered = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let mut messages = ordered.messages().await?;
        while let Some(msg) = messages.next().await {
            let msg = msg?;
            take(merge, stats, msg.subject.as_str(), &msg.payload, false);
            stats.rebuilt.fetch_add(1, Ordering::Relaxed);
            let done = msg
                .info()
                .map(|i| i.pending == 0 || i.stream_sequence >= info.state.last_sequence)?;
            if done {
                break;
            }
        }
    }
    stats
        .rebuild_ms
        .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    stats.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        messages = stats.rebuilt.load(Ordering::Relaxed),
        took_ms = started.elapsed().as_millis() as u64,
        "center rebuilt from the hub stream"
    );
    Ok(())
}

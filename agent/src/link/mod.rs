//! The MQTT link to one upstream: publishes sealed batches at QoS 1 and
//! records each as acknowledged by this upstream only when the aggregator's
//! confirmation names it (`end_to_end_confirm`, the default; see
//! [`confirm`]) — or, with it off, when the broker's PUBACK arrives. The
//! outbox deletes a batch once every upstream has acknowledged it; the agent
//! runs one link per upstream. Under MQTT 5 (the default, [`client`]) a
//! PUBACK may refuse the publish (0x87: the broker's ACL denied it): the
//! batch is then kept, counted ([`stats`]) and published again later.
//!
//! rumqttc's `publish()` returns when a request is queued, not when it is
//! acknowledged, and gives no packet id; it keeps its session only in memory
//! and clears it on a clean reconnect. So the outbox is the only truth here:
//! - requests go in with `try_publish` from the one task that polls the event
//!   loop (an awaited `publish` there could deadlock on a full channel);
//! - `Outgoing::Publish(pkid)` events come in request order, which pairs each
//!   packet id with the sequence number we sent;
//! - on any connection error the client and event loop are dropped whole and
//!   a new session resends every batch this upstream has not acknowledged,
//!   from its cursor, in order. Duplicates that causes are removed by the
//!   aggregator's (agent, outbox, seq) de-duplication.

pub mod client;
pub mod confirm;
mod confirmed;
pub mod stats;

use crate::config::{MqttConfig, OutboxConfig};
use crate::outbox::{Outbox, OutboxError};
use crate::shutdown::Shutdown;
use chrono::Utc;
use client::{Client, Denial, Events, LinkError, LinkEvent, Tuning};
use confirm::{ClockEstimator, Marks};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zonesync_proto::{AgentId, EnterpriseId, Presence, PresenceStatus, Topic, ZoneId, WIRE_VERSION};
use zonesync_runtime::mqtt::{Backoff, ConnectSettings};

pub use stats::LinkStats;

/// Why a session ends when rumqttc's request queue is full or closed.
const QUEUE_CLOSED: &str = "the MQTT client's request queue is closed";

/// Largest MQTT packet the agent sends or accepts, bytes.
const MAX_PACKET: usize = 4 * 1024 * 1024;

/// Most sequence numbers one confirmation may name (a forged `[0, u64::MAX]`
/// range would otherwise keep the link busy for ever); far above what one
/// aggregator flush handles.
pub(crate) const MAX_CONFIRMED_SEQS: usize = 65_536;

/// How long clock-offset measurements are kept; the tightest of them is reported.
const CLOCK_WINDOW: Duration = Duration::from_secs(600);

/// A new presence is published when the measured offset moves by more than this, ms.
const CLOCK_REANNOUNCE_MS: i64 = 1000;

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
    Refused(String),
}

/// Everything the link needs.
pub struct Link {
    /// Agent id and MQTT client id.
    pub agent: AgentId,
    /// Zone.
    pub zone: ZoneId,
    /// This run's boot counter.
    pub boot: u64,
    /// Enterprises reported for, announced in the birth message.
    pub enterprises: Vec<EnterpriseId>,
    /// Broker settings of this upstream.
    pub mqtt: MqttConfig,
    /// This upstream's index in the outbox (`Outbox::upstream_index`).
    pub upstream: usize,
    /// Batching settings.
    pub batching: OutboxConfig,
    /// The outbox.
    pub outbox: Arc<Outbox>,
    /// Counters.
    pub stats: Arc<LinkStats>,
}

/// One session's bookkeeping of what is on the wire.
#[derive(Default)]
pub(crate) struct Wire {
    /// Sequence numbers awaiting their packet id (None: a presence message), in request order.
    awaiting_pkid: VecDeque<Option<u64>>,
    /// Then by packet id, until the PUBACK.
    by_pkid: HashMap<u16, Option<u64>>,
    /// A fresh presence is due before anything is sent again (a refusal
    /// judged against the last one's `next_seq`).
    reannounce: bool,
    /// Items carried by each batch awaiting its PUBACK, by sequence number.
    items_of: HashMap<u64, usize>,
    /// Their sum: what `max_in_flight_items` bounds.
    items: usize,
}

impl Wire {
    fn in_flight(&self) -> usize {
        self.awaiting_pkid.len() + self.by_pkid.len()
    }

    /// Batch `seq`, carrying `items`, was handed to the client.
    fn sent(&mut self, seq: u64, items: usize) {
        self.awaiting_pkid.push_back(Some(seq));
        if let Some(before) = self.items_of.insert(seq, items) {
            self.items = self.items.saturating_sub(before);
        }
        self.items += items;
    }

    /// Batch `seq`'s PUBACK arrived (accepting or refusing it): its items
    /// are off the wire.
    fn released(&mut self, seq: u64) {
        if let Some(n) = self.items_of.remove(&seq) {
            self.items = self.items.saturating_sub(n);
        }
    }

    /// How many more batches may go out now, at most `batches`: the items
    /// bound `max_items` counts each as `batch_items` (none is larger, so
    /// it is passed by less than one batch), and one may always go when
    /// nothing is on the wire, so a drain never stalls on a large batch.
    fn room(&self, batches: usize, max_items: usize, batch_items: usize) -> usize {
        let left = max_items.saturating_sub(self.items).div_ceil(batch_items.max(1));
        let floor = usize::from(self.in_flight() == 0);
        batches.min(left.max(floor))
    }
}

/// Windows' worth sealed in one durable write when a backlog is waiting:
/// sealed batches wait on disk, not in memory, so sealing ahead costs no
/// RAM, and it cuts the syncs per reading by this factor. Three syncs per
/// window-sized seal (mark, store, published mark) were what bounded a
/// drain (docs/profiles.md, figure 3, issue 17). A live agent seals far
/// less than a window at a time, so this changes nothing for it.
const SEAL_AHEAD_WINDOWS: usize = 4;

/// Seals the next windows' worth of pending items when a batch is due (a
/// full batch waiting, or the oldest item older than `max_batch_age_ms`);
/// whether it sealed. Every link (MQTT or platform) calls it when it has
/// nothing sealed left to send, so whichever upstream is up keeps the
/// outbox sealing; sealing is atomic in the outbox, so two links doing it
/// at once only make two smaller windows.
///
/// Whole windows' worth ([`SEAL_AHEAD_WINDOWS`]) in one seal, whatever
/// room is free now: one flush (and one mark raised) per seal, not one per
/// batch. Sealing only the
/// free room made a drain seal one batch per returning PUBACK — two fsyncs
/// per 500 readings, which bounded the recovery of a backlog
/// (docs/profiles.md, figures 3 and 7). Bounded in items too: 8,000
/// readings sealed and on the wire at once cost a draining agent ~17 MiB
/// more than 2,000 (docs/profiles.md, figure 4b); each piece of a seal is
/// one window, so its payloads in memory are too.
pub(crate) fn seal_if_due(
    outbox: &Outbox,
    batching: &OutboxConfig,
    last_seal: &mut Instant,
    agent: &AgentId,
    zone: &ZoneId,
    boot: u64,
) -> Result<bool, OutboxError> {
    let pending = outbox.pending_items();
    let max_age = Duration::from_millis(batching.max_batch_age_ms);
    let due = pending >= batching.max_batch_items || (pending > 0 && last_seal.elapsed() >= max_age);
    if !due {
        return Ok(false);
    }
    let batch_items = batching.max_batch_items.max(1);
    let window = batching.max_in_flight.max(1);
    outbox.seal_ahead(
        batch_items,
        window
            .saturating_mul(batch_items)
            .min(batching.max_in_flight_items.max(1)),
        SEAL_AHEAD_WINDOWS,
        agent,
        zone,
        boot,
        Utc::now(),
    )?;
    *last_seal = Instant::now();
    Ok(true)
}

impl Link {
    fn name(&self) -> String {
        self.outbox
            .upstream_names()
            .get(self.upstream)
            .cloned()
            .unwrap_or_default()
    }

    fn presence(&self, status: PresenceStatus) -> Vec<u8> {
        let (dropped, dropped_sent) = self.outbox.dropped_for(self.upstream);
        Presence {
            v: WIRE_VERSION,
            agent: self.agent.clone(),
            zone: self.zone.clone(),
            status,
            boot: self.boot,
            at: Utc::now(),
            outbox: self.outbox.identity(),
            next_seq: self.outbox.next_seq(),
            dropped_readings: dropped,
            dropped_sent_readings: dropped_sent,
            clock_offset_ms: self.stats.clock_offset().map(|c| c.offset_ms),
            broker_denied_batches: self.stats.broker_denied_batches.load(Ordering::Relaxed),
            version: env!("CARGO_PKG_VERSION").into(),
            enterprises: self.enterprises.clone(),
        }
        .to_payload()
    }

    /// The shared connection settings (TLS, credentials, keep-alive floor,
    /// packet limits: `zonesync_runtime::mqtt`, as ingest and the outbound
    /// publisher use), then what is the link's own: a clean session, its
    /// in-flight window and its last will, in the configured MQTT version.
    fn connect(&self) -> Result<(Client, Events), crate::tls::TlsError> {
        let credentials = match (&self.mqtt.username, &self.mqtt.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        let settings = ConnectSettings {
            client_id: self.agent.to_string(),
            host: self.mqtt.host.clone(),
            port: self.mqtt.port,
            credentials,
            tls: self.mqtt.tls.clone(),
            keep_alive: Duration::from_secs(self.mqtt.keep_alive_secs),
            max_incoming_bytes: MAX_PACKET,
            max_outgoing_bytes: MAX_PACKET,
        };
        let tuning = Tuning {
            inflight: (self.batching.max_in_flight + 4).min(u16::MAX as usize) as u16,
            channel: self.batching.max_in_flight + 16,
            will: (
                Topic::state(&self.zone, &self.agent),
                self.presence(PresenceStatus::Offline),
            ),
        };
        client::open(&settings, self.mqtt.protocol, tuning)
    }

    /// Keeps a session up until shutdown, reconnecting with exponential backoff.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), OutboxError> {
        let min = Duration::from_millis(self.mqtt.reconnect_min_ms.max(10));
        let max = Duration::from_millis(self.mqtt.reconnect_max_ms.max(self.mqtt.reconnect_min_ms));
        let upstream = self.name();
        let mut backoff = Backoff::new(min, max);
        let mut clock = ClockEstimator::new(CLOCK_WINDOW);
        loop {
            let started = Instant::now();
            let end = self.session(&mut shutdown, &mut clock).await;
            // Nothing is on the wire any more: the next session resends it all.
            self.outbox.set_on_wire_below(self.upstream, 0);
            self.stats.awaiting_confirm.store(0, Ordering::Relaxed);
            let end = end?;
            self.stats.connected.store(false, Ordering::SeqCst);
            match end {
                SessionEnd::Shutdown => return Ok(()),
                SessionEnd::Lost(e) => tracing::warn!(agent = %self.agent, %upstream, "broker connection lost: {e}"),
                SessionEnd::Refused(why) => {
                    tracing::error!(agent = %self.agent, %upstream, "broker refused the connection: {why}")
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff.reset();
            }
            tracing::info!(agent = %self.agent, %upstream, delay_ms = backoff.delay().as_millis() as u64, "reconnecting");
            if !backoff.wait(&mut shutdown).await {
                return Ok(());
            }
        }
    }

    async fn session(&self, shutdown: &mut Shutdown, clock: &mut ClockEstimator) -> Result<SessionEnd, OutboxError> {
        let (client, mut events) = match self.connect() {
            Ok(c) => c,
            Err(e) => return Ok(SessionEnd::Refused(format!("TLS settings: {e}"))),
        };
        let upstream = self.name();
        // Connect first, so nothing is queued for a broker that refuses us.
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(SessionEnd::Shutdown),
                ev = events.poll() => match ev {
                    Ok(LinkEvent::Connected) => break,
                    Ok(_) => {}
                    Err(LinkError::Refused(why)) => return Ok(SessionEnd::Refused(why)),
                    Err(LinkError::Lost(why)) => return Ok(SessionEnd::Lost(why)),
                }
            }
        }
        self.stats.connected.store(true, Ordering::SeqCst);
        self.stats.sessions.fetch_add(1, Ordering::SeqCst);
        tracing::info!(agent = %self.agent, %upstream, boot = self.boot, next_seq = self.outbox.next_seq(),
            protocol = self.mqtt.protocol.as_str(), "connected to broker");

        let confirm_mode = self.mqtt.end_to_end_confirm;
        let confirm_topic = Topic::confirm(&self.zone, &self.agent);
        // Subscribed before anything is published: the broker handles a
        // connection's packets in order, so no confirmation can be missed.
        if confirm_mode && !client.subscribe(&confirm_topic) {
            return Ok(SessionEnd::Lost(QUEUE_CLOSED.into()));
        }
        let mut marks = Marks::new(
            Duration::from_secs(self.batching.confirm_timeout_secs.max(1)),
            Duration::from_secs(self.batching.confirm_timeout_max_secs),
        );
        let mut wire = Wire::default();
        let mut announced_id = self.outbox.identity();
        self.announce(&client, PresenceStatus::Online, &mut wire);
        // A fresh birth message whenever the disk budget drops readings (so
        // the zone learns of the loss while the session lasts), the broker
        // denies a batch, or the measured clock offset moves.
        let mut announced = self.announced();
        let mut next_pos = 0u64;
        let mut last_seal = Instant::now();
        let max_age = Duration::from_millis(self.batching.max_batch_age_ms);
        let window = self.batching.max_in_flight.max(1);
        let batch_items = self.batching.max_batch_items.max(1);
        let window_items = self.batching.max_in_flight_items.max(1);
        let confirm_window = if confirm_mode {
            self.batching.confirm_window.max(1)
        } else {
            usize::MAX
        };
        let mut tick = tokio::time::interval(max_age.clamp(Duration::from_millis(10), Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A fresh identity (this link's confirmation, another link's, or
            // none): announce it, then send every held batch again under it.
            let id = self.outbox.identity();
            if id != announced_id || wire.reannounce {
                if id != announced_id {
                    tracing::info!(agent = %self.agent, %upstream, outbox = id.as_ref().map(|i| i.as_str()),
                        next_seq = self.outbox.next_seq(), "announcing the outbox's new identity");
                    if confirm_mode {
                        marks = Marks::new(
                            Duration::from_secs(self.batching.confirm_timeout_secs.max(1)),
                            Duration::from_secs(self.batching.confirm_timeout_max_secs),
                        );
                        next_pos = 0;
                    }
                    announced_id = id;
                }
                wire.reannounce = false;
                self.announce(&client, PresenceStatus::Online, &mut wire);
            }
            // Unconfirmed batches past their deadline, and batches the
            // broker denied, go out again, re-read from the outbox.
            for seq in marks.due(Instant::now()) {
                if wire.in_flight() >= window {
                    break;
                }
                let batch = match self.outbox.sealed_one(seq)? {
                    Some(b) if self.outbox.put_on_wire(self.upstream, seq)? => b,
                    // Acknowledged meanwhile, or no longer held.
                    _ => {
                        marks.remove(seq);
                        continue;
                    }
                };
                if !client.publish(&batch.topic, false, batch.payload) {
                    return Ok(SessionEnd::Lost(QUEUE_CLOSED.into()));
                }
                wire.sent(seq, batch.items);
                marks.sent(seq, Instant::now(), Utc::now().timestamp_millis());
                self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                self.stats.resends.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(agent = %self.agent, %upstream, seq, "unconfirmed batch sent again");
            }
            // Fill the window with sealed batches, sealing more when due.
            while wire.in_flight() < window && marks.len() < confirm_window {
                let room = wire.room(
                    (window - wire.in_flight()).min(confirm_window - marks.len()),
                    window_items,
                    batch_items,
                );
                if room == 0 {
                    break;
                }
                let ready = self.outbox.sealed_for(self.upstream, next_pos, room)?;
                if ready.is_empty() {
                    if seal_if_due(
                        &self.outbox,
                        &self.batching,
                        &mut last_seal,
                        &self.agent,
                        &self.zone,
                        self.boot,
                    )? {
                        continue;
                    }
                    break;
                }
                for b in ready {
                    next_pos = b.seq + 1;
                    // The disk budget may have dropped it since it was read.
                    if !self.outbox.put_on_wire(self.upstream, b.seq)? {
                        continue;
                    }
                    if !client.publish(&b.topic, false, b.payload) {
                        return Ok(SessionEnd::Lost(QUEUE_CLOSED.into()));
                    }
                    wire.sent(b.seq, b.items);
                    if confirm_mode {
                        marks.sent(b.seq, Instant::now(), Utc::now().timestamp_millis());
                    }
                    self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            if confirm_mode {
                self.stats.awaiting_confirm.store(marks.len() as u64, Ordering::Relaxed);
            }
            let now = self.announced();
            let clock_moved = match (now.1, announced.1) {
                (Some(a), Some(b)) => (a.offset_ms - b.offset_ms).abs() > CLOCK_REANNOUNCE_MS,
                (a, b) => a.is_some() != b.is_some(),
            };
            if now.0 != announced.0 || now.2 != announced.2 || clock_moved {
                announced = now;
                self.announce(&client, PresenceStatus::Online, &mut wire);
            }
            tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    self.goodbye(&client, &mut events, &mut wire, &mut marks, clock).await?;
                    return Ok(SessionEnd::Shutdown);
                }
                ev = events.poll() => match ev {
                    Ok(ev) => self.on_event(ev, &mut wire, &mut marks, clock)?,
                    Err(LinkError::Refused(why) | LinkError::Lost(why)) => return Ok(SessionEnd::Lost(why)),
                },
                _ = tick.tick() => {}
            }
        }
    }

    /// What the last presence was published for: drops, clock offset, broker denials.
    fn announced(&self) -> ((u64, u64), Option<confirm::ClockOffset>, u64) {
        (
            self.outbox.dropped_for(self.upstream),
            self.stats.clock_offset(),
            self.stats.broker_denied_batches.load(Ordering::Relaxed),
        )
    }

    fn on_event(
        &self,
        ev: LinkEvent,
        wire: &mut Wire,
        marks: &mut Marks,
        clock: &mut ClockEstimator,
    ) -> Result<(), OutboxError> {
        match ev {
            LinkEvent::Sent(pkid) => {
                if let Some(seq) = wire.awaiting_pkid.pop_front() {
                    wire.by_pkid.insert(pkid, seq);
                }
            }
            LinkEvent::Acked { pkid, denied } => {
                let entry = wire.by_pkid.remove(&pkid);
                // Accepted or refused, confirmed or not: off the wire.
                if let Some(Some(seq)) = entry {
                    wire.released(seq);
                }
                match (entry, denied) {
                    (Some(seq), Some(d)) => self.on_denied(seq, d, marks)?,
                    // In confirm mode a PUBACK only frees the MQTT window: the
                    // broker may still lose the batch.
                    (Some(Some(seq)), None) if !self.mqtt.end_to_end_confirm => {
                        marks.remove(seq);
                        if let Some(items) = self.outbox.ack(self.upstream, seq)? {
                            self.stats.acked(items);
                        }
                        tracing::debug!(agent = %self.agent, seq, "batch acknowledged");
                    }
                    _ => {}
                }
            }
            LinkEvent::Message(payload) if self.mqtt.end_to_end_confirm => {
                self.on_confirm(&payload, wire, marks, clock)?;
            }
            LinkEvent::SubscribeRefused => {
                tracing::error!(agent = %self.agent, upstream = %self.name(),
                    "the broker refused the subscription to the confirm topic: no batch will ever be confirmed (check its ACL)");
            }
            _ => {}
        }
        Ok(())
    }

    /// The broker refused a publish (MQTT 5 PUBACK reason code): counted,
    /// logged with the topic, reported in status and the next presence. A
    /// batch stays in the outbox and is published again once its mark is
    /// due — the wait doubling per attempt, so a denial that lasts costs a
    /// publish every `confirm_timeout_max_secs`, and one fixed in the ACL
    /// lets the batch through without a restart.
    fn on_denied(&self, seq: Option<u64>, d: Denial, marks: &mut Marks) -> Result<(), OutboxError> {
        let upstream = self.name();
        let Some(seq) = seq else {
            let topic = Topic::state(&self.zone, &self.agent);
            tracing::error!(agent = %self.agent, %upstream, %topic, code = d.code, "the broker refused the presence message: {d}");
            self.stats.broker_denied(false, format!("{topic}: {d}"));
            return Ok(());
        };
        let topic = self.outbox.sealed_one(seq)?.map(|b| b.topic).unwrap_or_default();
        tracing::error!(agent = %self.agent, %upstream, seq, %topic, code = d.code,
            "the broker refused a batch: kept in the outbox, published again later: {d}");
        self.stats.broker_denied(true, format!("{topic}: {d}"));
        if !marks.contains(seq) {
            marks.sent(seq, Instant::now(), Utc::now().timestamp_millis());
        }
        Ok(())
    }

    /// Publishes the retained presence; its PUBACK is awaited like a batch's.
    fn announce(&self, client: &Client, status: PresenceStatus, wire: &mut Wire) {
        let topic = Topic::state(&self.zone, &self.agent);
        if client.publish(&topic, true, self.presence(status)) {
            wire.awaiting_pkid.push_back(None);
        }
    }

    /// Waits briefly for outstanding PUBACKs, leaves a clean "offline"
    /// presence and disconnects. Whatever this upstream has not acknowledged
    /// stays in the outbox.
    async fn goodbye(
        &self,
        client: &Client,
        events: &mut Events,
        wire: &mut Wire,
        marks: &mut Marks,
        clock: &mut ClockEstimator,
    ) -> Result<(), OutboxError> {
        self.announce(client, PresenceStatus::Offline, wire);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while wire.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, events.poll()).await {
                Ok(Ok(ev)) => self.on_event(ev, wire, marks, clock)?,
                _ => break,
            }
        }
        client.disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
        self.outbox.flush()?;
        tracing::info!(agent = %self.agent, upstream = %self.name(), unacked = wire.by_pkid.len(),
            unconfirmed = marks.len(), "disconnected cleanly");
        Ok(())
    }
}

#[cfg(test)]
mod tests;

//! The MQTT link: publishes sealed batches at QoS 1 and deletes each from the
//! outbox only when its PUBACK arrives.
//!
//! rumqttc's `publish()` returns when a request is queued, not when it is
//! acknowledged, and gives no packet id; it keeps its session only in memory
//! and clears it on a clean reconnect. So the outbox is the only truth here:
//! - requests go in with `try_publish` from the one task that polls the event
//!   loop (an awaited `publish` there could deadlock on a full channel);
//! - `Outgoing::Publish(pkid)` events come in request order, which pairs each
//!   packet id with the sequence number we sent;
//! - on any connection error the client and event loop are dropped whole and
//!   a new session resends every unacknowledged batch from the outbox, in
//!   order. Duplicates that causes are removed by the aggregator's
//!   (agent, seq) de-duplication.

use crate::config::{MqttConfig, OutboxConfig};
use crate::outbox::{Outbox, OutboxError};
use crate::shutdown::Shutdown;
use chrono::Utc;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zonesync_proto::{AgentId, EnterpriseId, Presence, PresenceStatus, Topic, ZoneId, WIRE_VERSION};

/// Largest MQTT packet the agent sends or accepts, bytes.
const MAX_PACKET: usize = 4 * 1024 * 1024;

/// Link counters, shared with status reporting.
#[derive(Debug, Default, Serialize)]
pub struct LinkStats {
    /// Whether a session is up.
    pub connected: AtomicBool,
    /// Sessions opened.
    pub sessions: AtomicU64,
    /// Batches acknowledged by the broker.
    pub batches_acked: AtomicU64,
    /// Items (readings and declarations) in acknowledged batches.
    pub items_acked: AtomicU64,
    /// Batches published, including resends.
    pub batches_sent: AtomicU64,
    /// When the broker last acknowledged a batch, Unix milliseconds (0: not yet).
    pub last_ack_unix_ms: AtomicU64,
}

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Lost(ConnectionError),
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
    /// Broker settings.
    pub mqtt: MqttConfig,
    /// Batching settings.
    pub batching: OutboxConfig,
    /// The outbox.
    pub outbox: Arc<Outbox>,
    /// Counters.
    pub stats: Arc<LinkStats>,
}

impl Link {
    fn presence(&self, status: PresenceStatus) -> Vec<u8> {
        Presence {
            v: WIRE_VERSION,
            agent: self.agent.clone(),
            zone: self.zone.clone(),
            status,
            boot: self.boot,
            at: Utc::now(),
            next_seq: self.outbox.next_seq(),
            dropped_readings: self.outbox.dropped_readings(),
            clock_offset_ms: None,
            version: env!("CARGO_PKG_VERSION").into(),
            enterprises: self.enterprises.clone(),
        }
        .to_payload()
    }

    fn options(&self) -> Result<MqttOptions, crate::tls::TlsError> {
        let mut o = MqttOptions::new(self.agent.as_str(), self.mqtt.host.clone(), self.mqtt.port);
        o.set_transport(crate::tls::transport(self.mqtt.tls.as_ref())?);
        o.set_keep_alive(Duration::from_secs(self.mqtt.keep_alive_secs.max(5)));
        o.set_clean_session(true);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o.set_inflight((self.batching.max_in_flight + 4).min(u16::MAX as usize) as u16);
        o.set_request_channel_capacity(self.batching.max_in_flight + 16);
        if let (Some(u), Some(p)) = (&self.mqtt.username, &self.mqtt.password) {
            o.set_credentials(u.clone(), p.clone());
        }
        o.set_last_will(LastWill::new(
            Topic::state(&self.zone, &self.agent),
            self.presence(PresenceStatus::Offline),
            QoS::AtLeastOnce,
            true,
        ));
        Ok(o)
    }

    /// Keeps a session up until shutdown, reconnecting with exponential backoff.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), OutboxError> {
        let min = Duration::from_millis(self.mqtt.reconnect_min_ms.max(10));
        let max = Duration::from_millis(self.mqtt.reconnect_max_ms.max(self.mqtt.reconnect_min_ms));
        let mut backoff = min;
        loop {
            let started = Instant::now();
            let end = self.session(&mut shutdown).await;
            // Nothing is on the wire any more: the next session resends it all.
            self.outbox.set_on_wire_below(0);
            let end = end?;
            self.stats.connected.store(false, Ordering::SeqCst);
            match end {
                SessionEnd::Shutdown => return Ok(()),
                SessionEnd::Lost(e) => tracing::warn!(agent = %self.agent, "broker connection lost: {e}"),
                SessionEnd::Refused(why) => {
                    tracing::error!(agent = %self.agent, "broker refused the connection: {why}")
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = min;
            }
            tracing::info!(agent = %self.agent, delay_ms = backoff.as_millis() as u64, "reconnecting");
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(max);
        }
    }

    async fn session(&self, shutdown: &mut Shutdown) -> Result<SessionEnd, OutboxError> {
        let options = match self.options() {
            Ok(o) => o,
            Err(e) => return Ok(SessionEnd::Refused(format!("TLS settings: {e}"))),
        };
        let (client, mut events) = AsyncClient::new(options, self.batching.max_in_flight + 16);
        // Connect first, so nothing is queued for a broker that refuses us.
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(SessionEnd::Shutdown),
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(code)) => return Ok(SessionEnd::Refused(format!("{code:?}"))),
                    Err(e) => return Ok(SessionEnd::Lost(e)),
                }
            }
        }
        self.stats.connected.store(true, Ordering::SeqCst);
        self.stats.sessions.fetch_add(1, Ordering::SeqCst);
        tracing::info!(agent = %self.agent, boot = self.boot, next_seq = self.outbox.next_seq(), "connected to broker");

        // Sequence numbers awaiting their packet id (None: the birth message), then by packet id.
        let mut awaiting_pkid: VecDeque<Option<u64>> = VecDeque::new();
        let mut by_pkid: HashMap<u16, Option<u64>> = HashMap::new();
        self.announce(&client, PresenceStatus::Online, &mut awaiting_pkid);
        // A fresh birth message whenever the disk budget drops readings, so
        // the zone learns of the loss while the session lasts.
        let mut dropped_announced = self.outbox.dropped_readings();
        let mut next_seq = 0u64;
        let mut last_seal = Instant::now();
        let max_age = Duration::from_millis(self.batching.max_batch_age_ms);
        let window = self.batching.max_in_flight.max(1);
        let mut tick = tokio::time::interval(max_age.clamp(Duration::from_millis(10), Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Fill the window with sealed batches, sealing more when due.
            while awaiting_pkid.len() + by_pkid.len() < window {
                let room = window - awaiting_pkid.len() - by_pkid.len();
                let ready = self.outbox.sealed_from(next_seq, room)?;
                if ready.is_empty() {
                    let pending = self.outbox.pending_items();
                    let due =
                        pending >= self.batching.max_batch_items || (pending > 0 && last_seal.elapsed() >= max_age);
                    if !due {
                        break;
                    }
                    self.outbox.seal(
                        self.batching.max_batch_items,
                        &self.agent,
                        &self.zone,
                        self.boot,
                        Utc::now(),
                    )?;
                    last_seal = Instant::now();
                    continue;
                }
                for b in ready {
                    next_seq = b.seq + 1;
                    // The disk budget may have dropped it since it was read.
                    if !self.outbox.put_on_wire(b.seq)? {
                        continue;
                    }
                    if client
                        .try_publish(&b.topic, QoS::AtLeastOnce, false, b.payload)
                        .is_err()
                    {
                        return Ok(SessionEnd::Lost(ConnectionError::RequestsDone));
                    }
                    awaiting_pkid.push_back(Some(b.seq));
                    self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            let dropped = self.outbox.dropped_readings();
            if dropped != dropped_announced {
                dropped_announced = dropped;
                self.announce(&client, PresenceStatus::Online, &mut awaiting_pkid);
            }
            tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    self.goodbye(&client, &mut events, &mut awaiting_pkid, &mut by_pkid).await?;
                    return Ok(SessionEnd::Shutdown);
                }
                ev = events.poll() => match ev {
                    Ok(ev) => self.on_event(ev, &mut awaiting_pkid, &mut by_pkid)?,
                    Err(e) => return Ok(SessionEnd::Lost(e)),
                },
                _ = tick.tick() => {}
            }
        }
    }

    fn on_event(
        &self,
        ev: Event,
        awaiting_pkid: &mut VecDeque<Option<u64>>,
        by_pkid: &mut HashMap<u16, Option<u64>>,
    ) -> Result<(), OutboxError> {
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(seq) = awaiting_pkid.pop_front() {
                    by_pkid.insert(pkid, seq);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(Some(seq)) = by_pkid.remove(&ack.pkid) {
                    let items = self.outbox.ack(seq)?;
                    self.stats.batches_acked.fetch_add(1, Ordering::Relaxed);
                    self.stats.items_acked.fetch_add(items as u64, Ordering::Relaxed);
                    let now = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
                    self.stats.last_ack_unix_ms.store(now, Ordering::Relaxed);
                    tracing::debug!(agent = %self.agent, seq, "batch acknowledged");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Publishes the retained presence; its PUBACK is awaited like a batch's.
    fn announce(&self, client: &AsyncClient, status: PresenceStatus, awaiting_pkid: &mut VecDeque<Option<u64>>) {
        let topic = Topic::state(&self.zone, &self.agent);
        if client
            .try_publish(topic, QoS::AtLeastOnce, true, self.presence(status))
            .is_ok()
        {
            awaiting_pkid.push_back(None);
        }
    }

    /// Waits briefly for outstanding acks, leaves a clean "offline" presence
    /// and disconnects. Whatever is not acknowledged stays in the outbox.
    async fn goodbye(
        &self,
        client: &AsyncClient,
        events: &mut EventLoop,
        awaiting_pkid: &mut VecDeque<Option<u64>>,
        by_pkid: &mut HashMap<u16, Option<u64>>,
    ) -> Result<(), OutboxError> {
        self.announce(client, PresenceStatus::Offline, awaiting_pkid);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !(awaiting_pkid.is_empty() && by_pkid.is_empty()) {
            match tokio::time::timeout_at(deadline, events.poll()).await {
                Ok(Ok(ev)) => self.on_event(ev, awaiting_pkid, by_pkid)?,
                _ => break,
            }
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
        self.outbox.flush()?;
        tracing::info!(agent = %self.agent, unacked = by_pkid.len(), "disconnected cleanly");
        Ok(())
    }
}

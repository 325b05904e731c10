//! The MQTT link to one upstream: publishes sealed batches at QoS 1 and
//! records each as acknowledged by this upstream when its PUBACK arrives —
//! or, with `end_to_end_confirm`, only when the aggregator's confirmation
//! names it (see [`confirm`]). The outbox deletes a batch once every
//! upstream has acknowledged it; the agent runs one link per upstream.
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

pub mod confirm;

use crate::config::{MqttConfig, OutboxConfig};
use crate::outbox::{Outbox, OutboxError};
use crate::shutdown::Shutdown;
use chrono::Utc;
use confirm::{ClockEstimator, ClockOffset, Marks};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zonesync_proto::{AgentId, EnterpriseId, Presence, PresenceStatus, Topic, ZoneId, WIRE_VERSION};
use zonesync_runtime::mqtt::{Backoff, ConnectSettings};

/// Largest MQTT packet the agent sends or accepts, bytes.
const MAX_PACKET: usize = 4 * 1024 * 1024;

/// Most sequence numbers one confirmation may name (a forged `[0, u64::MAX]`
/// range would otherwise keep the link busy for ever); far above what one
/// aggregator flush handles.
const MAX_CONFIRMED_SEQS: usize = 65_536;

/// How long clock-offset measurements are kept; the tightest of them is reported.
const CLOCK_WINDOW: Duration = Duration::from_secs(600);

/// A new presence is published when the measured offset moves by more than this, ms.
const CLOCK_REANNOUNCE_MS: i64 = 1000;

/// Stands for "no measurement" in the clock fields.
const UNKNOWN: i64 = i64::MIN;

/// Link counters, shared with status reporting.
#[derive(Debug, Serialize)]
pub struct LinkStats {
    /// Whether a session is up.
    pub connected: AtomicBool,
    /// Sessions opened.
    pub sessions: AtomicU64,
    /// Batches acknowledged by this upstream (PUBACK, or confirmation in confirm mode).
    pub batches_acked: AtomicU64,
    /// Items (readings and declarations) in acknowledged batches.
    pub items_acked: AtomicU64,
    /// Batches published, including resends.
    pub batches_sent: AtomicU64,
    /// When this upstream last acknowledged a batch, Unix milliseconds (0: not yet).
    pub last_ack_unix_ms: AtomicU64,
    /// Confirm mode: batches republished because their confirmation did not come in time.
    pub resends: AtomicU64,
    /// Confirm mode: batches published and awaiting confirmation.
    pub awaiting_confirm: AtomicU64,
    /// Confirm mode: confirmation messages received.
    pub confirms_received: AtomicU64,
    /// Confirm mode: sequence numbers confirmed that this upstream had no batch
    /// for (acknowledged already, dropped, or never sent).
    pub confirm_unknown_seqs: AtomicU64,
    /// Confirm mode: confirmation payloads refused (not JSON of the right
    /// shape, for another agent, or without digests from an upstream that
    /// has sent them).
    pub confirms_malformed: AtomicU64,
    /// Confirm mode: confirmations about an earlier outbox identity, ignored.
    pub confirms_other_outbox: AtomicU64,
    /// Confirm mode: sequence numbers confirmed with a digest that is not our
    /// batch's (someone else's bytes stored under our number): kept.
    pub confirm_digest_mismatches: AtomicU64,
    /// Confirm mode: batches the aggregator refused for a reason other than a
    /// reused number (`seq_ahead`, `sent_at_future`): kept and sent again.
    pub refusals: AtomicU64,
    /// Fresh outbox identities this link asked for (each logged with its reason).
    pub identity_rotations: AtomicU64,
    /// The agent's clock minus the aggregator's, ms, as confirmations measure it.
    clock_offset_ms: AtomicI64,
    /// Its uncertainty, ± ms.
    clock_uncertainty_ms: AtomicI64,
    /// Whether this upstream has sent a confirmation with digests: from then
    /// on one without them is not trusted (see [`confirm::judge`]).
    digests_seen: AtomicBool,
}

impl Default for LinkStats {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(false),
            sessions: AtomicU64::new(0),
            batches_acked: AtomicU64::new(0),
            items_acked: AtomicU64::new(0),
            batches_sent: AtomicU64::new(0),
            last_ack_unix_ms: AtomicU64::new(0),
            resends: AtomicU64::new(0),
            awaiting_confirm: AtomicU64::new(0),
            confirms_received: AtomicU64::new(0),
            confirm_unknown_seqs: AtomicU64::new(0),
            confirms_malformed: AtomicU64::new(0),
            confirms_other_outbox: AtomicU64::new(0),
            confirm_digest_mismatches: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            identity_rotations: AtomicU64::new(0),
            clock_offset_ms: AtomicI64::new(UNKNOWN),
            clock_uncertainty_ms: AtomicI64::new(UNKNOWN),
            digests_seen: AtomicBool::new(false),
        }
    }
}

impl LinkStats {
    /// The clock offset measured from confirmations, if any.
    pub fn clock_offset(&self) -> Option<ClockOffset> {
        let offset_ms = self.clock_offset_ms.load(Ordering::Relaxed);
        let uncertainty_ms = self.clock_uncertainty_ms.load(Ordering::Relaxed);
        (offset_ms != UNKNOWN && uncertainty_ms != UNKNOWN).then_some(ClockOffset {
            offset_ms,
            uncertainty_ms,
        })
    }

    fn set_clock_offset(&self, c: ClockOffset) {
        self.clock_offset_ms.store(c.offset_ms, Ordering::Relaxed);
        self.clock_uncertainty_ms.store(c.uncertainty_ms, Ordering::Relaxed);
    }

    fn acked(&self, items: usize) {
        self.batches_acked.fetch_add(1, Ordering::Relaxed);
        self.items_acked.fetch_add(items as u64, Ordering::Relaxed);
        let now = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        self.last_ack_unix_ms.store(now, Ordering::Relaxed);
    }
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
struct Wire {
    /// Sequence numbers awaiting their packet id (None: a presence message), in request order.
    awaiting_pkid: VecDeque<Option<u64>>,
    /// Then by packet id, until the PUBACK.
    by_pkid: HashMap<u16, Option<u64>>,
    /// A fresh presence is due before anything is sent again (a refusal
    /// judged against the last one's `next_seq`).
    reannounce: bool,
}

impl Wire {
    fn in_flight(&self) -> usize {
        self.awaiting_pkid.len() + self.by_pkid.len()
    }
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
            version: env!("CARGO_PKG_VERSION").into(),
            enterprises: self.enterprises.clone(),
        }
        .to_payload()
    }

    /// The shared connection settings (TLS, credentials, keep-alive floor,
    /// packet limits: `zonesync_runtime::mqtt`, as ingest and the outbound
    /// publisher use), then what is the link's own: a clean session, its
    /// in-flight window and its last will.
    fn options(&self) -> Result<MqttOptions, crate::tls::TlsError> {
        let credentials = match (&self.mqtt.username, &self.mqtt.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        let mut o = ConnectSettings {
            client_id: self.agent.to_string(),
            host: self.mqtt.host.clone(),
            port: self.mqtt.port,
            credentials,
            tls: self.mqtt.tls.clone(),
            keep_alive: Duration::from_secs(self.mqtt.keep_alive_secs),
            max_incoming_bytes: MAX_PACKET,
            max_outgoing_bytes: MAX_PACKET,
        }
        .options()?;
        o.set_clean_session(true);
        o.set_inflight((self.batching.max_in_flight + 4).min(u16::MAX as usize) as u16);
        o.set_request_channel_capacity(self.batching.max_in_flight + 16);
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
        let options = match self.options() {
            Ok(o) => o,
            Err(e) => return Ok(SessionEnd::Refused(format!("TLS settings: {e}"))),
        };
        let upstream = self.name();
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
        tracing::info!(agent = %self.agent, %upstream, boot = self.boot, next_seq = self.outbox.next_seq(), "connected to broker");

        let confirm_mode = self.mqtt.end_to_end_confirm;
        let confirm_topic = Topic::confirm(&self.zone, &self.agent);
        // Subscribed before anything is published: the broker handles a
        // connection's packets in order, so no confirmation can be missed.
        if confirm_mode && client.try_subscribe(&confirm_topic, QoS::AtLeastOnce).is_err() {
            return Ok(SessionEnd::Lost(ConnectionError::RequestsDone));
        }
        let mut marks = Marks::new(
            Duration::from_secs(self.batching.confirm_timeout_secs.max(1)),
            Duration::from_secs(self.batching.confirm_timeout_max_secs),
        );
        let mut wire = Wire::default();
        let mut announced_id = self.outbox.identity();
        self.announce(&client, PresenceStatus::Online, &mut wire);
        // A fresh birth message whenever the disk budget drops readings (so
        // the zone learns of the loss while the session lasts) or the
        // measured clock offset moves.
        let mut announced = (self.outbox.dropped_for(self.upstream), self.stats.clock_offset());
        let mut next_pos = 0u64;
        let mut last_seal = Instant::now();
        let max_age = Duration::from_millis(self.batching.max_batch_age_ms);
        let window = self.batching.max_in_flight.max(1);
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
            // Unconfirmed batches past their deadline go out again, re-read from the outbox.
            if confirm_mode {
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
                    if client
                        .try_publish(&batch.topic, QoS::AtLeastOnce, false, batch.payload)
                        .is_err()
                    {
                        return Ok(SessionEnd::Lost(ConnectionError::RequestsDone));
                    }
                    wire.awaiting_pkid.push_back(Some(seq));
                    marks.sent(seq, Instant::now(), Utc::now().timestamp_millis());
                    self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                    self.stats.resends.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(agent = %self.agent, %upstream, seq, "unconfirmed batch sent again");
                }
            }
            // Fill the window with sealed batches, sealing more when due.
            while wire.in_flight() < window && marks.len() < confirm_window {
                let room = (window - wire.in_flight()).min(confirm_window - marks.len());
                let ready = self.outbox.sealed_for(self.upstream, next_pos, room)?;
                if ready.is_empty() {
                    let pending = self.outbox.pending_items();
                    let due =
                        pending >= self.batching.max_batch_items || (pending > 0 && last_seal.elapsed() >= max_age);
                    if !due {
                        break;
                    }
                    // A whole window's worth in one seal, whatever room is
                    // free now: one flush (and one mark raised) per window,
                    // not one per batch. Sealing only the free room made a
                    // drain seal one batch per returning PUBACK — two fsyncs
                    // per 500 readings, which bounded the recovery of a
                    // backlog (docs/profiles.md, figures 3 and 7).
                    self.outbox.seal_up_to(
                        self.batching.max_batch_items,
                        window.saturating_mul(self.batching.max_batch_items),
                        &self.agent,
                        &self.zone,
                        self.boot,
                        Utc::now(),
                    )?;
                    last_seal = Instant::now();
                    continue;
                }
                for b in ready {
                    next_pos = b.seq + 1;
                    // The disk budget may have dropped it since it was read.
                    if !self.outbox.put_on_wire(self.upstream, b.seq)? {
                        continue;
                    }
                    if client
                        .try_publish(&b.topic, QoS::AtLeastOnce, false, b.payload)
                        .is_err()
                    {
                        return Ok(SessionEnd::Lost(ConnectionError::RequestsDone));
                    }
                    wire.awaiting_pkid.push_back(Some(b.seq));
                    if confirm_mode {
                        marks.sent(b.seq, Instant::now(), Utc::now().timestamp_millis());
                    }
                    self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.stats.awaiting_confirm.store(marks.len() as u64, Ordering::Relaxed);
            let now = (self.outbox.dropped_for(self.upstream), self.stats.clock_offset());
            let clock_moved = match (now.1, announced.1) {
                (Some(a), Some(b)) => (a.offset_ms - b.offset_ms).abs() > CLOCK_REANNOUNCE_MS,
                (a, b) => a.is_some() != b.is_some(),
            };
            if now.0 != announced.0 || clock_moved {
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
                    Err(e) => return Ok(SessionEnd::Lost(e)),
                },
                _ = tick.tick() => {}
            }
        }
    }

    fn on_event(
        &self,
        ev: Event,
        wire: &mut Wire,
        marks: &mut Marks,
        clock: &mut ClockEstimator,
    ) -> Result<(), OutboxError> {
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(seq) = wire.awaiting_pkid.pop_front() {
                    wire.by_pkid.insert(pkid, seq);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                // In confirm mode a PUBACK only frees the MQTT window: the
                // broker may still lose the batch.
                if let Some(Some(seq)) = wire.by_pkid.remove(&ack.pkid) {
                    if !self.mqtt.end_to_end_confirm {
                        if let Some(items) = self.outbox.ack(self.upstream, seq)? {
                            self.stats.acked(items);
                        }
                        tracing::debug!(agent = %self.agent, seq, "batch acknowledged");
                    }
                }
            }
            Event::Incoming(Packet::Publish(p)) if self.mqtt.end_to_end_confirm => {
                self.on_confirm(&p.payload, wire, marks, clock)?;
            }
            Event::Incoming(Packet::SubAck(s))
                if s.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
            {
                tracing::error!(agent = %self.agent, upstream = %self.name(),
                    "the broker refused the subscription to the confirm topic: no batch will ever be confirmed (check its ACL)");
            }
            _ => {}
        }
        Ok(())
    }

    /// A confirmation from the aggregator: each sequence number it names
    /// with our batch's digest is acknowledged for this upstream only (see
    /// [`confirm::judge`]); one that shows other bytes under our marks moves
    /// the outbox to a fresh identity. Malformed ones are counted and logged,
    /// never fatal; sequence numbers unknown here are counted.
    fn on_confirm(
        &self,
        payload: &[u8],
        wire: &mut Wire,
        marks: &mut Marks,
        clock: &mut ClockEstimator,
    ) -> Result<(), OutboxError> {
        let received_ms = Utc::now().timestamp_millis();
        let c = match confirm::parse(payload, &self.agent) {
            Ok(c) => c,
            Err(e) => {
                self.stats.confirms_malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(agent = %self.agent, upstream = %self.name(), bytes = payload.len(), "confirmation ignored: {e}");
                return Ok(());
            }
        };
        self.stats.confirms_received.fetch_add(1, Ordering::Relaxed);
        let ours = self.outbox.identity();
        if !c.digests.is_empty() {
            self.stats.digests_seen.store(true, Ordering::Relaxed);
        }
        let digests_seen = self.stats.digests_seen.load(Ordering::Relaxed);
        let next_seq = self.outbox.next_seq();
        let verdict = confirm::judge(&c, ours.as_ref(), next_seq, digests_seen, MAX_CONFIRMED_SEQS, |seq| {
            Ok::<_, OutboxError>(self.outbox.sealed_one(seq)?.map(|b| zonesync_proto::digest(&b.payload)))
        })?;
        if verdict.other_outbox {
            // An earlier identity's (in flight across a rotation): its
            // batches are sent again under the current one.
            self.stats.confirms_other_outbox.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(agent = %self.agent, outbox = c.outbox.as_ref().map(|o| o.as_str()), "confirmation for an earlier outbox identity ignored");
            return Ok(());
        }
        // The newest batch confirmed that was published once: with a resend
        // the confirmation may answer an earlier publication, and the send
        // time would not bound the aggregator's flush.
        let mut newest: Option<(u64, i64)> = None;
        for &seq in &verdict.ack {
            let mark = marks.remove(seq);
            match self.outbox.ack(self.upstream, seq)? {
                Some(items) => self.stats.acked(items),
                None => {
                    self.stats.confirm_unknown_seqs.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(agent = %self.agent, seq, "confirmation for a batch not held for this upstream");
                }
            }
            if let Some(m) = mark.filter(|m| m.attempts == 1) {
                if newest.is_none_or(|(s, _)| seq > s) {
                    newest = Some((seq, m.sent_unix_ms));
                }
            }
        }
        if !verdict.undigested.is_empty() {
            self.stats.confirms_malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = %self.agent, upstream = %self.name(), seqs = verdict.undigested.len(),
                "confirmation without digests from an upstream that sends them: ignored (forged or stale)");
        }
        for &seq in &verdict.unknown {
            marks.remove(seq);
            self.stats.confirm_unknown_seqs.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(agent = %self.agent, seq, "confirmation for a batch not held");
        }
        if !verdict.withheld.is_empty() {
            self.stats
                .confirm_digest_mismatches
                .fetch_add(verdict.withheld.len() as u64, Ordering::Relaxed);
            tracing::warn!(agent = %self.agent, upstream = %self.name(), seqs = ?verdict.withheld,
                "confirmed without our batch's digest: other bytes are stored under these numbers; batches kept");
        }
        for r in &verdict.refused {
            self.stats.refusals.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = %self.agent, upstream = %self.name(), seq = r.seq, reason = %r.reason,
                "the aggregator refused a batch: kept, sent again after a fresh presence");
            wire.reannounce = true;
        }
        if let Some(reason) = verdict.rotate {
            self.stats.identity_rotations.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = %self.agent, upstream = %self.name(), reason = reason.label(), detail = ?reason,
                "other bytes are held under our outbox's numbers: moving to a fresh outbox identity");
            self.outbox.rotate_identity()?;
        }
        if let Some(m) = newest.and_then(|(_, t1)| ClockOffset::measure(t1, received_ms, c.at.timestamp_millis())) {
            clock.add(Instant::now(), m);
            if let Some(best) = clock.best(Instant::now()) {
                self.stats.set_clock_offset(best);
            }
        }
        self.stats.awaiting_confirm.store(marks.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes the retained presence; its PUBACK is awaited like a batch's.
    fn announce(&self, client: &AsyncClient, status: PresenceStatus, wire: &mut Wire) {
        let topic = Topic::state(&self.zone, &self.agent);
        if client
            .try_publish(topic, QoS::AtLeastOnce, true, self.presence(status))
            .is_ok()
        {
            wire.awaiting_pkid.push_back(None);
        }
    }

    /// Waits briefly for outstanding PUBACKs, leaves a clean "offline"
    /// presence and disconnects. Whatever this upstream has not acknowledged
    /// stays in the outbox.
    async fn goodbye(
        &self,
        client: &AsyncClient,
        events: &mut EventLoop,
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
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
        self.outbox.flush()?;
        tracing::info!(agent = %self.agent, upstream = %self.name(), unacked = wire.by_pkid.len(),
            unconfirmed = marks.len(), "disconnected cleanly");
        Ok(())
    }
}

#[cfg(test)]
mod tests;

//! Gateways that are already on the plant floor — EMQX Neuron, Sparkplug B
//! edge nodes — publishing to the plant's own MQTT broker: the agent
//! subscribes there, maps the tags it is told about to indicators and
//! units, and hands them to the outbox like any other source.
//!
//! `neuron.rs` and `sparkplug.rs` are pure (a document or a message in,
//! tag values and what went wrong out); this module holds the MQTT session
//! and the mapping. The session is persistent (clean session off, QoS 1,
//! manual acknowledgements): a message is acknowledged only after its
//! readings are in the outbox, so a broker keeps what the agent has not
//! taken. Redelivered values are not sent twice: the cursor stored with
//! each append holds the newest timestamp and value sent per reading, and an
//! older value, or the same value at that time, is skipped (counted as
//! `duplicates`).
//!
//! Everything a bad peer can do — a document that is no upload, a protobuf
//! that does not decode, a tag nobody mapped, a Neuron read error, a string
//! where a number belongs, a Sparkplug gap — is counted by name and never
//! stops the source.

pub mod config;
pub mod neuron;
pub mod sparkplug;
pub mod sparkplug_b;

pub use config::{check_all, Checked, GatewayKind, Mapping, MqttGatewayConfig, MqttGatewayConfigError, TagConfig};

use crate::outbox::{Item, Outbox, OutboxError};
use crate::shutdown::Shutdown;
use crate::sources::clock::ClockGuard;
use chrono::{DateTime, TimeZone, Utc};
use prost::Message;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use zonesync_proto::{EnterpriseId, Reading, Validator};

/// A tag's value as a gateway published it.
#[derive(Debug, Clone, PartialEq)]
pub struct TagValue {
    /// Neuron south node / Sparkplug edge node.
    pub node: String,
    /// Neuron group / Sparkplug group id.
    pub group: String,
    /// Sparkplug device.
    pub device: Option<String>,
    /// Tag or metric name.
    pub tag: String,
    /// The value, if it is a number (or a boolean, as 0 or 1).
    pub value: Option<f64>,
    /// When it was taken, ms since the epoch.
    pub ts_ms: Option<u64>,
}

/// Counters of one gateway source, by name, for the status file.
pub type GatewayStats = crate::sources::counts::NamedCounts;

/// A checked gateway source, ready to run.
#[derive(Debug, Clone)]
pub struct MqttGateway {
    checked: Checked,
    by_tag: BTreeMap<(String, String, Option<String>, String), Mapping>,
    validator: Validator,
    clock: Option<Arc<ClockGuard>>,
    client_id: String,
    /// What it did; clone the `Arc` before `run` to watch it.
    pub stats: Arc<GatewayStats>,
}

/// Newest timestamp (ms) and value sent per reading key.
type Cursor = BTreeMap<String, (u64, f64)>;

impl MqttGateway {
    /// A source for `checked`, its MQTT client id `client_id`.
    pub fn new(checked: Checked, validator: Validator, client_id: String) -> Self {
        let by_tag = checked
            .mappings
            .iter()
            .map(|m| {
                let c = &m.cfg;
                (
                    (c.node.clone(), c.group.clone(), c.device.clone(), c.tag.clone()),
                    m.clone(),
                )
            })
            .collect();
        Self {
            checked,
            by_tag,
            validator,
            clock: None,
            client_id,
            stats: Arc::new(GatewayStats::default()),
        }
    }

    /// The clock check applied before readings are queued.
    pub fn with_clock(mut self, clock: Arc<ClockGuard>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Name under which it stores its cursor.
    pub fn source_name(&self) -> String {
        format!("mqtt_gateway:{}", self.checked.cfg.name)
    }

    /// The configuration.
    pub fn config(&self) -> &MqttGatewayConfig {
        &self.checked.cfg
    }

    /// Turns tag values into readings and the cursor after them. Unmapped
    /// tags, values that are no number, and values not newer than the
    /// cursor produce nothing and are counted.
    pub fn readings(
        &self,
        values: Vec<TagValue>,
        cursor: &Cursor,
        now: DateTime<Utc>,
    ) -> (Vec<(EnterpriseId, Item)>, Cursor) {
        let mut next = cursor.clone();
        let mut items = Vec::new();
        for v in values {
            let Some(m) = self.by_tag.get(&(v.node, v.group, v.device, v.tag.clone())) else {
                self.stats.add("unmapped_tags", 1);
                tracing::debug!(gateway = %self.checked.cfg.name, tag = %v.tag, "tag not mapped");
                continue;
            };
            let Some(value) = v.value else {
                self.stats.add("not_numeric", 1);
                continue;
            };
            let ts_ms = v
                .ts_ms
                .unwrap_or_else(|| u64::try_from(now.timestamp_millis()).unwrap_or(0));
            // Older than the newest sent, or that same value again: already sent.
            // A different value in the same millisecond (a birth and the first
            // DATA) is new.
            if next
                .get(&m.key)
                .is_some_and(|(at, last)| *at > ts_ms || (*at == ts_ms && *last == value))
            {
                self.stats.add("duplicates", 1);
                continue;
            }
            let Some(ts) = i64::try_from(ts_ms)
                .ok()
                .and_then(|t| Utc.timestamp_millis_opt(t).single())
            else {
                self.stats.add("refused", 1);
                continue;
            };
            let c = &m.cfg;
            let reading = Reading {
                indicator: c.indicator.clone(),
                point: c.point.clone(),
                value: value * c.scale,
                unit: c.unit.clone(),
                ts: Some(ts),
                period: None,
            };
            match super::admit::reading(
                &self.validator,
                self.clock.as_deref(),
                &self.source_name(),
                &c.enterprise,
                reading,
                now,
            ) {
                Ok(r) => {
                    next.insert(m.key.clone(), (ts_ms, value));
                    items.push((c.enterprise.clone(), Item::Reading(r)));
                }
                Err(super::admit::Refused::Invalid(why)) => {
                    self.stats.add("refused", 1);
                    tracing::warn!(gateway = %self.checked.cfg.name, point = %c.point, reason = %why, "tag value refused");
                }
                Err(super::admit::Refused::Clock(_)) => self.stats.add("refused", 1),
            }
        }
        (items, next)
    }

    /// The tag values in one message, and the rebirth request it calls for.
    pub fn decode(
        &self,
        host: &mut sparkplug::Host,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> (Vec<TagValue>, Option<(String, String)>) {
        match self.checked.cfg.kind {
            GatewayKind::Neuron => match neuron::parse(payload) {
                Ok(p) => {
                    self.stats.add("tag_errors", p.errors.len() as u64);
                    if let Some((tag, code)) = p.errors.first() {
                        tracing::debug!(gateway = %self.checked.cfg.name, tag, code, "Neuron could not read a tag");
                    }
                    (p.values, None)
                }
                Err(e) => {
                    self.stats.add("malformed", 1);
                    tracing::debug!(gateway = %self.checked.cfg.name, topic, error = %e, "message refused");
                    (Vec::new(), None)
                }
            },
            GatewayKind::Sparkplug => {
                let Some(t) = sparkplug::Topic::parse(topic) else {
                    self.stats.add("malformed", 1);
                    return (Vec::new(), None);
                };
                if t.kind == sparkplug::Kind::Other {
                    return (Vec::new(), None);
                }
                let Ok(p) = sparkplug_b::Payload::decode(payload) else {
                    self.stats.add("malformed", 1);
                    tracing::debug!(gateway = %self.checked.cfg.name, topic, "payload is no Sparkplug B protobuf");
                    return (Vec::new(), None);
                };
                let step = host.on_message(&t, &p, now_ms);
                if step.birth {
                    self.stats.add("births", 1);
                }
                if step.death {
                    self.stats.add("deaths", 1);
                }
                if let Some(problem) = step.problem {
                    self.stats.add(problem.name(), 1);
                    tracing::info!(gateway = %self.checked.cfg.name, topic, problem = problem.name(), "sparkplug message not used");
                }
                let rebirth = step.rebirth.filter(|_| self.checked.cfg.rebirth);
                (step.values, rebirth)
            }
        }
    }

    /// Subscribes and takes messages until shutdown. Broker failures are
    /// logged and counted, and the session is opened again; only an outbox
    /// failure ends the task.
    pub async fn run(self, outbox: Arc<Outbox>, mut shutdown: Shutdown) -> Result<(), OutboxError> {
        let source = self.source_name();
        let cfg = &self.checked.cfg;
        let mut cursor: Cursor = outbox
            .cursor(&source)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        cursor.retain(|k, _| self.checked.mappings.iter().any(|m| m.key == *k));
        let mut opts = MqttOptions::new(self.client_id.clone(), cfg.host.clone(), cfg.port);
        opts.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs));
        opts.set_clean_session(false);
        opts.set_manual_acks(true);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        if let Some(user) = &cfg.username {
            opts.set_credentials(user.clone(), self.checked.password.clone().unwrap_or_default());
        }
        let (client, mut events) = AsyncClient::new(opts, 64);
        let filters = cfg.filters();
        let mut host = sparkplug::Host::default();
        let mut backoff = Duration::from_millis(200);
        let mut up = false;
        tracing::info!(gateway = %cfg.name, broker = %format!("{}:{}", cfg.host, cfg.port), topics = ?filters, "gateway source starting");
        loop {
            let event = tokio::select! {
                _ = shutdown.wait() => break,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    up = true;
                    backoff = Duration::from_millis(200);
                    self.stats.add("sessions", 1);
                    tracing::info!(gateway = %cfg.name, "connected to the plant broker");
                    for f in &filters {
                        if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            tracing::warn!(gateway = %cfg.name, topic = %f, "subscribe: {e}");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    self.stats.add("messages", 1);
                    let now = Utc::now();
                    let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
                    let (values, rebirth) = self.decode(&mut host, &p.topic, &p.payload, now_ms);
                    let (items, next) = self.readings(values, &cursor, now);
                    if !items.is_empty() {
                        let n = items.len() as u64;
                        let bytes = serde_json::to_vec(&next).unwrap_or_default();
                        outbox.append(items, Some((&source, &bytes)))?;
                        cursor = next;
                        self.stats.add("readings", n);
                    }
                    // Only now: a message not yet in the outbox stays the broker's.
                    if let Err(e) = client.try_ack(&p) {
                        tracing::debug!(gateway = %cfg.name, "ack: {e}");
                    }
                    if let Some((group, node)) = rebirth {
                        let topic = format!("{}/{group}/NCMD/{node}", sparkplug::NAMESPACE);
                        let payload = sparkplug_b::rebirth_request(now_ms).encode_to_vec();
                        match client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                            Ok(()) => {
                                self.stats.add("rebirths_requested", 1);
                                tracing::info!(gateway = %cfg.name, group, node, "asked the edge node for a rebirth");
                            }
                            Err(e) => tracing::warn!(gateway = %cfg.name, "rebirth request: {e}"),
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.stats.add("connection_errors", 1);
                    if std::mem::replace(&mut up, false) {
                        tracing::warn!(gateway = %cfg.name, "plant broker connection lost: {e}");
                    } else {
                        tracing::debug!(gateway = %cfg.name, "plant broker: {e}");
                    }
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let _ = client.try_disconnect();
        tracing::info!(gateway = %cfg.name, stats = ?self.stats.counts(), "gateway source stopped");
        Ok(())
    }

    /// For `zonesync-agent check`: connects, subscribes, and reports the
    /// mapped tags seen within `wait` (Neuron publishes every interval;
    /// Sparkplug values need a birth, so an edge node is asked for one).
    pub async fn probe(&self, wait: Duration, mut shutdown: Shutdown) -> Vec<crate::sources::probe::ProbeRow> {
        use crate::sources::probe::{ProbeRead, ProbeRow};
        let cfg = &self.checked.cfg;
        let target = format!("{} {}:{} {:?}", cfg.name, cfg.host, cfg.port, cfg.kind).to_lowercase();
        let mut opts = MqttOptions::new(format!("{}-check", self.client_id), cfg.host.clone(), cfg.port);
        opts.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs));
        if let Some(user) = &cfg.username {
            opts.set_credentials(user.clone(), self.checked.password.clone().unwrap_or_default());
        }
        let (client, mut events) = AsyncClient::new(opts, 64);
        let mut host = sparkplug::Host::default();
        let mut seen: BTreeMap<String, ProbeRead> = BTreeMap::new();
        let mut connected = false;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let event = tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    for f in cfg.filters() {
                        let _ = client.try_subscribe(f, QoS::AtMostOnce);
                    }
                    if cfg.kind == GatewayKind::Sparkplug && cfg.rebirth {
                        let nodes: std::collections::BTreeSet<(String, String)> = self
                            .checked
                            .mappings
                            .iter()
                            .map(|m| (m.cfg.group.clone(), m.cfg.node.clone()))
                            .collect();
                        for (group, node) in nodes {
                            let topic = format!("{}/{group}/NCMD/{node}", sparkplug::NAMESPACE);
                            let _ = client.try_publish(
                                topic,
                                QoS::AtLeastOnce,
                                false,
                                sparkplug_b::rebirth_request(0).encode_to_vec(),
                            );
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let (values, _) = self.decode(&mut host, &p.topic, &p.payload, 0);
                    for v in values {
                        if let (Some(m), Some(value)) = (
                            self.by_tag
                                .get(&(v.node.clone(), v.group.clone(), v.device.clone(), v.tag.clone())),
                            v.value,
                        ) {
                            seen.insert(
                                m.key.clone(),
                                ProbeRead {
                                    indicator: m.cfg.indicator.clone(),
                                    point: m.cfg.point.clone(),
                                    value: value * m.cfg.scale,
                                    unit: m.cfg.unit.clone(),
                                },
                            );
                        }
                    }
                    if seen.len() == self.checked.mappings.len() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = client.try_disconnect();
                    return vec![ProbeRow::error(
                        "mqtt_gateway",
                        target,
                        format!("cannot connect to the plant broker: {e}"),
                    )];
                }
            }
        }
        let _ = client.try_disconnect();
        if !connected {
            return vec![ProbeRow::error(
                "mqtt_gateway",
                target,
                "no answer from the plant broker in time",
            )];
        }
        if seen.is_empty() {
            return vec![ProbeRow::error(
                "mqtt_gateway",
                target,
                format!("connected, but no mapped tag arrived within {} s", wait.as_secs()),
            )];
        }
        vec![ProbeRow {
            source: "mqtt_gateway".into(),
            target,
            result: Ok(seen.into_values().collect()),
        }]
    }
}

#[cfg(test)]
mod tests;

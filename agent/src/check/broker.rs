//! `check`'s broker probe: for every upstream, connect as the agent would
//! (TLS, user name and password), then test-publish on each data topic the
//! agent will use and report what the broker answered, one row per upstream.
//!
//! The probe speaks MQTT 5 so the broker's PUBACK says whether the publish
//! was allowed: under MQTT 3.1.1 Mosquitto acknowledges a publish its ACL
//! denied like any other, and an agent would delete batches nobody got.
//! A broker that only speaks 3.1.1 is probed with 3.1.1 and the row says
//! that a denial cannot be seen there. The test message is empty (an
//! aggregator acknowledges an empty data message as a probe and stores
//! nothing), sent at QoS 1, not retained, under a client id of its own so
//! a running agent's session is not taken over.

use crate::config::Upstream;
use crate::sources::probe::ProbeRow;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use rumqttc::Outgoing;
use std::collections::BTreeMap;
use std::time::Duration;
use zonesync_proto::{AgentId, EnterpriseId, Topic, ZoneId};

/// How long one upstream gets to connect and acknowledge every test message.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the broker answered to one upstream's probe.
#[derive(Debug)]
enum Answer {
    /// Logged in; each topic's PUBACK reason (MQTT 5).
    V5(BTreeMap<String, PubAckReason>),
    /// Logged in over MQTT 3.1.1: every publish acknowledged, denials unseen.
    V311,
}

/// Why a probe failed before the broker answered the publishes.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("TLS settings: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Refused(String),
    #[error("the broker refused MQTT 5 and MQTT 3.1.1")]
    Version,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {}s", PROBE_TIMEOUT.as_secs())]
    Timeout,
}

/// One row per upstream: connected, logged in and allowed to publish on every data topic, or why not.
pub async fn probe_upstreams(
    agent: &AgentId,
    zone: &ZoneId,
    enterprises: &[EnterpriseId],
    upstreams: &[Upstream],
) -> Vec<ProbeRow> {
    let topics: Vec<String> = enterprises.iter().map(|e| Topic::data(zone, agent, e)).collect();
    let mut rows = Vec::with_capacity(upstreams.len());
    for (i, u) in upstreams.iter().enumerate() {
        let target = format!("upstream {} {}:{}", u.name, u.mqtt.host, u.mqtt.port);
        let client_id = format!("{agent}-check-{}-{i}", std::process::id());
        // A broker that does not speak MQTT 5 refuses the version or just
        // closes the connection: try 3.1.1, and keep the first error if that fails too.
        let answer = match probe_v5(u, &client_id, &topics).await {
            Err(e @ (ProbeError::Version | ProbeError::Connect(_))) => {
                probe_v311(u, &client_id, &topics).await.map_err(|_| e)
            }
            other => other,
        };
        rows.push(row(&target, u, &topics, answer));
    }
    rows
}

fn row(target: &str, u: &Upstream, topics: &[String], answer: Result<Answer, ProbeError>) -> ProbeRow {
    let user = u.mqtt.username.as_deref().unwrap_or("(anonymous)");
    match answer {
        Err(e) => ProbeRow::error("mqtt", target.to_owned(), e),
        Ok(Answer::V311) => ProbeRow::ok(
            "mqtt",
            format!(
                "{target} (logged in as {user}, {} test messages acknowledged; MQTT 3.1.1 broker: an ACL denial cannot be seen)",
                topics.len()
            ),
        ),
        Ok(Answer::V5(reasons)) => {
            let denied: Vec<String> = reasons
                .iter()
                .filter(|(_, r)| !matches!(r, PubAckReason::Success | PubAckReason::NoMatchingSubscribers))
                .map(|(t, r)| format!("{t}: {}", describe(r)))
                .collect();
            if !denied.is_empty() {
                return ProbeRow::error(
                    "mqtt",
                    target.to_owned(),
                    format!(
                        "logged in as {user}, but the broker refused publishing on {}",
                        denied.join("; ")
                    ),
                );
            }
            let unheard = reasons
                .values()
                .filter(|r| **r == PubAckReason::NoMatchingSubscribers)
                .count();
            let note = if unheard > 0 {
                format!(", {unheard} with no subscriber yet (is the aggregator connected?)")
            } else {
                String::new()
            };
            ProbeRow::ok(
                "mqtt",
                format!(
                    "{target} (logged in as {user}, publishing allowed on {} data topics{note})",
                    topics.len()
                ),
            )
        }
    }
}

fn describe(r: &PubAckReason) -> &'static str {
    match r {
        PubAckReason::NotAuthorized => "not authorized (the broker's ACL does not let this user write it)",
        PubAckReason::TopicNameInvalid => "topic name invalid",
        PubAckReason::QuotaExceeded => "quota exceeded",
        PubAckReason::PayloadFormatInvalid => "payload format invalid",
        PubAckReason::PacketIdentifierInUse => "packet identifier in use",
        PubAckReason::ImplementationSpecificError => "refused by the broker (implementation-specific error)",
        PubAckReason::UnspecifiedError => "refused by the broker (unspecified error)",
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => "accepted",
    }
}

fn refused(code: ConnectReturnCode) -> ProbeError {
    ProbeError::Refused(match code {
        ConnectReturnCode::BadUserNamePassword => "login refused: bad user name or password".into(),
        // Mosquitto answers a wrong password this way under MQTT 5.
        ConnectReturnCode::NotAuthorized => {
            "login refused: not authorized (a wrong user name or password, or a user the broker does not allow)".into()
        }
        ConnectReturnCode::Banned => "login refused: banned".into(),
        ConnectReturnCode::UnsupportedProtocolVersion | ConnectReturnCode::RefusedProtocolVersion => {
            return ProbeError::Version
        }
        other => format!("connection refused by the broker: {other:?}"),
    })
}

/// Connects with MQTT 5 and publishes the test messages; their PUBACK reasons.
async fn probe_v5(u: &Upstream, client_id: &str, topics: &[String]) -> Result<Answer, ProbeError> {
    let mut o = MqttOptions::new(client_id, u.mqtt.host.clone(), u.mqtt.port);
    o.set_transport(crate::tls::transport(u.mqtt.tls.as_ref())?);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_clean_start(true);
    if let (Some(user), Some(pass)) = (&u.mqtt.username, &u.mqtt.password) {
        o.set_credentials(user.clone(), pass.clone());
    }
    let (client, mut events) = AsyncClient::new(o, topics.len() + 4);
    let run = async {
        // Packet ids are given in publish order; PUBACKs name the id.
        let (mut sent, mut reasons) = (Vec::new(), BTreeMap::new());
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    if c.code != ConnectReturnCode::Success {
                        return Err(refused(c.code));
                    }
                    for t in topics {
                        client
                            .publish(t.clone(), QoS::AtLeastOnce, false, Vec::new())
                            .await
                            .map_err(|e| ProbeError::Connect(e.to_string()))?;
                    }
                    if topics.is_empty() {
                        return Ok(Answer::V5(reasons));
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => sent.push(pkid),
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    if let Some(i) = sent.iter().position(|p| *p == a.pkid) {
                        if let Some(t) = topics.get(i) {
                            reasons.insert(t.clone(), a.reason);
                        }
                    }
                    if reasons.len() == topics.len() {
                        return Ok(Answer::V5(reasons));
                    }
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return Err(refused(code)),
                Err(ConnectionError::MqttState(rumqttc::v5::StateError::ConnFail { reason })) => {
                    return Err(refused(reason))
                }
                Err(e) => return Err(ProbeError::Connect(e.to_string())),
            }
        }
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, run)
        .await
        .unwrap_or(Err(ProbeError::Timeout));
    let _ = client.try_disconnect();
    answer
}

/// Connects with MQTT 3.1.1 and publishes the test messages (all acknowledged alike).
async fn probe_v311(u: &Upstream, client_id: &str, topics: &[String]) -> Result<Answer, ProbeError> {
    use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new(client_id, u.mqtt.host.clone(), u.mqtt.port);
    o.set_transport(crate::tls::transport(u.mqtt.tls.as_ref())?);
    o.set_keep_alive(Duration::from_secs(10));
    if let (Some(user), Some(pass)) = (&u.mqtt.username, &u.mqtt.password) {
        o.set_credentials(user.clone(), pass.clone());
    }
    let (client, mut events) = AsyncClient::new(o, topics.len() + 4);
    let run = async {
        let mut acked = 0;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for t in topics {
                        client
                            .publish(t.clone(), QoS::AtLeastOnce, false, Vec::new())
                            .await
                            .map_err(|e| ProbeError::Connect(e.to_string()))?;
                    }
                    if topics.is_empty() {
                        return Ok(Answer::V311);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    if acked == topics.len() {
                        return Ok(Answer::V311);
                    }
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => {
                    return Err(ProbeError::Refused(match code {
                        ConnectReturnCode::BadUserNamePassword => "login refused: bad user name or password".into(),
                        ConnectReturnCode::NotAuthorized => "login refused: not authorized".into(),
                        other => format!("connection refused by the broker: {other:?}"),
                    }))
                }
                Err(e) => return Err(ProbeError::Connect(e.to_string())),
            }
        }
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, run)
        .await
        .unwrap_or(Err(ProbeError::Timeout));
    let _ = client.try_disconnect();
    answer
}

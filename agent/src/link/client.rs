//! The link's broker connection in either MQTT version, seen the same way:
//! the session loop publishes, subscribes and reads [`LinkEvent`]s, and does
//! not care which rumqttc client is underneath.
//!
//! Why two: MQTT 5 is what makes a broker's ACL denial visible — its PUBACK
//! carries a reason code, and Mosquitto 2 answers a denied publish with
//! 0x87 "not authorized" — while under MQTT 3.1.1 the same denial is
//! acknowledged like a success. MQTT 3.1.1 stays for brokers without MQTT 5
//! (`protocol = "3.1.1"`), where only the aggregator's confirmation keeps a
//! denied batch from being deleted.

use crate::config::MqttProtocol;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason, SubscribeReasonCode as SubCode5};
use rumqttc::{Outgoing, Packet, QoS, SubscribeReasonCode};
use zonesync_runtime::mqtt::ConnectSettings;
use zonesync_runtime::tls::TlsError;

/// What the link sets on a connection beyond the shared settings.
pub(super) struct Tuning {
    /// Publishes in flight at once.
    pub inflight: u16,
    /// Requests queued to the event loop.
    pub channel: usize,
    /// The last will: topic and payload (retained, QoS 1).
    pub will: (String, Vec<u8>),
}

/// The request side of a connection.
pub(super) enum Client {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// The event side of a connection (boxed: the MQTT 5 event loop is large).
pub(super) enum Events {
    V5(Box<rumqttc::v5::EventLoop>),
    V311(Box<rumqttc::EventLoop>),
}

/// A broker's refusal of one publish, from an MQTT 5 PUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// The reason code on the wire.
    pub code: u8,
    /// What it means.
    pub reason: &'static str,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (reason code 0x{:02x})", self.reason, self.code)
    }
}

/// What the link sees of the broker, in either version.
#[derive(Debug)]
pub(super) enum LinkEvent {
    /// The broker accepted the connection.
    Connected,
    /// A queued publish went out under this packet id (in request order).
    Sent(u16),
    /// The PUBACK of a packet id: accepted, or refused with a reason (MQTT 5 only).
    Acked { pkid: u16, denied: Option<Denial> },
    /// A message on a subscribed topic (a confirmation).
    Message(Vec<u8>),
    /// The broker refused a subscription.
    SubscribeRefused,
    /// Anything else (pings, outgoing acks).
    Other,
}

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum LinkError {
    /// The broker refused the connection (login, version).
    Refused(String),
    /// The connection failed or broke.
    Lost(String),
}

/// Whether an MQTT 5 PUBACK reason is a refusal, and which. "No matching
/// subscribers" is a success: the broker took the message (an aggregator
/// with a persistent session may simply be away).
pub fn denial(reason: PubAckReason) -> Option<Denial> {
    let (code, reason) = match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => return None,
        PubAckReason::UnspecifiedError => (0x80, "unspecified error"),
        PubAckReason::ImplementationSpecificError => (0x83, "implementation-specific error"),
        PubAckReason::NotAuthorized => (
            0x87,
            "not authorized (the broker's ACL does not let this agent publish on the topic)",
        ),
        PubAckReason::TopicNameInvalid => (0x90, "topic name invalid"),
        PubAckReason::PacketIdentifierInUse => (0x91, "packet identifier in use"),
        PubAckReason::QuotaExceeded => (0x97, "quota exceeded"),
        PubAckReason::PayloadFormatInvalid => (0x99, "payload format invalid"),
    };
    Some(Denial { code, reason })
}

/// Opens a connection (nothing is sent until [`Events::poll`] is called).
pub(super) fn open(
    settings: &ConnectSettings,
    protocol: MqttProtocol,
    tuning: Tuning,
) -> Result<(Client, Events), TlsError> {
    let (will_topic, will_payload) = tuning.will;
    Ok(match protocol {
        MqttProtocol::V5 => {
            let mut o = settings.options_v5()?;
            o.set_clean_start(true);
            o.set_outgoing_inflight_upper_limit(tuning.inflight);
            o.set_request_channel_capacity(tuning.channel);
            o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                will_topic,
                will_payload,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                true,
                None,
            ));
            let (c, e) = rumqttc::v5::AsyncClient::new(o, tuning.channel);
            (Client::V5(c), Events::V5(Box::new(e)))
        }
        MqttProtocol::V311 => {
            let mut o = settings.options()?;
            o.set_clean_session(true);
            o.set_inflight(tuning.inflight);
            o.set_request_channel_capacity(tuning.channel);
            o.set_last_will(rumqttc::LastWill::new(will_topic, will_payload, QoS::AtLeastOnce, true));
            let (c, e) = rumqttc::AsyncClient::new(o, tuning.channel);
            (Client::V311(c), Events::V311(Box::new(e)))
        }
    })
}

impl Client {
    /// Queues a QoS 1 publish without waiting; false if the queue is full or closed.
    pub fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) -> bool {
        match self {
            Self::V5(c) => c
                .try_publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, retain, payload)
                .is_ok(),
            Self::V311(c) => c.try_publish(topic, QoS::AtLeastOnce, retain, payload).is_ok(),
        }
    }

    /// Queues a QoS 1 subscription; false if the queue is full or closed.
    pub fn subscribe(&self, topic: &str) -> bool {
        match self {
            Self::V5(c) => c.try_subscribe(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce).is_ok(),
            Self::V311(c) => c.try_subscribe(topic, QoS::AtLeastOnce).is_ok(),
        }
    }

    /// Queues a clean disconnect.
    pub fn disconnect(&self) {
        let _ = match self {
            Self::V5(c) => c.try_disconnect().is_ok(),
            Self::V311(c) => c.try_disconnect().is_ok(),
        };
    }
}

impl Events {
    /// The next event, or why the connection ended.
    pub async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match self {
            Self::V5(e) => {
                use rumqttc::v5::{ConnectionError, Event, StateError};
                match e.poll().await {
                    Ok(Event::Incoming(p)) => Ok(match p {
                        Packet5::ConnAck(_) => LinkEvent::Connected,
                        Packet5::PubAck(a) => LinkEvent::Acked {
                            pkid: a.pkid,
                            denied: denial(a.reason),
                        },
                        Packet5::Publish(p) => LinkEvent::Message(p.payload.to_vec()),
                        Packet5::SubAck(s) if s.return_codes.iter().any(|c| !matches!(c, SubCode5::Success(_))) => {
                            LinkEvent::SubscribeRefused
                        }
                        _ => LinkEvent::Other,
                    }),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(LinkEvent::Sent(pkid)),
                    Ok(Event::Outgoing(_)) => Ok(LinkEvent::Other),
                    Err(ConnectionError::ConnectionRefused(code))
                    | Err(ConnectionError::MqttState(StateError::ConnFail { reason: code })) => {
                        Err(LinkError::Refused(format!("{code:?}")))
                    }
                    Err(e) => Err(LinkError::Lost(e.to_string())),
                }
            }
            Self::V311(e) => {
                use rumqttc::{ConnectionError, Event};
                match e.poll().await {
                    Ok(Event::Incoming(p)) => Ok(match p {
                        Packet::ConnAck(_) => LinkEvent::Connected,
                        Packet::PubAck(a) => LinkEvent::Acked {
                            pkid: a.pkid,
                            denied: None,
                        },
                        Packet::Publish(p) => LinkEvent::Message(p.payload.to_vec()),
                        Packet::SubAck(s)
                            if s.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
                        {
                            LinkEvent::SubscribeRefused
                        }
                        _ => LinkEvent::Other,
                    }),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(LinkEvent::Sent(pkid)),
                    Ok(Event::Outgoing(_)) => Ok(LinkEvent::Other),
                    Err(ConnectionError::ConnectionRefused(code)) => Err(LinkError::Refused(format!("{code:?}"))),
                    Err(e) => Err(LinkError::Lost(e.to_string())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusing_puback_reason_is_a_denial_with_its_wire_code() {
        assert_eq!(denial(PubAckReason::Success), None);
        assert_eq!(denial(PubAckReason::NoMatchingSubscribers), None);
        let d = denial(PubAckReason::NotAuthorized).expect("a denial");
        assert_eq!(d.code, 0x87);
        assert!(d.to_string().contains("not authorized") && d.to_string().contains("0x87"));
        let codes: Vec<u8> = [
            PubAckReason::UnspecifiedError,
            PubAckReason::ImplementationSpecificError,
            PubAckReason::TopicNameInvalid,
            PubAckReason::PacketIdentifierInUse,
            PubAckReason::QuotaExceeded,
            PubAckReason::PayloadFormatInvalid,
        ]
        .into_iter()
        .map(|r| denial(r).map_or(0, |d| d.code))
        .collect();
        assert_eq!(codes, [0x80, 0x83, 0x90, 0x91, 0x97, 0x99]);
    }
}

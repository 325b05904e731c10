//! An MQTT publisher that reports each publish's PUBACK, so the outbound
//! queue can keep a message until the broker has really taken it.
//!
//! As in the agent's link, requests go in with `try_publish` from the task
//! that polls the event loop, and `Outgoing::Publish(pkid)` events (which come
//! in request order) pair each request with its packet id. On a connection
//! error every waiting request is answered "not delivered" and the client is
//! rebuilt; the queue retries later.

use crate::config::MqttConfig;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use zonesync_runtime::shutdown::Shutdown;

/// One publish request.
pub struct Request {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Retained.
    pub retain: bool,
    /// Answered true on PUBACK, false if the connection failed first.
    pub done: oneshot::Sender<bool>,
}

/// Handle for sending requests.
#[derive(Clone)]
pub struct Publisher(mpsc::Sender<Request>);

impl Publisher {
    /// Publishes at QoS 1 and waits for the PUBACK (false on failure or after `wait`).
    pub async fn publish(&self, topic: String, payload: Vec<u8>, retain: bool, wait: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        let req = Request {
            topic,
            payload,
            retain,
            done: tx,
        };
        if self.0.send(req).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(wait, rx).await, Ok(Ok(true)))
    }
}

/// Starts the publisher task; it runs until shutdown.
pub fn start(mqtt: &MqttConfig, mut shutdown: Shutdown) -> (Publisher, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Request>(64);
    let mqtt = mqtt.clone();
    let task = tokio::spawn(async move {
        let mut backoff = mqtt.backoff();
        let settings = mqtt.connect_settings(format!("{}-pub", mqtt.client_id), mqtt.max_packet_bytes);
        loop {
            let o = match settings.options() {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!("publisher TLS settings: {e}; nothing will be published");
                    return;
                }
            };
            let (client, mut events) = AsyncClient::new(o, 128);
            let mut awaiting: VecDeque<oneshot::Sender<bool>> = VecDeque::new();
            let mut by_pkid: HashMap<u16, oneshot::Sender<bool>> = HashMap::new();
            let failed = loop {
                tokio::select! {
                    _ = shutdown.wait() => {
                        let _ = client.try_disconnect();
                        return;
                    }
                    req = rx.recv(), if awaiting.len() + by_pkid.len() < 32 => {
                        let Some(req) = req else { return };
                        if client.try_publish(req.topic, QoS::AtLeastOnce, req.retain, req.payload).is_ok() {
                            awaiting.push_back(req.done);
                        } else {
                            let _ = req.done.send(false);
                        }
                    }
                    ev = events.poll() => match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => backoff.reset(),
                        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                            if let Some(done) = awaiting.pop_front() {
                                by_pkid.insert(pkid, done);
                            }
                        }
                        Ok(Event::Incoming(Packet::PubAck(a))) => {
                            if let Some(done) = by_pkid.remove(&a.pkid) {
                                let _ = done.send(true);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => break e,
                    },
                }
            };
            tracing::warn!(
                delay_ms = backoff.delay().as_millis() as u64,
                "publisher connection: {failed}"
            );
            for done in awaiting.drain(..).chain(by_pkid.drain().map(|(_, d)| d)) {
                let _ = done.send(false);
            }
            if !backoff.wait(&mut shutdown).await {
                return;
            }
        }
    });
    (Publisher(tx), task)
}

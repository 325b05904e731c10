//! A subscriber standing in for a data center: it counts, per batch sequence
//! number, the readings received and how many times the batch came (so
//! duplicates are told from new data), and may answer each batch (the tests
//! use that to play the aggregator's end-to-end confirmation).

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zonesync_proto::Batch;

/// What a collector answers to one batch: a message to publish (topic, payload), or nothing.
pub type Responder = Box<dyn FnMut(&Batch) -> Option<(String, Vec<u8>)> + Send>;

/// Per sequence number: readings carried, times received.
pub type Seen = BTreeMap<u64, (u64, u32)>;

/// A running subscriber; stops when dropped.
pub struct Collector {
    seen: Arc<Mutex<Seen>>,
    /// Its client, to publish from the test.
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Subscribes (QoS 1, persistent session `client_id`, so a broker that is
    /// stopped and restarted keeps queueing for it) to `filter` on the broker
    /// at `port`.
    pub fn start(port: u16, client_id: &str, filter: &str, mut respond: Option<Responder>) -> Self {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut events) = AsyncClient::new(o, 1000);
        let seen = Arc::new(Mutex::new(Seen::new()));
        let (c, s, filter) = (client.clone(), seen.clone(), filter.to_owned());
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Ok(b) = serde_json::from_slice::<Batch>(&p.payload) else {
                            continue;
                        };
                        {
                            let mut seen = s.lock().unwrap();
                            let e = seen.entry(b.seq).or_insert((b.readings.len() as u64, 0));
                            e.1 += 1;
                        }
                        if let Some((topic, payload)) = respond.as_mut().and_then(|r| r(&b)) {
                            let _ = c.try_publish(topic, QoS::AtLeastOnce, false, payload);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self { seen, client, task }
    }

    /// What has been received so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Readings received, each batch counted once.
    pub fn readings(&self) -> u64 {
        self.seen.lock().unwrap().values().map(|(n, _)| n).sum()
    }

    /// Waits until `readings()` reaches `want`; panics with what it saw after `timeout`.
    pub async fn wait_readings(&self, want: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.readings() < want {
            assert!(
                Instant::now() < deadline,
                "{} of {want} readings received within {timeout:?}",
                self.readings()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls a running agent's status.json until `done` holds for it; panics after `timeout`.
pub async fn wait_status(
    data_dir: &std::path::Path,
    timeout: Duration,
    what: &str,
    done: impl Fn(&zonesync_agent::status::Status) -> bool,
) -> zonesync_agent::status::Status {
    let path = zonesync_agent::status::path(data_dir);
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(s) = zonesync_agent::status::read(&path) {
            if done(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {what} within {timeout:?}; last: {}",
            last.map(|s| serde_json::to_string_pretty(&s).unwrap_or_default())
                .unwrap_or_else(|| "none".into())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

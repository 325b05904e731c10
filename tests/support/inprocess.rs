//! The aggregator run in-process against an embedded broker (rumqttd), on
//! the hand-computed data set: the set-up most end-to-end tests share.

use crate::dataset::{self, Dataset};
use crate::Api;
use std::path::Path;
use zonesync_agent::shutdown::{self, Shutdown, Trigger};
use zonesync_aggregator::config::AggregatorConfig;
use zonesync_aggregator::Running;
use zonesync_demo::broker::{start_embedded, EmbeddedBroker};

/// A running set-up; `stop` shuts it down and waits.
pub struct InProcess {
    /// The embedded broker.
    pub broker: EmbeddedBroker,
    /// The data set's files.
    pub ds: Dataset,
    /// A client for the aggregator's API.
    pub api: Api,
    /// The aggregator.
    pub running: Running,
    /// Shutdown signal, for agents started alongside.
    pub signal: Shutdown,
    trigger: Trigger,
}

impl InProcess {
    /// Starts a broker accepting `max_payload` bytes, writes the data set with
    /// `ticks` simulator ticks, passes the aggregator's config text through
    /// `edit`, and starts the aggregator.
    pub async fn start(dir: &Path, ticks: u64, max_payload: usize, edit: impl FnOnce(String) -> String) -> Self {
        let broker = start_embedded(0, max_payload).expect("embedded broker");
        let ds = dataset::write(dir, broker.addr.port(), ticks, 2);
        ds.speak_mqtt311();
        let cfg = edit(std::fs::read_to_string(&ds.aggregator).expect("aggregator config"));
        std::fs::write(&ds.aggregator, cfg).expect("write aggregator config");
        let (trigger, signal) = shutdown::channel();
        let running =
            zonesync_aggregator::start(AggregatorConfig::load(&ds.aggregator).expect("config"), signal.clone())
                .await
                .expect("aggregator starts");
        let api = Api::new(&format!("http://{}", running.http_addr));
        Self {
            broker,
            ds,
            api,
            running,
            signal,
            trigger,
        }
    }

    /// Fires shutdown and waits for the aggregator's tasks.
    pub async fn stop(self) {
        self.trigger.fire();
        self.running.wait().await;
    }
}

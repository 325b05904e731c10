//! Every aggregator counter, defined once, and its Prometheus rendering.
//! Names follow `zonesync_aggregator_<what>_<unit>`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters for the ingest path.
#[derive(Debug, Default)]
pub struct Metrics {
    /// MQTT messages received.
    pub messages_received: AtomicU64,
    /// Batches stored (new).
    pub batches_stored: AtomicU64,
    /// Batches dropped as already seen (agent, seq).
    pub batches_duplicate: AtomicU64,
    /// Readings stored: new stored keys (a corrected value at a stored key is not one).
    pub readings_stored: AtomicU64,
    /// Stored values replaced by a later report (corrected period figures).
    pub readings_replaced: AtomicU64,
    /// Readings stored from backfilled (historical) batches; included in `readings_stored`.
    pub readings_backfilled: AtomicU64,
    /// Backfilled readings and declarations not stored because a newer value is held.
    pub backfill_stale: AtomicU64,
    /// Readings and declarations of live batches not stored because the same
    /// agent's later batch, stored first, holds a newer value (resends).
    pub overtaken_stale: AtomicU64,
    /// Readings identical to one already stored under another batch.
    pub readings_duplicate: AtomicU64,
    /// Declarations stored.
    pub declarations_stored: AtomicU64,
    /// Presence messages handled.
    pub presence_received: AtomicU64,
    /// PUBACKs sent after durable storage.
    pub acks_sent: AtomicU64,
    /// End-to-end confirmations published (one per agent per flushed group).
    pub confirms_published: AtomicU64,
    /// Dead letters written.
    pub dead_letters: AtomicU64,
    /// Storage errors.
    pub store_errors: AtomicU64,
    /// 1 while the MQTT session is up.
    pub mqtt_connected: AtomicU64,
    /// Alerts raised.
    pub alerts_raised: AtomicU64,
    /// Alerts cleared.
    pub alerts_cleared: AtomicU64,
    /// Outbound messages (alerts, summaries) delivered.
    pub deliveries: AtomicU64,
    /// Outbound delivery attempts that failed (and will be retried).
    pub delivery_failures: AtomicU64,
    /// Rejections by reason label.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Adds one rejection with `label`.
    pub fn reject(&self, label: &'static str) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(label).or_default() += 1;
        }
    }

    /// Rejections by label.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        self.rejected.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, u64); 20] = [
            (
                "messages_received_total",
                "MQTT messages received.",
                "counter",
                g(&self.messages_received),
            ),
            (
                "batches_stored_total",
                "Batches stored.",
                "counter",
                g(&self.batches_stored),
            ),
            (
                "batches_duplicate_total",
                "Batches dropped as already stored (agent, seq).",
                "counter",
                g(&self.batches_duplicate),
            ),
            (
                "readings_stored_total",
                "Readings stored (new stored keys).",
                "counter",
                g(&self.readings_stored),
            ),
            (
                "readings_replaced_total",
                "Stored values replaced by a later report (corrected period figures); not new readings.",
                "counter",
                g(&self.readings_replaced),
            ),
            (
                "readings_backfilled_total",
                "Readings stored from backfilled batches (included in readings_stored_total).",
                "counter",
                g(&self.readings_backfilled),
            ),
            (
                "backfill_stale_total",
                "Backfilled readings and declarations not stored because a newer value is held.",
                "counter",
                g(&self.backfill_stale),
            ),
            (
                "overtaken_stale_total",
                "Readings and declarations of resent live batches not stored because a newer value from the same agent is held.",
                "counter",
                g(&self.overtaken_stale),
            ),
            (
                "readings_duplicate_total",
                "Readings already stored under another batch.",
                "counter",
                g(&self.readings_duplicate),
            ),
            (
                "declarations_stored_total",
                "Declarations stored.",
                "counter",
                g(&self.declarations_stored),
            ),
            (
                "presence_received_total",
                "Presence messages handled.",
                "counter",
                g(&self.presence_received),
            ),
            (
                "acks_sent_total",
                "PUBACKs sent after durable storage.",
                "counter",
                g(&self.acks_sent),
            ),
            (
                "confirms_published_total",
                "End-to-end confirmations published to agents after durable storage.",
                "counter",
                g(&self.confirms_published),
            ),
            (
                "dead_letters_total",
                "Dead letters written.",
                "counter",
                g(&self.dead_letters),
            ),
            (
                "store_errors_total",
                "Storage errors.",
                "counter",
                g(&self.store_errors),
            ),
            (
                "mqtt_connected",
                "1 while the MQTT session is up.",
                "gauge",
                g(&self.mqtt_connected),
            ),
            (
                "alerts_raised_total",
                "Alerts raised.",
                "counter",
                g(&self.alerts_raised),
            ),
            (
                "alerts_cleared_total",
                "Alerts cleared.",
                "counter",
                g(&self.alerts_cleared),
            ),
            (
                "deliveries_total",
                "Outbound messages (alerts, summaries) delivered.",
                "counter",
                g(&self.deliveries),
            ),
            (
                "delivery_failures_total",
                "Outbound delivery attempts that failed and will be retried.",
                "counter",
                g(&self.delivery_failures),
            ),
        ];
        let mut s = String::new();
        for (name, help, kind, v) in rows {
            let _ = writeln!(s, "# HELP zonesync_aggregator_{name} {help}");
            let _ = writeln!(s, "# TYPE zonesync_aggregator_{name} {kind}");
            let _ = writeln!(s, "zonesync_aggregator_{name} {v}");
        }
        let _ = writeln!(
            s,
            "# HELP zonesync_aggregator_rejected_total Payloads or items refused, by reason."
        );
        let _ = writeln!(s, "# TYPE zonesync_aggregator_rejected_total counter");
        for (label, v) in self.rejected() {
            let _ = writeln!(s, "zonesync_aggregator_rejected_total{{reason=\"{label}\"}} {v}");
        }
        s
    }
}

/// Per-agent figures from the state, in Prometheus text:
/// `zonesync_aggregator_agent_dropped_readings{zone,agent}` and
/// `zonesync_aggregator_agent_dropped_sent_readings{zone,agent}` (what the agent's
/// last presence reported), `zonesync_aggregator_agent_backfilled_readings_total{zone,agent}`
/// and the batches refused for their numbering (`…_refused_reused_seq_total`, `…_refused_seq_ahead_total`).
pub fn render_agents(state: &crate::state::State) -> String {
    type Field = fn(&crate::state::AgentState) -> u64;
    let families: [(&str, &str, &str, Field); 5] = [
        (
            "zonesync_aggregator_agent_dropped_readings",
            "gauge",
            "Readings the agent's outbox policy dropped before sending them (its running total).",
            |a| a.dropped_readings,
        ),
        (
            "zonesync_aggregator_agent_dropped_sent_readings",
            "gauge",
            "Readings the agent's outbox policy dropped after sending them unacknowledged (its running total; some may be stored).",
            |a| a.dropped_sent_readings,
        ),
        (
            "zonesync_aggregator_agent_backfilled_readings_total",
            "counter",
            "Backfilled readings stored from the agent since start.",
            |a| a.backfilled_readings,
        ),
        (
            "zonesync_aggregator_agent_refused_reused_seq_total",
            "counter",
            "Batches refused since start because their (outbox, seq) was held with other content: an outbox restored from a copy, or a forger numbering ahead.",
            |a| a.refused_reused_seq,
        ),
        (
            "zonesync_aggregator_agent_refused_seq_ahead_total",
            "counter",
            "Batches refused since start because their seq was far beyond what the outbox announced.",
            |a| a.refused_seq_ahead,
        ),
    ];
    let mut s = String::new();
    for (name, kind, help, field) in families {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
        for (zone, zs) in &state.zones {
            for (agent, a) in &zs.agents {
                let _ = writeln!(s, "{name}{{zone=\"{zone}\",agent=\"{agent}\"}} {}", field(a));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_rejections() {
        let m = Metrics::default();
        m.reject("unknown_unit");
        m.reject("unknown_unit");
        m.batches_stored.fetch_add(3, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("zonesync_aggregator_rejected_total{reason=\"unknown_unit\"} 2"));
        assert!(text.contains("zonesync_aggregator_batches_stored_total 3"));
    }
}

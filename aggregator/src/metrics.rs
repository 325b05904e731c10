//! Every aggregator metric, declared once (one row of the `metrics!` table
//! or of `render_agents`' families), and its Prometheus rendering.
//! Names follow `zonesync_aggregator_<what>_<unit>`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Declares each process-wide metric once: its field, its Prometheus kind and
/// its help text (also the field's doc). The exposed name is
/// `zonesync_aggregator_<field>`, with `_total` added to counters. Counted
/// metrics become [`Metrics`] fields; sampled ones (read from elsewhere at
/// scrape time) become [`Sampled`] fields.
macro_rules! metrics {
    (
        counted { $($field:ident: $kind:literal, $help:literal;)* }
        sampled { $($sfield:ident: $skind:literal, $shelp:literal;)* }
    ) => {
        /// Counters and gauges kept by the aggregator's tasks.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $field: AtomicU64,)*
            /// Rejections by reason label.
            rejected: Mutex<BTreeMap<&'static str, u64>>,
        }

        /// Figures read at scrape time from where they live (the store).
        #[derive(Debug, Default, Clone, Copy)]
        pub struct Sampled {
            $(#[doc = $shelp] pub $sfield: u64,)*
        }

        impl Metrics {
            /// Every declared metric with its value: (field, kind, help, value).
            fn rows(&self, sampled: &Sampled) -> Vec<(&'static str, &'static str, &'static str, u64)> {
                vec![
                    $((stringify!($field), $kind, $help, self.$field.load(Ordering::Relaxed)),)*
                    $((stringify!($sfield), $skind, $shelp, sampled.$sfield),)*
                ]
            }
        }
    };
}

metrics! {
    counted {
        messages_received: "counter", "MQTT messages received.";
        batches_stored: "counter", "Batches stored.";
        batches_duplicate: "counter", "Batches dropped as already stored: the same (agent, outbox, seq) and the same digest.";
        readings_stored: "counter", "Readings stored (new stored keys).";
        readings_replaced: "counter", "Stored values replaced by a later report (corrected period figures); not new readings.";
        readings_backfilled: "counter", "Readings stored from backfilled batches (included in readings_stored_total).";
        backfill_stale: "counter", "Backfilled readings and declarations not stored because a newer value is held.";
        overtaken_stale: "counter", "Readings and declarations of resent live batches not stored because a newer value from the same agent is held.";
        readings_duplicate: "counter", "Readings already stored under another batch.";
        declarations_stored: "counter", "Declarations stored.";
        presence_received: "counter", "Presence messages handled.";
        probes_received: "counter", "Empty messages on data topics (`zonesync-agent check` testing its route): acknowledged, not stored.";
        acks_sent: "counter", "PUBACKs sent after durable storage.";
        confirms_published: "counter", "End-to-end confirmations published to agents after durable storage.";
        dead_letters: "counter", "Dead letters written.";
        store_errors: "counter", "Storage errors.";
        mqtt_connected: "gauge", "1 while the MQTT session is up.";
        alerts_raised: "counter", "Alerts raised.";
        alerts_cleared: "counter", "Alerts cleared.";
        deliveries: "counter", "Outbound messages (alerts, summaries) delivered.";
        delivery_failures: "counter", "Outbound delivery attempts that failed and will be retried.";
    }
    sampled {
        dead_letters_stored: "gauge", "Dead letters held in the store.";
    }
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

    /// Prometheus text exposition of every declared metric, `sampled` included.
    pub fn render(&self, sampled: &Sampled) -> String {
        let mut s = String::new();
        for (field, kind, help, v) in self.rows(sampled) {
            let suffix = if kind == "counter" { "_total" } else { "" };
            let _ = writeln!(s, "# HELP zonesync_aggregator_{field}{suffix} {help}");
            let _ = writeln!(s, "# TYPE zonesync_aggregator_{field}{suffix} {kind}");
            let _ = writeln!(s, "zonesync_aggregator_{field}{suffix} {v}");
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
/// the batches refused for their numbering (`…_refused_reused_seq_total`, `…_refused_seq_ahead_total`)
/// and `zonesync_aggregator_agent_broker_denied_batches{zone,agent}` (its broker's refusals, from its presence).
pub fn render_agents(state: &crate::state::State) -> String {
    type Field = fn(&crate::state::AgentState) -> u64;
    let families: [(&str, &str, &str, Field); 6] = [
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
        (
            "zonesync_aggregator_agent_broker_denied_batches",
            "gauge",
            "Batches the agent's broker refused in its current run (MQTT 5 PUBACK reason code, e.g. 0x87 an ACL denial), as its last presence reported; kept by the agent, not yet arrived.",
            |a| a.broker_denied_batches,
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

/// A label value as the exposition format wants it: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Each zone's goal table for `period` as gauges, so a zone already on
/// Grafana can chart its goals: `zonesync_goal_value`, `zonesync_goal_target`,
/// `zonesync_goal_completeness` and `zonesync_goal_met` (1 met, 0 not met;
/// absent for rows without a judged target), labelled by zone, goal and the
/// span the figure covers. A row without a value has no `…_value` sample:
/// a missing figure is never exported as zero.
pub fn render_goals(tables: &[(String, Vec<crate::goals::GoalRow>)]) -> String {
    use crate::goals::{GoalRow, Status};
    type Field = fn(&GoalRow) -> Option<f64>;
    let families: [(&str, &str, Field); 4] = [
        (
            "zonesync_goal_value",
            "A goal's figure over its span, in the goal's unit (shares as fractions).",
            |r| r.value,
        ),
        ("zonesync_goal_target", "A goal's target, in the goal's unit.", |r| {
            r.target
        }),
        (
            "zonesync_goal_completeness",
            "Share of the enterprise-months due that the figure covers.",
            |r| r.completeness,
        ),
        (
            "zonesync_goal_met",
            "1 where the goal's target is met, 0 where it is not; absent where not judged.",
            |r| match r.status {
                Status::Met => Some(1.0),
                Status::NotMet => Some(0.0),
                _ => None,
            },
        ),
    ];
    let mut s = String::new();
    for (name, help, field) in families {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} gauge");
        for (zone, rows) in tables {
            for r in rows {
                if let Some(v) = field(r).filter(|v| v.is_finite()) {
                    let _ = writeln!(
                        s,
                        "{name}{{zone=\"{}\",goal=\"{}\",span=\"{}\",unit=\"{}\"}} {v}",
                        label(zone),
                        label(&r.id),
                        label(&r.period),
                        label(&r.unit)
                    );
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goal_gauges_leave_out_what_is_missing_and_escape_labels() {
        let mut met = crate::testkit::goal_row();
        met.status = crate::goals::Status::Met;
        let mut none = crate::testkit::goal_row();
        none.id = "X\"1".into();
        none.value = None;
        none.status = crate::goals::Status::NoData;
        let text = render_goals(&[("z".into(), vec![met, none])]);
        let v = 2.0f64 / 3.0;
        assert!(text.contains(&format!(
            "zonesync_goal_value{{zone=\"z\",goal=\"JY27-18\",span=\"2026-01..2026-10\",unit=\"share\"}} {v}\n"
        )));
        assert!(text
            .contains("zonesync_goal_met{zone=\"z\",goal=\"JY27-18\",span=\"2026-01..2026-10\",unit=\"share\"} 1\n"));
        assert!(
            !text.contains("zonesync_goal_value{zone=\"z\",goal=\"X"),
            "no value, no sample: {text}"
        );
        assert!(
            text.contains("zonesync_goal_target{zone=\"z\",goal=\"X\\\"1\""),
            "escaped: {text}"
        );
        assert!(
            !text.contains("zonesync_goal_met{zone=\"z\",goal=\"X"),
            "not judged, no sample"
        );
    }

    #[test]
    fn renders_labelled_rejections() {
        let m = Metrics::default();
        m.reject("unknown_unit");
        m.reject("unknown_unit");
        m.batches_stored.fetch_add(3, Ordering::Relaxed);
        m.mqtt_connected.store(1, Ordering::Relaxed);
        let text = m.render(&Sampled { dead_letters_stored: 4 });
        assert!(text.contains("zonesync_aggregator_rejected_total{reason=\"unknown_unit\"} 2"));
        assert!(text.contains("zonesync_aggregator_batches_stored_total 3"));
        assert!(
            text.contains("# TYPE zonesync_aggregator_mqtt_connected gauge\nzonesync_aggregator_mqtt_connected 1\n")
        );
        assert!(text.contains(
            "# TYPE zonesync_aggregator_dead_letters_stored gauge\nzonesync_aggregator_dead_letters_stored 4\n"
        ));
    }
}

//! The agent's own metrics on an optional local port (`[metrics] listen`),
//! in Prometheus's text format: backlog, drops, last acknowledgement, source
//! restarts — everything `status.json` holds — so a zone already on
//! Prometheus and Grafana watches its gateways as it watches the rest.
//!
//! The figures are the status snapshot's own, flattened: each number or
//! flag of [`Status`] is a gauge `zonesync_agent_<field>` (in base units:
//! milliseconds and days become seconds), each upstream's
//! under `zonesync_agent_upstream_<field>{upstream="…"}`, times as Unix
//! seconds. A field added to the status is exported without touching this
//! file. Off by default: a gateway opens no port it was not asked to.
//!
//! The server answers `GET /metrics` and nothing else, one request per
//! connection, on a loopback address unless told otherwise; it is a few
//! lines over tokio rather than an HTTP framework in a binary that must fit
//! a gateway's flash.

use crate::shutdown::Shutdown;
use crate::status::{Reporter, Status};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `[metrics]`: where to serve them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` to listen on, e.g. `127.0.0.1:9465`; none (the default) serves nothing.
    pub listen: Option<String>,
}

/// Why the metrics port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("metrics: listening on {addr}: {source}")]
pub struct MetricsError {
    addr: String,
    source: std::io::Error,
}

/// Samples by metric name (each family's lines together, as the format
/// asks): (field, [(labels, value)]).
type Families = std::collections::BTreeMap<String, (String, Vec<(String, f64)>)>;

/// The status as Prometheus text.
pub fn render(status: &Status) -> String {
    let v = serde_json::to_value(status).unwrap_or(Value::Null);
    let mut families = Families::new();
    flatten(&mut families, "zonesync_agent", "", &v);
    // Each upstream's and each platform's figures, labelled by its name.
    for (list, label, prefix) in [
        ("upstreams", "upstream", "zonesync_agent_upstream"),
        ("platforms", "platform", "zonesync_agent_platform"),
    ] {
        for u in v.get(list).and_then(Value::as_array).into_iter().flatten() {
            let name = u.get("name").and_then(Value::as_str).unwrap_or("");
            let label = format!("{label}=\"{}\"", escape(name));
            flatten(&mut families, prefix, &label, u);
        }
    }
    let mut out = String::new();
    for (name, (field, samples)) in &families {
        let _ = writeln!(out, "# HELP {name} zonesync agent status: {field}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus's base units (what `promtool check metrics` asks for): a
/// field in milliseconds or days becomes seconds, named so.
fn base_units(name: &str, value: f64) -> (String, f64) {
    let mut factor = 1.0;
    let words: Vec<&str> = name
        .split('_')
        .map(|w| match w {
            "ms" => {
                factor = 0.001;
                "seconds"
            }
            "days" => {
                factor = 86_400.0;
                "seconds"
            }
            w => w,
        })
        .collect();
    (words.join("_"), value * factor)
}

/// Every number, flag and time under `v` as a gauge `prefix_<path>`.
fn flatten(families: &mut Families, prefix: &str, labels: &str, v: &Value) {
    let Some(obj) = v.as_object() else { return };
    for (k, x) in obj {
        if k == "upstreams" || k == "platforms" || k == "pid" || k == "boot" {
            continue;
        }
        let name = format!("{prefix}_{}", k.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        let value = match x {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp() as f64),
            Value::Object(_) => {
                flatten(families, &name, labels, x);
                None
            }
            _ => None,
        };
        let Some(value) = value else { continue };
        let (name, value) = if matches!(x, Value::String(_)) {
            (format!("{name}_seconds"), value)
        } else {
            base_units(&name, value)
        };
        families
            .entry(name)
            .or_insert_with(|| (k.clone(), Vec::new()))
            .1
            .push((labels.to_owned(), value));
    }
}

/// Opens the metrics port: a port already taken is a configuration error,
/// said at start, not a task failing later.
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, MetricsError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| MetricsError {
            addr: listen.to_owned(),
            source,
        })
}

/// Serves `GET /metrics` from `reporter`'s snapshot on `listener` until shutdown.
pub async fn serve(listener: tokio::net::TcpListener, reporter: Arc<Reporter>, mut shutdown: Shutdown) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving the agent's metrics at /metrics");
    }
    loop {
        let (mut conn, _) = tokio::select! {
            _ = shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let reporter = reporter.clone();
        tokio::spawn(async move {
            // One request, read within a second and at most 2 KiB: a scraper's GET fits.
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let response = if request.starts_with("GET /metrics ") || request.starts_with("GET /metrics?") {
                let body = render(&reporter.snapshot());
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 10\r\nconnection: close\r\n\r\nnot found\n".to_owned()
            };
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_of_the_status_is_a_gauge_and_each_upstream_is_labelled() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "agent": "gw-1", "zone": "z", "boot": 3, "pid": 42, "written_at": "2026-12-06T08:00:00Z",
            "connected": true, "sessions": 2, "batches_acked": 10, "items_acked": 500,
            "last_ack": "2026-12-06T07:59:58Z",
            "outbox": { "pending_items": 1200, "sealed_batches": 2, "sealed_items": 1000, "held_bytes": 4096,
                "disk_budget_bytes": 1048576, "size_on_disk": 8192, "dropped_readings": 0, "next_seq": 8,
                "oldest_pending": "2026-12-06T07:00:00Z", "store_rollbacks": 0 },
            "upstreams": [{ "name": "primary", "broker": "b:1883", "end_to_end_confirm": true, "protocol": "5",
                "connected": false, "sessions": 1, "cursor": 7, "unacked_batches": 3, "unacked_items": 90,
                "batches_acked": 10, "items_acked": 500, "last_ack": null, "dropped_readings": 4,
                "batches_sent": 13, "awaiting_confirm": 3, "resends": 0, "confirms_received": 10,
                "confirm_unknown_seqs": 0, "confirms_malformed": 0, "clock_offset_ms": -12,
                "clock_uncertainty_ms": 3 }],
            "platforms": [{ "name": "henan", "url": "https://p.example/u", "cursor": 5, "unacked_batches": 2,
                "unacked_items": 20, "dropped_readings": 0, "dropped_sent_readings": 0, "uploads": 9,
                "uploads_succeeded": 4, "records_uploaded": 40, "batches_acked": 4, "items_acked": 40,
                "last_success_unix_ms": 1_796_543_998_000u64, "readings_not_mapped": 3, "declarations_not_uploaded": 0,
                "quarterly_not_uploaded": 0, "unreadable_items": 0, "failures": { "timeout": 2, "wrong_answer": 3 },
                "last_failure": "timeout: no answer within the timeout", "last_failure_unix_ms": 0 }],
            "source_restarts": 1
        }))
        .unwrap();
        let text = render(&status);
        for line in [
            "zonesync_agent_connected 1",
            "zonesync_agent_batches_acked 10",
            "zonesync_agent_source_restarts 1",
            "zonesync_agent_last_ack_seconds 1796543998",
            "zonesync_agent_upstream_unacked_items{upstream=\"primary\"} 90",
            "zonesync_agent_upstream_dropped_readings{upstream=\"primary\"} 4",
            "zonesync_agent_upstream_connected{upstream=\"primary\"} 0",
            "zonesync_agent_upstream_clock_offset_seconds{upstream=\"primary\"} -0.012",
            "zonesync_agent_platform_unacked_items{platform=\"henan\"} 20",
            "zonesync_agent_platform_failures_wrong_answer{platform=\"henan\"} 3",
            "zonesync_agent_platform_readings_not_mapped{platform=\"henan\"} 3",
            "zonesync_agent_platform_last_success_unix_seconds{platform=\"henan\"} 1796543998",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        for line in [
            "zonesync_agent_outbox_pending_items 1200",
            "zonesync_agent_outbox_dropped_readings 0",
            "zonesync_agent_outbox_oldest_pending_seconds 1796540400",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        // Each metric described once, whatever the number of upstreams.
        let helps = text
            .lines()
            .filter(|l| l.starts_with("# HELP zonesync_agent_upstream_cursor "))
            .count();
        assert_eq!(helps, 1);
    }
}

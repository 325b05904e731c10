//! The harness's files and the facts the simulators are built on: the data
//! set with a third agent, each agent pointed at its own proxy, and what each
//! simulator produces and declares.

use super::{BUDGET_AGENT, TICKS};
use crate::dataset::{self, E};
use crate::ledger::Sim;
use std::path::{Path, PathBuf};

/// Enterprises the simulators produce for: (agent index, rates as in the
/// agent configs of support/dataset.rs, and agent-c's below).
pub(super) fn simulated() -> [(usize, Sim); 4] {
    let sim = |enterprise, kwh_rate, va_per_day| Sim {
        enterprise,
        kwh_rate,
        va_per_day,
    };
    [
        (0, sim(E[0], 10.0, 40.0)),
        (0, sim(E[1], 20.0, 100.0)),
        (1, sim(E[2], 5.0, 10.0)),
        (2, sim(E[3], 7.0, 10.0)),
    ]
}

/// Writes the data set (support/dataset.rs) plus a third agent for E4, each
/// agent pointed at its own proxy; the aggregator talks to the broker directly.
pub(super) fn write_files(
    dir: &Path,
    broker_port: u16,
    proxy_ports: &[u16],
    tick_ms: u64,
    budget: Option<u64>,
) -> (PathBuf, Vec<PathBuf>) {
    let ds = dataset::write(dir, broker_port, TICKS, tick_ms);
    let profile_c = dir.join("profile-c.toml");
    std::fs::write(
        &profile_c,
        format!(
            "[[enterprise]]\nid = \"{}\"\n[enterprise.declare]\ndt_maturity = 2\n",
            E[3]
        ),
    )
    .expect("write profile-c");
    let agent_c = dir.join("agent-c.toml");
    let text_b = std::fs::read_to_string(&ds.agent_b).expect("read agent-b config");
    let text_c = text_b
        .replace("agent-b", "agent-c")
        .replace(E[2], E[3])
        .replace(
            &dir.join("profile-b.toml").display().to_string(),
            &profile_c.display().to_string(),
        )
        .replace("kwh_rate = 5", "kwh_rate = 7");
    std::fs::write(&agent_c, text_c).expect("write agent-c config");
    let cfgs = vec![ds.agent_a, ds.agent_b, agent_c];
    for (i, (cfg, proxy)) in cfgs.iter().zip(proxy_ports).enumerate() {
        // End-to-end confirmation: a batch leaves the outbox when the
        // aggregator has stored it, not at the broker's PUBACK, so a broker
        // SIGKILL (which loses what Mosquitto acknowledged but had not saved)
        // costs resends, not readings. A short timeout keeps rounds short.
        let mut text = std::fs::read_to_string(cfg)
            .expect("read agent config")
            .replace(
                &format!("port = {broker_port}\n"),
                &format!("port = {proxy}\nend_to_end_confirm = true\n"),
            )
            .replace(
                "[outbox]\n",
                "[outbox]\nconfirm_timeout_secs = 2\nconfirm_timeout_max_secs = 8\n",
            );
        if let (Some(b), true) = (budget, i == BUDGET_AGENT) {
            text = text.replace("[outbox]\n", &format!("[outbox]\ndisk_budget_bytes = {b}\n"));
        }
        std::fs::write(cfg, text).expect("write agent config");
    }
    (ds.aggregator, cfgs)
}

/// The string value of a top-level `key = "…"` line of an agent config.
pub(super) fn config_string(cfg: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(cfg).expect("read agent config");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{}: no {key}", cfg.display()))
        .to_owned()
}

/// Declared attributes in the agents' profiles (support/dataset.rs, and
/// profile-c above): (agent index, enterprise, how many).
pub(super) fn declared() -> [(usize, &'static str, u64); 5] {
    [(0, E[0], 4), (0, E[1], 3), (0, E[4], 1), (1, E[2], 4), (2, E[3], 1)]
}

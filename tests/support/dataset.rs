//! The hand-computed data set every end-to-end test uses.
//!
//! Zone `test-zone`, five enterprises:
//! | id | in scope | agent | declares | simulator rate, VA/day |
//! |----|----------|-------|----------|------------------------|
//! | E1 | yes | a | maturity 3, advanced scenario, smart retrofit, R&D | 10 kWh, 40 |
//! | E2 | yes | a | maturity 1, basic scenario, no R&D                 | 20 kWh, 100 |
//! | E3 | yes | b | SME level 2, intermediate scenario, no retrofit, R&D | 5 kWh, 10 |
//! | E4 | yes | – | nothing (never reports)                            | – |
//! | E5 | no (below scale) | a | maturity 5                        | – |
//!
//! The simulator starts at 2026-10-01 00:00 China time with 15-minute ticks
//! and two meters per enterprise; meter m adds rate × m × w per tick, w = 1
//! (00–08h), 3 (08–20h), 2 (20–24h), i.e. rate × 3 × 208 kWh a day for both
//! meters. With 97 ticks (one whole day of intervals, the last reading at
//! midnight) October holds exactly one day, and value added for October is
//! one day's worth, reported at that midnight.

use std::path::{Path, PathBuf};

/// Enterprise ids E1..E5 (valid credit codes; check characters worked out independently in Python).
pub const E: [&str; 5] = [
    "91410000MA1000001Y",
    "91410000MA10000022",
    "91410000MA10000035",
    "91410000MA10000048",
    "91410000MA1000005B",
];

/// Zone id.
pub const ZONE: &str = "test-zone";

/// Files of one data-set instance.
pub struct Dataset {
    /// Agent a (E1, E2, E5) config.
    pub agent_a: PathBuf,
    /// Agent b (E3) config.
    pub agent_b: PathBuf,
    /// Aggregator config.
    pub aggregator: PathBuf,
    /// Ticks each simulator runs.
    pub ticks: u64,
}

impl Dataset {
    /// Has both agents speak MQTT 3.1.1: the embedded broker (rumqttd) has
    /// no MQTT 5 listener here, and an agent speaks MQTT 5 by default.
    pub fn speak_mqtt311(&self) {
        for p in [&self.agent_a, &self.agent_b] {
            let text = std::fs::read_to_string(p).expect("agent config");
            let text = text.replacen("[mqtt]\n", "[mqtt]\nprotocol = \"3.1.1\"\n", 1);
            std::fs::write(p, text).expect("write agent config");
        }
    }

    /// Readings the sources produce in all: 2 meters × ticks per simulated
    /// enterprise, plus one value-added figure per simulated midnight.
    pub fn expected_readings(&self) -> u64 {
        let midnights = self.ticks.saturating_sub(1) / 96;
        3 * (2 * self.ticks + midnights)
    }

    /// Readings the aggregator stores: one per stored key, as its counts and its
    /// rebuild define them. Each simulated midnight's value-added figure is a
    /// month-to-date report for the same month, so later ones replace the
    /// month's figure rather than add a reading; the runs lie within one month
    /// (October 2026, as the energy checks assume).
    pub fn expected_stored_readings(&self) -> u64 {
        let midnights = self.ticks.saturating_sub(1) / 96;
        3 * (2 * self.ticks + u64::from(midnights > 0))
    }

    /// Declarations the profiles hold (E1 4, E2 3, E5 1, E3 4).
    pub fn expected_declarations(&self) -> u64 {
        12
    }
}

fn profile_a() -> String {
    format!(
        r#"
[[enterprise]]
id = "{e1}"
[enterprise.declare]
dt_maturity = 3
scenarios = [{{ code = "能源智能管控", level = "advanced" }}]
smart_retrofit = true
rd_activity = true

[[enterprise]]
id = "{e2}"
[enterprise.declare]
dt_maturity = 1
scenarios = [{{ code = "质量精准追溯", level = "basic" }}]
rd_activity = false

[[enterprise]]
id = "{e5}"
[enterprise.declare]
dt_maturity = 5
"#,
        e1 = E[0],
        e2 = E[1],
        e5 = E[4]
    )
}

fn profile_b() -> String {
    format!(
        r#"
[[enterprise]]
id = "{e3}"
[enterprise.declare]
sme_dt_level = 2
scenarios = [{{ code = "生产计划优化", level = "intermediate" }}]
smart_retrofit = false
rd_activity = true
"#,
        e3 = E[2]
    )
}

fn registry() -> String {
    let mut s = format!("[[zone]]\nid = \"{ZONE}\"\nname_zh = \"测试开发区\"\nname_en = \"Test zone\"\ncity = \"济源\"\nprovince = \"河南\"\n");
    for (i, e) in E.iter().enumerate() {
        s.push_str(&format!(
            "[[zone.enterprise]]\nid = \"{e}\"\nname = \"E{}\"\nabove_scale = {}\n",
            i + 1,
            i != 4
        ));
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn agent(
    dir: &Path,
    id: &str,
    port: u16,
    ticks: u64,
    tick_ms: u64,
    sims: &[(&str, f64, f64)],
    profile: &Path,
) -> String {
    let mut s = format!(
        "agent_id = \"{id}\"\nzone = \"{ZONE}\"\ndata_dir = \"{}\"\n[mqtt]\nport = {port}\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
         [outbox]\nmax_batch_items = 50\nmax_batch_age_ms = 50\nmax_in_flight = 8\n\
         [profile]\npath = \"{}\"\npoll_secs = 1\n\
         [simulator]\ninterval_ms = {tick_ms}\nstep_secs = 900\nstart = \"2026-09-30T16:00:00Z\"\nmax_ticks = {ticks}\nmeters_per_enterprise = 2\n",
        dir.join(format!("agent-{id}")).display(),
        profile.display()
    );
    for (e, rate, va) in sims {
        s.push_str(&format!(
            "[[simulator.enterprises]]\nid = \"{e}\"\nkwh_rate = {rate}\nvalue_added_per_day = {va}\n"
        ));
    }
    s
}

/// Writes the data set's files into `dir` for a broker on `port`.
pub fn write(dir: &Path, port: u16, ticks: u64, tick_ms: u64) -> Dataset {
    let w = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write test file");
        p
    };
    let reg = w("registry.toml", registry());
    let pa = w("profile-a.toml", profile_a());
    let pb = w("profile-b.toml", profile_b());
    let agent_a = w(
        "agent-a.toml",
        agent(
            dir,
            "agent-a",
            port,
            ticks,
            tick_ms,
            &[(E[0], 10.0, 40.0), (E[1], 20.0, 100.0)],
            &pa,
        ),
    );
    let agent_b = w(
        "agent-b.toml",
        agent(dir, "agent-b", port, ticks, tick_ms, &[(E[2], 5.0, 10.0)], &pb),
    );
    let aggregator = w(
        "aggregator.toml",
        format!(
            "data_dir = \"{}\"\nregistry = \"{}\"\n[mqtt]\nport = {port}\nclient_id = \"zonesync-aggregator-test\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\ncache_capacity_bytes = 16777216\n",
            dir.join("aggregator").display(),
            reg.display()
        ),
    );
    Dataset {
        agent_a,
        agent_b,
        aggregator,
        ticks,
    }
}

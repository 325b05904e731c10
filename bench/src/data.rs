//! The data every figure uses, built with zonesync's own types: credit codes
//! with valid check characters, batch JSON exactly as an agent seals it,
//! registries, and configurations written as the TOML an operator would write.

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use std::io::Write;
use std::path::Path;
use zonesync_agent::outbox::{Item, Outbox};
use zonesync_aggregator::registry::{Enterprise, Registry, Zone};
use zonesync_proto::{AgentId, Batch, Declaration, EnterpriseId, Period, Reading, Topic, ZoneId, WIRE_VERSION};

/// The zone of the throughput figures.
pub const ZONE: &str = "bench-zone";

/// Readings in one batch in the throughput figures (as the issue asks).
pub const READINGS_PER_BATCH: usize = 100;

/// Enterprise number `n` (Zhengzhou division code 410100, valid check character).
pub fn enterprise(n: u32) -> Result<EnterpriseId> {
    Ok(EnterpriseId::with_check_char(&format!("91410100MA{n:07}"))?)
}

/// A zone id.
pub fn zone(id: &str) -> Result<ZoneId> {
    Ok(ZoneId::parse(id)?)
}

/// An agent id.
pub fn agent(id: &str) -> Result<AgentId> {
    Ok(AgentId::parse(id)?)
}

/// One electricity register reading of meter `m` (0-based) at tick `t`.
fn register(m: usize, t: u64, ts: DateTime<Utc>) -> Reading {
    Reading {
        indicator: "electricity".into(),
        point: format!("M{}", m + 1),
        value: 10_000.0 * (m as f64 + 1.0) + 2.5 * (m as f64 + 1.0) * t as f64,
        unit: "kWh".into(),
        ts: Some(ts),
        period: None,
    }
}

/// Writes `batches` batch payloads, one JSON document per line, each with
/// [`READINGS_PER_BATCH`] register readings of one enterprise (one per meter,
/// one minute apart from batch to batch, ending before now), sequence numbers
/// 1.. — the lines `mosquitto_pub -l` publishes. Returns the topic.
pub fn write_batch_lines(
    path: &Path,
    agent: &AgentId,
    zone: &ZoneId,
    ent: &EnterpriseId,
    batches: usize,
) -> Result<String> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let start = Utc::now() - Duration::minutes(batches as i64 + 60);
    for b in 0..batches {
        let ts = start + Duration::minutes(b as i64);
        let batch = Batch {
            v: WIRE_VERSION,
            agent: agent.clone(),
            boot: 1,
            outbox: None,
            seq: b as u64 + 1,
            sent_at: ts,
            zone: zone.clone(),
            enterprise: ent.clone(),
            backfill: false,
            readings: (0..READINGS_PER_BATCH).map(|m| register(m, b as u64, ts)).collect(),
            declarations: vec![],
        };
        let payload = batch.to_payload();
        // `mosquitto_pub -l` splits on newlines; compact JSON has none.
        anyhow::ensure!(!payload.contains(&b'\n'), "batch JSON contains a newline");
        out.write_all(&payload)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(Topic::data(zone, agent, ent))
}

/// Fills an outbox as a gateway's sources would while the broker is away:
/// `enterprises` × `meters` register readings per one-second tick, appended
/// tick by tick in chunks of about 10,000 items, until `readings` are stored.
/// Returns how many were appended.
pub fn fill_outbox(outbox: &Outbox, enterprises: &[EnterpriseId], meters: usize, readings: usize) -> Result<usize> {
    let per_tick = (enterprises.len() * meters).max(1);
    let ticks = readings.div_ceil(per_tick) as u64;
    let start = Utc::now() - Duration::seconds(ticks as i64 + 3600);
    let mut chunk = Vec::with_capacity(10_000 + per_tick);
    let mut appended = 0;
    for t in 0..ticks {
        let ts = start + Duration::seconds(t as i64);
        for e in enterprises {
            for m in 0..meters {
                chunk.push((e.clone(), Item::Reading(register(m, t, ts))));
            }
        }
        if chunk.len() >= 10_000 || t + 1 == ticks {
            appended += chunk.len();
            outbox.append(std::mem::take(&mut chunk), None)?;
        }
    }
    Ok(appended)
}

/// A registry of one zone with these enterprises (above-scale, industrial,
/// any agent of the zone may report for them), written to `path`.
pub fn write_registry(path: &Path, zone_id: &ZoneId, enterprises: &[EnterpriseId]) -> Result<()> {
    const INDUSTRIES: [&str; 6] = ["C3120", "C3490", "C2614", "C3980", "C3216", "C3841"];
    let enterprise = enterprises
        .iter()
        .enumerate()
        .map(|(i, id)| Enterprise {
            id: id.clone(),
            name: format!("示例企业{i:05}"),
            above_scale: i % 10 < 8,
            industrial: i % 10 != 9,
            industry: Some(INDUSTRIES[i % INDUSTRIES.len()].into()),
            leading_industry: None,
            agents: vec![],
        })
        .collect();
    let reg = Registry::from_zones(vec![Zone {
        id: zone_id.clone(),
        name_zh: "基准测试开发区".into(),
        name_en: "Benchmark zone".into(),
        city: "郑州".into(),
        province: "河南".into(),
        goal_sets: vec![],
        leading_industries: vec!["C31".into(), "C34".into()],
        enterprise,
        enterprises_file: None,
    }])?;
    std::fs::write(path, reg.to_toml()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// An aggregator configuration (TOML, as an operator writes it) for a broker
/// on `mqtt_port`, its store under `dir`, the API on a free port.
pub fn aggregator_config(
    dir: &Path,
    registry: &Path,
    mqtt_port: u16,
    client_id: &str,
) -> Result<zonesync_aggregator::config::AggregatorConfig> {
    let text = format!(
        "data_dir = \"{}\"\nregistry = \"{}\"\n[mqtt]\nport = {mqtt_port}\nclient_id = \"{client_id}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("aggregator").display(),
        registry.display()
    );
    Ok(toml::from_str(&text)?)
}

/// One enterprise's declarations and monthly figures for `period`, as one
/// batch payload (what a profile file and a month's statistics report produce).
pub fn profile_batch(
    agent: &AgentId,
    zone: &ZoneId,
    ent: &EnterpriseId,
    i: usize,
    seq: u64,
    period: Period,
) -> Vec<u8> {
    let decl = |indicator: &str, value: serde_json::Value| Declaration {
        indicator: indicator.into(),
        value,
    };
    let scenarios = match i % 4 {
        0 => {
            serde_json::json!([{"code": "能源智能管控", "level": "advanced"}, {"code": "设备运行监控", "level": "intermediate"}])
        }
        1 => serde_json::json!([{"code": "生产计划优化", "level": "intermediate"}]),
        2 => serde_json::json!([{"code": "质量精准追溯", "level": "basic"}]),
        _ => serde_json::json!([]),
    };
    let va = 30.0 + (i % 50) as f64;
    let figure = |indicator: &str, value: f64, unit: &str| Reading {
        indicator: indicator.into(),
        point: String::new(),
        value,
        unit: unit.into(),
        ts: None,
        period: Some(period),
    };
    Batch {
        v: WIRE_VERSION,
        agent: agent.clone(),
        boot: 1,
        outbox: None,
        seq,
        sent_at: Utc::now(),
        zone: zone.clone(),
        enterprise: ent.clone(),
        backfill: false,
        readings: vec![
            figure("value_added", va * 30.0, "10k_yuan"),
            figure("gross_output", va * 108.0, "10k_yuan"),
            figure("revenue", va * 102.0, "10k_yuan"),
            figure("tax", va * 3.3, "10k_yuan"),
            figure("rd_spend", va * 0.9, "10k_yuan"),
            figure("electricity", 50_000.0 + 100.0 * (i % 97) as f64, "kWh"),
            figure("natural_gas", 2_000.0 + (i % 13) as f64, "m3"),
        ],
        declarations: vec![
            decl("above_scale", serde_json::json!(i % 10 < 8)),
            decl("dt_maturity", serde_json::json!(1 + i % 5)),
            decl("scenarios", scenarios),
            decl("smart_retrofit", serde_json::json!(i % 3 != 2)),
            decl("rd_activity", serde_json::json!(i % 5 != 4)),
            decl("rd_institution", serde_json::json!(i.is_multiple_of(2))),
            decl("high_tech", serde_json::json!(i.is_multiple_of(3))),
            decl("specialized_sme", serde_json::json!(i % 4 == 1)),
            decl("on_cloud", serde_json::json!(i % 2 == 1)),
        ],
    }
    .to_payload()
}

/// A corrected monthly value-added figure for one enterprise: the zone's
/// data changes, as it does whenever something is reported.
pub fn correction_batch(
    agent: &AgentId,
    zone: &ZoneId,
    ent: &EnterpriseId,
    seq: u64,
    period: Period,
    i: usize,
) -> Vec<u8> {
    Batch {
        v: WIRE_VERSION,
        agent: agent.clone(),
        boot: 1,
        outbox: None,
        seq,
        sent_at: Utc::now(),
        zone: zone.clone(),
        enterprise: ent.clone(),
        backfill: false,
        readings: vec![Reading {
            indicator: "value_added".into(),
            point: String::new(),
            value: 1_000.0 + (seq % 1_000) as f64 + (i % 7) as f64 * 0.5,
            unit: "10k_yuan".into(),
            ts: None,
            period: Some(period),
        }],
        declarations: vec![],
    }
    .to_payload()
}

/// Copies a closed store directory (an outbox template) to `to`.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

//! Bytes per reading in the agent's local history, measured by writing day
//! files with the agent's own writer: 50 meters every 15 minutes for a day,
//! and 50 meters every second for an hour, as a Modbus meter delivers them
//! (register × scale, so values carry the float noise real scaled registers
//! do). Prints bytes per reading and how many days fit in the default budget.
//!
//! `cargo run -p zonesync-bench --example history_size -- [DIR] [--keep]`
//! (`--keep` leaves the last run's files, `DIR/1s/*.jsonl`, for measuring export.)

use chrono::{DateTime, Duration, Utc};
use zonesync_agent::history::{self, History, HistoryConfig};
use zonesync_agent::outbox::Item;
use zonesync_proto::{EnterpriseId, Reading};

const METERS: usize = 50;

/// Writes `steps` rounds of every meter, `step` apart, and returns bytes per reading.
fn measure(
    dir: &std::path::Path,
    point: &dyn Fn(usize) -> String,
    step: Duration,
    steps: i64,
) -> anyhow::Result<(f64, u64)> {
    let _ = std::fs::remove_dir_all(dir);
    let h = History::open(dir, HistoryConfig::default())?;
    // Five enterprises of ten meters each.
    let ents: Vec<EnterpriseId> = [
        "91419001MA0000001N",
        "91419001MA0000002R",
        "91419001MA0000003W",
        "91419001MA00000040",
        "91419001MA00000053",
    ]
    .iter()
    .map(|s| EnterpriseId::parse(s))
    .collect::<Result<_, _>>()?;
    let start: DateTime<Utc> = "2026-11-22T16:00:00Z".parse()?;
    let mut raw: Vec<u64> = (0..METERS).map(|m| 1_000_000 + 137_911 * m as u64).collect();
    let mut n = 0u64;
    for s in 0..steps {
        let ts = start + step * i32::try_from(s)?;
        let items: Vec<(EnterpriseId, Item)> = (0..METERS)
            .map(|m| {
                raw[m] += 17 + (m as u64 % 7) * 3;
                (
                    ents[m / 10].clone(),
                    Item::Reading(Reading {
                        indicator: "electricity".into(),
                        point: point(m),
                        // A u32 energy register in 0.01 kWh, as the Modbus source scales it.
                        value: raw[m] as f64 * 0.01,
                        unit: "kWh".into(),
                        ts: Some(ts),
                        period: None,
                    }),
                )
            })
            .collect();
        n += items.len() as u64;
        h.record(&items, ts);
    }
    h.flush();
    let bytes: u64 = history::list_days(dir)?.iter().map(|d| d.1).sum();
    Ok((bytes as f64 / n as f64, n))
}

fn main() -> anyhow::Result<()> {
    let base = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "history-size".into()));
    let budget = HistoryConfig::default().disk_budget_bytes as f64;
    let short = |m: usize| format!("M{}", m + 1);
    let address = |m: usize| format!("2023112300{:02}", m + 1);
    for (name, point) in [
        ("point M1..M50", &short as &dyn Fn(usize) -> String),
        ("point = 12-digit DL/T 645 address", &address),
    ] {
        let (per_15min, n1) = measure(&base.join("15min"), point, Duration::minutes(15), 96)?;
        let (per_1s, n2) = measure(&base.join("1s"), point, Duration::seconds(1), 3600)?;
        let day_15min = per_15min * (METERS * 96) as f64;
        let day_1s = per_1s * (METERS * 86_400) as f64;
        println!("{name}:");
        println!(
            "  50 meters / 15 min: {per_15min:.1} B per reading ({n1} written), {:.0} KiB per day, {:.0} days ({:.1} years) in {} MiB",
            day_15min / 1024.0,
            budget / day_15min,
            budget / day_15min / 365.0,
            budget / 1_048_576.0
        );
        println!(
            "  50 meters / 1 s:    {per_1s:.1} B per reading ({n2} written), {:.0} MiB per day, {:.1} days in {} MiB",
            day_1s / 1_048_576.0,
            budget / day_1s,
            budget / 1_048_576.0
        );
    }
    if std::env::args().nth(2).as_deref() != Some("--keep") {
        let _ = std::fs::remove_dir_all(&base);
    }
    Ok(())
}

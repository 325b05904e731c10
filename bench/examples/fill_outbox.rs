//! Fills an outbox with figure 3's backlog at the given path, for measuring
//! the agent by hand: `cargo run --release -p zonesync-bench --example fill_outbox -- DIR [READINGS]`.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "outbox".into()));
    let readings = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let (n, took) = zonesync_bench::figures::drain::build_template(&dir, readings)?;
    println!("{n} readings in {took:?}");
    Ok(())
}

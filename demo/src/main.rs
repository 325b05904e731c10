//! `zonesync-demo`: thin command line over the demo library.

use clap::Parser;
use std::path::PathBuf;
use zonesync_demo::DemoOptions;

/// Run a whole simulated zone system in one process: embedded broker, agents, aggregator, API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Where to keep the demo's stores (default: a fresh temporary directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Preferred HTTP port; a free one is used if it is taken.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Preferred MQTT port; a free one is used if it is taken.
    #[arg(long, default_value_t = 1883)]
    mqtt_port: u16,
    /// Real milliseconds per simulated 15 minutes while the simulator catches up.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Run this one demo zone alone (jiyuan-hitech, jiyuan-etdz or
    /// jiyuan-services), publishing its tallies to `--federation-nats`
    /// (scripts/federation-demo.sh).
    #[arg(long, requires = "federation_nats")]
    zone: Option<String>,
    /// The zone's NATS leaf node, e.g. nats://127.0.0.1:4222.
    #[arg(long, requires = "zone")]
    federation_nats: Option<String>,
    /// The leaf node's JetStream domain (default: zone-<zone>).
    #[arg(long)]
    federation_domain: Option<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off")),
        )
        .init();
    let cli = Cli::parse();
    // Kept until the demo ends: the temporary directory is removed on drop.
    let tmp;
    let data_dir = match cli.data {
        Some(d) => d,
        None => {
            tmp = tempfile::Builder::new().prefix("zonesync-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let only = match (cli.zone, cli.federation_nats) {
        (Some(zone), Some(url)) => {
            let domain = cli.federation_domain.unwrap_or_else(|| format!("zone-{zone}"));
            // Heartbeats every 5 s: a demo center shows a stopped zone stale soon.
            let federation = toml::from_str(&format!(
                "nats = {{ url = {url:?} }}\ndomain = {domain:?}\nheartbeat_ms = 5000\n"
            ))?;
            Some(zonesync_demo::ZoneOnly { zone, federation })
        }
        _ => None,
    };
    rt.block_on(zonesync_demo::run(
        DemoOptions {
            data_dir,
            http_port: cli.http_port,
            mqtt_port: cli.mqtt_port,
            tick_ms: cli.tick_ms,
            read_token: None,
        },
        only,
    ))?;
    Ok(())
}

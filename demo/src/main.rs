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
    rt.block_on(zonesync_demo::run(DemoOptions {
        data_dir,
        http_port: cli.http_port,
        mqtt_port: cli.mqtt_port,
        tick_ms: cli.tick_ms,
        read_token: None,
    }))?;
    Ok(())
}

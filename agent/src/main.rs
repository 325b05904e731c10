//! `zonesync-agent`: thin command line over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use zonesync_agent::{config::AgentConfig, outbox::Outbox, shutdown};

#[derive(Parser)]
#[command(version, about = "zonesync gateway agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent until SIGTERM / Ctrl-C.
    Run {
        /// Configuration file (TOML); ZONESYNC_… variables override it.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check the configuration and print what it sets up.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Show backlog, oldest pending reading, last acknowledgement and drops
    /// (from the running agent's status.json, or from the outbox when it is stopped).
    Status {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Export the local history as CSV (UTF-8 with BOM, for Excel); works
    /// while the agent runs.
    Export {
        #[arg(short, long)]
        config: PathBuf,
        /// First day, China time (YYYY-MM-DD); default: the oldest kept.
        #[arg(long)]
        from: Option<String>,
        /// Last day, China time (YYYY-MM-DD), inclusive; default: the newest.
        #[arg(long)]
        to: Option<String>,
        /// Only this enterprise (credit code).
        #[arg(long)]
        enterprise: Option<String>,
        /// Only this indicator code, e.g. electricity.
        #[arg(long)]
        indicator: Option<String>,
        /// Export declarations instead of readings.
        #[arg(long)]
        declarations: bool,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = AgentConfig::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (trigger, signal) = shutdown::channel();
                let mut agent = tokio::spawn(zonesync_agent::run(cfg, signal));
                let res = tokio::select! {
                    _ = shutdown::os_signal() => {
                        tracing::info!("shutdown requested");
                        trigger.fire();
                        (&mut agent).await
                    }
                    res = &mut agent => res,
                };
                res.context("agent task")??;
                anyhow::Ok(())
            })
        }
        Cmd::Check { config } => {
            let cfg = AgentConfig::load(&config)?;
            println!("agent {} in zone {}", cfg.agent_id, cfg.zone);
            for u in cfg.upstreams()? {
                let mode = if u.mqtt.end_to_end_confirm {
                    "kept until the aggregator confirms"
                } else {
                    "kept until the broker's PUBACK"
                };
                println!("upstream {}: broker {}:{} ({mode})", u.name, u.mqtt.host, u.mqtt.port);
            }
            println!("outbox {}", cfg.data_dir.join("outbox").display());
            if cfg.history.enabled {
                println!(
                    "history {} ({} days, budget {} bytes)",
                    zonesync_agent::history::dir(&cfg.data_dir).display(),
                    cfg.history.retention_days,
                    cfg.history.disk_budget_bytes
                );
            } else {
                println!("history off");
            }
            if let Some(s) = &cfg.simulator {
                println!(
                    "simulator: {} enterprises, {} meters each",
                    s.enterprises.len(),
                    s.meters_per_enterprise
                );
            }
            if let Some(p) = &cfg.profile {
                let ok = std::fs::metadata(&p.path).is_ok();
                println!(
                    "profile: {} ({})",
                    p.path.display(),
                    if ok { "found" } else { "MISSING" }
                );
            }
            // Probe every source once and print what each read; any failure
            // makes the exit status non-zero, so scripts can gate on it.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (_trigger, signal) = shutdown::channel();
            let rows = rt.block_on(zonesync_agent::check::probe_all(&cfg, signal))?;
            println!();
            print!("{}", zonesync_agent::sources::probe::table(&rows));
            let failed = rows.iter().filter(|r| r.result.is_err()).count();
            if failed > 0 {
                anyhow::bail!("{failed} of {} probes failed", rows.len());
            }
            println!("all {} probes ok", rows.len());
            Ok(())
        }
        Cmd::Status { config } => {
            let cfg = AgentConfig::load(&config)?;
            let file = zonesync_agent::status::path(&cfg.data_dir);
            // sled lets one process open the outbox: while the agent runs, its
            // own status file is the truth; otherwise the outbox itself.
            if let Ok(status) = zonesync_agent::status::read(&file) {
                let now = chrono::Utc::now();
                if status.is_live(now) {
                    eprintln!(
                        "agent running (pid {}), status written {} s ago:",
                        status.pid,
                        (now - status.written_at).num_seconds()
                    );
                    println!("{}", serde_json::to_string_pretty(&status)?);
                    return Ok(());
                }
            }
            // Opened with the configured upstreams, as the next start would:
            // a new upstream gets its cursor, a removed one loses its own.
            let outbox = Outbox::open_with(&cfg.data_dir.join("outbox"), cfg.outbox_options()?)
                .context("opening the outbox (is the agent running without writing status.json?)")?;
            eprintln!("agent not running; its outbox:");
            println!("{}", serde_json::to_string_pretty(&outbox.stats())?);
            let days =
                zonesync_agent::history::list_days(&zonesync_agent::history::dir(&cfg.data_dir)).unwrap_or_default();
            if let (Some(first), Some(last)) = (days.first(), days.last()) {
                let bytes: u64 = days.iter().map(|d| d.1).sum();
                eprintln!(
                    "history: {} to {} (China time), {} days, {bytes} bytes",
                    first.0,
                    last.0,
                    days.len()
                );
            }
            Ok(())
        }
        Cmd::Export {
            config,
            from,
            to,
            enterprise,
            indicator,
            declarations,
            output,
        } => {
            use zonesync_agent::history::export;
            let cfg = AgentConfig::load(&config)?;
            let filter = export::Filter {
                from: from.as_deref().map(export::parse_day).transpose()?,
                to: to.as_deref().map(export::parse_day).transpose()?,
                enterprise,
                indicator,
                kind: if declarations {
                    export::Kind::Declarations
                } else {
                    export::Kind::Readings
                },
            };
            let catalog = zonesync_agent::config::load_catalog(cfg.catalog.as_deref())?;
            let dir = zonesync_agent::history::dir(&cfg.data_dir);
            let summary = match &output {
                None => {
                    let stdout = std::io::stdout();
                    let mut out = std::io::BufWriter::new(stdout.lock());
                    export::export(&dir, &filter, Some(&catalog), &mut out)?
                }
                Some(path) => {
                    // Written beside and renamed, so a failed export never leaves a half file under the asked name.
                    let part = path.with_extension("csv.part");
                    let file = std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
                    let mut out = std::io::BufWriter::new(file);
                    let res = export::export(&dir, &filter, Some(&catalog), &mut out);
                    drop(out);
                    match res {
                        Ok(s) => {
                            std::fs::rename(&part, path).with_context(|| format!("writing {}", path.display()))?;
                            s
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&part);
                            return Err(e.into());
                        }
                    }
                }
            };
            let span = summary.span.map(|(a, b)| format!("{a} to {b}")).unwrap_or_default();
            eprintln!(
                "exported {} rows from {} days ({span}, China time){}",
                summary.rows,
                summary.days,
                output
                    .as_ref()
                    .map(|p| format!(" to {}", p.display()))
                    .unwrap_or_default()
            );
            if summary.skipped_lines > 0 {
                eprintln!(
                    "skipped {} unreadable lines (cut short by a crash, or being written right now)",
                    summary.skipped_lines
                );
            }
            Ok(())
        }
    }
}

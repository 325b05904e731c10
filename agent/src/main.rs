//! `zonesync-agent`: thin command line over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
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
    /// Write the profile's declarations (from its TOML or spreadsheet) as a CSV
    /// sheet for Excel (UTF-8 with BOM) that the profile source reads back.
    #[cfg(feature = "csv")]
    ProfileExport {
        #[arg(short, long)]
        config: PathBuf,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// The log filter from `RUST_LOG` (`value`): a level (`warn`) and/or
/// `target=level` directives, comma-separated (`info,sled=warn`). Parsed by
/// tracing-subscriber's `Targets`, which needs no regex engine; `EnvFilter`'s
/// span and field filters are not supported. Unset or unreadable: `info`,
/// with the reason to log when it was set but unreadable.
fn log_filter(value: Option<&str>) -> (Targets, Option<String>) {
    let info = || Targets::new().with_default(Level::INFO);
    match value {
        None => (info(), None),
        Some(v) => match v.parse() {
            Ok(t) => (t, None),
            Err(e) => (info(), Some(format!("RUST_LOG={v:?} ignored ({e}); logging at info"))),
        },
    }
}

fn main() -> anyhow::Result<()> {
    let (filter, problem) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    // A registry with the fmt layer rather than `fmt()`'s builder, whose own
    // INFO ceiling would hide what RUST_LOG=debug asks for.
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_ansi(false))
        .with(filter)
        .init();
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = AgentConfig::load(&config)?;
            // One thread runs every task. The agent's work (a few sources, the
            // link, outbox writes) fits on one core; each extra worker thread
            // costs a malloc arena and lets transient seal buffers pile up side
            // by side, ~1.6 MB of peak RSS in figure 4b (docs/profiles.md,
            // "Agent footprint"). Blocking outbox calls already run inline in
            // the tasks, so two workers bought little parallelism.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
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
                println!(
                    "upstream {}: broker {}:{}, MQTT {} ({mode})",
                    u.name,
                    u.mqtt.host,
                    u.mqtt.port,
                    u.mqtt.protocol.as_str()
                );
            }
            #[cfg(feature = "energy-platform")]
            for p in &cfg.energy_platform {
                println!(
                    "upstream {}: energy platform {} over HTTPS, {} series mapped (kept until it answers {:?})",
                    p.name,
                    p.url,
                    p.map.len(),
                    p.success
                );
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
            // redb lets one process open the outbox: while the agent runs, its
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
            let path = cfg.data_dir.join("outbox");
            if !path.exists() {
                anyhow::bail!("agent not running and no outbox at {} yet", path.display());
            }
            // Looked at, not opened to run: an upstream taken out of the
            // configuration keeps its cursor until the agent next starts.
            let outbox = Outbox::inspect(&path, cfg.outbox_options()?)
                .context("opening the outbox (is the agent running without writing status.json?)")?;
            eprintln!("agent not running; its outbox:");
            let stats = outbox.stats();
            println!("{}", serde_json::to_string_pretty(&stats)?);
            for u in stats.upstreams.iter().filter(|u| !u.configured) {
                eprintln!(
                    "upstream {:?} is no longer configured but holds {} unacknowledged batches ({} items): \
                     the next start forgets its cursor and the batches only it still needs",
                    u.name, u.unacked_batches, u.unacked_items
                );
            }
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
        #[cfg(feature = "csv")]
        Cmd::ProfileExport { config, output } => {
            let cfg = AgentConfig::load(&config)?;
            let profile = cfg.profile.context("the configuration has no [profile]")?;
            let catalog = zonesync_agent::config::load_catalog(cfg.catalog.as_deref())?;
            let validator = zonesync_proto::Validator::new(catalog, zonesync_proto::Limits::default());
            let (bytes, problems) = zonesync_agent::sources::profile_sheet::export_file(&profile.path, &validator)
                .map_err(|e| anyhow::anyhow!("{}: {e}", profile.path.display()))?;
            for p in &problems {
                eprintln!("{}: left out: {p}", profile.path.display());
            }
            match output {
                Some(path) => std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?,
                None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filter_reads_levels_and_targets_and_falls_back_to_info() {
        let (f, problem) = log_filter(Some("warn,sled=debug"));
        assert!(problem.is_none());
        assert!(f.would_enable("zonesync_agent::link", &Level::WARN));
        assert!(!f.would_enable("zonesync_agent::link", &Level::INFO));
        assert!(f.would_enable("sled::pagecache", &Level::DEBUG));
        assert!(!f.would_enable("sled::pagecache", &Level::TRACE));

        let (f, problem) = log_filter(None);
        assert!(problem.is_none());
        assert!(f.would_enable("zonesync_agent", &Level::INFO));
        assert!(!f.would_enable("zonesync_agent", &Level::DEBUG));

        let (f, problem) = log_filter(Some("a=b=c"));
        assert!(problem.is_some_and(|p| p.contains("a=b=c")));
        assert!(f.would_enable("zonesync_agent", &Level::INFO));
    }
}

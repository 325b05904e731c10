//! `zonesync-aggregator`: thin command line over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use zonesync_aggregator::config::AggregatorConfig;
use zonesync_runtime::shutdown;

#[derive(Parser)]
#[command(version, about = "zonesync zone aggregator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The demo moved to its own crate: `cargo run -p zonesync-demo` (binary `zonesync-demo`).
    #[command(hide = true)]
    Demo {
        /// Whatever followed `demo`, so old invocations get the message rather than a usage error.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        _args: Vec<String>,
    },
    /// Run against an external broker (Mosquitto) until SIGTERM / Ctrl-C.
    Run {
        /// Configuration file (TOML); ZONESYNC_… variables override it.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run a city or province center: merge the zones' goal tallies from the
    /// NATS hub stream and serve the city and province tables (docs/federation.md).
    Center {
        /// Center configuration file (TOML); ZONESYNC_… variables override it.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a registry (TOML with any `enterprises_file` spreadsheets) and write a zone's
    /// enterprises as a CSV sheet that opens in Excel and imports back as an `enterprises_file`.
    RegistryExport {
        /// The registry file.
        #[arg(short, long)]
        registry: PathBuf,
        /// Zone id; may be left out when the registry has one zone.
        #[arg(long)]
        zone: Option<String>,
        /// Output file (UTF-8 with BOM, CRLF); stdout when absent.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print the indicator catalog in force (units, coefficients and their
    /// sources) as a catalog file to copy, adjust and name in `catalog =`.
    Catalog {
        /// The aggregator's configuration: its `catalog` file if it names one; without it, the built-in catalog.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Print the HTTP API's OpenAPI description (JSON), as served at /api/v1/openapi.json.
    Openapi,
    /// List the goals in force, or check goal files before naming them in the configuration.
    Goals {
        /// Read the goal files (and catalog) this configuration names.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Goal file to check, read after the configuration's (repeatable); errors name file, line and field.
        #[arg(long)]
        check: Vec<PathBuf>,
        /// table or json (the catalog in force, as data).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Print a zone's goal table from a running aggregator's API.
    Report {
        /// The aggregator's API base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// Zone id.
        #[arg(long)]
        zone: String,
        /// Period: YYYY, YYYY-Qn or YYYY-MM (China time); default the last complete month.
        #[arg(long)]
        period: Option<String>,
        /// Span of every row: month, quarter, year or ytd; default each goal's own basis.
        #[arg(long)]
        span: Option<String>,
        /// table, csv (UTF-8 with BOM, opens in Excel), xlsx, md or json. A month's
        /// table, md and xlsx add the enterprises to chase.
        #[arg(long, default_value = "table")]
        format: String,
        /// Write to this file instead of standard output (needed for xlsx).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Read token, where the API's reads need one (`[http] read_token`).
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding the read token (first line), so it stays out of the shell history.
        #[arg(long)]
        token_file: Option<PathBuf>,
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
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.cmd {
        Cmd::Demo { .. } => anyhow::bail!(
            "the demo is no longer part of zonesync-aggregator: run `cargo run -p zonesync-demo` (or the zonesync-demo binary)"
        ),
        Cmd::Run { config } => {
            let cfg = AggregatorConfig::load(&config)?;
            rt.block_on(async move {
                let (trigger, signal) = shutdown::channel();
                let running = zonesync_aggregator::start(cfg, signal)
                    .await
                    .context("starting the aggregator")?;
                println!("API on http://{}", running.http_addr);
                let failed = tokio::select! {
                    _ = shutdown::os_signal() => None,
                    problems = running.failed() => Some(problems),
                };
                trigger.fire();
                running.wait().await;
                match failed {
                    // Ended so that systemd (Restart=always) starts it afresh.
                    Some(problems) => anyhow::bail!("stopped unhealthy: {}", problems.join("; ")),
                    None => anyhow::Ok(()),
                }
            })
        }
        Cmd::Center { config } => {
            let cfg = zonesync_aggregator::federation::config::CenterConfig::load(&config)?;
            rt.block_on(async move {
                let (trigger, signal) = shutdown::channel();
                let running = zonesync_aggregator::federation::center::run::start(cfg, signal)
                    .await
                    .context("starting the center")?;
                println!("API on http://{}", running.http_addr);
                shutdown::os_signal().await;
                trigger.fire();
                let failed = running.wait().await;
                anyhow::ensure!(failed.is_empty(), "tasks failed: {}", failed.join("; "));
                anyhow::Ok(())
            })
        }
        Cmd::Report {
            api,
            zone,
            period,
            span,
            format,
            token,
            token_file,
            output,
        } => {
            anyhow::ensure!(
                format != "xlsx" || output.is_some(),
                "--format xlsx writes a workbook: name the file with --output FILE.xlsx"
            );
            let token = match (token, token_file) {
                (Some(t), _) => Some(t),
                (None, Some(f)) => Some(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("reading the token file {}", f.display()))?
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                ),
                (None, None) => None,
            };
            let mut url = format!(
                "{}/api/v1/zones/{zone}/report?format={format}",
                api.trim_end_matches('/')
            );
            if let Some(p) = period {
                url.push_str(&format!("&period={p}"));
            }
            if let Some(s) = span {
                url.push_str(&format!("&span={s}"));
            }
            let body = rt.block_on(async {
                let mut req = reqwest::Client::new().get(&url);
                if let Some(t) = token.as_deref().filter(|t| !t.is_empty()) {
                    req = req.bearer_auth(t);
                }
                let resp = req.send().await.with_context(|| format!("GET {url}"))?;
                let status = resp.status();
                let bytes = resp.bytes().await?;
                anyhow::ensure!(
                    status.is_success(),
                    "{url}: {status}: {}",
                    String::from_utf8_lossy(&bytes)
                );
                anyhow::Ok(bytes)
            })?;
            match output {
                Some(path) => std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?,
                None => std::io::Write::write_all(&mut std::io::stdout(), &body)?,
            }
            Ok(())
        }
        Cmd::RegistryExport { registry, zone, output } => {
            let reg = zonesync_aggregator::registry::Registry::load(&registry)?;
            let bytes = zonesync_aggregator::registry_sheet::export_zone(&reg, zone.as_deref())
                .with_context(|| format!("exporting from {}", registry.display()))?;
            match output {
                Some(path) => std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?,
                None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
            }
            Ok(())
        }
        Cmd::Catalog { config } => {
            let path = match &config {
                Some(c) => AggregatorConfig::load(c)?.catalog,
                None => None,
            };
            let catalog = zonesync_runtime::config::load_catalog(path.as_deref())?;
            let from = path.map_or("the catalog built into this binary".to_owned(), |p| p.display().to_string());
            print!(
                "# zonesync indicator catalog in force: {from}.\n\
                 # Save this as a file, adjust it (a coefficient, an accepted unit, a new indicator), and name it\n\
                 # with `catalog = \"...\"` in aggregator.toml and in every agent's agent.toml: both ends check\n\
                 # readings against it. Factors in `units` convert to the canonical `unit`.\n\n{}",
                catalog.to_toml()?
            );
            Ok(())
        }
        Cmd::Goals { config, check, format } => goals(config, check, &format),
        Cmd::Openapi => {
            println!("{}", serde_json::to_string_pretty(&zonesync_aggregator::openapi::described())?);
            Ok(())
        }
    }
}

/// `goals`: the catalog in force (built-ins, the configuration's goal files,
/// then the files to check), refused with file, line and field where wrong.
fn goals(config: Option<PathBuf>, check: Vec<PathBuf>, format: &str) -> anyhow::Result<()> {
    use zonesync_aggregator::goals::{file, GoalCatalog};
    anyhow::ensure!(
        matches!(format, "table" | "json"),
        "--format must be table or json, not {format:?}"
    );
    let (catalog, builtin, mut files) = match config {
        Some(path) => {
            let cfg = AggregatorConfig::load(&path)?;
            let catalog = zonesync_runtime::config::load_catalog(cfg.catalog.as_deref())?;
            (catalog, cfg.builtin_goals, cfg.goal_files)
        }
        None => (zonesync_proto::Catalog::builtin()?, true, Vec::new()),
    };
    files.extend(check.iter().cloned());
    let goals: GoalCatalog = file::load(builtin, &files, &catalog)?;
    if !check.is_empty() {
        let names: Vec<String> = check.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "ok: {} checked; {} goals and {} not-computable rows in force",
            names.join(", "),
            goals.goal.len(),
            goals.not_computable.len()
        );
    }
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&goals)?);
        return Ok(());
    }
    println!(
        "{:<9} {:<12} {:<8} {:<10} {:<8} name",
        "id", "set", "kind", "target", "deadline"
    );
    for g in goals.goal {
        let target = g
            .target
            .map_or(g.comparator.clone(), |t| format!("{} {t}", g.comparator));
        println!(
            "{:<9} {:<12} {:<8} {:<10} {:<8} {} / {}  [{}]",
            g.id,
            g.set,
            format!("{:?}", g.kind).to_lowercase(),
            target,
            g.deadline.unwrap_or_default(),
            g.name_zh,
            g.name_en,
            g.source
        );
    }
    println!("\nnot computable from enterprise data:");
    for n in goals.not_computable {
        println!("{:<9} {}  [{}]\n          {}", n.id, n.clause, n.source, n.reason);
    }
    Ok(())
}

//! `zonesync-bench`: thin command line over the harness (see `lib.rs`).
//!
//! ```sh
//! cargo run --release -p zonesync-bench -- --out docs/benchmarks.md           # full, ~5 minutes
//! cargo run --release -p zonesync-bench -- --out docs/benchmarks.md --quick   # short, under a minute
//! ```

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use zonesync_bench::{run, Options};

#[derive(Parser)]
#[command(
    version,
    about = "zonesync benchmarks, each against a baseline measured in the same run"
)]
struct Cli {
    /// Where the Markdown report goes.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// A short run (under a minute): smaller data sets, shorter windows.
    #[arg(long)]
    quick: bool,
    /// Runs per figure; the report gives the median, min and max (at least 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(3..=20))]
    runs: u16,
    /// Do not run `cargo build --profile gateway -p zonesync-agent` before figure 4 (expect it built).
    #[arg(long)]
    no_build: bool,
    /// Only these figures, by number (e.g. `--only 1,2`); figure 1 runs too when 2, 3 or 7 need its baseline.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let opts = Options {
        quick: cli.quick,
        runs: usize::from(cli.runs),
        out: cli.out,
        build_agent: !cli.no_build,
        only: cli.only,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(run(&opts))?;
    if let Some(dir) = opts.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&opts.out, report.markdown()).with_context(|| format!("writing {}", opts.out.display()))?;
    for r in &report.rows {
        let median = r.median().map(|m| r.unit.show(m)).unwrap_or_else(|| "–".into());
        let ratio = r
            .ratio()
            .map(|x| format!("  ({} baseline)", zonesync_bench::report::ratio(x)))
            .unwrap_or_default();
        println!(
            "{:>3}  {:<60}  {median}{ratio}",
            r.id,
            r.figure.chars().take(60).collect::<String>()
        );
    }
    println!(
        "report written to {} in {:.0} s",
        opts.out.display(),
        report.elapsed_secs
    );
    // Anything still running (a broker that ignored a kill) is not waited for.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    Ok(())
}

//! Figure 4: what the agent costs a gateway — the stripped binary as gateways
//! build it (`--profile gateway`), and the peak resident memory (VmHWM) of an
//! agent process simulating 50 meters at 1 s while it drains a large backlog
//! into Mosquitto.
//!
//! collectd is the comparison the issue asks for; it is measured only when
//! Debian's `collectd-core` is installed (the harness never installs
//! anything), configured as a small MQTT gateway daemon: the cpu, memory,
//! load and interface plugins every second, published by its mqtt plugin at
//! QoS 1 to the same kind of Mosquitto.

use crate::data;
use crate::mosquitto::{memory_of, wait_child, Broker};
use crate::report::{Row, Target, Unit};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

const COLLECTD: &str = "/usr/sbin/collectd";
const COLLECTD_PLUGINS: [&str; 5] = ["cpu", "memory", "load", "interface", "mqtt"];

/// glibc malloc arenas the agent may use, set as the systemd unit sets it
/// (`Environment=MALLOC_ARENA_MAX=2`): one arena per thread would keep each
/// thread's freed memory apart.
const MALLOC_ARENA_MAX: &str = "2";

/// Name the harness gives the `--no-default-features` build (simulator and declarations only).
const MINIMAL: &str = "zonesync-agent-minimal";

/// Name the harness gives the `--features opcua` build: every source the agent has.
const EVERY_SOURCE: &str = "zonesync-agent-opcua";

/// The cargo profile gateways are told to build with (workspace Cargo.toml):
/// optimised for size, fat LTO, one codegen unit, panic = abort, stripped.
const PROFILE: &str = "gateway";

async fn cargo_build(extra: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args([
            "build",
            "--profile",
            PROFILE,
            "-p",
            "zonesync-agent",
            "--bin",
            "zonesync-agent",
        ])
        .args(extra)
        .current_dir(crate::workspace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let what = format!("cargo build --profile {PROFILE} -p zonesync-agent {}", extra.join(" "));
    let st = wait_child(&mut child, &what, Duration::from_secs(900)).await?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

/// Builds (or finds up to date) the agent as gateways build it ([`PROFILE`]);
/// returns its path and the build's duration. The `--no-default-features`
/// and `--features opcua` builds come first and are copied aside as
/// [`MINIMAL`] and [`EVERY_SOURCE`], since all three land on the same path.
pub async fn agent_binary(build: bool) -> Result<(PathBuf, Option<Duration>)> {
    let exe = std::env::current_exe()?;
    // The harness runs from target/release; cargo puts the profile's output beside it.
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("harness binary has no target directory")?
        .join(PROFILE);
    let t0 = Instant::now();
    let p = dir.join("zonesync-agent");
    if build {
        cargo_build(&["--no-default-features"]).await?;
        std::fs::copy(&p, dir.join(MINIMAL)).context("keeping the minimal build")?;
        cargo_build(&["--features", "opcua"]).await?;
        std::fs::copy(&p, dir.join(EVERY_SOURCE)).context("keeping the build with OPC UA")?;
        cargo_build(&[]).await?;
    }
    if !p.exists() {
        bail!(
            "{} not found (build it: cargo build --profile gateway -p zonesync-agent)",
            p.display()
        );
    }
    Ok((p, build.then(|| t0.elapsed())))
}

/// `file`'s verdict on stripping, if `file` is installed.
fn stripped(p: &Path) -> String {
    std::process::Command::new("file")
        .arg("-b")
        .arg(p)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .map(|s| {
            if s.contains("not stripped") {
                "not stripped".to_owned()
            } else if s.contains("stripped") {
                "stripped".to_owned()
            } else {
                "strip state unknown".to_owned()
            }
        })
        .unwrap_or_else(|| "the gateway profile sets strip = true".into())
}

/// Samples a process's VmHWM every 200 ms for `secs`; returns the last (peak) value.
async fn watch(pid: u32, secs: u64) -> Option<u64> {
    let mut peak = None;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some((hwm, _)) = memory_of(pid) {
            peak = Some(hwm);
        } else {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    peak
}

/// SIGTERM, then at most 10 s for a clean exit, then SIGKILL.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// One agent process run; (VmHWM bytes, backlog items left when it stopped).
async fn agent_run(ctx: &Ctx, binary: &Path, run: usize, backlog: bool) -> Result<(u64, Option<String>)> {
    let dir = ctx.scratch(&format!("footprint-{run}-{backlog}"));
    let broker = Broker::start(&dir.join("broker")).await?;
    let data_dir = dir.join("agent");
    if backlog {
        data::copy_dir(&ctx.outbox_template()?.path, &data_dir.join("outbox"))?;
    }
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "agent_id = \"bench-footprint\"\nzone = \"{}\"\ndata_dir = \"{}\"\n[mqtt]\nport = {}\nend_to_end_confirm = false\n\
             [simulator]\ninterval_ms = 1000\nmeters_per_enterprise = 50\n\
             [[simulator.enterprises]]\nid = \"{}\"\n",
            data::ZONE,
            data_dir.display(),
            broker.port,
            data::enterprise(900)?
        ),
    )?;
    let mut child = Command::new(binary)
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        // As deploy/systemd/zonesync-agent.service starts it.
        .env("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the agent")?;
    let pid = child.id().context("agent has no pid")?;
    let peak = watch(pid, ctx.sizes.footprint_secs).await;
    // An agent that stopped by itself (a configuration it refused) is a
    // failed run, not a small one: a zombie's status has no VmHWM to read.
    if let Ok(Some(status)) = child.try_wait() {
        broker.stop().await;
        bail!("the agent exited by itself during the window ({status})");
    }
    terminate(&mut child).await;
    broker.stop().await;
    let peak = peak.context("could not read the agent's /proc status (did it exit early?)")?;
    // The backlog left, from the agent's own status command (it reads the outbox once the agent has stopped).
    let left = Command::new(binary)
        .args(["status", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "error")
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .map(|v| {
            format!(
                "{} pending items, {} sealed batches, {} dropped",
                v["pending_items"], v["sealed_batches"], v["dropped_readings"]
            )
        });
    let _ = std::fs::remove_dir_all(&dir);
    Ok((peak, left))
}

/// A collectd run's VmHWM, publishing to a fresh Mosquitto.
async fn collectd_run(ctx: &Ctx, run: usize) -> Result<u64> {
    let dir = ctx.scratch(&format!("collectd-{run}"));
    let broker = Broker::start(&dir.join("broker")).await?;
    let conf = dir.join("collectd.conf");
    let mut text = format!(
        "Hostname \"bench\"\nFQDNLookup false\nInterval 1\nBaseDir \"{0}\"\nPIDFile \"{0}/collectd.pid\"\n\
         PluginDir \"/usr/lib/collectd\"\nTypesDB \"/usr/share/collectd/types.db\"\n",
        dir.display()
    );
    for p in COLLECTD_PLUGINS {
        text.push_str(&format!("LoadPlugin {p}\n"));
    }
    text.push_str(&format!(
        "<Plugin mqtt>\n  <Publish \"bench\">\n    Host \"127.0.0.1\"\n    Port \"{}\"\n    ClientId \"collectd-bench\"\n    \
         QoS 1\n    Prefix \"collectd\"\n  </Publish>\n</Plugin>\n",
        broker.port
    ));
    std::fs::write(&conf, text)?;
    let mut child = Command::new(COLLECTD)
        .arg("-f")
        .arg("-C")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("collectd has no pid")?;
    let peak = watch(pid, ctx.sizes.footprint_secs).await;
    terminate(&mut child).await;
    broker.stop().await;
    peak.context("collectd exited early (check its configuration)")
}

fn collectd_size() -> u64 {
    let plugins: u64 = COLLECTD_PLUGINS
        .iter()
        .filter_map(|p| std::fs::metadata(format!("/usr/lib/collectd/{p}.so")).ok())
        .map(|m| m.len())
        .sum();
    std::fs::metadata(COLLECTD).map(|m| m.len()).unwrap_or(0) + plugins
}

/// Figures 4 (binary size) and 4b (peak RSS).
pub async fn measure(ctx: &Ctx, built: Result<(PathBuf, Option<Duration>)>) -> Vec<Row> {
    let mut size = Row::new(
        "4",
        "Agent footprint: stripped binary zonesync-agent (gateway profile, default features: every source but OPC UA)",
        Unit::Bytes,
    );
    let mut rss = Row::new(
        "4b",
        "Agent footprint: peak RSS (VmHWM) of an agent process, simulator 50 meters at 1 s + large backlog draining",
        Unit::Bytes,
    );
    // Issue 3's bounds: ≤ 8 MB stripped with all sources, ≤ 10 MB resident
    // (issue 17 added OPC UA; figure 4d holds the build with it to the same bound).
    size.targets = vec![Target::AtMost(8_000_000.0)];
    rss.targets = vec![Target::AtMost(10_000_000.0)];
    let collectd = Path::new(COLLECTD).exists();
    let (binary, build_time) = match built {
        Ok(b) => b,
        Err(e) => {
            size.fail(format!("{e:#}"));
            rss.fail(format!("{e:#}"));
            return vec![size, rss];
        }
    };
    match std::fs::metadata(&binary) {
        Ok(m) => {
            // A file's size does not vary between runs: one reading is the figure.
            size.runs = vec![m.len() as f64];
            size.notes.push(format!(
                "{} ({} bytes, {}), built with the workspace's `gateway` profile, as the deployment docs tell \
                 gateways to build it (release with opt-level \"s\", fat LTO, codegen-units 1, panic = abort, \
                 strip = true). A file size is deterministic, so it is read once rather than over several runs.",
                binary.display(),
                crate::report::thousands(m.len() as f64),
                stripped(&binary)
            ));
            size.notes.push(match build_time {
                Some(t) => format!(
                    "The harness ran `cargo build --profile gateway -p zonesync-agent` first ({:.0} s, not part of any figure).",
                    t.as_secs_f64()
                ),
                None => "Measured as found (--no-build).".into(),
            });
        }
        Err(e) => size.fail(e),
    }
    let minimal = aside(
        &binary,
        MINIMAL,
        "4c",
        "Agent footprint: stripped binary built with --no-default-features (gateway profile; simulator and declarations only)",
        "`cargo build --profile gateway -p zonesync-agent --no-default-features`, i.e. without the plant sources \
         and the energy platform; same profile as figure 4.",
        None,
    );
    let every_source = aside(
        &binary,
        EVERY_SOURCE,
        "4d",
        "Agent footprint: stripped binary with every source, OPC UA included (gateway profile, --features opcua)",
        "`cargo build --profile gateway -p zonesync-agent --features opcua`: figure 4's build plus the OPC UA \
         client (async-opcua), which the default build leaves out for its size (docs/sources.md, \"Size\").",
        Some(8_000_000.0),
    );
    let mut lefts = Vec::new();
    for run in 0..ctx.runs {
        match agent_run(ctx, &binary, run, true).await {
            Ok((peak, left)) => {
                rss.runs.push(peak as f64);
                lefts.push(left.unwrap_or_else(|| "unknown".into()));
            }
            Err(e) => rss.fail(format!("run {}: {e:#}", run + 1)),
        }
    }
    // For scale: the same agent with an empty outbox, once.
    match agent_run(ctx, &binary, 99, false).await {
        Ok((peak, _)) => rss.notes.push(format!(
            "For scale, one run of the same agent with an empty outbox (live readings only): VmHWM {}.",
            Unit::Bytes.show(peak as f64)
        )),
        Err(e) => rss.notes.push(format!("The run without a backlog failed: {e:#}")),
    }
    let mut collectd_rss = Vec::new();
    if collectd {
        for run in 0..ctx.runs {
            match collectd_run(ctx, run).await {
                Ok(v) => collectd_rss.push(v as f64),
                Err(e) => rss.notes.push(format!("collectd run {} failed: {e:#}", run + 1)),
            }
        }
        size.baseline = Some((
            format!("collectd + {} plugins", COLLECTD_PLUGINS.len()),
            collectd_size() as f64,
        ));
        if let Some(m) = crate::stats::median(&collectd_rss) {
            rss.baseline = Some(("collectd, same duration".into(), m));
        }
        let shown: Vec<String> = collectd_rss.iter().map(|v| Unit::Bytes.show(*v)).collect();
        rss.notes.push(format!(
            "collectd baseline: {COLLECTD} -f with plugins {} at Interval 1 (its own host metrics, published over \
             MQTT at QoS 1 to a fresh Mosquitto) for the same {} s; runs: {}. It does less work than the agent (a few \
             dozen values a second, no durable outbox), so it is a floor for a gateway daemon, not a like-for-like \
             workload. collectd's size is its binary plus those plugins' .so files; the shared libraries both \
             programs load (libc; for collectd also libmosquitto, libcap) are not counted.",
            COLLECTD_PLUGINS.join(", "),
            ctx.sizes.footprint_secs,
            shown.join(", ")
        ));
    } else {
        let why = "collectd not measured: Debian's collectd-core is not installed on this machine \
                   (install it with `apt-get install -y collectd-core` and run again to get the comparison)";
        size.notes.push(why.into());
        rss.notes.push(why.into());
    }
    let template = ctx.outbox_template().map(|t| t.items).unwrap_or(0);
    rss.notes.push(format!(
        "The gateway-profile binary as a process (`zonesync-agent run -c …`, RUST_LOG=warn, MALLOC_ARENA_MAX={} as \
         the systemd unit sets it): simulator with 1 enterprise × \
         50 meters at interval 1000 ms, its outbox pre-loaded with a copy of figure 3's backlog ({} readings), \
         default outbox settings (store cache 1 MiB, disk budget 256 MiB), publishing to Mosquitto. VmHWM read from /proc/<pid>/status \
         every 200 ms for {} s, then SIGTERM.",
        MALLOC_ARENA_MAX,
        crate::report::thousands(template as f64),
        ctx.sizes.footprint_secs
    ));
    if !lefts.is_empty() {
        rss.notes.push(format!(
            "Backlog left when each run stopped (zonesync-agent status): {}.",
            lefts.join("; ")
        ));
    }
    vec![size, minimal, every_source, rss]
}

/// The size row of a build [`agent_binary`] copied aside as `name` beside `binary`.
fn aside(binary: &Path, name: &str, id: &str, title: &str, how: &str, at_most: Option<f64>) -> Row {
    let mut row = Row::new(id, title, Unit::Bytes);
    row.targets = at_most.map(Target::AtMost).into_iter().collect();
    let path = binary.with_file_name(name);
    match std::fs::metadata(&path) {
        Ok(m) => {
            row.runs = vec![m.len() as f64];
            row.notes.push(format!(
                "{} ({} bytes, {}): {how}",
                path.display(),
                crate::report::thousands(m.len() as f64),
                stripped(&path)
            ));
        }
        Err(e) => row.fail(format!("{}: {e} (not built: run without --no-build)", path.display())),
    }
    row
}

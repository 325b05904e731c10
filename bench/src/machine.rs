//! Where the figures were taken: CPU, cores, memory, kernel, commit, tools.
//! Read from /proc and from short commands; anything unreadable says so
//! instead of stopping the run.

use std::path::Path;
use std::process::Command;

/// The machine and the code measured.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Usable cores (`nproc`).
    pub nproc: usize,
    /// MemTotal from /proc/meminfo.
    pub memory: String,
    /// Kernel release.
    pub kernel: String,
    /// Git commit, and whether the tree had uncommitted changes.
    pub commit: String,
    /// `rustc -V`.
    pub rustc: String,
    /// Mosquitto's version line.
    pub mosquitto: String,
    /// When the run started (UTC).
    pub started_at: String,
    /// /proc/loadavg's first three fields when the run started.
    pub loadavg: String,
}

fn command_line(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = Command::new(program).args(args).current_dir(dir).output().ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    let line = String::from_utf8_lossy(&text).lines().next()?.trim().to_owned();
    (!line.is_empty()).then_some(line)
}

/// /proc/loadavg's 1, 5 and 15 minute averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Now, UTC, to the second.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

impl Machine {
    /// Reads everything; `workspace` is where git runs.
    pub fn probe(workspace: &Path, mosquitto: Option<&Path>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown (no model name in /proc/cpuinfo)".into());
        let nproc = command_line("nproc", &[], workspace)
            .and_then(|s| s.parse().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(0);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let kb: f64 = m
                    .lines()
                    .find(|l| l.starts_with("MemTotal:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB ({} kB MemTotal)", kb / 1024.0 / 1024.0, kb as u64))
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .ok()
            .or_else(|| command_line("uname", &["-r"], workspace))
            .unwrap_or_else(|| "unknown".into());
        let commit = match command_line("git", &["rev-parse", "HEAD"], workspace) {
            Some(c) => {
                let dirty = Command::new("git")
                    .args(["status", "--porcelain"])
                    .current_dir(workspace)
                    .output()
                    .map(|o| o.stdout.iter().filter(|b| **b == b'\n').count())
                    .unwrap_or(0);
                if dirty > 0 {
                    format!("{c} plus uncommitted changes in {dirty} paths (work in progress was measured)")
                } else {
                    c
                }
            }
            None => "unknown (not a git checkout)".into(),
        };
        let rustc = command_line("rustc", &["-V"], workspace).unwrap_or_else(|| "unknown".into());
        let mosquitto = mosquitto
            .and_then(|p| command_line(&p.display().to_string(), &["-h"], workspace))
            .unwrap_or_else(|| "not found".into());
        Self {
            cpu_model,
            nproc,
            memory,
            kernel,
            commit,
            rustc,
            mosquitto,
            started_at: now(),
            loadavg: loadavg(),
        }
    }
}

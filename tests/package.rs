//! The Debian packages (issue 15, item 8), built with cargo-deb from the
//! binaries `scripts/test.sh` built, installed with `dpkg -i` on the machine
//! the test runs on (root, as CI), and run from what they installed: each
//! service as its own system user, the broker set up with the package's
//! `zonesync-mosquitto-setup`, a reading carried from the agent to the
//! aggregator. The packages are purged at the end, whatever happened.
//!
//! Needs root and cargo-deb (`scripts/test.sh` installs it); without either
//! it fails saying so, it never skips.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use zonesync_e2e::{dataset, Api, Mosquitto, Proc};

const PACKAGES: [&str; 2] = ["zonesync-agent", "zonesync-aggregator"];

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The workspace root (tests/ is one of its members).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Purges the packages when dropped, so a failed run leaves nothing installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .arg("--purge")
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
    }
}

/// Builds the .deb of `package` into `out` from the debug binaries already built.
fn build_deb(package: &str, out: &Path) -> PathBuf {
    // `--profile dev`: the binaries scripts/test.sh built (target/debug),
    // not a release build of their own; cargo-deb warns that this is not
    // for shipping, which it is not here.
    run(Command::new("cargo")
        .current_dir(workspace())
        .args(["deb", "-p", package, "--no-build", "--profile", "dev", "--fast", "-o"])
        .arg(out));
    std::fs::read_dir(out)
        .expect("deb folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .unwrap_or_else(|| panic!("no .deb of {package} in {}", out.display()))
}

/// uid, gid, home and shell of a user, from getent.
fn user(name: &str) -> (u32, u32, String, String) {
    let line = text(&run(Command::new("getent").args(["passwd", name])));
    let f: Vec<&str> = line.split(':').collect();
    assert_eq!(f.len(), 7, "{line}");
    (
        f[2].parse().expect("uid"),
        f[3].parse().expect("gid"),
        f[5].to_owned(),
        f[6].to_owned(),
    )
}

fn installed_unit(name: &str) -> String {
    ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| panic!("{name} not installed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packages_install_users_units_and_configuration_and_run_from_what_they_installed() {
    assert_eq!(
        text(&run(Command::new("id").arg("-u"))),
        "0",
        "installing packages needs root (CI runs as root); this test does not skip"
    );
    let cargo_deb = Command::new("cargo").args(["deb", "--version"]).output();
    assert!(
        cargo_deb.is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: scripts/test.sh installs it (cargo install --locked cargo-deb)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let debs = dir.path().join("debs");
    std::fs::create_dir(&debs).expect("deb folder");
    let files: Vec<PathBuf> = PACKAGES.iter().map(|p| build_deb(p, &debs)).collect();

    let _installed = Installed;
    run(Command::new("dpkg")
        .arg("-i")
        .args(&files)
        .env("DEBIAN_FRONTEND", "noninteractive"));

    // What each package put where.
    for (package, config, group_of_config) in [
        ("zonesync-agent", "/etc/zonesync/agent.toml", "zonesync-agent"),
        (
            "zonesync-aggregator",
            "/etc/zonesync/aggregator.toml",
            "zonesync-aggregator",
        ),
    ] {
        let status = text(&run(Command::new("dpkg-query").args(["-W", "-f=${Status}", package])));
        assert_eq!(status, "install ok installed", "{package}");
        let bin = Path::new("/usr/bin").join(package);
        let mode = std::fs::metadata(&bin).expect("installed binary").permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{}", bin.display());
        let (uid, gid, home, shell) = user(package);
        assert!(uid < 1000, "{package} is a system user (uid {uid})");
        assert_eq!(home, format!("/var/lib/{package}"));
        assert!(
            shell.ends_with("nologin") || shell.ends_with("false"),
            "{package}: shell {shell}"
        );
        let meta = std::fs::metadata(config).expect("configuration installed");
        assert_eq!(
            (meta.mode() & 0o777, meta.uid(), meta.gid()),
            (0o640, 0, gid),
            "{config}: root:{group_of_config} 0640"
        );
        let conffiles = std::fs::read_to_string(format!("/var/lib/dpkg/info/{package}.conffiles")).expect("conffiles");
        assert!(
            conffiles.lines().any(|l| l == config),
            "{config} is a conffile: {conffiles}"
        );
        let shipped =
            std::fs::read_to_string(workspace().join(format!("deploy/systemd/{package}.service"))).expect("unit");
        assert_eq!(
            installed_unit(&format!("{package}.service")),
            shipped,
            "{package}'s unit"
        );
    }
    let groups = text(&run(Command::new("id").args(["-nG", "zonesync-agent"])));
    assert!(groups.split(' ').any(|g| g == "dialout"), "serial meters: {groups}");

    // The broker: users and their password file through the packaged script.
    let mosq = dir.path().join("mosquitto");
    let mut setup = Command::new("/usr/sbin/zonesync-mosquitto-setup")
        .args(["zonesync-aggregator", "agent-a", "agent-b"])
        .env("MOSQUITTO_DIR", &mosq)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zonesync-mosquitto-setup");
    {
        use std::io::Write;
        let mut stdin = setup.stdin.take().expect("stdin");
        stdin.write_all(b"agg-pw\na-pw\nb-pw\n").expect("passwords");
    }
    let out = setup.wait_with_output().expect("zonesync-mosquitto-setup");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let passwd = mosq.join("zonesync.passwd");
    let meta = std::fs::metadata(&passwd).expect("password file");
    let (mosquitto_uid, _, _, _) = user("mosquitto");
    assert_eq!(
        (meta.mode() & 0o777, meta.uid()),
        (0o600, mosquitto_uid),
        "owned by mosquitto, 0600"
    );
    assert!(mosq.join("conf.d/zonesync.conf").exists() && mosq.join("zonesync.acl").exists());
    let broker = Mosquitto::start_with(dir.path(), &format!("password_file {}", passwd.display()));

    // Both services from their installed binaries, as their users, with the
    // passwords just set: the readings reach the aggregator.
    let ds = dataset::write(dir.path(), broker.port, 4, 20);
    for (config, user, pass) in [
        (&ds.aggregator, "zonesync-aggregator", "agg-pw"),
        (&ds.agent_a, "agent-a", "a-pw"),
        (&ds.agent_b, "agent-b", "b-pw"),
    ] {
        let text = std::fs::read_to_string(config).expect("config");
        let text = text.replace(
            "[mqtt]\n",
            &format!("[mqtt]\nusername = \"{user}\"\npassword = \"{pass}\"\n"),
        );
        std::fs::write(config, text).expect("write config");
    }
    for (data, owner) in [
        ("aggregator", "zonesync-aggregator"),
        ("agent-agent-a", "zonesync-agent"),
        ("agent-agent-b", "zonesync-agent"),
    ] {
        std::fs::create_dir_all(dir.path().join(data)).expect("data dir");
        run(Command::new("chown").arg(owner).arg(dir.path().join(data)));
    }
    let aggregator = Proc::spawn_installed_as(
        "zonesync-aggregator",
        Path::new("/usr/bin/zonesync-aggregator"),
        &["run", "-c", ds.aggregator.to_str().expect("utf-8 path")],
    );
    let addr = aggregator.line_after("API on http://", Duration::from_secs(30));
    let api = Api::new(&format!("http://{addr}"));
    api.wait_metric("zonesync_aggregator_mqtt_connected", 1.0, Duration::from_secs(30))
        .await;

    let check = run(Command::new("setpriv")
        .args([
            "--reuid",
            "zonesync-agent",
            "--regid",
            "zonesync-agent",
            "--init-groups",
            "--",
            "/usr/bin/zonesync-agent",
            "check",
            "-c",
        ])
        .arg(&ds.agent_a));
    let said = text(&check);
    assert!(
        said.contains("logged in as agent-a, publishing allowed"),
        "the installed agent's check:\n{said}"
    );
    let _agents: Vec<Proc> = [&ds.agent_a, &ds.agent_b]
        .iter()
        .map(|c| {
            Proc::spawn_installed_as(
                "zonesync-agent",
                Path::new("/usr/bin/zonesync-agent"),
                &["run", "-c", c.to_str().expect("utf-8 path")],
            )
        })
        .collect();
    let want = ds.expected_stored_readings();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let zones = api.get("/api/v1/zones").await;
        let stored = zones["zones"][0]["readings_stored"].as_u64().unwrap_or(0);
        if stored == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stored} of {want} readings stored from the installed agents; aggregator stderr:\n{}",
            aggregator.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The data directories are the services' own.
    let outbox = dir.path().join("agent-agent-a/outbox");
    let (agent_uid, _, _, _) = user("zonesync-agent");
    assert_eq!(std::fs::metadata(&outbox).expect("outbox").uid(), agent_uid);
}

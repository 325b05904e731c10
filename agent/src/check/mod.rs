//! `zonesync-agent check -c FILE`: validates the configuration the way `run`
//! does, then probes every configured source once and every upstream broker
//! (login and a test publish on each data topic, `broker.rs`) and energy
//! platform (an upload with no records, `platform::probe`). Nothing is
//! queued and the outbox is not opened, so it works beside a running agent;
//! it returns one row per target: what it read, or why it failed.

mod broker;

use crate::config::{load_catalog, AgentConfig};
use crate::run::AgentError;
use crate::shutdown::Shutdown;
use crate::sources::clock::ClockGuard;
#[cfg(feature = "csv")]
use crate::sources::csv_drop::CsvDropConfig;
#[cfg(feature = "dlt645")]
use crate::sources::dlt645;
#[cfg(feature = "http-pull")]
use crate::sources::http_pull;
#[cfg(feature = "modbus")]
use crate::sources::modbus;
use crate::sources::probe::{ProbeRead, ProbeRow};
use crate::sources::profile;
use zonesync_proto::{Limits, Validator};

/// Checks the configuration (an error means the agent would not start) and probes every source once.
pub async fn probe_all(config: &AgentConfig, shutdown: Shutdown) -> Result<Vec<ProbeRow>, AgentError> {
    // Only the meter sources take it; a build without them has no use for it.
    #[cfg(not(any(feature = "modbus", feature = "dlt645", feature = "gateways", feature = "opcua")))]
    let _ = shutdown;
    let clock = ClockGuard::new(&config.clock_sanity, None);
    let validator = Validator::new(
        load_catalog(config.catalog.as_deref())?,
        clock.limits(Limits::default()),
    );
    #[cfg(feature = "modbus")]
    let modbus = modbus::check_all(&config.modbus, &validator)?;
    #[cfg(feature = "dlt645")]
    let dlt645 = dlt645::check_all(&config.dlt645, &validator)?;
    // Serial sources probe through the same code as TCP ones: the port is
    // opened, and every point or meter read once.
    #[cfg(feature = "serial")]
    let (modbus, dlt645) =
        crate::sources::serial::attach(&crate::sources::serial::check_all(&config.serial)?, modbus, dlt645)?;
    #[cfg(feature = "http-pull")]
    let http = http_pull::check_all(&config.http_pull, &validator)?;
    #[cfg(feature = "gateways")]
    let mqtt_gateways = crate::sources::gateways::check_all(&config.mqtt_gateway, &validator)?;
    #[cfg(feature = "opcua")]
    let opcua = crate::sources::opcua::check_all(&config.opcua, &validator, &config.data_dir)?;
    #[cfg(not(feature = "opcua"))]
    if !config.opcua.is_empty() {
        return Err(AgentError::OpcUaNotBuilt);
    }
    #[cfg(feature = "energy-platform")]
    let platforms = crate::platform::check_all(&config.energy_platform, &validator.catalog)?;
    crate::sources::series::check(config)?;

    let mut rows = Vec::new();
    if let Some(sim) = &config.simulator {
        rows.push(sim.probe());
    }
    if let Some(p) = &config.profile {
        rows.push(probe_profile(&p.path, &validator));
    }
    #[cfg(feature = "csv")]
    for folder in &config.csv_drop {
        rows.push(probe_folder(folder));
    }
    #[cfg(feature = "modbus")]
    for device in &modbus {
        rows.extend(device.probe(shutdown.clone()).await);
    }
    #[cfg(feature = "dlt645")]
    for gateway in &dlt645 {
        rows.extend(gateway.probe(shutdown.clone()).await);
    }
    #[cfg(feature = "http-pull")]
    for source in &http {
        rows.extend(source.probe().await);
    }
    // A gateway publishes on its own schedule: wait a few seconds for its tags.
    #[cfg(feature = "gateways")]
    for checked in mqtt_gateways {
        let client_id = format!("{}-{}", config.agent_id, checked.cfg.name);
        let source = crate::sources::gateways::MqttGateway::new(checked, validator.clone(), client_id);
        rows.extend(source.probe(std::time::Duration::from_secs(10), shutdown.clone()).await);
    }
    // Connects, reads every node once, reports per node.
    #[cfg(feature = "opcua")]
    for checked in opcua {
        let source = crate::sources::opcua::OpcUaSource::new(checked, validator.clone());
        rows.extend(source.probe(shutdown.clone()).await);
    }
    #[cfg(feature = "energy-platform")]
    for p in &platforms {
        rows.push(crate::platform::probe(p).await);
    }
    rows.extend(
        broker::probe_upstreams(
            &config.agent_id,
            &config.zone,
            &crate::run::enterprises(config),
            &config.upstreams()?,
        )
        .await,
    );
    Ok(rows)
}

/// Parses the profile and lists the figures that would be sent.
fn probe_profile(path: &std::path::Path, validator: &Validator) -> ProbeRow {
    let target = path.display().to_string();
    let file = match profile::read_file(path, Some(validator)) {
        Ok((f, problems)) if problems.is_empty() => f,
        Ok((_, problems)) => return ProbeRow::error("profile", target, problems.join("; ")),
        Err(e) => return ProbeRow::error("profile", target, e),
    };
    let items = profile::items(&file, validator);
    let declared = items
        .values()
        .filter(|(_, i)| matches!(i, crate::outbox::Item::Declaration(_)))
        .count();
    let reads = items
        .into_values()
        .filter_map(|(_, i)| match i {
            crate::outbox::Item::Reading(r) => Some(ProbeRead {
                indicator: format!(
                    "{}@{}",
                    r.indicator,
                    r.period.map(|p| p.to_string()).unwrap_or_default()
                ),
                point: r.point,
                value: r.value,
                unit: r.unit,
            }),
            crate::outbox::Item::Declaration(_) => None,
        })
        .collect();
    ProbeRow {
        source: "profile".into(),
        target: format!(
            "{target} ({} enterprises, {declared} declarations)",
            file.enterprise.len()
        ),
        result: Ok(reads),
    }
}

/// A drop folder must be listable, and its `done/` and `rejected/` creatable.
#[cfg(feature = "csv")]
fn probe_folder(folder: &CsvDropConfig) -> ProbeRow {
    let target = folder.folder.display().to_string();
    if let Err(e) = folder.check() {
        return ProbeRow::error("csv_drop", target, e);
    }
    match std::fs::read_dir(&folder.folder) {
        Err(e) => ProbeRow::error("csv_drop", target, format!("folder not readable: {e}")),
        Ok(rd) => {
            let waiting = rd
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x.eq_ignore_ascii_case("csv")))
                .count();
            let writable = std::fs::metadata(&folder.folder).map(|m| !m.permissions().readonly());
            match writable {
                Ok(true) => ProbeRow::ok("csv_drop", format!("{target} ({waiting} csv files waiting)")),
                Ok(false) => ProbeRow::error(
                    "csv_drop",
                    target,
                    "folder is read-only: files cannot be moved to done/",
                ),
                Err(e) => ProbeRow::error("csv_drop", target, e),
            }
        }
    }
}

#[cfg(all(test, not(feature = "opcua")))]
mod without_opcua {
    /// An agent built without OPC UA says so, instead of "unknown field".
    #[tokio::test]
    async fn an_opcua_table_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(
            &p,
            "agent_id = \"gw-1\"\nzone = \"jiyuan-hitech\"\n[[opcua]]\nname = \"dcs-1\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\n",
        )
        .unwrap();
        let config = crate::config::AgentConfig::load(&p).unwrap();
        let (_trigger, shutdown) = crate::shutdown::channel();
        let e = super::probe_all(&config, shutdown).await.unwrap_err();
        assert!(e.to_string().contains("--features opcua"), "{e}");
    }
}

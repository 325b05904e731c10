//! Starts an agent: opens the outbox, counts the boot, starts every configured
//! source and one link per upstream, and waits for all of them after shutdown.
//!
//! A source that fails is started again by [`supervise`]; a task that fails
//! for good (a source whose store no longer takes writes, a link whose outbox
//! failed) stops the whole agent with its error rather than leaving it half
//! alive: the service manager starts it again, and the outbox is durable.

use crate::config::AgentConfig;
use crate::history::History;
use crate::link::{Link, LinkStats};
use crate::outbox::{Outbox, OutboxError};
use crate::shutdown::Shutdown;
use crate::sources::clock::ClockGuard;
use crate::sources::supervise::{supervise, Backoff};
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::task::JoinSet;
use zonesync_proto::{EnterpriseId, Limits, Validator};

/// Why an agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("creating data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[cfg(feature = "modbus")]
    #[error(transparent)]
    Modbus(#[from] crate::sources::modbus::ModbusConfigError),
    #[cfg(feature = "dlt645")]
    #[error(transparent)]
    Dlt645(#[from] crate::sources::dlt645::Dlt645ConfigError),
    #[cfg(feature = "serial")]
    #[error(transparent)]
    Serial(#[from] crate::sources::serial::SerialConfigError),
    #[cfg(feature = "gateways")]
    #[error(transparent)]
    MqttGateway(#[from] crate::sources::gateways::MqttGatewayConfigError),
    #[cfg(feature = "opcua")]
    #[error(transparent)]
    OpcUa(#[from] crate::sources::opcua::OpcUaConfigError),
    #[cfg(not(feature = "opcua"))]
    #[error("[[opcua]] is configured, but this agent was built without OPC UA: build it with `--features opcua`")]
    OpcUaNotBuilt,
    #[cfg(feature = "http-pull")]
    #[error(transparent)]
    HttpPull(#[from] crate::sources::http_pull::HttpPullConfigError),
    #[cfg(feature = "energy-platform")]
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformConfigError),
    #[cfg(feature = "csv")]
    #[error(transparent)]
    CsvDrop(#[from] crate::sources::csv_drop::CsvDropConfigError),
    #[error(transparent)]
    SharedSeries(#[from] crate::sources::series::SharedSeries),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("agent task failed: {0}")]
    Task(String),
}

/// Enterprises the agent reports for, for the birth message (and `check`'s test messages).
pub(crate) fn enterprises(config: &AgentConfig) -> Vec<EnterpriseId> {
    let mut out: Vec<EnterpriseId> = Vec::new();
    if let Some(sim) = &config.simulator {
        out.extend(sim.enterprises.iter().map(|e| e.id.clone()));
    }
    if let Some(p) = &config.profile {
        if let Ok((file, _)) = crate::sources::profile::read_file(&p.path, None) {
            out.extend(file.enterprise.into_iter().map(|e| e.id));
        }
    }
    #[cfg(feature = "modbus")]
    out.extend(config.modbus.iter().map(|m| m.enterprise.clone()));
    #[cfg(feature = "dlt645")]
    out.extend(config.dlt645.iter().map(|m| m.enterprise.clone()));
    #[cfg(feature = "gateways")]
    out.extend(
        config
            .mqtt_gateway
            .iter()
            .flat_map(|g| g.tags.iter().map(|t| t.enterprise.clone())),
    );
    #[cfg(feature = "opcua")]
    out.extend(config.opcua.iter().map(|s| s.enterprise.clone()));
    #[cfg(feature = "http-pull")]
    out.extend(
        config
            .http_pull
            .iter()
            .flat_map(|h| h.mappings.iter().map(|m| m.enterprise.clone())),
    );
    out.sort();
    out.dedup();
    out
}

/// Spawns source `name`, started again after a failure (see [`supervise`]).
fn spawn_source<F, Fut>(
    tasks: &mut JoinSet<Result<(), OutboxError>>,
    name: String,
    outbox: &Arc<Outbox>,
    shutdown: &Shutdown,
    restarts: &Arc<AtomicU64>,
    start: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), OutboxError>> + Send + 'static,
{
    tasks.spawn(supervise(
        name,
        outbox.clone(),
        shutdown.clone(),
        Backoff::default(),
        restarts.clone(),
        start,
    ));
}

/// Runs the agent until `shutdown` fires, or a task fails for good; returns
/// once every task has ended.
pub async fn run(config: AgentConfig, mut outer: Shutdown) -> Result<(), AgentError> {
    // Every task holds `shutdown`: fired by the caller's signal, or by the
    // first task that fails for good.
    let (stop, shutdown) = crate::shutdown::channel();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let upstreams = config.upstreams()?;
    let outbox = Outbox::open_with(&config.data_dir.join("outbox"), config.outbox_options()?)?;
    // History records what the outbox took, so it is attached before any source starts.
    let history = match config.history.enabled {
        true => Some(Arc::new(History::open(
            &crate::history::dir(&config.data_dir),
            config.history.clone(),
        )?)),
        false => None,
    };
    let outbox = Arc::new(match &history {
        Some(h) => outbox.with_history(h.clone()),
        None => outbox,
    });
    let boot = outbox.next_boot()?;
    let stats = outbox.stats();
    tracing::info!(agent = %config.agent_id, boot, pending = stats.pending_items, sealed = stats.sealed_batches,
        next_seq = stats.next_seq, "agent starting");
    let validator = Validator::new(
        crate::config::load_catalog(config.catalog.as_deref())?,
        Limits::default(),
    );

    // Timestamps far ahead, or before the enterprise existed, are refused
    // before they are queued (sources::clock); the catalog check every
    // source makes uses the same look-ahead and floor.
    let clock = Arc::new(ClockGuard::new(
        &config.clock_sanity,
        config.profile.as_ref().map(|p| p.path.clone()),
    ));
    let validator = Validator {
        limits: clock.limits(validator.limits.clone()),
        ..validator
    };

    // Checked before anything starts, so a mistyped point stops the agent
    // at start-up instead of silently never reporting.
    #[cfg(feature = "modbus")]
    let modbus = crate::sources::modbus::check_all(&config.modbus, &validator)?;
    #[cfg(feature = "modbus")]
    let modbus: Vec<_> = modbus.into_iter().map(|d| d.with_clock(clock.clone())).collect();
    #[cfg(feature = "dlt645")]
    let dlt645 = crate::sources::dlt645::check_all(&config.dlt645, &validator)?;
    #[cfg(feature = "serial")]
    let (modbus, dlt645) =
        crate::sources::serial::attach(&crate::sources::serial::check_all(&config.serial)?, modbus, dlt645)?;
    #[cfg(feature = "http-pull")]
    let http_pull = crate::sources::http_pull::check_all(&config.http_pull, &validator)?;
    #[cfg(feature = "gateways")]
    let mqtt_gateways = crate::sources::gateways::check_all(&config.mqtt_gateway, &validator)?;
    #[cfg(feature = "energy-platform")]
    let platforms = crate::platform::check_all(&config.energy_platform, &validator.catalog)?;
    #[cfg(feature = "csv")]
    for folder in &config.csv_drop {
        folder.check()?;
    }
    #[cfg(feature = "opcua")]
    let opcua = crate::sources::opcua::check_all(&config.opcua, &validator, &config.data_dir)?;
    #[cfg(not(feature = "opcua"))]
    if !config.opcua.is_empty() {
        return Err(AgentError::OpcUaNotBuilt);
    }
    crate::sources::series::check(&config)?;

    let mut tasks: JoinSet<Result<(), OutboxError>> = JoinSet::new();
    let restarts = Arc::new(AtomicU64::new(0));
    // Each meter or gateway source's counters, for the status file.
    #[allow(unused_mut)]
    let mut counters: Vec<(String, crate::status::SourceCounters)> = Vec::new();
    // Each source is started again from a clone of its configuration.
    let (o, s) = (outbox.clone(), shutdown.clone());
    if let Some(sim) = config.simulator.clone() {
        let (o, s) = (o.clone(), s.clone());
        let name = crate::sources::simulator::SOURCE.to_owned();
        spawn_source(&mut tasks, name, &outbox, &shutdown, &restarts, move || {
            sim.clone().run(o.clone(), s.clone())
        });
    }
    if let Some(profile) = config.profile.clone() {
        let (o, s, v) = (o.clone(), s.clone(), validator.clone());
        let name = crate::sources::profile::SOURCE.to_owned();
        spawn_source(&mut tasks, name, &outbox, &shutdown, &restarts, move || {
            profile.clone().run(o.clone(), v.clone(), s.clone())
        });
    }
    #[cfg(feature = "modbus")]
    for device in modbus {
        let (o, s) = (o.clone(), s.clone());
        let name = device.source_name();
        let stats = device.stats.clone();
        counters.push((name.clone(), Arc::new(move || stats.counts())));
        spawn_source(&mut tasks, name, &outbox, &shutdown, &restarts, move || {
            device.clone().run(o.clone(), s.clone())
        });
    }
    #[cfg(feature = "csv")]
    for folder in config.csv_drop.clone() {
        let (o, s, v) = (o.clone(), s.clone(), validator.clone());
        let name = format!("csv_drop {}", folder.name);
        spawn_source(&mut tasks, name, &outbox, &shutdown, &restarts, move || {
            folder.clone().run(o.clone(), v.clone(), s.clone())
        });
    }
    #[cfg(feature = "dlt645")]
    for gateway in dlt645 {
        let (o, s) = (o.clone(), s.clone());
        let gateway = gateway.with_clock(clock.clone());
        let name = gateway.source_name();
        let stats = gateway.stats.clone();
        counters.push((
            name.clone(),
            Arc::new(move || stats.snapshot().into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
        ));
        spawn_source(&mut tasks, name, &outbox, &shutdown, &restarts, move || {
            gateway.clone().run(o.clone(), s.clone())
        });
    }
    #[cfg(feature = "http-pull")]
    for source in http_pull {
        let (o, s) = (o.clone(), s.clone());
        let source = source.with_clock(clock.clone());
        let name = source.source_name();
        spawn_source(&mut tasks, name, &outbox, &shutdown, &restarts, move || {
            source.clone().run(o.clone(), s.clone())
        });
    }
    #[cfg(feature = "gateways")]
    for checked in mqtt_gateways {
        let (o, s) = (o.clone(), s.clone());
        let client_id = format!("{}-{}", config.agent_id, checked.cfg.name);
        let source =
            crate::sources::gateways::MqttGateway::new(checked, validator.clone(), client_id).with_clock(clock.clone());
        let name = source.source_name();
        let stats = source.stats.clone();
        counters.push((name.clone(), Arc::new(move || stats.counts())));
        spawn_source(&mut tasks, name, &outbox, &shutdown, &restarts, move || {
            source.clone().run(o.clone(), s.clone())
        });
    }
    #[cfg(feature = "opcua")]
    for checked in opcua {
        let (o, s) = (o.clone(), s.clone());
        let source = crate::sources::opcua::OpcUaSource::new(checked, validator.clone()).with_clock(clock.clone());
        let name = source.source_name();
        let stats = source.stats.clone();
        counters.push((name.clone(), Arc::new(move || stats.counts())));
        spawn_source(&mut tasks, name, &outbox, &shutdown, &restarts, move || {
            source.clone().run(o.clone(), s.clone())
        });
    }
    let links: Vec<(crate::config::Upstream, Arc<LinkStats>)> = upstreams
        .into_iter()
        .map(|u| (u, Arc::new(LinkStats::default())))
        .collect();
    #[cfg(feature = "energy-platform")]
    let platforms: Vec<(crate::platform::Checked, Arc<crate::platform::PlatformStats>)> =
        platforms.into_iter().map(|p| (p, Arc::default())).collect();
    let reporter = crate::status::Reporter {
        path: crate::status::path(&config.data_dir),
        agent: config.agent_id.clone(),
        zone: config.zone.clone(),
        boot,
        outbox: outbox.clone(),
        links: links.clone(),
        #[cfg(feature = "energy-platform")]
        platforms: platforms
            .iter()
            .map(|(p, s)| (p.cfg.name.clone(), p.cfg.url.clone(), s.clone()))
            .collect(),
        history: history.clone(),
        source_restarts: restarts.clone(),
        sources: counters,
    };
    let reporter = Arc::new(reporter);
    if let Some(listen) = &config.metrics.listen {
        let listener = crate::metrics::bind(listen).await?;
        let (r, s) = (reporter.clone(), shutdown.clone());
        tasks.spawn(async move {
            crate::metrics::serve(listener, r, s).await;
            Ok(())
        });
    }
    tasks.spawn(reporter.run(shutdown.clone()));
    if let Some(h) = &history {
        tasks.spawn(h.clone().run(shutdown.clone()));
    }
    // The outbox was opened with these upstreams in this order: the MQTT
    // ones, then the platforms.
    #[cfg(feature = "energy-platform")]
    for (i, (platform, stats)) in platforms.into_iter().enumerate() {
        let link = crate::platform::PlatformLink {
            agent: config.agent_id.clone(),
            zone: config.zone.clone(),
            boot,
            platform,
            upstream: links.len() + i,
            batching: config.outbox.clone(),
            outbox: outbox.clone(),
            stats,
        };
        tasks.spawn(link.run(shutdown.clone()));
    }
    for (index, (upstream, stats)) in links.into_iter().enumerate() {
        let link = Link {
            agent: config.agent_id.clone(),
            zone: config.zone.clone(),
            boot,
            enterprises: enterprises(&config),
            mqtt: upstream.mqtt,
            upstream: index,
            batching: config.outbox.clone(),
            outbox: outbox.clone(),
            stats,
        };
        tasks.spawn(link.run(shutdown.clone()));
    }

    let mut first_error = None;
    loop {
        let res = tokio::select! {
            _ = outer.wait(), if !shutdown.is_triggered() => {
                stop.fire();
                continue;
            }
            res = tasks.join_next() => match res {
                Some(res) => res,
                None => break,
            },
        };
        let err = match res {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => AgentError::Outbox(e),
            Err(e) => AgentError::Task(e.to_string()),
        };
        tracing::error!(agent = %config.agent_id, "{err}");
        if first_error.is_none() {
            tracing::error!(agent = %config.agent_id, "a task failed for good: stopping the agent");
            stop.fire();
        }
        first_error.get_or_insert(err);
    }
    outbox.flush()?;
    // Every source has stopped: nothing more can be recorded after this.
    if let Some(h) = &history {
        h.flush();
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

//! zonesync aggregator: subscribes to its zones, validates and de-duplicates
//! batches, stores them, keeps each zone's goal state and serves the API.
//!
//! `main.rs` only parses arguments; [`start`] runs everything in-process (the
//! demo, in the `zonesync-demo` crate, and the end-to-end tests use it directly).

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod briefing;
pub mod classify;
pub mod config;
pub mod dashboard;
pub mod dead_letters;
pub mod energy;
pub mod facts;
pub mod federation;
pub mod goals;
pub mod health;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod outbound;
pub mod quality;
pub mod registry;
pub mod registry_sheet;
pub mod report;
pub mod state;
pub mod store;
pub mod summaries;
#[cfg(test)]
mod testkit;

use app::{App, StartError};
use config::AggregatorConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use zonesync_runtime::shutdown::Shutdown;

/// A started aggregator.
pub struct Running {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Shared state (tests read metrics from it).
    pub app: Arc<App>,
    /// The tally publisher's counts, when `[federation]` is configured.
    pub federation: Option<Arc<federation::publish::PublishStats>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Resolves when a fatal problem (a dead task, a store that cannot be
    /// written) made the aggregator unhealthy: the caller shuts down and
    /// exits non-zero so systemd restarts the process.
    pub async fn failed(&self) -> Vec<String> {
        self.app.health.wait_fatal().await;
        self.app.health.problems()
    }

    /// Waits for every task to end (after shutdown).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Spawns a task that must run until shutdown: if it ends before (returns
/// or panics), the aggregator is unhealthy and `main` ends the process.
fn watched<F>(health: &Arc<health::Health>, name: &'static str, shutdown: &Shutdown, task: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let health = health.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let alive = health.task(name);
        task.await;
        if shutdown.is_triggered() {
            alive.finished();
        }
    })
}

/// Opens the store, starts ingest and the HTTP API; returns once both are up.
pub async fn start(cfg: AggregatorConfig, shutdown: Shutdown) -> Result<Running, StartError> {
    let app = Arc::new(App::open(&cfg)?);
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .map_err(|source| StartError::Http {
            addr: cfg.http.listen.clone(),
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Http {
        addr: cfg.http.listen.clone(),
        source,
    })?;
    let (router, paths) = api::router(app.clone())
        .merge(dashboard::router(app.clone(), shutdown.clone()))
        .split_for_parts();
    let router = router.merge(openapi::router(openapi::document(paths)));
    let limits = http::Limits::new(&cfg.http);
    let http = watched(
        &app.health,
        "HTTP API",
        &shutdown,
        http::serve(listener, router, limits, shutdown.clone()),
    );
    let alerts = watched(
        &app.health,
        "alerts",
        &shutdown,
        alerts::run(app.alerts(), cfg.alerts.clone(), shutdown.clone()),
    );
    let refresher = watched(
        &app.health,
        "goal refresher",
        &shutdown,
        goals::cache::refresh(app.tables(), cfg.goal_refresh_ms, shutdown.clone()),
    );
    let summaries = watched(
        &app.health,
        "summaries",
        &shutdown,
        summaries::run(app.summaries(), cfg.summaries.clone(), shutdown.clone()),
    );
    let (publisher, publisher_task) = outbound::publisher::start(&cfg.mqtt, shutdown.clone());
    let retry = outbound::Retry {
        base_ms: cfg.outbound.retry_base_ms,
        max_ms: cfg.outbound.retry_max_ms,
    };
    let outbound = watched(
        &app.health,
        "outbound delivery",
        &shutdown,
        outbound::run(app.outbound(), publisher.clone(), retry, shutdown.clone()),
    );
    let mut tasks = vec![];
    let sources = match cfg.federation {
        Some(_) => Some(publish_sources(&app, &cfg)?),
        None => None,
    };
    let federation = cfg.federation.clone().zip(sources).map(|(fed, sources)| {
        let stats = Arc::new(federation::publish::PublishStats::default());
        let task = federation::publish::run(fed, sources, publisher.clone(), stats.clone(), shutdown.clone());
        tasks.push(watched(&app.health, "tally publisher", &shutdown, async move {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "tally publisher stopped");
            }
        }));
        stats
    });
    let ingest = tokio::spawn(ingest::run(app.ingest(), cfg.mqtt.clone(), shutdown));
    tracing::info!(%http_addr, broker = %format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port), "aggregator started");
    Ok(Running {
        http_addr,
        app,
        federation,
        tasks: [http, ingest, alerts, refresher, summaries, outbound, publisher_task]
            .into_iter()
            .chain(tasks)
            .collect(),
    })
}

/// The tally publisher's handle: the zones' state and tallies, the goals,
/// and the store's epoch (made and kept in the store on first use).
fn publish_sources(app: &App, cfg: &AggregatorConfig) -> Result<federation::publish::Sources, StartError> {
    Ok(federation::publish::Sources {
        epoch: federation::epoch::load_or_create(app.store.db(), chrono::Utc::now())?,
        zones: app.zones.to_vec(),
        state: app.state.clone(),
        tallies: app.tallies.clone(),
        goals: app.goals.goal.clone().into(),
        settings: cfg.goals.clone(),
    })
}
